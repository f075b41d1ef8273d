//! The Perfetto writer streams: 10 million samples through it must not grow the process's
//! peak memory by more than 64 MB (issue: "memory stays flat whatever the trace size").
//! Its own test binary, so no other test allocates meanwhile.
use std::io;

use profiler::{
    model::{Function, Line, Location, Module, ModuleKind, Recording, Sample, Stack},
    outputs::perfetto::TraceWriter,
};

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// 1000 distinct stacks of 12 frames over 200 functions in one module.
fn recording() -> Recording {
    let functions = (0..200)
        .map(|i| Function {
            name: format!("function_{i}"),
            file: String::new(),
        })
        .collect();
    let locations = (0..200u32)
        .map(|i| Location {
            module: 1,
            offset: 0x1000 + u64::from(i) * 16,
            address: 0x40_1000 + u64::from(i) * 16,
            lines: vec![Line {
                function: i,
                line: 0,
            }],
        })
        .collect();
    let stacks = (0..1000u32)
        .map(|s| Stack {
            locations: (0..12u32).map(|d| (s * 7 + d * 13) % 200).collect(),
        })
        .collect();
    Recording {
        modules: vec![Module {
            path: "/usr/bin/app".into(),
            kind: ModuleKind::File as i32,
            build_id: vec![1, 2, 3, 4],
            has_symbols: true,
            debug_file: String::new(),
        }],
        functions,
        locations,
        stacks,
        ..Default::default()
    }
}

#[test]
fn ten_million_samples_stream_in_flat_memory() {
    const SAMPLES: u64 = 10_000_000;
    let rec = recording();
    let before = status_kb("VmRSS:");
    let mut w = TraceWriter::new(io::sink());
    w.process(0, 1, "app", &[]).expect("sink");
    for t in 0..4 {
        w.thread(0, 1, 100 + t, "worker").expect("sink");
    }
    for i in 0..SAMPLES {
        let s = Sample {
            timestamp_ns: 1_000_000_000 + i * 1000,
            pid: 1,
            tid: 100 + (i % 4) as u32,
            cpu: (i % 2) as u32,
            stack: (i % 1000) as u32,
            span: 0,
        };
        w.perf_sample(&rec, &s).expect("sink");
    }
    let packets = w.packets();
    w.finish().expect("flush");
    let peak = status_kb("VmHWM:");
    let growth_mb = peak.saturating_sub(before) as f64 / 1024.0;
    eprintln!(
        "{packets} packets; RSS before {:.1} MB, peak {:.1} MB, growth {growth_mb:.1} MB",
        before as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    assert_eq!(packets, SAMPLES + 5);
    assert!(growth_mb < 64.0, "peak grew by {growth_mb:.1} MB");
}
