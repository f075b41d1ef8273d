//! Bad input and faults: each gets one clear line on stderr, a non-zero exit, and leaves no
//! output directory behind.
use std::{path::Path, process::Command};

use profiler_tests::*;

fn assert_fails(out: &std::process::Output, code: i32, needles: &[&str]) {
    let err = stderr_of(out);
    eprintln!("stderr: {err}");
    assert_eq!(out.status.code(), Some(code), "exit code; stderr: {err}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
    assert!(out.stdout.is_empty(), "nothing on stdout");
}

/// A PID that is certainly unused: one above pid_max.
fn unused_pid() -> u32 {
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(4_194_304);
    max + 1
}

#[test]
fn nonexistent_pid() {
    let out_dir = scratch("nopid");
    let pid = unused_pid();
    let out = record(pid, &out_dir, &["--duration", "1"]);
    assert_fails(&out, 1, &[&format!("no process with PID {pid}")]);
    assert_eq!(stderr_of(&out).lines().count(), 1, "one line");
    assert!(!out_dir.exists(), "no output directory");

    // A PID that existed and was reaped.
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("reaped");
    let out = record(pid, &out_dir, &["--duration", "1"]);
    assert_fails(&out, 1, &[&format!("no process with PID {pid}")]);
}

#[test]
fn pid_that_exits_before_attach() {
    let bin = build_c("split-early", "split.c", C_FP);
    let target = Target::start(&bin, &["0.5"]);
    let out_dir = scratch("early");
    // The test hook holds the profiler between load and attach while the target exits.
    let out = record(
        target.pid(),
        &out_dir,
        &["--duration", "5", "--test-hold-before-attach-ms", "1500"],
    );
    assert_fails(
        &out,
        1,
        &[&format!(
            "process {} exited before the profiler could attach",
            target.pid()
        )],
    );
    assert!(!out_dir.exists(), "no output directory");
}

#[test]
fn unprivileged_user_is_told_which_capabilities_and_sudo() {
    let bin = build_c("split-nopriv", "split.c", C_FP);
    let target = Target::start(&bin, &["20"]);
    let out = as_nobody(&profiler_bin())
        .args([
            "record",
            "--duration",
            "1",
            "--output",
            "/tmp/profiler-nopriv-never",
            "--pid",
        ])
        .arg(target.pid().to_string())
        .output()
        .expect("profiler runs");
    assert_fails(&out, 1, &["CAP_BPF", "CAP_PERFMON", "sudo"]);
    assert!(!Path::new("/tmp/profiler-nopriv-never").exists());
}

#[test]
fn root_without_cap_bpf_is_told_exactly_that() {
    let bin = build_c("split-nobpf", "split.c", C_FP);
    let target = Target::start(&bin, &["20"]);
    let out = Command::new("setpriv")
        .args([
            "--bounding-set=-bpf,-sys_admin",
            "--inh-caps=-bpf,-sys_admin",
        ])
        .arg(profiler_bin())
        .args([
            "record",
            "--duration",
            "1",
            "--output",
            "/tmp/profiler-nobpf-never",
            "--pid",
        ])
        .arg(target.pid().to_string())
        .output()
        .expect("profiler runs");
    assert_fails(&out, 1, &["missing CAP_BPF:", "sudo"]);
    assert!(!stderr_of(&out).contains("missing CAP_BPF and CAP_PERFMON"));
}

#[test]
fn output_dir_not_writable() {
    let bin = build_c("split-ro", "split.c", C_FP);
    let target = Target::start(&bin, &["20"]);
    let mnt = scratch("ro");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "read-only tmpfs mounted (tests run as root)"
    );
    let out = record(target.pid(), &mnt.join("out"), &["--duration", "1"]);
    let _ = Command::new("umount").arg(&mnt).status();
    assert_fails(&out, 1, &["output directory", "Read-only file system"]);
    let _ = std::fs::remove_dir_all(&mnt);

    // A path under a regular file.
    let out = record(
        target.pid(),
        Path::new("/etc/hostname/out"),
        &["--duration", "1"],
    );
    assert_fails(&out, 1, &["output directory /etc/hostname/out"]);
}

#[test]
fn bad_durations_and_frequencies_are_usage_errors() {
    for (args, needle) in [
        (&["--duration", "0"][..], "greater than zero"),
        (&["--duration", "soon"][..], "not a duration"),
        (&["--duration=-3"][..], "greater than zero"),
        (&["--frequency", "0"][..], "--frequency"),
        (&["--frequency", "fast"][..], "--frequency"),
    ] {
        let out = profiler()
            .args(["record", "--pid", "1"])
            .args(args)
            .output()
            .expect("profiler runs");
        assert_fails(&out, 2, &[needle]);
    }
    let out = profiler()
        .args(["record", "--pid", "1", "--frequency", "100000000"])
        .output()
        .expect("profiler runs");
    assert_fails(&out, 1, &["perf_event_max_sample_rate"]);
}

#[test]
fn report_on_a_directory_without_a_recording() {
    let dir = scratch("norec");
    std::fs::create_dir_all(&dir).expect("dir");
    let out = profiler().arg("report").arg(&dir).output().expect("runs");
    assert_fails(&out, 1, &["recording.pb"]);
    std::fs::write(dir.join("recording.pb"), b"garbage").expect("write");
    let out = profiler().arg("report").arg(&dir).output().expect("runs");
    assert_fails(&out, 1, &["not a recording"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Root with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN removed from its bounding set (so an exec
/// as root cannot regain them): refused before anything is loaded, each capability named.
#[test]
fn root_without_bpf_perfmon_or_sys_admin_is_told_each_capability() {
    let bin = build_c("split-nocaps", "split.c", C_FP);
    let target = Target::start(&bin, &["20"]);
    let out_dir = scratch("nocaps");
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-bpf,-perfmon,-sys_admin"])
        .arg(profiler_bin())
        .args(["record", "--duration", "1", "--output"])
        .arg(&out_dir)
        .arg("--pid")
        .arg(target.pid().to_string())
        .output()
        .expect("setpriv runs (util-linux)");
    assert_fails(&out, 1, &["missing CAP_BPF and CAP_PERFMON:", "sudo"]);
    assert_eq!(stderr_of(&out).lines().count(), 1, "one line");
    assert!(!out_dir.exists(), "no output directory");
}

/// CAP_BPF and CAP_PERFMON are enough to profile, as the README says: CAP_SYS_ADMIN is only
/// for what the kernel or tracefs demands beyond them.
#[test]
fn cap_bpf_and_cap_perfmon_without_sys_admin_profile() {
    let bin = build_c("split-bpfonly", "split.c", C_FP);
    let target = Target::start(&bin, &["20"]);
    let out_dir = OutDir::new(scratch("bpfonly"));
    let out = Command::new("setpriv")
        .args(["--inh-caps=-all", "--bounding-set=-sys_admin"])
        .arg(profiler_bin())
        .args(["record", "--quiet", "--duration", "1", "--frequency", "999"])
        .arg("--output")
        .arg(&*out_dir)
        .arg("--pid")
        .arg(target.pid().to_string())
        .output()
        .expect("setpriv runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_sampled_its_cpu_time(&out_dir, 300);
}

/// Runs `args` in a private mount namespace where tracefs is unmounted: the host's stays.
fn without_tracefs(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"umount /sys/kernel/tracing && exec "$@""#)
        .arg("sh")
        .args(args)
        .output()
        .expect("unshare runs (util-linux)");
    assert!(
        Path::new("/sys/kernel/tracing/events").is_dir(),
        "the host's tracefs is untouched"
    );
    out
}

/// The sched programs are raw tracepoints located through BTF: tracefs is needed for
/// nothing, so with it unmounted and without CAP_SYS_ADMIN (which could mount it) following
/// children, off-CPU time and `run` all work.
#[test]
fn tracefs_unmounted_is_not_needed() {
    assert!(
        Path::new("/sys/kernel/tracing/events").is_dir(),
        "tracefs mounted on the host before the test"
    );
    let bin = build_c("split-notracefs", "split.c", C_FP);
    let target = Target::start(&bin, &["30"]);
    let pid = target.pid().to_string();
    let profiler = profiler_bin();
    let no_sys_admin = ["setpriv", "--inh-caps=-all", "--bounding-set=-sys_admin"];

    let out_dir = OutDir::new(scratch("notracefs-record"));
    let mut args: Vec<&std::ffi::OsStr> = no_sys_admin.iter().map(|a| a.as_ref()).collect();
    args.extend([
        profiler.as_os_str(),
        "record".as_ref(),
        "--quiet".as_ref(),
        "--follow-children".as_ref(),
        "--off-cpu".as_ref(),
        "--duration".as_ref(),
        "1".as_ref(),
        "--frequency".as_ref(),
        "999".as_ref(),
        "--pid".as_ref(),
        pid.as_ref(),
        "--output".as_ref(),
        out_dir.as_os_str(),
    ]);
    let out = without_tracefs(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_sampled_its_cpu_time(&out_dir, 300);
    let s = summary(&out_dir);
    assert!(
        s["off_cpu"]["switches"].as_u64().is_some(),
        "{}",
        s["off_cpu"]
    );

    // `run` follows its command's children the same way.
    let out_dir = OutDir::new(scratch("notracefs-run"));
    let marker = scratch("notracefs-marker");
    let mut args: Vec<&std::ffi::OsStr> = no_sys_admin.iter().map(|a| a.as_ref()).collect();
    args.extend([
        profiler.as_os_str(),
        "run".as_ref(),
        "--quiet".as_ref(),
        "--output".as_ref(),
        out_dir.as_os_str(),
        "--".as_ref(),
        "sh".as_ref(),
        "-c".as_ref(),
        "touch \"$0\"".as_ref(),
        marker.as_os_str(),
    ]);
    let out = without_tracefs(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert!(marker.exists(), "the command ran");
    let _ = std::fs::remove_file(&marker);
    assert!(out_dir.join("recording.pb").is_file());
}

/// PID reuse while the profiler loads: the target exits and a new process gets its PID
/// (forced with ns_last_pid in a private PID namespace). /proc then describes the newcomer,
/// which must not be recorded in the target's name: the target's pidfd says it is gone.
#[test]
fn a_pid_reused_during_attach_is_not_recorded_as_the_target() {
    let bin = build_c("split-reuse", "split.c", C_FP);
    let out_dir = scratch("reuse");
    let script = r#"
        "$1" 0.5 > /dev/null &
        x=$!
        "$2" record --pid "$x" --duration 2 --test-hold-before-attach-ms 2500 --output "$3" &
        p=$!
        wait "$x"
        echo $((x - 1)) > /proc/sys/kernel/ns_last_pid
        "$1" 30 > /dev/null &
        y=$!
        wait "$p"
        code=$?
        kill "$y"
        echo "target $x newcomer $y profiler $code"
    "#;
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", script, "sh"])
        .arg(&bin)
        .arg(profiler_bin())
        .arg(&out_dir)
        .output()
        .expect("unshare runs (util-linux)");
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = stderr_of(&out);
    eprintln!("{said}{err}");
    let v: Vec<&str> = said.split_whitespace().collect();
    let (target, newcomer, code) = match v.as_slice() {
        ["target", t, "newcomer", n, "profiler", c] => (*t, *n, *c),
        _ => panic!("script output: {said} {err}"),
    };
    assert_eq!(target, newcomer, "the PID was reused (the test's premise)");
    assert_eq!(code, "1", "{err}");
    assert!(
        err.contains(&format!(
            "process {target} exited before the profiler could attach"
        )),
        "{err}"
    );
    assert!(!err.contains("recording pid"), "never attached: {err}");
    assert!(!out_dir.exists(), "no output directory");
}

/// Root of a user namespace (a rootless container) has every capability in CapEff, which the
/// kernel does not count for bpf(): the refusal says so instead of blaming a missing one.
#[test]
fn a_user_namespace_refusal_is_explained() {
    let bin = build_c("split-userns", "split.c", C_FP);
    let out_dir = scratch("userns");
    // The target runs in the namespace too, so that reading its maps is allowed there.
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c"])
        .arg(r#""$1" 5 > /dev/null & exec "$2" record --pid $! --duration 1 --output "$3""#)
        .arg("sh")
        .arg(&bin)
        .arg(profiler_bin())
        .arg(&out_dir)
        .output()
        .expect("unshare runs (util-linux)");
    assert_fails(
        &out,
        1,
        &[
            "the kernel refused: loading the eBPF programs failed",
            "Operation not permitted",
            "runs in a user namespace",
            "run it in the host's user namespace",
        ],
    );
    assert_eq!(stderr_of(&out).lines().count(), 1, "one line");
    assert!(!out_dir.exists(), "no output directory");
}

/// Another user's program, in a directory only that user may enter, profiled by root with
/// `without` taken out of its capabilities (bounding set too, so an exec cannot regain them).
fn record_private_target(
    name: &str,
    without: &str,
) -> (OutDir, Option<i32>, Vec<String>, String, String) {
    let bin = build_c(&format!("split-{name}"), "split.c", C_FP);
    let dir = scratch(&format!("{name}-private"));
    std::fs::create_dir_all(&dir).expect("private dir");
    let private_bin = dir.join("split");
    std::fs::copy(&bin, &private_bin).expect("copy target");
    for (path, mode) in [(&private_bin, 0o755), (&dir, 0o700)] {
        std::os::unix::fs::chown(path, Some(65534), Some(65534)).expect("chown to nobody");
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
    }
    let target = Target::start(
        Path::new("setpriv"),
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            private_bin.to_str().expect("utf-8 path"),
            "20",
        ],
    );
    let out_dir = OutDir::new(scratch(name));
    let out = Command::new("setpriv")
        .arg(format!("--inh-caps={without}"))
        .arg(format!("--bounding-set={without}"))
        .arg(profiler_bin())
        .args(["record", "--quiet", "--duration", "1", "--output"])
        .arg(&*out_dir)
        .arg("--pid")
        .arg(target.pid().to_string())
        .output()
        .expect("setpriv runs");
    drop(target);
    let _ = std::fs::remove_dir_all(&dir);
    let err = stderr_of(&out);
    eprintln!("stderr: {err}");
    let s = summary(&out_dir);
    let warnings: Vec<String> = s["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|w| w.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    eprintln!("warnings: {warnings:#?}");
    // Said on stderr too, even with --quiet: one line per capability warning of the summary.
    let said: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("profiler: warning: "))
        .collect();
    let expected: Vec<&str> = warnings
        .iter()
        .filter(|w| w.starts_with("missing CAP_"))
        .map(String::as_str)
        .collect();
    assert_eq!(said, expected, "each capability warning on stderr, once");
    let folded = std::fs::read_to_string(out_dir.join("profile.folded")).unwrap_or_default();
    (out_dir, out.status.code(), warnings, folded, err)
}

/// Without CAP_DAC_READ_SEARCH (nor CAP_DAC_OVERRIDE) root cannot read another user's binary
/// in a private directory, nor its memory (`/proc/PID/mem` is mode 0600): the recording is
/// made, and one warning names the capability, the file and the fix, instead of calling the
/// binary "gone or replaced".
#[test]
fn without_cap_dac_read_search_the_unreadable_binary_is_named_with_the_fix() {
    let (_out, code, warnings, folded, _) =
        record_private_target("nodac", "-dac_read_search,-dac_override");
    assert_eq!(code, Some(0), "recorded; warnings {warnings:?}");
    let file = warnings
        .iter()
        .filter(|w| w.starts_with("missing CAP_DAC_READ_SEARCH: 1 mapped files could not be read"))
        .collect::<Vec<_>>();
    assert_eq!(
        file.len(),
        1,
        "one line for the unreadable binary: {warnings:?}"
    );
    assert!(
        file[0].contains("-private-")
            && file[0].contains("/split; run with sudo")
            && file[0].ends_with("grant CAP_DAC_READ_SEARCH"),
        "names the file and the fix: {}",
        file[0]
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("missing CAP_DAC_READ_SEARCH: cannot read the memory of pid")),
        "the memory refusal names the DAC capability, not CAP_SYS_PTRACE: {warnings:?}"
    );
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("gone or replaced") || w.contains("CAP_SYS_PTRACE")),
        "no wrong cause: {warnings:?}"
    );
    assert!(
        folded.contains("split+0x"),
        "frames shown as FILE+0xOFFSET: {folded}"
    );
}

/// Without CAP_SYS_PTRACE root reads another user's /proc/PID/maps here but not its memory:
/// the binary is still symbolized (it is readable by path), and one warning names
/// CAP_SYS_PTRACE, what is lost and the fix.
#[test]
fn without_cap_sys_ptrace_the_unreadable_memory_is_named_with_the_fix() {
    let (_out, code, warnings, folded, err) = record_private_target("noptrace", "-sys_ptrace");
    assert_eq!(code, Some(0), "recorded; warnings {warnings:?}");
    let mem: Vec<&String> = warnings.iter().filter(|w| w.contains("CAP_")).collect();
    assert_eq!(mem.len(), 1, "one capability line: {warnings:?}");
    assert!(
        mem[0].starts_with("missing CAP_SYS_PTRACE: cannot read the memory of pid")
            && mem[0].contains("(uid 65534)")
            && mem[0].ends_with("run with sudo or grant CAP_SYS_PTRACE"),
        "names the capability, the owner and the fix: {}",
        mem[0]
    );
    assert!(
        folded.contains("hot_a"),
        "the binary is symbolized: {folded}"
    );
    // /proc/PID/exe is refused too: the executable is found from its mapping, so `auto` still
    // sees its frame pointers instead of falling back to DWARF for an unknown program.
    assert!(
        err.contains("(split) at 99 Hz;") && !err.contains("DWARF"),
        "frame pointers chosen from the executable: {err}"
    );
}
