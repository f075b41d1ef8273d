//! Exclusive time along the span tree. A span's duration counts its children's too, so summing
//! durations per name counts nested time twice (a `request` "has the most span time" because it
//! contains its slow `db_query`). Here each instant of a top-level span belongs to exactly one
//! span of its tree: the innermost open one. Children that overlap (joined futures) share the
//! instants they overlap evenly, so the parts of every tree add up to its root's duration.
//!
//! Each span's exclusive time is then split by what its threads did meanwhile: on CPU
//! (samples × period), blocked or preempted (`--off-cpu`), or nothing, because no thread ran it
//! at all (an async span awaiting: open, but entered on no thread).
use std::{collections::HashMap, rc::Rc};

use serde::Serialize;

use crate::model::Recording;

/// A stretch of time and the weight each of its instants carries toward the top-level span:
/// 1, or less where siblings overlap.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Seg {
    b: u64,
    e: u64,
    w: f64,
}

/// One span name's part of the span tree.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ExclusiveTime {
    pub name: String,
    pub count: u64,
    /// Its spans' own time: inside their parents', not covered by any child span.
    pub exclusive_ns: u64,
    /// Its part of the top-level spans' time: its exclusive time, instants shared with
    /// overlapping siblings split evenly between them. Over all names these add up to the
    /// top-level spans' durations.
    pub top_level_ns: u64,
    /// `top_level_ns` in percent of all top-level span time.
    pub top_level_share: f64,
    /// CPU samples in its spans × the sampling period.
    pub on_cpu_ns: u64,
    /// `--off-cpu`: its threads blocked (sleep, I/O, locks) while running it.
    pub blocked_ns: u64,
    /// `--off-cpu`: its threads runnable but waiting for a CPU while running it.
    pub preempted_ns: u64,
    /// Exclusive time during which no thread ran it: an async span waiting (open, entered on
    /// no thread).
    pub no_thread_ns: u64,
    /// Exclusive time on a thread neither sampled on CPU nor recorded off CPU: without
    /// `--off-cpu` its threads' off-CPU time; with it, sampling error.
    pub on_thread_other_ns: u64,
    /// Time its spans were open outside their parents' (a child outliving its parent): part
    /// of no tree's time.
    pub outside_parent_ns: u64,
    /// The parent name its spans spend the most time under, and the percent of that parent's
    /// time they take (their children included).
    pub parent: Option<String>,
    pub parent_share: Option<f64>,
    /// The child name whose spans take the most of this name's time.
    pub critical_child: Option<CriticalChild>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CriticalChild {
    pub name: String,
    /// Percent of this name's time.
    pub share: f64,
}

/// The span tree's time, per name, most top-level time first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanTree {
    pub by_name: Vec<ExclusiveTime>,
    /// Sum of the top-level spans' durations.
    pub top_level_ns: u64,
    /// Off-CPU time was recorded: blocked and preempted are measured, not missing.
    pub off_cpu: bool,
}

/// What one span contributes, before grouping by name.
#[derive(Clone, Default)]
struct PerSpan {
    exclusive_ns: u64,
    top_ns: f64,
    /// Weighted time inside its parent, children included.
    inclusive: f64,
    on_thread_ns: u64,
    outside_ns: u64,
}

/// Sorted, merged intervals.
fn merge(mut v: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    v.retain(|&(b, e)| e > b);
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (b, e) in v {
        match out.last_mut() {
            Some(last) if b <= last.1 => last.1 = last.1.max(e),
            _ => out.push((b, e)),
        }
    }
    out
}

/// Total length of the intersection of two sorted, disjoint interval lists.
fn overlap_ns(a: &[(u64, u64)], b: &[(u64, u64)]) -> u64 {
    let (mut i, mut j, mut total) = (0, 0, 0u64);
    while let (Some(&(ab, ae)), Some(&(bb, be))) = (a.get(i), b.get(j)) {
        let (lo, hi) = (ab.max(bb), ae.min(be));
        if hi > lo {
            total = total.saturating_add(hi - lo);
        }
        if ae <= be {
            i += 1;
        } else {
            j += 1;
        }
    }
    total
}

/// The part of `segs` (sorted, disjoint) inside `[b, e)`.
fn slice(segs: &[Seg], b: u64, e: u64) -> Vec<Seg> {
    let start = segs.partition_point(|s| s.e <= b);
    segs[start..]
        .iter()
        .take_while(|s| s.b < e)
        .filter_map(|s| {
            let (lo, hi) = (s.b.max(b), s.e.min(e));
            (hi > lo).then_some(Seg {
                b: lo,
                e: hi,
                w: s.w,
            })
        })
        .collect()
}

/// How many of `kids` are open at each instant of `[b, e)`: steps `(from, to, open)`.
fn open_children(b: u64, e: u64, kids: &[(u64, u64)]) -> Vec<(u64, u64, u32)> {
    let mut edges: Vec<(u64, i64)> = Vec::with_capacity(kids.len() * 2);
    for &(kb, ke) in kids {
        let (lo, hi) = (kb.max(b), ke.min(e));
        if hi > lo {
            edges.push((lo, 1));
            edges.push((hi, -1));
        }
    }
    // Ends before begins at one instant: back-to-back children never overlap.
    edges.sort_unstable();
    let mut steps = Vec::with_capacity(edges.len() + 1);
    let (mut at, mut open) = (b, 0i64);
    for (t, d) in edges {
        if t > at {
            steps.push((at, t, open.max(0) as u32));
            at = t;
        }
        open += d;
    }
    if e > at {
        steps.push((at, e, open.max(0) as u32));
    }
    steps
}

impl SpanTree {
    pub fn new(rec: &Recording) -> Option<Self> {
        if rec.spans.is_empty() {
            return None;
        }
        let spans = &rec.spans;
        let n = spans.len();
        let index: HashMap<(u32, u64), usize> = spans
            .iter()
            .enumerate()
            .map(|(i, s)| ((s.pid, s.id), i))
            .collect();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut parent_of: Vec<Option<usize>> = vec![None; n];
        for (i, s) in spans.iter().enumerate() {
            if s.parent == 0 {
                continue;
            }
            if let Some(&p) = index.get(&(s.pid, s.parent))
                && p != i
            {
                children[p].push(i);
                parent_of[i] = Some(p);
            }
        }
        let mut runs: HashMap<(u32, u64), Vec<(u64, u64)>> = HashMap::new();
        for r in &rec.span_runs {
            runs.entry((r.pid, r.span))
                .or_default()
                .push((r.begin_ns, r.end_ns));
        }
        let runs: HashMap<(u32, u64), Vec<(u64, u64)>> =
            runs.into_iter().map(|(k, v)| (k, merge(v))).collect();

        let mut per: Vec<PerSpan> = vec![PerSpan::default(); n];
        let mut visited = vec![false; n];
        let mut top_level_ns = 0u64;
        // Depth first with an explicit stack: span trees can be deep (recursive --span-fn).
        // Each entry carries its parent's weighted time, shared by all its siblings.
        let mut stack: Vec<(usize, Rc<Vec<Seg>>)> = Vec::new();
        // Roots first; then whatever they did not reach (a cycle of parent ids in a buggy
        // program) starts trees of its own.
        let starts = (0..n).filter(|&i| parent_of[i].is_none()).chain(0..n);
        for root in starts {
            if visited[root] {
                continue;
            }
            visited[root] = true;
            let s = &spans[root];
            top_level_ns = top_level_ns.saturating_add(s.duration_ns());
            let whole = Rc::new(vec![Seg {
                b: s.begin_ns,
                e: s.end_ns.max(s.begin_ns),
                w: 1.0,
            }]);
            stack.push((root, whole));
            while let Some((i, inherited)) = stack.pop() {
                let s = &spans[i];
                let (b, e) = (s.begin_ns, s.end_ns.max(s.begin_ns));
                let visible = slice(&inherited, b, e);
                let p = &mut per[i];
                let visible_ns = visible
                    .iter()
                    .fold(0u64, |t, v| t.saturating_add(v.e - v.b));
                p.outside_ns = (e - b).saturating_sub(visible_ns);
                p.inclusive = visible.iter().map(|v| (v.e - v.b) as f64 * v.w).sum();

                let kids: Vec<usize> = children[i]
                    .iter()
                    .copied()
                    .filter(|&c| !visited[c])
                    .collect();
                let bounds: Vec<(u64, u64)> = kids
                    .iter()
                    .map(|&c| (spans[c].begin_ns, spans[c].end_ns))
                    .collect();
                let steps = open_children(b, e, &bounds);
                // Overlay the visible time with the open-children steps (both sorted).
                let mut exclusive: Vec<(u64, u64)> = Vec::new();
                let mut shared: Vec<Seg> = Vec::new();
                let (mut vi, mut si) = (0, 0);
                while let (Some(v), Some(&(sb, se, open))) = (visible.get(vi), steps.get(si)) {
                    let (lo, hi) = (v.b.max(sb), v.e.min(se));
                    if hi > lo {
                        if open == 0 {
                            exclusive.push((lo, hi));
                            p.exclusive_ns = p.exclusive_ns.saturating_add(hi - lo);
                            p.top_ns += (hi - lo) as f64 * v.w;
                        } else {
                            let w = v.w / f64::from(open);
                            match shared.last_mut() {
                                Some(last) if last.e == lo && last.w == w => last.e = hi,
                                _ => shared.push(Seg { b: lo, e: hi, w }),
                            }
                        }
                    }
                    if v.e <= se {
                        vi += 1;
                    } else {
                        si += 1;
                    }
                }
                if let Some(r) = runs.get(&(s.pid, s.id)) {
                    p.on_thread_ns = overlap_ns(&exclusive, r);
                }
                let shared = Rc::new(shared);
                for c in kids {
                    visited[c] = true;
                    stack.push((c, Rc::clone(&shared)));
                }
            }
        }
        Some(Self::by_name(rec, &per, &parent_of, top_level_ns))
    }

    fn by_name(
        rec: &Recording,
        per: &[PerSpan],
        parent_of: &[Option<usize>],
        top_level_ns: u64,
    ) -> Self {
        let spans = &rec.spans;
        let period = rec.sample_period_ns();
        let mut off: HashMap<(u32, u64), (u64, u64)> = HashMap::new();
        for o in rec.off_cpu.iter().filter(|o| o.span != 0) {
            let e = off.entry((o.pid, o.span)).or_default();
            if o.runnable {
                e.1 = e.1.saturating_add(o.total_ns);
            } else {
                e.0 = e.0.saturating_add(o.total_ns);
            }
        }
        #[derive(Default)]
        struct Acc {
            t: ExclusiveTime,
            top: f64,
            on_thread: u64,
            inclusive: f64,
        }
        let mut acc: HashMap<&str, Acc> = HashMap::new();
        // (parent name, child name) → the children's weighted time inside those parents.
        let mut under: HashMap<(&str, &str), f64> = HashMap::new();
        for (i, s) in spans.iter().enumerate() {
            let p = &per[i];
            let a = acc.entry(s.name.as_str()).or_default();
            a.t.count = a.t.count.saturating_add(1);
            a.t.exclusive_ns = a.t.exclusive_ns.saturating_add(p.exclusive_ns);
            a.t.outside_parent_ns = a.t.outside_parent_ns.saturating_add(p.outside_ns);
            a.t.on_cpu_ns =
                a.t.on_cpu_ns
                    .saturating_add(s.samples.saturating_mul(period));
            let (blocked, preempted) = off.get(&(s.pid, s.id)).copied().unwrap_or_default();
            a.t.blocked_ns = a.t.blocked_ns.saturating_add(blocked);
            a.t.preempted_ns = a.t.preempted_ns.saturating_add(preempted);
            a.top += p.top_ns;
            a.on_thread = a.on_thread.saturating_add(p.on_thread_ns);
            a.inclusive += p.inclusive;
            if let Some(parent) = parent_of[i] {
                *under
                    .entry((spans[parent].name.as_str(), s.name.as_str()))
                    .or_default() += p.inclusive;
            }
        }
        let inclusive_of: HashMap<&str, f64> = acc.iter().map(|(k, a)| (*k, a.inclusive)).collect();
        let pct = |part: f64, whole: f64| {
            if whole > 0.0 {
                (part * 100.0 / whole).min(100.0)
            } else {
                0.0
            }
        };
        let mut best_parent: HashMap<&str, (&str, f64)> = HashMap::new();
        let mut best_child: HashMap<&str, (&str, f64)> = HashMap::new();
        let mut pairs: Vec<(&(&str, &str), &f64)> = under.iter().collect();
        // Ties go to the first name in order, not to the hash map's.
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        for (&(parent, child), &ns) in pairs {
            if best_parent.get(child).is_none_or(|&(_, m)| ns > m) {
                best_parent.insert(child, (parent, ns));
            }
            if best_child.get(parent).is_none_or(|&(_, m)| ns > m) {
                best_child.insert(parent, (child, ns));
            }
        }
        let mut by_name: Vec<ExclusiveTime> = acc
            .into_iter()
            .map(|(name, a)| {
                let mut t = a.t;
                t.name = name.to_string();
                t.top_level_ns = a.top.round() as u64;
                t.top_level_share = pct(a.top, top_level_ns as f64);
                t.no_thread_ns = t.exclusive_ns.saturating_sub(a.on_thread);
                t.on_thread_other_ns = a
                    .on_thread
                    .saturating_sub(t.on_cpu_ns)
                    .saturating_sub(t.blocked_ns)
                    .saturating_sub(t.preempted_ns);
                if let Some(&(parent, ns)) = best_parent.get(name) {
                    t.parent = Some(parent.to_string());
                    t.parent_share =
                        Some(pct(ns, inclusive_of.get(parent).copied().unwrap_or(0.0)));
                }
                if let Some(&(child, ns)) = best_child.get(name) {
                    t.critical_child = Some(CriticalChild {
                        name: child.to_string(),
                        share: pct(ns, a.inclusive),
                    });
                }
                t
            })
            .collect();
        by_name.sort_by(|a, b| {
            b.top_level_ns
                .cmp(&a.top_level_ns)
                .then_with(|| a.name.cmp(&b.name))
        });
        Self {
            by_name,
            top_level_ns,
            off_cpu: rec.off_cpu_info.is_some(),
        }
    }
}
