//! `profiler diff`: what changed between two recordings of the same program, and which of
//! those changes are larger than sampling noise explains.
//!
//! Every test of one comparison forms one family: each function's self and total share
//! (two-proportion z-tests on sample counts), each span name seen on both sides (Mann-Whitney
//! U on the durations of its complete spans) and the CPU time (a rate test on the sample
//! counts), each asking for a change beyond a small margin ([`SHARE_MARGIN_PP`], …). Holm's correction over that family keeps the chance that *anything* in a
//! comparison of two recordings of unchanged code is called significant at or below
//! [`ALPHA`], as long as samples behave as independent draws.
//!
//! The outputs (`outputs::diff_json`, `diff_text`, `diff_flamegraph`) only present a [`Diff`].
pub mod stats;

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::{model::Recording, offcpu, spans::percentile};

pub const SCHEMA: &str = "profiler-diff/1";
/// Family-wise false-positive rate of one comparison.
pub const ALPHA: f64 = 0.01;
/// Changes no smaller than these are tested for (see `stats`): a function's share by half a
/// percentage point, a span's durations and the CPU time by 2%.
pub const SHARE_MARGIN_PP: f64 = 0.5;
pub const DURATION_MARGIN_PCT: f64 = 2.0;
/// ... and by no less than this, however short the span: a span that waits for a wakeup takes
/// the machine's wakeup latency with it, which moves between runs of the same build. 20 runs
/// of a 1 ms `nanosleep` under SCHED_FIFO on the test VM had means from 1,044 to 1,106 us and
/// p95s from 1,071 to 1,166 us: against 2% alone, two recordings of unchanged code differed
/// "significantly" (one fresh clone's run of the diff test in several).
pub const DURATION_MARGIN_FLOOR_US: f64 = 100.0;
pub const CPU_MARGIN_PCT: f64 = 2.0;
/// Changed off-CPU stacks listed.
const TOP_STACKS: usize = 10;
/// Frame name of a sample without any stack, as the summary names it.
const NO_STACK: &str = "[no stack]";

#[derive(Debug, Serialize)]
pub struct Diff {
    pub schema: &'static str,
    /// A change is significant when its Holm-adjusted p-value is below this.
    pub alpha: f64,
    pub correction: &'static str,
    /// The smallest changes tested for: shares in percentage points, durations and CPU
    /// time in percent.
    pub margins: Margins,
    /// Tests in the family the correction covers.
    pub tests: usize,
    pub base: Side,
    pub new: Side,
    pub cpu: CpuDiff,
    /// Significant changes first, then by the size of the change of self CPU time, then of
    /// total CPU time.
    pub functions: Vec<FunctionDiff>,
    /// Significant changes first, then by the size of the change of the mean.
    pub spans: Vec<SpanDiff>,
    /// Present when both recordings have off-CPU time (`--off-cpu`).
    pub off_cpu: Option<OffCpuDiff>,
    /// Functions and span names seen only in NEW.
    pub appeared: Names,
    /// Functions and span names seen only in BASE.
    pub vanished: Names,
    pub warnings: Vec<String>,
}

/// One of the two recordings.
#[derive(Debug, Serialize)]
pub struct Side {
    pub path: String,
    pub command: String,
    pub duration_s: f64,
    pub frequency_hz: u64,
    pub samples: u64,
    /// Complete spans (the ones compared).
    pub spans: u64,
}

#[derive(Debug, Serialize)]
pub struct Margins {
    pub share_pp: f64,
    pub duration_pct: f64,
    /// The least change of a span's durations tested for, however short the span.
    pub duration_floor_us: f64,
    pub cpu_pct: f64,
}

#[derive(Debug, Serialize)]
pub struct CpuDiff {
    pub base_samples: u64,
    pub new_samples: u64,
    /// Samples × the sampling period.
    pub base_cpu_s: f64,
    pub new_cpu_s: f64,
    /// Null when BASE has no samples.
    pub delta_pct: Option<f64>,
    pub p_value: f64,
    pub significant: bool,
}

#[derive(Debug, Serialize, Clone)]
pub struct FunctionDiff {
    pub name: String,
    pub base_self_samples: u64,
    pub new_self_samples: u64,
    pub base_total_samples: u64,
    pub new_total_samples: u64,
    pub base_self_pct: f64,
    pub new_self_pct: f64,
    /// Percentage points, NEW − BASE.
    pub delta_self_pp: f64,
    pub base_total_pct: f64,
    pub new_total_pct: f64,
    pub delta_total_pp: f64,
    /// Change of the CPU time the samples stand for (samples ÷ sampling rate), NEW − BASE.
    pub delta_self_ms: f64,
    pub delta_total_ms: f64,
    /// Holm-adjusted p-values of the two shares' tests.
    pub self_p_value: f64,
    pub total_p_value: f64,
    /// The smaller of the two.
    pub p_value: f64,
    pub self_significant: bool,
    pub total_significant: bool,
    /// Either share changed significantly.
    pub significant: bool,
}

#[derive(Debug, Serialize, Clone, Default)]
pub struct SpanSide {
    /// Complete spans: those the recording saw begin and end.
    pub count: u64,
    pub mean_ns: f64,
    pub p50_ns: u64,
    pub p95_ns: u64,
    pub p99_ns: u64,
    /// Per span, CPU samples inside it × the sampling period.
    pub mean_on_cpu_ns: f64,
    /// Per span, time off CPU inside it; null without `--off-cpu`.
    pub mean_off_cpu_ns: Option<f64>,
}

#[derive(Debug, Serialize, Clone)]
pub struct SpanDiff {
    pub name: String,
    pub base: SpanSide,
    pub new: SpanSide,
    /// Relative changes, NEW against BASE, in percent; null when BASE's value is 0.
    pub delta_mean_pct: Option<f64>,
    pub delta_p50_pct: Option<f64>,
    pub delta_p95_pct: Option<f64>,
    pub delta_p99_pct: Option<f64>,
    pub delta_on_cpu_pct: Option<f64>,
    pub delta_off_cpu_pct: Option<f64>,
    /// Holm-adjusted p-value of the Mann-Whitney test on the durations.
    pub p_value: f64,
    pub significant: bool,
}

#[derive(Debug, Serialize)]
pub struct OffCpuDiff {
    pub base_total_ns: u64,
    pub new_total_ns: u64,
    /// Stacks whose off-CPU time changed most (absolute nanoseconds), at most 10.
    pub stacks: Vec<StackDiff>,
}

#[derive(Debug, Serialize)]
pub struct StackDiff {
    /// As `summary.json`'s `off_cpu.top_stacks` names it.
    pub stack: String,
    pub preempted: bool,
    pub base_ns: u64,
    pub new_ns: u64,
    pub delta_ns: i128,
}

#[derive(Debug, Serialize, Default)]
pub struct Names {
    pub functions: Vec<String>,
    pub spans: Vec<String>,
}

/// Self and total samples per function name (frames as every output names them).
fn function_samples(rec: &Recording) -> HashMap<String, (u64, u64)> {
    let mut per_stack: HashMap<u32, u64> = HashMap::new();
    for s in &rec.samples {
        *per_stack.entry(s.stack).or_default() += 1;
    }
    let mut out: HashMap<String, (u64, u64)> = HashMap::new();
    for (stack, n) in per_stack {
        let frames: Vec<String> = rec.frames(stack).iter().map(|f| f.to_string()).collect();
        let leaf = frames.first().map_or(NO_STACK, String::as_str);
        let e = out.entry(leaf.to_string()).or_default();
        e.0 = e.0.saturating_add(n);
        // Recursion must not count a function twice in one sample.
        let unique: HashSet<&str> = frames.iter().map(String::as_str).collect();
        for f in unique {
            let e = out.entry(f.to_string()).or_default();
            e.1 = e.1.saturating_add(n);
        }
        if frames.is_empty() {
            let e = out.entry(NO_STACK.to_string()).or_default();
            e.1 = e.1.saturating_add(n);
        }
    }
    out
}

/// Complete spans' durations, samples and off-CPU time, per name.
#[derive(Default)]
struct SpanAcc {
    durations: Vec<u64>,
    samples: u64,
    off_cpu_ns: u64,
}

fn span_groups(rec: &Recording) -> HashMap<String, SpanAcc> {
    let mut by_id: HashMap<(u32, u64), &str> = HashMap::new();
    let mut out: HashMap<String, SpanAcc> = HashMap::new();
    for s in rec.spans.iter().filter(|s| !s.incomplete) {
        by_id.insert((s.pid, s.id), &s.name);
        let a = out.entry(s.name.clone()).or_default();
        a.durations.push(s.duration_ns());
        a.samples = a.samples.saturating_add(s.samples);
    }
    for o in rec.off_cpu.iter().filter(|o| o.span != 0) {
        if let Some(name) = by_id.get(&(o.pid, o.span))
            && let Some(a) = out.get_mut(*name)
        {
            a.off_cpu_ns = a.off_cpu_ns.saturating_add(o.total_ns);
        }
    }
    for a in out.values_mut() {
        a.durations.sort_unstable();
    }
    out
}

fn span_side(a: &SpanAcc, period_ns: u64, off_cpu: bool) -> SpanSide {
    let d = &a.durations;
    let count = d.len() as u64;
    let per_span = |total: f64| {
        if count == 0 {
            0.0
        } else {
            total / count as f64
        }
    };
    SpanSide {
        count,
        mean_ns: per_span(d.iter().map(|&x| x as f64).sum()),
        p50_ns: percentile(d, 50.0),
        p95_ns: percentile(d, 95.0),
        p99_ns: percentile(d, 99.0),
        mean_on_cpu_ns: per_span(a.samples as f64 * period_ns as f64),
        mean_off_cpu_ns: off_cpu.then(|| per_span(a.off_cpu_ns as f64)),
    }
}

fn pct(n: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * n as f64 / total as f64
    }
}

/// NEW against BASE in percent; None when BASE is 0 (no relative change exists).
fn rel(base: f64, new: f64) -> Option<f64> {
    (base != 0.0 && base.is_finite() && new.is_finite()).then(|| 100.0 * (new - base) / base)
}

fn side(rec: &Recording, path: &str, spans: u64) -> Side {
    Side {
        path: path.to_string(),
        command: rec.command_line(),
        duration_s: rec.duration_ns() as f64 / 1e9,
        frequency_hz: rec.meta().frequency_hz,
        samples: rec.samples.len() as u64,
        spans,
    }
}

/// Compares two recordings as the outputs show them (kernel threads already left out).
pub fn compare(base: &Recording, base_path: &str, new: &Recording, new_path: &str) -> Diff {
    let mut warnings = Vec::new();
    let (n1, n2) = (base.samples.len() as u64, new.samples.len() as u64);
    let (f1, f2) = (base.meta().frequency_hz, new.meta().frequency_hz);
    if f1 != f2 {
        warnings.push(format!(
            "the recordings were sampled at different rates ({f1} Hz and {f2} Hz): shares compare, CPU time is scaled by each rate"
        ));
    }
    for (what, rec) in [("BASE", base), ("NEW", new)] {
        let lost = rec.counters().lost();
        if lost > 0 {
            warnings.push(format!(
                "{what} lost {lost} samples: its shares may be skewed"
            ));
        }
    }

    // Functions: every name seen on either side, two tests each.
    let fb = function_samples(base);
    let fnew = function_samples(new);
    let mut names: Vec<&String> = fb.keys().chain(fnew.keys()).collect();
    names.sort();
    names.dedup();
    let mut raw_p: Vec<f64> = Vec::with_capacity(names.len() * 2 + 1);
    let ms = |samples: u64, hz: u64| samples as f64 * 1e3 / hz.max(1) as f64;
    let mut functions: Vec<FunctionDiff> = names
        .iter()
        .map(|name| {
            let (bs, bt) = fb.get(*name).copied().unwrap_or_default();
            let (ns, nt) = fnew.get(*name).copied().unwrap_or_default();
            let m = SHARE_MARGIN_PP / 100.0;
            raw_p.push(stats::two_proportions(bs, n1, ns, n2, m));
            raw_p.push(stats::two_proportions(bt, n1, nt, n2, m));
            FunctionDiff {
                name: (*name).clone(),
                base_self_samples: bs,
                new_self_samples: ns,
                base_total_samples: bt,
                new_total_samples: nt,
                base_self_pct: pct(bs, n1),
                new_self_pct: pct(ns, n2),
                delta_self_pp: pct(ns, n2) - pct(bs, n1),
                base_total_pct: pct(bt, n1),
                new_total_pct: pct(nt, n2),
                delta_total_pp: pct(nt, n2) - pct(bt, n1),
                delta_self_ms: ms(ns, f2) - ms(bs, f1),
                delta_total_ms: ms(nt, f2) - ms(bt, f1),
                self_p_value: 1.0,
                total_p_value: 1.0,
                p_value: 1.0,
                self_significant: false,
                total_significant: false,
                significant: false,
            }
        })
        .collect();

    // Spans: names with complete spans on both sides are tested.
    let sb = span_groups(base);
    let snew = span_groups(new);
    let off1 = base.off_cpu_info.is_some();
    let off2 = new.off_cpu_info.is_some();
    let mut span_names: Vec<&String> = sb.keys().filter(|n| snew.contains_key(*n)).collect();
    span_names.sort();
    let span_first = raw_p.len();
    let mut spans: Vec<SpanDiff> = span_names
        .iter()
        .filter_map(|name| {
            let (a, b) = (sb.get(*name)?, snew.get(*name)?);
            let m = DURATION_MARGIN_PCT / 100.0;
            let floor = DURATION_MARGIN_FLOOR_US * 1e3;
            raw_p.push(stats::durations_changed(
                &a.durations,
                &b.durations,
                m,
                floor,
            ));
            let base = span_side(a, base.sample_period_ns(), off1 && off2);
            let new = span_side(b, new.sample_period_ns(), off1 && off2);
            Some(SpanDiff {
                name: (*name).clone(),
                delta_mean_pct: rel(base.mean_ns, new.mean_ns),
                delta_p50_pct: rel(base.p50_ns as f64, new.p50_ns as f64),
                delta_p95_pct: rel(base.p95_ns as f64, new.p95_ns as f64),
                delta_p99_pct: rel(base.p99_ns as f64, new.p99_ns as f64),
                delta_on_cpu_pct: rel(base.mean_on_cpu_ns, new.mean_on_cpu_ns),
                delta_off_cpu_pct: base
                    .mean_off_cpu_ns
                    .zip(new.mean_off_cpu_ns)
                    .and_then(|(b, n)| rel(b, n)),
                base,
                new,
                p_value: 1.0,
                significant: false,
            })
        })
        .collect();

    // CPU time.
    let cpu_index = raw_p.len();
    let cpu_s = |n: u64, hz: u64| n as f64 / hz.max(1) as f64;
    let (c1, c2) = (cpu_s(n1, f1), cpu_s(n2, f2));
    let m = CPU_MARGIN_PCT / 100.0;
    raw_p.push(stats::poisson_rates(
        n1,
        f1.max(1) as f64,
        n2,
        f2.max(1) as f64,
        m,
    ));

    let adjusted = stats::holm(&raw_p);
    let adj = |i: usize| adjusted.get(i).copied().unwrap_or(1.0);
    for (i, f) in functions.iter_mut().enumerate() {
        f.self_p_value = adj(2 * i);
        f.total_p_value = adj(2 * i + 1);
        f.p_value = f.self_p_value.min(f.total_p_value);
        f.self_significant = f.self_p_value < ALPHA;
        f.total_significant = f.total_p_value < ALPHA;
        f.significant = f.self_significant || f.total_significant;
    }
    for (i, s) in spans.iter_mut().enumerate() {
        s.p_value = adj(span_first + i);
        s.significant = s.p_value < ALPHA;
    }
    let cpu_p = adj(cpu_index);
    let cpu = CpuDiff {
        base_samples: n1,
        new_samples: n2,
        base_cpu_s: c1,
        new_cpu_s: c2,
        delta_pct: rel(c1, c2),
        p_value: cpu_p,
        significant: cpu_p < ALPHA,
    };

    // By CPU time, not share: when one of two equal functions doubles its work, the shares
    // of both move by the same 17 points, but only its time grew. Self before total: its
    // callers' totals grow by as much as its own time, and it is the one that changed.
    functions.sort_by(|a, b| {
        b.significant
            .cmp(&a.significant)
            .then_with(|| b.delta_self_ms.abs().total_cmp(&a.delta_self_ms.abs()))
            .then_with(|| b.delta_total_ms.abs().total_cmp(&a.delta_total_ms.abs()))
            .then_with(|| a.name.cmp(&b.name))
    });
    let span_size = |s: &SpanDiff| {
        s.delta_mean_pct
            .unwrap_or(0.0)
            .abs()
            .max(s.delta_p95_pct.unwrap_or(0.0).abs())
    };
    spans.sort_by(|a, b| {
        b.significant
            .cmp(&a.significant)
            .then_with(|| span_size(b).total_cmp(&span_size(a)))
            .then_with(|| a.name.cmp(&b.name))
    });

    let only = |a: &HashMap<String, (u64, u64)>, b: &HashMap<String, (u64, u64)>| {
        let mut v: Vec<String> = a.keys().filter(|k| !b.contains_key(*k)).cloned().collect();
        // Most samples first: the ones that matter lead.
        v.sort_by(|x, y| a[y].1.cmp(&a[x].1).then_with(|| x.cmp(y)));
        v
    };
    let span_only = |a: &HashMap<String, SpanAcc>, b: &HashMap<String, SpanAcc>| {
        let mut v: Vec<String> = a.keys().filter(|k| !b.contains_key(*k)).cloned().collect();
        v.sort();
        v
    };
    let appeared = Names {
        functions: only(&fnew, &fb),
        spans: span_only(&snew, &sb),
    };
    let vanished = Names {
        functions: only(&fb, &fnew),
        spans: span_only(&sb, &snew),
    };

    let off_cpu = (off1 && off2).then(|| off_cpu_diff(base, new));
    if off1 != off2 {
        warnings.push(
            "only one recording has off-CPU time (--off-cpu): off-CPU changes are not compared"
                .to_string(),
        );
    }

    let count = |m: &HashMap<String, SpanAcc>| m.values().map(|a| a.durations.len() as u64).sum();
    Diff {
        schema: SCHEMA,
        alpha: ALPHA,
        correction: "holm",
        margins: Margins {
            share_pp: SHARE_MARGIN_PP,
            duration_pct: DURATION_MARGIN_PCT,
            duration_floor_us: DURATION_MARGIN_FLOOR_US,
            cpu_pct: CPU_MARGIN_PCT,
        },
        tests: raw_p.len(),
        base: side(base, base_path, count(&sb)),
        new: side(new, new_path, count(&snew)),
        cpu,
        functions,
        spans,
        off_cpu,
        appeared,
        vanished,
        warnings,
    }
}

fn off_cpu_diff(base: &Recording, new: &Recording) -> OffCpuDiff {
    let mut by: HashMap<(String, bool), (u64, u64)> = HashMap::new();
    let (mut t1, mut t2) = (0u64, 0u64);
    for s in offcpu::blocking_stacks(base) {
        t1 = t1.saturating_add(s.ns);
        by.entry((s.stack, s.preempted)).or_default().0 = s.ns;
    }
    for s in offcpu::blocking_stacks(new) {
        t2 = t2.saturating_add(s.ns);
        by.entry((s.stack, s.preempted)).or_default().1 = s.ns;
    }
    let mut stacks: Vec<StackDiff> = by
        .into_iter()
        .map(|((stack, preempted), (b, n))| StackDiff {
            stack,
            preempted,
            base_ns: b,
            new_ns: n,
            delta_ns: i128::from(n) - i128::from(b),
        })
        .filter(|s| s.delta_ns != 0)
        .collect();
    stacks.sort_by(|a, b| {
        b.delta_ns
            .abs()
            .cmp(&a.delta_ns.abs())
            .then_with(|| a.stack.cmp(&b.stack))
    });
    stacks.truncate(TOP_STACKS);
    OffCpuDiff {
        base_total_ns: t1,
        new_total_ns: t2,
        stacks,
    }
}

impl Diff {
    pub fn function(&self, name: &str) -> Option<&FunctionDiff> {
        self.functions.iter().find(|f| f.name == name)
    }

    pub fn span(&self, name: &str) -> Option<&SpanDiff> {
        self.spans.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{OffCpu, OffCpuInfo, Sample, Span, tests::sample_recording};

    /// hot_a doubled (significant), hot_b's share fell, `flush` spans 20% slower
    /// (significant), `encode` unchanged, CPU +49%.
    pub(crate) fn regression() -> Diff {
        let mut base_spans = durations("flush", 200, 1_000_000);
        base_spans.extend(durations("encode", 200, 1_000_000));
        let mut new_spans = durations("flush", 200, 1_200_000);
        new_spans.extend(durations("encode", 200, 1_000_000));
        let base = recording([500, 500, 20], &base_spans);
        let new = recording([1000, 500, 20], &new_spans);
        compare(&base, "a", &new, "b")
    }

    /// The sample recording with `counts` samples of its three stacks (hot_a, hot_b, a
    /// kernel frame over a stripped library) and complete spans of the given durations.
    fn recording(counts: [u64; 3], spans: &[(&str, u64)]) -> Recording {
        let mut r = sample_recording();
        // hot_a without the function inlined into it: hot_a is the leaf of its stack.
        r.locations[2].lines.remove(0);
        r.samples.clear();
        for (stack, &n) in counts.iter().enumerate() {
            for i in 0..n {
                r.samples.push(Sample {
                    timestamp_ns: 1_000_000_000 + i,
                    pid: 42,
                    tid: 42,
                    cpu: 0,
                    stack: stack as u32,
                    span: 0,
                });
            }
        }
        r.counters = None;
        r.spans = spans
            .iter()
            .enumerate()
            .map(|(i, &(name, ns))| Span {
                id: i as u64 + 1,
                name: name.into(),
                begin_ns: 1_000_000_000,
                end_ns: 1_000_000_000 + ns,
                pid: 42,
                ..Default::default()
            })
            .collect();
        r
    }

    /// `n` durations spread evenly around `mean_ns` (±10%).
    fn durations(name: &'static str, n: u64, mean_ns: u64) -> Vec<(&'static str, u64)> {
        (0..n)
            .map(|i| (name, mean_ns - mean_ns / 10 + mean_ns / 5 * i / n))
            .collect()
    }

    #[test]
    fn a_doubled_function_and_a_slower_span_lead_as_significant() {
        let d = regression();

        let first = &d.functions[0];
        assert_eq!(first.name, "hot_a");
        // 500 more samples at 99 Hz.
        assert!((first.delta_self_ms - 500_000.0 / 99.0).abs() < 1e-6);
        // hot_b's share fell by nearly as much, but its time did not change.
        let hot_b = d.function("hot_b").expect("hot_b");
        assert!(hot_b.self_significant && hot_b.delta_self_pp < -15.0);
        assert_eq!(hot_b.delta_self_ms, 0.0);
        assert!(first.self_significant && first.significant);
        // 500/1020 → 1000/1520.
        assert!((first.base_self_pct - 49.019_607_843).abs() < 1e-6);
        assert!((first.delta_self_pp - (100_000.0 / 1520.0 - 50_000.0 / 1020.0)).abs() < 1e-9);
        assert!(first.p_value < 1e-10, "{}", first.p_value);
        // `main` is in every sample on both sides: its total share cannot change.
        let main = d.function("main").expect("main compared");
        assert_eq!((main.base_total_pct, main.new_total_pct), (100.0, 100.0));
        assert!(!main.significant);

        assert_eq!(d.spans[0].name, "flush");
        assert!(d.spans[0].significant);
        let p95 = d.spans[0].delta_p95_pct.expect("p95 change");
        assert!((p95 - 20.0).abs() < 1.0, "{p95}");
        let encode = d.span("encode").expect("encode compared");
        assert!(!encode.significant, "{encode:?}");
        assert_eq!(encode.delta_mean_pct, Some(0.0));

        assert!(d.cpu.significant);
        assert!((d.cpu.delta_pct.expect("cpu change") - 49.019_607_843).abs() < 1e-6);
        assert_eq!(d.schema, "profiler-diff/1");
        assert_eq!(d.tests, d.functions.len() * 2 + d.spans.len() + 1);
    }

    #[test]
    fn identical_recordings_change_nothing() {
        let spans = durations("flush", 100, 1_000_000);
        let a = recording([600, 300, 100], &spans);
        let d = compare(&a, "a", &a, "a");
        assert!(
            d.functions
                .iter()
                .all(|f| !f.significant && f.p_value > 0.5)
        );
        assert!(d.spans.iter().all(|s| !s.significant));
        assert!(!d.cpu.significant);
        assert!(d.appeared.functions.is_empty() && d.vanished.functions.is_empty());
    }

    #[test]
    fn appeared_and_vanished_functions_and_spans() {
        let base = recording([100, 100, 0], &[("old", 5), ("kept", 5)]);
        let new = recording([100, 0, 100], &[("new", 5), ("kept", 5)]);
        let d = compare(&base, "a", &new, "b");
        assert_eq!(d.vanished.functions, ["hot_b"]);
        assert!(
            d.appeared
                .functions
                .contains(&"asm_sysvec_apic_timer_interrupt_[k]".to_string())
        );
        assert_eq!(d.appeared.spans, ["new"]);
        assert_eq!(d.vanished.spans, ["old"]);
        // Only names on both sides are compared as spans.
        assert_eq!(d.spans.len(), 1);
        let hot_b = d
            .function("hot_b")
            .expect("vanished functions are still compared");
        assert_eq!((hot_b.new_self_samples, hot_b.new_self_pct), (0, 0.0));
        assert!(hot_b.self_significant);
    }

    #[test]
    fn incomplete_spans_are_left_out() {
        let mut base = recording([10, 10, 0], &[("s", 1000), ("s", 1000)]);
        base.spans[1].incomplete = true;
        base.spans[1].end_ns = base.spans[1].begin_ns + 99_000_000;
        let new = recording([10, 10, 0], &[("s", 1000)]);
        let d = compare(&base, "a", &new, "b");
        assert_eq!(d.spans[0].base.count, 1);
        assert_eq!(d.spans[0].delta_p99_pct, Some(0.0));
    }

    #[test]
    fn off_cpu_stacks_that_changed() {
        let mut base = recording([10, 10, 0], &[]);
        let mut new = recording([10, 10, 0], &[]);
        let off = |stack, total_ns| OffCpu {
            pid: 42,
            tid: 42,
            stack,
            total_ns,
            count: 1,
            ..Default::default()
        };
        base.off_cpu = vec![off(0, 5_000_000), off(1, 1_000_000)];
        new.off_cpu = vec![off(0, 5_000_000), off(1, 4_000_000)];
        base.off_cpu_info = Some(OffCpuInfo::default());
        new.off_cpu_info = Some(OffCpuInfo::default());
        let d = compare(&base, "a", &new, "b");
        let off = d.off_cpu.expect("both have off-CPU time");
        assert_eq!(
            (off.base_total_ns, off.new_total_ns),
            (6_000_000, 9_000_000)
        );
        assert_eq!(off.stacks.len(), 1, "unchanged stacks are not listed");
        assert_eq!(off.stacks[0].delta_ns, 3_000_000);
        assert!(
            off.stacks[0].stack.starts_with("hot_b"),
            "{}",
            off.stacks[0].stack
        );
        // One side without --off-cpu: nothing compared, and said so.
        base.off_cpu_info = None;
        let d = compare(&base, "a", &new, "b");
        assert!(d.off_cpu.is_none());
        assert!(d.warnings.iter().any(|w| w.contains("--off-cpu")));
    }

    #[test]
    fn empty_recordings_do_not_divide_by_zero() {
        let empty = recording([0, 0, 0], &[]);
        let d = compare(&empty, "a", &empty, "b");
        assert!(d.functions.is_empty());
        assert_eq!(d.cpu.delta_pct, None);
        assert!(!d.cpu.significant);
        let some = recording([10, 0, 0], &[]);
        let d = compare(&empty, "a", &some, "b");
        assert_eq!(d.cpu.delta_pct, None);
        assert!(d.functions.iter().all(|f| f.base_self_pct == 0.0));
    }
}
