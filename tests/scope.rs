//! Scopes wider than one pid: `--all`, `--cgroup` (a cgroup v2 directory of our own under
//! the unified hierarchy, removed at the end), `--container` (a cgroup named the way docker
//! names its scopes), and `--pid` given twice. Membership is decided in the kernel: the
//! processes that start inside the scope after the attach are the ones that matter.
use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use profiler_tests::*;

/// A cgroup v2 directory for one test, removed (after its processes end) when dropped.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(name: &str) -> Self {
        let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
            .expect("a cgroup v2 hierarchy");
        let dir = root.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).expect("create the test cgroup");
        Self(dir)
    }

    /// `sh -c SCRIPT` started inside the cgroup: it moves itself in before running SCRIPT.
    fn spawn(&self, script: &str) -> Child {
        let procs = self.0.join("cgroup.procs");
        Command::new("sh")
            .arg("-c")
            .arg(format!("echo $$ > {}; {script}", procs.display()))
            .spawn()
            .expect("sh")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn record_scope(dir: &Path, args: &[&str]) -> Output {
    let out = profiler()
        .args(["record", "--quiet", "--frequency", "499", "--output"])
        .arg(dir)
        .args(args)
        .output()
        .expect("profiler runs");
    eprintln!("stderr: {}", stderr_of(&out));
    out
}

/// Samples per process name (the default root frame).
fn by_comm(dir: &Path) -> std::collections::HashMap<String, u64> {
    let mut m = std::collections::HashMap::new();
    for (frames, n) in folded(dir) {
        *m.entry(frames[0].clone()).or_default() += n;
    }
    m
}

fn short_named(name: &str) -> PathBuf {
    build_c(name, "short.c", C_FP)
}

/// The kernel's name of a program: its file name, cut to 15 bytes.
fn comm_of(bin: &Path) -> String {
    let name = bin.file_name().and_then(|n| n.to_str()).expect("name");
    name[..name.len().min(15)].to_string()
}

/// Share of `comm`'s samples that are fully named through main;spin.
fn through_spin(dir: &Path, comm: &str) -> (u64, u64) {
    let f = folded(dir);
    let mine: Vec<&(Vec<String>, u64)> = f.iter().filter(|(s, _)| s[0] == comm).collect();
    let total = mine.iter().map(|(_, n)| n).sum();
    let spin = mine
        .iter()
        .filter(|(s, _)| s.windows(2).any(|w| w[0] == "main" && w[1] == "spin"))
        .map(|(_, n)| n)
        .sum();
    for (s, n) in mine
        .iter()
        .filter(|(s, _)| !s.windows(2).any(|w| w[0] == "main" && w[1] == "spin"))
        .take(8)
    {
        eprintln!("  not through main;spin: {n} {}", s.join(";"));
    }
    (spin, total)
}

#[test]
fn cgroup_scope_takes_processes_started_inside_it_and_nothing_outside() {
    let inside = short_named("scope-in");
    let outside = short_named("scope-out");
    let cg = TestCgroup::new("profiler-scope");
    let dir = OutDir::new(scratch("scope-cgroup"));
    // Both start after the profiler has attached; only one is in the cgroup.
    let mut a = cg.spawn(&format!(
        "sleep 0.7; {} 400; {} 300",
        inside.display(),
        inside.display()
    ));
    let mut b = Command::new("sh")
        .arg("-c")
        .arg(format!("sleep 0.7; {} 400", outside.display()))
        .spawn()
        .expect("sh");
    // Running before the attach, outside; moved in during the recording: only its samples
    // after the move belong to the scope.
    let moved_bin = short_named("scope-moved");
    let mut moved = Command::new(&moved_bin)
        .arg("60000")
        .spawn()
        .expect("moved");
    let procs = cg.0.join("cgroup.procs");
    let moved_pid = moved.id();
    let mover = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::write(procs, moved_pid.to_string()).expect("move into the cgroup");
    });
    let rel = cg.0.file_name().and_then(|n| n.to_str()).expect("name");
    let out = record_scope(&dir, &["--cgroup", rel, "--duration", "2.5"]);
    let _ = (a.wait(), b.wait());
    let _ = mover.join();
    let _ = moved.kill();
    let _ = moved.wait();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("recording cgroup /"),
        "{}",
        stderr_of(&out)
    );
    let roots = by_comm(&dir);
    eprintln!("roots: {roots:?}");
    assert!(!roots.contains_key(&comm_of(&outside)), "{roots:?}");
    let (spin, total) = through_spin(&dir, &comm_of(&inside));
    // 700 ms of CPU at 499 Hz: about 350 samples, named through main by the kernel's own
    // mapping records however short the processes were.
    assert!(total >= 200, "{total} samples of scope-in");
    assert!(
        spin * 100 >= total * 90,
        "{spin} of {total} through main;spin"
    );
    // Every process of the cgroup is in the per-process table: the shell and both runs.
    let s = summary(&dir);
    let procs = s["processes"].as_array().expect("processes[]");
    let runs = procs
        .iter()
        .filter(|p| p["comm"] == comm_of(&inside).as_str())
        .count();
    assert_eq!(runs, 2, "{procs:?}");
    // Moved in after 1.5 of 2.5 s: about 1 s of its CPU (it shares two CPUs with the others),
    // never the whole recording.
    let moved_samples = roots.get(&comm_of(&moved_bin)).copied().unwrap_or(0);
    let (moved_spin, _) = through_spin(&dir, &comm_of(&moved_bin));
    eprintln!("moved in: {moved_samples} samples, {moved_spin} through main;spin");
    assert!(
        moved_samples >= 50,
        "{moved_samples} samples after the move"
    );
    assert!(
        moved_samples <= 700,
        "{moved_samples}: samples from before the move"
    );
    assert!(
        moved_spin * 100 >= moved_samples * 90,
        "{moved_spin} of {moved_samples}"
    );
}

#[test]
fn all_in_a_new_pid_namespace_sees_exactly_its_processes() {
    let inner = short_named("ns-inner");
    let outer = short_named("ns-outer");
    let dir = OutDir::new(scratch("scope-ns"));
    let mut host = Command::new(&outer).arg("60000").spawn().expect("outer");
    let script = format!(
        "{} 1500 & {} record --quiet --all --frequency 499 --duration 2 --output {}; wait",
        inner.display(),
        profiler_bin().display(),
        dir.display()
    );
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let _ = host.kill();
    let _ = host.wait();
    eprintln!("stderr: {}", stderr_of(&out));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let roots = by_comm(&dir);
    eprintln!("roots: {roots:?}");
    assert!(
        roots.get(&comm_of(&inner)).is_some_and(|&n| n >= 100),
        "{roots:?}"
    );
    assert!(!roots.contains_key(&comm_of(&outer)), "{roots:?}");
    // Pids as the namespace numbers them: its init (sh) is 1, the rest follow closely.
    let s = summary(&dir);
    let procs = s["processes"].as_array().expect("processes[]");
    assert!(
        procs
            .iter()
            .all(|p| p["pid"].as_u64().is_some_and(|pid| (1..100).contains(&pid))),
        "{procs:?}"
    );
}

#[test]
fn container_scope_finds_a_docker_layout_cgroup_by_id_prefix() {
    let bin = short_named("scope-ctr");
    let id = "3f2a9c0d1e8b47a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2";
    let parent = TestCgroup::new("profiler-ctr");
    let cg = TestCgroup(parent.0.join(format!("docker-{id}.scope")));
    std::fs::create_dir(&cg.0).expect("container cgroup");
    let dir = OutDir::new(scratch("scope-container"));
    // A process already inside before the attach, as a container's would be.
    let mut a = cg.spawn(&format!("sleep 0.7; {} 300", bin.display()));
    std::thread::sleep(Duration::from_millis(200));
    let out = record_scope(&dir, &["--container", &id[..12], "--duration", "2"]);
    let _ = a.wait();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let (spin, total) = through_spin(&dir, &comm_of(&bin));
    assert!(total >= 100, "{total} samples");
    assert!(spin * 100 >= total * 90, "{spin} of {total}");
    drop(cg);

    // Ids that name nothing, or are not ids, are one-line errors before anything is loaded.
    for bad in ["abc", "ffffffffffffffffff"] {
        let out = record_scope(&dir, &["--container", bad, "--duration", "1"]);
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", stderr_of(&out));
        assert_eq!(
            stderr_of(&out).trim().lines().count(),
            1,
            "{}",
            stderr_of(&out)
        );
    }
    let out = record_scope(&dir, &["--cgroup", "no/such/cgroup", "--duration", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("--cgroup"), "{}", stderr_of(&out));
}

#[test]
fn all_scope_sees_a_process_that_starts_after_the_attach() {
    let bin = short_named("scope-all");
    let dir = OutDir::new(scratch("scope-all"));
    let mut a = Command::new("sh")
        .arg("-c")
        .arg(format!("sleep 0.7; {} 300", bin.display()))
        .spawn()
        .expect("sh");
    let out = record_scope(&dir, &["--all", "--duration", "2"]);
    let _ = a.wait();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let (spin, total) = through_spin(&dir, &comm_of(&bin));
    assert!(total >= 100, "{total} samples");
    assert!(spin * 100 >= total * 90, "{spin} of {total}");
    // The idle task is never a process of the recording.
    let s = summary(&dir);
    let procs = s["processes"].as_array().expect("processes[]");
    assert!(procs.iter().all(|p| p["pid"] != 0), "{procs:?}");
}

#[test]
fn two_pids_are_recorded_until_both_exit() {
    let bin = build_c("split-two", "split.c", C_FP);
    let one = Target::start(&bin, &["1"]);
    let two = Target::start(&bin, &["2"]);
    let dir = OutDir::new(scratch("scope-pids"));
    let out = record_scope(
        &dir,
        &[
            "--pid",
            &one.pid().to_string(),
            "--pid",
            &two.pid().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let s = summary(&dir);
    assert_eq!(s["stop_reason"], "target exited", "{}", s["stop_reason"]);
    let procs = s["processes"].as_array().expect("processes[]");
    for t in [&one, &two] {
        assert!(
            procs
                .iter()
                .any(|p| p["pid"] == t.pid() && p["samples"].as_u64().unwrap_or(0) > 50),
            "{} in {procs:?}",
            t.pid()
        );
    }
}

/// `sh -c` moving itself into `cg` and exec'ing `bin`, which prints "ready" and waits for a
/// line on stdin (probes_c.c).
fn start_in(cg: &TestCgroup, bin: &Path) -> Child {
    let procs = cg.0.join("cgroup.procs");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}; exec {}",
            procs.display(),
            bin.display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sh");
    let mut line = String::new();
    let stdout = child.stdout.as_mut().expect("piped stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("target prints ready");
    assert!(line.starts_with("ready"), "{line:?}");
    child
}

/// Tells a target started by `start_in` to work, waits for it to finish, and returns what it
/// printed.
fn go_and_wait(child: &mut Child) -> String {
    let stdin = child.stdin.as_mut().expect("piped stdin");
    stdin.write_all(b"go\n").expect("target reads stdin");
    stdin.flush().expect("flush");
    let mut printed = String::new();
    child
        .stdout
        .as_mut()
        .expect("piped stdout")
        .read_to_string(&mut printed)
        .expect("target output");
    let status = child.wait().expect("target exits");
    assert!(status.success(), "{status}");
    printed
}

/// Reads the profiler's stderr until a line starting with `prefix`; returns what was read.
fn wait_for_line(err: &mut impl BufRead, prefix: &str, seen: &mut String) {
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).expect("profiler stderr");
        seen.push_str(&line);
        assert!(n > 0, "profiler ended before {prefix:?}: {seen}");
        if line.starts_with(prefix) {
            return;
        }
    }
}

/// Span counts of one process, by name.
fn spans_of(spans: &serde_json::Value, pid: u32) -> std::collections::HashMap<String, u64> {
    let mut m = std::collections::HashMap::new();
    for s in spans["spans"].as_array().expect("spans[]") {
        if s["pid"] == pid {
            *m.entry(s["name"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
    }
    m
}

#[test]
fn span_probes_go_into_every_instrumented_program_of_a_cgroup_even_one_started_later() {
    let a_bin = build_c("scope-spans-a", "probes_c.c", &c_fp_probes());
    // Another program (another file, another build id): it is probed when it starts.
    let mut flags = c_fp_probes();
    flags.push("-DREQUESTS=200".into());
    let b_bin = build_c("scope-spans-b", "probes_c.c", &flags);
    let cg = TestCgroup::new("profiler-spans");
    let dir = OutDir::new(scratch("scope-spans"));
    let mut a = start_in(&cg, &a_bin);
    // The same file outside the scope: its probes fire there too, the kernel drops them.
    let mut outside = Target::start(&a_bin, &[]);
    let rel = cg.0.file_name().and_then(|n| n.to_str()).expect("name");
    let mut profiler = profiler()
        .args(["record", "--quiet", "--frequency", "499", "--output"])
        .arg(&*dir)
        .args(["--cgroup", rel])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("profiler starts");
    let mut err = BufReader::new(profiler.stderr.take().expect("piped stderr"));
    let mut seen = String::new();
    wait_for_line(&mut err, "profiler: recording cgroup", &mut seen);
    assert!(
        seen.contains(&format!("span probes in {}", a_bin.display())),
        "{seen}"
    );
    let mut b = start_in(&cg, &b_bin);
    wait_for_line(
        &mut err,
        &format!("profiler: span probes in {}", b_bin.display()),
        &mut seen,
    );
    go_and_wait(&mut a);
    go_and_wait(&mut b);
    outside.go();
    outside.finish();
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(profiler.id() as i32, libc::SIGINT) };
    let status = profiler.wait().expect("profiler exits");
    let mut rest = String::new();
    err.read_to_string(&mut rest).expect("stderr");
    seen.push_str(&rest);
    eprintln!("profiler stderr:\n{seen}");
    assert!(status.success(), "{seen}");

    let text = std::fs::read_to_string(dir.join("spans.json")).expect("spans.json");
    let spans: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(spans["lost_events"], 0);
    // Exactly what each program made: 2 threads × REQUESTS requests, one query each.
    for (pid, n) in [(a.id(), 600), (b.id(), 400)] {
        let got = spans_of(&spans, pid);
        assert_eq!(got.get("request"), Some(&n), "pid {pid}: {got:?}");
        assert_eq!(got.get("db_query"), Some(&n), "pid {pid}: {got:?}");
    }
    assert!(spans_of(&spans, outside.pid()).is_empty());
    let modules = &spans["info"]["abi_modules"];
    for bin in [&a_bin, &b_bin] {
        let path = bin.to_str().expect("utf-8");
        assert!(
            modules
                .as_array()
                .is_some_and(|m| m.iter().any(|p| p == path)),
            "{modules}"
        );
    }
}

#[test]
fn comm_scope_takes_matching_names_including_one_taken_by_exec() {
    let keep = short_named("cmkeep");
    let late = short_named("cmlate");
    let other = short_named("cmother");
    let dir = OutDir::new(scratch("scope-comm"));
    // Running before the attach: one matches, one does not.
    let mut running = Command::new(&keep).arg("60000").spawn().expect("keep");
    let mut unmatched = Command::new(&other).arg("60000").spawn().expect("other");
    // A shell (not matching) that becomes a matching program by exec after the attach, and
    // one that starts it as a child.
    let mut by_exec = Command::new("sh")
        .arg("-c")
        .arg(format!("sleep 0.7; exec {} 400", late.display()))
        .spawn()
        .expect("sh");
    let mut by_child = Command::new("sh")
        .arg("-c")
        .arg(format!("sleep 0.7; {} 300", late.display()))
        .spawn()
        .expect("sh");
    let out = record_scope(
        &dir,
        &["--comm", "^cm(keep|late)-[0-9]*$", "--duration", "2.5"],
    );
    let _ = (by_exec.wait(), by_child.wait());
    for c in [&mut running, &mut unmatched] {
        let _ = c.kill();
        let _ = c.wait();
    }
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("recording processes named /"),
        "{}",
        stderr_of(&out)
    );
    let roots = by_comm(&dir);
    eprintln!("roots: {roots:?}");
    assert!(!roots.contains_key(&comm_of(&other)), "{roots:?}");
    assert!(!roots.contains_key("sh"), "{roots:?}");
    for bin in [&keep, &late] {
        let (spin, total) = through_spin(&dir, &comm_of(bin));
        assert!(total >= 100, "{total} samples of {}", comm_of(bin));
        assert!(spin * 100 >= total * 90, "{spin} of {total}");
    }
    // Both runs of the late program are processes of the recording.
    let s = summary(&dir);
    let procs = s["processes"].as_array().expect("processes[]");
    let runs = procs
        .iter()
        .filter(|p| p["comm"] == comm_of(&late).as_str())
        .count();
    assert_eq!(runs, 2, "{procs:?}");

    let out = record_scope(&dir, &["--comm", "(", "--duration", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    assert_eq!(stderr_of(&out).trim().lines().count(), 1);
    assert!(stderr_of(&out).contains("--comm"), "{}", stderr_of(&out));
}

#[test]
fn run_with_a_scope_records_the_scope_while_the_command_runs() {
    let cmd_bin = short_named("runscope-cmd");
    let other = short_named("runscope-oth");
    let cg = TestCgroup::new("profiler-run");
    // In the cgroup before the attach, and running all along.
    let mut inside = cg.spawn(&format!("exec {} 60000", other.display()));
    let rel = cg.0.file_name().and_then(|n| n.to_str()).expect("name");
    let script = format!("{} 300; exit 7", cmd_bin.display());
    let run = |dir: &Path, scope: &[&str]| {
        let out = profiler()
            .args(["run", "--quiet", "--frequency", "499", "--output"])
            .arg(dir)
            .args(scope)
            .args(["--", "sh", "-c", &script])
            .output()
            .expect("profiler runs");
        eprintln!("stderr: {}", stderr_of(&out));
        // The command's exit code, and the recording ended with it.
        assert_eq!(out.status.code(), Some(7), "{}", stderr_of(&out));
        assert_eq!(summary(dir)["stop_reason"], "target exited");
        by_comm(dir)
    };

    // The cgroup is recorded while the command, which runs outside it, runs.
    let dir = OutDir::new(scratch("scope-run-cgroup"));
    let roots = run(&dir, &["--cgroup", rel]);
    eprintln!("--cgroup roots: {roots:?}");
    assert!(
        roots.get(&comm_of(&other)).is_some_and(|&n| n >= 10),
        "{roots:?}"
    );
    assert!(!roots.contains_key(&comm_of(&cmd_bin)), "{roots:?}");

    // The whole PID namespace: the command and the cgroup's process both.
    let dir = OutDir::new(scratch("scope-run-all"));
    let roots = run(&dir, &["--all"]);
    eprintln!("--all roots: {roots:?}");
    assert!(
        roots.get(&comm_of(&other)).is_some_and(|&n| n >= 10),
        "{roots:?}"
    );
    let (spin, total) = through_spin(&dir, &comm_of(&cmd_bin));
    assert!(total >= 100, "{total} samples of the command's program");
    assert!(spin * 100 >= total * 90, "{spin} of {total}");
    let _ = inside.kill();
    let _ = inside.wait();
}

#[test]
fn span_fn_goes_into_every_program_of_a_scope_that_defines_it() {
    let a_bin = build_c("scope-spanfn-a", "spanfn.c", C_FP);
    let mut flags: Vec<String> = C_FP.iter().map(|f| f.to_string()).collect();
    flags.push("-DREQUESTS=300".into());
    let b_bin = build_c("scope-spanfn-b", "spanfn.c", &flags);
    let cg = TestCgroup::new("profiler-spanfn");
    let dir = OutDir::new(scratch("scope-spanfn"));
    let mut a = start_in(&cg, &a_bin);
    let mut outside = Target::start(&a_bin, &[]);
    let rel = cg.0.file_name().and_then(|n| n.to_str()).expect("name");
    let mut profiler = profiler()
        .args(["record", "--quiet", "--frequency", "499", "--output"])
        .arg(&*dir)
        .args(["--cgroup", rel, "--span-fn", "handle_request"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("profiler starts");
    let mut err = BufReader::new(profiler.stderr.take().expect("piped stderr"));
    let mut seen = String::new();
    wait_for_line(&mut err, "profiler: recording cgroup", &mut seen);
    let mut b = start_in(&cg, &b_bin);
    wait_for_line(
        &mut err,
        &format!("profiler: --span-fn handle_request in {}", b_bin.display()),
        &mut seen,
    );
    let printed_a = go_and_wait(&mut a);
    let printed_b = go_and_wait(&mut b);
    outside.go();
    outside.finish();
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(profiler.id() as i32, libc::SIGINT) };
    let status = profiler.wait().expect("profiler exits");
    let mut rest = String::new();
    err.read_to_string(&mut rest).expect("stderr");
    seen.push_str(&rest);
    eprintln!("profiler stderr:\n{seen}\nprinted: {printed_a} / {printed_b}");
    assert!(status.success(), "{seen}");
    let text = std::fs::read_to_string(dir.join("spans.json")).expect("spans.json");
    let spans: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(spans["lost_events"], 0);
    for (pid, printed) in [(a.id(), &printed_a), (b.id(), &printed_b)] {
        let want: std::collections::HashMap<String, u64> = printed_values(printed);
        let got = spans_of(&spans, pid);
        assert_eq!(
            got.get("handle_request"),
            want.get("handle_request"),
            "pid {pid}: {got:?}"
        );
    }
    assert!(spans_of(&spans, outside.pid()).is_empty());
}
