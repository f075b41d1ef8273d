//! Helpers for the integration tests: build the target programs, run them, run the real
//! `profiler` binary on them (real eBPF, real kernel, as root) and read what it wrote.
use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Mutex,
    time::Duration,
};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The binary under test: $PROFILER_BIN (set by `cargo xtask test`) or the release build.
pub fn profiler_bin() -> PathBuf {
    let bin = std::env::var_os("PROFILER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release/profiler"));
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo xtask test` (it builds the release binary first)",
        bin.display()
    );
    bin
}

fn targets_dir() -> PathBuf {
    let d = workspace_root().join("target/test-targets");
    std::fs::create_dir_all(&d).expect("create target/test-targets");
    d
}

/// Flags that give gcc output complete frame-pointer stacks (see SETUP-NOTES).
pub const C_FP: &[&str] = &[
    "-O2",
    "-g",
    "-fno-omit-frame-pointer",
    "-mno-omit-leaf-frame-pointer",
    "-fno-optimize-sibling-calls",
];
/// Frame pointers and the span probe header.
pub fn c_fp_probes() -> Vec<String> {
    with_probe_header(C_FP)
}

/// What distributions build with: no frame pointers.
pub const C_NOFP: &[&str] = &["-O2", "-g"];
/// No frame pointers, and the span probe header.
pub fn c_nofp_probes() -> Vec<String> {
    with_probe_header(C_NOFP)
}

fn with_probe_header(flags: &[&str]) -> Vec<String> {
    let mut flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    flags.push(format!(
        "-I{}",
        workspace_root().join("profiler-probes/include").display()
    ));
    flags
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Compiles `tests/targets/<source>` into `target/test-targets/<name>` (once per test run).
pub fn build_c<S: AsRef<std::ffi::OsStr>>(name: &str, source: &str, flags: &[S]) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let out = targets_dir().join(format!("{name}-{}", std::process::id()));
    if !out.exists() {
        let status = Command::new("gcc")
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(workspace_root().join("tests/targets").join(source))
            .arg("-lpthread")
            .status()
            .expect("gcc runs");
        assert!(status.success(), "gcc failed for {source}");
    }
    out
}

/// A stripped copy of a built binary.
pub fn stripped(bin: &Path) -> PathBuf {
    let out = bin.with_file_name(format!(
        "{}-stripped",
        bin.file_name().and_then(|n| n.to_str()).unwrap_or("bin")
    ));
    let status = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .status()
        .expect("strip runs");
    assert!(status.success(), "strip failed");
    out
}

/// Builds a Rust program in tests/targets/NAME with frame pointers, outside the workspace.
pub fn build_rust_target(name: &str) -> PathBuf {
    build_rust_target_with(name, true)
}

/// Builds a Rust target in release mode, with or without frame pointers (`cargo build
/// --release` omits them).
pub fn build_rust_target_with(name: &str, frame_pointers: bool) -> PathBuf {
    static BUILT: Mutex<Vec<(String, bool, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, _, bin)) = built
        .iter()
        .find(|(n, fp, _)| n == name && *fp == frame_pointers)
    {
        return bin.clone();
    }
    let (dir, rustflags) = if frame_pointers {
        ("rust", "-C force-frame-pointers=yes")
    } else {
        ("rust-nofp", "")
    };
    let target_dir = targets_dir().join(dir);
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(
            workspace_root()
                .join("tests/targets")
                .join(name)
                .join("Cargo.toml"),
        )
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", rustflags)
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building {name} failed");
    let bin = target_dir.join("release").join(name);
    built.push((name.to_string(), frame_pointers, bin.clone()));
    bin
}

/// Builds tests/targets/rust-split with frame pointers.
pub fn build_rust_split() -> PathBuf {
    build_rust_target("rust-split")
}

/// A running target program, killed when dropped.
pub struct Target {
    pub child: Child,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Target {
    /// Starts `bin args…` and waits for its "ready" line.
    pub fn start(bin: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("target prints ready");
        assert!(line.starts_with("ready"), "unexpected first line {line:?}");
        // Past start-up, into the steady state.
        std::thread::sleep(Duration::from_millis(100));
        Self { child, stdout }
    }

    /// Tells a target that waits on stdin to start its work.
    pub fn go(&mut self) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        stdin.write_all(b"go\n").expect("target reads stdin");
        stdin.flush().expect("flush");
    }

    /// The rest of the target's output, after it exits.
    pub fn finish(&mut self) -> String {
        use std::io::Read;
        let mut rest = String::new();
        self.stdout
            .read_to_string(&mut rest)
            .expect("target output");
        let status = self.child.wait().expect("target exits");
        assert!(status.success(), "target failed: {status}");
        rest
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh, empty scratch directory path (not created).
pub fn scratch(name: &str) -> PathBuf {
    static N: Mutex<u32> = Mutex::new(0);
    let n = {
        let mut g = N.lock().unwrap_or_else(|e| e.into_inner());
        *g += 1;
        *g
    };
    let p = std::env::temp_dir().join(format!("profiler-it-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

pub fn profiler() -> Command {
    Command::new(profiler_bin())
}

/// `profiler record --quiet --pid PID --output OUT`, to add arguments to and run.
pub fn record_command(pid: u32, out: &Path) -> Command {
    let mut c = profiler();
    c.args(["record", "--quiet", "--pid", &pid.to_string(), "--output"])
        .arg(out);
    c
}

/// Runs `profiler record --pid PID -o OUT args…`.
pub fn record(pid: u32, out: &Path, args: &[&str]) -> Output {
    let out = record_command(pid, out)
        .args(args)
        .output()
        .expect("profiler runs");
    eprintln!(
        "profiler stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// An output directory, removed when dropped.
pub struct OutDir(PathBuf);

impl OutDir {
    pub fn new(path: PathBuf) -> Self {
        Self(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for OutDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Attaches to a target waiting on stdin, starts it once the profiler reports it is recording,
/// and records until the target exits; returns the output and what the target printed.
pub fn record_run(target: &mut Target, name: &str, args: &[&str]) -> (OutDir, String) {
    let dir = OutDir(scratch(name));
    let mut child = record_command(target.pid(), &dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("profiler starts");
    let mut err = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).expect("profiler stderr");
        seen.push_str(&line);
        if n == 0 {
            panic!("profiler ended before recording: {seen}");
        }
        if line.starts_with("profiler: recording pid") {
            break;
        }
    }
    target.go();
    let printed = target.finish();
    let out = child.wait_with_output().expect("profiler exits");
    use std::io::Read;
    err.read_to_string(&mut seen).expect("rest of stderr");
    eprintln!("profiler stderr:\n{seen}\ntarget printed: {printed}");
    assert!(out.status.success(), "profiler failed: {seen}");
    (dir, printed)
}

/// Records a running target into a fresh directory and asserts the profiler succeeded.
pub fn record_ok(target: &Target, name: &str, args: &[&str]) -> OutDir {
    let dir = OutDir(scratch(name));
    let out = record(target.pid(), &dir, args);
    assert!(out.status.success(), "profiler failed: {}", stderr_of(&out));
    dir
}

pub fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json exists");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

/// `profile.folded` as (frames root first, count).
pub fn folded(dir: &Path) -> Vec<(Vec<String>, u64)> {
    folded_file(dir, "profile.folded")
}

/// A folded-stacks file of `dir` (`offcpu.folded`, `wall.folded`, …) as (frames root first,
/// count).
pub fn folded_file(dir: &Path, name: &str) -> Vec<(Vec<String>, u64)> {
    let text = std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{name} in {}: {e}", dir.display()));
    text.lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').expect("`stack count` lines");
            (
                stack.split(';').map(str::to_string).collect(),
                n.parse().expect("count is a number"),
            )
        })
        .collect()
}

/// A target's "key value key value" line → map (values that do not parse are left out).
pub fn printed_values<T: std::str::FromStr>(line: &str) -> HashMap<String, T> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .chunks(2)
        .filter_map(|kv| Some((kv.first()?.to_string(), kv.get(1)?.parse().ok()?)))
        .collect()
}

/// Asserts that a CPU-bound target was sampled as often as the CPU time it got says, and that
/// it got enough for `min_expected` samples; returns the summary's coverage.
///
/// Wall time × frequency is what a target gets only on an idle machine: with a build running
/// beside it, a spinning thread gets ~60% of a CPU, and a "> 1,000 samples in 3 s" check
/// fails though every tick it ran through was sampled. The coverage (`collect::coverage`)
/// compares the samples with the threads' schedstat CPU time instead. On an idle CPU the
/// clock's ticks fall on the target every time; on a shared one they fall on it at random,
/// so the bound is 10% or four standard deviations of that count, whichever is wider: 10%
/// from 1,600 expected samples on, 12.6% at 1,000, so callers ask for about 1,000 or more.
/// Every sample compared must reach `profile.folded` too.
pub fn assert_sampled_its_cpu_time(dir: &Path, min_expected: u64) -> serde_json::Value {
    let s = summary(dir);
    let c = s["coverage"].clone();
    let (Some(sampled), Some(expected)) = (c["sampled"].as_u64(), c["expected"].as_u64()) else {
        panic!("no coverage in the summary: {c}");
    };
    eprintln!("coverage: {c}");
    let written = total(&folded(dir));
    assert!(
        written >= sampled,
        "{written} samples in profile.folded: {c}"
    );
    assert!(
        expected >= min_expected,
        "CPU time for {expected} samples, {min_expected} needed: {c}"
    );
    let slack = (expected as f64 * 0.1).max(4.0 * (expected as f64).sqrt());
    assert!(
        (sampled as f64 - expected as f64).abs() <= slack,
        "{sampled} samples where the CPU time gives {expected} (± {slack:.0}): {c}"
    );
    c
}

pub fn total(folded: &[(Vec<String>, u64)]) -> u64 {
    folded.iter().map(|(_, n)| n).sum()
}

/// Percent of samples whose stack contains a frame matching `pred`.
pub fn share(folded: &[(Vec<String>, u64)], pred: impl Fn(&str) -> bool) -> f64 {
    let hit: u64 = folded
        .iter()
        .filter(|(frames, _)| frames.iter().any(|f| pred(f)))
        .map(|(_, n)| n)
        .sum();
    100.0 * hit as f64 / total(folded).max(1) as f64
}

/// Percent of samples whose leaf-most user frame (the last frame that is not `_[k]`) matches.
pub fn self_share(folded: &[(Vec<String>, u64)], pred: impl Fn(&str) -> bool) -> f64 {
    let hit: u64 = folded
        .iter()
        .filter(|(frames, _)| {
            frames
                .iter()
                .rev()
                .find(|f| !f.ends_with("_[k]"))
                .is_some_and(|f| pred(f))
        })
        .map(|(_, n)| n)
        .sum();
    100.0 * hit as f64 / total(folded).max(1) as f64
}

/// Samples per thread id from the summary.
pub fn thread_samples(summary: &serde_json::Value) -> HashMap<String, u64> {
    summary["threads"]
        .as_array()
        .expect("threads array")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default().to_string(),
                t["samples"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a command as `nobody` with no capabilities.
pub fn as_nobody(cmd: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(cmd);
    c
}

/// A message decoded by `protoc --decode` into its text format.
#[derive(Debug, Default)]
pub struct TextMessage {
    /// Scalar fields in order: (name, value as printed; strings keep their quotes).
    pub scalars: Vec<(String, String)>,
    /// Sub-messages in order.
    pub messages: Vec<(String, TextMessage)>,
}

impl TextMessage {
    pub fn parse(text: &str) -> Self {
        let mut stack = vec![(String::new(), TextMessage::default())];
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(name) = line.strip_suffix(" {") {
                stack.push((name.to_string(), TextMessage::default()));
            } else if line == "}" {
                let (name, done) = stack.pop().expect("balanced braces");
                stack
                    .last_mut()
                    .expect("an enclosing message")
                    .1
                    .messages
                    .push((name, done));
            } else if let Some((k, v)) = line.split_once(": ") {
                let top = &mut stack.last_mut().expect("a message").1;
                top.scalars.push((k.to_string(), v.to_string()));
            }
        }
        assert_eq!(stack.len(), 1, "unbalanced text format");
        stack.pop().expect("root").1
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.scalars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn get_u64(&self, name: &str) -> Option<u64> {
        self.get(name)?.parse().ok()
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a TextMessage> + 'a {
        self.messages
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, m)| m)
    }

    pub fn child(&self, name: &str) -> Option<&TextMessage> {
        self.messages
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, m)| m)
    }
}

/// Decodes a Perfetto trace with `protoc` and the official schema in ../shared/validation.
pub fn decode_perfetto(trace: &Path) -> TextMessage {
    let schema_dir = workspace_root().join("../shared/validation");
    assert!(
        schema_dir.join("perfetto_trace.proto").exists(),
        "the official schema is expected in {}",
        schema_dir.display()
    );
    let input = std::fs::File::open(trace).expect("trace file");
    let out = Command::new("protoc")
        .arg("--proto_path")
        .arg(&schema_dir)
        .args(["--decode=perfetto.protos.Trace", "perfetto_trace.proto"])
        .stdin(input)
        .output()
        .expect("protoc runs (cargo xtask setup installs protobuf-compiler)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "protoc: {err}"
    );
    TextMessage::parse(&String::from_utf8_lossy(&out.stdout))
}

/// What [`check_perfetto`] found.
#[derive(Debug, Default)]
pub struct TraceFacts {
    pub sample_ts: Vec<u64>,
    /// Slices begun per track uuid (every one ended: checked).
    pub slices: HashMap<u64, u64>,
    /// Track uuid → name, for tracks described with a name.
    pub track_names: HashMap<u64, String>,
}

/// Checks the invariants a Perfetto reader relies on: one sequence whose first packet clears
/// the incremental state; interned ids and tracks defined before use and once; slices on each
/// track balanced and in time order.
pub fn check_perfetto(trace: &TextMessage) -> TraceFacts {
    let packets: Vec<&TextMessage> = trace.all("packet").collect();
    assert!(!packets.is_empty());
    assert_eq!(
        packets[0].get("sequence_flags"),
        Some("1"),
        "first packet clears state"
    );
    let mut names: HashSet<u64> = HashSet::new();
    let mut frames: HashSet<u64> = HashSet::new();
    let mut stacks: HashSet<u64> = HashSet::new();
    let mut maps: HashSet<u64> = HashSet::new();
    let mut paths: HashSet<u64> = HashSet::new();
    let mut tracks = HashSet::new();
    let mut thread_tids = HashSet::new();
    let mut sample_ts = Vec::new();
    let mut open: HashMap<u64, i64> = HashMap::new();
    let mut facts = TraceFacts::default();
    let mut last_event_ts = 0;
    for p in &packets {
        assert_eq!(
            p.get("trusted_packet_sequence_id"),
            Some("1"),
            "one sequence"
        );
        if let Some(d) = p.child("interned_data") {
            let iid = |m: &TextMessage| m.get_u64("iid").expect("iid");
            for s in d.all("function_names") {
                assert!(names.insert(iid(s)), "function name interned twice");
            }
            for s in d.all("mapping_paths") {
                assert!(paths.insert(iid(s)));
            }
            for m in d.all("mappings") {
                for (k, v) in &m.scalars {
                    if k == "path_string_ids" {
                        assert!(
                            paths.contains(&v.parse().expect("id")),
                            "path before mapping"
                        );
                    }
                }
                assert!(maps.insert(iid(m)));
            }
            for f in d.all("frames") {
                let name = f.get_u64("function_name_id").expect("named frame");
                assert!(names.contains(&name), "name before frame");
                if let Some(m) = f.get_u64("mapping_id") {
                    assert!(maps.contains(&m), "mapping before frame");
                }
                assert!(frames.insert(iid(f)), "frame interned twice");
            }
            for c in d.all("callstacks") {
                for (k, v) in &c.scalars {
                    if k == "frame_ids" {
                        assert!(
                            frames.contains(&v.parse().expect("id")),
                            "frame before stack"
                        );
                    }
                }
                assert!(stacks.insert(iid(c)));
            }
        }
        if let Some(t) = p.child("track_descriptor") {
            let uuid = t.get_u64("uuid").expect("uuid");
            if let Some(parent) = t.get_u64("parent_uuid") {
                assert!(tracks.contains(&parent), "parent described first");
            }
            assert!(tracks.insert(uuid), "track described twice");
            if let Some(th) = t.child("thread") {
                thread_tids.insert(th.get_u64("tid").expect("tid"));
            }
            if let Some(name) = t.get("name") {
                facts
                    .track_names
                    .insert(uuid, name.trim_matches('"').to_string());
            }
        }
        if let Some(e) = p.child("track_event") {
            let track = e.get_u64("track_uuid").expect("track_uuid");
            assert!(
                tracks.contains(&track),
                "track {track} described before its events"
            );
            let ts = p.get_u64("timestamp").expect("timestamp");
            assert!(ts >= last_event_ts, "track events in time order");
            last_event_ts = ts;
            let depth = open.entry(track).or_default();
            match e.get("type") {
                Some("TYPE_SLICE_BEGIN") => {
                    *depth += 1;
                    *facts.slices.entry(track).or_default() += 1;
                }
                Some("TYPE_SLICE_END") => {
                    *depth -= 1;
                    assert!(*depth >= 0, "slice end without begin on {track}");
                }
                other => panic!("unexpected track event type {other:?}"),
            }
        }
        if let Some(s) = p.child("perf_sample")
            && let Some(cs) = s.get_u64("callstack_iid")
        {
            assert!(stacks.contains(&cs), "callstack {cs} defined before use");
            let tid = s.get_u64("tid").expect("tid");
            assert!(
                thread_tids.contains(&tid),
                "thread {tid} described before its samples"
            );
            assert_eq!(
                p.get("sequence_flags"),
                Some("2"),
                "needs incremental state"
            );
            sample_ts.push(p.get_u64("timestamp").expect("timestamp"));
        }
    }
    for (track, depth) in open {
        assert_eq!(depth, 0, "slices on track {track} balanced");
    }
    facts.sample_ts = sample_ts;
    facts
}

/// `go tool pprof -symbolize=none ARGS FILE`'s stdout, printed for the test's log (go is
/// Debian's golang-go, installed by `cargo xtask setup`). `-symbolize=none`: pprof would
/// otherwise symbolize the mappings' files again, and tests compare with what the profiler
/// itself resolved.
pub fn go_pprof(file: &Path, args: &[&str]) -> String {
    let out = Command::new("go")
        .args(["tool", "pprof", "-symbolize=none"])
        .args(args)
        .arg(file)
        .output()
        .expect("go runs (cargo xtask setup installs golang-go)");
    assert!(
        out.status.success(),
        "go tool pprof {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("go tool pprof {args:?}:\n{text}");
    text
}
