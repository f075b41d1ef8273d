//! Running as root next to other users, and never losing a recording: links planted for every
//! file the profiler writes, foreign output directories, a disk that fills up or turns
//! read-only mid-write, damaged recordings, and signals at every stage. Then a bounded run of
//! the decoders' fuzzer.
use std::{
    io::{BufRead, BufReader, Read},
    os::unix::fs::{MetadataExt, PermissionsExt, lchown, symlink},
    path::{Path, PathBuf},
    process::{Child, ChildStderr, Command, Output, Stdio},
    time::Duration,
};

use profiler_tests::*;

/// Every file a recording with spans and off-CPU time writes.
const OUTPUTS: &[&str] = &[
    "recording.pb",
    "profile.folded",
    "flamegraph.svg",
    "summary.txt",
    "summary.json",
    "trace.perfetto-trace",
    "spans.json",
    "profile-spans.folded",
    "profile.pb.gz",
    "offcpu.pb.gz",
    "flamegraph-spans.svg",
    "offcpu.folded",
    "offcpu.svg",
    "wall.folded",
    "wall.svg",
];

/// Arguments that make the profiler write all of `OUTPUTS`.
const ALL_OUTPUTS: &[&str] = &["--off-cpu", "--span-fn", "hot_a"];

const NOBODY: u32 = 65534;

fn split_target(name: &str) -> Target {
    let bin = build_c(name, "split.c", C_FP);
    Target::start(&bin, &["60"])
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A link planted by another user (nobody).
fn plant(link: &Path, target: &Path) {
    symlink(target, link).expect("symlink");
    lchown(link, Some(NOBODY), Some(NOBODY)).expect("lchown");
}

fn code(out: &Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn links_planted_for_every_file_name_are_never_followed() {
    let target = split_target("split-links");
    let base = OutDir::new(scratch("links"));
    let victim_dir = base.join("victim");
    std::fs::create_dir_all(&victim_dir).expect("victim dir");
    let victim = victim_dir.join("precious");
    std::fs::write(&victim, b"precious").expect("victim");

    // A shared directory (sticky and not), with a link for every name the profiler writes,
    // its old write test and its old temporary names: half to the victim file (truncate it),
    // half to a new file in the victim's directory (create it with root's content).
    for (name, mode) in [("sticky", 0o1777), ("open", 0o777)] {
        let shared = base.join(name);
        std::fs::create_dir_all(&shared).expect("shared dir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let mut names: Vec<String> = OUTPUTS.iter().map(|s| s.to_string()).collect();
        names.push(".profiler-write-test".into());
        names.extend(OUTPUTS.iter().map(|o| format!(".{o}.tmp")));
        for (i, n) in names.iter().enumerate() {
            let to = if i % 2 == 0 {
                victim.clone()
            } else {
                victim_dir.join(format!("created-{n}"))
            };
            plant(&shared.join(n), &to);
        }
        let mut args = vec!["--duration", "1"];
        args.extend(ALL_OUTPUTS);
        let out = record(target.pid(), &shared, &args);
        assert_eq!(code(&out), Some(0), "{}", stderr_of(&out));
        assert_eq!(
            std::fs::read(&victim).ok().as_deref(),
            Some(&b"precious"[..]),
            "{name}: the victim is untouched"
        );
        assert_eq!(
            entries(&victim_dir),
            ["precious"],
            "{name}: nothing created there"
        );
        for o in OUTPUTS {
            let m = std::fs::symlink_metadata(shared.join(o)).expect("output exists");
            assert!(m.file_type().is_file(), "{name}/{o} replaced the link");
            assert!(m.len() > 0, "{name}/{o} not empty");
        }
        // Only the outputs and the links (left alone): no temporary file behind.
        for e in entries(&shared) {
            if OUTPUTS.contains(&e.as_str()) {
                continue;
            }
            assert!(names.contains(&e), "{name}: stray file {e}");
            let m = std::fs::symlink_metadata(shared.join(&e)).expect("meta");
            assert!(
                m.file_type().is_symlink(),
                "{name}: the link {e} is still there"
            );
        }
    }
}

#[test]
fn foreign_output_directories_and_links_to_them_are_refused() {
    let target = split_target("split-foreign");
    let base = OutDir::new(scratch("foreign"));
    let theirs = base.join("theirs");
    std::fs::create_dir_all(&theirs).expect("dir");
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).expect("chown");

    // Their directory.
    let out = record(target.pid(), &theirs, &["--duration", "1"]);
    assert_eq!(code(&out), Some(1));
    let err = stderr_of(&out);
    assert!(
        err.contains("belongs to uid 65534") && err.contains("use a directory of your own"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(entries(&theirs).is_empty());

    // Their link, as the output directory or on the way to it.
    let mine = base.join("mine");
    std::fs::create_dir_all(&mine).expect("dir");
    plant(&base.join("link"), &mine);
    for path in [base.join("link"), base.join("link/sub")] {
        let out = record(target.pid(), &path, &["--duration", "1"]);
        assert_eq!(code(&out), Some(1));
        let err = stderr_of(&out);
        assert!(err.contains("is a link of uid 65534"), "{err}");
        assert!(
            entries(&mine).is_empty(),
            "nothing written through the link"
        );
    }

    // The same directory is fine when that user ran sudo: they own what is written.
    let out = record_command(target.pid(), &theirs)
        .args(["--duration", "1"])
        .env("SUDO_UID", NOBODY.to_string())
        .env("SUDO_GID", NOBODY.to_string())
        .output()
        .expect("runs");
    assert_eq!(code(&out), Some(0), "{}", stderr_of(&out));
    for e in entries(&theirs) {
        let m = std::fs::metadata(theirs.join(&e)).expect("meta");
        assert_eq!(
            (m.uid(), m.gid()),
            (NOBODY, NOBODY),
            "{e} belongs to the sudo user"
        );
    }

    // Their link as well: followed when they ran sudo (they could write there themselves),
    // and what is written through it is theirs.
    let out = record_command(target.pid(), &base.join("link"))
        .args(["--duration", "1"])
        .env("SUDO_UID", NOBODY.to_string())
        .env("SUDO_GID", NOBODY.to_string())
        .output()
        .expect("runs");
    assert_eq!(code(&out), Some(0), "{}", stderr_of(&out));
    let written = entries(&mine);
    assert!(written.contains(&"recording.pb".to_string()), "{written:?}");
    for e in &written {
        let m = std::fs::metadata(mine.join(e)).expect("meta");
        assert_eq!(m.uid(), NOBODY, "{e} belongs to the sudo user");
    }

    // A file where the directory should be.
    let file = base.join("file");
    std::fs::write(&file, b"keep").expect("file");
    let out = record(target.pid(), &file, &["--duration", "1"]);
    assert_eq!(code(&out), Some(1));
    assert!(
        stderr_of(&out).contains("Not a directory"),
        "{}",
        stderr_of(&out)
    );
    assert_eq!(std::fs::read(&file).ok().as_deref(), Some(&b"keep"[..]));
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(name: &str, size: &str) -> Self {
        let p = scratch(name);
        std::fs::create_dir_all(&p).expect("mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&p)
            .status()
            .expect("mount runs");
        assert!(ok.success(), "tmpfs mounted (tests run as root)");
        Self(p)
    }

    fn remount_ro(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .expect("mount runs");
        assert!(ok.success(), "remounted read-only");
    }

    /// Fills the file system, then frees `leave` bytes again.
    fn fill_leaving(&self, leave: u64) {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0xa5u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.flush();
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        f.set_len(len.saturating_sub(leave)).expect("shrink filler");
    }
}

impl std::ops::Deref for Tmpfs {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `profiler record` started in the background; returns once the probes are attached.
// The child is handed to the caller, who waits for it (finish_child).
#[allow(clippy::zombie_processes)]
fn spawn_record(pid: u32, out: &Path, args: &[&str]) -> (Child, BufReader<ChildStderr>, String) {
    let mut child = record_command(pid, out)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("profiler starts");
    let mut err = BufReader::new(child.stderr.take().expect("piped"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            let status = child.wait();
            panic!("profiler ended before attaching ({status:?}): {seen}");
        }
        seen.push_str(&line);
        if line.contains("recording pid") {
            return (child, err, seen);
        }
    }
}

fn finish_child(
    mut child: Child,
    mut err: BufReader<ChildStderr>,
    mut seen: String,
) -> (Option<i32>, String) {
    let _ = err.read_to_string(&mut seen);
    let status = child.wait().expect("profiler exits");
    eprintln!("profiler stderr ({status}):\n{seen}");
    (status.code(), seen)
}

fn kill(child: &Child, sig: i32) {
    // SAFETY: plain syscall on a child we started and have not reaped.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Regenerates `dir`'s outputs into a new directory: proof that its recording.pb is whole.
fn report_ok(dir: &Path) -> OutDir {
    let to = OutDir::new(scratch("regen"));
    let out = profiler()
        .arg("report")
        .arg(dir)
        .arg("--output")
        .arg(&*to)
        .output()
        .expect("runs");
    assert_eq!(code(&out), Some(0), "report: {}", stderr_of(&out));
    to
}

#[test]
fn a_full_disk_loses_no_recording_and_names_each_missing_output() {
    let target = split_target("split-full");
    // How big the recording is, to leave room for it and little else.
    let reference = OutDir::new(scratch("full-ref"));
    let out = record(target.pid(), &reference, &["--duration", "2"]);
    assert_eq!(code(&out), Some(0));
    let pb = std::fs::metadata(reference.join("recording.pb"))
        .expect("pb")
        .len();
    let svg = std::fs::metadata(reference.join("flamegraph.svg"))
        .expect("svg")
        .len();
    // Room for the recording (tmpfs counts whole pages) and one page more.
    let leave = pb.div_ceil(4096) * 4096 + 4096;
    assert!(
        svg > leave + 4096,
        "the flame graph ({svg} B) cannot fit in {leave} B"
    );

    let fs = Tmpfs::mount("full", "4m");
    let dir = fs.join("out");
    let (child, err, seen) = spawn_record(target.pid(), &dir, &["--duration", "2"]);
    fs.fill_leaving(leave);
    let (status, err) = finish_child(child, err, seen);
    assert_eq!(status, Some(1), "incomplete outputs fail the run");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains("flamegraph.svg") && err.contains("`profiler report"),
        "{err}"
    );
    assert!(err.contains("output(s) could not be written to"), "{err}");
    let left = entries(&dir);
    assert!(left.contains(&"recording.pb".to_string()), "{left:?}");
    assert!(!left.contains(&"flamegraph.svg".to_string()), "{left:?}");
    assert!(
        left.iter().all(|e| !e.ends_with(".tmp")),
        "no temporary file left: {left:?}"
    );
    // Every output not written is named, and the recording regenerates them.
    for o in [
        "profile.folded",
        "flamegraph.svg",
        "summary.txt",
        "summary.json",
        "trace.perfetto-trace",
    ] {
        assert!(
            left.contains(&o.to_string()) || err.contains(o),
            "{o} neither written nor named"
        );
    }
    let regen = report_ok(&dir);
    assert!(regen.join("flamegraph.svg").exists());

    // No room at all: the recording itself fails, and says so; nothing is deleted.
    let fs = Tmpfs::mount("full0", "4m");
    let dir = fs.join("out");
    let (child, err, seen) = spawn_record(target.pid(), &dir, &["--duration", "1"]);
    fs.fill_leaving(0);
    let (status, err) = finish_child(child, err, seen);
    assert_eq!(status, Some(1));
    assert!(
        err.contains("recording.pb") && err.contains("cannot be regenerated"),
        "{err}"
    );
    assert!(dir.is_dir(), "the directory stays");
    assert!(
        entries(&dir).iter().all(|e| !e.ends_with(".tmp")),
        "{:?}",
        entries(&dir)
    );
}

#[test]
fn an_output_mount_turning_read_only_is_reported_not_fatal() {
    let target = split_target("split-rofs");
    let fs = Tmpfs::mount("rofs", "16m");
    let dir = fs.join("out");
    let (child, err, seen) = spawn_record(target.pid(), &dir, &["--duration", "1"]);
    fs.remount_ro();
    let (status, err) = finish_child(child, err, seen);
    assert_eq!(status, Some(1));
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(
        err.contains("cannot write") && err.contains("recording.pb"),
        "{err}"
    );
    assert!(dir.is_dir(), "the directory stays");
}

fn recording_dir() -> (Target, OutDir) {
    let target = split_target("split-damaged");
    let dir = OutDir::new(scratch("damaged"));
    let out = record(target.pid(), &dir, &["--duration", "1"]);
    assert_eq!(code(&out), Some(0));
    (target, dir)
}

fn report_refuses(bytes: &[u8], needle: &[&str]) -> String {
    let dir = OutDir::new(scratch("bad-pb"));
    std::fs::create_dir_all(&*dir).expect("dir");
    std::fs::write(dir.join("recording.pb"), bytes).expect("write");
    let to = scratch("bad-pb-out");
    let out = profiler()
        .arg("report")
        .arg(&*dir)
        .arg("--output")
        .arg(&to)
        .output()
        .expect("runs");
    let err = stderr_of(&out);
    assert_eq!(code(&out), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        needle.iter().any(|n| err.contains(n)),
        "{needle:?} not in {err}"
    );
    assert!(!to.exists(), "no output directory for a refused recording");
    err
}

#[test]
fn truncated_and_corrupted_recordings_are_refused() {
    let (_target, dir) = recording_dir();
    let bytes = std::fs::read(dir.join("recording.pb")).expect("pb");
    let len = bytes.len();
    // 12 offsets spread over the file, header included, from a fixed seed.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut offsets = vec![0, 7, 23, 24, len - 1];
    while offsets.len() < 12 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        offsets.push((x % len as u64) as usize);
    }
    for &at in &offsets {
        let err = report_refuses(&bytes[..at], &["truncated"]);
        eprintln!("cut at {at} of {len}: {err}");
    }
    // A byte changed in the magic, the version, the length, the checksum and the payload.
    for at in [0, 9, 13, 21, 24, len / 2, len - 1] {
        let mut b = bytes.clone();
        b[at] ^= 0x20;
        let err = report_refuses(&b, &["corrupted", "truncated", "header", "format version"]);
        eprintln!("byte {at} changed: {err}");
    }
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"tail");
    report_refuses(&longer, &["corrupted"]);
    report_refuses(b"profiler-recording\n\x08\x01", &["record it again"]);
}

/// `report DIR --from/--to` writes the window's outputs beside the recording but never over
/// it, however `-o` names that same directory.
#[test]
fn a_window_reported_into_its_own_directory_keeps_the_full_recording() {
    let (_target, dir) = recording_dir();
    let full = std::fs::read(dir.join("recording.pb")).expect("recording.pb");
    let samples = summary(&dir)["samples"]["recorded"].as_u64().unwrap_or(0);
    assert!(samples > 20, "{samples} samples in 1 s at 99 Hz");
    let dot = dir.join(".");
    for out in [&*dir, dot.as_path()] {
        let o = profiler()
            .arg("report")
            .arg(&*dir)
            .args(["--from", "0.2", "--to", "0.6", "--output"])
            .arg(out)
            .output()
            .expect("report runs");
        assert_eq!(code(&o), Some(0), "report: {}", stderr_of(&o));
        assert!(
            std::fs::read(dir.join("recording.pb")).expect("recording.pb") == full,
            "-o {}: the window replaced the full recording",
            out.display()
        );
        let window = summary(&dir)["samples"]["recorded"].as_u64().unwrap_or(0);
        assert!(
            window < samples,
            "the window's summary: {window} of {samples}"
        );
    }
    // The full recording still regenerates every sample.
    let again = report_ok(&dir);
    assert_eq!(
        summary(&again)["samples"]["recorded"].as_u64(),
        Some(samples)
    );
}

#[test]
fn sighup_ends_the_recording_like_sigterm() {
    let target = split_target("split-hup");
    let dir = OutDir::new(scratch("hup"));
    let (child, err, seen) = spawn_record(target.pid(), &dir, &[]);
    std::thread::sleep(Duration::from_millis(700));
    kill(&child, libc::SIGHUP);
    let (status, _) = finish_child(child, err, seen);
    assert_eq!(status, Some(0));
    let s = summary(&dir);
    assert_eq!(s["stop_reason"], "SIGHUP received");
    assert!(s["samples"]["recorded"].as_u64().unwrap_or(0) > 0);

    // An SSH drop: the terminal is gone too, so every later message fails to print.
    let dir = OutDir::new(scratch("hup-closed"));
    let (mut child, err, _) = spawn_record(target.pid(), &dir, &[]);
    drop(err);
    std::thread::sleep(Duration::from_millis(700));
    kill(&child, libc::SIGHUP);
    let status = child.wait().expect("profiler exits");
    assert_eq!(status.code(), Some(0), "{status}");
    for o in ["recording.pb", "flamegraph.svg", "summary.json"] {
        assert!(dir.join(o).exists(), "{o} written");
    }
}

/// Stops a recording with SIGINT, then sends `after` while it is being post-processed.
fn signals_after_stop(name: &str, after: &[i32]) -> (Option<i32>, String, OutDir) {
    let target = split_target(name);
    let dir = OutDir::new(scratch(name));
    let (child, err, seen) =
        spawn_record(target.pid(), &dir, &["--test-hold-after-stop-ms", "2500"]);
    std::thread::sleep(Duration::from_millis(500));
    kill(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(700));
    for &sig in after {
        kill(&child, sig);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, err) = finish_child(child, err, seen);
    (status, err, dir)
}

#[test]
fn a_signal_during_post_processing_keeps_the_recording() {
    // SIGTERM while symbols are resolved: the recording is still written, the rest skipped.
    let (status, err, dir) = signals_after_stop("split-term-sym", &[libc::SIGTERM]);
    assert_eq!(status, Some(128 + libc::SIGTERM), "{err}");
    assert!(
        err.contains("stopped by SIGTERM") && err.contains("recording.pb kept"),
        "{err}"
    );
    assert!(err.contains("`profiler report"), "{err}");
    assert_eq!(entries(&dir), ["recording.pb"]);
    let regen = report_ok(&dir);
    assert!(regen.join("summary.json").exists());

    // Ctrl-C twice: the first stopped the recording, the second stops the writing at once.
    let (status, err, dir) = signals_after_stop("split-int-int", &[libc::SIGINT]);
    assert_eq!(status, Some(128 + libc::SIGINT), "{err}");
    assert!(err.contains("recording.pb kept"), "{err}");
    assert_eq!(entries(&dir), ["recording.pb"]);

    // Once more before anything is written: quit at once, and say nothing was kept.
    let (status, err, dir) = signals_after_stop("split-int3", &[libc::SIGINT, libc::SIGINT]);
    assert_eq!(status, Some(128 + libc::SIGINT), "{err}");
    assert!(err.contains("nothing of this recording was kept"), "{err}");
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
}

#[test]
fn bad_arguments_are_one_line_usage_errors() {
    let target = split_target("split-args");
    let pid = target.pid().to_string();
    for (args, status, needle) in [
        (&["--frequency", "0"][..], 2, "--frequency"),
        (&["--frequency", "abc"][..], 2, "--frequency"),
        (
            &["--frequency", "100001"][..],
            1,
            "perf_event_max_sample_rate",
        ),
        (&["--duration=-1"][..], 2, "greater than zero"),
        (&["--duration", "-1"][..], 2, "greater than zero"),
        (&["--frequency", "-5"][..], 2, "at least 1 Hz"),
        (
            &["--duration", "1", "--span-fn", "no_such_function_xyz"][..],
            1,
            "no_such_function_xyz",
        ),
    ] {
        let dir = scratch("args");
        let out = profiler()
            .args(["record", "--quiet", "--pid", &pid, "--output"])
            .arg(&dir)
            .args(args)
            .output()
            .expect("runs");
        let err = stderr_of(&out);
        eprintln!("{args:?}: {err}");
        assert_eq!(code(&out), Some(status), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!dir.exists(), "{args:?}: no output directory");
    }
}

#[test]
fn decoders_survive_a_bounded_fuzz_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_profiler-fuzz"))
        .args(["--secs", "45"])
        .output()
        .expect("fuzzer runs");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "the fuzzer found crashes (inputs in target/fuzz-crashes)"
    );
    for t in ["recording", "maps", "fail_if", "ring", "module"] {
        assert!(
            text.contains(&format!("profiler-fuzz: {t}: ")) && text.contains(" 0 crashes"),
            "{t}"
        );
    }
}

/// A program whose own debug information is malformed is recorded all the same. The fuzzer
/// found that a `.debug_line` setting a file index its header does not list (one byte of a
/// `gcc -g` build of split.c, kept in the fuzz corpus) makes blazesym panic, which took
/// the whole recording with it: a target chooses its own ELF. Now its frames keep their
/// names from the symbol table, without source lines, and a warning names the file and the fix.
#[test]
fn a_program_with_malformed_debug_information_is_still_recorded() {
    let dir = OutDir::new(scratch("badline-bin"));
    std::fs::create_dir_all(&*dir).expect("scratch dir");
    let bin = dir.join("badline");
    std::fs::copy(
        workspace_root().join("tests/fuzz/corpus/module/crash-debug-line-file-index"),
        &bin,
    )
    .expect("corpus file");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let target = Target::start(&bin, &["60"]);
    let out_dir = OutDir::new(scratch("badline"));
    let out = record(
        target.pid(),
        &out_dir,
        &["--duration", "2", "--frequency", "199"],
    );
    let err = stderr_of(&out);
    assert!(out.status.success(), "profiler failed: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let s = summary(&out_dir);
    let warning = warning_with(
        &s,
        "badline: its symbols or debug information are malformed",
    );
    eprintln!("{warning}");
    assert!(warning.contains("from the symbol table alone"), "{warning}");
    assert!(!warning.contains(" 0 are named in full"), "{warning}");
    assert!(warning.contains("strip -g"), "{warning}");
    let folded = folded(&out_dir);
    let total = total(&folded);
    let hot = share(&folded, |f| f == "hot_a" || f == "hot_b");
    eprintln!("{total} samples, {hot:.1}% in hot_a or hot_b");
    assert!(total >= 100, "{total} samples");
    assert!(hot > 80.0, "hot_a and hot_b named in {hot:.1}%");
}

/// The summary's warning that contains `needle`.
fn warning_with<'a>(summary: &'a serde_json::Value, needle: &str) -> &'a str {
    summary["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w.as_str())
        .find(|w| w.contains(needle))
        .unwrap_or_else(|| panic!("no warning with {needle:?}: {}", summary["warnings"]))
}

/// The end of an ELF64 file's executable segments, rounded up to a page: what the file can be
/// cut to while a process still runs the code it mapped from it.
fn end_of_code(elf: &[u8]) -> u64 {
    let bytes = |at: usize, n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&elf[at..at + n]);
        u64::from_le_bytes(b)
    };
    let (phoff, phentsize, phnum) = (bytes(0x20, 8), bytes(0x36, 2), bytes(0x38, 2));
    (0..phnum)
        .map(|i| (phoff + i * phentsize) as usize)
        // PT_LOAD with PF_X: its file offset plus its size in the file.
        .filter(|&p| bytes(p, 4) == 1 && bytes(p + 4, 4) & 1 != 0)
        .map(|p| bytes(p + 8, 8) + bytes(p + 0x20, 8))
        .max()
        .expect("an executable segment")
        .next_multiple_of(4096)
}

/// A file a target maps that shrinks on disk while recorded (`cp` over a loaded library, or a
/// target cutting its own file to stop a sidecar): the profiler's reads of the pages cut off
/// faulted with SIGBUS, which killed it and lost the recording. Here every stack passes
/// through a library cut to its code pages after the profiler mapped it, and the first stacks
/// through it come after the cut, so DWARF unwinding reads its unwind tables from pages that
/// are gone. Now those pages read as zeros, and a warning counts them and names the file.
#[test]
fn a_library_cut_short_on_disk_while_recorded_loses_no_recording() {
    let dir = OutDir::new(scratch("shrink-lib"));
    std::fs::create_dir_all(&*dir).expect("scratch dir");
    // The unwind tables after the code, in pages of their own, whatever the linker's default.
    let built = build_c(
        "libshrink.so",
        "shrinklib.c",
        &["-O2", "-g", "-fPIC", "-shared", "-Wl,-z,separate-code"],
    );
    let lib = dir.join("libshrink.so");
    std::fs::copy(&built, &lib).expect("copy the library");
    let keep = end_of_code(&std::fs::read(&lib).expect("read the library"));
    let bin = build_c("shrink", "shrink.c", C_NOFP);
    let mut target = Target::start(&bin, &[lib.to_str().expect("utf-8 path"), "30"]);
    let out_dir = OutDir::new(scratch("shrink"));
    let (child, err, seen) = spawn_record(
        target.pid(),
        &out_dir,
        &[
            "--duration",
            "3",
            "--frequency",
            "199",
            "--call-graph",
            "dwarf",
        ],
    );
    let before = std::fs::metadata(&lib).expect("library").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&lib)
        .and_then(|f| f.set_len(keep))
        .expect("cut the library");
    eprintln!("libshrink.so cut from {before} to {keep} bytes");
    target.go();
    let (code, err) = finish_child(child, err, seen);
    assert_eq!(code, Some(0), "the profiler did not finish: {err}");
    let s = summary(&out_dir);
    let shrunk = warning_with(&s, "of mapped files read as zeros");
    assert!(
        shrunk.ends_with(lib.to_str().expect("utf-8 path")),
        "{shrunk}"
    );
    let folded = folded(&out_dir);
    let total = total(&folded);
    let spin = share(&folded, |f| f == "spin" || f == "burn");
    eprintln!("{total} samples, {spin:.1}% in spin or burn; {shrunk}");
    assert!(total >= 200, "{total} samples");
    assert!(spin > 90.0, "spin or burn named in {spin:.1}%");
}

/// The coverage check on CPU-bound targets: the samples match the threads' own CPU time
/// (schedstat) × frequency, whatever else the machine runs, and the summary says so.
#[test]
fn coverage_of_cpu_bound_targets_is_close_to_expected() {
    let single = split_target("split-coverage");
    let threads = Target::start(&build_c("threads-coverage", "threads.c", C_FP), &["60"]);
    // Hundreds of Hz: on a loaded machine the targets get a share of a CPU, ticks then land
    // on them at random, and the figure needs thousands of expected samples to be within a
    // few percent of its mean (at 99 Hz and a 1.3 s share, one run read 91.5%).
    for (target, hz, threads_at_least) in [(&single, "999", 1), (&threads, "499", 3)] {
        let dir = record_ok(target, "coverage", &["--duration", "6", "--frequency", hz]);
        let s = summary(&dir);
        let c = &s["coverage"];
        let pct = c["percent"].as_f64().unwrap_or(-1.0);
        eprintln!("coverage at {hz} Hz: {c}");
        assert!(
            (90.0..=110.0).contains(&pct),
            "sampled {pct}% of expected: {c}"
        );
        assert!(
            c["threads"].as_u64().unwrap_or(0) >= threads_at_least,
            "{c}"
        );
        assert!(c["expected"].as_u64().unwrap_or(0) >= 300, "{c}");
        assert_eq!(c["whole_recording"], false);
        let text = std::fs::read_to_string(dir.join("summary.txt")).expect("summary.txt");
        assert!(
            text.contains(&format!("coverage: sampled {pct:.1}% of expected")),
            "{text}"
        );
        assert!(
            !s["warnings"].to_string().contains("of expected"),
            "no warning at {pct}%"
        );

        // Cut to a window, the coverage and the counters say they cover the whole recording.
        let cut = OutDir::new(scratch("coverage-cut"));
        let out = profiler()
            .arg("report")
            .arg(&*dir)
            .args(["--from", "1", "--to", "2", "--output"])
            .arg(&*cut)
            .output()
            .expect("report runs");
        assert!(out.status.success(), "{}", stderr_of(&out));
        let w = summary(&cut);
        assert_eq!(w["coverage"]["whole_recording"], true, "{}", w["coverage"]);
        assert_eq!(w["samples"]["counters_whole_recording"], true);
        assert_eq!(w["coverage"]["sampled"], c["sampled"]);
        let text = std::fs::read_to_string(cut.join("summary.txt")).expect("summary.txt");
        assert!(text.contains(", whole recording\n"), "{text}");
        assert!(
            text.contains("recorded in the window; in the whole recording"),
            "{text}"
        );
    }
}

/// A target that exits ends the recording, and its threads are gone at the stop: the last
/// reading taken while it ran (about once a second) stands in for the end one.
#[test]
fn coverage_of_a_target_that_exits_uses_its_last_reading() {
    let target = Target::start(&build_c("split-coverage-exit", "split.c", C_FP), &["4"]);
    let dir = record_ok(&target, "coverage-exit", &["--frequency", "999"]);
    let s = summary(&dir);
    assert_eq!(s["stop_reason"], "target exited");
    let c = &s["coverage"];
    eprintln!("coverage of a target that exited: {c}");
    assert!(c["expected"].as_u64().unwrap_or(0) >= 300, "{c}");
    let pct = c["percent"].as_f64().unwrap_or(-1.0);
    assert!(
        (90.0..=110.0).contains(&pct),
        "sampled {pct}% of expected: {c}"
    );
}

/// Work done by threads that start and end during the recording: the per-thread figure has
/// almost nothing to compare (only the main thread lives through, and it waits), so the
/// process-wide figure (ended threads' CPU time kept in /proc/PID/stat) carries the check.
#[test]
fn coverage_counts_threads_that_ended_process_wide() {
    let target = Target::start(&build_c("cpu-churn", "cpu_churn.c", C_FP), &["60"]);
    let dir = record_ok(
        &target,
        "coverage-churn",
        &["--duration", "6", "--frequency", "999"],
    );
    let s = summary(&dir);
    let c = &s["coverage"];
    eprintln!("coverage of short-lived threads: {c}");
    assert!(c["threads_left_out"].as_u64().unwrap_or(0) >= 10, "{c}");
    assert!(c["process_expected"].as_u64().unwrap_or(0) >= 300, "{c}");
    let pct = c["process_percent"].as_f64().unwrap_or(-1.0);
    assert!((90.0..=110.0).contains(&pct), "process-wide {pct}%: {c}");
    let text = std::fs::read_to_string(dir.join("summary.txt")).expect("summary.txt");
    assert!(
        text.contains(&format!("process-wide, ended threads included: {pct:.1}%")),
        "{text}"
    );
}
