//! `trace.perfetto-trace` checked against Perfetto's official schema with protoc: it decodes,
//! every interned id and track it references is defined earlier on its sequence, and its
//! sample count is the summary's.
use std::collections::HashSet;

use profiler_tests::*;

/// Checks the invariants a Perfetto reader relies on; returns the timestamps of the samples.
fn check_trace(trace: &TextMessage) -> Vec<u64> {
    let packets: Vec<&TextMessage> = trace.all("packet").collect();
    assert!(!packets.is_empty());
    assert_eq!(
        packets[0].get("sequence_flags"),
        Some("1"),
        "first packet clears state"
    );
    let mut names: HashSet<u64> = HashSet::new();
    let mut frames: HashSet<u64> = HashSet::new();
    let mut stacks: HashSet<u64> = HashSet::new();
    let mut maps: HashSet<u64> = HashSet::new();
    let mut paths: HashSet<u64> = HashSet::new();
    let mut tracks = HashSet::new();
    let mut thread_tids = HashSet::new();
    let mut sample_ts = Vec::new();
    for p in &packets {
        assert_eq!(
            p.get("trusted_packet_sequence_id"),
            Some("1"),
            "one sequence"
        );
        if let Some(d) = p.child("interned_data") {
            let iid = |m: &TextMessage| m.get_u64("iid").expect("iid");
            for s in d.all("function_names") {
                assert!(names.insert(iid(s)), "function name interned twice");
            }
            for s in d.all("mapping_paths") {
                assert!(paths.insert(iid(s)));
            }
            for m in d.all("mappings") {
                for (k, v) in &m.scalars {
                    if k == "path_string_ids" {
                        assert!(
                            paths.contains(&v.parse().expect("id")),
                            "path before mapping"
                        );
                    }
                }
                assert!(maps.insert(iid(m)));
            }
            for f in d.all("frames") {
                let name = f.get_u64("function_name_id").expect("named frame");
                assert!(names.contains(&name), "name before frame");
                if let Some(m) = f.get_u64("mapping_id") {
                    assert!(maps.contains(&m), "mapping before frame");
                }
                assert!(frames.insert(iid(f)), "frame interned twice");
            }
            for c in d.all("callstacks") {
                for (k, v) in &c.scalars {
                    if k == "frame_ids" {
                        assert!(
                            frames.contains(&v.parse().expect("id")),
                            "frame before stack"
                        );
                    }
                }
                assert!(stacks.insert(iid(c)));
            }
        }
        if let Some(t) = p.child("track_descriptor") {
            let uuid = t.get_u64("uuid").expect("uuid");
            if let Some(parent) = t.get_u64("parent_uuid") {
                assert!(tracks.contains(&parent), "parent described first");
            }
            assert!(tracks.insert(uuid), "track described twice");
            if let Some(th) = t.child("thread") {
                thread_tids.insert(th.get_u64("tid").expect("tid"));
            }
        }
        if let Some(s) = p.child("perf_sample")
            && let Some(cs) = s.get_u64("callstack_iid")
        {
            assert!(stacks.contains(&cs), "callstack {cs} defined before use");
            let tid = s.get_u64("tid").expect("tid");
            assert!(
                thread_tids.contains(&tid),
                "thread {tid} described before its samples"
            );
            assert_eq!(
                p.get("sequence_flags"),
                Some("2"),
                "needs incremental state"
            );
            sample_ts.push(p.get_u64("timestamp").expect("timestamp"));
        }
    }
    sample_ts
}

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
    let ts = check_trace(&trace);
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
    let wts = check_trace(&decode_perfetto(&window.join("trace.perfetto-trace")));
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
