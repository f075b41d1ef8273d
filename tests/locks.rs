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

/// Nanoseconds of futex waits in locks.folded under `take_lock` (the function that called
/// pthread_mutex_lock), checking each such stack: worker below it, the C library's lock
/// functions above it, the lock named as the leaf. Kernel lock waits under it are not the
/// mutex's: a page fault in its clock_gettime waiting for the mmap_lock (`[kernel rwsem
/// read]`) is time the program did not count as inside pthread_mutex_lock either.
fn under_take_lock(dir: &std::path::Path) -> f64 {
    let mut ns = 0.0;
    for (frames, us) in folded_file(dir, "locks.folded") {
        let Some(at) = frames.iter().position(|f| f == "take_lock") else {
            continue;
        };
        if frames.last().is_some_and(|f| f.starts_with("[kernel ")) {
            eprintln!(
                "kernel lock wait under take_lock, {us} µs: {}",
                frames.join(";")
            );
            continue;
        }
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
    let text = go_pprof(
        &dir.join("locks.pb.gz"),
        &["-top", "-unit=ns", "-focus=^take_lock$"],
    );
    assert!(text.contains("Type: delay"), "{text}");
    let shown = shown_ns(&text);
    within(shown, measured, 0.10, "pprof delay under take_lock");
}

/// Waits deep in a thread's stack: 30 frames of ~200 bytes (`descend`) above `worker`, more
/// than the 2 KiB a fixed copy once took, which cut every such stack short without a mark.
/// The copy is sized per thread: every wait reaches the thread's start. With a copy too
/// short for them (`--stack-size 1024`) the stacks say they were cut short, and the summary
/// counts them.
#[test]
fn deep_lock_wait_stacks_reach_the_thread_start_or_say_they_were_cut() {
    let bin = build_c("locks-deep", "locks.c", &c_fp_probes());
    let mut target = Target::start(&bin, &["100", "30"]);
    let (dir, printed) = record_run(&mut target, "locks-deep", &["--locks"]);
    let truth: HashMap<String, f64> = printed_values(&printed);
    within(
        under_take_lock(&dir),
        truth["lock_wait_ns"],
        0.10,
        "deep: locks.folded under take_lock",
    );
    for (frames, us) in folded_file(&dir, "locks.folded") {
        if frames.iter().any(|f| f == "take_lock") {
            // glibc's thread entry, whichever of its frames a libc without debug info names.
            assert!(
                frames.iter().any(|f| matches!(
                    f.as_str(),
                    "start_thread" | "clone3" | "__clone3" | "clone"
                )),
                "{us} µs short of the thread's start: {frames:?}"
            );
            let descents = frames.iter().filter(|f| *f == "descend").count();
            assert!(descents >= 30, "{descents} descend frames: {frames:?}");
        }
    }
    // Futex waits only: a kernel lock wait ending nested in another lock program goes
    // without its user stack (counted in `kernel_stacks_lost`), as an interrupt may make it.
    let l = &summary(&dir)["locks"];
    assert_eq!(l["stacks_truncated"], 0, "{l}");
    assert_eq!(l["stacks_lost"], 0, "{l}");

    let mut target = Target::start(&bin, &["100", "30"]);
    let (dir, _) = record_run(
        &mut target,
        "locks-deep-short",
        &["--locks", "--stack-size", "1024"],
    );
    let (mut cut_us, mut under_us) = (0, 0);
    for (frames, us) in folded_file(&dir, "locks.folded") {
        if frames.iter().any(|f| f == "take_lock") {
            under_us += us;
            if frames.iter().any(|f| f == "[unwind: truncated]") {
                cut_us += us;
            }
        }
    }
    assert!(
        under_us > 0 && cut_us == under_us,
        "{cut_us} of {under_us} µs marked cut short"
    );
    let l = &summary(&dir)["locks"];
    let (cut, waits) = (
        l["stacks_truncated"].as_u64().expect("stacks_truncated"),
        l["waits"].as_u64().expect("waits"),
    );
    assert!(cut > 0 && cut * 10 >= waits * 9, "{cut} of {waits}: {l}");
    let text = std::fs::read_to_string(dir.join("summary.txt")).expect("summary.txt");
    assert!(
        text.contains("lock wait user stacks were cut short") && text.contains("--stack-size"),
        "{text}"
    );
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

/// bpftrace on the same tracepoints, for one pid: nanoseconds between each thread's first
/// `contention_begin` on a lock and its `contention_end`, summed, and the number of waits.
/// Started before the target's work and stopped after it, so it sees the same waits.
struct Bpftrace(std::process::Child);

impl Bpftrace {
    fn start(pid: u32) -> Self {
        let script = format!(
            "tracepoint:lock:contention_begin /pid == {pid}/ {{ \
               if (@start[tid, args->lock_addr] == 0) {{ @start[tid, args->lock_addr] = nsecs; }} }} \
             tracepoint:lock:contention_end /pid == {pid} && @start[tid, args->lock_addr] != 0/ {{ \
               @ns = sum(nsecs - @start[tid, args->lock_addr]); @n = count(); \
               delete(@start[tid, args->lock_addr]); }} \
             END {{ clear(@start); }}"
        );
        let mut child = Command::new("bpftrace")
            .args(["-e", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("bpftrace runs (cargo xtask setup installs it)");
        let mut out = std::io::BufReader::new(child.stdout.as_mut().expect("stdout"));
        let mut line = String::new();
        use std::io::BufRead;
        out.read_line(&mut line).expect("bpftrace prints");
        assert!(line.starts_with("Attaching"), "bpftrace: {line}");
        // "Attaching" comes before the attach itself.
        std::thread::sleep(std::time::Duration::from_millis(500));
        Self(child)
    }

    /// (ns, waits).
    fn stop(mut self) -> (f64, f64) {
        // SAFETY: a signal to the child this test started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let mut text = String::new();
        use std::io::Read;
        self.0
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut text)
            .expect("bpftrace output");
        let _ = self.0.wait();
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        (value("@ns:"), value("@n:"))
    }
}

/// Kernel lock contention (`lock:contention_begin/end`): four threads mapping and unmapping
/// wait for their process's mmap_lock. The kernel lock wait in locks.folded must come under
/// remap, with the kernel's rwsem functions above the C library's and the kind as the leaf,
/// and add up to what bpftrace measures on the same tracepoints for the same process.
#[test]
fn kernel_lock_waits_match_bpftrace() {
    let bin = build_c("klocks", "klocks.c", &c_fp_probes());
    let mut target = Target::start(&bin, &["20000"]);
    let bpftrace = Bpftrace::start(target.pid());
    let (dir, _) = record_run(&mut target, "klocks", &["--locks"]);
    let (bpftrace_ns, bpftrace_waits) = bpftrace.stop();
    eprintln!("bpftrace: {bpftrace_ns:.0} ns in {bpftrace_waits} waits");
    assert!(bpftrace_waits > 0.0, "bpftrace saw no kernel lock wait");

    let (mut kernel_ns, mut rwsem_under_remap, mut under_remap) = (0.0, 0.0, 0.0);
    for (frames, us) in folded_file(&dir, "locks.folded") {
        let leaf = frames.last().map(String::as_str).unwrap_or_default();
        if !leaf.starts_with("[kernel ") {
            continue;
        }
        kernel_ns += us as f64 * 1e3;
        if frames.iter().any(|f| f == "remap") {
            under_remap += us as f64 * 1e3;
        }
        let (Some(remap), true) = (
            frames.iter().position(|f| f == "remap"),
            leaf.starts_with("[kernel rwsem "),
        ) else {
            continue;
        };
        // worker → remap → the C library or the page fault → the kernel's rwsem wait.
        assert_eq!(
            frames.get(remap.wrapping_sub(1)).map(String::as_str),
            Some("worker"),
            "{frames:?}"
        );
        let kernel = frames
            .iter()
            .position(|f| f.ends_with("_[k]"))
            .unwrap_or_else(|| panic!("no kernel frame: {frames:?}"));
        assert!(kernel > remap, "{frames:?}");
        assert!(
            frames
                .get(frames.len() - 2)
                .is_some_and(|f| f.starts_with("rwsem_down_")),
            "the wait's kernel function below the kind: {frames:?}"
        );
        rwsem_under_remap += us as f64 * 1e3;
    }
    within(
        kernel_ns,
        bpftrace_ns,
        0.10,
        "kernel lock wait in locks.folded vs bpftrace",
    );
    // mmap_lock is what they contend: most of the wait.
    assert!(
        rwsem_under_remap > 0.5 * kernel_ns,
        "rwsem wait under remap {rwsem_under_remap} of {kernel_ns}"
    );

    // go tool pprof: the same kernel lock wait under remap, as delay.
    let text = go_pprof(
        &dir.join("locks.pb.gz"),
        &["-top", "-unit=ns", "-focus=^remap$"],
    );
    let shown = shown_ns(&text);
    within(shown, under_remap, 0.01, "pprof delay under remap");

    let s = summary(&dir);
    let l = &s["locks"];
    assert_eq!(l["kernel"], true, "{l}");
    assert_eq!(l["kernel_lost"], 0, "{l}");
    within(
        l["kernel_waits"].as_f64().expect("kernel_waits"),
        bpftrace_waits,
        0.10,
        "kernel lock waits vs bpftrace",
    );
    // The main thread's pthread_join, a futex wait as long as the work, may come first.
    let mmap_lock = l["top_locks"]
        .as_array()
        .expect("top_locks")
        .iter()
        .find(|x| x["kind"] != "futex")
        .unwrap_or_else(|| panic!("a kernel lock among the contended locks: {l}"));
    assert_eq!(mmap_lock["kind"], "rwsem", "{l}");
    assert!(
        mmap_lock["waiters"]
            .as_array()
            .expect("waiters")
            .iter()
            .any(|w| w["stack"].as_str().is_some_and(|s| s.contains("remap"))),
        "{l}"
    );
}

/// "Showing nodes accounting for 1234ns, 98% of …" (`-top -unit=ns`) → the nanoseconds the
/// focused nodes account for.
fn shown_ns(text: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix("Showing nodes accounting for "))
        .and_then(|r| r.split(',').next())
        .and_then(|v| v.trim_end_matches("ns").parse().ok())
        .unwrap_or_else(|| panic!("no total in {text}"))
}
