//! Off-CPU analysis: where threads waited, per stack, thread and span, and how a span's time
//! splits between computing (CPU samples × the sampling period) and waiting (`--off-cpu`).
use std::collections::HashMap;

use serde::Serialize;

use crate::model::{FrameKind, Recording};

/// User frames named in a stack's description.
const DESCRIBED_FRAMES: usize = 4;
const TOP_STACKS: usize = 10;
const TOP_STACKS_PER_SPAN: usize = 3;

#[derive(Debug, Serialize)]
pub struct OffCpuReport {
    /// All counted off-CPU time of the target threads.
    pub total_ns: u64,
    /// Blocked (sleep, I/O, locks, …).
    pub blocked_ns: u64,
    /// Preempted while runnable: waiting for a CPU.
    pub preempted_ns: u64,
    pub intervals: u64,
    /// Intervals shorter than this were not counted.
    pub min_ns: u64,
    /// Switch-outs of the target threads: those recorded, times `sample_every` (an estimate
    /// when sampled: the kernel draws before it looks the thread up).
    pub switches: u64,
    pub switches_recorded: u64,
    /// Intervals the kernel events dropped with the ring buffer full.
    pub lost_intervals: u64,
    /// Intervals lost because the program never saw their thread come back on CPU.
    pub unmatched_intervals: u64,
    pub lost_ns: u64,
    /// Intervals of threads in DWARF mode kept without their user stack (its copy lost).
    pub without_user_stack: u64,
    /// Runs of the sched_switch program (every context switch of the machine) and their mean
    /// run time.
    pub bpf_switch_runs: u64,
    pub bpf_ns_per_switch: Option<f64>,
    /// True when the sums were rebuilt from kept intervals for a time window.
    pub windowed: bool,
    /// `--off-cpu-sample N`: 1 switch-out in N recorded, sums scaled by N (1: all of them).
    pub sample_every: u32,
    pub top_stacks: Vec<BlockingStack>,
    pub by_thread: Vec<ThreadOffCpu>,
    /// Spans by name, most off-CPU time first; empty without spans.
    pub by_span: Vec<SpanTime>,
}

#[derive(Debug, Serialize, Clone)]
pub struct BlockingStack {
    /// Innermost user functions first, then where in the kernel it waited.
    pub stack: String,
    pub ns: u64,
    pub intervals: u64,
    pub preempted: bool,
}

#[derive(Debug, Serialize)]
pub struct ThreadOffCpu {
    pub tid: u32,
    pub name: String,
    pub off_cpu_ns: u64,
}

#[derive(Debug, Serialize)]
pub struct SpanTime {
    pub name: String,
    pub count: u64,
    /// Sum of the spans' durations.
    pub total_ns: u64,
    /// CPU samples inside the spans times the sampling period.
    pub on_cpu_ns: u64,
    /// Blocked plus preempted.
    pub off_cpu_ns: u64,
    /// Preempted while runnable: the CPU was busy with other work.
    pub preempted_ns: u64,
    pub top_blocking: Vec<BlockingStack>,
}

/// Kernel frames of the switch itself, skipped when naming where a thread waited.
fn is_scheduler_frame(name: &str) -> bool {
    [
        "schedule",
        "context_switch",
        "trace",
        "bpf",
        "perf_",
        "finish_task_switch",
    ]
    .iter()
    .any(|p| name.contains(p))
}

/// "read ← wait_reply ← main (in pipe_read)": where a thread left the CPU.
pub fn describe_stack(rec: &Recording, stack: u32) -> String {
    let frames = rec.frames(stack);
    let user = rec.user_frame_names(stack, 0, DESCRIBED_FRAMES);
    // Leaf first: the first non-scheduler kernel frame is the wait's own code (pipe_read,
    // do_nanosleep, futex_wait, …).
    let kernel = frames
        .iter()
        .filter(|f| f.kind == FrameKind::Kernel)
        .map(|f| f.name.to_string())
        .find(|n| !is_scheduler_frame(n));
    let mut s = if user.is_empty() {
        "[no user stack]".to_string()
    } else {
        user.join(" ← ")
    };
    if let Some(k) = kernel {
        s += &format!(" (in {k})");
    }
    s
}

/// Every stack the recording's threads waited in, by description, most off-CPU time first.
pub fn blocking_stacks(rec: &Recording) -> Vec<BlockingStack> {
    let mut stacks: HashMap<(u32, bool), (u64, u64)> = HashMap::new();
    for o in &rec.off_cpu {
        let e = stacks.entry((o.stack, o.runnable)).or_default();
        e.0 = e.0.saturating_add(o.total_ns);
        e.1 = e.1.saturating_add(o.count);
    }
    top(stacks, rec, usize::MAX)
}

fn top(map: HashMap<(u32, bool), (u64, u64)>, rec: &Recording, n: usize) -> Vec<BlockingStack> {
    // Different stacks can read the same (inlined frames, kernel detail): merge by text.
    let mut by_text: HashMap<(String, bool), (u64, u64)> = HashMap::new();
    for ((stack, preempted), (ns, count)) in map {
        let e = by_text
            .entry((describe_stack(rec, stack), preempted))
            .or_default();
        e.0 = e.0.saturating_add(ns);
        e.1 = e.1.saturating_add(count);
    }
    let mut v: Vec<BlockingStack> = by_text
        .into_iter()
        .map(|((stack, preempted), (ns, intervals))| BlockingStack {
            stack,
            ns,
            intervals,
            preempted,
        })
        .collect();
    v.sort_by(|a, b| b.ns.cmp(&a.ns).then_with(|| a.stack.cmp(&b.stack)));
    v.truncate(n);
    v
}

impl OffCpuReport {
    pub fn new(rec: &Recording) -> Option<Self> {
        let info = rec.off_cpu_info.as_ref()?;
        let c = rec.counters();
        let mut stacks: HashMap<(u32, bool), (u64, u64)> = HashMap::new();
        let mut threads: HashMap<u32, u64> = HashMap::new();
        let (mut blocked_ns, mut preempted_ns, mut intervals) = (0u64, 0u64, 0u64);
        for o in &rec.off_cpu {
            let e = stacks.entry((o.stack, o.runnable)).or_default();
            e.0 = e.0.saturating_add(o.total_ns);
            e.1 = e.1.saturating_add(o.count);
            let t = threads.entry(o.tid).or_default();
            *t = t.saturating_add(o.total_ns);
            if o.runnable {
                preempted_ns = preempted_ns.saturating_add(o.total_ns);
            } else {
                blocked_ns = blocked_ns.saturating_add(o.total_ns);
            }
            intervals = intervals.saturating_add(o.count);
        }
        let mut by_thread: Vec<ThreadOffCpu> = threads
            .into_iter()
            .map(|(tid, ns)| ThreadOffCpu {
                tid,
                name: rec.thread_name(tid).unwrap_or("?").to_string(),
                off_cpu_ns: ns,
            })
            .collect();
        by_thread.sort_by(|a, b| b.off_cpu_ns.cmp(&a.off_cpu_ns).then(a.tid.cmp(&b.tid)));
        Some(Self {
            total_ns: blocked_ns.saturating_add(preempted_ns),
            blocked_ns,
            preempted_ns,
            intervals,
            min_ns: info.min_ns,
            switches: c
                .off_cpu_switches
                .saturating_mul(u64::from(info.sample_every.max(1))),
            switches_recorded: c.off_cpu_switches,
            lost_intervals: c.off_cpu_events_lost,
            unmatched_intervals: c.off_cpu_unmatched,
            lost_ns: c.off_cpu_lost_ns,
            without_user_stack: c.off_cpu_stacks_unmatched,
            bpf_switch_runs: info.bpf_run_count,
            bpf_ns_per_switch: (info.bpf_run_count > 0)
                .then(|| info.bpf_run_time_ns as f64 / info.bpf_run_count as f64),
            windowed: info.windowed,
            sample_every: info.sample_every.max(1),
            top_stacks: top(stacks, rec, TOP_STACKS),
            by_thread,
            by_span: by_span(rec),
        })
    }

    pub fn to_text(&self, t: &mut String) {
        use crate::outputs::summary::fmt_ns;
        use std::fmt::Write as _;
        let _ = writeln!(
            t,
            "\nOff-CPU: {} ({} blocked, {} preempted) in {} intervals of at least {}; {} switch-outs; {} intervals lost, {} closed from CPU time (their return to CPU went unreported){}",
            fmt_ns(self.total_ns as f64),
            fmt_ns(self.blocked_ns as f64),
            fmt_ns(self.preempted_ns as f64),
            self.intervals,
            fmt_ns(self.min_ns as f64),
            self.switches,
            self.lost_intervals,
            self.unmatched_intervals,
            if self.windowed {
                " (windowed: only intervals kept one by one)"
            } else {
                ""
            }
        );
        if self.sample_every > 1 {
            let _ = writeln!(
                t,
                "Sampled: 1 switch-out in {} recorded at random ({} of them), each counted {} times (sums and counts are estimates)",
                self.sample_every, self.switches_recorded, self.sample_every
            );
        }
        if let Some(ns) = self.bpf_ns_per_switch {
            let _ = writeln!(t, "BPF cost: {ns:.0} ns per context switch (any task)");
        }
        let _ = writeln!(t, "\nTop blocking stacks");
        for s in &self.top_stacks {
            let _ = writeln!(
                t,
                "  {:>10} {:>7}×  {}{}",
                fmt_ns(s.ns as f64),
                s.intervals,
                s.stack,
                if s.preempted { " [preempted]" } else { "" }
            );
        }
        let _ = writeln!(t, "\nOff-CPU by thread");
        for th in &self.by_thread {
            let _ = writeln!(
                t,
                "  {:>10}  {} [{}]",
                fmt_ns(th.off_cpu_ns as f64),
                th.name,
                th.tid
            );
        }
        if self.by_span.is_empty() {
            return;
        }
        let _ = writeln!(
            t,
            "\n  {:<28} {:>8} {:>10} {:>10} {:>10} {:>10}  top blocking",
            "span", "count", "total", "on-CPU", "off-CPU", "preempted"
        );
        for s in &self.by_span {
            let top = s
                .top_blocking
                .first()
                .map(|b| format!("{} {}", fmt_ns(b.ns as f64), b.stack))
                .unwrap_or_default();
            let _ = writeln!(
                t,
                "  {:<28} {:>8} {:>10} {:>10} {:>10} {:>10}  {top}",
                s.name,
                s.count,
                fmt_ns(s.total_ns as f64),
                fmt_ns(s.on_cpu_ns as f64),
                fmt_ns(s.off_cpu_ns as f64),
                fmt_ns(s.preempted_ns as f64),
            );
        }
    }
}

/// Per span name: duration, CPU time (from samples) and off-CPU time with its top stacks.
fn by_span(rec: &Recording) -> Vec<SpanTime> {
    if rec.spans.is_empty() {
        return Vec::new();
    }
    let period_ns = rec.sample_period_ns();
    let names: HashMap<(u32, u64), &str> = rec
        .spans
        .iter()
        .map(|s| ((s.pid, s.id), s.name.as_str()))
        .collect();
    #[derive(Default)]
    struct Acc {
        count: u64,
        total_ns: u64,
        samples: u64,
        off_cpu_ns: u64,
        preempted_ns: u64,
        stacks: HashMap<(u32, bool), (u64, u64)>,
    }
    let mut acc: HashMap<&str, Acc> = HashMap::new();
    for s in &rec.spans {
        let a = acc.entry(s.name.as_str()).or_default();
        a.count = a.count.saturating_add(1);
        a.total_ns = a.total_ns.saturating_add(s.duration_ns());
        a.samples = a.samples.saturating_add(s.samples);
    }
    for o in rec.off_cpu.iter().filter(|o| o.span != 0) {
        let Some(name) = names.get(&(o.pid, o.span)) else {
            continue;
        };
        let a = acc.entry(name).or_default();
        a.off_cpu_ns = a.off_cpu_ns.saturating_add(o.total_ns);
        if o.runnable {
            a.preempted_ns = a.preempted_ns.saturating_add(o.total_ns);
        }
        let e = a.stacks.entry((o.stack, o.runnable)).or_default();
        e.0 = e.0.saturating_add(o.total_ns);
        e.1 = e.1.saturating_add(o.count);
    }
    let mut out: Vec<SpanTime> = acc
        .into_iter()
        .map(|(name, a)| SpanTime {
            name: name.to_string(),
            count: a.count,
            total_ns: a.total_ns,
            on_cpu_ns: a.samples.saturating_mul(period_ns),
            off_cpu_ns: a.off_cpu_ns,
            preempted_ns: a.preempted_ns,
            top_blocking: top(a.stacks, rec, TOP_STACKS_PER_SPAN),
        })
        .collect();
    out.sort_by(|a, b| {
        b.off_cpu_ns
            .cmp(&a.off_cpu_ns)
            .then_with(|| a.name.cmp(&b.name))
    });
    out
}
