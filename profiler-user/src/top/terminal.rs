//! The terminal while `top` runs: raw keys (termios by hand), the alternate screen, and the
//! profiler's own stderr kept off the screen. [`Terminal`] puts everything back when it is
//! dropped, on every way out: `q`, a signal ending the recording, an error, a panic.
use std::{
    fs::File,
    io::{IsTerminal, Write},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::fs::FileExt,
    },
};

use crate::error::{Error, Result};

/// Standard input, for polling; never closed by us.
pub struct Stdin;

impl AsRawFd for Stdin {
    fn as_raw_fd(&self) -> RawFd {
        libc::STDIN_FILENO
    }
}

/// What the profiler writes on stderr while the screen is ours: in a memory file, shown
/// after the screen is given back (and the newest line on the screen meanwhile).
struct Captured {
    file: File,
    /// The terminal's stderr, put back at the end.
    saved: OwnedFd,
    read_to: u64,
    last: Option<String>,
}

pub struct Terminal {
    saved: libc::termios,
    captured: Option<Captured>,
}

fn os_err(what: &str) -> Error {
    Error::io(what.to_string(), std::io::Error::last_os_error())
}

/// A terminal on standard input and output, or the error saying what to do instead.
pub fn require() -> Result<()> {
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        return Ok(());
    }
    Err(Error::Startup(
        "profiler top needs a terminal on standard input and output; without one, `profiler record` writes a profile instead".into(),
    ))
}

impl Terminal {
    /// Raw keys on standard input, the alternate screen on standard output.
    pub fn enter() -> Result<Self> {
        require()?;
        // SAFETY: termios is plain data; tcgetattr fills it in or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 is a terminal (checked above), `saved` a valid out-pointer.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return Err(os_err("reading the terminal's settings"));
        }
        let mut raw = saved;
        // Keys one by one, unechoed. ISIG stays: Ctrl-C is a SIGINT, which ends the
        // recording like everywhere else in the profiler; suspend and quit are switched
        // off, since a stopped or dumped `top` would leave the terminal raw.
        raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::IEXTEN);
        raw.c_iflag &= !(libc::IXON | libc::ICRNL);
        raw.c_cc[libc::VMIN] = 0;
        raw.c_cc[libc::VTIME] = 0;
        raw.c_cc[libc::VSUSP] = 0;
        raw.c_cc[libc::VQUIT] = 0;
        // SAFETY: as above, with settings derived from the terminal's own.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) } != 0 {
            return Err(os_err("setting the terminal to raw mode"));
        }
        let mut t = Self {
            saved,
            captured: None,
        };
        t.captured = capture_stderr();
        // Alternate screen, cursor hidden.
        t.write("\x1b[?1049h\x1b[?25l\x1b[H\x1b[2J");
        Ok(t)
    }

    fn write(&self, s: &str) {
        let mut out = std::io::stdout().lock();
        // A terminal gone (hangup) leaves nothing to draw on; the recording ends by SIGHUP.
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    }

    /// Columns and rows (80×24 when the terminal does not say).
    pub fn size(&self) -> (usize, usize) {
        // SAFETY: winsize is plain data filled in by the ioctl.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes one winsize through a valid pointer.
        let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
        if ok && ws.ws_col > 0 && ws.ws_row > 0 {
            (usize::from(ws.ws_col), usize::from(ws.ws_row))
        } else {
            (80, 24)
        }
    }

    /// Redraws the whole screen: each line in place, erased to its end, and below the last.
    pub fn draw(&self, lines: &[String]) {
        let mut s = String::new();
        for (i, l) in lines.iter().enumerate() {
            s += &format!("\x1b[{};1H{l}\x1b[K", i + 1);
        }
        s += &format!("\x1b[{};1H\x1b[J", lines.len() + 1);
        self.write(&s);
    }

    /// Keys waiting on standard input, once it polled readable; None when the terminal is
    /// gone. With VMIN and VTIME at 0 a read returns 0 bytes both when nothing is waiting and
    /// after a hangup: readable with nothing to read is the hangup (the poll then says
    /// readable for good, and taking it for "no keys" spun a CPU forever).
    pub fn keys(&self) -> Option<Vec<u8>> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        loop {
            // SAFETY: reads into a buffer of its length.
            let n = unsafe {
                libc::read(
                    libc::STDIN_FILENO,
                    buf.as_mut_ptr().cast(),
                    buf.len() as libc::size_t,
                )
            };
            match usize::try_from(n) {
                Ok(0) if out.is_empty() => return None,
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n.min(buf.len())]),
                Err(_) => match std::io::Error::last_os_error().kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => break,
                    // EIO: the other side of the terminal is closed.
                    _ => return None,
                },
            }
        }
        Some(out)
    }

    /// The newest line the profiler wrote on stderr since the screen became ours.
    pub fn message(&mut self) -> Option<&str> {
        let c = self.captured.as_mut()?;
        let new = read_from(&c.file, c.read_to);
        c.read_to = c.read_to.saturating_add(new.len() as u64);
        if let Some(l) = String::from_utf8_lossy(&new)
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
        {
            c.last = Some(l.to_string());
        }
        c.last.as_deref()
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.write("\x1b[?25h\x1b[?1049l");
        // SAFETY: restores the settings read at the start on the same descriptor.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
        if let Some(c) = self.captured.take() {
            // SAFETY: both descriptors are open; fd 2 becomes the terminal's stderr again.
            unsafe { libc::dup2(c.saved.as_raw_fd(), libc::STDERR_FILENO) };
            let text = String::from_utf8_lossy(&read_from(&c.file, 0)).into_owned();
            let mut err = std::io::stderr().lock();
            // The start-up line says what is being recorded: old news once the screen is gone.
            for l in text
                .lines()
                .filter(|l| !l.starts_with("profiler: recording "))
            {
                let _ = writeln!(err, "{l}");
            }
        }
    }
}

/// Everything in `file` from `offset` on, without moving the offset fd 2 writes at (they
/// share it).
fn read_from(file: &File, mut offset: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = file.read_at(&mut buf, offset) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        offset = offset.saturating_add(n as u64);
    }
    out
}

/// Points fd 2 at a memory file while the screen is ours (only when stderr is that terminal:
/// redirected elsewhere, it draws nothing over the screen).
fn capture_stderr() -> Option<Captured> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    // SAFETY: a NUL-terminated name; the result is checked.
    let mem = unsafe { libc::memfd_create(c"profiler-top-stderr".as_ptr(), libc::MFD_CLOEXEC) };
    if mem < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let file = unsafe { File::from_raw_fd(mem) };
    // SAFETY: duplicates fd 2, which is open (it is a terminal).
    let saved = unsafe { libc::fcntl(libc::STDERR_FILENO, libc::F_DUPFD_CLOEXEC, 3) };
    if saved < 0 {
        return None;
    }
    // SAFETY: a fresh duplicate nobody else owns.
    let saved = unsafe { OwnedFd::from_raw_fd(saved) };
    // SAFETY: both descriptors are open.
    if unsafe { libc::dup2(file.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
        return None;
    }
    Some(Captured {
        file,
        saved,
        read_to: 0,
        last: None,
    })
}
