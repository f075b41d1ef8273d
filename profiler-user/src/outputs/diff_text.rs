//! `diff.txt`: a comparison of two recordings for people, most telling changes first.
use std::fmt::Write as _;

use crate::{diff::Diff, outputs::summary::fmt_ns};

/// Function rows shown (diff.json has them all).
const FUNCTIONS: usize = 20;
const SPANS: usize = 20;
const NAMES: usize = 10;

fn signed_pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:+.1}%"))
}

fn mark(significant: bool) -> &'static str {
    if significant { "*" } else { " " }
}

fn names(list: &[String]) -> String {
    let mut s = list
        .iter()
        .take(NAMES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > NAMES {
        let _ = write!(s, " and {} more", list.len() - NAMES);
    }
    s
}

pub fn to_text(d: &Diff) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "profiler diff");
    for (label, s) in [("BASE", &d.base), ("NEW ", &d.new)] {
        let _ = writeln!(
            t,
            "  {label} {}: {} — {:.1} s, {} samples at {} Hz, {} spans",
            s.path, s.command, s.duration_s, s.samples, s.frequency_hz, s.spans
        );
    }
    let significant = d.functions.iter().filter(|f| f.significant).count()
        + d.spans.iter().filter(|s| s.significant).count()
        + usize::from(d.cpu.significant);
    let _ = writeln!(
        t,
        "  {significant} significant change(s) (*): beyond {}pp of share, {}% of duration (at least {} us) or CPU, at Holm-adjusted p < {} over {} tests (unchanged code shows any at most {}% of the time)",
        d.margins.share_pp,
        d.margins.duration_pct,
        d.margins.duration_floor_us,
        d.alpha,
        d.tests,
        d.alpha * 100.0
    );
    let _ = writeln!(
        t,
        "\nCPU time: {:.2} s → {:.2} s ({}){} p = {:.2e}",
        d.cpu.base_cpu_s,
        d.cpu.new_cpu_s,
        signed_pct(d.cpu.delta_pct),
        mark(d.cpu.significant),
        d.cpu.p_value
    );

    let _ = writeln!(
        t,
        "\nFunctions: share of samples, BASE → NEW (change in percentage points), change of own CPU time"
    );
    if d.functions.is_empty() {
        let _ = writeln!(t, "  (no samples on either side)");
    } else {
        let _ = writeln!(
            t,
            "  {:<28} {:<28} {:>10} {:>9}  function",
            "self", "total", "self time", "p"
        );
    }
    for f in d.functions.iter().take(FUNCTIONS) {
        let self_col = format!(
            "{:5.1}% → {:5.1}% ({:+.1}){}",
            f.base_self_pct,
            f.new_self_pct,
            f.delta_self_pp,
            mark(f.self_significant)
        );
        let total_col = format!(
            "{:5.1}% → {:5.1}% ({:+.1}){}",
            f.base_total_pct,
            f.new_total_pct,
            f.delta_total_pp,
            mark(f.total_significant)
        );
        let _ = writeln!(
            t,
            "  {self_col:<28} {total_col:<28} {:>+8.1}ms {:>9.2e}  {}",
            f.delta_self_ms, f.p_value, f.name
        );
    }
    if d.functions.len() > FUNCTIONS {
        let _ = writeln!(t, "  … {} more in diff.json", d.functions.len() - FUNCTIONS);
    }

    if !d.spans.is_empty() {
        let _ = writeln!(
            t,
            "\nSpans: complete spans, BASE → NEW (mean and p95 change)"
        );
        for s in d.spans.iter().take(SPANS) {
            let _ = writeln!(
                t,
                " {}{}: {} → {} spans; mean {} → {} ({}); p50 {} → {}; p95 {} → {} ({}); p99 {} → {}; p = {:.2e}",
                mark(s.significant),
                s.name,
                s.base.count,
                s.new.count,
                fmt_ns(s.base.mean_ns),
                fmt_ns(s.new.mean_ns),
                signed_pct(s.delta_mean_pct),
                fmt_ns(s.base.p50_ns as f64),
                fmt_ns(s.new.p50_ns as f64),
                fmt_ns(s.base.p95_ns as f64),
                fmt_ns(s.new.p95_ns as f64),
                signed_pct(s.delta_p95_pct),
                fmt_ns(s.base.p99_ns as f64),
                fmt_ns(s.new.p99_ns as f64),
                s.p_value
            );
            let mut cpu = format!(
                "     per span on CPU {} → {} ({})",
                fmt_ns(s.base.mean_on_cpu_ns),
                fmt_ns(s.new.mean_on_cpu_ns),
                signed_pct(s.delta_on_cpu_pct)
            );
            if let (Some(b), Some(n)) = (s.base.mean_off_cpu_ns, s.new.mean_off_cpu_ns) {
                let _ = write!(
                    cpu,
                    ", off CPU {} → {} ({})",
                    fmt_ns(b),
                    fmt_ns(n),
                    signed_pct(s.delta_off_cpu_pct)
                );
            }
            let _ = writeln!(t, "{cpu}");
        }
    }

    if let Some(off) = &d.off_cpu {
        let _ = writeln!(
            t,
            "\nOff-CPU time: {} → {}; stacks that changed most:",
            fmt_ns(off.base_total_ns as f64),
            fmt_ns(off.new_total_ns as f64)
        );
        for s in &off.stacks {
            let sign = if s.delta_ns < 0 { "-" } else { "+" };
            let _ = writeln!(
                t,
                "  {} → {} ({sign}{}){}  {}",
                fmt_ns(s.base_ns as f64),
                fmt_ns(s.new_ns as f64),
                fmt_ns(s.delta_ns.unsigned_abs() as f64),
                if s.preempted { " preempted" } else { "" },
                s.stack
            );
        }
    }

    for (what, n) in [("Appeared", &d.appeared), ("Vanished", &d.vanished)] {
        if !n.functions.is_empty() {
            let _ = writeln!(
                t,
                "\n{what} functions ({}): {}",
                n.functions.len(),
                names(&n.functions)
            );
        }
        if !n.spans.is_empty() {
            let _ = writeln!(t, "\n{what} spans ({}): {}", n.spans.len(), names(&n.spans));
        }
    }
    for w in &d.warnings {
        let _ = writeln!(t, "\nwarning: {w}");
    }
    t
}
