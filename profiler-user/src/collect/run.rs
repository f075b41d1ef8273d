//! `profiler run`: the command is forked and held before `exec` until the probes are attached,
//! so the profile starts at its first instruction. Under sudo it runs as the invoking user.
use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use crate::error::{Error, Result};

/// Who the command runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
}

impl RunAs {
    /// The user who ran sudo, with their supplementary groups; None when not under sudo.
    pub fn sudo_user() -> Option<Self> {
        let (uid, gid) = crate::outputs::sudo_owner()?;
        let user = std::env::var("SUDO_USER").ok();
        let mut groups = vec![gid];
        if let Some(name) = user.and_then(|u| CString::new(u).ok()) {
            let mut n: libc::c_int = 64;
            // A user in more groups than fit gets -1 and the count needed: try again.
            for _ in 0..2 {
                let mut buf = vec![0 as libc::gid_t; n.max(1) as usize];
                // SAFETY: buf holds n entries; getgrouplist updates n.
                let ok =
                    unsafe { libc::getgrouplist(name.as_ptr(), gid, buf.as_mut_ptr(), &mut n) };
                if ok >= 0 {
                    buf.truncate(n.max(0) as usize);
                    groups = buf;
                    break;
                }
            }
        }
        Some(Self { uid, gid, groups })
    }
}

/// A forked child blocked before exec.
#[derive(Debug)]
pub struct Held {
    pub pid: u32,
    release: OwnedFd,
    errors: OwnedFd,
    command: String,
}

fn pipe(flags: libc::c_int) -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), flags) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Forks `argv`, held before exec until [`Held::release`].
pub fn spawn_held(argv: &[String], run_as: Option<&RunAs>) -> Result<Held> {
    let command = argv.join(" ");
    let bad = |reason: String| Error::InvalidArgument {
        what: "command",
        reason,
    };
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| bad(format!("{a:?} contains a NUL byte"))))
        .collect::<Result<_>>()?;
    let Some(program) = args.first() else {
        return Err(bad("no command given after --".into()));
    };
    let mut arg_ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    arg_ptrs.push(std::ptr::null());
    // The release pipe is inherited (the child waits on it); the error pipe closes on exec,
    // so EOF there means the exec worked.
    let (hold_r, hold_w) = pipe(0)?;
    let (err_r, err_w) = pipe(libc::O_CLOEXEC)?;

    // SAFETY: fork in a process with no other threads running Rust code that holds locks
    // (the recorder's runtime is single-threaded); the child only makes async-signal-safe
    // calls before exec or _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::io("fork", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: child side; raw syscalls only.
        unsafe {
            libc::close(hold_w.as_raw_fd());
            let mut byte = 0u8;
            let n = libc::read(hold_r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
            libc::close(hold_r.as_raw_fd());
            if n != 1 {
                // The profiler is gone without releasing us: do not run unprofiled.
                libc::_exit(125);
            }
            let fail = |code: i32| -> ! {
                let errno = *libc::__errno_location();
                let bytes = errno.to_ne_bytes();
                libc::write(err_w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                libc::_exit(code)
            };
            // Groups, then gid, then uid: each step needs the privileges the next drops.
            if let Some(who) = run_as
                && (libc::setgroups(who.groups.len(), who.groups.as_ptr()) != 0
                    || libc::setgid(who.gid) != 0
                    || libc::setuid(who.uid) != 0)
            {
                fail(126);
            }
            // Rust's runtime ignores SIGPIPE, and an ignored signal stays ignored across
            // exec: give the command the default that pipelines rely on.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execvp(program.as_ptr(), arg_ptrs.as_ptr());
            fail(127)
        }
    }
    drop(hold_r);
    drop(err_w);
    Ok(Held {
        pid: pid as u32,
        release: hold_w,
        errors: err_r,
        command,
    })
}

impl Held {
    /// Lets the child exec; fails if the exec (or the privilege drop) failed.
    pub fn release(self) -> Result<()> {
        let byte = 1u8;
        // SAFETY: writing one byte from a valid buffer to our pipe.
        let n = unsafe { libc::write(self.release.as_raw_fd(), (&byte as *const u8).cast(), 1) };
        if n != 1 {
            return Err(Error::io(
                "releasing the command",
                std::io::Error::last_os_error(),
            ));
        }
        let mut errno = [0u8; 4];
        // SAFETY: reading into a 4-byte buffer; blocks until exec (EOF) or a reported error.
        let n = unsafe { libc::read(self.errors.as_raw_fd(), errno.as_mut_ptr().cast(), 4) };
        if n == 4 {
            let e = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
            return Err(Error::InvalidArgument {
                what: "command",
                reason: format!("cannot run `{}`: {e}", self.command),
            });
        }
        Ok(())
    }
}

/// Waits until the command has exited, leaving it unreaped: its pid stays its own (a zombie)
/// for as long as signals may still be forwarded to it.
pub fn wait_exited(pid: u32) -> Result<()> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid out-buffer.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is a valid out-pointer.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(Error::io(format!("waiting for pid {pid}"), e));
        }
    }
}

/// Waits for the child and turns its end into an exit code: its own, or 128 + the signal.
pub fn wait_exit_code(pid: u32) -> Result<u8> {
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out-pointer.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
        if r >= 0 {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(Error::io(format!("waiting for pid {pid}"), e));
        }
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status) as u8
    } else if libc::WIFSIGNALED(status) {
        (128 + libc::WTERMSIG(status)) as u8
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_child_runs_after_release_and_reports_its_exit() {
        let held = spawn_held(&["sh".into(), "-c".into(), "exit 7".into()], None).expect("fork");
        let pid = held.pid;
        // Held: still the forked copy, not yet sh.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        assert_ne!(comm.trim(), "sh");
        held.release().expect("exec");
        assert_eq!(wait_exit_code(pid).expect("wait"), 7);
    }

    #[test]
    fn signals_become_128_plus_signal() {
        let held =
            spawn_held(&["sh".into(), "-c".into(), "kill -TERM $$".into()], None).expect("fork");
        let pid = held.pid;
        held.release().expect("exec");
        assert_eq!(wait_exit_code(pid).expect("wait"), 128 + 15);
    }

    #[test]
    fn a_missing_command_is_reported() {
        let held = spawn_held(&["/nonexistent/command".into()], None).expect("fork");
        let pid = held.pid;
        let e = held.release().expect_err("exec fails");
        assert!(e.to_string().contains("No such file"), "{e}");
        assert_eq!(wait_exit_code(pid).expect("wait"), 127);
    }
}
