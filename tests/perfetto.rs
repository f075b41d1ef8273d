//! `trace.perfetto-trace` checked against Perfetto's official schema with protoc: it decodes,
//! every interned id and track it references is defined earlier on its sequence, and its
//! sample count is the summary's.
use std::collections::HashSet;

use profiler_tests::*;

#[test]
fn multithreaded_trace_decodes_with_the_official_schema() {
    let bin = build_c("threads-perfetto", "threads.c", C_FP);
    let target = Target::start(&bin, &["20"]);
    let out_dir = record_ok(
        &target,
        "perfetto",
        &["--duration", "2", "--frequency", "199"],
    );
    let trace = decode_perfetto(&out_dir.join("trace.perfetto-trace"));
    let ts = check_perfetto(&trace).sample_ts;
    let s = summary(&out_dir);
    assert_eq!(Some(ts.len() as u64), s["samples"]["recorded"].as_u64());
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "samples in time order");

    let names: HashSet<String> = trace
        .all("packet")
        .filter_map(|p| {
            p.child("track_descriptor")?
                .child("thread")?
                .get("thread_name")
        })
        .map(|n| n.trim_matches('"').to_string())
        .collect();
    for n in ["worker-one", "worker-two"] {
        assert!(names.contains(n), "thread track {n} in {names:?}");
    }
    let process = trace
        .all("packet")
        .find_map(|p| p.child("track_descriptor")?.child("process"))
        .expect("process track");
    assert_eq!(process.get_u64("pid"), Some(u64::from(target.pid())));

    // report --from/--to cuts every output to the window, the trace included.
    let out = profiler()
        .arg("report")
        .arg(&*out_dir)
        .args(["--from", "0.5", "--to", "1.5", "--output"])
        .arg(out_dir.join("window"))
        .output()
        .expect("report runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let window = out_dir.join("window");
    let wts = check_perfetto(&decode_perfetto(&window.join("trace.perfetto-trace"))).sample_ts;
    let ws = summary(&window);
    assert_eq!(Some(wts.len() as u64), ws["samples"]["recorded"].as_u64());
    assert_eq!(total(&folded(&window)), wts.len() as u64);
    assert!(
        wts.len() > 100 && wts.len() < ts.len(),
        "{} of {}",
        wts.len(),
        ts.len()
    );
    let duration = ws["duration_s"].as_f64().expect("duration");
    assert!(
        (duration - 1.0).abs() < 1e-6,
        "window of 1 s, got {duration}"
    );
    // The full recording in the source directory is untouched.
    assert_eq!(
        summary(&out_dir)["samples"]["recorded"].as_u64(),
        Some(ts.len() as u64)
    );
}
