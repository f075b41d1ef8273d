//! Brendan Gregg's folded stacks: `root;caller;callee count`, one line per distinct stack,
//! the process name (or what `--group-by` asks for) as the root frame. Read by flamegraph.pl, inferno, speedscope and others.
use std::{collections::BTreeMap, io};

use crate::{
    model::{CURRENT, FrameKind, Generation, ProcessIndex, Recording},
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
    /// The process name: processes that share it (a `make -j` of `cc1`s, a pool of
    /// workers) share one root, which is what a machine-wide profile wants to compare.
    #[default]
    Comm,
    /// Each process on its own: `name [pid]`.
    Process,
    /// The process (`name [pid]`), then the thread: `name [tid]`.
    Thread,
    /// No grouping frame: stacks start at their outermost function, so the same code run
    /// by different processes merges.
    None,
}

/// Writes the grouping frames of a stack; returns whether it wrote any, so the caller knows
/// whether the next frame needs a separator.
fn push_root(
    line: &mut String,
    rec: &Recording,
    group: GroupBy,
    (pid, generation): (u32, Generation),
    tid: u32,
) -> bool {
    match group {
        GroupBy::None => return false,
        GroupBy::Comm => push_sanitized(line, rec.process_name_in(pid, generation)),
        GroupBy::Process | GroupBy::Thread => {
            push_sanitized(line, rec.process_name_in(pid, generation));
            line.push_str(&format!(" [{pid}]"));
        }
    }
    if group == GroupBy::Thread {
        line.push(';');
        push_sanitized(line, rec.thread_name(tid).unwrap_or("?"));
        line.push_str(&format!(" [{tid}]"));
    }
    true
}

/// Appends one frame, with a separator unless it is the first.
fn push_frame(line: &mut String, name: &str) {
    if !line.is_empty() {
        line.push(';');
    }
    push_sanitized(line, name);
}

/// A stack with no frame and no grouping frame still needs a name: an empty line is not a
/// folded record.
const NO_STACK: &str = "[no stack]";

/// The folded stack of a sample taken inside `spans` (root span first): the span path sits
/// between the grouping frames and the functions, as `span:NAME` frames.
pub fn stack_line_in_span(
    rec: &Recording,
    group: GroupBy,
    process: (u32, Generation),
    tid: u32,
    stack: u32,
    spans: &[&str],
) -> String {
    let mut line = String::new();
    push_root(&mut line, rec, group, process, tid);
    for span in spans {
        push_frame(&mut line, &format!("span:{span}"));
    }
    for frame in rec.frames(stack).iter().rev() {
        push_frame(&mut line, &frame.to_string());
    }
    if line.is_empty() {
        line.push_str(NO_STACK);
    }
    line
}

fn lines(rec: &Recording, group: GroupBy, with_spans: bool) -> Vec<(String, u64)> {
    let paths = with_spans.then(|| SpanPaths::new(rec));
    let index = ProcessIndex::new(rec);
    // Distinct (process and its name then, thread, stack, span) first: each is rendered once.
    let mut by_stack: BTreeMap<((u32, Generation), u32, u32, u64), u64> = BTreeMap::new();
    for s in &rec.samples {
        let tid = if group == GroupBy::Thread { s.tid } else { 0 };
        let span = if with_spans { s.span } else { 0 };
        let process = (s.pid, index.generation(s.pid, s.timestamp_ns));
        *by_stack.entry((process, tid, s.stack, span)).or_default() += 1;
    }
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for ((process, tid, stack, span), n) in by_stack {
        let path = paths
            .as_ref()
            .map(|p| p.path(process.0, span))
            .unwrap_or_default();
        *lines
            .entry(stack_line_in_span(rec, group, process, tid, stack, &path))
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
    // Summed in the kernel without times: named by the process's current name.
    push_root(&mut line, rec, group, (o.pid, CURRENT), o.tid);
    let frames = rec.frames(o.stack);
    let (kernel, user): (Vec<_>, Vec<_>) = frames.iter().partition(|f| f.kind == FrameKind::Kernel);
    for frame in user.iter().rev() {
        push_frame(&mut line, &frame.to_string());
    }
    push_frame(
        &mut line,
        if o.runnable {
            PREEMPTED_FRAME
        } else {
            OFF_CPU_FRAME
        },
    );
    for frame in kernel.iter().rev() {
        push_frame(&mut line, &frame.to_string());
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
            off_cpu_lines(&rec, GroupBy::Comm),
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
            wall_lines(&rec, GroupBy::Comm).into_iter().collect();
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
        write(&folded_lines(&rec, GroupBy::Comm), &mut out).expect("write to memory");
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
        let lines = span_folded_lines(&rec, GroupBy::Comm);
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
        assert!(t.contains(&"app [42];app [42]".to_string()), "{t:?}");
        assert!(t.contains(&"app [42];worker [43]".to_string()), "{t:?}");
        // Two more processes, two of the three sharing a name.
        for (pid, comm) in [(77, "child"), (78, "app")] {
            rec.processes.push(crate::model::Process {
                pid,
                comm: comm.into(),
                ..Default::default()
            });
        }
        rec.samples[0].pid = 77;
        rec.samples[1].pid = 78;
        rec.samples[2].pid = 78;
        let by_root = |lines: &[(String, u64)]| {
            let mut m: BTreeMap<String, u64> = BTreeMap::new();
            for (l, n) in lines {
                *m.entry(l.split(';').next().unwrap_or("").to_string())
                    .or_default() += n;
            }
            m.into_iter().collect::<Vec<_>>()
        };
        // Default: one root per name, the two `app` processes merged.
        let c = folded_lines(&rec, GroupBy::Comm);
        assert_eq!(
            by_root(&c),
            [("app".to_string(), 9), ("child".to_string(), 1)]
        );
        let p = folded_lines(&rec, GroupBy::Process);
        assert_eq!(
            by_root(&p),
            [
                ("app [42]".to_string(), 7),
                ("app [78]".to_string(), 2),
                ("child [77]".to_string(), 1)
            ]
        );
        assert!(p.iter().any(|(l, _)| l.starts_with("child [77];main")));
        // No grouping frame: stacks start at their outermost function and merge across
        // processes.
        let n = folded_lines(&rec, GroupBy::None);
        assert!(n.iter().all(|(l, _)| l.starts_with("main;")), "{n:?}");
        assert_eq!(
            n.iter()
                .find(|(l, _)| l == "main;compute;hot_a;inlined_helper_[i]")
                .map(|(_, c)| *c),
            Some(6)
        );
        assert_eq!(n.iter().map(|(_, c)| c).sum::<u64>(), 10);
    }

    #[test]
    fn samples_before_an_exec_carry_the_name_the_process_had_then() {
        let mut rec = sample_recording();
        // The forked shell was `sh` until it exec'd `app` between the 3rd and 4th samples
        // (10 ms apart from 1 s on), and `app` ran `env` before that: two names before.
        let app = rec
            .processes
            .iter_mut()
            .find(|p| p.pid == 42)
            .expect("pid 42");
        app.names_before = vec![
            crate::model::NameBefore {
                until_ns: 1_000_000_000,
                comm: "env".into(),
            },
            crate::model::NameBefore {
                until_ns: 1_025_000_000,
                comm: "sh".into(),
            },
        ];
        let roots = |lines: Vec<(String, u64)>| {
            let mut m: BTreeMap<String, u64> = BTreeMap::new();
            for (l, n) in lines {
                *m.entry(l.split(';').next().unwrap_or("").to_string())
                    .or_default() += n;
            }
            m.into_iter().collect::<Vec<_>>()
        };
        // The first sample is at the first exec itself: the new program's.
        assert_eq!(
            roots(folded_lines(&rec, GroupBy::Process)),
            [("app [42]".to_string(), 7), ("sh [42]".to_string(), 3)]
        );
        assert_eq!(rec.process_name(42), "app");
        let pprof = crate::outputs::pprof::cpu_profile(&rec);
        let names: Vec<&str> = pprof
            .sample
            .iter()
            .flat_map(|s| &s.label)
            .filter(|l| {
                pprof.string_table.get(l.key as usize).map(String::as_str) == Some("process")
            })
            .filter_map(|l| pprof.string_table.get(l.str as usize).map(String::as_str))
            .collect();
        assert!(names.contains(&"sh") && names.contains(&"app"), "{names:?}");
    }

    #[test]
    fn a_stack_without_frames_and_without_root_is_still_a_record() {
        let mut rec = sample_recording();
        rec.stacks.push(crate::model::Stack::default());
        rec.samples[0].stack = 3;
        let n = folded_lines(&rec, GroupBy::None);
        assert!(n.contains(&("[no stack]".to_string(), 1)), "{n:?}");
        assert!(n.iter().all(|(l, _)| !l.is_empty() && !l.starts_with(';')));
        let rec = with_off_cpu(sample_recording());
        let off = off_cpu_lines(&rec, GroupBy::None);
        assert!(
            off.contains(&("main;compute;hot_b;[preempted]".to_string(), 40)),
            "{off:?}"
        );
    }

    #[test]
    fn separators_inside_names_are_replaced() {
        let mut rec = sample_recording();
        rec.functions[2].name = "hot_a<[u8; 16]>\nx".into();
        let line = stack_line_in_span(&rec, GroupBy::Comm, (42, CURRENT), 0, 0, &[]);
        assert_eq!(
            line,
            "app;main;compute;hot_a<[u8: 16]> x;inlined_helper_[i]"
        );
    }
}
