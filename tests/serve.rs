//! `profiler serve` over real HTTP: curl as the client, `go tool pprof` against the live
//! Go-compatible endpoint, real recordings of real target programs (root, real probes),
//! headless Chromium on the page (see `page_*`), and 200 recordings without growth.
mod cdp;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use profiler_tests::*;

/// A running `profiler serve` on a free loopback port, stopped (SIGTERM) when dropped.
struct Server {
    child: Child,
    port: u16,
    /// Its stderr lines, as they come.
    log: std::sync::Mutex<mpsc::Receiver<String>>,
    token: Option<String>,
}

impl Server {
    fn start(data: &Path, extra: &[&str]) -> Self {
        Self::try_start(data, extra).unwrap_or_else(|log| panic!("server did not start:\n{log}"))
    }

    fn try_start(data: &Path, extra: &[&str]) -> Result<Self, String> {
        let mut child = profiler()
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("profiler serve starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("server: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        loop {
            match log.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    seen += &line;
                    seen.push('\n');
                    if let Some(rest) = line.strip_prefix("profiler: serving on http://127.0.0.1:")
                    {
                        let port = rest.split('/').next().and_then(|p| p.parse().ok());
                        let port = port.unwrap_or_else(|| panic!("no port in {line:?}"));
                        return Ok(Self {
                            child,
                            port,
                            log: std::sync::Mutex::new(log),
                            token: None,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(seen);
                }
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// curl METHOD URL: (status, body).
    fn call(&self, method: &str, path: &str, extra: &[&str]) -> (u16, Vec<u8>) {
        let mut c = Command::new("curl");
        c.args([
            "-s",
            "-S",
            "--path-as-is",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
        ]);
        if let Some(t) = &self.token {
            c.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = c
            .args(extra)
            .arg(self.url(path))
            .output()
            .expect("curl runs (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "curl {method} {path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut body = out.stdout;
        let nl = body.iter().rposition(|&b| b == b'\n').expect("status line");
        let code = String::from_utf8_lossy(&body[nl + 1..])
            .parse()
            .expect("status");
        body.truncate(nl);
        (code, body)
    }

    fn get_json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.call("GET", path, &[]);
        assert_eq!(code, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("JSON")
    }

    /// POST /api/recordings: (status, JSON answer).
    fn post(&self, request: serde_json::Value) -> (u16, serde_json::Value) {
        let (code, body) = self.call(
            "POST",
            "/api/recordings",
            &[
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &request.to_string(),
            ],
        );
        (code, serde_json::from_slice(&body).unwrap_or_default())
    }

    fn start_recording(&self, request: serde_json::Value) -> String {
        let (code, answer) = self.post(request);
        assert_eq!(code, 201, "{answer}");
        answer["id"].as_str().expect("id").to_string()
    }

    /// The progress events of a recording, read as server-sent events until it is written.
    fn progress(&self, id: &str) -> Vec<serde_json::Value> {
        let (code, body) = self.call(
            "GET",
            &format!("/api/recordings/{id}"),
            &["-N", "-H", "Accept: text/event-stream"],
        );
        assert_eq!(code, 200);
        let text = String::from_utf8(body).expect("UTF-8 events");
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).expect("event JSON"))
            .collect()
    }

    fn wait_done(&self, id: &str) -> serde_json::Value {
        let last = self.progress(id).pop().expect("at least one event");
        assert_eq!(last["state"], "done", "{last}");
        last
    }

    /// Descriptors of the server that hold probes: perf events and BPF objects.
    fn probe_fds(&self) -> usize {
        fds(self.child.id())
            .iter()
            .filter(|l| l.contains("perf_event") || l.contains("bpf"))
            .count()
    }

    fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_exit(&mut self.child, Duration::from_secs(60))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return s;
        }
        assert!(Instant::now() < until, "the server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Where each open descriptor of `pid` points.
fn fds(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|p| p.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn split_target() -> Target {
    let bin = build_c("split", "split.c", C_FP);
    Target::start(&bin, &["120"])
}

/// `go tool pprof -top URL`, as a Go user types it: the hottest function comes first.
#[test]
fn go_tool_pprof_reads_the_live_endpoint() {
    let target = split_target();
    let data = OutDir::new(scratch("serve-pprof"));
    let server = Server::start(data.path(), &[]);
    let home = OutDir::new(scratch("serve-pprof-home"));
    std::fs::create_dir_all(home.path()).expect("home");
    let url = server.url(&format!(
        "/debug/pprof/profile?seconds=3&pid={}",
        target.pid()
    ));
    let out = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&url)
        // pprof keeps a copy of what it fetched under $HOME/pprof.
        .env("HOME", home.path())
        .output()
        .expect("go runs (cargo xtask setup installs golang-go)");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "go tool pprof failed");
    let first_row = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat  flat%"))
        .nth(1)
        .expect("a table row");
    assert!(
        first_row.trim_end().ends_with(" hot_a"),
        "the hottest function is hot_a (70% of the CPU): {first_row}"
    );
    // The same profile is kept as a recording of the server, with every other output.
    let list = server.get_json("/api/recordings");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["state"], "done");
    assert_eq!(list[0]["scope"], format!("pid {}", target.pid()));
}

/// POST a recording, follow its progress as server-sent events, fetch every output, list it
/// (also after a restart of the server), delete it.
#[test]
fn recordings_api() {
    let target = split_target();
    let data = OutDir::new(scratch("serve-api"));
    let mut server = Server::start(data.path(), &[]);

    let procs = server.get_json("/api/processes");
    let me = procs
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["pid"] == target.pid())
        .unwrap_or_else(|| panic!("the target is listed: {procs}"));
    assert!(
        me["comm"].as_str().unwrap_or_default().starts_with("split"),
        "{me}"
    );
    assert_eq!(me["user"], "root");
    assert_eq!(me["probes"], false);

    let id = server.start_recording(serde_json::json!({
        "pid": target.pid(), "seconds": 2, "hz": 199, "call_graph": "fp"
    }));
    let events = server.progress(&id);
    let recording: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["state"] == "recording")
        .collect();
    assert!(
        recording.len() >= 5,
        "progress about ten times a second: {events:?}"
    );
    let samples: Vec<u64> = recording
        .iter()
        .map(|e| e["samples"].as_u64().unwrap())
        .collect();
    assert!(samples.windows(2).all(|w| w[0] <= w[1]), "{samples:?}");
    assert!(
        samples.last() > Some(&0),
        "samples arrive while recording: {samples:?}"
    );
    let done = events.last().expect("events");
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["stop_reason"], "duration elapsed");
    assert!(done["samples"].as_u64() > Some(100), "{done}");

    // Every output, as `record --output` writes it.
    let dir = data.path().join(&id);
    for file in done["files"].as_array().expect("files") {
        let name = file.as_str().expect("name");
        let (code, body) = server.call("GET", &format!("/api/recordings/{id}/{name}"), &[]);
        assert_eq!(code, 200, "{name}");
        assert_eq!(body, std::fs::read(dir.join(name)).expect("file"), "{name}");
    }
    let (_, svg) = server.call("GET", &format!("/api/recordings/{id}/flamegraph.svg"), &[]);
    assert!(String::from_utf8_lossy(&svg).contains("hot_a"));
    let shares = folded(&dir);
    let a = share(&shares, |f| f == "hot_a");
    assert!((55.0..85.0).contains(&a), "hot_a's share {a}");
    // The same files `profiler report` reads.
    let report = profiler()
        .args(["report", "--format", "folded"])
        .arg(&dir)
        .output()
        .expect("report");
    assert!(report.status.success(), "{}", stderr_of(&report));

    let metrics = String::from_utf8(server.call("GET", "/metrics", &[]).1).expect("text");
    assert!(
        metrics.contains("profiler_recordings_total{state=\"done\"} 1"),
        "{metrics}"
    );
    let samples_line = metrics
        .lines()
        .find(|l| l.starts_with("profiler_samples_total "))
        .expect("samples metric");
    assert_eq!(
        samples_line,
        format!("profiler_samples_total {}", done["samples"])
    );
    assert!(metrics.contains("profiler_bpf_ns_per_sample "));

    // The list survives a restart.
    assert!(server.stop().success());
    let server = Server::start(data.path(), &[]);
    let list = server.get_json("/api/recordings");
    assert_eq!(list[0]["id"], id.as_str(), "{list}");
    assert_eq!(list[0]["state"], "done");
    assert_eq!(
        server.get_json(&format!("/api/recordings/{id}"))["samples"],
        done["samples"]
    );

    let (code, _) = server.call("DELETE", &format!("/api/recordings/{id}"), &[]);
    assert_eq!(code, 204);
    assert!(!dir.exists());
    let (code, _) = server.call("GET", &format!("/api/recordings/{id}"), &[]);
    assert_eq!(code, 404);
    assert_eq!(server.get_json("/api/recordings"), serde_json::json!([]));
}

/// Two recordings at once, of two processes, each with its own progress and outputs; a
/// third is refused with 429 while they run.
#[test]
fn concurrent_recordings_and_the_limit() {
    let a = split_target();
    let b = split_target();
    let data = OutDir::new(scratch("serve-concurrent"));
    let server = Server::start(data.path(), &["--max-concurrent", "2"]);
    let ida = server.start_recording(serde_json::json!({"pid": a.pid(), "seconds": 3}));
    let idb = server.start_recording(serde_json::json!({"pid": [b.pid()], "seconds": 3}));
    let (code, answer) = server.post(serde_json::json!({"pid": a.pid(), "seconds": 1}));
    assert_eq!(code, 429, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--max-concurrent")
    );
    let (ea, eb) = std::thread::scope(|s| {
        let ha = s.spawn(|| server.progress(&ida));
        let hb = s.spawn(|| server.progress(&idb));
        (ha.join().expect("a"), hb.join().expect("b"))
    });
    for (events, pid) in [(ea, a.pid()), (eb, b.pid())] {
        let last = events.last().expect("events");
        assert_eq!(last["state"], "done", "{last}");
        assert_eq!(last["scope"], format!("pid {pid}"));
        assert!(
            events
                .iter()
                .any(|e| e["state"] == "recording" && e["samples"].as_u64() > Some(0))
        );
    }
    for id in [&ida, &idb] {
        let shares = folded(&data.path().join(id));
        let a = share(&shares, |f| f == "hot_a");
        assert!((55.0..85.0).contains(&a), "hot_a's share {a} in {id}");
    }
    // Slots are given back.
    let id = server.start_recording(serde_json::json!({"pid": a.pid(), "seconds": 0.5}));
    server.wait_done(&id);
}

#[test]
fn tokens() {
    let data = OutDir::new(scratch("serve-token"));
    std::fs::create_dir_all(data.path()).expect("dir");
    let token_file = data.path().join("token");
    let token = "s3cret-token-0123456789abcdef";
    std::fs::write(&token_file, format!("{token}\n")).expect("token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    // Anything but loopback needs a token; a token file others can read is refused.
    let out = profiler()
        .args(["serve", "--listen", "0.0.0.0:0", "--data"])
        .arg(data.path().join("d"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("--token-file"),
        "{}",
        stderr_of(&out)
    );
    let out = profiler()
        .args(["serve", "--listen", "0.0.0.0:0", "--token-file"])
        .arg(&token_file)
        .arg("--data")
        .arg(data.path().join("d"))
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("chmod 600"), "{}", stderr_of(&out));

    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut server = Server::start(
        &data.path().join("d"),
        &["--token-file", token_file.to_str().expect("path")],
    );
    for path in [
        "/api/recordings",
        "/api/processes",
        "/metrics",
        "/debug/pprof/profile?pid=1",
    ] {
        let (code, _) = server.call("GET", path, &[]);
        assert_eq!(code, 401, "no token: {path}");
        let (code, _) = server.call(
            "GET",
            path,
            &["-H", "Authorization: Bearer s3cret-token-0123456789abcdeF"],
        );
        assert_eq!(code, 401, "wrong token: {path}");
    }
    let (code, _) = server.call(
        "GET",
        "/api/recordings",
        &["-H", &format!("Authorization: Basic {token}")],
    );
    assert_eq!(code, 401);
    // The page alone is served without the token (it holds no data, and asks for it).
    let (code, page) = server.call("GET", "/", &[]);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&page).contains("Authorization"));
    server.token = Some(token.to_string());
    let (code, _) = server.call("GET", "/api/recordings", &[]);
    assert_eq!(code, 200);
    let (code, _) = server.call("GET", "/metrics", &[]);
    assert_eq!(code, 200);
}

/// What a request may not do: exceed limits, reach outside the data directory, come from
/// another site.
#[test]
fn refusals() {
    let target = split_target();
    let data = OutDir::new(scratch("serve-refusals"));
    let server = Server::start(
        data.path(),
        &["--max-seconds", "5", "--max-concurrent", "1"],
    );
    let pid = target.pid();
    let cases = [
        (
            serde_json::json!({"pid": pid, "seconds": 6}),
            400,
            "--max-seconds",
        ),
        (
            serde_json::json!({"pid": pid, "seconds": -1}),
            400,
            "positive",
        ),
        (serde_json::json!({"seconds": 1}), 400, "one scope"),
        (
            serde_json::json!({"pid": pid, "all": true}),
            400,
            "one scope",
        ),
        (
            serde_json::json!({"pid": pid, "seconds": 1, "hz": 0}),
            400,
            "hz",
        ),
        (
            serde_json::json!({"pid": pid, "run": "rm -rf /"}),
            400,
            "unknown field",
        ),
        (
            serde_json::json!({"pid": 999_999_999u32, "seconds": 1}),
            404,
            "no process",
        ),
        (serde_json::json!({"pid": pid}), 400, "--max-seconds"),
    ];
    for (req, code, words) in cases {
        let (got, answer) = server.post(req.clone());
        assert_eq!(got, code, "{req}: {answer}");
        assert!(
            answer["error"].as_str().unwrap_or_default().contains(words),
            "{req}: {answer}"
        );
    }
    let big = format!("{{\"pid\": {pid}, \"x\": \"{}\"}}", "a".repeat(100_000));
    let (code, _) = server.call(
        "POST",
        "/api/recordings",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &big,
        ],
    );
    assert_eq!(code, 413);
    let (code, _) = server.call(
        "POST",
        "/api/recordings",
        &[
            "-H",
            "Content-Type: text/plain",
            "--data-binary",
            &format!("{{\"pid\": {pid}}}"),
        ],
    );
    assert_eq!(code, 415);
    // Another site's page cannot start recordings through the browser.
    let (code, _) = server.call(
        "GET",
        &format!("/debug/pprof/profile?seconds=1&pid={pid}"),
        &["-H", "Sec-Fetch-Site: cross-site"],
    );
    assert_eq!(code, 403);
    // Nor reach us under its own name (DNS rebinding).
    let (code, _) = server.call("GET", "/api/recordings", &["-H", "Host: evil.example:80"]);
    assert_eq!(code, 403);

    let id = server.start_recording(serde_json::json!({"pid": pid, "seconds": 5}));
    let id = id.as_str();
    for path in [
        "/api/recordings/../../etc/passwd".to_string(),
        "/api/recordings/..%2F..%2Fetc%2Fpasswd".to_string(),
        format!("/api/recordings/{id}/../../../etc/passwd"),
        format!("/api/recordings/{id}/..%2F..%2F..%2Fetc%2Fpasswd"),
        format!("/api/recordings/{}/meta.json", id.to_uppercase()),
        format!("/api/recordings/{id}/passwd"),
        "/api/recordings/0123456789abcdef0123456789abcdef".to_string(),
    ] {
        let (code, body) = server.call("GET", &path, &[]);
        assert!(
            code == 404 || code == 400,
            "{path}: {code} {}",
            String::from_utf8_lossy(&body)
        );
        assert!(!String::from_utf8_lossy(&body).contains("root:"), "{path}");
    }
    // While recording: a second one is over the limit, its files are not ready yet.
    let (code, _) = server.post(serde_json::json!({"pid": pid, "seconds": 1}));
    assert_eq!(code, 429);
    let (code, _) = server.call("GET", &format!("/api/recordings/{id}/flamegraph.svg"), &[]);
    assert_eq!(code, 409);
    // DELETE stops it and removes it once written.
    let (code, _) = server.call("DELETE", &format!("/api/recordings/{id}"), &[]);
    assert_eq!(code, 202);
    let until = Instant::now() + Duration::from_secs(30);
    while data.path().join(id).exists() {
        assert!(Instant::now() < until, "the deleted recording is removed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.probe_fds(), 0);
    let (code, _) = server.call("GET", &format!("/api/recordings/{id}"), &[]);
    assert_eq!(code, 404);
}

/// A Go client that goes away mid-recording: the recording stops at once, its probes are
/// detached and its outputs written.
#[test]
fn a_client_that_disconnects_leaves_no_probe() {
    let target = split_target();
    let data = OutDir::new(scratch("serve-disconnect"));
    let server = Server::start(data.path(), &[]);
    assert_eq!(server.probe_fds(), 0);
    let mut client = Command::new("curl")
        .args(["-s", "-o", "/dev/null"])
        .arg(server.url(&format!(
            "/debug/pprof/profile?seconds=60&pid={}",
            target.pid()
        )))
        .spawn()
        .expect("curl");
    let until = Instant::now() + Duration::from_secs(30);
    while server.probe_fds() == 0 {
        assert!(Instant::now() < until, "the recording attaches");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let attached = server.probe_fds();
    client.kill().expect("kill curl");
    let _ = client.wait();
    let stopped = Instant::now();
    while server.probe_fds() != 0 {
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "probes detached after the client left"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{attached} probe descriptors while recording, 0 after the client left");
    let list = server.get_json("/api/recordings");
    let until = Instant::now() + Duration::from_secs(30);
    let mut meta = list[0].clone();
    while meta["state"] != "done" {
        assert!(Instant::now() < until, "{meta}");
        std::thread::sleep(Duration::from_millis(100));
        meta = server.get_json("/api/recordings")[0].clone();
    }
    assert_eq!(meta["stop_reason"], "stop requested", "{meta}");
    assert!(meta["elapsed_s"].as_f64() < Some(30.0), "{meta}");
}

/// SIGTERM to the server: every recording stops, its outputs are written, the server exits.
#[test]
fn sigterm_writes_every_recording_and_exits() {
    let a = split_target();
    let b = split_target();
    let data = OutDir::new(scratch("serve-sigterm"));
    let mut server = Server::start(data.path(), &[]);
    let ids = [
        server.start_recording(serde_json::json!({"pid": a.pid(), "seconds": 120})),
        server.start_recording(serde_json::json!({"pid": b.pid(), "seconds": 120})),
    ];
    let until = Instant::now() + Duration::from_secs(30);
    while ids
        .iter()
        .any(|id| server.get_json(&format!("/api/recordings/{id}"))["samples"].as_u64() == Some(0))
    {
        assert!(Instant::now() < until, "both record");
        std::thread::sleep(Duration::from_millis(100));
    }
    let started = Instant::now();
    let status = server.stop();
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(60));
    let log: Vec<String> = server.log.lock().expect("log").try_iter().collect();
    assert!(
        log.iter()
            .any(|l| l.contains("SIGTERM received: stopping 2 recording(s)")),
        "{log:?}"
    );
    for id in &ids {
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(data.path().join(id).join("meta.json")).expect("meta.json"),
        )
        .expect("JSON");
        assert_eq!(meta["state"], "done", "{meta}");
        assert!(data.path().join(id).join("profile.pb.gz").exists());
        assert!(!folded(&data.path().join(id)).is_empty());
    }
}

/// The page in headless Chromium, as a person uses it: find the process by searching, pick
/// it, start a recording, watch its progress, and find the hot function in the inline
/// (interactive, sandboxed) flame graph. The screenshot is kept as target/serve-page.png.
#[test]
fn page_records_and_shows_the_flame_graph() {
    let target = split_target();
    let data = OutDir::new(scratch("serve-page"));
    let server = Server::start(data.path(), &[]);
    let profile = OutDir::new(scratch("serve-chromium"));
    let mut browser = cdp::Browser::launch(profile.path());
    browser.navigate(&server.url("/"));
    let pid = target.pid();
    let script = r##"(async () => {
        const until = (f, ms, what) => new Promise((ok, fail) => {
            const t0 = Date.now();
            const iv = setInterval(() => {
                let v; try { v = f(); } catch (_) {}
                if (v) { clearInterval(iv); ok(v); }
                else if (Date.now() - t0 > ms) { clearInterval(iv); fail(new Error("timed out: " + what)); }
            }, 50);
        });
        await until(() => document.querySelector('#procs tr[data-pid="PID"]'), 30000, "the process list");
        const all = document.querySelectorAll("#procs tbody tr").length;
        const search = document.querySelector("#search");
        search.value = "split";
        search.dispatchEvent(new Event("input"));
        const rows = [...document.querySelectorAll("#procs tbody tr")];
        if (!rows.every(r => r.textContent.includes("split"))) throw new Error("the search kept other processes");
        document.querySelector('#procs tr[data-pid="PID"]').click();
        if (document.querySelector("#f-target").value !== "PID") throw new Error("a click picks the process");
        document.querySelector("#f-seconds").value = "3";
        document.querySelector("#start").click();
        const samples = [];
        await until(() => {
            samples.push(Number(document.querySelector("#samples").textContent));
            return document.querySelector("#state").textContent === "done";
        }, 60000, "the recording");
        await until(() => document.querySelector("#view iframe.flame"), 30000, "the flame graph");
        return { all, shown: rows.length, samples, state: document.querySelector("#state").textContent,
                 sandbox: document.querySelector("#view iframe.flame").getAttribute("sandbox"),
                 tabs: [...document.querySelectorAll("#tabs button")].map(b => b.textContent),
                 downloads: [...document.querySelectorAll("#downloads button")].map(b => b.textContent) };
    })()"##
        .replace("PID", &pid.to_string());
    let seen = browser.eval(&script);
    eprintln!("page: {seen}");
    assert!(seen["shown"].as_u64() < seen["all"].as_u64(), "{seen}");
    let samples: Vec<u64> = seen["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .filter_map(|v| v.as_u64())
        .collect();
    assert!(
        samples.windows(2).any(|w| 0 < w[0] && w[0] < w[1]),
        "live progress: the sample count grows while recording: {samples:?}"
    );
    assert_eq!(seen["sandbox"], "allow-scripts");
    assert!(
        seen["downloads"]
            .to_string()
            .contains("Open in Perfetto UI"),
        "{seen}"
    );

    // The frame's document is inferno's SVG, its script running (interactive: `zoom` and
    // `search` are defined), and its frames name the hot function.
    let probe = r##"(() => {
        const titles = [...document.querySelectorAll("title")].map(t => t.textContent);
        return { root: document.documentElement.nodeName, scripted: typeof zoom === "function"
                 && typeof search === "function", hot: titles.find(t => t.startsWith("hot_a (")) };
    })()"##;
    let until = Instant::now() + Duration::from_secs(30);
    let frame = loop {
        let found = browser
            .eval_in_frames(probe)
            .into_iter()
            .find(|v| v["root"] == "svg" && v["hot"].is_string());
        if let Some(f) = found {
            break f;
        }
        assert!(
            Instant::now() < until,
            "no frame of the page shows a flame graph with hot_a: {:?}",
            browser.eval_in_frames(probe)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("flame graph frame: {frame}");
    assert_eq!(
        frame["scripted"], true,
        "inferno's script runs in the frame"
    );
    // The page itself cannot reach into it (sandboxed: another origin).
    let reach = browser.eval(
        r##"(() => { try { return !!document.querySelector("#view iframe.flame").contentDocument; } catch (_) { return false; } })()"##,
    );
    assert_eq!(reach, false);
    let shot = workspace_root().join("target/serve-page.png");
    browser.screenshot(&shot);
    eprintln!("screenshot: {}", shot.display());
    // The recording the page made is the server's, with every output.
    let list = server.get_json("/api/recordings");
    assert_eq!(list[0]["scope"], format!("pid {pid}"));
    assert_eq!(list[0]["state"], "done");
}

/// 200 recordings one after the other: the server's open descriptors, resident memory and heap
/// do not grow. The first 20 warm it up (allocator arenas, the blocking pool's threads,
/// caches filled once); the figures before and after the next 200 are printed.
#[test]
fn two_hundred_recordings_leave_nothing_behind() {
    // Longer than the 220 recordings take on a loaded machine (killed when dropped).
    let target = Target::start(&build_c("split", "split.c", C_FP), &["1800"]);
    let data = OutDir::new(scratch("serve-200"));
    let server = Server::start(data.path(), &["--retain", "5"]);
    let pid = server.child.id();
    let record = |n: usize| {
        for _ in 0..n {
            let id = server.start_recording(serde_json::json!({
                "pid": target.pid(), "seconds": 0.1, "call_graph": "fp"
            }));
            let done = server.wait_done(&id);
            assert!(done["samples"].as_u64() > Some(0), "{done}");
        }
    };
    // Settled: the blocking pool's idle threads end after 10 s.
    let settle = || std::thread::sleep(Duration::from_secs(11));
    // What the allocator has handed out: a leak shows there byte for byte, whatever glibc
    // keeps resident around it.
    let heap = || {
        let metrics = String::from_utf8(server.call("GET", "/metrics", &[]).1).expect("text");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("profiler_heap_in_use_bytes "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no profiler_heap_in_use_bytes in {metrics}"))
    };
    record(20);
    settle();
    let (fds_before, rss_before, heap_before) = (fds(pid), rss_kib(pid), heap());
    let started = Instant::now();
    record(200);
    let took = started.elapsed();
    settle();
    let (fds_after, rss_after, heap_after) = (fds(pid), rss_kib(pid), heap());
    eprintln!(
        "200 recordings in {:.0} s: open files {} before, {} after; RSS {} KiB before, {} KiB after; \
         heap in use {} B before, {} B after",
        took.as_secs_f64(),
        fds_before.len(),
        fds_after.len(),
        rss_before,
        rss_after,
        heap_before,
        heap_after
    );
    assert_eq!(
        fds_after.len(),
        fds_before.len(),
        "{fds_before:?}\n{fds_after:?}"
    );
    assert_eq!(server.probe_fds(), 0);
    // Not one recording's worth of growth: a leak of anything a recording holds (its
    // samples, stacks, modules) would pass that within a few dozen recordings.
    assert!(
        rss_after <= rss_before + 4096,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Under 1.3 KB per recording: one recording's samples alone are tens of KB.
    assert!(
        heap_after <= heap_before + 256 * 1024,
        "heap in use grew from {heap_before} B to {heap_after} B"
    );
    let list = server.get_json("/api/recordings");
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(5),
        "--retain 5 keeps five"
    );
    let metrics = String::from_utf8(server.call("GET", "/metrics", &[]).1).expect("text");
    assert!(
        metrics.contains("profiler_recordings_total{state=\"done\"} 220"),
        "{metrics}"
    );
}

/// `--allow-cgroup` and `--allow-pid-ns`: what may be profiled, checked before anything is
/// loaded (403 otherwise).
#[test]
fn allow_lists() {
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(Path::new)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
        .expect("a cgroup v2 hierarchy");
    let cg = root.join(format!("profiler-serve-allow-{}", std::process::id()));
    std::fs::create_dir(&cg).expect("create the test cgroup");
    struct Rmdir(std::path::PathBuf);
    impl Drop for Rmdir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _cg = Rmdir(cg.clone());
    let inside = split_target();
    let outside = split_target();
    std::fs::write(cg.join("cgroup.procs"), inside.pid().to_string()).expect("move");
    let rel = format!("/{}", cg.strip_prefix(root).expect("below root").display());

    let data = OutDir::new(scratch("serve-allow"));
    let server = Server::start(data.path(), &["--allow-cgroup", &rel]);
    let id = server.start_recording(serde_json::json!({"pid": inside.pid(), "seconds": 0.3}));
    server.wait_done(&id);
    let id = server.start_recording(serde_json::json!({"cgroup": rel, "seconds": 0.3}));
    server.wait_done(&id);
    for req in [
        serde_json::json!({"pid": outside.pid(), "seconds": 0.3}),
        serde_json::json!({"pid": [inside.pid(), outside.pid()], "seconds": 0.3}),
        serde_json::json!({"all": true, "seconds": 0.3}),
        serde_json::json!({"cgroup": "/", "seconds": 0.3}),
    ] {
        let (code, answer) = server.post(req.clone());
        assert_eq!(code, 403, "{req}: {answer}");
        assert!(
            answer["error"]
                .as_str()
                .unwrap_or_default()
                .contains("--allow"),
            "{answer}"
        );
    }
    let (code, _) = server.call(
        "GET",
        &format!("/debug/pprof/profile?seconds=1&pid={}", outside.pid()),
        &[],
    );
    assert_eq!(code, 403);
    drop(server);

    // A process in a PID namespace of its own (as in a container) is not the server's.
    let mut nested = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "sleep", "60"])
        .spawn()
        .expect("unshare (util-linux)");
    let until = Instant::now() + Duration::from_secs(10);
    let nested_pid = loop {
        let child = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", nested.id()))
            .unwrap_or_default();
        if let Some(p) = child.split_whitespace().next() {
            break p.to_string();
        }
        assert!(Instant::now() < until, "unshare forks its child");
        std::thread::sleep(Duration::from_millis(20));
    };
    let data = OutDir::new(scratch("serve-allow-ns"));
    let server = Server::start(data.path(), &["--allow-pid-ns"]);
    let id = server.start_recording(serde_json::json!({"pid": outside.pid(), "seconds": 0.3}));
    server.wait_done(&id);
    for req in [
        serde_json::json!({"pid": nested_pid.parse::<u32>().expect("pid"), "seconds": 0.3}),
        serde_json::json!({"all": true, "seconds": 0.3}),
        serde_json::json!({"cgroup": rel, "seconds": 0.3}),
    ] {
        let (code, answer) = server.post(req.clone());
        assert_eq!(code, 403, "{req}: {answer}");
    }
    let _ = nested.kill();
    let _ = nested.wait();
}

/// The page's other views of a recording with spans and off-CPU time (the demo workload):
/// the span report as a table that sorts by the column clicked, and the off-CPU and wall
/// flame graphs, where the request threads wait for their database: `db_query` blocked in a
/// pipe read (`[off-cpu]` … `anon_pipe_read`; the libc wrapper hides `wait_for_db` from the
/// frame-pointer walk, see the README's known limits).
#[test]
fn page_shows_spans_off_cpu_and_wall() {
    let bin = build_c("demo", "demo.c", &c_fp_probes());
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let demo = Kill(Command::new(&bin).arg("120").spawn().expect("demo starts"));
    std::thread::sleep(Duration::from_millis(300));
    let data = OutDir::new(scratch("serve-page-views"));
    let server = Server::start(data.path(), &[]);
    let profile = OutDir::new(scratch("serve-chromium-views"));
    let mut browser = cdp::Browser::launch(profile.path());
    browser.navigate(&server.url("/"));
    let script = r##"(async () => {
        const until = (f, ms, what) => new Promise((ok, fail) => {
            const t0 = Date.now();
            const iv = setInterval(() => {
                let v; try { v = f(); } catch (_) {}
                if (v) { clearInterval(iv); ok(v); }
                else if (Date.now() - t0 > ms) { clearInterval(iv); fail(new Error("timed out: " + what)); }
            }, 50);
        });
        await until(() => document.querySelector('#procs tr[data-pid="PID"]'), 30000, "the process list");
        const row = document.querySelector('#procs tr[data-pid="PID"]');
        const probes = row.lastChild.textContent;
        row.click();
        document.querySelector("#f-seconds").value = "3";
        document.querySelector("#f-offcpu").checked = true;
        document.querySelector("#start").click();
        await until(() => document.querySelector("#state").textContent === "done", 60000, "the recording");
        await until(() => document.querySelector("#view iframe.flame"), 30000, "the flame graph");
        const tabs = [...document.querySelectorAll("#tabs button")];
        tabs.find(b => b.textContent === "Spans").click();
        const table = await until(() => document.querySelector("#spans-table"), 10000, "the span table");
        const column = (i) => [...table.querySelectorAll("tbody tr")].map(r => r.children[i].dataset.value);
        const headers = [...table.querySelectorAll("th")].map(h => h.textContent);
        const byTotal = column(0);
        const totalsDesc = column(2).map(Number);
        table.querySelectorAll("th")[2].click();
        const totalsAsc = column(2).map(Number);
        table.querySelectorAll("th")[0].click();
        const byName = column(0);
        tabs.find(b => b.textContent === "Off-CPU").click();
        await until(() => document.querySelector("#view iframe.flame[title='offcpu.svg']"), 10000, "off-CPU");
        return { probes, tabs: tabs.map(b => b.textContent), headers, byTotal, totalsDesc, totalsAsc, byName };
    })()"##
        .replace("PID", &demo.0.id().to_string());
    let seen = browser.eval(&script);
    eprintln!("page: {seen}");
    assert_eq!(
        seen["probes"], "yes",
        "the process list says the demo carries span probes"
    );
    assert_eq!(
        seen["tabs"],
        serde_json::json!(["CPU", "Spans", "CPU by span", "Off-CPU", "Wall"])
    );
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|s| s.as_str().expect("text").to_string())
            .collect()
    };
    let by_name = names(&seen["byName"]);
    for span in ["request", "parse", "db_query", "render"] {
        assert!(by_name.iter().any(|n| n == span), "{span} in {by_name:?}");
    }
    // request holds every other span: the most total time.
    assert_eq!(names(&seen["byTotal"])[0], "request");
    let mut sorted = by_name.clone();
    sorted.sort();
    assert_eq!(by_name, sorted, "a click on name sorts by name");
    // Total time: the default order, most first; a click on its header turns it around.
    let totals = |k: &str| -> Vec<f64> {
        seen[k]
            .as_array()
            .expect("totals")
            .iter()
            .map(|c| c.as_f64().expect("total"))
            .collect()
    };
    let (desc, asc) = (totals("totalsDesc"), totals("totalsAsc"));
    assert!(desc.windows(2).all(|w| w[0] >= w[1]), "{desc:?}");
    assert!(asc.windows(2).all(|w| w[0] <= w[1]), "{asc:?}");
    assert!(desc.first() > desc.last(), "totals differ: {desc:?}");

    let probe = r##"(() => {
        const titles = [...document.querySelectorAll("title")].map(t => t.textContent);
        const has = (name) => titles.some(t => t.startsWith(name + " ("));
        return { root: document.documentElement.nodeName,
                 wait: has("[off-cpu]") && has("db_query") && has("anon_pipe_read") };
    })()"##;
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let frames = browser.eval_in_frames(probe);
        if let Some(f) = frames.iter().find(|v| v["wait"] == true) {
            eprintln!("off-CPU frame: {f}");
            break;
        }
        assert!(
            Instant::now() < until,
            "db_query waiting on its pipe in the off-CPU flame graph: {frames:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    browser.screenshot(&workspace_root().join("target/serve-page-offcpu.png"));
}
