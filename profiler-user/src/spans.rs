//! Spans: matching probe events into spans (begin/end by id, enter/exit per thread), and the
//! statistics the span report, `--fail-if` and the span flame graph are built from.
use std::collections::{HashMap, HashSet};

use profiler_common::{EventKind, SpanEvent};
use serde::Serialize;

use crate::{
    collect::spans::SpanMeta,
    model::{Recording, Sample, Span, SpanInfo, SpanRun},
};

/// Spans made from one recording's events.
#[derive(Debug, Default)]
pub struct Matched {
    pub spans: Vec<Span>,
    pub runs: Vec<SpanRun>,
    pub info: SpanInfo,
}

/// Matches `events` (any order) into spans; spans still open at `end_ns` are closed there and
/// marked incomplete. `span_fns` names the `--span-fn` probes by index.
pub fn match_events(
    events: &[SpanEvent],
    meta: &HashMap<(u32, u64), SpanMeta>,
    span_fns: &[String],
    end_ns: u64,
) -> Matched {
    let mut order: Vec<&SpanEvent> = events.iter().collect();
    // Stable: events of one thread keep their order when timestamps tie.
    order.sort_by_key(|e| e.timestamp_ns);

    let mut m = Matched::default();
    let mut open: HashMap<(u32, u64), usize> = HashMap::new();
    // Per thread: (span id, pid, begin).
    let mut running: HashMap<u32, Vec<(u64, u32, u64)>> = HashMap::new();
    let mut tids_seen: HashMap<usize, HashSet<u32>> = HashMap::new();

    for e in order {
        let key = (e.pid, e.span_id);
        let kind = EventKind::from_u32(e.kind);
        if matches!(kind, Some(EventKind::SpanBegin | EventKind::SpanFnCall)) {
            if open.contains_key(&key) {
                m.info.duplicate_begins += 1;
                continue;
            }
            let (name, target, file, line) = if kind == Some(EventKind::SpanFnCall) {
                let name = span_fns
                    .get(e.meta as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("[span-fn {}]", e.meta));
                (name, "span-fn".to_string(), String::new(), 0)
            } else {
                match meta.get(&(e.pid, e.meta)) {
                    Some(md) => (md.name.clone(), md.target.clone(), md.file.clone(), md.line),
                    None => (
                        format!("[span meta {:#x}]", e.meta),
                        String::new(),
                        String::new(),
                        0,
                    ),
                }
            };
            open.insert(key, m.spans.len());
            m.spans.push(Span {
                id: e.span_id,
                parent: e.parent_id,
                name,
                target,
                file,
                line,
                begin_ns: e.timestamp_ns,
                end_ns: e.timestamp_ns,
                incomplete: false,
                tids: Vec::new(),
                samples: 0,
                depth: 0,
                pid: e.pid,
            });
        }
        if matches!(kind, Some(EventKind::SpanEnter | EventKind::SpanFnCall)) {
            running
                .entry(e.tid)
                .or_default()
                .push((e.span_id, e.pid, e.timestamp_ns));
            if let Some(&i) = open.get(&key)
                && tids_seen.entry(i).or_default().insert(e.tid)
            {
                m.spans[i].tids.push(e.tid);
            }
        }
        if matches!(kind, Some(EventKind::SpanExit | EventKind::SpanFnReturn)) {
            let stack = running.entry(e.tid).or_default();
            match stack.iter().rposition(|&(id, _, _)| id == e.span_id) {
                Some(pos) => {
                    let (id, _, begin) = stack.remove(pos);
                    m.runs.push(SpanRun {
                        span: id,
                        tid: e.tid,
                        begin_ns: begin,
                        end_ns: e.timestamp_ns,
                        pid: e.pid,
                    });
                }
                None => m.info.unmatched_exits += 1,
            }
        }
        if matches!(kind, Some(EventKind::SpanEnd | EventKind::SpanFnReturn)) {
            match open.remove(&key) {
                Some(i) => m.spans[i].end_ns = e.timestamp_ns,
                None => m.info.unmatched_ends += 1,
            }
        }
    }
    for (_, i) in open {
        m.spans[i].end_ns = end_ns.max(m.spans[i].begin_ns);
        m.spans[i].incomplete = true;
    }
    for (tid, stack) in running {
        for (id, pid, begin) in stack {
            m.runs.push(SpanRun {
                span: id,
                tid,
                begin_ns: begin,
                end_ns: end_ns.max(begin),
                pid,
            });
        }
    }
    m.runs.sort_by_key(|r| (r.begin_ns, r.tid));
    set_depths(&mut m.spans);
    m
}

fn set_depths(spans: &mut [Span]) {
    let index: HashMap<(u32, u64), usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.pid, s.id), i))
        .collect();
    for i in 0..spans.len() {
        let mut depth = 0;
        let mut cur = i;
        // Bounded: a cycle of ids (a buggy program) must not hang the profiler.
        while depth < 1000 {
            let s = &spans[cur];
            match index.get(&(s.pid, s.parent)) {
                Some(&p) if s.parent != 0 && p != cur => {
                    depth += 1;
                    cur = p;
                }
                _ => break,
            }
        }
        spans[i].depth = depth;
    }
}

/// Counts each sample in the span it names.
pub fn attribute_samples(spans: &mut [Span], samples: &[Sample]) {
    let index: HashMap<(u32, u64), usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.pid, s.id), i))
        .collect();
    for s in samples.iter().filter(|s| s.span != 0) {
        if let Some(&i) = index.get(&(s.pid, s.span)) {
            spans[i].samples += 1;
        }
    }
}

/// Span names from the root down to the span `id` of `pid`, for span-aware flame graphs.
pub struct SpanPaths<'a> {
    by_id: HashMap<(u32, u64), &'a Span>,
}

impl<'a> SpanPaths<'a> {
    pub fn new(rec: &'a Recording) -> Self {
        Self {
            by_id: rec.spans.iter().map(|s| ((s.pid, s.id), s)).collect(),
        }
    }

    pub fn path(&self, pid: u32, id: u64) -> Vec<&'a str> {
        let mut out = Vec::new();
        let mut cur = id;
        while cur != 0 && out.len() < 1000 {
            match self.by_id.get(&(pid, cur)) {
                Some(s) => {
                    out.push(s.name.as_str());
                    cur = s.parent;
                }
                None => break,
            }
        }
        out.reverse();
        out
    }
}

/// Statistics of all spans with one name.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NameStats {
    pub name: String,
    pub count: u64,
    pub total_ns: u64,
    pub mean_ns: f64,
    pub stddev_ns: f64,
    pub p50_ns: u64,
    pub p95_ns: u64,
    pub p99_ns: u64,
    pub max_ns: u64,
    pub samples: u64,
    pub incomplete: u64,
}

/// Nearest-rank percentile of sorted values.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Per name, most total time first.
pub fn stats_by_name(spans: &[Span]) -> Vec<NameStats> {
    let mut groups: HashMap<&str, Vec<&Span>> = HashMap::new();
    for s in spans {
        groups.entry(s.name.as_str()).or_default().push(s);
    }
    let mut out: Vec<NameStats> = groups
        .into_iter()
        .map(|(name, group)| {
            let mut d: Vec<u64> = group.iter().map(|s| s.duration_ns()).collect();
            d.sort_unstable();
            let count = d.len() as u64;
            let total = d.iter().fold(0u64, |t, &x| t.saturating_add(x));
            let mean = total as f64 / count as f64;
            let var = d.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / count as f64;
            NameStats {
                name: name.to_string(),
                count,
                total_ns: total,
                mean_ns: mean,
                stddev_ns: var.sqrt(),
                p50_ns: percentile(&d, 50.0),
                p95_ns: percentile(&d, 95.0),
                p99_ns: percentile(&d, 99.0),
                max_ns: d.last().copied().unwrap_or(0),
                samples: group.iter().fold(0u64, |t, s| t.saturating_add(s.samples)),
                incomplete: group.iter().filter(|s| s.incomplete).count() as u64,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.total_ns
            .cmp(&a.total_ns)
            .then_with(|| a.name.cmp(&b.name))
    });
    out
}

/// The most spans open at once, and when that was first reached.
pub fn concurrency_peak(spans: &[Span]) -> (u64, u64) {
    let mut edges: Vec<(u64, i64)> = Vec::with_capacity(spans.len() * 2);
    for s in spans {
        edges.push((s.begin_ns, 1));
        edges.push((s.end_ns, -1));
    }
    // Ends before begins at the same instant: touching spans do not overlap.
    edges.sort_unstable();
    let (mut cur, mut peak, mut at) = (0i64, 0i64, 0u64);
    for (t, d) in edges {
        cur += d;
        if cur > peak {
            peak = cur;
            at = t;
        }
    }
    (peak.max(0) as u64, at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: EventKind, ts: u64, tid: u32, id: u64, parent: u64, meta: u64) -> SpanEvent {
        SpanEvent {
            kind: kind as u32,
            cpu: 0,
            timestamp_ns: ts,
            pid: 1,
            tid,
            span_id: id,
            parent_id: parent,
            meta,
        }
    }

    fn meta() -> HashMap<(u32, u64), SpanMeta> {
        let m = |name: &str| SpanMeta {
            name: name.into(),
            target: "app".into(),
            file: "app.rs".into(),
            line: 7,
        };
        HashMap::from([((1, 0x10), m("request")), ((1, 0x20), m("db_query"))])
    }

    use EventKind::*;

    #[test]
    fn matches_nested_spans_across_threads() {
        let events = [
            ev(SpanBegin, 100, 1, 1, 0, 0x10),
            ev(SpanEnter, 101, 1, 1, 0, 0),
            ev(SpanBegin, 110, 1, 2, 1, 0x20),
            ev(SpanEnter, 111, 1, 2, 0, 0),
            ev(SpanExit, 150, 1, 2, 0, 0),
            // The child migrates to thread 2 (an async task moving workers).
            ev(SpanEnter, 160, 2, 2, 0, 0),
            ev(SpanExit, 170, 2, 2, 0, 0),
            ev(SpanEnd, 171, 2, 2, 0, 0),
            ev(SpanExit, 180, 1, 1, 0, 0),
            ev(SpanEnd, 190, 1, 1, 0, 0),
        ];
        // Arrival order differs from time order (per-CPU buffers): matching sorts.
        let mut shuffled = events.to_vec();
        shuffled.reverse();
        let m = match_events(&shuffled, &meta(), &[], 1000);
        assert_eq!(m.spans.len(), 2);
        let req = &m.spans[0];
        assert_eq!(
            (req.name.as_str(), req.duration_ns(), req.depth),
            ("request", 90, 0)
        );
        let q = &m.spans[1];
        assert_eq!((q.name.as_str(), q.parent, q.depth), ("db_query", 1, 1));
        assert_eq!(q.tids, [1, 2]);
        assert_eq!(m.runs.len(), 3);
        assert_eq!(m.info, SpanInfo::default());
    }

    #[test]
    fn open_spans_close_at_the_end_and_strays_are_counted() {
        let events = [
            ev(SpanBegin, 100, 1, 1, 0, 0x10),
            ev(SpanEnter, 101, 1, 1, 0, 0),
            ev(SpanEnd, 120, 1, 99, 0, 0),
            ev(SpanExit, 121, 1, 98, 0, 0),
            ev(SpanBegin, 130, 1, 1, 0, 0x10),
            ev(SpanBegin, 140, 1, 5, 0, 0x999),
        ];
        let m = match_events(&events, &meta(), &[], 500);
        assert_eq!(m.info.unmatched_ends, 1);
        assert_eq!(m.info.unmatched_exits, 1);
        assert_eq!(m.info.duplicate_begins, 1);
        assert!(m.spans.iter().all(|s| s.incomplete && s.end_ns == 500));
        assert!(
            m.spans[1].name.contains("0x999"),
            "unknown meta named by address"
        );
        assert_eq!(m.runs.len(), 1, "the open run closes at the end");
        assert_eq!(m.runs[0].end_ns, 500);
    }

    #[test]
    fn span_fn_calls_nest_with_recursion() {
        let f = 1u64 << 63;
        let events = [
            ev(SpanFnCall, 10, 1, f | 1, 0, 0),
            ev(SpanFnCall, 20, 1, f | 2, f | 1, 0),
            ev(SpanFnReturn, 30, 1, f | 2, 0, 0),
            ev(SpanFnReturn, 40, 1, f | 1, 0, 0),
        ];
        let m = match_events(&events, &HashMap::new(), &["fib".to_string()], 100);
        assert_eq!(m.spans.len(), 2);
        assert!(m.spans.iter().all(|s| s.name == "fib" && !s.incomplete));
        assert_eq!((m.spans[1].depth, m.spans[1].duration_ns()), (1, 10));
        assert_eq!(m.runs.len(), 2);
    }

    #[test]
    fn stats_percentiles_and_concurrency() {
        let mut spans = Vec::new();
        for i in 0..100u64 {
            spans.push(Span {
                id: i + 1,
                name: "q".into(),
                begin_ns: i * 10,
                end_ns: i * 10 + (i + 1) * 1000,
                ..Default::default()
            });
        }
        let s = &stats_by_name(&spans)[0];
        assert_eq!(s.count, 100);
        assert_eq!(s.p50_ns, 50_000);
        assert_eq!(s.p95_ns, 95_000);
        assert_eq!(s.p99_ns, 99_000);
        assert_eq!(s.max_ns, 100_000);
        assert_eq!(s.total_ns, 5_050_000);
        assert!((s.mean_ns - 50_500.0).abs() < 1e-6);
        let (peak, at) = concurrency_peak(&spans);
        assert_eq!((peak, at), (100, 990));
        // Back-to-back spans do not overlap.
        let touching = [
            Span {
                begin_ns: 0,
                end_ns: 10,
                ..Default::default()
            },
            Span {
                begin_ns: 10,
                end_ns: 20,
                ..Default::default()
            },
        ];
        assert_eq!(concurrency_peak(&touching).0, 1);
    }
}
