//! Signals once the recording has stopped: the first SIGINT, SIGTERM or SIGHUP cuts the
//! outputs short but keeps `recording.pb` (the rest can be regenerated from it with `profiler
//! report`); a second one while symbols are still being resolved, before there is any
//! recording to keep, quits at once. Under `run`, SIGTERM and SIGHUP also go on to the
//! command while it has not been reaped, as they do while recording.
//!
//! Symbolization is synchronous work on the one runtime thread, so tokio's signal streams
//! would not be polled during it: a plain handler that only touches atomics (and, to quit,
//! `write` and `_exit`, which are async-signal-safe) answers at once.
use std::{
    io::{self, Write},
    sync::atomic::{AtomicI32, AtomicU8, AtomicU32, Ordering},
};

static SIGNALS: AtomicU32 = AtomicU32::new(0);
/// `run`'s command while it has not been reaped (0: none), which SIGTERM and SIGHUP go on to.
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);
/// Handlers between reading FORWARD_TO and their kill: the command is reaped only once none
/// is, so a kill never reaches a process that took its pid.
static FORWARDING: AtomicU32 = AtomicU32::new(0);
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);
static PHASE: AtomicU8 = AtomicU8::new(Phase::Recording as u8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// The handler is not installed yet: the recording loop owns the signals.
    Recording = 0,
    /// Resolving symbols: nothing is on disk yet.
    Symbolizing = 1,
    /// Writing outputs.
    Writing = 2,
    /// Every output written (or failed): nothing is left to cut short. `run` then waits for
    /// its command, which still gets SIGTERM and SIGHUP.
    Written = 3,
}

const FIRST: &[u8] = b"\nprofiler: stopping: recording.pb is kept, the other outputs are skipped (signal again to quit at once)\n";
const QUIT: &[u8] =
    b"\nprofiler: quit before recording.pb was written: nothing of this recording was kept\n";

extern "C" fn on_signal(sig: libc::c_int) {
    // Under `run` the command gets SIGTERM and SIGHUP too (a container's stop reaches only
    // the profiler), and they still stop the profiler's own work as for `record`: the
    // command may have exited long ago. Ctrl-C reached the command already (its process
    // group).
    if sig != libc::SIGINT {
        FORWARDING.fetch_add(1, Ordering::SeqCst);
        let child = FORWARD_TO.load(Ordering::SeqCst);
        if child > 0 {
            // SAFETY: kill(2) is async-signal-safe; `forward_to(None)` waits for this
            // handler before the command is reaped, so its pid is still its own.
            unsafe { libc::kill(child, sig) };
        }
        FORWARDING.fetch_sub(1, Ordering::SeqCst);
    }
    let phase = PHASE.load(Ordering::SeqCst);
    if phase == Phase::Written as u8 {
        // Nothing is left to cut short.
        return;
    }
    let n = SIGNALS.fetch_add(1, Ordering::SeqCst).saturating_add(1);
    LAST_SIGNAL.store(sig, Ordering::SeqCst);
    let quit = n >= 2 && phase == Phase::Symbolizing as u8;
    let msg = if quit {
        QUIT
    } else if n == 1 {
        FIRST
    } else {
        return;
    };
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is static.
    unsafe {
        libc::write(libc::STDERR_FILENO, msg.as_ptr().cast(), msg.len());
        if quit {
            libc::_exit(128 + sig);
        }
    }
}

/// Takes SIGINT, SIGTERM and SIGHUP over from the recording loop.
pub fn install(phase: Phase) -> io::Result<()> {
    set_phase(phase);
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: an all-zero sigaction is valid; the handler only uses async-signal-safe
        // calls and atomics. SA_RESTART keeps interrupted reads and writes going.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// `run`: SIGTERM and SIGHUP go on to `pid` (the command) too, until `forward_to(None)`,
/// which must come before the command is reaped: it returns once no handler can still be
/// about to signal that pid.
pub fn forward_to(pid: Option<u32>) {
    let pid = pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    FORWARD_TO.store(pid, Ordering::SeqCst);
    if pid == 0 {
        // A handler that read the old pid has incremented FORWARDING first; one that starts
        // now reads 0. Handlers only make a system call: the wait is microseconds.
        while FORWARDING.load(Ordering::SeqCst) != 0 {
            std::hint::spin_loop();
        }
    }
}

pub fn set_phase(phase: Phase) {
    PHASE.store(phase as u8, Ordering::SeqCst);
}

pub fn stop_requested() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}

/// The signal that asked to stop, if any.
pub fn stop_signal() -> Option<i32> {
    stop_requested().then(|| LAST_SIGNAL.load(Ordering::SeqCst))
}

pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

/// A writer that fails once a stop was asked for, so a long output ends within one buffer.
pub struct StopWriter<'a>(pub &'a mut dyn Write);

impl Write for StopWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if stop_requested() {
            // Not ErrorKind::Interrupted: write_all would retry it.
            return Err(io::Error::other("stopped by a signal"));
        }
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
