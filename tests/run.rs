//! `profiler run -- CMD`: exit codes, short-lived children, the privilege drop under sudo,
//! stdio passthrough; and `record --follow-children`.
use std::process::Output;

use profiler_tests::*;

fn run(out: &std::path::Path, args: &[&str], cmd: &[&str]) -> Output {
    let o = profiler()
        .args(["run", "--quiet", "--output"])
        .arg(out)
        .args(args)
        .arg("--")
        .args(cmd)
        .output()
        .expect("profiler runs");
    eprintln!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn exit_codes_pass_through() {
    let dir = scratch("run-exit");
    let o = run(&dir, &[], &["sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert!(dir.join("summary.json").exists(), "outputs written");
    let o = run(&dir, &[], &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(o.status.code(), Some(128 + 15), "killed by SIGTERM → 143");
    let o = run(&dir, &[], &["true"]);
    assert_eq!(o.status.code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);

    let missing = scratch("run-missing");
    let o = run(&missing, &[], &["/nonexistent/bench"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr_of(&o).contains("cannot run `/nonexistent/bench`"));
    assert!(!missing.exists(), "nothing left behind");
}

#[test]
fn a_50ms_child_is_fully_symbolized() {
    let bin = build_c("split-child", "split.c", C_FP);
    let dir = scratch("run-child");
    // `; true` keeps the shell alive, so the program is a forked child, not the shell itself.
    let script = format!("{} 0.05 > /dev/null; true", bin.display());
    let o = run(&dir, &["--frequency", "999"], &["sh", "-c", &script]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let f = folded(&dir);
    let name = bin.file_name().and_then(|n| n.to_str()).expect("name");
    let child: Vec<&(Vec<String>, u64)> = f
        .iter()
        .filter(|(frames, _)| frames[0].starts_with(&name[..name.len().min(15)]))
        .collect();
    let samples: u64 = child.iter().map(|(_, n)| n).sum();
    // Named: every frame of the program, libc and the loader has a function name.
    let unnamed = |fr: &String| {
        fr.contains("[unknown]")
            || [name, "libc.so.6", "ld-linux-x86-64.so.2"]
                .iter()
                .any(|m| fr.starts_with(&format!("{m}+0x")))
    };
    let named: u64 = child
        .iter()
        .filter(|(frames, _)| !frames.iter().any(unnamed))
        .filter(|(frames, _)| frames.iter().any(|fr| fr == "main" || fr == "_start"))
        .map(|(_, n)| n)
        .sum();
    let hot: u64 = child
        .iter()
        .filter(|(frames, _)| frames.iter().any(|fr| fr == "hot_a" || fr == "hot_b"))
        .filter(|(frames, _)| frames.iter().any(|fr| fr == "main"))
        .map(|(_, n)| n)
        .sum();
    let unknown: u64 = child
        .iter()
        .filter(|(frames, _)| frames.iter().any(|fr| fr.contains("unknown")))
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "50 ms child: {samples} samples, {named} fully named from main or _start, {hot} with hot_a/hot_b under main, {unknown} with [unknown]"
    );
    let mut roots: std::collections::BTreeMap<&str, u64> = Default::default();
    for (frames, n) in &f {
        *roots.entry(frames[0].as_str()).or_default() += n;
    }
    eprintln!("samples by root frame: {roots:?}");
    for (frames, n) in child
        .iter()
        .filter(|(fr, _)| !fr.iter().any(|x| x == "hot_a" || x == "hot_b"))
    {
        eprintln!("  {n} {}", frames.join(";"));
    }
    assert!(samples >= 20, "the child was sampled ({samples})");
    // Its address space comes from the kernel's own records of its mappings: nothing of it
    // depends on reading /proc before it exits.
    assert!(
        named * 100 >= samples * 95,
        "≥95% of its samples fully named"
    );
    assert_eq!(unknown, 0, "no [unknown] frame");
    // A sample in the vDSO's clock_gettime walks past hot_a by frame pointers (glibc's
    // wrapper has none): the work itself is still most of the child.
    assert!(hot * 4 >= samples * 3, "≥75% in hot_a/hot_b under main");
    let s = std::fs::read_to_string(dir.join("summary.json")).expect("summary");
    assert!(s.contains("target exited"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn under_sudo_the_command_runs_as_the_invoking_user() {
    let dir = scratch("run-sudo");
    let id = || {
        let mut c = profiler();
        c.env("SUDO_UID", "65534")
            .env("SUDO_GID", "65534")
            .env("SUDO_USER", "nobody");
        c
    };
    let o: Output = id()
        .args(["run", "--quiet", "--output"])
        .arg(&dir)
        .args([
            "--",
            "sh",
            "-c",
            "echo uid=$(id -u) gid=$(id -g) groups=$(id -G)",
        ])
        .output()
        .expect("runs");
    let out = String::from_utf8_lossy(&o.stdout);
    eprintln!("{out} {}", stderr_of(&o));
    assert!(o.status.success());
    assert!(out.contains("uid=65534 gid=65534"), "{out}");
    assert!(
        !out.contains("groups=0") && !out.split_whitespace().any(|w| w == "0"),
        "{out}"
    );
    // stdout is the command's alone: the profiler's report goes to stderr.
    assert_eq!(out.lines().count(), 1, "{out}");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir.join("summary.json")).expect("outputs");
    assert_eq!((m.uid(), m.gid()), (65534, 65534));
    let _ = std::fs::remove_dir_all(&dir);

    let o = id()
        .args(["run", "--quiet", "--as-root", "--output"])
        .arg(&dir)
        .args(["--", "id", "-u"])
        .output()
        .expect("runs");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn record_follow_children_profiles_what_the_target_starts() {
    let bin = build_c("split-follow", "split.c", C_FP);
    // A shell that waits for the go line, then starts a worker.
    let script = format!(
        "echo ready; read go; {} 0.5 > /dev/null; true",
        bin.display()
    );
    let mut target = Target::start(std::path::Path::new("/bin/sh"), &["-c", &script]);
    let (dir, _) = record_run(
        &mut target,
        "follow",
        &["--follow-children", "--frequency", "499"],
    );
    let f = folded(&dir);
    let in_child = share(&f, |fr| fr == "hot_a");
    eprintln!("hot_a in {in_child:.1}% of samples");
    assert!(in_child > 40.0, "the child's work is in the profile");
}

#[test]
fn ctrl_c_goes_to_the_command_and_outputs_are_still_written() {
    use std::os::unix::process::CommandExt;
    let dir = scratch("run-ctrlc");
    // Like a terminal: profiler and command in one process group, SIGINT to the group.
    let script = "trap 'echo interrupted; exit 3' INT; echo started; while :; do sleep 0.05; done";
    let mut child = profiler()
        .args(["run", "--quiet", "--output"])
        .arg(&dir)
        .args(["--", "sh", "-c", script])
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("profiler starts");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // SAFETY: signalling the process group we created.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    let _ = child.stdin.take();
    let out = child.wait_with_output().expect("profiler exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", stderr_of(&out));
    assert!(
        stdout.contains("started") && stdout.contains("interrupted"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(3), "the command's exit code");
    assert!(
        dir.join("summary.json").exists(),
        "outputs written after Ctrl-C"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--duration` ends the recording, not the command: a SIGTERM to the profiler while it waits
/// for the command still goes on to it (a container's stop), as it does while recording.
#[test]
fn sigterm_after_the_recording_still_reaches_the_command() {
    use std::os::unix::process::CommandExt;
    let dir = scratch("run-term-after");
    let script = "trap 'exit 42' TERM; while :; do sleep 0.05; done";
    let mut child = profiler()
        .args(["run", "--quiet", "--duration", "1", "--output"])
        .arg(&dir)
        .args(["--", "sh", "-c", script])
        .process_group(0)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("profiler starts");
    let group = -(child.id() as i32);
    // The outputs are written once the recording stops ("wrote DIR:"): the profiler then
    // waits for the command.
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("wrote ") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let written = rx.recv_timeout(std::time::Duration::from_secs(60)).is_ok();
    // SAFETY: signalling the profiler we started, not its group.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let signalled = std::time::Instant::now();
    let mut status = None;
    while status.is_none() && signalled.elapsed().as_secs() < 30 {
        status = child.try_wait().expect("profiler waited for");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if status.is_none() {
        // SAFETY: the process group we created (profiler and command).
        unsafe { libc::kill(group, libc::SIGKILL) };
    }
    let out = child.wait_with_output().expect("profiler exits");
    let stderr = reader.join().unwrap_or_default();
    eprintln!("{stderr}");
    assert!(written, "outputs written after 1 s");
    assert!(status.is_some(), "the command never got the SIGTERM");
    assert_eq!(out.status.code(), Some(42), "the command's trap ran");
    assert!(
        !stderr.contains("stopping"),
        "nothing was left to stop: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Once the command has exited, a SIGTERM stops the profiler's own work as under `record`:
/// recording.pb is kept and the rest skipped (a container's stop, with SIGKILL to follow).
#[test]
fn sigterm_after_the_command_exited_keeps_the_recording() {
    use std::io::{BufRead, Read};
    let dir = scratch("run-term-exited");
    let mut child = profiler()
        .args([
            "run",
            "--quiet",
            "--test-hold-after-stop-ms",
            "4000",
            "--output",
        ])
        .arg(&dir)
        .args(["--", "sh", "-c", "sleep 0.3"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("profiler starts");
    // From "recording", the command ends after 0.3 s and the profiler then holds for 4 s
    // before resolving symbols: 2 s is in the hold however slow the start was.
    let mut err = std::io::BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut stderr = String::new();
    while !stderr.contains("profiler: recording") {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        stderr.push_str(&line);
    }
    std::thread::sleep(std::time::Duration::from_millis(2000));
    // SAFETY: signalling the profiler we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = err.read_to_string(&mut stderr);
    let status = child.wait().expect("profiler exits");
    eprintln!("{stderr}");
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{stderr}");
    assert!(stderr.contains("recording.pb kept"), "{stderr}");
    assert!(dir.join("recording.pb").exists());
    assert!(
        !dir.join("summary.json").exists(),
        "the other outputs skipped"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn spans_of_the_command_itself_are_recorded_under_run() {
    use std::io::Write;
    let bin = build_c("probes-run", "probes_c.c", &c_fp_probes());
    let dir = scratch("run-spans");
    // The command waits for a line on stdin, which passes through the profiler.
    let mut child = profiler()
        .args(["run", "--quiet", "--frequency", "999", "--output"])
        .arg(&dir)
        .arg("--")
        .arg(&bin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("profiler starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write");
    let out = child.wait_with_output().expect("exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", stderr_of(&out));
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout.contains("request 600 db_query 600"), "{stdout}");
    let spans: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("spans.json")).expect("spans.json"))
            .expect("json");
    let all = spans["spans"].as_array().expect("array");
    let named = |n: &str| all.iter().filter(|s| s["name"] == n).count();
    assert_eq!((named("request"), named("db_query")), (600, 600));
    assert_eq!(spans["lost_events"], 0);
    let threads = std::fs::read_to_string(dir.join("summary.json")).expect("summary");
    assert!(
        !threads.contains("\"name\": \"profiler\""),
        "threads named after exec"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads the profiler's stderr into `seen` until it says it probed `bin`.
fn await_probes_in(err: &mut impl std::io::BufRead, bin: &std::path::Path, seen: &mut String) {
    let want = format!("profiler: span probes in {}", bin.display());
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).expect("profiler stderr");
        seen.push_str(&line);
        assert!(n > 0, "profiler ended before probing a child: {seen}");
        if line.starts_with(&want) {
            return;
        }
    }
}

/// A child the command starts runs another instrumented program: its file is probed when the
/// child maps it, and its spans are recorded under its own pid.
#[test]
fn spans_of_a_child_program_are_recorded_under_run() {
    use std::io::{BufReader, Read, Write};
    let bin = build_c("probes-run-child", "probes_c.c", &c_fp_probes());
    let dir = scratch("run-child-spans");
    // `; true`: the shell forks the program instead of exec'ing it.
    let mut child = profiler()
        .args(["run", "--quiet", "--frequency", "999", "--output"])
        .arg(&dir)
        .args(["--", "sh", "-c"])
        .arg(format!("{}; true", bin.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("profiler starts");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    await_probes_in(&mut err, &bin, &mut seen);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("write");
    let out = child.wait_with_output().expect("exits");
    err.read_to_string(&mut seen).expect("stderr");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{seen}");
    assert!(out.status.success(), "{seen}");
    assert!(stdout.contains("request 600 db_query 600"), "{stdout}");
    let spans: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("spans.json")).expect("spans.json"))
            .expect("json");
    let all = spans["spans"].as_array().expect("array");
    let named = |n: &str| all.iter().filter(|s| s["name"] == n).count();
    assert_eq!((named("request"), named("db_query")), (600, 600));
    assert_eq!(spans["lost_events"], 0);
    // All of them the child's: not the shell the command is.
    let s = summary(&dir);
    assert!(all.iter().all(|sp| sp["pid"] != s["pid"]), "{}", s["pid"]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A probed program rewritten in place (`cp` over it) between two children is a new module
/// of the same inode: its probes at unchanged offsets are there already, and a second set
/// would run each probe twice per call.
#[test]
fn a_probed_program_rewritten_in_place_is_probed_once() {
    use std::io::{BufReader, Read, Write};
    let mut flags = c_fp_probes();
    flags.push("-DREQUESTS=50".into());
    let first = build_c("probes-rewrite-50", "probes_c.c", &flags);
    flags.pop();
    flags.push("-DREQUESTS=60".into());
    let second = build_c("probes-rewrite-60", "probes_c.c", &flags);
    // The premise: the two builds differ only in a constant, the probes' functions sit at
    // the same offsets.
    let probe_symbols = |bin: &std::path::Path| -> Vec<String> {
        let out = std::process::Command::new("nm")
            .arg(bin)
            .output()
            .expect("nm runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("profiler_"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        probe_symbols(&first),
        probe_symbols(&second),
        "same offsets"
    );
    let dir = scratch("run-rewrite-spans");
    let bin = dir.with_extension("bin");
    // Each child waits for a line: sent once its file is probed. `timeout`: an old build
    // that never probes the second child must not hang the test.
    let script = format!(
        "cp {first} {bin}; timeout 20 {bin}; cp {second} {bin}; timeout 20 {bin}",
        first = first.display(),
        second = second.display(),
        bin = bin.display()
    );
    let mut child = profiler()
        .args(["run", "--quiet", "--frequency", "999", "--output"])
        .arg(&dir)
        .args(["--", "sh", "-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("profiler starts");
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut stdin = child.stdin.take().expect("stdin");
    let mut seen = String::new();
    for _ in 0..2 {
        await_probes_in(&mut err, &bin, &mut seen);
        stdin.write_all(b"go\n").expect("write");
        stdin.flush().expect("flush");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("exits");
    err.read_to_string(&mut seen).expect("stderr");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{seen}");
    assert!(out.status.success(), "{seen}");
    assert!(stdout.contains("request 100 db_query 100"), "{stdout}");
    assert!(stdout.contains("request 120 db_query 120"), "{stdout}");
    let spans: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("spans.json")).expect("spans.json"))
            .expect("json");
    let all = spans["spans"].as_array().expect("array");
    let named = |n: &str| all.iter().filter(|s| s["name"] == n).count();
    assert_eq!((named("request"), named("db_query")), (220, 220));
    // Probes twice at one place show as each span begun twice and ended twice.
    let s = summary(&dir);
    eprintln!("spans: {}", s["spans"]);
    assert_eq!(s["spans"]["duplicate_begins"], 0);
    assert_eq!(s["spans"]["unmatched_ends"], 0);
    assert_eq!(spans["lost_events"], 0);
    let _ = std::fs::remove_file(&bin);
    let _ = std::fs::remove_dir_all(&dir);
}
