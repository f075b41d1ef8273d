//! `profiler record` on real programs with a known split of CPU time.
use std::time::Instant;

use profiler_tests::*;

const FREQ: &str = "499";

/// Inclusive shares of `a` and `b` are 70±5 and 30±5 percent.
fn assert_split(folded: &[(Vec<String>, u64)], a: &str, b: &str) {
    // C names match exactly, Rust paths by their last segment.
    let is = |name: &str, f: &str| f == name || f.ends_with(&format!("::{name}"));
    let (pa, pb) = (share(folded, |f| is(a, f)), share(folded, |f| is(b, f)));
    eprintln!(
        "split: {a} {pa:.1}%  {b} {pb:.1}%  over {} samples",
        total(folded)
    );
    assert!(
        (65.0..=75.0).contains(&pa),
        "{a} at {pa:.1}%, expected 70±5"
    );
    assert!(
        (25.0..=35.0).contains(&pb),
        "{b} at {pb:.1}%, expected 30±5"
    );
}

#[test]
fn c_with_frame_pointers_splits_70_30_and_stacks_reach_main() {
    let bin = build_c("split-fp", "split.c", C_FP);
    let target = Target::start(&bin, &["20"]);
    let out_dir = record_ok(&target, "c-fp", &["--duration", "3", "--frequency", FREQ]);

    let f = folded(&out_dir);
    assert_sampled_its_cpu_time(&out_dir, 500);
    assert_split(&f, "hot_a", "hot_b");
    let reach_main = share(&f, |fr| fr == "main");
    eprintln!("stacks reaching main: {reach_main:.1}%");
    assert!(
        reach_main >= 95.0,
        "only {reach_main:.1}% of stacks reach main"
    );
    // Root frame is the process name.
    assert!(
        f.iter()
            .all(|(frames, _)| frames[0].starts_with("split-fp"))
    );

    let s = summary(&out_dir);
    assert_eq!(s["stacks"]["call_graph"], "fp", "auto keeps frame pointers");
    assert_eq!(s["samples"]["lost"], 0);
    assert_eq!(s["samples"]["recorded"].as_u64(), Some(total(&f)));
    assert_eq!(s["samples"]["seen_by_kernel"].as_u64(), Some(total(&f)));
    assert_eq!(s["stop_reason"], "duration elapsed");
    let svg = std::fs::read_to_string(out_dir.join("flamegraph.svg")).expect("svg written");
    assert!(
        svg.contains("hot_a") && svg.contains("<script"),
        "interactive svg"
    );
    assert!(
        svg.contains(&format!("{} samples", total(&f))),
        "title has the count"
    );
}

#[test]
fn c_without_frame_pointers_still_splits_by_leaf() {
    let bin = build_c("split-nofp", "split.c", C_NOFP);
    let target = Target::start(&bin, &["20"]);
    let out_dir = record_ok(
        &target,
        "c-nofp",
        &["--duration", "3", "--frequency", FREQ, "--call-graph", "fp"],
    );
    let f = folded(&out_dir);
    // The frame-pointer walk loses callers here, but the sampled leaf is exact.
    let (a, b) = (
        self_share(&f, |fr| fr == "hot_a"),
        self_share(&f, |fr| fr == "hot_b"),
    );
    let other = 100.0 - a - b;
    eprintln!(
        "leaf split hot_a {a:.1}% hot_b {b:.1}% (other leaves {other:.1}%); reach main {:.1}%",
        share(&f, |fr| fr == "main")
    );
    // Leaves in libc/vdso (the clock calls) count for neither; scale to the two functions.
    let a_rel = 100.0 * a / (a + b);
    assert!(
        (65.0..=75.0).contains(&a_rel),
        "hot_a {a_rel:.1}% of hot_a+hot_b"
    );
    assert!(other < 10.0, "{other:.1}% of leaves elsewhere");
}

#[test]
fn stripped_binary_shows_module_offsets_and_says_so() {
    let bin = stripped(&build_c("split-strip", "split.c", C_NOFP));
    let name = bin
        .file_name()
        .and_then(|n| n.to_str())
        .expect("utf-8 name")
        .to_string();
    let target = Target::start(&bin, &["20"]);
    let out_dir = record_ok(
        &target,
        "stripped",
        &["--duration", "2", "--frequency", FREQ],
    );
    let f = folded(&out_dir);
    let prefix = format!("{name}+0x");
    let in_module = self_share(&f, |fr| fr.starts_with(&prefix));
    assert!(in_module > 80.0, "{in_module:.1}% of leaves are {prefix}…");
    assert_eq!(
        share(&f, |fr| fr == "hot_a"),
        0.0,
        "no names in a stripped binary"
    );
    assert!(
        !f.iter()
            .flat_map(|(fr, _)| fr)
            .any(|fr| fr.starts_with("0x")),
        "no bare addresses"
    );
    let s = summary(&out_dir);
    let missing = s["modules_without_symbols"].to_string();
    assert!(missing.contains(&name), "{missing}");
    let text = std::fs::read_to_string(out_dir.join("summary.txt")).expect("summary.txt");
    assert!(text.contains("has no symbols (stripped)"), "{text}");
}

#[test]
fn rust_with_frame_pointers_splits_70_30_with_demangled_names() {
    let bin = build_rust_split();
    let target = Target::start(&bin, &["20"]);
    let out_dir = record_ok(&target, "rust", &["--duration", "3", "--frequency", FREQ]);
    let f = folded(&out_dir);
    assert!(
        f.iter()
            .flat_map(|(fr, _)| fr)
            .any(|fr| fr == "rust_split::hot_a"),
        "demangled Rust path"
    );
    assert!(
        !f.iter()
            .flat_map(|(fr, _)| fr)
            .any(|fr| fr.starts_with("_ZN") || fr.starts_with("_R")),
        "no mangled names"
    );
    assert_split(&f, "hot_a", "hot_b");
    let reach_main = share(&f, |fr| fr == "rust_split::main");
    eprintln!("stacks reaching rust_split::main: {reach_main:.1}%");
    assert!(reach_main >= 95.0, "only {reach_main:.1}% reach main");
}

#[test]
fn multithreaded_program_has_both_threads_named() {
    let bin = build_c("threads", "threads.c", C_FP);
    let target = Target::start(&bin, &["20"]);
    let out_dir = record_ok(
        &target,
        "threads",
        &["--duration", "3", "--frequency", FREQ],
    );
    let f = folded(&out_dir);
    let (one, two) = (
        share(&f, |fr| fr == "worker_one"),
        share(&f, |fr| fr == "worker_two"),
    );
    eprintln!("worker_one {one:.1}% worker_two {two:.1}%");
    assert!((35.0..=65.0).contains(&one) && (35.0..=65.0).contains(&two));
    let threads = thread_samples(&summary(&out_dir));
    eprintln!("threads: {threads:?}");
    for name in ["worker-one", "worker-two"] {
        assert!(
            threads.get(name).is_some_and(|&n| n > 100),
            "{name} sampled"
        );
    }
    // Every tick the two threads took is a sample, on whichever CPU it ran: the samples
    // match their CPU time (the kernel's schedstat) × frequency. Not wall time × 2: with the
    // machine busy, two spinning threads get less than two CPUs (2.9 CPU-s in 3 s at a load
    // of 3, 100.2% of it sampled, failed "> 2,000 samples").
    let s = summary(&out_dir);
    let c = &s["coverage"];
    let pct = c["percent"].as_f64().unwrap_or(-1.0);
    eprintln!("{} samples; coverage {c}", total(&f));
    assert!(
        (90.0..=110.0).contains(&pct),
        "sampled {pct}% of expected: {c}"
    );
    assert!(c["threads"].as_u64().unwrap_or(0) >= 2, "{c}");
    assert!(c["expected"].as_u64().unwrap_or(0) >= 300, "{c}");
}

/// The kernel sends a thread's name only when the CPU has not sent it since the last rename
/// anywhere: a thread that renames itself on the same CPU must still end up with its new
/// name. It exits before the recording ends, so /proc cannot name it afterwards: only the
/// samples can.
#[test]
fn a_thread_renamed_while_sampled_on_one_cpu_gets_its_new_name() {
    let bin = build_c("rename", "rename.c", C_FP);
    let mut target = Target::start(&bin, &[]);
    let (dir, printed) = record_run(&mut target, "rename", &["--frequency", FREQ]);
    assert!(printed.contains("done"), "{printed}");
    let threads = thread_samples(&summary(&dir));
    eprintln!("threads: {threads:?}");
    assert!(
        threads.get("phase-two").is_some_and(|&n| n > 100),
        "the renamed thread carries its latest name: {threads:?}"
    );
    assert!(!threads.contains_key("phase-one"), "{threads:?}");
}

#[test]
fn lost_samples_are_counted_exactly() {
    let bin = build_c("threads-lost", "threads.c", C_FP);
    let target = Target::start(&bin, &["20"]);
    // One page of ring buffer left unread for 1.5 s at 4 kHz on two threads must overflow.
    let out_dir = record_ok(
        &target,
        "lost",
        &[
            "--duration",
            "2.5",
            "--frequency",
            "4000",
            "--ring-buffer-size",
            "4096",
            "--test-stall-consumer-ms",
            "1500",
        ],
    );
    let s = summary(&out_dir);
    let n = |k: &str| s["samples"][k].as_u64().unwrap_or(u64::MAX);
    let lost = n("lost");
    let ring_full = s["samples"]["lost_by_cause"]["ring_buffer_full"].as_u64();
    eprintln!("summary samples: {}", s["samples"]);
    assert!(lost > 1000, "lost {lost}");
    assert_eq!(ring_full, Some(lost));
    assert_eq!(
        n("recorded") + lost,
        n("seen_by_kernel"),
        "every sample accounted for"
    );
    assert_eq!(total(&folded(&out_dir)), n("recorded"));
    let text = std::fs::read_to_string(out_dir.join("summary.txt")).expect("summary.txt");
    assert!(text.contains("raise --ring-buffer-size"), "{text}");
}

#[test]
fn stacks_the_stack_map_refuses_travel_inline() {
    let bin = build_c("split-inline", "split.c", C_FP);
    let target = Target::start(&bin, &["20"]);
    let out_dir = record_ok(
        &target,
        "inline",
        &[
            "--duration",
            "2",
            "--frequency",
            FREQ,
            "--stack-map-entries",
            "1",
        ],
    );
    let s = summary(&out_dir);
    let refused = s["samples"]["stack_map_full_sent_inline"]
        .as_u64()
        .unwrap_or(0)
        + s["samples"]["stack_map_collisions_sent_inline"]
            .as_u64()
            .unwrap_or(0);
    eprintln!("summary samples: {}", s["samples"]);
    assert!(refused > 100, "{refused} samples sent inline");
    assert_eq!(s["samples"]["lost"], 0);
    let f = folded(&out_dir);
    assert_split(&f, "hot_a", "hot_b");
}

#[test]
fn target_exit_stops_the_recording_with_full_names() {
    let bin = build_c("split-exit", "split.c", C_FP);
    let target = Target::start(&bin, &["1.5"]);
    let started = Instant::now();
    let out_dir = record_ok(&target, "exit", &["--duration", "30", "--frequency", FREQ]);
    let took = started.elapsed();
    assert!(
        took.as_secs() < 20,
        "stopped at the target's exit, not the duration ({took:?})"
    );
    let s = summary(&out_dir);
    assert_eq!(s["stop_reason"], "target exited");
    let f = folded(&out_dir);
    assert!(
        share(&f, |fr| fr == "hot_a") > 50.0,
        "names resolved after exit"
    );
    assert!(share(&f, |fr| fr == "main") >= 95.0);
    drop(target);
}

#[test]
fn sigint_and_sigterm_stop_cleanly_and_write_outputs() {
    let bin = build_c("split-signal", "split.c", C_FP);
    for (signal, name) in [(libc::SIGINT, "SIGINT"), (libc::SIGTERM, "SIGTERM")] {
        let target = Target::start(&bin, &["20"]);
        let out_dir = scratch("signal");
        let child = record_command(target.pid(), &out_dir)
            .args(["--frequency", "999"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("profiler starts");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().expect("profiler exits");
        eprintln!("{}", stderr_of(&out));
        assert!(out.status.success(), "{name}: {}", stderr_of(&out));
        let s = summary(&out_dir);
        assert_eq!(s["stop_reason"], format!("{name} received"));
        // Sampled until the signal: fewer than 1,500 samples in the 1.5 s on a free CPU
        // (start-up comes out of them).
        assert_sampled_its_cpu_time(&out_dir, 400);
        for f in [
            "recording.pb",
            "flamegraph.svg",
            "summary.txt",
            "profile.folded",
        ] {
            assert!(out_dir.join(f).exists(), "{f} written after {name}");
        }
        let _ = std::fs::remove_dir_all(&out_dir);
    }
}

#[test]
fn outputs_belong_to_the_sudo_user_and_report_regenerates_them_unprivileged() {
    let bin = build_c("split-sudo", "split.c", C_FP);
    let target = Target::start(&bin, &["20"]);
    let base = scratch("sudo");
    std::fs::create_dir_all(&base).expect("scratch dir");
    let out_dir = base.join("new/nested");
    let out = profiler()
        .args([
            "record",
            "--quiet",
            "--duration",
            "2",
            "--frequency",
            FREQ,
            "--pid",
        ])
        .arg(target.pid().to_string())
        .arg("--output")
        .arg(&out_dir)
        .env("SUDO_UID", "65534")
        .env("SUDO_GID", "65534")
        .output()
        .expect("profiler runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    drop(target);
    use std::os::unix::fs::MetadataExt;
    for p in [base.join("new"), out_dir.clone()] {
        let m = std::fs::metadata(&p).expect("dir exists");
        assert_eq!(
            (m.uid(), m.gid()),
            (65534, 65534),
            "{} owned by the sudo user",
            p.display()
        );
    }
    let mut entries = 0;
    for e in std::fs::read_dir(&out_dir).expect("list outputs") {
        let m = e.expect("entry").metadata().expect("metadata");
        assert_eq!((m.uid(), m.gid()), (65534, 65534));
        entries += 1;
    }
    assert_eq!(
        entries, 7,
        "recording, folded, svg, summary txt+json, perfetto, pprof; no temp files"
    );

    let before = std::fs::read_to_string(out_dir.join("profile.folded")).expect("folded");
    let summary_before = summary(&out_dir);
    for f in [
        "profile.folded",
        "flamegraph.svg",
        "summary.txt",
        "summary.json",
    ] {
        std::fs::remove_file(out_dir.join(f)).expect("remove output");
    }
    // Without root and without the target (it has exited).
    let out = as_nobody(&profiler_bin())
        .arg("report")
        .arg(&out_dir)
        .output()
        .expect("report runs");
    assert!(out.status.success(), "report: {}", stderr_of(&out));
    let after = std::fs::read_to_string(out_dir.join("profile.folded")).expect("regenerated");
    assert_eq!(before, after);
    assert_eq!(summary(&out_dir)["top_self"], summary_before["top_self"]);
    assert!(out_dir.join("flamegraph.svg").exists());
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn kernel_frames_are_marked() {
    // A target that spends its time in the kernel: reading /dev/zero in a loop.
    let target = Target::start(
        std::path::Path::new("/bin/sh"),
        &[
            "-c",
            "echo ready; exec dd if=/dev/zero of=/dev/null bs=1M count=1000000000",
        ],
    );
    let out_dir = record_ok(&target, "kernel", &["--duration", "2", "--frequency", FREQ]);
    let f = folded(&out_dir);
    let in_kernel = share(&f, |fr| fr.ends_with("_[k]"));
    eprintln!("{in_kernel:.1}% of samples have kernel frames");
    assert!(in_kernel > 50.0);
    // Kernel frames sit above (leafward of) user frames.
    for (frames, _) in &f {
        if let Some(first_k) = frames.iter().position(|fr| fr.ends_with("_[k]")) {
            assert!(
                frames[first_k..].iter().all(|fr| fr.ends_with("_[k]")),
                "{frames:?}"
            );
        }
    }
}
