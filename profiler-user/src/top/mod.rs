//! `profiler top`: a live view of where the targets spend their CPU, redrawn every second,
//! like `perf top`. The recording is cut into one-second windows (`collect::window`, as the
//! agent cuts its periods); each is reduced to counts (`model`) and the screen shows the
//! sums of the last `--window` seconds (`render`), in raw terminal mode (`terminal`).
pub mod model;
pub mod render;
pub mod terminal;

use std::{sync::Arc, time::Duration};

use clap::Args;
use tokio::{
    io::{Interest, unix::AsyncFd},
    signal::unix::{SignalKind, signal},
};

use crate::{
    collect::{
        self, CallGraph, RecordOptions,
        spans::{SpanFn, SpansMode},
        window,
    },
    error::{Error, Result},
};

/// One window per second: the screen's refresh.
const PERIOD: Duration = Duration::from_secs(1);
/// The first window is cut this soon after the attach, so the screen fills at once; a
/// third of a second at 99 Hz is some 30 samples per busy thread, enough to name the top.
const FIRST: Duration = Duration::from_millis(300);

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub scope: crate::cli::ScopeArgs,
    /// Also profile every process the target starts from now on (followed in the kernel).
    #[arg(long)]
    pub follow_children: bool,
    /// The sliding window shown: the last this many seconds (`10`, `5s`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_window, value_name = "DURATION")]
    pub window: Duration,
    /// Samples per second per CPU.
    #[arg(long, short = 'F', default_value_t = 99, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub frequency: u64,
    /// Trace the span probe ABI (profiler-probes) when the targets have it.
    #[arg(long, value_enum, default_value_t = SpansMode::Auto)]
    pub spans: SpansMode,
    /// Make every call of a function a span: SYMBOL in the main executable, or
    /// BINARY:SYMBOL in a library (repeatable).
    #[arg(long = "span-fn", value_name = "[BINARY:]SYMBOL")]
    pub span_fns: Vec<SpanFn>,
    /// How user stacks are walked (see `profiler record --help`).
    #[arg(long, value_enum, default_value_t = CallGraph::Auto)]
    pub call_graph: CallGraph,
    /// Keep kernel threads and the idle task in the view.
    #[arg(long)]
    pub kernel_threads: bool,
}

fn parse_window(s: &str) -> std::result::Result<Duration, String> {
    let d = crate::cli::parse_duration(s)?;
    if d < PERIOD {
        return Err(format!(
            "`{s}`: at least 1s (the screen shows whole seconds)"
        ));
    }
    if d > Duration::from_secs(3600) {
        return Err(format!("`{s}`: at most 1h"));
    }
    Ok(d)
}

/// Whom the screen is about, in a few words.
fn describe(target: &collect::Target, scope: &collect::scope::Scope) -> String {
    use collect::scope::Scope;
    match scope {
        Scope::Pids(p) if p.len() > 1 => format!("pids {}", scope.name()),
        Scope::Pids(_) => format!("pid {} ({})", target.info.pid, target.info.comm),
        Scope::All => "every process".into(),
        Scope::Cgroup(c) => format!("cgroup {}", c.relative),
        Scope::Comm(c) => format!("processes named /{}/", c.pattern),
    }
}

/// Runs the live view until `q`, Ctrl-C, SIGTERM, SIGHUP or the targets' exit; the probes
/// are detached and the terminal restored on every one of them.
pub async fn run(
    target: collect::Target,
    scope: collect::scope::Scope,
    args: TopArgs,
) -> Result<()> {
    // Before the terminal turns raw: from here a Ctrl-C is caught (and ends the recording,
    // which registers the same signals) instead of killing the profiler with the terminal
    // left raw.
    let sig = |kind, what: &'static str| signal(kind).map_err(|e| Error::io(what, e));
    let _held = (
        sig(SignalKind::interrupt(), "SIGINT handler")?,
        sig(SignalKind::terminate(), "SIGTERM handler")?,
        sig(SignalKind::hangup(), "SIGHUP handler")?,
    );
    let mut resized = sig(SignalKind::window_change(), "SIGWINCH handler")?;
    let title = describe(&target, &scope);
    let window_s = args.window.as_secs();
    let mut term = terminal::Terminal::enter()?;
    // SAFETY: fd 0 is open (a terminal, checked by `enter`) and stays so until exit.
    let keys = unsafe { AsyncFd::register_with_interest(terminal::Stdin, Interest::READABLE) }
        .map_err(|e| Error::io("polling the terminal for keys", e.into_parts().1))?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = Arc::new(tokio::sync::Notify::new());
    let opts = RecordOptions {
        duration: None,
        frequency_hz: args.frequency,
        ring_buffer_bytes: profiler_common::defaults::EVENTS_BYTES,
        stack_map_entries: profiler_common::defaults::STACK_ENTRIES,
        spans: args.spans,
        span_fns: args.span_fns.clone(),
        follow_children: args.follow_children,
        scope,
        forward_signals_to: None,
        wakeup_bytes: None,
        call_graph: args.call_graph,
        stack_bytes: crate::cli::DEFAULT_STACK_BYTES,
        off_cpu: None,
        hold_before_attach: None,
        stall_consumer: None,
        hold_after_drain: None,
        hold_before_detach: None,
        stop: Some(stop.clone()),
        alloc: None,
        locks: false,
        window: Some(window::WindowOptions {
            period: PERIOD,
            tx,
            first: Some(FIRST),
        }),
        signals_after_stop: false,
    };
    // Owns the window sender: the channel closes, and the screen loop ends, once the
    // recording is over and its probes detached.
    let recording = async move {
        let raw = collect::record(target, &opts, |_| {}, || Ok(())).await;
        drop(opts);
        raw
    };
    let keep = usize::try_from(window_s).unwrap_or(usize::MAX);
    let screen = async {
        let mut sliding = model::Sliding::new(keep);
        let mut ui = render::Ui::default();
        let mut snap: Option<model::Snapshot> = None;
        let mut keys_ok = true;
        loop {
            let (width, height) = term.size();
            let message = term.message().map(str::to_string);
            let lines = render::render(
                snap.as_ref(),
                &ui,
                &render::Frame {
                    scope: &title,
                    window_s,
                    message: message.as_deref(),
                    width,
                    height,
                },
            );
            term.draw(&lines);
            tokio::select! {
                w = rx.recv() => match w {
                    Some(rec) => {
                        sliding.push(model::WindowStats::from_recording(&rec, args.kernel_threads));
                        snap = Some(sliding.snapshot());
                    }
                    None => break,
                },
                guard = keys.readable(), if keys_ok => {
                    let Ok(mut guard) = guard else {
                        // No keys any more: `q` cannot come, so the view ends as if it had.
                        keys_ok = false;
                        stop.notify_one();
                        continue;
                    };
                    let Some(pressed) = term.keys() else {
                        // The terminal is gone (hangup): nobody is left to press `q`.
                        keys_ok = false;
                        stop.notify_one();
                        continue;
                    };
                    guard.clear_ready();
                    for k in pressed {
                        if ui.key(k) == render::Action::Quit {
                            // The recording stops, detaches and closes the channel.
                            stop.notify_one();
                        }
                    }
                }
                _ = resized.recv() => {}
            }
        }
    };
    let (raw, ()) = tokio::join!(recording, screen);
    // The screen is given back before anything is said on stderr.
    drop(term);
    let raw = raw?;
    use std::io::Write;
    let mut err = std::io::stderr();
    for w in &raw.warnings {
        let _ = writeln!(err, "profiler: warning: {w}");
    }
    if matches!(
        raw.stop_reason,
        collect::StopReason::TargetExited | collect::StopReason::Error
    ) {
        let _ = writeln!(err, "profiler: top stopped: {}", raw.stop_reason);
    }
    Ok(())
}
