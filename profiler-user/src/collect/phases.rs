//! Start-up phase times, printed to stderr when `PROFILER_STARTUP_TIMES` is set: where the
//! time from the command's start to "recording" goes (issue 17), to find what to cut and to
//! check a change on the user's own machine. Each mark is one clock read when unset.
use std::{io::Write, sync::OnceLock, time::Instant};

struct Clock {
    first: Instant,
    last: std::sync::Mutex<Instant>,
}

fn clock() -> Option<&'static Clock> {
    static CLOCK: OnceLock<Option<Clock>> = OnceLock::new();
    CLOCK
        .get_or_init(|| {
            std::env::var_os("PROFILER_STARTUP_TIMES").map(|_| {
                let now = Instant::now();
                Clock {
                    first: now,
                    last: std::sync::Mutex::new(now),
                }
            })
        })
        .as_ref()
}

/// Ends the phase `name`: prints its length and the time since the first mark, and the
/// CLOCK_MONOTONIC time (ns) so a wrapper can line it up with the command's exec.
pub fn mark(name: &str) {
    let Some(c) = clock() else { return };
    let now = Instant::now();
    let since = {
        let mut last = c.last.lock().unwrap_or_else(|p| p.into_inner());
        let d = now.saturating_duration_since(*last);
        *last = now;
        d
    };
    let total = now.saturating_duration_since(c.first);
    let _ = writeln!(
        std::io::stderr(),
        "profiler: startup {:>7.2} ms {:>7.2} ms mono {} {name}",
        since.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3,
        super::clock_ns(libc::CLOCK_MONOTONIC),
    );
}

/// A figure about the phase just ended (the verifier's work on a program), printed under it.
pub fn detail(what: impl FnOnce() -> String) {
    if clock().is_none() {
        return;
    }
    let _ = writeln!(std::io::stderr(), "profiler: startup   {}", what());
}
