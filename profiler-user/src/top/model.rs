//! What `profiler top` shows, aggregated over a sliding window: each one-second window of the
//! recording (`collect::window`) is reduced to counts as it arrives, and the view sums the
//! last few of them. Only the counts are kept, never the windows' recordings, so memory does
//! not grow with the rate of samples beyond one second's worth.
use std::collections::{HashMap, HashSet, VecDeque};

use crate::model::{FrameKind, Recording};

/// A function as `top` names it: its name and the file it is in.
pub type FnKey = (String, String);

/// One window's counts.
#[derive(Clone, Debug, Default)]
pub struct WindowStats {
    pub duration_ns: u64,
    pub frequency_hz: u64,
    pub samples: u64,
    pub lost: u64,
    /// Samples whose leaf is the function.
    pub self_counts: HashMap<FnKey, u64>,
    /// Samples with the function anywhere on the stack (recursion counted once).
    pub total_counts: HashMap<FnKey, u64>,
    pub threads: HashMap<u32, ThreadStats>,
    /// Durations of the spans that ended in the window, per name, and their CPU samples.
    pub spans: HashMap<String, SpanStats>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreadStats {
    pub pid: u32,
    pub process: String,
    pub name: String,
    pub samples: u64,
    /// Self samples per function, for the thread's hottest function.
    pub leaves: HashMap<FnKey, u64>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanStats {
    pub durations_ns: Vec<u64>,
    pub samples: u64,
}

impl WindowStats {
    /// Reduces a window's recording; kernel threads and the idle task are left out unless
    /// `kernel_threads`, as in every other output.
    pub fn from_recording(rec: &Recording, kernel_threads: bool) -> Self {
        let shown = crate::outputs::Shown::new(rec, kernel_threads);
        let rec = shown.rec.as_ref();
        let mut w = Self {
            duration_ns: rec.duration_ns(),
            frequency_hz: rec.meta().frequency_hz,
            samples: rec.samples.len() as u64,
            lost: rec.counters().lost(),
            ..Default::default()
        };
        // Frames are named once per distinct stack.
        let mut per_stack: HashMap<u32, (Option<FnKey>, Vec<FnKey>)> = HashMap::new();
        for s in &rec.samples {
            let (leaf, unique) = per_stack
                .entry(s.stack)
                .or_insert_with(|| stack_keys(rec, s.stack));
            let leaf = leaf
                .clone()
                .unwrap_or_else(|| ("[no stack]".to_string(), String::new()));
            for k in unique.iter() {
                *w.total_counts.entry(k.clone()).or_default() += 1;
            }
            *w.self_counts.entry(leaf.clone()).or_default() += 1;
            let t = w.threads.entry(s.tid).or_insert_with(|| ThreadStats {
                pid: s.pid,
                process: rec.process_name(s.pid).to_string(),
                name: rec.thread_name(s.tid).unwrap_or_default().to_string(),
                ..Default::default()
            });
            t.samples += 1;
            *t.leaves.entry(leaf).or_default() += 1;
        }
        // A span still open at the window's end is counted in the window where it ends,
        // once, with its whole duration.
        let mut span_samples: HashMap<(u32, u64), u64> = HashMap::new();
        for s in rec.samples.iter().filter(|s| s.span != 0) {
            *span_samples.entry((s.pid, s.span)).or_default() += 1;
        }
        for s in &rec.spans {
            let e = w.spans.entry(s.name.clone()).or_default();
            // Samples of spans still running count too: they are CPU time of that name now.
            e.samples += span_samples.get(&(s.pid, s.id)).copied().unwrap_or(0);
            if !s.incomplete {
                e.durations_ns.push(s.duration_ns());
            }
        }
        w
    }
}

/// The leaf and the distinct functions of a stack.
fn stack_keys(rec: &Recording, stack: u32) -> (Option<FnKey>, Vec<FnKey>) {
    let frames = rec.frames(stack);
    let key = |f: &crate::model::Frame| -> FnKey {
        let module = if f.kind == FrameKind::Kernel {
            "[kernel]".to_string()
        } else {
            f.location
                .and_then(|l| rec.locations.get(l as usize))
                .and_then(|l| l.module.checked_sub(1))
                .and_then(|m| rec.modules.get(m as usize))
                .map(|m| m.name().to_string())
                .unwrap_or_default()
        };
        let name = if f.kind == FrameKind::Inlined {
            format!("{} (inlined)", f.name)
        } else {
            f.name.to_string()
        };
        (name, module)
    };
    let keys: Vec<FnKey> = frames.iter().map(key).collect();
    let leaf = keys.first().cloned();
    let mut seen = HashSet::new();
    let unique = keys
        .into_iter()
        .filter(|k| seen.insert(k.clone()))
        .collect();
    (leaf, unique)
}

/// The last `keep` windows.
#[derive(Debug)]
pub struct Sliding {
    keep: usize,
    windows: VecDeque<WindowStats>,
    /// Samples lost since the start, shown beside the window's.
    pub lost_since_start: u64,
}

impl Sliding {
    pub fn new(keep: usize) -> Self {
        Self {
            keep: keep.max(1),
            windows: VecDeque::new(),
            lost_since_start: 0,
        }
    }

    pub fn push(&mut self, w: WindowStats) {
        self.lost_since_start = self.lost_since_start.saturating_add(w.lost);
        self.windows.push_back(w);
        while self.windows.len() > self.keep {
            self.windows.pop_front();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// The sums over the windows kept, sorted for display.
    pub fn snapshot(&self) -> Snapshot {
        let mut self_counts: HashMap<&FnKey, u64> = HashMap::new();
        let mut total_counts: HashMap<&FnKey, u64> = HashMap::new();
        let mut threads: HashMap<u32, ThreadStats> = HashMap::new();
        let mut spans: HashMap<&str, SpanStats> = HashMap::new();
        let mut snap = Snapshot::default();
        for w in &self.windows {
            snap.duration_ns = snap.duration_ns.saturating_add(w.duration_ns);
            snap.samples = snap.samples.saturating_add(w.samples);
            snap.lost = snap.lost.saturating_add(w.lost);
            snap.frequency_hz = w.frequency_hz;
            for (k, n) in &w.self_counts {
                *self_counts.entry(k).or_default() += n;
            }
            for (k, n) in &w.total_counts {
                *total_counts.entry(k).or_default() += n;
            }
            for (tid, t) in &w.threads {
                let e = threads.entry(*tid).or_insert_with(|| ThreadStats {
                    pid: t.pid,
                    ..Default::default()
                });
                // The newest names: a thread renamed, a process after its exec.
                e.pid = t.pid;
                e.process.clone_from(&t.process);
                e.name.clone_from(&t.name);
                e.samples = e.samples.saturating_add(t.samples);
                for (k, n) in &t.leaves {
                    *e.leaves.entry(k.clone()).or_default() += n;
                }
            }
            for (name, s) in &w.spans {
                let e = spans.entry(name.as_str()).or_default();
                e.durations_ns.extend_from_slice(&s.durations_ns);
                e.samples = e.samples.saturating_add(s.samples);
            }
        }
        snap.lost_since_start = self.lost_since_start;
        let mut functions: Vec<FunctionRow> = total_counts
            .into_iter()
            .map(|(k, total)| FunctionRow {
                name: k.0.clone(),
                module: k.1.clone(),
                self_samples: self_counts.remove(k).unwrap_or(0),
                total_samples: total,
            })
            .collect();
        // Leaves with no frame at all ("[no stack]") are in no total.
        functions.extend(self_counts.into_iter().map(|(k, n)| FunctionRow {
            name: k.0.clone(),
            module: k.1.clone(),
            self_samples: n,
            total_samples: n,
        }));
        snap.functions = functions;
        let processes: HashSet<u32> = threads.values().map(|t| t.pid).collect();
        snap.processes = processes.len();
        let mut rows: Vec<ThreadRow> = threads
            .into_iter()
            .map(|(tid, t)| ThreadRow {
                tid,
                pid: t.pid,
                process: t.process,
                name: t.name,
                samples: t.samples,
                top_function: t
                    .leaves
                    .iter()
                    .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                    .map(|(k, _)| k.0.clone())
                    .unwrap_or_default(),
            })
            .collect();
        rows.sort_by(|a, b| b.samples.cmp(&a.samples).then(a.tid.cmp(&b.tid)));
        snap.threads = rows;
        let mut span_rows: Vec<SpanRow> = spans
            .into_iter()
            .map(|(name, mut s)| {
                s.durations_ns.sort_unstable();
                let d = &s.durations_ns;
                SpanRow {
                    name: name.to_string(),
                    count: d.len() as u64,
                    total_ns: d.iter().fold(0u64, |t, &x| t.saturating_add(x)),
                    p50_ns: crate::spans::percentile(d, 50.0),
                    p95_ns: crate::spans::percentile(d, 95.0),
                    max_ns: d.last().copied().unwrap_or(0),
                    samples: s.samples,
                }
            })
            .collect();
        span_rows.sort_by(|a, b| {
            b.total_ns
                .cmp(&a.total_ns)
                .then(b.samples.cmp(&a.samples))
                .then_with(|| a.name.cmp(&b.name))
        });
        snap.spans = span_rows;
        snap
    }
}

/// The window's sums, ready to draw.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub duration_ns: u64,
    pub frequency_hz: u64,
    pub samples: u64,
    pub lost: u64,
    pub lost_since_start: u64,
    pub processes: usize,
    /// Unsorted: the view sorts by the key chosen.
    pub functions: Vec<FunctionRow>,
    /// Most samples first.
    pub threads: Vec<ThreadRow>,
    /// Most time in spans first.
    pub spans: Vec<SpanRow>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct FunctionRow {
    pub name: String,
    pub module: String,
    pub self_samples: u64,
    pub total_samples: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ThreadRow {
    pub tid: u32,
    pub pid: u32,
    pub process: String,
    pub name: String,
    pub samples: u64,
    pub top_function: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanRow {
    pub name: String,
    /// Spans of that name that ended in the window.
    pub count: u64,
    pub total_ns: u64,
    pub p50_ns: u64,
    pub p95_ns: u64,
    pub max_ns: u64,
    /// CPU samples taken inside spans of that name.
    pub samples: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Span, tests::sample_recording};

    fn key(name: &str, module: &str) -> FnKey {
        (name.to_string(), module.to_string())
    }

    #[test]
    fn a_window_counts_self_and_total_per_function_and_thread() {
        let w = WindowStats::from_recording(&sample_recording(), true);
        assert_eq!(w.samples, 10);
        assert_eq!(w.lost, 2);
        assert_eq!(w.duration_ns, 100_000_000);
        assert_eq!(w.self_counts[&key("inlined_helper (inlined)", "app")], 6);
        assert_eq!(w.self_counts[&key("hot_b", "app")], 3);
        assert_eq!(
            w.self_counts[&key("asm_sysvec_apic_timer_interrupt", "[kernel]")],
            1
        );
        assert_eq!(w.total_counts[&key("main", "app")], 10);
        assert_eq!(w.total_counts[&key("hot_a", "app")], 6);
        assert_eq!(
            w.total_counts[&key("libstripped.so+0x1234", "libstripped.so")],
            1
        );
        assert_eq!(w.threads[&42].samples, 10);
        assert_eq!(w.threads[&42].process, "app");
    }

    #[test]
    fn the_snapshot_sums_only_the_last_windows() {
        let one = WindowStats::from_recording(&sample_recording(), true);
        let mut s = Sliding::new(2);
        for _ in 0..3 {
            s.push(one.clone());
        }
        let snap = s.snapshot();
        assert_eq!(snap.samples, 20, "two windows of 10");
        assert_eq!(snap.lost, 4);
        assert_eq!(
            snap.lost_since_start, 6,
            "the lost count since the start stays"
        );
        let main = snap.functions.iter().find(|f| f.name == "main").unwrap();
        assert_eq!((main.self_samples, main.total_samples), (0, 20));
        let hot_b = snap.functions.iter().find(|f| f.name == "hot_b").unwrap();
        assert_eq!((hot_b.self_samples, hot_b.total_samples), (6, 6));
        assert_eq!(snap.threads.len(), 1);
        assert_eq!(snap.threads[0].top_function, "inlined_helper (inlined)");
        assert_eq!(snap.processes, 1);
    }

    #[test]
    fn spans_count_once_where_they_end_with_their_percentiles() {
        let mut rec = sample_recording();
        let span = |id, dur_ms: u64, incomplete| Span {
            id,
            name: "request".into(),
            begin_ns: 1_000_000_000,
            end_ns: 1_000_000_000 + dur_ms * 1_000_000,
            incomplete,
            pid: 42,
            ..Default::default()
        };
        rec.spans = (1..=20).map(|i| span(i, i, false)).collect();
        rec.spans.push(span(99, 500, true));
        rec.samples[0].span = 99;
        rec.samples[1].span = 3;
        let mut s = Sliding::new(10);
        s.push(WindowStats::from_recording(&rec, true));
        let snap = s.snapshot();
        assert_eq!(snap.spans.len(), 1);
        let r = &snap.spans[0];
        assert_eq!(r.count, 20, "the open span waits for its end");
        assert_eq!(r.p95_ns, 19_000_000);
        assert_eq!(r.max_ns, 20_000_000);
        assert_eq!(
            r.samples, 2,
            "samples of the open span count as CPU time now"
        );
    }
}
