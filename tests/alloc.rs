//! `--alloc` against a program that knows what it allocates (tests/targets/alloc.c): three
//! sites allocate and free 60/30/10% of its bytes, a fourth leaks 64 MiB. The estimate at the
//! default sampling must give the shares and the leak; sampling every allocation must give
//! the exact bytes; other processes must not trap; outputs are read by `go tool pprof`.
use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Read, Write},
    process::{Command, Stdio},
};

use profiler_tests::*;

const SITES: [&str; 3] = ["site_60", "site_30", "site_10"];

fn alloc_bin(name: &str) -> std::path::PathBuf {
    build_c(name, "alloc.c", &c_fp_probes())
}

/// Estimated bytes per site from alloc.folded (or inuse.folded), checking that each site's
/// stacks are right: the site directly above the allocator's own function, main below it.
fn bytes_by_site(dir: &std::path::Path, file: &str) -> HashMap<String, f64> {
    let mut by = HashMap::new();
    for (frames, n) in folded_file(dir, file) {
        let Some(at) = frames
            .iter()
            .position(|f| SITES.contains(&f.as_str()) || f == "leak")
        else {
            continue;
        };
        let site = &frames[at];
        assert_eq!(
            at + 2,
            frames.len(),
            "the allocator is the leaf: {frames:?}"
        );
        let leaf = &frames[at + 1];
        assert!(
            ["malloc", "calloc", "realloc"]
                .iter()
                .any(|a| leaf.contains(a)),
            "{frames:?}"
        );
        assert_eq!(
            frames.get(at.wrapping_sub(1)).map(String::as_str),
            Some("main"),
            "{frames:?}"
        );
        *by.entry(site.clone()).or_insert(0.0) += n as f64;
    }
    by
}

fn within(got: f64, want: f64, tolerance: f64, what: &str) {
    let err = (got - want).abs() / want;
    eprintln!(
        "{what}: got {got:.0}, want {want:.0} ({:+.2}%)",
        err * 100.0
    );
    assert!(err < tolerance, "{what}: {got} vs {want}");
}

#[test]
fn shares_and_the_leak_at_the_default_sampling() {
    let bin = alloc_bin("alloc");
    let mut target = Target::start(&bin, &["100"]);
    let (dir, printed) = record_run(&mut target, "alloc-default", &["--alloc"]);
    let truth: HashMap<String, f64> = printed_values(&printed);
    let sites_total: f64 = SITES
        .iter()
        .map(|s| truth[&format!("bytes_{}", &s[5..])])
        .sum();

    let alloc = bytes_by_site(&dir, "alloc.folded");
    let estimated_total: f64 = SITES
        .iter()
        .map(|s| alloc.get(*s).copied().unwrap_or(0.0))
        .sum();
    for site in SITES {
        let want = truth[&format!("bytes_{}", &site[5..])] / sites_total * 100.0;
        let got = alloc.get(site).copied().unwrap_or(0.0) / estimated_total * 100.0;
        eprintln!("{site}: {got:.1}% of the sites' bytes, program says {want:.1}%");
        assert!((got - want).abs() < 5.0, "{site}: {got:.1}% vs {want:.1}%");
    }
    // The leak, in what was never freed, and nothing the sites freed.
    let inuse = bytes_by_site(&dir, "inuse.folded");
    within(inuse["leak"], truth["leak"], 0.15, "leak in inuse.folded");
    for site in SITES {
        assert!(
            !inuse.contains_key(site),
            "{site} freed everything: {inuse:?}"
        );
    }

    let s = summary(&dir);
    let a = &s["alloc"];
    // The kernel's exact count: every byte the program asked for while recorded (stdio's
    // buffer and such may add a little).
    let counted = a["counted_bytes"].as_f64().expect("counted_bytes");
    let asked = sites_total + truth["leak"];
    assert!(
        counted >= asked && counted < asked + f64::from(1 << 20),
        "{counted} vs {asked}"
    );
    assert_eq!(a["lost"], 0, "{a}");
    assert_eq!(a["untracked"], 0, "{a}");
    // realloc(NULL, n) is glibc's jump to malloc: counted once, as realloc.
    assert!(a["nested_calls"].as_u64().expect("nested") >= 100, "{a}");
    // Per span: the bytes each site's span allocated.
    let by_span: HashMap<&str, f64> = a["by_span"]
        .as_array()
        .expect("by_span")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().expect("name"),
                v["bytes"].as_f64().expect("bytes"),
            )
        })
        .collect();
    for site in SITES {
        within(
            by_span[site],
            truth[&format!("bytes_{}", &site[5..])],
            0.15,
            &format!("span {site} bytes"),
        );
    }

    // go tool pprof reads it as a heap profile: in use by default, the leak's bytes.
    let top = go_pprof(&dir.join("alloc.pb.gz"), &["-top", "-unit=B"]);
    assert!(top.contains("Type: inuse_space"), "{top}");
    let total = pprof_total(&top);
    within(total, truth["leak"], 0.15, "pprof inuse_space total");
    let top = go_pprof(
        &dir.join("alloc.pb.gz"),
        &["-top", "-unit=B", "-sample_index=alloc_space"],
    );
    let folded_total: f64 = folded_file(&dir, "alloc.folded")
        .iter()
        .map(|(_, n)| *n as f64)
        .sum();
    within(
        pprof_total(&top),
        folded_total,
        0.001,
        "pprof alloc_space total",
    );
}

/// "Showing nodes accounting for 67108864B, 100% of 67108864B total" → the total.
fn pprof_total(text: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix("Showing nodes accounting for "))
        .and_then(|rest| rest.rsplit_once(" of "))
        .and_then(|(_, t)| t.strip_suffix(" total"))
        .and_then(|t| t.trim_end_matches('B').parse().ok())
        .unwrap_or_else(|| panic!("no total in {text}"))
}

/// `--alloc-sample 1`: every allocation, exact bytes and counts; and a process that is not
/// recorded, allocating the same way from the same C library meanwhile, never traps into
/// the probes (they run once per call of the target only).
#[test]
fn every_allocation_exactly_and_no_cost_outside_the_target() {
    let bin = alloc_bin("alloc-exact");
    // Allocates for minutes unless killed: all through the recording.
    let mut bystander = Command::new(&bin)
        .args(["now", "10000000"])
        .stdout(Stdio::null())
        .spawn()
        .expect("bystander starts");
    let mut target = Target::start(&bin, &["20"]);
    let (dir, printed) = record_run(
        &mut target,
        "alloc-exact",
        &["--alloc", "--alloc-sample", "1"],
    );
    let still_running = bystander.try_wait().ok().flatten().is_none();
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert!(
        still_running,
        "the bystander allocated all through the recording"
    );
    let truth: HashMap<String, f64> = printed_values(&printed);
    let alloc = bytes_by_site(&dir, "alloc.folded");
    for site in SITES {
        assert_eq!(
            alloc[site],
            truth[&format!("bytes_{}", &site[5..])],
            "{site}: {alloc:?}"
        );
    }
    assert_eq!(bytes_by_site(&dir, "inuse.folded")["leak"], truth["leak"]);
    let s = summary(&dir);
    let a = &s["alloc"];
    let sites: HashMap<String, f64> = a["top_sites"]
        .as_array()
        .expect("top_sites")
        .iter()
        .map(|v| {
            let name = v["stack"].as_str().expect("stack");
            let site = name.split(' ').next().unwrap_or("").to_string();
            (site, v["allocations"].as_f64().expect("allocations"))
        })
        .collect();
    // 96 mallocs, 768 callocs and one realloc per round; 32 leaked blocks.
    assert_eq!(sites["site_60"], 96.0 * 20.0, "{sites:?}");
    assert_eq!(sites["site_30"], 768.0 * 20.0, "{sites:?}");
    assert_eq!(sites["site_10"], 20.0, "{sites:?}");
    assert_eq!(sites["leak"], 32.0, "{sites:?}");
    // Program runs: an entry and a return per call (nested ones too), one per free. The
    // bystander's ~170k calls in the same libc would be twice as many again.
    let calls = a["counted_calls"].as_u64().expect("calls");
    let nested = a["nested_calls"].as_u64().expect("nested");
    let frees = a["counted_frees"].as_u64().expect("frees");
    let runs = a["bpf_runs"].as_u64().expect("bpf_runs");
    assert!(
        runs >= 2 * calls + frees && runs <= 2 * (calls + nested) + frees + 1000,
        "{runs} program runs for {calls} calls, {nested} nested, {frees} frees"
    );
}

/// With `run`, spans and off-CPU at once, and in a `--comm` scope.
#[test]
fn combined_with_run_off_cpu_and_a_scope() {
    let bin = alloc_bin("alloc-run");
    let dir = OutDir::new(scratch("alloc-run"));
    let out = profiler()
        .args(["run", "--quiet", "--alloc", "--off-cpu", "--output"])
        .arg(&*dir)
        .arg("--")
        .arg(&bin)
        .args(["now", "30"])
        .output()
        .expect("profiler runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    let truth: HashMap<String, f64> = printed_values(&printed);
    let inuse = bytes_by_site(&dir, "inuse.folded");
    within(inuse["leak"], truth["leak"], 0.15, "run: leak");
    let alloc = bytes_by_site(&dir, "alloc.folded");
    for site in SITES {
        assert!(alloc.contains_key(site), "run: {site} in {alloc:?}");
    }
    for f in [
        "offcpu.folded",
        "alloc.svg",
        "inuse.svg",
        "alloc.pb.gz",
        "spans.json",
    ] {
        assert!(dir.join(f).exists(), "run: {f}");
    }
    let s = summary(&dir);
    assert!(
        !s["alloc"]["by_span"]
            .as_array()
            .expect("by_span")
            .is_empty()
    );

    // --comm: the matching process is probed for itself when the recording starts.
    let bin = alloc_bin("alloc-comm");
    let comm: String = bin
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .chars()
        .take(15)
        .collect();
    let mut child = Command::new(&bin)
        .args(["20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("target starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready");
    let dir = OutDir::new(scratch("alloc-comm"));
    let mut rec = profiler()
        .args(["record", "--quiet", "--alloc", "--duration", "6", "--comm"])
        .arg(format!("^{}$", regex_escape(&comm)))
        .arg("--output")
        .arg(&*dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("profiler starts");
    let mut err = BufReader::new(rec.stderr.take().expect("stderr"));
    let mut seen = String::new();
    loop {
        let mut l = String::new();
        assert!(err.read_line(&mut l).expect("stderr") > 0, "{seen}");
        seen.push_str(&l);
        if l.starts_with("profiler: recording") {
            break;
        }
    }
    child
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    let mut printed = String::new();
    stdout.read_to_string(&mut printed).expect("output");
    assert!(child.wait().expect("exits").success());
    let status = rec.wait().expect("profiler exits");
    let _ = err.read_to_string(&mut seen);
    assert!(status.success(), "{seen}");
    let truth: HashMap<String, f64> = printed_values(&printed);
    let inuse = bytes_by_site(&dir, "inuse.folded");
    within(inuse["leak"], truth["leak"], 0.15, "--comm: leak");
    let lines = folded_file(&dir, "alloc.folded");
    assert!(
        lines.iter().all(|(f, _)| f[0] == comm),
        "only the scope's process: {lines:?}"
    );
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}
