//! `summary.txt` for people and `summary.json`, its machine-readable twin (schema in the
//! README): sample accounting, top functions by self and total share, and the hot paths drawn
//! as an ASCII flame chart.
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::{
    model::{Counters, ModuleKind, Recording},
    spans::{self as span_stats, NameStats},
};

pub const SCHEMA: &str = "profiler-summary/1";
const TOP: usize = 15;
const BAR_WIDTH: usize = 40;
/// Hot-path nodes below this share of all samples are left out.
const HOT_PATH_MIN_SHARE: f64 = 0.01;
const HOT_PATH_MAX_DEPTH: usize = 40;

#[derive(Debug, Serialize)]
pub struct Summary {
    pub schema: &'static str,
    pub command: String,
    pub pid: u32,
    pub process_name: String,
    pub duration_s: f64,
    pub frequency_hz: u64,
    pub cpus: u32,
    pub stop_reason: String,
    /// What to look at first: the span verdict, then hotspots (`crate::findings`).
    pub findings: Vec<crate::findings::Finding>,
    pub samples: SampleAccounting,
    pub threads: Vec<ThreadShare>,
    /// Per process, most samples first.
    pub processes: Vec<ProcessShare>,
    /// Per cgroup, most samples first; empty when no process's cgroup is known.
    pub cgroups: Vec<CgroupShare>,
    /// Kernel threads and the idle task left out of every output but `recording.pb`
    /// (`--kernel-threads` keeps them).
    pub kernel_tasks_hidden: KernelTasksHidden,
    pub top_self: Vec<FunctionShare>,
    pub top_total: Vec<FunctionShare>,
    pub hot_paths: Vec<HotPath>,
    pub overhead: Overhead,
    pub stacks: StackQuality,
    pub modules_without_symbols: Vec<String>,
    /// Modules named from a separate debug file, and which.
    pub debug_files: Vec<DebugFileUse>,
    pub warnings: Vec<String>,
    /// Present when span probes were attached.
    pub spans: Option<SpanReport>,
    /// Present with `--off-cpu`.
    pub off_cpu: Option<crate::offcpu::OffCpuReport>,
    /// Present with `--alloc`.
    pub alloc: Option<crate::alloc::AllocReport>,
    /// Present with `--locks`.
    pub locks: Option<crate::locks::LocksReport>,
    /// Samples against the targets' own CPU time; None when it could not be read.
    pub coverage: Option<CoverageReport>,
}

/// The coverage check (`collect::coverage`) as the summary shows it.
#[derive(Debug, Serialize)]
pub struct CoverageReport {
    /// `sampled` as a share of `expected`: "sampled N% of expected"; None when the compared
    /// threads used no CPU.
    pub percent: Option<f64>,
    pub sampled: u64,
    pub expected: u64,
    pub cpu_s: f64,
    pub threads: u32,
    pub threads_left_out: u32,
    /// Process-wide, threads that ended during the recording included (`/proc/PID/stat`, to
    /// the clock tick): "N% process-wide".
    pub process_percent: Option<f64>,
    pub process_sampled: u64,
    pub process_expected: u64,
    pub process_cpu_s: f64,
    /// The output was cut to a `--from/--to` window, and this still covers the whole
    /// recording (CPU time is only read at its start and end).
    pub whole_recording: bool,
}

impl CoverageReport {
    fn new(rec: &Recording) -> Option<Self> {
        let m = rec.meta();
        let c = m.coverage.as_ref()?;
        Some(Self {
            percent: crate::collect::coverage::percent(c),
            sampled: c.sampled,
            expected: c.expected,
            cpu_s: c.cpu_ns as f64 / 1e9,
            threads: c.threads,
            threads_left_out: c.threads_left_out,
            process_percent: crate::collect::coverage::process_percent(c),
            process_sampled: c.process_sampled,
            process_expected: c.process_expected,
            process_cpu_s: c.process_cpu_ns as f64 / 1e9,
            whole_recording: m.window_cut,
        })
    }

    fn to_text(&self) -> String {
        // A percentage of a handful is noise (a shell that ran 300 short children reads
        // "300%" from 3 samples for 1 expected): below the warning's floor, say so instead.
        let head = match self.percent {
            Some(_) if self.expected < crate::collect::coverage::MIN_EXPECTED => {
                "too few expected to judge".to_string()
            }
            Some(p) => format!("sampled {p:.1}% of expected"),
            None => "nothing expected".to_string(),
        };
        let plural = |n: u32| if n == 1 { "" } else { "s" };
        let mut line = format!(
            "coverage: {head} ({} samples, {} expected from {:.2} s on CPU of {} thread{} alive throughout",
            self.sampled,
            self.expected,
            self.cpu_s,
            self.threads,
            plural(self.threads)
        );
        if self.threads_left_out > 0 {
            line += &format!(
                "; {} thread{} born or ended during it left out",
                self.threads_left_out,
                plural(self.threads_left_out)
            );
        }
        line += ")";
        if let Some(p) = self.process_percent
            && self.threads_left_out > 0
        {
            line += &format!(
                "; process-wide, ended threads included: {p:.1}% ({} of {} from {:.2} s, to the clock tick)",
                self.process_sampled, self.process_expected, self.process_cpu_s
            );
        }
        if self.whole_recording {
            line += ", whole recording";
        }
        line
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct DebugFileUse {
    pub module: String,
    pub debug_file: String,
}

#[derive(Debug, Serialize)]
pub struct SpanReport {
    pub total: u64,
    pub names: u64,
    pub incomplete: u64,
    pub unmatched_ends: u64,
    pub unmatched_exits: u64,
    pub duplicate_begins: u64,
    pub lost_events: u64,
    pub abi_modules: Vec<String>,
    pub span_fns: Vec<String>,
    /// Most total time first.
    pub by_name: Vec<NameStats>,
    pub slowest: Vec<SlowSpan>,
    pub concurrency_peak: u64,
    /// Seconds after the start of the recording.
    pub concurrency_peak_at_s: f64,
    /// CPU samples taken inside some span, and outside all.
    pub samples_in_spans: u64,
    pub samples_outside_spans: u64,
    /// The span verdict of the findings, in one line.
    pub key_finding: Option<String>,
    /// Exclusive time along the span tree, per name, most top-level time first.
    pub exclusive: Vec<crate::findings::ExclusiveTime>,
}

#[derive(Debug, Serialize)]
pub struct SlowSpan {
    pub id: u64,
    pub name: String,
    pub duration_ns: u64,
    /// Seconds after the start of the recording.
    pub begin_s: f64,
    pub incomplete: bool,
    pub samples: u64,
}

/// `812.4ms`, `3.2s`, `950ns`.
pub fn fmt_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1}ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1}µs", ns / 1e3)
    } else {
        format!("{ns:.0}ns")
    }
}

impl SpanReport {
    pub fn new(rec: &Recording, analysis: &crate::findings::Analysis) -> Option<Self> {
        let info = rec.span_info.as_ref()?;
        if info.abi_modules.is_empty() && info.span_fns.is_empty() && rec.spans.is_empty() {
            return None;
        }
        let start = rec.meta().start_boottime_ns;
        let by_name = span_stats::stats_by_name(&rec.spans);
        let mut slow: Vec<&crate::model::Span> = rec.spans.iter().collect();
        slow.sort_by(|a, b| b.duration_ns().cmp(&a.duration_ns()).then(a.id.cmp(&b.id)));
        let slowest = slow
            .into_iter()
            .take(10)
            .map(|s| SlowSpan {
                id: s.id,
                name: s.name.clone(),
                duration_ns: s.duration_ns(),
                begin_s: s.begin_ns.saturating_sub(start) as f64 / 1e9,
                incomplete: s.incomplete,
                samples: s.samples,
            })
            .collect();
        let (peak, at) = span_stats::concurrency_peak(&rec.spans);
        let in_spans = rec.samples.iter().filter(|s| s.span != 0).count() as u64;
        // Summed durations count nested time twice: the verdict is the span tree's.
        let key_finding = analysis
            .findings
            .first()
            .filter(|f| f.kind.starts_with("span_"))
            .map(|f| format!("{}: {}", f.subject, f.hint));
        Some(Self {
            total: rec.spans.len() as u64,
            names: by_name.len() as u64,
            incomplete: rec.spans.iter().filter(|s| s.incomplete).count() as u64,
            unmatched_ends: info.unmatched_ends,
            unmatched_exits: info.unmatched_exits,
            duplicate_begins: info.duplicate_begins,
            lost_events: rec.counters().span_events_lost_total(),
            abi_modules: info.abi_modules.clone(),
            span_fns: info.span_fns.clone(),
            by_name,
            slowest,
            concurrency_peak: peak,
            concurrency_peak_at_s: at.saturating_sub(start) as f64 / 1e9,
            samples_in_spans: in_spans,
            samples_outside_spans: rec.samples.len() as u64 - in_spans,
            key_finding,
            exclusive: analysis
                .span_tree
                .as_ref()
                .map(|t| t.by_name.clone())
                .unwrap_or_default(),
        })
    }

    fn to_text(&self, t: &mut String) {
        use std::fmt::Write as _;
        let _ = writeln!(
            t,
            "\nSpans: {} ({} names), {} incomplete, {} unmatched ends, {} lost events; peak concurrency {} at {:.3} s",
            self.total,
            self.names,
            self.incomplete,
            self.unmatched_ends,
            self.lost_events,
            self.concurrency_peak,
            self.concurrency_peak_at_s
        );
        let _ = writeln!(
            t,
            "CPU samples: {} inside spans, {} outside",
            self.samples_in_spans, self.samples_outside_spans
        );
        if let Some(k) = &self.key_finding {
            let _ = writeln!(t, "Key finding: {k}");
        }
        self.exclusive_text(t);
        let _ = writeln!(
            t,
            "\n  {:<28} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
            "span", "count", "total", "mean", "stddev", "p50", "p95", "p99", "max", "samples"
        );
        for n in &self.by_name {
            let _ = writeln!(
                t,
                "  {:<28} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
                n.name,
                n.count,
                fmt_ns(n.total_ns as f64),
                fmt_ns(n.mean_ns),
                fmt_ns(n.stddev_ns),
                fmt_ns(n.p50_ns as f64),
                fmt_ns(n.p95_ns as f64),
                fmt_ns(n.p99_ns as f64),
                fmt_ns(n.max_ns as f64),
                n.samples
            );
        }
        let _ = writeln!(t, "\nSlowest spans");
        for s in &self.slowest {
            let _ = writeln!(
                t,
                "  {:>10}  {} (id {}, at {:.3} s{}; {} samples)",
                fmt_ns(s.duration_ns as f64),
                s.name,
                s.id,
                s.begin_s,
                if s.incomplete { ", incomplete" } else { "" },
                s.samples
            );
        }
    }
}

impl SpanReport {
    /// Each name's own time (children's taken out) and what its threads did meanwhile.
    fn exclusive_text(&self, t: &mut String) {
        use std::fmt::Write as _;
        if self.exclusive.is_empty() {
            return;
        }
        let _ = writeln!(
            t,
            "\nSpan time, children's taken out (top-level: share of the top-level spans' time)"
        );
        let _ = writeln!(
            t,
            "  {:<28} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  critical child",
            "span", "top-level", "own", "on-CPU", "no thread", "blocked", "preempted", "other"
        );
        for x in &self.exclusive {
            let critical = x
                .critical_child
                .as_ref()
                .map(|c| format!("{} {:.1}%", c.name, c.share))
                .unwrap_or_default();
            let _ = writeln!(
                t,
                "  {:<28} {:>8.1}% {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}  {critical}",
                x.name,
                x.top_level_share,
                fmt_ns(x.exclusive_ns as f64),
                fmt_ns(x.on_cpu_ns as f64),
                fmt_ns(x.no_thread_ns as f64),
                fmt_ns(x.blocked_ns as f64),
                fmt_ns(x.preempted_ns as f64),
                fmt_ns(x.on_thread_other_ns as f64),
            );
        }
    }
}

/// The findings, numbered, first the verdict.
fn findings_text(findings: &[crate::findings::Finding], t: &mut String) {
    use std::fmt::Write as _;
    if findings.is_empty() {
        return;
    }
    let _ = writeln!(t, "\nFindings");
    for (i, f) in findings.iter().enumerate() {
        let title = if f.kind.starts_with("span_") {
            format!("Performance bottleneck: {}", f.subject)
        } else {
            format!("{}: {}", f.kind.replace('_', " "), f.subject)
        };
        let _ = writeln!(
            t,
            "  {}. {title}, {:.1}% of {}\n     {}\n     → {}",
            i + 1,
            f.share,
            f.share_of,
            f.evidence,
            f.hint
        );
    }
    let _ = writeln!(t);
}

#[derive(Debug, Serialize)]
pub struct SampleAccounting {
    /// Samples in this profile.
    pub recorded: u64,
    /// Samples of the target the kernel program saw.
    pub seen_by_kernel: u64,
    pub lost: u64,
    pub lost_by_cause: LostByCause,
    /// Not lost, but partial or rerouted.
    pub user_stack_errors: u64,
    pub kernel_stack_errors: u64,
    pub stack_map_full_sent_inline: u64,
    pub stack_map_collisions_sent_inline: u64,
    /// The output was cut to a `--from/--to` window: `recorded` counts the window's samples,
    /// every other count here (the kernel's counters carry no times) the whole recording's.
    pub counters_whole_recording: bool,
}

#[derive(Debug, Serialize)]
pub struct LostByCause {
    pub ring_buffer_full: u64,
    /// Emitted by the kernel but never read (should be 0: the ring buffer is drained at stop).
    pub undelivered: u64,
    pub malformed: u64,
}

#[derive(Debug, Serialize)]
pub struct ThreadShare {
    pub tid: u32,
    pub name: String,
    pub samples: u64,
    pub percent: f64,
}

#[derive(Debug, Serialize)]
pub struct ProcessShare {
    pub pid: u32,
    pub comm: String,
    /// cgroup v2 path; empty when unknown.
    pub cgroup: String,
    /// Container id found in the cgroup path (docker, containerd, CRI-O, podman).
    pub container: Option<String>,
    pub samples: u64,
    /// Of all samples of the profile.
    pub percent: f64,
    /// Its hottest functions by self time; `percent` of the process's own samples.
    pub top_self: Vec<FunctionShare>,
}

#[derive(Debug, Serialize)]
pub struct CgroupShare {
    pub cgroup: String,
    pub container: Option<String>,
    /// Processes of the profile in it.
    pub processes: u64,
    pub samples: u64,
    pub percent: f64,
    /// `percent` of the cgroup's own samples.
    pub top_self: Vec<FunctionShare>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct KernelTasksHidden {
    pub processes: u64,
    pub samples: u64,
}

/// Functions per process and per cgroup in the tables.
const TOP_PER_GROUP: usize = 3;

#[derive(Debug, Serialize)]
pub struct FunctionShare {
    pub name: String,
    pub samples: u64,
    pub percent: f64,
}

#[derive(Debug, Serialize)]
pub struct HotPath {
    pub depth: usize,
    pub name: String,
    pub samples: u64,
    pub percent: f64,
}

/// How complete the user stacks are.
#[derive(Debug, Serialize)]
pub struct StackQuality {
    /// `fp` or `dwarf`.
    pub call_graph: String,
    /// DWARF: bytes of user stack copied per sample at most.
    pub stack_size_bytes: u32,
    /// Samples whose stack reaches a thread entry point (`_start`, `__libc_start_main`,
    /// `start_thread`, `clone3`, …): nothing of the call chain is missing.
    pub complete_percent: f64,
    /// DWARF samples whose unwinding stopped early (rooted at `[unwind: truncated]`).
    pub truncated: u64,
    /// Userspace DWARF unwinding time per sample, loading the modules' unwind tables excluded.
    pub unwind_ns_per_sample: Option<f64>,
    /// Reading and indexing the unwind tables, once per module, in all.
    pub unwind_load_ms: Option<f64>,
    /// Stack bytes above `sp` complete unwinds needed: median, 99th percentile, largest.
    pub unwind_stack_bytes_p50: Option<u32>,
    pub unwind_stack_bytes_p99: Option<u32>,
    pub unwind_stack_bytes_max: Option<u32>,
    /// DWARF: stack bytes copied per sample on average, each thread's copy sized to what
    /// its recent unwinds read (at most `stack_size_bytes`).
    pub stack_copied_bytes_mean: Option<f64>,
    /// DWARF stacks that ran off a copy sized short of `stack_size_bytes` (its thread's
    /// copy then grew).
    pub out_of_sized_copy: u64,
}

/// Outermost frames of a complete stack: process and thread entry points of glibc and musl.
const ENTRY_POINTS: &[&str] = &[
    "_start",
    "__libc_start_main",
    "__libc_start_main_impl",
    "__libc_start_call_main",
    "libc_start_main_stage2",
    "start_thread",
    "clone3",
    "__clone3",
    "clone",
    "__clone",
    "start",
];

fn stack_quality(rec: &Recording) -> StackQuality {
    let m = rec.meta();
    let mut complete_by_stack: HashMap<u32, bool> = HashMap::new();
    let mut complete = 0u64;
    for s in &rec.samples {
        let ok = *complete_by_stack.entry(s.stack).or_insert_with(|| {
            rec.frames(s.stack)
                .iter()
                .rev()
                .find(|f| f.kind != crate::model::FrameKind::Kernel)
                .is_some_and(|root| ENTRY_POINTS.contains(&root.name.to_string().as_str()))
        });
        complete += u64::from(ok);
    }
    let u = m.unwind.as_ref();
    StackQuality {
        call_graph: if m.call_graph.is_empty() {
            "fp".to_string()
        } else {
            m.call_graph.clone()
        },
        stack_size_bytes: m.stack_bytes,
        complete_percent: percent(complete, rec.samples.len() as u64),
        truncated: u.map_or(0, |u| u.truncated),
        unwind_ns_per_sample: u
            .filter(|u| u.samples > 0)
            .map(|u| u.total_ns.saturating_sub(u.load_ns) as f64 / u.samples as f64),
        unwind_load_ms: u.map(|u| u.load_ns as f64 / 1e6),
        unwind_stack_bytes_p50: u.map(|u| u.stack_bytes_p50),
        unwind_stack_bytes_p99: u.map(|u| u.stack_bytes_p99),
        unwind_stack_bytes_max: u.map(|u| u.stack_bytes_max),
        stack_copied_bytes_mean: u
            .filter(|u| u.samples > 0)
            .map(|u| u.copied_bytes as f64 / u.samples as f64),
        out_of_sized_copy: u.map_or(0, |u| u.out_of_sized_copy),
    }
}

#[derive(Debug, Serialize)]
pub struct Overhead {
    pub load_attach_ms: f64,
    pub bpf_runs: u64,
    /// Mean run time of the sampling program, from the kernel's BPF statistics.
    pub bpf_ns_per_run: Option<f64>,
}

fn percent(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        n as f64 * 100.0 / total as f64
    }
}

/// A bar of `BAR_WIDTH` cells for `pct` percent, in eighths of a cell.
pub fn bar(pct: f64) -> String {
    const EIGHTHS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = ((pct.clamp(0.0, 100.0) / 100.0) * (BAR_WIDTH * 8) as f64).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if !eighths.is_multiple_of(8) {
        s.push(EIGHTHS[eighths % 8]);
    }
    format!("{s:<BAR_WIDTH$}")
}

#[derive(Default)]
struct Node {
    samples: u64,
    children: BTreeMap<String, Node>,
}

fn lost_by_cause(c: &Counters) -> LostByCause {
    LostByCause {
        ring_buffer_full: c.lost_ringbuf_full,
        undelivered: c.undelivered(),
        malformed: c.malformed_events,
    }
}

impl Summary {
    pub fn new(rec: &Recording) -> Self {
        let m = rec.meta();
        let c = rec.counters();
        let total = rec.samples.len() as u64;

        // Per distinct stack first: the frames of a stack are rendered once.
        let index = crate::model::ProcessIndex::new(rec);
        let mut per_stack: HashMap<(u32, crate::model::Generation, u32), u64> = HashMap::new();
        let mut per_thread: HashMap<u32, u64> = HashMap::new();
        for s in &rec.samples {
            let generation = index.generation(s.pid, s.timestamp_ns);
            *per_stack.entry((s.pid, generation, s.stack)).or_default() += 1;
            *per_thread.entry(s.tid).or_default() += 1;
        }
        let mut self_counts: HashMap<String, u64> = HashMap::new();
        let mut total_counts: HashMap<String, u64> = HashMap::new();
        let mut self_per_pid: HashMap<u32, HashMap<String, u64>> = HashMap::new();
        let mut root = Node::default();
        for (&(pid, generation, stack), &n) in &per_stack {
            let frames: Vec<String> = rec.frames(stack).iter().map(|f| f.to_string()).collect();
            let leaf = frames
                .first()
                .cloned()
                .unwrap_or_else(|| "[no stack]".to_string());
            *self_per_pid
                .entry(pid)
                .or_default()
                .entry(leaf.clone())
                .or_default() += n;
            *self_counts.entry(leaf).or_default() += n;
            // Recursion must not count a function twice in one sample.
            let unique: HashSet<&String> = frames.iter().collect();
            for f in unique {
                *total_counts.entry(f.clone()).or_default() += n;
            }
            let mut node = root
                .children
                .entry(rec.process_name_in(pid, generation).to_string())
                .or_default();
            node.samples += n;
            for f in frames.iter().rev() {
                node = node.children.entry(f.clone()).or_default();
                node.samples += n;
            }
        }
        let top = |counts: HashMap<String, u64>| {
            let mut v: Vec<FunctionShare> = counts
                .into_iter()
                .map(|(name, samples)| FunctionShare {
                    percent: percent(samples, total),
                    name,
                    samples,
                })
                .collect();
            v.sort_by(|a, b| b.samples.cmp(&a.samples).then_with(|| a.name.cmp(&b.name)));
            v.truncate(TOP);
            v
        };
        let mut hot_paths = Vec::new();
        walk_hot_paths(&root, 0, total, &mut hot_paths);

        let mut threads: Vec<ThreadShare> = per_thread
            .into_iter()
            .map(|(tid, samples)| ThreadShare {
                tid,
                name: rec.thread_name(tid).unwrap_or_default().to_string(),
                samples,
                percent: percent(samples, total),
            })
            .collect();
        threads.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.tid.cmp(&b.tid)));

        let (processes, cgroups) = process_tables(rec, self_per_pid, total);

        let modules_without_symbols = rec
            .modules
            .iter()
            .filter(|md| md.kind == ModuleKind::File as i32 && !md.has_symbols)
            .map(|md| md.path.clone())
            .collect();

        let debug_files = rec
            .modules
            .iter()
            .filter(|md| !md.debug_file.is_empty())
            .map(|md| DebugFileUse {
                module: md.path.clone(),
                debug_file: md.debug_file.clone(),
            })
            .collect();

        let analysis = crate::findings::Analysis::new(rec);
        Self {
            schema: SCHEMA,
            command: rec.command_line(),
            pid: m.pid,
            process_name: rec.process_name(m.pid).to_string(),
            duration_s: rec.duration_ns() as f64 / 1e9,
            frequency_hz: m.frequency_hz,
            cpus: m.cpus,
            stop_reason: m.stop_reason.clone(),
            findings: analysis.findings.clone(),
            samples: SampleAccounting {
                recorded: total,
                seen_by_kernel: c.seen,
                lost: c.lost(),
                lost_by_cause: lost_by_cause(&c),
                user_stack_errors: c.user_stack_errors,
                kernel_stack_errors: c.kernel_stack_errors,
                stack_map_full_sent_inline: c.stack_map_full,
                stack_map_collisions_sent_inline: c.stack_map_collisions,
                counters_whole_recording: m.window_cut,
            },
            threads,
            processes,
            cgroups,
            kernel_tasks_hidden: KernelTasksHidden::default(),
            top_self: top(self_counts),
            top_total: top(total_counts),
            hot_paths,
            overhead: Overhead {
                load_attach_ms: m.load_attach_ns as f64 / 1e6,
                bpf_runs: m.bpf_run_count,
                bpf_ns_per_run: (m.bpf_run_count > 0)
                    .then(|| m.bpf_run_time_ns as f64 / m.bpf_run_count as f64),
            },
            stacks: stack_quality(rec),
            modules_without_symbols,
            debug_files,
            warnings: m.warnings.clone(),
            spans: SpanReport::new(rec, &analysis),
            off_cpu: crate::offcpu::OffCpuReport::new(rec),
            alloc: crate::alloc::AllocReport::new(rec),
            locks: crate::locks::LocksReport::new(rec),
            coverage: CoverageReport::new(rec),
        }
    }

    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut t = String::new();
        let s = &self.samples;
        if self.pid == 0 {
            // A scope of many processes (`--all`, `--cgroup`, several `--pid`): named after it.
            let _ = writeln!(t, "profile of scope {}", self.command);
        } else {
            let _ = writeln!(t, "profile of {} (pid {})", self.command, self.pid);
        }
        let _ = writeln!(
            t,
            "duration {:.2} s at {} Hz on {} CPUs; stopped: {}",
            self.duration_s, self.frequency_hz, self.cpus, self.stop_reason
        );
        findings_text(&self.findings, &mut t);
        let _ = writeln!(
            t,
            "samples: {} recorded{}, {} lost (ring buffer full {}, undelivered {}, malformed {}); {} seen by the kernel",
            s.recorded,
            if s.counters_whole_recording {
                " in the window; in the whole recording (counters have no times)"
            } else {
                ""
            },
            s.lost,
            s.lost_by_cause.ring_buffer_full,
            s.lost_by_cause.undelivered,
            s.lost_by_cause.malformed,
            s.seen_by_kernel
        );
        if s.user_stack_errors > 0 || s.kernel_stack_errors > 0 {
            let _ = writeln!(
                t,
                "stack walks failed: {} user, {} kernel (samples kept without that stack)",
                s.user_stack_errors, s.kernel_stack_errors
            );
        }
        if let Some(c) = &self.coverage {
            let _ = writeln!(t, "{}", c.to_text());
        }
        if let Some(ns) = self.overhead.bpf_ns_per_run {
            let _ = writeln!(
                t,
                "overhead: load+attach {:.1} ms; BPF program {:.0} ns per run over {} runs",
                self.overhead.load_attach_ms, ns, self.overhead.bpf_runs
            );
        }
        let q = &self.stacks;
        let mut line = format!(
            "stacks: {:.1}% complete (reach a thread entry point); call graph {}",
            q.complete_percent, q.call_graph
        );
        if q.call_graph == "dwarf" {
            line += &match q.stack_copied_bytes_mean {
                Some(mean) => format!(
                    " ({mean:.0} B of stack copied per sample, at most {})",
                    crate::model::stack_size_text(q.stack_size_bytes)
                ),
                None => format!(
                    " (at most {} of stack per sample)",
                    crate::model::stack_size_text(q.stack_size_bytes)
                ),
            };
            line += &format!(", {} truncated", q.truncated);
            if q.out_of_sized_copy > 0 {
                line += &format!(" ({} by a copy sized short)", q.out_of_sized_copy);
            }
            if let (Some(ns), Some(load)) = (q.unwind_ns_per_sample, q.unwind_load_ms) {
                line += &format!(
                    ", unwinding {ns:.0} ns per sample (+{load:.1} ms loading unwind tables)"
                );
            }
            if let (Some(p99), Some(max)) = (q.unwind_stack_bytes_p99, q.unwind_stack_bytes_max) {
                line += &format!(", stack used p99 {p99} B, max {max} B");
            }
        }
        let _ = writeln!(t, "{line}");
        for w in &self.warnings {
            let _ = writeln!(t, "warning: {w}");
        }
        if self.threads.len() > 1 {
            let _ = writeln!(t, "\nThreads");
            for th in self.threads.iter().take(TOP) {
                let _ = writeln!(
                    t,
                    "  {:5.1}% {} {} ({})",
                    th.percent,
                    bar(th.percent),
                    th.tid,
                    th.name
                );
            }
        }
        self.process_tables_text(&mut t);
        for (title, list) in [
            ("Top functions by self time", &self.top_self),
            ("Top functions by total time", &self.top_total),
        ] {
            let _ = writeln!(t, "\n{title}");
            for f in list {
                let _ = writeln!(t, "  {:5.1}% {} {}", f.percent, bar(f.percent), f.name);
            }
        }
        let _ = writeln!(
            t,
            "\nHot paths (ASCII flame chart: callers above callees, paths under {:.0}% left out)",
            HOT_PATH_MIN_SHARE * 100.0
        );
        for h in &self.hot_paths {
            let _ = writeln!(
                t,
                "  {:5.1}% {} {}{}",
                h.percent,
                bar(h.percent),
                "  ".repeat(h.depth),
                h.name
            );
        }
        if let Some(spans) = &self.spans {
            spans.to_text(&mut t);
        }
        if let Some(off_cpu) = &self.off_cpu {
            off_cpu.to_text(&mut t);
        }
        if let Some(alloc) = &self.alloc {
            alloc.to_text(&mut t);
        }
        if let Some(locks) = &self.locks {
            locks.to_text(&mut t);
        }
        t
    }
}

/// The hottest functions of one group (a process, a cgroup) by self samples, with their
/// share of the group's samples.
fn top_of_group(counts: HashMap<String, u64>, group_total: u64) -> Vec<FunctionShare> {
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.into_iter()
        .take(TOP_PER_GROUP)
        .map(|(name, samples)| FunctionShare {
            percent: percent(samples, group_total),
            name,
            samples,
        })
        .collect()
}

/// The per-process and per-cgroup tables, from each process's self samples per function.
fn process_tables(
    rec: &Recording,
    self_per_pid: HashMap<u32, HashMap<String, u64>>,
    total: u64,
) -> (Vec<ProcessShare>, Vec<CgroupShare>) {
    let cgroup_of = |pid: u32| {
        rec.processes
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| p.cgroup.as_str())
            .unwrap_or_default()
    };
    let container = |cgroup: &str| crate::model::Process::container_id(cgroup).map(str::to_string);
    // cgroup → (pids, function → self samples)
    let mut per_cgroup: BTreeMap<&str, (u64, HashMap<String, u64>)> = BTreeMap::new();
    let mut processes = Vec::new();
    for (pid, counts) in self_per_pid {
        let cgroup = cgroup_of(pid);
        if !cgroup.is_empty() {
            let (pids, functions) = per_cgroup.entry(cgroup).or_default();
            *pids += 1;
            for (name, n) in &counts {
                *functions.entry(name.clone()).or_default() += n;
            }
        }
        let samples = counts.values().sum();
        processes.push(ProcessShare {
            pid,
            comm: rec.process_name(pid).to_string(),
            cgroup: cgroup.to_string(),
            container: container(cgroup),
            samples,
            percent: percent(samples, total),
            top_self: top_of_group(counts, samples),
        });
    }
    processes.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.pid.cmp(&b.pid)));
    let mut cgroups: Vec<CgroupShare> = per_cgroup
        .into_iter()
        .map(|(cgroup, (pids, counts))| {
            let samples = counts.values().sum();
            CgroupShare {
                cgroup: cgroup.to_string(),
                container: container(cgroup),
                processes: pids,
                samples,
                percent: percent(samples, total),
                top_self: top_of_group(counts, samples),
            }
        })
        .collect();
    cgroups.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.cgroup.cmp(&b.cgroup)));
    (processes, cgroups)
}

impl Summary {
    /// Tables of processes and cgroups, when there is more than one to compare.
    fn process_tables_text(&self, t: &mut String) {
        use std::fmt::Write as _;
        let tops = |top: &[FunctionShare]| {
            top.iter()
                .map(|f| format!("{} {:.0}%", f.name, f.percent))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if self.processes.len() > 1 {
            let _ = writeln!(t, "\nProcesses ({})", self.processes.len());
            let _ = writeln!(
                t,
                "  {:>6} {:>8} {:>8}  {:<16} top functions by self time (share of the process)",
                "share", "samples", "pid", "name"
            );
            for p in self.processes.iter().take(TOP) {
                let _ = writeln!(
                    t,
                    "  {:5.1}% {:>8} {:>8}  {:<16} {}",
                    p.percent,
                    p.samples,
                    p.pid,
                    p.comm,
                    tops(&p.top_self)
                );
            }
            if self.processes.len() > TOP {
                let _ = writeln!(t, "  … {} more in summary.json", self.processes.len() - TOP);
            }
        }
        if self.cgroups.len() > 1 {
            let _ = writeln!(t, "\nCgroups ({})", self.cgroups.len());
            for c in self.cgroups.iter().take(TOP) {
                let name = match &c.container {
                    Some(id) => format!("{} (container {})", c.cgroup, &id[..id.len().min(12)]),
                    None => c.cgroup.clone(),
                };
                let _ = writeln!(
                    t,
                    "  {:5.1}% {:>8} samples, {} process(es)  {}\n          {}",
                    c.percent,
                    c.samples,
                    c.processes,
                    name,
                    tops(&c.top_self)
                );
            }
        }
        let h = &self.kernel_tasks_hidden;
        if h.processes > 0 {
            let _ = writeln!(
                t,
                "\n{} samples of {} kernel thread(s) and idle left out (--kernel-threads shows them)",
                h.samples, h.processes
            );
        }
    }
}

fn walk_hot_paths(node: &Node, depth: usize, total: u64, out: &mut Vec<HotPath>) {
    if depth >= HOT_PATH_MAX_DEPTH {
        return;
    }
    let mut children: Vec<(&String, &Node)> = node.children.iter().collect();
    children.sort_by(|a, b| b.1.samples.cmp(&a.1.samples).then(a.0.cmp(b.0)));
    for (name, child) in children {
        if (child.samples as f64) < HOT_PATH_MIN_SHARE * total as f64 {
            continue;
        }
        out.push(HotPath {
            depth,
            name: name.clone(),
            samples: child.samples,
            percent: percent(child.samples, total),
        });
        walk_hot_paths(child, depth + 1, total, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::sample_recording;

    #[test]
    fn shares_by_self_and_total() {
        let s = Summary::new(&sample_recording());
        assert_eq!(s.samples.recorded, 10);
        assert_eq!(s.samples.lost, 2);
        assert_eq!(s.samples.lost_by_cause.ring_buffer_full, 2);
        let self_of = |n: &str| s.top_self.iter().find(|f| f.name == n).map(|f| f.percent);
        let total_of = |n: &str| s.top_total.iter().find(|f| f.name == n).map(|f| f.percent);
        assert_eq!(self_of("inlined_helper_[i]"), Some(60.0));
        assert_eq!(self_of("hot_b"), Some(30.0));
        assert_eq!(self_of("main"), None);
        assert_eq!(total_of("main"), Some(100.0));
        assert_eq!(total_of("compute"), Some(90.0));
        assert_eq!(total_of("hot_a"), Some(60.0));
        assert_eq!(s.modules_without_symbols, ["/lib/libstripped.so"]);
    }

    #[test]
    fn a_handful_of_expected_samples_is_not_given_a_percentage() {
        let mut rec = sample_recording();
        if let Some(m) = rec.meta.as_mut() {
            m.coverage = Some(crate::model::Coverage {
                cpu_ns: 20_000_000,
                sampled: 3,
                expected: 1,
                threads: 1,
                threads_left_out: 87,
                ..Default::default()
            });
        }
        let text = Summary::new(&rec).to_text();
        assert!(
            text.contains("coverage: too few expected to judge (3 samples, 1 expected from 0.02 s"),
            "{text}"
        );
    }

    #[test]
    fn coverage_and_counters_say_what_a_window_cannot_cut() {
        let mut rec = sample_recording();
        if let Some(m) = rec.meta.as_mut() {
            m.coverage = Some(crate::model::Coverage {
                cpu_ns: 2_020_202_020,
                sampled: 190,
                expected: 200,
                threads: 1,
                threads_left_out: 2,
                process_cpu_ns: 3_030_303_030,
                process_sampled: 290,
                process_expected: 300,
            });
        }
        let s = Summary::new(&rec);
        let text = s.to_text();
        assert!(
            text.contains("coverage: sampled 95.0% of expected (190 samples, 200 expected from 2.02 s on CPU of 1 thread alive throughout; 2 threads born or ended during it left out); process-wide, ended threads included: 96.7% (290 of 300 from 3.03 s, to the clock tick)\n"),
            "{text}"
        );
        assert!(!s.samples.counters_whole_recording);

        let w = rec.window(Some(std::time::Duration::from_millis(10)), None);
        let s = Summary::new(&w);
        let v = serde_json::to_value(&s).expect("json");
        assert_eq!(v["coverage"]["whole_recording"], true);
        assert_eq!(v["coverage"]["percent"], 95.0);
        assert_eq!(v["samples"]["counters_whole_recording"], true);
        let text = s.to_text();
        assert!(text.contains("clock tick), whole recording\n"), "{text}");
        assert!(
            text.contains(
                "recorded in the window; in the whole recording (counters have no times), 2 lost"
            ),
            "{text}"
        );
        // The whole recording through a window that cuts nothing is not labelled.
        let s = Summary::new(&rec.window(None, None));
        assert!(!s.samples.counters_whole_recording);
    }

    #[test]
    fn recursion_counts_once_in_total() {
        let mut rec = sample_recording();
        rec.stacks[0].locations = vec![2, 1, 1, 1, 0];
        let s = Summary::new(&rec);
        let compute = s.top_total.iter().find(|f| f.name == "compute");
        assert_eq!(compute.map(|f| f.samples), Some(9));
    }

    #[test]
    fn hot_paths_nest_callers_above_callees() {
        let s = Summary::new(&sample_recording());
        let names: Vec<(usize, &str)> = s
            .hot_paths
            .iter()
            .map(|h| (h.depth, h.name.as_str()))
            .collect();
        assert_eq!(
            &names[..5],
            [
                (0, "app"),
                (1, "main"),
                (2, "compute"),
                (3, "hot_a"),
                (4, "inlined_helper_[i]")
            ]
        );
        let text = s.to_text();
        assert!(text.contains("Top functions by self time"));
        assert!(text.contains("2 lost (ring buffer full 2"));
    }

    #[test]
    fn per_process_and_per_cgroup_tables() {
        let mut rec = sample_recording();
        let id = "ab".repeat(32);
        rec.processes[0].cgroup = "/user.slice/session-1.scope".into();
        rec.processes.push(crate::model::Process {
            pid: 77,
            comm: "child".into(),
            cgroup: format!("/system.slice/docker-{id}.scope"),
            ..Default::default()
        });
        // child: 2 samples of hot_a, 1 of hot_b, 1 of the kernel stack; app keeps 6.
        for i in [0, 1, 6, 9] {
            rec.samples[i].pid = 77;
        }
        let s = Summary::new(&rec);
        let rows: Vec<(u32, &str, u64)> = s
            .processes
            .iter()
            .map(|p| (p.pid, p.comm.as_str(), p.samples))
            .collect();
        assert_eq!(rows, [(42, "app", 6), (77, "child", 4)]);
        let sum: f64 = s.processes.iter().map(|p| p.percent).sum();
        assert!((sum - 100.0).abs() < 1e-9, "{sum}");
        let child = &s.processes[1];
        let top: Vec<(&str, u64, f64)> = child
            .top_self
            .iter()
            .map(|f| (f.name.as_str(), f.samples, f.percent))
            .collect();
        // Shares of the process's own samples, at most three.
        assert_eq!(
            top,
            [
                ("inlined_helper_[i]", 2, 50.0),
                ("asm_sysvec_apic_timer_interrupt_[k]", 1, 25.0),
                ("hot_b", 1, 25.0)
            ]
        );
        assert_eq!(child.container.as_deref(), Some(id.as_str()));
        assert_eq!(s.processes[0].container, None);
        let cgroups: Vec<(&str, u64, u64)> = s
            .cgroups
            .iter()
            .map(|c| (c.cgroup.as_str(), c.processes, c.samples))
            .collect();
        assert_eq!(
            cgroups,
            [
                ("/user.slice/session-1.scope", 1, 6),
                (&*format!("/system.slice/docker-{id}.scope"), 1, 4)
            ]
        );
        let text = s.to_text();
        assert!(text.contains("Processes (2)"), "{text}");
        assert!(
            text.lines().any(|l| l.contains(" 77 ")
                && l.contains("child")
                && l.contains("inlined_helper_[i] 50%")),
            "{text}"
        );
        assert!(
            text.contains(&format!("(container {})", &id[..12])),
            "{text}"
        );
        let v = serde_json::to_value(&s).expect("serializable");
        assert_eq!(v["processes"][1]["top_self"][0]["percent"], 50.0);
        assert_eq!(v["cgroups"][1]["container"], id.as_str());
        // One process, no cgroup: no table in the text (the JSON still has the row).
        let one = Summary::new(&sample_recording());
        assert!(!one.to_text().contains("Processes ("));
        assert_eq!(one.processes.len(), 1);
        assert!(one.cgroups.is_empty());
    }

    #[test]
    fn kernel_tasks_are_left_out_and_counted_unless_asked() {
        let rec = crate::model::tests::with_kernel_tasks();
        let shown = crate::outputs::Shown::new(&rec, false);
        let s = shown.summary();
        assert_eq!(s.kernel_tasks_hidden.processes, 3);
        assert_eq!(s.kernel_tasks_hidden.samples, 3);
        assert_eq!(s.samples.recorded, 13);
        let mut pids: Vec<u32> = s.processes.iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        assert_eq!(pids, [2, 42, 901, 903]);
        assert!(
            s.to_text()
                .contains("3 samples of 3 kernel thread(s) and idle left out")
        );
        let all = crate::outputs::Shown::new(&rec, true).summary();
        assert_eq!(all.kernel_tasks_hidden.processes, 0);
        assert_eq!(all.samples.recorded, 16);
        assert!(
            all.processes
                .iter()
                .any(|p| p.pid == 0 && p.comm == "swapper")
        );
    }

    #[test]
    fn bars_scale_with_percent() {
        assert_eq!(bar(0.0).trim_end(), "");
        assert_eq!(bar(100.0).chars().filter(|&c| c == '█').count(), BAR_WIDTH);
        assert_eq!(
            bar(50.0).chars().filter(|&c| c == '█').count(),
            BAR_WIDTH / 2
        );
        assert_eq!(bar(50.0).chars().count(), BAR_WIDTH);
    }

    #[test]
    fn json_has_documented_fields() {
        let v = serde_json::to_value(Summary::new(&sample_recording())).expect("serializable");
        for key in [
            "schema",
            "command",
            "duration_s",
            "frequency_hz",
            "samples",
            "top_self",
            "top_total",
            "hot_paths",
            "overhead",
            "warnings",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["samples"]["lost_by_cause"]["ring_buffer_full"], 2);
    }
}
