//! `--off-cpu` against a program that knows where it waits: it naps in nanosleep and blocks
//! on a pipe read for measured times, inside spans; the off-CPU totals, stacks, spans, wall
//! view and Perfetto slices must agree with what it measured.
use std::collections::HashMap;

use profiler_tests::*;

fn within(got: f64, want: f64, tolerance: f64, what: &str) {
    let err = (got - want).abs() / want;
    eprintln!("{what}: got {got}, want {want} ({:+.2}%)", err * 100.0);
    assert!(err < tolerance, "{what}: {got} vs {want}");
}

#[test]
fn off_cpu_totals_match_known_sleep_and_pipe_waits() {
    let bin = build_c("offcpu", "offcpu.c", &c_fp_probes());
    let mut target = Target::start(&bin, &["150"]);
    // With --group-by thread the second frame is `NAME [TID]`; the main thread's tid is the pid.
    let main_tid = format!("[{}]", target.pid());
    let (dir, out) = record_run(
        &mut target,
        "offcpu",
        &["--off-cpu", "--frequency", "199", "--group-by", "thread"],
    );
    let truth: HashMap<String, f64> = printed_values(&out);
    let (nap_ns, wait_ns, total_ns) = (truth["nap_ns"], truth["wait_ns"], truth["total_ns"]);

    // offcpu.folded: µs per stack. The main thread's waits, told apart by the kernel code
    // they waited in, against the program's own timing of each phase.
    let off = folded_file(&dir, "offcpu.folded");
    let main: Vec<&(Vec<String>, u64)> = off
        .iter()
        .filter(|(f, _)| f[1].ends_with(&main_tid))
        .collect();
    let waited_in = |what: &str| -> Vec<&(Vec<String>, u64)> {
        main.iter()
            .copied()
            .filter(|(f, _)| f.iter().any(|x| x.contains(what) && x.ends_with("_[k]")))
            .collect()
    };
    let us = |lines: &[&(Vec<String>, u64)]| lines.iter().map(|(_, n)| *n as f64).sum::<f64>();
    let naps = waited_in("nanosleep");
    let reads = waited_in("pipe_read");
    // Shown when a wait below is missing: where the main thread's time went instead.
    show_heaviest(&main, &dir);
    within(us(&naps) * 1e3, nap_ns, 0.05, "nanosleep off-CPU");
    within(us(&reads) * 1e3, wait_ns, 0.05, "pipe read off-CPU");
    // Everything the main thread waited for, whatever the stack: the two waits and little else.
    let blocked: f64 = main
        .iter()
        .filter(|(f, _)| f.iter().any(|x| x == "[off-cpu]"))
        .map(|(_, n)| *n as f64 * 1e3)
        .sum();
    within(
        blocked,
        nap_ns + wait_ns,
        0.05,
        "main thread blocked in all",
    );
    // The right stacks: user code down to main, the libc call, the marker, then the kernel.
    for (frames, _) in &naps {
        assert!(frames.iter().any(|f| f == "main"), "{frames:?}");
        assert!(
            frames
                .iter()
                .any(|f| f.contains("nanosleep") && !f.ends_with("_[k]"))
        );
        assert!(frames.iter().any(|f| f == "[off-cpu]"), "{frames:?}");
        assert!(!frames.iter().any(|f| f == "compute" || f.contains("read")));
    }
    for (frames, _) in &reads {
        assert!(frames.iter().any(|f| f == "main"), "{frames:?}");
        assert!(
            frames
                .iter()
                .any(|f| f.contains("read") && !f.ends_with("_[k]"))
        );
        assert!(!frames.iter().any(|f| f.contains("nanosleep")));
    }
    // The helper thread waits too (read on its request pipe, its own 3 ms naps): its time
    // stays on its own thread.
    assert!(
        off.iter().any(|(f, _)| !f[1].ends_with(&main_tid)),
        "helper thread"
    );

    // Per span: off-CPU time where the program says it waited, top stacks that name the wait.
    let s = summary(&dir);
    let by_span: HashMap<&str, &serde_json::Value> = s["off_cpu"]["by_span"]
        .as_array()
        .expect("off_cpu.by_span")
        .iter()
        .map(|v| (v["name"].as_str().expect("name"), v))
        .collect();
    let off_of = |name: &str| by_span[name]["off_cpu_ns"].as_f64().expect("off_cpu_ns");
    within(off_of("nap"), nap_ns, 0.05, "span nap off-CPU");
    within(
        off_of("wait_reply"),
        wait_ns,
        0.05,
        "span wait_reply off-CPU",
    );
    // Compute never blocks; it is only preempted when something else wants its CPU.
    let preempted = by_span["compute"]["preempted_ns"]
        .as_f64()
        .expect("preempted_ns");
    let blocked = off_of("compute") - preempted;
    assert!(
        blocked < 0.02 * truth["compute_ns"],
        "compute blocked {blocked}"
    );
    let top = |name: &str| {
        by_span[name]["top_blocking"][0]["stack"]
            .as_str()
            .unwrap_or("")
    };
    assert!(top("nap").contains("nanosleep"), "{}", top("nap"));
    assert!(
        top("wait_reply").contains("pipe_read"),
        "{}",
        top("wait_reply")
    );
    // Compute's elapsed time is its CPU time (samples × period) plus its preemptions.
    let on_cpu = by_span["compute"]["on_cpu_ns"].as_f64().expect("on_cpu_ns");
    within(
        on_cpu + preempted,
        truth["compute_ns"],
        0.2,
        "span compute on-CPU + preempted (199 Hz samples)",
    );
    assert_eq!(s["off_cpu"]["lost_intervals"], 0);

    // wall.folded: on-CPU samples × period plus off-CPU time add up to the main thread's
    // elapsed time (sampling noise on the CPU part only).
    let wall = folded_file(&dir, "wall.folded");
    let main_wall: f64 = wall
        .iter()
        .filter(|(f, _)| f[1].ends_with(&main_tid))
        .map(|(_, n)| *n as f64 * 1e3)
        .sum();
    within(main_wall, total_ns, 0.10, "main thread wall time");
    for svg in ["offcpu.svg", "wall.svg"] {
        let text = std::fs::read_to_string(dir.join(svg)).expect("svg written");
        assert!(text.contains("[off-cpu]"), "{svg} marks off-CPU frames");
        assert!(text.contains("rgb(60,110,220)"), "{svg} colors them apart");
    }

    // Perfetto: every nap and pipe wait of the main thread (3 ms, above the 100 µs default) is a
    // slice on its thread track, nested in the span that waited.
    let trace = decode_perfetto(&dir.join("trace.perfetto-trace"));
    check_perfetto(&trace);
    let main_track = trace
        .all("packet")
        .filter_map(|p| p.child("track_descriptor"))
        .find(|t| {
            t.child("thread")
                .is_some_and(|th| th.get_u64("tid") == Some(u64::from(target.pid())))
        })
        .and_then(|t| t.get_u64("uuid"))
        .expect("main thread track");
    let mut open: Vec<String> = Vec::new();
    let (mut off_cpu_slices, mut nested) = (0, 0);
    for e in trace.all("packet").filter_map(|p| p.child("track_event")) {
        if e.get_u64("track_uuid") != Some(main_track) {
            continue;
        }
        match e.get("type") {
            Some("TYPE_SLICE_BEGIN") => {
                let name = e.get("name").unwrap_or("").trim_matches('"').to_string();
                if name.starts_with("off-CPU: ") {
                    off_cpu_slices += 1;
                    if open.iter().any(|s| s == "nap" || s == "wait_reply") {
                        nested += 1;
                    }
                }
                open.push(name);
            }
            _ => {
                open.pop();
            }
        }
    }
    eprintln!("main thread: {off_cpu_slices} off-CPU slices, {nested} inside nap/wait_reply");
    assert!(off_cpu_slices >= 2 * 150, "{off_cpu_slices} off-CPU slices");
    assert!(nested >= 2 * 150, "{nested} nested in their spans");
}

/// The heaviest off-CPU stacks given, and the recording's warnings.
fn show_heaviest(lines: &[&(Vec<String>, u64)], dir: &std::path::Path) {
    let mut heaviest: Vec<_> = lines.to_vec();
    heaviest.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    for (f, n) in heaviest.iter().take(8) {
        eprintln!("{n} µs: {}", f.join(";"));
    }
    eprintln!("warnings: {}", summary(dir)["warnings"]);
}

/// A stack map with one bucket: every off-CPU stack but the first finds its bucket held (what
/// the sampler's thousands of distinct stacks do to some of them in a long recording). Each
/// wait keeps its own kernel stack all the same, from the map of wait stacks. (Whether user
/// stacks collide there too, each preemption of `compute` being a new one, is chance: those
/// are counted. The kernel stacks checked here are a handful, the same in every run.)
#[test]
fn off_cpu_stacks_whose_bucket_is_taken_keep_their_stacks() {
    let bin = build_c("offcpu-buckets", "offcpu.c", &c_fp_probes());
    let mut target = Target::start(&bin, &["40"]);
    let main_tid = format!("[{}]", target.pid());
    let (dir, out) = record_run(
        &mut target,
        "offcpu-buckets",
        &[
            "--off-cpu",
            "--frequency",
            "199",
            "--group-by",
            "thread",
            "--stack-map-entries",
            "1",
        ],
    );
    let truth: HashMap<String, f64> = printed_values(&out);
    let off = folded_file(&dir, "offcpu.folded");
    let main: Vec<&(Vec<String>, u64)> = off
        .iter()
        .filter(|(f, _)| f[1].ends_with(&main_tid))
        .collect();
    show_heaviest(&main, &dir);
    let in_kernel = |what: &str| -> f64 {
        main.iter()
            .filter(|(f, _)| f.iter().any(|x| x.contains(what) && x.ends_with("_[k]")))
            .map(|(_, n)| *n as f64 * 1e3)
            .sum()
    };
    within(
        in_kernel("nanosleep"),
        truth["nap_ns"],
        0.05,
        "nanosleep off-CPU",
    );
    within(
        in_kernel("pipe_read"),
        truth["wait_ns"],
        0.05,
        "pipe read off-CPU",
    );
}

/// Threads that exit must not leave their last switch-out behind in the kernel: 20000
/// short-lived threads (more than its table holds) each nap once, and every nap is counted.
#[test]
fn thread_churn_keeps_every_switch_tracked() {
    let bin = build_c("churn", "churn.c", C_FP);
    let mut target = Target::start(&bin, &["20000"]);
    let (dir, out) = record_run(&mut target, "churn", &["--off-cpu"]);
    assert!(out.contains("threads 20000"), "{out}");
    let s = summary(&dir);
    let warnings = s["warnings"].to_string();
    assert!(!warnings.contains("not tracked"), "{warnings}");
    let naps: u64 = s["off_cpu"]["top_stacks"]
        .as_array()
        .expect("top stacks")
        .iter()
        .filter(|t| t["stack"].as_str().is_some_and(|x| x.contains("nanosleep")))
        .map(|t| t["intervals"].as_u64().unwrap_or(0))
        .sum();
    eprintln!("{naps} naps counted of 20000; {}", s["off_cpu"]["switches"]);
    assert!(naps >= 19_900, "{naps} of 20000 naps counted");
}

#[test]
fn off_cpu_min_leaves_out_shorter_waits() {
    let bin = build_c("offcpu-min", "offcpu.c", &c_fp_probes());
    let mut target = Target::start(&bin, &["40"]);
    // With --group-by thread the second frame is `NAME [TID]`; the main thread's tid is the pid.
    let main_tid = format!("[{}]", target.pid());
    // Every wait of the program is about 3 ms: a 20 ms threshold leaves them out. A busy
    // machine can stretch a few (a nap woken late, a preemption): those that reach 20 ms are
    // kept, as they should be.
    let (dir, _) = record_run(
        &mut target,
        "offcpu-min",
        &["--off-cpu", "--off-cpu-min", "20ms", "--group-by", "thread"],
    );
    let off = folded_file(&dir, "offcpu.folded");
    let main_us: u64 = off
        .iter()
        .filter(|(f, _)| f[1].ends_with(&main_tid))
        .map(|(_, n)| n)
        .sum();
    let rec = profiler::outputs::recording::read(&dir.join("recording.pb")).expect("read");
    let kept: Vec<_> = rec
        .off_cpu
        .iter()
        .filter(|o| o.tid == target.pid())
        .collect();
    let intervals: u64 = kept.iter().map(|o| o.count).sum();
    let kept_ns: u64 = kept.iter().map(|o| o.total_ns).sum();
    eprintln!("main thread: {intervals} intervals of 20 ms or more kept, {kept_ns} ns");
    // offcpu.folded shows those, each line rounded down to the µs.
    assert!(
        main_us <= kept_ns / 1000 && main_us + off.len() as u64 >= kept_ns / 1000,
        "{main_us} µs in offcpu.folded: {off:?}"
    );
    // Each one is also on the timeline (kept one by one from 100 µs by default): none shorter.
    let one_by_one: Vec<u64> = rec
        .off_cpu_intervals
        .iter()
        .filter(|i| i.tid == target.pid())
        .map(|i| i.end_ns.saturating_sub(i.begin_ns))
        .collect();
    assert_eq!(one_by_one.len() as u64, intervals, "{one_by_one:?}");
    assert_eq!(one_by_one.iter().sum::<u64>(), kept_ns);
    assert!(
        one_by_one.iter().all(|&ns| ns >= 20_000_000),
        "shorter than 20 ms: {one_by_one:?}"
    );
    // 300 waits of ~3 ms (150 cycles of a nap and a reply).
    assert!(intervals <= 30, "{intervals} of ~300 waits kept: {off:?}");
    let s = summary(&dir);
    assert_eq!(s["off_cpu"]["min_ns"], 20_000_000);
    assert!(s["off_cpu"]["switches"].as_u64().expect("switches") >= 80);
}

/// `--off-cpu-sample 2`: half the switch-outs are recorded, each counted twice, so the main
/// thread's blocked time still matches what it measured (600 waits of ~3 ms: the estimate's
/// relative spread is sqrt(1/600), about 4%, so 20% is five of it), while the intervals the
/// timeline keeps are about half of them, each a real one.
#[test]
fn off_cpu_sampling_keeps_totals_unbiased() {
    let bin = build_c("offcpu-sample", "offcpu.c", &c_fp_probes());
    let mut target = Target::start(&bin, &["300"]);
    let main_tid = format!("[{}]", target.pid());
    let (dir, out) = record_run(
        &mut target,
        "offcpu-sample",
        &["--off-cpu", "--off-cpu-sample", "2", "--group-by", "thread"],
    );
    let truth: HashMap<String, f64> = printed_values(&out);
    let off = folded_file(&dir, "offcpu.folded");
    let blocked: f64 = off
        .iter()
        .filter(|(f, _)| f[1].ends_with(&main_tid) && f.iter().any(|x| x == "[off-cpu]"))
        .map(|(_, n)| *n as f64 * 1e3)
        .sum();
    within(
        blocked,
        truth["nap_ns"] + truth["wait_ns"],
        0.20,
        "main thread blocked, sampled 1 in 2",
    );
    let s = summary(&dir);
    assert_eq!(s["off_cpu"]["sample_every"], 2);
    let text = std::fs::read_to_string(dir.join("summary.txt")).expect("summary.txt");
    assert!(text.contains("1 switch-out in 2 recorded"), "{text}");
    // The timeline holds recorded intervals only, never scaled ones: about half of the
    // main thread's 600 waits (each ~3 ms, above the 100 µs default).
    let trace = decode_perfetto(&dir.join("trace.perfetto-trace"));
    check_perfetto(&trace);
    let slices = trace
        .all("packet")
        .filter_map(|p| p.child("track_event"))
        .filter(|e| {
            e.get("type") == Some("TYPE_SLICE_BEGIN")
                && e.get("name").is_some_and(|n| n.contains("off-CPU: "))
        })
        .count();
    eprintln!("{slices} off-CPU slices on the timeline (all threads)");
    assert!(
        (450..=800).contains(&slices),
        "{slices} off-CPU slices: expected about half of the ~1200 waits of both threads"
    );
}

/// A program built as distributions build (no frame pointers), recorded in DWARF mode: each
/// recorded switch-out sends a copy of the user stack, unwound in userspace, so the naps and
/// pipe waits lead back through `nap` and `wait_reply` to `main`, and the sums still match
/// the program's own timing. Walking frame pointers instead stops in libc, which is what
/// this test must tell apart.
#[test]
fn off_cpu_stacks_of_a_program_without_frame_pointers_reach_main_in_dwarf_mode() {
    let bin = build_c("offcpu-nofp", "offcpu.c", &c_nofp_probes());
    let record = |name: &str, call_graph: &str| {
        let mut target = Target::start(&bin, &["100"]);
        let main_tid = format!("[{}]", target.pid());
        let (dir, out) = record_run(
            &mut target,
            name,
            &[
                "--off-cpu",
                "--call-graph",
                call_graph,
                "--group-by",
                "thread",
            ],
        );
        let truth: HashMap<String, f64> = printed_values(&out);
        let off: Vec<(Vec<String>, u64)> = folded_file(&dir, "offcpu.folded")
            .into_iter()
            .filter(|(f, _)| f[1].ends_with(&main_tid))
            .collect();
        (dir, truth, off)
    };
    // Of the main thread's time waiting in `kernel_fn`, the share whose user frames lead
    // through `user_fn` to `main`; and that time in ns.
    let reach = |off: &[(Vec<String>, u64)], kernel_fn: &str, user_fn: &str| -> (f64, f64) {
        let waits: Vec<&(Vec<String>, u64)> = off
            .iter()
            .filter(|(f, _)| {
                f.iter()
                    .any(|x| x.contains(kernel_fn) && x.ends_with("_[k]"))
            })
            .collect();
        let all: u64 = waits.iter().map(|(_, n)| n).sum();
        let reached: u64 = waits
            .iter()
            .filter(|(f, _)| {
                let at = |name: &str| f.iter().position(|x| x == name);
                matches!((at("main"), at(user_fn)), (Some(m), Some(u)) if m < u)
            })
            .map(|(_, n)| n)
            .sum();
        (reached as f64 / all.max(1) as f64, all as f64 * 1e3)
    };

    let (dir, truth, off) = record("offcpu-nofp-dwarf", "dwarf");
    let (naps, nap_ns) = reach(&off, "nanosleep", "nap");
    let (reads, read_ns) = reach(&off, "pipe_read", "wait_reply");
    eprintln!("dwarf: {naps:.3} of nap time and {reads:.3} of pipe wait time reach main");
    assert!(naps >= 0.99, "{naps} of nap time reaches main: {off:?}");
    assert!(
        reads >= 0.99,
        "{reads} of pipe wait time reaches main: {off:?}"
    );
    within(
        nap_ns,
        truth["nap_ns"],
        0.05,
        "nanosleep off-CPU, DWARF stacks",
    );
    within(
        read_ns,
        truth["wait_ns"],
        0.05,
        "pipe read off-CPU, DWARF stacks",
    );
    let s = summary(&dir);
    assert_eq!(s["stacks"]["call_graph"], "dwarf");
    assert_eq!(s["off_cpu"]["without_user_stack"], 0, "{}", s["off_cpu"]);

    let (_, _, off) = record("offcpu-nofp-fp", "fp");
    let (naps, _) = reach(&off, "nanosleep", "nap");
    let (reads, _) = reach(&off, "pipe_read", "wait_reply");
    eprintln!("fp: {naps:.3} of nap time and {reads:.3} of pipe wait time reach main");
    assert!(
        naps < 0.5 && reads < 0.5,
        "frame pointers reached main in a program built without them: the test cannot tell"
    );
}
