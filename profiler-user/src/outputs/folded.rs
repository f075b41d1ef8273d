//! Brendan Gregg's folded stacks: `root;caller;callee count`, one line per distinct stack, the
//! process name as the root frame. Read by flamegraph.pl, inferno, speedscope and others.
use std::{collections::BTreeMap, io};

use crate::{
    model::{FrameKind, Recording},
    spans::SpanPaths,
};

/// `;` separates frames and a newline ends the record; demangled names can hold both (for
/// example `[u8; 16]`), so they are replaced.
fn push_sanitized(out: &mut String, name: &str) {
    for c in name.chars() {
        out.push(match c {
            ';' => ':',
            '\n' | '\r' => ' ',
            c => c,
        });
    }
}

/// What the root frames of each stack name (`--group-by`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// The process name; with several processes, `name [pid]` each.
    #[default]
    Process,
    /// The process, then the thread: `name [tid]`.
    Thread,
    /// One root for everything: the name of the process the recording began on.
    None,
}

fn push_root(line: &mut String, rec: &Recording, group: GroupBy, pid: u32, tid: u32) {
    if group == GroupBy::None {
        push_sanitized(line, &rec.meta().comm);
        return;
    }
    push_sanitized(line, rec.process_name(pid));
    if rec.processes.len() > 1 {
        line.push_str(&format!(" [{pid}]"));
    }
    if group == GroupBy::Thread {
        line.push(';');
        push_sanitized(line, rec.thread_name(tid).unwrap_or("?"));
        line.push_str(&format!(" [{tid}]"));
    }
}

/// The folded stack of a sample taken inside `spans` (root span first): the span path sits
/// between the grouping frames and the functions, as `span:NAME` frames.
pub fn stack_line_in_span(
    rec: &Recording,
    group: GroupBy,
    pid: u32,
    tid: u32,
    stack: u32,
    spans: &[&str],
) -> String {
    let mut line = String::new();
    push_root(&mut line, rec, group, pid, tid);
    for span in spans {
        line.push_str(";span:");
        push_sanitized(&mut line, span);
    }
    for frame in rec.frames(stack).iter().rev() {
        line.push(';');
        push_sanitized(&mut line, &frame.to_string());
    }
    line
}

fn lines(rec: &Recording, group: GroupBy, with_spans: bool) -> Vec<(String, u64)> {
    let paths = with_spans.then(|| SpanPaths::new(rec));
    // Distinct (process, thread, stack, span) first: each is rendered once.
    let mut by_stack: BTreeMap<(u32, u32, u32, u64), u64> = BTreeMap::new();
    for s in &rec.samples {
        let tid = if group == GroupBy::Thread { s.tid } else { 0 };
        let span = if with_spans { s.span } else { 0 };
        *by_stack.entry((s.pid, tid, s.stack, span)).or_default() += 1;
    }
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for ((pid, tid, stack, span), n) in by_stack {
        let path = paths
            .as_ref()
            .map(|p| p.path(pid, span))
            .unwrap_or_default();
        *lines
            .entry(stack_line_in_span(rec, group, pid, tid, stack, &path))
            .or_default() += n;
    }
    lines.into_iter().collect()
}

/// Distinct stacks with their sample counts, sorted by stack for stable output.
pub fn folded_lines(rec: &Recording, group: GroupBy) -> Vec<(String, u64)> {
    lines(rec, group, false)
}

/// Like [`folded_lines`], with each sample's span path (`span:request;span:db_query;…`).
pub fn span_folded_lines(rec: &Recording, group: GroupBy) -> Vec<(String, u64)> {
    lines(rec, group, true)
}

/// Marks where an off-CPU stack leaves the user's code: the frames above it are the
/// kernel's wait. A preempted thread was runnable, waiting for a CPU.
pub const OFF_CPU_FRAME: &str = "[off-cpu]";
pub const PREEMPTED_FRAME: &str = "[preempted]";

/// An off-CPU stack: the user frames, the marker, then the kernel frames.
fn off_cpu_line(rec: &Recording, group: GroupBy, o: &crate::model::OffCpu) -> String {
    let mut line = String::new();
    push_root(&mut line, rec, group, o.pid, o.tid);
    let frames = rec.frames(o.stack);
    let (kernel, user): (Vec<_>, Vec<_>) = frames.iter().partition(|f| f.kind == FrameKind::Kernel);
    for frame in user.iter().rev() {
        line.push(';');
        push_sanitized(&mut line, &frame.to_string());
    }
    line.push(';');
    line.push_str(if o.runnable {
        PREEMPTED_FRAME
    } else {
        OFF_CPU_FRAME
    });
    for frame in kernel.iter().rev() {
        line.push(';');
        push_sanitized(&mut line, &frame.to_string());
    }
    line
}

/// Nanoseconds off CPU per folded line. Entries are per thread: those that render alike
/// (same process, thread when grouped by thread, stack and state) are summed first, so each
/// line is rendered once.
fn off_cpu_ns(rec: &Recording, group: GroupBy) -> BTreeMap<String, u64> {
    let mut by_key: BTreeMap<(u32, u32, u32, bool), (&crate::model::OffCpu, u64)> = BTreeMap::new();
    for o in &rec.off_cpu {
        let tid = if group == GroupBy::Thread { o.tid } else { 0 };
        let e = by_key
            .entry((o.pid, tid, o.stack, o.runnable))
            .or_insert((o, 0));
        e.1 = e.1.saturating_add(o.total_ns);
    }
    let mut ns = BTreeMap::new();
    for (o, total) in by_key.into_values() {
        let n: &mut u64 = ns.entry(off_cpu_line(rec, group, o)).or_default();
        *n = n.saturating_add(total);
    }
    ns
}

/// Lines weighted in nanoseconds → microseconds, dropping what rounds to zero.
fn in_us(ns: BTreeMap<String, u64>) -> Vec<(String, u64)> {
    ns.into_iter()
        .map(|(l, n)| (l, n / 1000))
        .filter(|(_, us)| *us > 0)
        .collect()
}

/// Off-CPU stacks weighted by microseconds off CPU.
pub fn off_cpu_lines(rec: &Recording, group: GroupBy) -> Vec<(String, u64)> {
    in_us(off_cpu_ns(rec, group))
}

/// Wall-clock time in microseconds: CPU samples weighted by the sampling period, beside the
/// off-CPU stacks, so a function's width is its whole elapsed time, computing or waiting.
pub fn wall_lines(rec: &Recording, group: GroupBy) -> Vec<(String, u64)> {
    let period_ns = rec.sample_period_ns();
    let mut ns = off_cpu_ns(rec, group);
    for (line, n) in folded_lines(rec, group) {
        let e = ns.entry(line).or_default();
        *e = e.saturating_add(n.saturating_mul(period_ns));
    }
    in_us(ns)
}

pub fn write(lines: &[(String, u64)], w: &mut dyn io::Write) -> io::Result<()> {
    for (stack, n) in lines {
        writeln!(w, "{stack} {n}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::sample_recording;

    fn with_off_cpu(mut rec: Recording) -> Recording {
        use crate::model::{OffCpu, OffCpuInfo};
        rec.off_cpu = vec![
            // Blocked in the kernel under libstripped.so, 2.5 ms over 3 waits.
            OffCpu {
                pid: 42,
                tid: 42,
                stack: 2,
                span: 0,
                runnable: false,
                total_ns: 2_500_000,
                count: 3,
            },
            // Preempted in hot_b: 40 µs.
            OffCpu {
                pid: 42,
                tid: 42,
                stack: 1,
                span: 0,
                runnable: true,
                total_ns: 40_000,
                count: 1,
            },
        ];
        rec.off_cpu_info = Some(OffCpuInfo::default());
        rec
    }

    #[test]
    fn off_cpu_stacks_put_the_marker_between_user_and_kernel_frames() {
        let rec = with_off_cpu(sample_recording());
        assert_eq!(
            off_cpu_lines(&rec, GroupBy::Process),
            vec![
                ("app;main;compute;hot_b;[preempted]".to_string(), 40),
                (
                    "app;main;libstripped.so+0x1234;[off-cpu];asm_sysvec_apic_timer_interrupt_[k]"
                        .to_string(),
                    2500
                ),
            ]
        );
    }

    #[test]
    fn wall_time_adds_samples_times_period_to_off_cpu_time() {
        let rec = with_off_cpu(sample_recording());
        let wall: std::collections::HashMap<String, u64> =
            wall_lines(&rec, GroupBy::Process).into_iter().collect();
        // 99 Hz: a sample stands for 10101 µs (integer ns period, then µs).
        assert_eq!(wall["app;main;compute;hot_a;inlined_helper_[i]"], 60_606);
        assert_eq!(wall["app;main;compute;hot_b"], 30_303);
        assert_eq!(wall["app;main;compute;hot_b;[preempted]"], 40);
        assert_eq!(
            wall["app;main;libstripped.so+0x1234;[off-cpu];asm_sysvec_apic_timer_interrupt_[k]"],
            2500
        );
        assert_eq!(wall.len(), 5);
    }

    #[test]
    fn folds_root_first_with_process_name() {
        let rec = sample_recording();
        let mut out = Vec::new();
        write(&folded_lines(&rec, GroupBy::Process), &mut out).expect("write to memory");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(
            text,
            "app;main;compute;hot_a;inlined_helper_[i] 6\n\
             app;main;compute;hot_b 3\n\
             app;main;libstripped.so+0x1234;asm_sysvec_apic_timer_interrupt_[k] 1\n"
        );
    }

    #[test]
    fn span_paths_sit_between_process_and_functions() {
        use crate::model::Span;
        let mut rec = sample_recording();
        rec.spans = vec![
            Span {
                id: 1,
                name: "request".into(),
                pid: 42,
                ..Default::default()
            },
            Span {
                id: 2,
                parent: 1,
                name: "db;query".into(),
                pid: 42,
                ..Default::default()
            },
        ];
        rec.samples[0].span = 2;
        rec.samples[6].span = 1;
        let lines = span_folded_lines(&rec, GroupBy::Process);
        let find = |prefix: &str| {
            lines
                .iter()
                .filter(|(l, _)| l.starts_with(prefix))
                .map(|(_, n)| n)
                .sum::<u64>()
        };
        assert_eq!(find("app;span:request;span:db:query;main;compute;hot_a"), 1);
        assert_eq!(find("app;span:request;main;compute;hot_b"), 1);
        assert_eq!(find("app;main;"), 8);
        assert_eq!(lines.iter().map(|(_, n)| n).sum::<u64>(), 10);
    }

    #[test]
    fn group_by_thread_and_none_and_several_processes() {
        let mut rec = sample_recording();
        rec.samples[9].tid = 43;
        rec.threads.push(crate::model::Thread {
            tid: 43,
            pid: 42,
            name: "worker".into(),
        });
        let roots = |lines: Vec<(String, u64)>| -> Vec<String> {
            let mut r: Vec<String> = lines
                .iter()
                .map(|(l, _)| l.split(';').take(2).collect::<Vec<_>>().join(";"))
                .collect();
            r.dedup();
            r
        };
        let t = roots(folded_lines(&rec, GroupBy::Thread));
        assert!(t.contains(&"app;app [42]".to_string()), "{t:?}");
        assert!(t.contains(&"app;worker [43]".to_string()), "{t:?}");
        // A second process: roots name each process with its pid.
        rec.processes.push(crate::model::Process {
            pid: 77,
            comm: "child".into(),
            ..Default::default()
        });
        rec.samples[0].pid = 77;
        let p = folded_lines(&rec, GroupBy::Process);
        assert!(p.iter().any(|(l, _)| l.starts_with("child [77];main")));
        assert!(p.iter().any(|(l, _)| l.starts_with("app [42];main")));
        let n = folded_lines(&rec, GroupBy::None);
        assert!(n.iter().all(|(l, _)| l.starts_with("app;main")), "{n:?}");
        assert_eq!(n.iter().map(|(_, c)| c).sum::<u64>(), 10);
    }

    #[test]
    fn separators_inside_names_are_replaced() {
        let mut rec = sample_recording();
        rec.functions[2].name = "hot_a<[u8; 16]>\nx".into();
        let line = stack_line_in_span(&rec, GroupBy::Process, 42, 0, 0, &[]);
        assert_eq!(
            line,
            "app;main;compute;hot_a<[u8: 16]> x;inlined_helper_[i]"
        );
    }
}
