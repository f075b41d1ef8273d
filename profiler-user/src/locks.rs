//! Lock contention analysis (`--locks`): time waited in futex waits and for kernel locks,
//! per stack (the folded view), per address (the most contended locks, named when a
//! static), per span.
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::{
    model::{CURRENT, LockWait, Recording},
    outputs::folded::{GroupBy, stack_line_in_span},
};

const TOP_LOCKS: usize = 10;

/// One address's symbol, kind, time, waits, and (time, waits) per waiting stack.
type LockSum = (String, String, u64, u64, HashMap<u32, (u64, u64)>);

/// The leaf frame of a lock wait's folded stack: what was waited on. A futex by its symbol
/// or address (`[lock big_lock]`); a kernel lock by its kind, and its symbol when a static
/// (`[kernel rwsem write]`, `[kernel mutex cgroup_mutex]`): kernel objects come and go at
/// any address, which would split the flame graph by nothing the reader can use.
pub fn lock_frame(w: &LockWait) -> String {
    match (w.kernel_kind.is_empty(), w.symbol.is_empty()) {
        (true, true) => format!("[lock {:#x}]", w.address),
        (true, false) => format!("[lock {}]", w.symbol),
        (false, true) => format!("[kernel {}]", w.kernel_kind),
        (false, false) => format!("[kernel {} {}]", w.kernel_kind, w.symbol),
    }
}

/// `locks.folded`: the waiters' stacks, the lock as the leaf, weighted by microseconds.
pub fn lock_lines(rec: &Recording, group: GroupBy) -> Vec<(String, u64)> {
    let mut ns: BTreeMap<String, u64> = BTreeMap::new();
    for w in &rec.lock_waits {
        let tid = if group == GroupBy::Thread { w.tid } else { 0 };
        let mut line = stack_line_in_span(rec, group, (w.pid, CURRENT), tid, w.stack, &[]);
        line.push(';');
        line.push_str(&lock_frame(w));
        let n = ns.entry(line).or_default();
        *n = n.saturating_add(w.total_ns);
    }
    ns.into_iter()
        .map(|(l, n)| (l, n / 1000))
        .filter(|(_, us)| *us > 0)
        .collect()
}

#[derive(Debug, Serialize)]
pub struct LocksReport {
    /// Futex waits (kernel lock waits apart, below).
    pub total_ns: u64,
    pub waits: u64,
    pub lost: u64,
    pub unfinished: u64,
    pub stack_errors: u64,
    /// Futex waits whose user stack unwound only partly, or came not at all; the same for
    /// kernel lock waits.
    pub stacks_truncated: u64,
    pub stacks_lost: u64,
    pub kernel_stacks_truncated: u64,
    pub kernel_stacks_lost: u64,
    pub bpf_runs: u64,
    pub bpf_ns_per_run: Option<f64>,
    pub windowed: bool,
    /// Whether kernel lock contention was recorded.
    pub kernel: bool,
    /// Kernel lock waits.
    pub kernel_ns: u64,
    pub kernel_waits: u64,
    /// The sum of the four below.
    pub kernel_lost: u64,
    pub kernel_lost_ringbuf: u64,
    pub kernel_waits_full: u64,
    pub kernel_ends_missed: u64,
    pub kernel_in_flight: u64,
    pub kernel_stack_errors: u64,
    /// Kernel lock contentions inside futex waits, left out (the futex wait has them).
    pub kernel_in_futex: u64,
    pub kernel_bpf_runs: u64,
    pub kernel_bpf_ns_per_run: Option<f64>,
    /// The most waited-on addresses, most time first.
    pub top_locks: Vec<ContendedLock>,
    /// Spans by name, most lock wait first; empty without spans.
    pub by_span: Vec<SpanWait>,
}

#[derive(Debug, Serialize)]
pub struct ContendedLock {
    pub pid: u32,
    pub address: String,
    /// The static variable at the address, empty when none names it.
    pub symbol: String,
    /// "futex", or the kernel lock's kind ("rwsem write").
    pub kind: String,
    pub ns: u64,
    pub waits: u64,
    /// The waiting stacks, most time first: "caller ← … (in the wait function)".
    pub waiters: Vec<Waiter>,
}

#[derive(Debug, Serialize)]
pub struct Waiter {
    pub stack: String,
    pub ns: u64,
    pub waits: u64,
}

#[derive(Debug, Serialize)]
pub struct SpanWait {
    pub name: String,
    pub ns: u64,
    pub waits: u64,
}

fn describe(rec: &Recording, stack: u32) -> String {
    let names = rec.user_frame_names(stack, 0, 5);
    if names.is_empty() {
        "[no stack]".into()
    } else {
        names.join(" ← ")
    }
}

impl LocksReport {
    pub fn new(rec: &Recording) -> Option<Self> {
        let info = rec.lock_info.as_ref()?;
        // A kernel lock is one lock whatever its kind of wait (read or write).
        let mut by_lock: HashMap<(u32, u64, bool), LockSum> = HashMap::new();
        let (mut total_ns, mut waits) = (0u64, 0u64);
        let (mut kernel_ns, mut kernel_waits) = (0u64, 0u64);
        for w in &rec.lock_waits {
            let kernel = !w.kernel_kind.is_empty();
            if kernel {
                kernel_ns = kernel_ns.saturating_add(w.total_ns);
                kernel_waits = kernel_waits.saturating_add(w.count);
            } else {
                total_ns = total_ns.saturating_add(w.total_ns);
                waits = waits.saturating_add(w.count);
            }
            let e = by_lock
                .entry((w.pid, w.address, kernel))
                .or_insert_with(|| (w.symbol.clone(), String::new(), 0, 0, HashMap::new()));
            let kind = if kernel {
                // "rwsem write" and "rwsem read" are one "rwsem".
                w.kernel_kind
                    .split_once(' ')
                    .map_or(w.kernel_kind.as_str(), |(k, _)| k)
            } else {
                "futex"
            };
            if e.1.is_empty() {
                e.1 = kind.to_string();
            } else if e.1 != kind {
                // Seen as two kinds: the address was reused by another lock.
                e.1 = "several".into();
            }
            e.2 = e.2.saturating_add(w.total_ns);
            e.3 = e.3.saturating_add(w.count);
            let s = e.4.entry(w.stack).or_default();
            s.0 = s.0.saturating_add(w.total_ns);
            s.1 = s.1.saturating_add(w.count);
        }
        let mut top_locks: Vec<ContendedLock> = by_lock
            .into_iter()
            .map(|((pid, address, _), (symbol, kind, ns, waits, stacks))| {
                let mut waiters: Vec<Waiter> = stacks
                    .into_iter()
                    .map(|(stack, (ns, waits))| Waiter {
                        stack: describe(rec, stack),
                        ns,
                        waits,
                    })
                    .collect();
                waiters.sort_by(|a, b| b.ns.cmp(&a.ns).then_with(|| a.stack.cmp(&b.stack)));
                waiters.truncate(3);
                ContendedLock {
                    pid,
                    address: format!("{address:#x}"),
                    symbol,
                    kind,
                    ns,
                    waits,
                    waiters,
                }
            })
            .collect();
        top_locks.sort_by(|a, b| b.ns.cmp(&a.ns).then_with(|| a.address.cmp(&b.address)));
        top_locks.truncate(TOP_LOCKS);
        let names: HashMap<(u32, u64), &str> = rec
            .spans
            .iter()
            .map(|s| ((s.pid, s.id), s.name.as_str()))
            .collect();
        let mut spans: HashMap<&str, (u64, u64)> = HashMap::new();
        for w in rec.lock_waits.iter().filter(|w| w.span != 0) {
            if let Some(name) = names.get(&(w.pid, w.span)) {
                let e = spans.entry(name).or_default();
                e.0 = e.0.saturating_add(w.total_ns);
                e.1 = e.1.saturating_add(w.count);
            }
        }
        let mut by_span: Vec<SpanWait> = spans
            .into_iter()
            .map(|(name, (ns, waits))| SpanWait {
                name: name.to_string(),
                ns,
                waits,
            })
            .collect();
        by_span.sort_by(|a, b| b.ns.cmp(&a.ns).then_with(|| a.name.cmp(&b.name)));
        Some(Self {
            total_ns,
            waits,
            lost: info.lost,
            unfinished: info.unfinished,
            stack_errors: info.stack_errors,
            stacks_truncated: info.stacks_truncated,
            stacks_lost: info.stacks_lost,
            kernel_stacks_truncated: info.kernel_stacks_truncated,
            kernel_stacks_lost: info.kernel_stacks_lost,
            bpf_runs: info.bpf_run_count,
            bpf_ns_per_run: (info.bpf_run_count > 0)
                .then(|| info.bpf_run_time_ns as f64 / info.bpf_run_count as f64),
            windowed: info.windowed,
            kernel: info.kernel,
            kernel_ns,
            kernel_waits,
            kernel_lost: info.kernel_lost,
            kernel_lost_ringbuf: info.kernel_lost_ringbuf,
            kernel_waits_full: info.kernel_waits_full,
            kernel_ends_missed: info.kernel_ends_missed,
            kernel_in_flight: info.kernel_in_flight,
            kernel_stack_errors: info.kernel_stack_errors,
            kernel_in_futex: info.kernel_in_futex,
            kernel_bpf_runs: info.kernel_bpf_run_count,
            kernel_bpf_ns_per_run: (info.kernel_bpf_run_count > 0)
                .then(|| info.kernel_bpf_run_time_ns as f64 / info.kernel_bpf_run_count as f64),
            top_locks,
            by_span,
        })
    }

    pub fn to_text(&self, t: &mut String) {
        use crate::outputs::summary::fmt_ns;
        use std::fmt::Write as _;
        let _ = writeln!(
            t,
            "\nLock waits: {} in {} futex waits; {} lost, {} unfinished (counted to the end){}",
            fmt_ns(self.total_ns as f64),
            self.waits,
            self.lost,
            self.unfinished,
            if self.windowed {
                " (windowed: waits overlapping the window, whole)"
            } else {
                ""
            }
        );
        user_stacks(t, self.stacks_truncated, self.stacks_lost);
        if self.kernel {
            let _ = writeln!(
                t,
                "Kernel lock waits: {} in {} waits; {} lost, {} without a stack, {} inside futex waits (counted there)",
                fmt_ns(self.kernel_ns as f64),
                self.kernel_waits,
                self.kernel_lost,
                self.kernel_stack_errors,
                self.kernel_in_futex,
            );
            user_stacks(t, self.kernel_stacks_truncated, self.kernel_stacks_lost);
            if self.kernel_lost > 0 {
                let _ = writeln!(
                    t,
                    "  lost: {} with the ring buffer full, {} with the wait map full, {} whose end was missed, {} still going on at the end",
                    self.kernel_lost_ringbuf,
                    self.kernel_waits_full,
                    self.kernel_ends_missed,
                    self.kernel_in_flight,
                );
            }
        }
        if let Some(ns) = self.bpf_ns_per_run {
            let _ = writeln!(
                t,
                "BPF cost: {ns:.0} ns per futex call or return of a target"
            );
        }
        if let Some(ns) = self.kernel_bpf_ns_per_run {
            let _ = writeln!(
                t,
                "BPF cost: {ns:.0} ns per kernel lock contention or its end, of any process ({} runs)",
                self.kernel_bpf_runs
            );
        }
        if !self.top_locks.is_empty() {
            let _ = writeln!(t, "\nMost contended locks");
        }
        for l in &self.top_locks {
            let mut name = if l.symbol.is_empty() {
                l.address.clone()
            } else {
                format!("{} ({})", l.symbol, l.address)
            };
            if l.kind != "futex" {
                name = format!("kernel {} {name}", l.kind);
            }
            let _ = writeln!(
                t,
                "  {:>10} {:>7}×  {name} in pid {}",
                fmt_ns(l.ns as f64),
                l.waits,
                l.pid
            );
            for w in &l.waiters {
                let _ = writeln!(
                    t,
                    "  {:>10} {:>7}×    {}",
                    fmt_ns(w.ns as f64),
                    w.waits,
                    w.stack
                );
            }
        }
        if !self.by_span.is_empty() {
            let _ = writeln!(t, "\n  {:<28} {:>10} {:>8}", "span", "lock wait", "waits");
            for s in &self.by_span {
                let _ = writeln!(
                    t,
                    "  {:<28} {:>10} {:>8}",
                    s.name,
                    fmt_ns(s.ns as f64),
                    s.waits
                );
            }
        }
    }
}

/// The line on waits' user stacks cut short or missing, when there are any.
fn user_stacks(t: &mut String, truncated: u64, lost: u64) {
    use std::fmt::Write as _;
    if truncated > 0 || lost > 0 {
        let _ = writeln!(
            t,
            "  user stacks: {truncated} cut short (ending in {}), {lost} missing",
            crate::symbolize::TRUNCATED_FRAME,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LockInfo;

    fn report(info: LockInfo) -> LocksReport {
        let rec = Recording {
            lock_info: Some(info),
            ..Default::default()
        };
        LocksReport::new(&rec).expect("a report with lock_info")
    }

    #[test]
    fn kernel_losses_say_their_cause() {
        let r = report(LockInfo {
            kernel: true,
            kernel_lost: 10,
            kernel_lost_ringbuf: 1,
            kernel_waits_full: 2,
            kernel_ends_missed: 3,
            kernel_in_flight: 4,
            ..Default::default()
        });
        let json = serde_json::to_value(&r).expect("serializes");
        for (name, n) in [
            ("kernel_lost", 10),
            ("kernel_lost_ringbuf", 1),
            ("kernel_waits_full", 2),
            ("kernel_ends_missed", 3),
            ("kernel_in_flight", 4),
        ] {
            assert_eq!(json[name], n, "{name}: {json}");
        }
        let mut text = String::new();
        r.to_text(&mut text);
        assert!(
            text.contains("lost: 1 with the ring buffer full, 2 with the wait map full, 3 whose end was missed, 4 still going on at the end"),
            "{text}"
        );

        let mut text = String::new();
        report(LockInfo {
            kernel: true,
            ..Default::default()
        })
        .to_text(&mut text);
        assert!(!text.contains("lost:"), "no split without a loss: {text}");
    }
}
