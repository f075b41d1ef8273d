//! Start-up checks: everything about the machine that would make loading or attaching fail,
//! found before anything is loaded, each reported as one line that names the fix. A kernel
//! refusal the checks could not foresee (EPERM/EACCES from `bpf()` or `perf_event_open`) is
//! explained after the fact by [`explain_refusal`].
//!
//! The checks are pure functions of [`Facts`], read once from the machine, so that every
//! message is unit-tested without a machine that has the fault.
use std::{ffi::CStr, io, path::Path};

use super::privileges::{self, CAP_BPF, CAP_PERFMON};
use crate::error::{Error, Result};

/// The oldest kernel the eBPF programs load on. The newest features they use arrived in 5.15:
/// BPF links for perf events (attach cookies, how the sampler is attached and the `--span-fn`
/// uprobes find their function) and `bpf_task_pt_regs` (DWARF stack copies). Older ones in
/// use: `bpf_get_current_task_btf` (5.11), ring buffer, `bpf_ktime_get_boot_ns`, CAP_BPF,
/// CAP_PERFMON and run-time statistics (5.8), `bpf_get_ns_current_pid_tgid` (5.7).
pub const MIN_KERNEL: (u32, u32) = (5, 15);

/// The only architecture the BPF stack copy (x86 `pt_regs`) and DWARF unwinding (framehop's
/// x86_64 unwinder) are written for.
pub const SUPPORTED_ARCH: &str = "x86_64";

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
pub const LOCKDOWN_PATH: &str = "/sys/kernel/security/lockdown";
pub const PARANOID_PATH: &str = "/proc/sys/kernel/perf_event_paranoid";

/// What the checks look at, read from the running machine by [`Facts::read`].
#[derive(Clone, Debug)]
pub struct Facts {
    /// `uname -m`.
    pub machine: String,
    /// `uname -r`.
    pub release: String,
    /// The architecture this binary was built for.
    pub built_for: &'static str,
    pub btf: bool,
    /// Contents of the lockdown file, e.g. `none [integrity] confidentiality`; None when
    /// securityfs is not mounted (then lockdown cannot be told, and is not assumed).
    pub lockdown: Option<String>,
    /// Effective capabilities.
    pub caps: u64,
    pub perf_event_paranoid: Option<i32>,
    /// False inside a user namespace (`/proc/self/uid_map` maps less than every uid to
    /// itself): its capabilities do not count for bpf() and perf events. None if unreadable.
    pub initial_user_ns: Option<bool>,
}

impl Facts {
    pub fn read() -> Self {
        let (machine, release) = uname();
        Self {
            machine,
            release,
            built_for: std::env::consts::ARCH,
            btf: Path::new(BTF_PATH).exists(),
            lockdown: std::fs::read_to_string(LOCKDOWN_PATH).ok(),
            caps: privileges::effective_caps(),
            perf_event_paranoid: read_paranoid(),
            initial_user_ns: std::fs::read_to_string("/proc/self/uid_map")
                .ok()
                .map(|m| is_initial_uid_map(&m)),
        }
    }
}

/// The initial user namespace maps every uid to itself in one line: `0 0 4294967295`.
fn is_initial_uid_map(map: &str) -> bool {
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_ascii_whitespace().collect())
        .filter(|f: &Vec<&str>| !f.is_empty())
        .collect();
    matches!(lines.as_slice(), [f] if f.as_slice() == ["0", "0", "4294967295"])
}

fn read_paranoid() -> Option<i32> {
    std::fs::read_to_string(PARANOID_PATH)
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// (machine, release) from uname(2); empty strings if it fails (it does not on Linux).
fn uname() -> (String, String) {
    // SAFETY: utsname is plain bytes; uname fills it with NUL-terminated strings.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (String::new(), String::new());
    }
    let field = |f: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates every field within its array.
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    (field(&u.machine), field(&u.release))
}

/// `major.minor` at the start of a kernel release (`6.8.0-45-generic`, `5.15.167.4-microsoft`).
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The bracketed (active) mode of the lockdown file.
fn lockdown_mode(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let len = text[start..].find(']')?;
    Some(&text[start..start + len])
}

/// Everything but capabilities, in the order a user should fix them.
pub fn check_machine(f: &Facts) -> Result<()> {
    let fail = |msg: String| Err(Error::Startup(msg));
    if f.built_for != SUPPORTED_ARCH || f.machine != SUPPORTED_ARCH {
        return fail(format!(
            "unsupported architecture {} (this binary: {}): the profiler's stack copies and DWARF unwinding are written for {SUPPORTED_ARCH} only; run it on an {SUPPORTED_ARCH} machine",
            f.machine, f.built_for
        ));
    }
    // An unparsable release is not refused: the load itself will say what is missing.
    if let Some(v) = kernel_version(&f.release)
        && v < MIN_KERNEL
    {
        return fail(format!(
            "kernel {} is older than {}.{}, the oldest the profiler's eBPF programs load on (BPF links for perf events, bpf_task_pt_regs); upgrade the kernel",
            f.release, MIN_KERNEL.0, MIN_KERNEL.1
        ));
    }
    if !f.btf {
        return fail(format!(
            "no kernel BTF ({BTF_PATH} is missing): the eBPF programs are relocated against it; use a kernel built with CONFIG_DEBUG_INFO_BTF=y (every major distribution's since 2021)"
        ));
    }
    if let Some(mode) = f.lockdown.as_deref().and_then(lockdown_mode)
        && mode == "confidentiality"
    {
        return fail(format!(
            "kernel lockdown is in confidentiality mode ({LOCKDOWN_PATH}), which forbids eBPF programs to read kernel memory and tracefs; boot with lockdown=integrity (or without lockdown, e.g. Secure Boot off)"
        ));
    }
    Ok(())
}

/// Every start-up check: the machine, then the capabilities to load and sample. No tracefs:
/// the sched programs are raw tracepoints, located through BTF.
pub fn startup() -> Result<()> {
    let facts = Facts::read();
    check_machine(&facts)?;
    privileges::check_sampling()
}

/// The first EPERM/EACCES in `e`'s source chain.
fn refusal(e: &Error) -> Option<&io::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES))
        {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

/// Turns a permission refusal from `bpf()` or `perf_event_open` into one line naming its most
/// likely cause as this machine shows it: a missing capability, lockdown, or
/// `perf_event_paranoid`; any other error is returned unchanged.
pub fn explain_refusal(e: Error) -> Error {
    let Some(io) = refusal(&e) else {
        return e;
    };
    let cause = refusal_cause(&Facts::read());
    Error::Startup(format!("the kernel refused: {e} ({io}); {cause}"))
}

fn refusal_cause(f: &Facts) -> String {
    let has = |cap: u32| f.caps & (1u64 << cap) != 0;
    // Capabilities held in a user namespace look complete in CapEff, yet the kernel checks
    // bpf() and perf events against the initial one.
    if f.initial_user_ns == Some(false) {
        return "the profiler runs in a user namespace (a rootless container, `unshare --user`), whose capabilities do not count for bpf() and perf events; run it in the host's user namespace (sudo on the host, or a privileged container)".to_string();
    }
    let missing = privileges::missing_for_sampling(f.caps);
    if !missing.is_empty() {
        // perf_event_paranoid is what users usually try first; it cannot help here, as the
        // kernel loads perf_event programs only for CAP_PERFMON whatever its value.
        let paranoid = match f.perf_event_paranoid {
            Some(p) if !has(CAP_PERFMON) => format!(
                " (kernel.perf_event_paranoid={p} does not matter: eBPF samplers need CAP_PERFMON at any value)"
            ),
            _ => String::new(),
        };
        return format!(
            "missing {}: loading eBPF programs and sampling need CAP_BPF and CAP_PERFMON{paranoid}; run with sudo",
            missing.join(" and ")
        );
    }
    if let Some(mode) = f.lockdown.as_deref().and_then(lockdown_mode)
        && mode != "none"
    {
        return format!(
            "kernel lockdown is in {mode} mode ({LOCKDOWN_PATH}); boot with lockdown=none to profile"
        );
    }
    let bpf = if has(CAP_BPF) {
        "CAP_BPF"
    } else {
        "CAP_SYS_ADMIN"
    };
    format!(
        "the profiler has {bpf} and CAP_PERFMON, so a security policy denied it (SELinux, AppArmor, or a container's seccomp profile blocking bpf/perf_event_open); allow those system calls or run it privileged"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Facts {
        Facts {
            machine: "x86_64".into(),
            release: "6.8.0-45-generic".into(),
            built_for: "x86_64",
            btf: true,
            lockdown: Some("[none] integrity confidentiality\n".into()),
            caps: (1 << CAP_BPF) | (1 << CAP_PERFMON),
            perf_event_paranoid: Some(2),
            initial_user_ns: Some(true),
        }
    }

    fn message(f: &Facts) -> String {
        check_machine(f).map_or_else(|e| e.to_string(), |()| String::new())
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(kernel_version("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(
            kernel_version("5.15.167.4-microsoft-standard"),
            Some((5, 15))
        );
        assert_eq!(kernel_version("4.19"), Some((4, 19)));
        assert_eq!(kernel_version("5"), None);
        assert_eq!(kernel_version(""), None);
        assert_eq!(kernel_version("abc"), None);
    }

    #[test]
    fn a_good_machine_passes() {
        assert_eq!(message(&good()), "");
        // Lockdown in integrity mode leaves reading alone.
        let f = Facts {
            lockdown: Some("none [integrity] confidentiality".into()),
            ..good()
        };
        assert_eq!(message(&f), "");
        // Unknown release and no securityfs: not refused.
        let f = Facts {
            release: "weird".into(),
            lockdown: None,
            ..good()
        };
        assert_eq!(message(&f), "");
        let f = Facts {
            release: "5.15.0-91-generic".into(),
            ..good()
        };
        assert_eq!(message(&f), "");
    }

    #[test]
    fn each_fault_names_its_fix() {
        let m = message(&Facts {
            release: "5.10.0-28-amd64".into(),
            ..good()
        });
        assert!(
            m.contains("kernel 5.10.0-28-amd64 is older than 5.15") && m.contains("upgrade"),
            "{m}"
        );
        let m = message(&Facts {
            btf: false,
            ..good()
        });
        assert!(
            m.contains("no kernel BTF") && m.contains("CONFIG_DEBUG_INFO_BTF=y"),
            "{m}"
        );
        let m = message(&Facts {
            machine: "aarch64".into(),
            ..good()
        });
        assert!(
            m.contains("unsupported architecture aarch64") && m.contains("x86_64 machine"),
            "{m}"
        );
        let m = message(&Facts {
            lockdown: Some("none integrity [confidentiality]\n".into()),
            ..good()
        });
        assert!(
            m.contains("confidentiality mode") && m.contains("lockdown=integrity"),
            "{m}"
        );
        // One line each, whatever the fault.
        for f in [
            Facts {
                btf: false,
                ..good()
            },
            Facts {
                machine: "riscv64".into(),
                ..good()
            },
            Facts {
                release: "4.19.0".into(),
                ..good()
            },
        ] {
            let m = message(&f);
            assert!(!m.is_empty() && !m.contains('\n'), "{m}");
        }
    }

    #[test]
    fn refusals_are_explained_by_what_this_machine_shows() {
        let m = refusal_cause(&Facts {
            caps: 1 << CAP_PERFMON,
            ..good()
        });
        assert!(m.contains("missing CAP_BPF:") && m.contains("sudo"), "{m}");
        let m = refusal_cause(&Facts {
            lockdown: Some("none [integrity] confidentiality".into()),
            ..good()
        });
        assert!(m.contains("lockdown is in integrity mode"), "{m}");
        let m = refusal_cause(&Facts {
            perf_event_paranoid: Some(3),
            caps: 1 << CAP_BPF,
            ..good()
        });
        assert!(
            m.contains("missing CAP_PERFMON")
                && m.contains("perf_event_paranoid=3 does not matter"),
            "{m}"
        );
        let m = refusal_cause(&good());
        assert!(m.contains("security policy"), "{m}");
        let m = refusal_cause(&Facts {
            initial_user_ns: Some(false),
            ..good()
        });
        assert!(m.contains("runs in a user namespace"), "{m}");
    }

    #[test]
    fn tells_the_initial_user_namespace() {
        assert!(is_initial_uid_map("         0          0 4294967295\n"));
        assert!(!is_initial_uid_map("         0       1000          1\n"));
        assert!(!is_initial_uid_map("0 0 4294967295\n1 1 1\n"));
        assert!(!is_initial_uid_map(""));
    }

    #[test]
    fn only_permission_errors_are_rewritten() {
        let eperm = Error::io(
            "bpf(BPF_PROG_LOAD)",
            io::Error::from_raw_os_error(libc::EPERM),
        );
        let m = explain_refusal(eperm).to_string();
        assert!(
            m.starts_with("the kernel refused: bpf(BPF_PROG_LOAD)"),
            "{m}"
        );
        let other = Error::io("x", io::Error::from_raw_os_error(libc::EINVAL));
        assert_eq!(
            explain_refusal(other).to_string(),
            "x: Invalid argument (os error 22)"
        );
    }
}
