//! `/metrics`: Prometheus text exposition of what the server recorded since it started.
use std::fmt::Write;

#[derive(Debug, Default)]
pub struct Metrics {
    pub done: u64,
    pub failed: u64,
    pub samples: u64,
    pub lost: u64,
    pub bpf_run_time_ns: u64,
    pub bpf_runs: u64,
}

impl Metrics {
    pub fn count(&mut self, phase: super::store::Phase) {
        match phase {
            super::store::Phase::Done => self.done = self.done.saturating_add(1),
            _ => self.failed = self.failed.saturating_add(1),
        }
    }

    pub fn add(&mut self, raw: &crate::collect::RawRecording) {
        self.samples = self.samples.saturating_add(raw.counters.received);
        self.lost = self.lost.saturating_add(raw.counters.lost_ringbuf_full);
        self.bpf_run_time_ns = self.bpf_run_time_ns.saturating_add(raw.bpf_run_time_ns);
        self.bpf_runs = self.bpf_runs.saturating_add(raw.bpf_run_count);
    }

    pub fn render(&self, active: usize) -> String {
        let mut s = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: &[(&str, String)]| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in lines {
                let _ = writeln!(s, "{name}{labels} {value}");
            }
        };
        metric(
            "profiler_recordings_total",
            "counter",
            "Recordings finished since the server started, by outcome.",
            &[
                ("{state=\"done\"}", self.done.to_string()),
                ("{state=\"failed\"}", self.failed.to_string()),
            ],
        );
        metric(
            "profiler_recordings_active",
            "gauge",
            "Recordings running or being written.",
            &[("", active.to_string())],
        );
        metric(
            "profiler_samples_total",
            "counter",
            "CPU samples received by finished recordings.",
            &[("", self.samples.to_string())],
        );
        metric(
            "profiler_lost_samples_total",
            "counter",
            "Samples the kernel dropped with the ring buffer full.",
            &[("", self.lost.to_string())],
        );
        metric(
            "profiler_bpf_run_time_ns_total",
            "counter",
            "Time the kernel spent in the sampling program.",
            &[("", self.bpf_run_time_ns.to_string())],
        );
        metric(
            "profiler_bpf_runs_total",
            "counter",
            "Runs of the sampling program.",
            &[("", self.bpf_runs.to_string())],
        );
        let per_sample = if self.bpf_runs == 0 {
            0.0
        } else {
            self.bpf_run_time_ns as f64 / self.bpf_runs as f64
        };
        metric(
            "profiler_bpf_ns_per_sample",
            "gauge",
            "Mean kernel time per sample (0 until kernel.bpf_stats_enabled lets it be measured).",
            &[("", format!("{per_sample:.1}"))],
        );
        if let Some(held) = crate::heap::in_use_bytes() {
            metric(
                "profiler_heap_in_use_bytes",
                "gauge",
                "Memory the server's allocator has handed out and not had back (RSS also counts freed memory not yet returned).",
                &[("", held.to_string())],
            );
        }
        s
    }
}
