//! The screen as text: a pure function of the snapshot, the view state and the terminal's
//! size, so what people see is unit-tested without a terminal. ASCII only outside the
//! names themselves: a terminal without a UTF-8 locale draws anything else as garbage.
use super::model::{FunctionRow, Snapshot};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    #[default]
    Functions,
    Spans,
    Threads,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    SelfTime,
    Total,
}

/// What the keys change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ui {
    pub view: View,
    pub sort: Sort,
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Redraw,
    Quit,
    Ignore,
}

impl Ui {
    pub fn key(&mut self, key: u8) -> Action {
        match key {
            b'q' | b'Q' => return Action::Quit,
            b'1' | b'f' => self.view = View::Functions,
            b'2' | b'p' => self.view = View::Spans,
            b'3' | b'h' => self.view = View::Threads,
            b'\t' | b'v' => {
                self.view = match self.view {
                    View::Functions => View::Spans,
                    View::Spans => View::Threads,
                    View::Threads => View::Functions,
                }
            }
            b's' => self.sort = Sort::SelfTime,
            b't' => self.sort = Sort::Total,
            _ => return Action::Ignore,
        }
        Action::Redraw
    }
}

/// Everything drawn around the table.
pub struct Frame<'a> {
    /// Whom: `pid 1234 (app)`, `every process`, ...
    pub scope: &'a str,
    /// The sliding window's length, in seconds.
    pub window_s: u64,
    /// The last message the profiler printed (span probes placed, warnings), if any.
    pub message: Option<&'a str>,
    pub width: usize,
    pub height: usize,
}

/// `812.4ms`, `3.20s`, `950us`: as the summary writes durations, in ASCII.
fn duration(ns: u64) -> String {
    let ns = ns as f64;
    if ns >= 1e9 {
        format!("{:.2}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.1}ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1}us", ns / 1e3)
    } else {
        format!("{ns:.0}ns")
    }
}

fn percent(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 * 100.0 / of as f64
    }
}

/// Cuts a line to the screen's width (in characters; names are rarely wide).
fn fit(mut line: String, width: usize) -> String {
    if let Some((i, _)) = line.char_indices().nth(width) {
        line.truncate(i);
    }
    line
}

/// The screen's lines, at most `height`, none longer than `width`.
pub fn render(snap: Option<&Snapshot>, ui: &Ui, f: &Frame) -> Vec<String> {
    let mut lines = Vec::new();
    let tab = |v: View, label: &str| {
        if ui.view == v {
            format!("[{label}]")
        } else {
            format!(" {label} ")
        }
    };
    let mut keys = format!(
        "{} {} {}   ",
        tab(View::Functions, "1 functions"),
        tab(View::Spans, "2 spans"),
        tab(View::Threads, "3 threads")
    );
    if ui.view == View::Functions {
        keys += match ui.sort {
            Sort::SelfTime => "sort: [s self]  t total   ",
            Sort::Total => "sort:  s self  [t total]  ",
        };
    }
    keys += "q quit";
    let Some(snap) = snap else {
        lines.push(format!("profiler top - {}", f.scope));
        lines.push(keys);
        lines.push(String::new());
        lines.push("collecting the first second of samples...".into());
        return finish(lines, f);
    };
    let secs = snap.duration_ns as f64 / 1e9;
    let threads = snap.threads.len();
    lines.push(format!(
        "profiler top - {} - {} Hz - last {:.1} s of {} s: {} samples, {} lost ({} since start) - {} process{}, {} thread{} on CPU",
        f.scope,
        snap.frequency_hz,
        secs,
        f.window_s,
        snap.samples,
        snap.lost,
        snap.lost_since_start,
        snap.processes,
        if snap.processes == 1 { "" } else { "es" },
        threads,
        if threads == 1 { "" } else { "s" },
    ));
    lines.push(keys);
    lines.push(String::new());
    // The table's header and rows, above the message line.
    let room = f.height.saturating_sub(lines.len() + 1);
    match ui.view {
        View::Functions => functions(snap, ui.sort, room, &mut lines),
        View::Spans => spans(snap, room, &mut lines),
        View::Threads => threads_table(snap, room, &mut lines),
    }
    finish(lines, f)
}

fn finish(mut lines: Vec<String>, f: &Frame) -> Vec<String> {
    if let Some(m) = f.message {
        lines.truncate(f.height.saturating_sub(1));
        while lines.len() + 1 < f.height {
            lines.push(String::new());
        }
        lines.push(m.to_string());
    }
    lines.truncate(f.height);
    lines.into_iter().map(|l| fit(l, f.width)).collect()
}

fn functions(snap: &Snapshot, sort: Sort, room: usize, lines: &mut Vec<String>) {
    let mut rows: Vec<&FunctionRow> = snap.functions.iter().collect();
    let key = |r: &FunctionRow| match sort {
        Sort::SelfTime => (r.self_samples, r.total_samples),
        Sort::Total => (r.total_samples, r.self_samples),
    };
    rows.sort_by(|a, b| key(b).cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
    let (s, t) = match sort {
        Sort::SelfTime => ("*SELF", "TOTAL"),
        Sort::Total => ("SELF", "*TOTAL"),
    };
    // The file before the name: names run long (C++, Rust generics) and are cut at the
    // screen's edge, so they go last.
    lines.push(format!(
        "{s:>7} {t:>7} {:>8}  {:<20} FUNCTION",
        "SAMPLES", "MODULE"
    ));
    if rows.is_empty() {
        lines.push("  no samples in the window: the targets did not run".into());
        return;
    }
    for r in rows.into_iter().take(room.saturating_sub(1)) {
        let n = match sort {
            Sort::SelfTime => r.self_samples,
            Sort::Total => r.total_samples,
        };
        let module = if r.module.is_empty() {
            "?".to_string()
        } else {
            fit(r.module.clone(), 20)
        };
        lines.push(format!(
            "{:>6.1}% {:>6.1}% {:>8}  {module:<20} {}",
            percent(r.self_samples, snap.samples),
            percent(r.total_samples, snap.samples),
            n,
            r.name,
        ));
    }
}

fn spans(snap: &Snapshot, room: usize, lines: &mut Vec<String>) {
    lines.push(format!(
        "{:>8} {:>8} {:>10} {:>10} {:>10} {:>6}  NAME",
        "COUNT", "RATE/s", "P50", "P95", "MAX", "CPU%"
    ));
    if snap.spans.is_empty() {
        lines.push(
            "  no spans in the window: the targets carry no span probes (profiler-probes), or use --span-fn FUNCTION"
                .into(),
        );
        return;
    }
    let secs = snap.duration_ns as f64 / 1e9;
    for r in snap.spans.iter().take(room.saturating_sub(1)) {
        let rate = if secs > 0.0 {
            r.count as f64 / secs
        } else {
            0.0
        };
        let d = |ns: u64| {
            if r.count == 0 {
                "-".to_string()
            } else {
                duration(ns)
            }
        };
        lines.push(format!(
            "{:>8} {:>8.1} {:>10} {:>10} {:>10} {:>5.1}%  {}",
            r.count,
            rate,
            d(r.p50_ns),
            d(r.p95_ns),
            d(r.max_ns),
            percent(r.samples, snap.samples),
            r.name
        ));
    }
}

fn threads_table(snap: &Snapshot, room: usize, lines: &mut Vec<String>) {
    lines.push(format!(
        "{:>8} {:>8} {:>6} {:>8}  {:<16} {:<16} TOP FUNCTION (SELF)",
        "PID", "TID", "CPU%", "SAMPLES", "PROCESS", "THREAD"
    ));
    if snap.threads.is_empty() {
        lines.push("  no thread ran in the window".into());
        return;
    }
    // Samples against what one CPU busy the whole window would give: 100% is one core.
    let expected = snap.duration_ns as f64 / 1e9 * snap.frequency_hz as f64;
    for t in snap.threads.iter().take(room.saturating_sub(1)) {
        let cpu = if expected > 0.0 {
            t.samples as f64 * 100.0 / expected
        } else {
            0.0
        };
        lines.push(format!(
            "{:>8} {:>8} {:>5.1}% {:>8}  {:<16} {:<16} {}",
            t.pid, t.tid, cpu, t.samples, t.process, t.name, t.top_function
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::top::model::{SpanRow, ThreadRow};

    fn snap() -> Snapshot {
        let f = |name: &str, s, t| FunctionRow {
            name: name.into(),
            module: "app".into(),
            self_samples: s,
            total_samples: t,
        };
        Snapshot {
            duration_ns: 10_000_000_000,
            frequency_hz: 99,
            samples: 1000,
            lost: 3,
            lost_since_start: 5,
            processes: 1,
            functions: vec![
                f("main", 0, 1000),
                f("hot_a", 700, 700),
                f("hot_b", 300, 300),
            ],
            threads: vec![ThreadRow {
                tid: 43,
                pid: 42,
                process: "app".into(),
                name: "worker".into(),
                samples: 990,
                top_function: "hot_a".into(),
            }],
            spans: vec![SpanRow {
                name: "request".into(),
                count: 50,
                total_ns: 500_000_000,
                p50_ns: 9_000_000,
                p95_ns: 12_500_000,
                max_ns: 20_000_000,
                samples: 400,
            }],
        }
    }

    fn frame() -> Frame<'static> {
        Frame {
            scope: "pid 42 (app)",
            window_s: 10,
            message: None,
            width: 160,
            height: 50,
        }
    }

    #[test]
    fn functions_by_self_then_by_total() {
        let s = snap();
        let mut ui = Ui::default();
        let lines = render(Some(&s), &ui, &frame());
        assert!(lines[0].contains("pid 42 (app)"), "{lines:?}");
        assert!(lines[0].contains("1000 samples, 3 lost (5 since start)"));
        assert!(lines[0].contains("last 10.0 s of 10 s"));
        assert!(lines[1].contains("[s self]"));
        assert!(lines[3].contains("*SELF"));
        assert_eq!(
            lines[4],
            "  70.0%   70.0%      700  app                  hot_a"
        );
        assert!(lines[5].contains("hot_b"));
        assert_eq!(ui.key(b't'), Action::Redraw);
        let lines = render(Some(&s), &ui, &frame());
        assert!(lines[1].contains("[t total]"));
        assert!(lines[3].contains("*TOTAL"));
        assert_eq!(
            lines[4],
            "   0.0%  100.0%     1000  app                  main"
        );
        assert!(lines[5].contains("hot_a"));
    }

    #[test]
    fn views_switch_by_number_and_tab_and_q_quits() {
        let s = snap();
        let mut ui = Ui::default();
        ui.key(b'2');
        let lines = render(Some(&s), &ui, &frame());
        assert!(lines[1].contains("[2 spans]"));
        assert!(lines[3].contains("P95"), "{lines:?}");
        let cols: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(cols[2..5], ["9.0ms", "12.5ms", "20.0ms"], "{lines:?}");
        assert!(
            lines[4].trim_start().starts_with("50      5.0"),
            "{lines:?}"
        );
        assert!(lines[4].contains("40.0%  request"));
        ui.key(b'\t');
        let lines = render(Some(&s), &ui, &frame());
        assert!(lines[1].contains("[3 threads]"));
        // 990 samples in 10 s at 99 Hz: one CPU, all the time.
        assert!(lines[4].contains("100.0%"), "{lines:?}");
        assert!(lines[4].contains("worker") && lines[4].ends_with("hot_a"));
        ui.key(b'\t');
        assert_eq!(ui.view, View::Functions);
        assert_eq!(ui.key(b'x'), Action::Ignore);
        assert_eq!(ui.key(b'q'), Action::Quit);
    }

    #[test]
    fn the_screen_fits_the_terminal_and_keeps_the_last_message() {
        let s = snap();
        let ui = Ui::default();
        let small = Frame {
            width: 52,
            height: 6,
            message: Some("profiler: --span-fn hot_b in /usr/bin/app"),
            ..frame()
        };
        let lines = render(Some(&s), &ui, &small);
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert!(lines.iter().all(|l| l.chars().count() <= 52), "{lines:?}");
        assert!(lines[5].starts_with("profiler: --span-fn"));
        assert!(
            lines[4].contains("hot_a"),
            "rows up to the message: {lines:?}"
        );
        let waiting = render(None, &ui, &frame());
        assert!(waiting[3].contains("collecting"));
    }

    #[test]
    fn empty_views_say_why() {
        let empty = Snapshot::default();
        let mut ui = Ui::default();
        assert!(render(Some(&empty), &ui, &frame())[4].contains("no samples"));
        ui.key(b'2');
        assert!(render(Some(&empty), &ui, &frame())[4].contains("--span-fn"));
        ui.key(b'3');
        assert!(render(Some(&empty), &ui, &frame())[4].contains("no thread"));
    }
}
