//! Brendan Gregg's folded stacks: `root;caller;callee count`, one line per distinct stack, the
//! process name as the root frame. Read by flamegraph.pl, inferno, speedscope and others.
use std::{collections::BTreeMap, io};

use crate::{model::Recording, spans::SpanPaths};

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

/// The folded stack (root first) of one sample, without its count.
pub fn stack_line(rec: &Recording, pid: u32, stack: u32) -> String {
    stack_line_in_span(rec, pid, stack, &[])
}

/// The folded stack of a sample taken inside `spans` (root span first): the span path sits
/// between the process and the functions, as `span:NAME` frames.
pub fn stack_line_in_span(rec: &Recording, pid: u32, stack: u32, spans: &[&str]) -> String {
    let mut line = String::new();
    push_sanitized(&mut line, rec.process_name(pid));
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

/// Distinct stacks with their sample counts, sorted by stack for stable output.
pub fn folded_lines(rec: &Recording) -> Vec<(String, u64)> {
    let mut by_stack: BTreeMap<(u32, u32), u64> = BTreeMap::new();
    for s in &rec.samples {
        *by_stack.entry((s.pid, s.stack)).or_default() += 1;
    }
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for ((pid, stack), n) in by_stack {
        *lines.entry(stack_line(rec, pid, stack)).or_default() += n;
    }
    lines.into_iter().collect()
}

/// Like [`folded_lines`], with each sample's span path (`span:request;span:db_query;…`).
pub fn span_folded_lines(rec: &Recording) -> Vec<(String, u64)> {
    let paths = SpanPaths::new(rec);
    let mut by_stack: BTreeMap<(u32, u32, u64), u64> = BTreeMap::new();
    for s in &rec.samples {
        *by_stack.entry((s.pid, s.stack, s.span)).or_default() += 1;
    }
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for ((pid, stack, span), n) in by_stack {
        let path = paths.path(pid, span);
        *lines
            .entry(stack_line_in_span(rec, pid, stack, &path))
            .or_default() += n;
    }
    lines.into_iter().collect()
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

    #[test]
    fn folds_root_first_with_process_name() {
        let rec = sample_recording();
        let mut out = Vec::new();
        write(&folded_lines(&rec), &mut out).expect("write to memory");
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
        let lines = span_folded_lines(&rec);
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
    fn separators_inside_names_are_replaced() {
        let mut rec = sample_recording();
        rec.functions[2].name = "hot_a<[u8; 16]>\nx".into();
        let line = stack_line(&rec, 42, 0);
        assert_eq!(
            line,
            "app;main;compute;hot_a<[u8: 16]> x;inlined_helper_[i]"
        );
    }
}
