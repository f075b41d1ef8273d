//! `--locks` against a program that measures its own lock waits (tests/targets/locks.c): two
//! threads take one static mutex, `big_lock`, and hold it ~1 ms, each timing itself inside
//! pthread_mutex_lock. The futex wait time under the waiting function must match what it
//! measured, on the right stack, with the lock named.
use std::{
    collections::HashMap,
    io::Write,
    process::{Command, Stdio},
};

use profiler_tests::*;

fn within(got: f64, want: f64, tolerance: f64, what: &str) {
    let err = (got - want).abs() / want;
    eprintln!(
        "{what}: got {got:.0}, want {want:.0} ({:+.2}%)",
        err * 100.0
    );
    assert!(err < tolerance, "{what}: {got} vs {want}");
}

/// Nanoseconds of locks.folded under `take_lock` (the function that called
/// pthread_mutex_lock), checking each such stack: worker below it, the C library's lock
/// functions above it, the lock named as the leaf.
fn under_take_lock(dir: &std::path::Path) -> f64 {
    let mut ns = 0.0;
    for (frames, us) in folded_file(dir, "locks.folded") {
        let Some(at) = frames.iter().position(|f| f == "take_lock") else {
            continue;
        };
        assert_eq!(
            frames.get(at.wrapping_sub(1)).map(String::as_str),
            Some("worker"),
            "{frames:?}"
        );
        assert!(
            frames
                .get(at + 1)
                .is_some_and(|f| f.contains("pthread_mutex_lock")),
            "{frames:?}"
        );
        assert_eq!(
            frames.last().map(String::as_str),
            Some("[lock big_lock]"),
            "{frames:?}"
        );
        ns += us as f64 * 1e3;
    }
    ns
}

#[test]
fn lock_wait_matches_what_the_program_measured() {
    let bin = build_c("locks", "locks.c", &c_fp_probes());
    let mut target = Target::start(&bin, &["200"]);
    let (dir, printed) = record_run(&mut target, "locks", &["--locks"]);
    let truth: HashMap<String, f64> = printed_values(&printed);
    let measured = truth["lock_wait_ns"];
    within(
        under_take_lock(&dir),
        measured,
        0.10,
        "locks.folded under take_lock",
    );

    let s = summary(&dir);
    let l = &s["locks"];
    assert_eq!(l["lost"], 0, "{l}");
    let big = l["top_locks"]
        .as_array()
        .expect("top_locks")
        .iter()
        .find(|x| x["symbol"] == "big_lock")
        .unwrap_or_else(|| panic!("big_lock among the contended locks: {l}"));
    within(
        big["ns"].as_f64().expect("ns"),
        measured,
        0.10,
        "big_lock's waits",
    );
    let top = big["waiters"][0]["stack"].as_str().expect("stack");
    assert!(top.contains("take_lock"), "{top}");
    let span = l["by_span"]
        .as_array()
        .expect("by_span")
        .iter()
        .find(|x| x["name"] == "locked_work")
        .unwrap_or_else(|| panic!("span locked_work: {l}"));
    within(
        span["ns"].as_f64().expect("ns"),
        measured,
        0.10,
        "span locked_work",
    );

    // go tool pprof: a delay profile, and the same time under take_lock.
    let out = Command::new("go")
        .args([
            "tool",
            "pprof",
            "-symbolize=none",
            "-top",
            "-unit=ns",
            "-focus=^take_lock$",
        ])
        .arg(dir.join("locks.pb.gz"))
        .output()
        .expect("go runs (cargo xtask setup installs golang-go)");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Type: delay"), "{text}");
    let shown: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Showing nodes accounting for "))
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.trim_end_matches("ns").parse().ok())
        .unwrap_or_else(|| panic!("no total in {text}"));
    within(shown, measured, 0.10, "pprof delay under take_lock");
}

/// With `run`, allocations and off-CPU at once.
#[test]
fn combined_with_run_alloc_and_off_cpu() {
    let bin = build_c("locks-run", "locks.c", &c_fp_probes());
    let dir = OutDir::new(scratch("locks-run"));
    let mut child = profiler()
        .args([
            "run",
            "--quiet",
            "--locks",
            "--alloc",
            "--off-cpu",
            "--output",
        ])
        .arg(&*dir)
        .arg("--")
        .arg(&bin)
        .arg("100")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("profiler runs");
    // The target prints "ready" and waits for a line: the probes are live before it runs.
    child
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    let out = child.wait_with_output().expect("profiler exits");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    // After its "ready" line.
    let report = printed
        .lines()
        .find(|l| l.starts_with("lock_wait_ns"))
        .unwrap_or_else(|| panic!("{printed}"));
    let truth: HashMap<String, f64> = printed_values(report);
    within(
        under_take_lock(&dir),
        truth["lock_wait_ns"],
        0.10,
        "run: lock wait",
    );
    for f in ["locks.svg", "locks.pb.gz", "offcpu.folded", "alloc.folded"] {
        assert!(dir.join(f).exists(), "run: {f}");
    }
}
