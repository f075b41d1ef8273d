//! Findings: what a recording says to look at first, each with the figures behind it and a
//! one-line hint. The span verdict comes from exclusive time along the span tree
//! ([`span_tree`]): the span whose own time dominates the top-level spans, and whether that
//! time is computing or waiting. Hotspot findings come from the samples ([`hotspots`]).
//! Outputs render these; nothing here formats a file.
use std::collections::HashMap;

use serde::Serialize;

use crate::model::{FrameKind, Recording};

pub mod hotspots;
pub mod span_tree;

pub use span_tree::{ExclusiveTime, SpanTree};

/// One finding, as `summary.json` lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// `span_waiting`, `span_computing`, `span_preempted`, `span_off_cpu` (the span
    /// verdict), `function`, `allocator`, `lock`, `syscalls`, `page_faults`, `memcpy`,
    /// `regex`, `json`, `kernel`, `blocking`, `lock_wait`.
    pub kind: &'static str,
    /// The span, function, system call, stack or lock it is about.
    pub subject: String,
    /// Percent of `share_of`.
    pub share: f64,
    pub share_of: &'static str,
    pub evidence: String,
    pub hint: String,
}

/// Everything the findings were drawn from that outputs show.
#[derive(Clone, Debug, Default)]
pub struct Analysis {
    /// The span verdict first, then the others, largest share first.
    pub findings: Vec<Finding>,
    pub span_tree: Option<SpanTree>,
}

/// `part` in percent of `whole`, 0 when there is no whole.
pub(crate) fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part * 100.0 / whole
    } else {
        0.0
    }
}

impl Analysis {
    pub fn new(rec: &Recording) -> Self {
        let span_tree = SpanTree::new(rec);
        let mut rest = hotspots::cpu_findings(rec);
        rest.extend(hotspots::blocking_finding(rec));
        rest.extend(hotspots::lock_wait_finding(rec));
        rest.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.kind.cmp(b.kind)));
        let mut findings: Vec<Finding> = span_tree
            .as_ref()
            .and_then(|t| span_verdict(rec, t))
            .into_iter()
            .collect();
        findings.extend(rest);
        Self {
            findings,
            span_tree,
        }
    }
}

/// The self function most of a span name's CPU samples are in (user code; the kernel's only
/// when the samples have no user frame).
fn computing_in(rec: &Recording, span_name: &str) -> Option<String> {
    let ids: std::collections::HashSet<(u32, u64)> = rec
        .spans
        .iter()
        .filter(|s| s.name == span_name)
        .map(|s| (s.pid, s.id))
        .collect();
    let mut per_stack: HashMap<u32, u64> = HashMap::new();
    for s in rec
        .samples
        .iter()
        .filter(|s| ids.contains(&(s.pid, s.span)))
    {
        *per_stack.entry(s.stack).or_default() += 1;
    }
    let mut by_fn: HashMap<String, u64> = HashMap::new();
    for (stack, n) in per_stack {
        let frames = rec.frames(stack);
        let f = frames
            .iter()
            .find(|f| f.kind != FrameKind::Kernel)
            .or(frames.first());
        if let Some(f) = f {
            *by_fn.entry(f.to_string()).or_default() += n;
        }
    }
    by_fn
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
        .map(|(f, _)| f)
}

/// Where a span name's threads blocked the most, from `--off-cpu`.
fn blocked_in(rec: &Recording, span_name: &str) -> Option<String> {
    let names: HashMap<(u32, u64), &str> = rec
        .spans
        .iter()
        .map(|s| ((s.pid, s.id), s.name.as_str()))
        .collect();
    let mut by_stack: HashMap<u32, u64> = HashMap::new();
    for o in rec.off_cpu.iter().filter(|o| !o.runnable) {
        if names.get(&(o.pid, o.span)) == Some(&span_name) {
            let e = by_stack.entry(o.stack).or_default();
            *e = e.saturating_add(o.total_ns);
        }
    }
    let (stack, _) = by_stack
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))?;
    Some(crate::offcpu::describe_stack(rec, stack))
}

/// "request → db_query": the span name's ancestors by the parent each spends most time under.
fn path_to(tree: &SpanTree, name: &str) -> String {
    let by: HashMap<&str, &ExclusiveTime> =
        tree.by_name.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut path = vec![name];
    let mut cur = name;
    while let Some(parent) = by.get(cur).and_then(|t| t.parent.as_deref()) {
        // A name can be its own ancestor (recursion) or be in a cycle: stop there.
        if path.contains(&parent) || path.len() >= 16 {
            break;
        }
        path.push(parent);
        cur = parent;
    }
    path.reverse();
    path.join(" → ")
}

/// The span whose exclusive time dominates the top-level spans, and what that time is.
fn span_verdict(rec: &Recording, tree: &SpanTree) -> Option<Finding> {
    let b = tree.by_name.first()?;
    if b.top_level_ns == 0 {
        return None;
    }
    let parts = [
        b.on_cpu_ns,
        b.blocked_ns,
        b.preempted_ns,
        b.no_thread_ns,
        b.on_thread_other_ns,
    ];
    let measured = parts.iter().map(|&p| p as f64).sum::<f64>();
    let of = |ns: u64| pct(ns as f64, measured);
    let on_cpu = of(b.on_cpu_ns);
    let waiting_ns = b.no_thread_ns.saturating_add(b.blocked_ns);
    let mut split = vec![format!("{on_cpu:.1}% on CPU")];
    if b.no_thread_ns > 0 {
        split.push(format!(
            "{:.1}% with no thread running it (an async wait)",
            of(b.no_thread_ns)
        ));
    }
    if tree.off_cpu {
        split.push(format!("{:.1}% blocked", of(b.blocked_ns)));
        split.push(format!("{:.1}% preempted", of(b.preempted_ns)));
    }
    if b.on_thread_other_ns > 0 {
        split.push(format!(
            "{:.1}% on its thread but not sampled on CPU{}",
            of(b.on_thread_other_ns),
            if tree.off_cpu {
                ""
            } else {
                " (off CPU: --off-cpu tells blocked from preempted)"
            }
        ));
    }
    let (kind, hint) = if on_cpu >= 50.0 {
        let f = computing_in(rec, &b.name).unwrap_or_else(|| "its own code".into());
        (
            "span_computing",
            format!("computing in {f}: make it cheaper or call it less"),
        )
    } else if waiting_ns >= b.preempted_ns && waiting_ns >= b.on_thread_other_ns {
        let what = if b.no_thread_ns >= b.blocked_ns {
            "look at what it awaits (a query, a remote call, a timer, a channel)".to_string()
        } else {
            match blocked_in(rec, &b.name) {
                Some(stack) => format!("its thread blocks in {stack}: look at what it waits for"),
                None => "its thread blocks: look at what it waits for".to_string(),
            }
        };
        ("span_waiting", format!("waiting, not computing: {what}"))
    } else if b.preempted_ns >= b.on_thread_other_ns {
        (
            "span_preempted",
            "runnable but waiting for a CPU: the machine, or the program's CPU quota, is too busy"
                .to_string(),
        )
    } else {
        (
            "span_off_cpu",
            "on its thread but off CPU: blocked or preempted (record with --off-cpu to tell which)"
                .to_string(),
        )
    };
    let mut evidence = format!(
        "{}: {} of the top-level spans' {}, {} spans, {} each on average",
        path_to(tree, &b.name),
        crate::outputs::summary::fmt_ns(b.top_level_ns as f64),
        crate::outputs::summary::fmt_ns(tree.top_level_ns as f64),
        b.count,
        crate::outputs::summary::fmt_ns(b.exclusive_ns as f64 / b.count.max(1) as f64),
    );
    if let (Some(parent), Some(share)) = (&b.parent, b.parent_share) {
        evidence += &format!("; {share:.1}% of its parent `{parent}`");
    }
    evidence += &format!("; of its own time {}", split.join(", "));
    Some(Finding {
        kind,
        subject: b.name.clone(),
        share: b.top_level_share,
        share_of: "top-level span time",
        evidence,
        hint,
    })
}

#[cfg(test)]
mod tests;
