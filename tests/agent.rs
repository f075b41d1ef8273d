//! `profiler agent` pushing to receivers that live in this test process (plain tokio TCP
//! servers speaking just enough HTTP/1.1): every Pyroscope body decoded with `protoc` against
//! pprof's official `profile.proto` and read by `go tool pprof` (`-tagfocus=span_name=…`),
//! every OTLP body decoded against the official OpenTelemetry profiles schema vendored in
//! tests/proto/otlp; windows checked for gaps and overlaps; a receiver that is down for the
//! first windows (nothing lost, order kept) and a spool too small for the outage (the oldest
//! dropped and counted); https and otlp+https to receivers behind rustls with a CA made by
//! the `openssl` tool: trusted through --ca-file, refused without it (windows kept) and for a
//! certificate of another host name.
use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use profiler_tests::*;

/// One request as the receiver got it.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    content_type: String,
    authorization: Option<String>,
    tenant: Option<String>,
    body: Vec<u8>,
}

/// An HTTP receiver on 127.0.0.1: answers every POST with 200 and keeps what it got.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
}

/// A port nobody listens on now: the receiver of an outage test starts there later.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

impl Receiver {
    fn start() -> Self {
        Self::start_on(0)
    }

    fn start_on(port: u16) -> Self {
        Self::start_with(port, None)
    }

    /// A receiver behind TLS with the certificate (chain) and key of these PEM files.
    fn start_tls(cert: &Path, key: &Path) -> Self {
        use tokio_rustls::rustls::{
            self,
            pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
        };
        let certs = CertificateDer::pem_file_iter(cert)
            .expect("server certificate")
            .collect::<Result<Vec<_>, _>>()
            .expect("server certificate PEM");
        let key = PrivateKeyDer::from_pem_file(key).expect("server key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("server certificate and key");
        Self::start_with(0, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
    }

    fn start_with(port: u16, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("receiver binds");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = got.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let sink = sink.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls {
                            // A handshake the client broke off (a certificate it refused)
                            // delivers nothing.
                            Some(tls) => {
                                if let Ok(stream) = tls.accept(stream).await {
                                    serve(stream, &sink).await;
                                }
                            }
                            None => {
                                serve(stream, &sink).await;
                            }
                        }
                    });
                }
            });
        });
        Self { port, got }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Reads one request (headers, then Content-Length bytes of body), keeps it, then answers
/// 200: kept first, because the agent counts a window delivered at the answer and may exit
/// at once, and the test reads what was received as soon as it has (a fresh clone's
/// sigterm test once found nothing: the 200 had gone out before the push).
async fn serve<S>(mut stream: S, sink: &Mutex<Vec<Received>>) -> Option<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let request_line = lines.next()?.to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let length: usize = header("content-length")?.parse().ok()?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut parts = request_line.split_whitespace();
    assert_eq!(parts.next(), Some("POST"), "{request_line}");
    let got = Received {
        path: parts.next()?.to_string(),
        content_type: header("content-type").unwrap_or_default(),
        authorization: header("authorization"),
        tenant: header("x-scope-orgid"),
        body: buf[head_end..head_end + length].to_vec(),
    };
    sink.lock().unwrap_or_else(|e| e.into_inner()).push(got);
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    // TLS: close_notify, as servers send it.
    let _ = stream.shutdown().await;
    Some(())
}

fn query<'a>(path: &'a str, key: &str) -> Option<&'a str> {
    path.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// The `profile` part of a Pyroscope form (the off-CPU profile), or the body itself.
fn pprof_part(r: &Received) -> Vec<u8> {
    let Some(boundary) = r.content_type.split("boundary=").nth(1) else {
        return r.body.clone();
    };
    let delimiter = format!("--{boundary}");
    let body = &r.body;
    let mut starts = Vec::new();
    let mut i = 0;
    while let Some(p) = body[i..]
        .windows(delimiter.len())
        .position(|w| w == delimiter.as_bytes())
    {
        starts.push(i + p);
        i += p + delimiter.len();
    }
    for w in starts.windows(2) {
        let part = &body[w[0] + delimiter.len()..w[1]];
        let Some(h) = part.windows(4).position(|x| x == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&part[..h]);
        if head.contains("name=\"profile\"") {
            // The part ends with the CRLF before the next delimiter.
            return part[h + 4..part.len() - 2].to_vec();
        }
    }
    panic!("no profile part in the form");
}

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("exits")
}

/// A gzipped pprof body decoded by protoc with pprof's official schema.
fn decode_pprof(gz: &[u8]) -> TextMessage {
    let raw = run_with_stdin(Command::new("gzip").arg("-dc"), gz);
    assert!(raw.status.success(), "a pprof body is not gzip");
    let schema_dir = workspace_root().join("tests/proto");
    let out = run_with_stdin(
        Command::new("protoc")
            .arg("--proto_path")
            .arg(&schema_dir)
            .args(["--decode=perftools.profiles.Profile", "profile.proto"]),
        &raw.stdout,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "protoc: {err}"
    );
    TextMessage::parse(&String::from_utf8_lossy(&out.stdout))
}

/// An OTLP body decoded by protoc with the official OpenTelemetry schema.
fn decode_otlp(body: &[u8]) -> TextMessage {
    let out = run_with_stdin(
        Command::new("protoc")
            .arg("--proto_path")
            .arg(workspace_root().join("tests/proto/otlp"))
            .args([
                "--decode=opentelemetry.proto.collector.profiles.v1development.ExportProfilesServiceRequest",
                "opentelemetry/proto/collector/profiles/v1development/profiles_service.proto",
            ]),
        body,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "protoc: {err}"
    );
    TextMessage::parse(&String::from_utf8_lossy(&out.stdout))
}

fn strings(p: &TextMessage) -> Vec<String> {
    p.scalars
        .iter()
        .filter(|(k, _)| k == "string_table")
        .map(|(_, v)| v.trim_matches('"').to_string())
        .collect()
}

fn sample_types(p: &TextMessage) -> Vec<String> {
    let s = strings(p);
    p.all("sample_type")
        .map(|t| {
            let at = |f: &str| s[t.get_u64(f).unwrap_or(0) as usize].clone();
            format!("{}/{}", at("type"), at("unit"))
        })
        .collect()
}

/// Sum of the first value of the samples, or of those carrying `label=value`.
fn samples(p: &TextMessage, label: Option<(&str, &str)>) -> u64 {
    let s = strings(p);
    p.all("sample")
        .filter(|sample| {
            let Some((key, value)) = label else {
                return true;
            };
            sample.all("label").any(|l| {
                s[l.get_u64("key").unwrap_or(0) as usize] == key
                    && s[l.get_u64("str").unwrap_or(0) as usize] == value
            })
        })
        .map(|sample| sample.get_u64("value").unwrap_or(0))
        .sum()
}

/// `go tool pprof -top` on `file`: (samples shown, samples in total).
fn pprof_top(file: &Path, extra: &[&str]) -> (u64, u64, String) {
    let out = Command::new("go")
        .args([
            "tool",
            "pprof",
            "-symbolize=none",
            "-top",
            "-sample_index=samples",
            "-nodefraction=0",
        ])
        .args(extra)
        .arg(file)
        .output()
        .expect("go runs (cargo xtask setup installs golang-go)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("go tool pprof -top {extra:?}:\n{text}");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Showing nodes accounting for "))
        .expect("a `Showing nodes accounting for` line");
    let shown = line.split(',').next().and_then(|v| v.parse().ok());
    let total = line
        .rsplit_once(" of ")
        .and_then(|(_, t)| t.strip_suffix(" total"))
        .and_then(|v| v.parse().ok());
    (shown.expect("shown"), total.expect("total"), text)
}

/// The agent's closing figures for one destination: (recorded, delivered, dropped, spooled).
fn figures(stderr: &str, url: &str) -> (u64, u64, u64, u64) {
    let prefix = format!("profiler: {url}: ");
    let line = stderr
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .find(|l| l.contains("windows recorded"))
        .unwrap_or_else(|| panic!("no closing figures for {url} in:\n{stderr}"));
    let n: Vec<u64> = line
        .split(',')
        .filter_map(|part| part.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(n.len(), 4, "{line}");
    (n[0], n[1], n[2], n[3])
}

fn agent(args: &[&str]) -> Child {
    profiler()
        .arg("agent")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("profiler agent starts")
}

/// Waits for the agent's "recording" line, then returns a reader of the rest of stderr.
fn wait_recording(child: &mut Child) -> std::thread::JoinHandle<String> {
    use std::io::{BufRead, BufReader, Read};
    let mut err = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        let n = err.read_line(&mut line).expect("agent stderr");
        seen.push_str(&line);
        assert!(n != 0, "agent ended before recording: {seen}");
        if line.starts_with("profiler: recording") {
            break;
        }
    }
    std::thread::spawn(move || {
        err.read_to_string(&mut seen).expect("rest of stderr");
        seen
    })
}

fn finish(mut child: Child, err: std::thread::JoinHandle<String>) -> String {
    let status = child.wait().expect("agent exits");
    let err = err.join().expect("stderr reader");
    eprintln!("agent stderr:\n{err}");
    assert!(status.success(), "agent failed: {err}");
    err
}

/// Sends SIGTERM to the agent and waits for its exit: when it was sent (ns since the epoch)
/// and the agent's stderr.
fn terminate(child: Child, err: std::thread::JoinHandle<String>) -> (u64, String) {
    let sent = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_nanos() as u64;
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    (sent, finish(child, err))
}

/// The CPU bodies Pyroscope got (not the off-CPU forms), decoded, in arrival order.
fn cpu_windows(got: &[Received]) -> Vec<(Received, TextMessage)> {
    got.iter()
        .filter(|r| r.path.starts_with("/ingest?") && !r.content_type.starts_with("multipart/"))
        .map(|r| (r.clone(), decode_pprof(&r.body)))
        .collect()
}

/// Windows follow each other exactly: each begins where the one before ended, and none is
/// longer than the period (1 s in these tests).
fn assert_contiguous(windows: &[(Received, TextMessage)]) {
    for (r, p) in windows {
        let d = p.get_u64("duration_nanos").unwrap_or(0);
        assert!(d > 0 && d <= 1_000_000_000, "{}: {d} ns", r.path);
    }
    for w in windows.windows(2) {
        let end = w[0].1.get_u64("time_nanos").unwrap_or(0)
            + w[0].1.get_u64("duration_nanos").unwrap_or(0);
        let next = w[1].1.get_u64("time_nanos").unwrap_or(0);
        assert_eq!(
            end, next,
            "a gap or an overlap between {} and {}",
            w[0].0.path, w[1].0.path
        );
        assert_eq!(query(&w[0].0.path, "until"), query(&w[1].0.path, "from"));
    }
}

#[test]
fn windows_decode_against_the_official_schemas_and_pprof_focuses_on_spans() {
    let bin = build_c(
        "agent-probes",
        "probes_c.c",
        &[c_fp_probes(), vec!["-DREQUESTS=12000".to_string()]].concat(),
    );
    let mut target = Target::start(&bin, &[]);
    let pyroscope = Receiver::start();
    let otlp = Receiver::start();
    let py_url = format!("http://127.0.0.1:{}", pyroscope.port);
    let otlp_url = format!("otlp+http://127.0.0.1:{}", otlp.port);
    let pid = target.pid().to_string();
    let mut child = agent(&[
        "--pid",
        &pid,
        "--period",
        "1s",
        "--frequency",
        "199",
        "--off-cpu",
        "--label",
        "env=test",
        "--push",
        &py_url,
        "--push",
        &otlp_url,
    ]);
    let err = wait_recording(&mut child);
    target.go();
    target.finish();
    // The target's exit stops the agent, which pushes the window in progress.
    let err = finish(child, err);
    let (recorded, delivered, dropped, spooled) = figures(&err, &py_url);
    assert_eq!((delivered, dropped, spooled), (recorded, 0, 0));
    assert_eq!(figures(&err, &otlp_url), (recorded, recorded, 0, 0));
    assert!(recorded >= 2, "{recorded} windows");

    let got = pyroscope.received();
    let windows = cpu_windows(&got);
    assert_eq!(windows.len() as u64, recorded);
    assert_contiguous(&windows);
    let mut total = 0;
    for (r, p) in &windows {
        eprintln!(
            "window {}: {} ns from {}, {} samples",
            r.path,
            p.get_u64("duration_nanos").unwrap_or(0),
            p.get_u64("time_nanos").unwrap_or(0),
            samples(p, None)
        );
        assert_eq!(sample_types(p), ["samples/count", "cpu/nanoseconds"]);
        let name = query(&r.path, "name").expect("name");
        assert!(
            name.starts_with("probes_c") || name.starts_with("agent-probes"),
            "{name}"
        );
        assert!(name.contains("env%3Dtest"), "{name}");
        assert_eq!(query(&r.path, "format"), Some("pprof"));
        assert_eq!(query(&r.path, "spyName"), Some("profiler"));
        total += samples(p, None);
    }
    assert!(total > 50, "{total} samples in all windows");
    // Off-CPU time goes as its own profile, one per window.
    let off: Vec<TextMessage> = got
        .iter()
        .filter(|r| r.content_type.starts_with("multipart/form-data"))
        .map(|r| decode_pprof(&pprof_part(r)))
        .collect();
    assert_eq!(off.len() as u64, recorded);
    assert!(
        off.iter()
            .all(|p| sample_types(p) == ["intervals/count", "off_cpu/nanoseconds"])
    );

    // The window with the most db_query samples, read by pprof.
    let (r, p) = windows
        .iter()
        .max_by_key(|(_, p)| samples(p, Some(("span_name", "db_query"))))
        .expect("a window");
    let in_query = samples(p, Some(("span_name", "db_query")));
    assert!(
        in_query > 5,
        "{in_query} db_query samples in the best window"
    );
    let dir = OutDir::new(scratch("agent-window"));
    std::fs::create_dir_all(&*dir).expect("scratch dir");
    let file = dir.join("window.pb.gz");
    std::fs::write(&file, &r.body).expect("write window");
    let (shown, all, text) = pprof_top(&file, &["-tagfocus=span_name=^db_query$"]);
    assert_eq!(shown, in_query);
    assert_eq!(all, samples(p, None));
    assert!(text.contains("run_query"), "{text}");

    // OTLP: one request per window, each decoded by the official schema.
    let requests = otlp.received();
    assert_eq!(requests.len() as u64, recorded);
    let mut saw_span = false;
    for r in &requests {
        assert_eq!(r.path, "/v1development/profiles");
        assert_eq!(r.content_type, "application/x-protobuf");
        let m = decode_otlp(&r.body);
        let dict = m.child("dictionary").expect("a dictionary");
        let s = strings(dict);
        assert_eq!(s.first().map(String::as_str), Some(""));
        let resource = m.child("resource_profiles").expect("resource profiles");
        let attrs = resource.child("resource").expect("resource");
        assert!(
            attrs
                .all("attributes")
                .any(|a| a.get("key") == Some("\"service.name\"")),
            "no service.name"
        );
        let scope = resource.child("scope_profiles").expect("scope profiles");
        // CPU: samples and cpu; off-CPU: intervals and off_cpu.
        assert_eq!(scope.all("profiles").count(), 4);
        saw_span |= dict.all("attribute_table").any(|a| {
            s.get(a.get_u64("key_strindex").unwrap_or(0) as usize)
                .is_some_and(|k| k == "span_name")
                && a.child("value").and_then(|v| v.get("string_value")) == Some("\"db_query\"")
        });
    }
    assert!(saw_span, "no OTLP window names the db_query span");
}

#[test]
fn sigterm_pushes_the_window_in_progress() {
    let bin = build_c("agent-split", "split.c", C_FP);
    let target = Target::start(&bin, &["60"]);
    let receiver = Receiver::start();
    let url = format!("http://127.0.0.1:{}", receiver.port);
    let pid = target.pid().to_string();
    // A window far longer than the test: only SIGTERM ends it (unless the test happens to
    // run across a whole hour, where a window ends anyway).
    let mut child = agent(&["--pid", &pid, "--period", "1h", "--push", &url]);
    let err = wait_recording(&mut child);
    std::thread::sleep(Duration::from_secs(2));
    let before = receiver.received().len() as u64;
    let (killed_at, err) = terminate(child, err);
    assert!(err.contains("stopping (SIGTERM received)"), "{err}");
    assert_eq!(figures(&err, &url), (before + 1, before + 1, 0, 0));
    let windows = cpu_windows(&receiver.received());
    let (_, last) = windows.last().expect("the window in progress was pushed");
    assert!(samples(last, None) > 0);
    // It ends at the stop, not at a boundary (100 ms for the clocks' disagreement).
    let end = last.get_u64("time_nanos").unwrap_or(0) + last.get_u64("duration_nanos").unwrap_or(0);
    assert!(
        end + 100_000_000 >= killed_at,
        "the last window ends at {end}, SIGTERM at {killed_at}"
    );
}

/// A stop that crosses a window boundary while the programs are being detached (slow on a
/// busy machine; held 1.5 s here by a test hook, sampling on) still cuts at the boundary: no
/// window is longer than the period, and none is missing or overlaps. Before, the last window
/// ran from the boundary before the stop to the detach.
#[test]
fn a_stop_that_crosses_a_boundary_is_cut_there_first() {
    let bin = build_c("agent-split", "split.c", C_FP);
    let target = Target::start(&bin, &["60"]);
    let receiver = Receiver::start();
    let url = format!("http://127.0.0.1:{}", receiver.port);
    let pid = target.pid().to_string();
    let mut child = agent(&[
        "--pid",
        &pid,
        "--period",
        "1s",
        "--frequency",
        "199",
        "--push",
        &url,
        "--test-hold-before-detach-ms",
        "1500",
    ]);
    let err = wait_recording(&mut child);
    std::thread::sleep(Duration::from_millis(1500));
    let (killed_at, err) = terminate(child, err);
    let (recorded, delivered, dropped, spooled) = figures(&err, &url);
    assert_eq!((delivered, dropped, spooled), (recorded, 0, 0));
    let windows = cpu_windows(&receiver.received());
    assert_eq!(windows.len() as u64, recorded);
    for (r, p) in &windows {
        eprintln!(
            "window {}: {} ns, {} samples",
            r.path,
            p.get_u64("duration_nanos").unwrap_or(0),
            samples(p, None)
        );
    }
    // 1.5 s before the stop and 1.5 s after it: at least two boundaries, one in the hold.
    assert!(windows.len() >= 3, "{} windows", windows.len());
    assert_contiguous(&windows);
    // The windows that begin after the stop (100 ms for the clocks' disagreement) cover at
    // least the hold's last 0.5 s: its samples were sent too.
    let after_stop: u64 = windows
        .iter()
        .filter(|(_, p)| p.get_u64("time_nanos").unwrap_or(0) + 100_000_000 >= killed_at)
        .map(|(_, p)| samples(p, None))
        .sum();
    assert!(after_stop > 0, "no samples from the hold");
}

#[test]
fn outage_at_the_start_loses_nothing_and_keeps_the_order() {
    let bin = build_c("agent-split", "split.c", C_FP);
    let target = Target::start(&bin, &["60"]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let spool = OutDir::new(scratch("agent-outage-spool"));
    let pid = target.pid().to_string();
    let mut child = agent(&[
        "--pid",
        &pid,
        "--period",
        "1s",
        "--duration",
        "9s",
        "--push",
        &url,
        "--spool",
        spool.to_str().expect("utf-8"),
        "--retry-max",
        "2s",
    ]);
    let err = wait_recording(&mut child);
    // Down for the first windows: they wait in the spool directory.
    std::thread::sleep(Duration::from_secs(4));
    let waiting = std::fs::read_dir(spool.join(format!("pyroscope-127.0.0.1-{port}")))
        .expect("the destination's spool directory")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".window"))
        })
        .count();
    assert!(
        waiting >= 2,
        "{waiting} windows in the spool during the outage"
    );
    let receiver = Receiver::start_on(port);
    let err = finish(child, err);
    let (recorded, delivered, dropped, spooled) = figures(&err, &url);
    eprintln!(
        "outage: {recorded} windows recorded, {delivered} delivered, {dropped} dropped, {spooled} left in the spool; {waiting} were waiting in the spool after 4 s"
    );
    assert_eq!((delivered, dropped, spooled), (recorded, 0, 0));
    assert!(
        err.contains("push failed") && err.contains("pushing again"),
        "{err}"
    );
    let windows = cpu_windows(&receiver.received());
    assert_eq!(windows.len() as u64, recorded);
    // In order, and together the whole recording: every window once, none missing.
    assert_contiguous(&windows);
    let remaining = std::fs::read_dir(spool.join(format!("pyroscope-127.0.0.1-{port}")))
        .expect("spool directory")
        .count();
    assert_eq!(remaining, 0, "delivered windows stay in the spool");
}

/// Two destinations on one server under different paths: each has its own spool directory,
/// so neither sends or deletes the other's windows; one given twice is refused.
#[test]
fn two_paths_on_one_server_each_get_every_window() {
    let receiver = Receiver::start();
    let bin = build_c("agent-split", "split.c", C_FP);
    let target = Target::start(&bin, &["60"]);
    let urls = [
        format!("http://127.0.0.1:{}/a", receiver.port),
        format!("http://127.0.0.1:{}/b", receiver.port),
    ];
    let spool = OutDir::new(scratch("agent-two-paths-spool"));
    let pid = target.pid().to_string();
    let spool_arg = spool.to_str().expect("utf-8");
    let mut args = vec!["--pid", &pid, "--period", "1s", "--duration", "3s"];
    args.extend(["--spool", spool_arg]);
    for url in &urls {
        args.extend(["--push", url.as_str()]);
    }
    let mut child = agent(&args);
    let err = wait_recording(&mut child);
    let err = finish(child, err);
    let got = receiver.received();
    for (url, path) in urls.iter().zip(["/a/", "/b/"]) {
        let (recorded, delivered, dropped, spooled) = figures(&err, url);
        assert!(recorded >= 2, "{recorded} windows");
        assert_eq!((delivered, dropped, spooled), (recorded, 0, 0), "{url}");
        // As a server at the root would see them.
        let here: Vec<Received> = got
            .iter()
            .filter_map(|r| {
                let rest = r.path.strip_prefix(path)?;
                Some(Received {
                    path: format!("/{rest}"),
                    ..r.clone()
                })
            })
            .collect();
        assert_eq!(cpu_windows(&here).len() as u64, recorded, "{url}");
    }

    let twice = profiler()
        .args([
            "agent",
            "--pid",
            &pid,
            "--duration",
            "1s",
            "--push",
            &urls[0],
        ])
        .args(["--push", &format!("{}/", urls[0])])
        .output()
        .expect("agent runs");
    assert_eq!(twice.status.code(), Some(1));
    let e = stderr_of(&twice);
    assert!(e.contains("give each destination once"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
}

#[test]
fn a_full_spool_drops_the_oldest_windows_and_counts_them() {
    let bin = build_c("agent-split", "split.c", C_FP);
    let target = Target::start(&bin, &["60"]);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let spool = OutDir::new(scratch("agent-full-spool"));
    let pid = target.pid().to_string();
    // Room for a few windows of this small program only.
    let mut child = agent(&[
        "--pid",
        &pid,
        "--period",
        "1s",
        "--duration",
        "8s",
        "--push",
        &url,
        "--spool",
        spool.to_str().expect("utf-8"),
        "--spool-max",
        "4K",
        "--retry-max",
        "1s",
    ]);
    let err = wait_recording(&mut child);
    std::thread::sleep(Duration::from_secs(7));
    let receiver = Receiver::start_on(port);
    let err = finish(child, err);
    let (recorded, delivered, dropped, spooled) = figures(&err, &url);
    eprintln!(
        "full spool: {recorded} windows recorded, {delivered} delivered, {dropped} dropped, {spooled} left in the spool"
    );
    assert!(dropped > 0 && delivered > 0, "{err}");
    assert_eq!(delivered + dropped, recorded);
    assert_eq!(spooled, 0);
    let told = err
        .lines()
        .filter(|l| l.contains("dropped: the spool is full"))
        .count() as u64;
    assert_eq!(told, dropped);
    // What arrived is the newest windows, in order and without a gap: the oldest went.
    let windows = cpu_windows(&receiver.received());
    assert_eq!(windows.len() as u64, delivered);
    assert_contiguous(&windows);
    let first_from: u64 = query(&windows[0].0.path, "from")
        .and_then(|f| f.parse().ok())
        .expect("from");
    let first_delivered = profiler::cli::utc_stamp(first_from);
    for line in err
        .lines()
        .filter(|l| l.contains("dropped: the spool is full"))
    {
        // "…: window FROM..UNTIL dropped: …"
        let until = line
            .split("..")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("a window's edges");
        assert!(
            until <= first_delivered.as_str(),
            "{line} is newer than the first delivered window ({first_delivered})"
        );
    }
}

#[test]
fn a_process_that_starts_after_the_agent_is_pushed_under_its_own_name() {
    let bin = build_c("agent-late", "split.c", C_FP);
    let receiver = Receiver::start();
    let url = format!("http://127.0.0.1:{}", receiver.port);
    // The name gcc gave it, as /proc/PID/comm shows it (15 bytes).
    let comm: String = bin
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .chars()
        .take(15)
        .collect();
    let pattern = format!("^{comm}$");
    let mut child = agent(&[
        "--comm",
        &pattern,
        "--period",
        "1s",
        "--duration",
        "5s",
        "--frequency",
        "99",
        "--push",
        &url,
    ]);
    let err = wait_recording(&mut child);
    // Nothing matches at the start: the process comes after the agent.
    let target = Target::start(&bin, &["3"]);
    let err = finish(child, err);
    drop(target);
    let (recorded, delivered, _, _) = figures(&err, &url);
    assert_eq!(delivered, recorded);
    let windows = cpu_windows(&receiver.received());
    assert_contiguous(&windows);
    let named: u64 = windows
        .iter()
        .filter(|(r, _)| {
            query(&r.path, "name").is_some_and(|n| n.starts_with(&format!("{comm}%7B")))
        })
        .map(|(_, p)| samples(p, None))
        .sum();
    assert!(named > 20, "{named} samples pushed under {comm}");
}

/// Sum of value `index` of the samples carrying `label=value`.
fn value_sum(p: &TextMessage, index: usize, key: &str, value: &str) -> u64 {
    let s = strings(p);
    p.all("sample")
        .filter(|sample| {
            sample.all("label").any(|l| {
                s[l.get_u64("key").unwrap_or(0) as usize] == key
                    && s[l.get_u64("str").unwrap_or(0) as usize] == value
            })
        })
        .filter_map(|sample| {
            sample
                .scalars
                .iter()
                .filter(|(k, _)| k == "value")
                .nth(index)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        })
        .sum()
}

/// offcpu.c (`bin`) run under the agent in 1 s windows with `--off-cpu` and `extra`: how many
/// windows it pushed, what the program measured, and each window's off-CPU profile.
fn off_cpu_windows(
    bin: &Path,
    extra: &[&str],
) -> (
    u64,
    std::collections::HashMap<String, f64>,
    Vec<TextMessage>,
) {
    let mut target = Target::start(bin, &["300"]);
    let receiver = Receiver::start();
    let url = format!("http://127.0.0.1:{}", receiver.port);
    let pid = target.pid().to_string();
    let mut args = vec!["--pid", &pid, "--period", "1s", "--off-cpu", "--push", &url];
    args.extend_from_slice(extra);
    let mut child = agent(&args);
    let err = wait_recording(&mut child);
    target.go();
    let printed = target.finish();
    let err = finish(child, err);
    let (recorded, delivered, _, _) = figures(&err, &url);
    assert_eq!(delivered, recorded);
    assert!(recorded >= 2, "{recorded} windows");
    let off: Vec<TextMessage> = receiver
        .received()
        .iter()
        .filter(|r| r.content_type.starts_with("multipart/form-data"))
        .map(|r| decode_pprof(&pprof_part(r)))
        .collect();
    assert_eq!(off.len() as u64, recorded);
    (recorded, printed_values(&printed), off)
}

#[test]
fn off_cpu_time_over_the_windows_is_the_time_the_program_waited() {
    // The kernel's off-CPU sums only grow: each window must report what they grew by, or the
    // windows together would count the same waits again and again.
    let bin = build_c("agent-offcpu", "offcpu.c", &c_fp_probes());
    let (recorded, truth, off) = off_cpu_windows(&bin, &[]);
    let in_windows = |span: &str| -> f64 {
        off.iter()
            .map(|p| value_sum(p, 1, "span_name", span) as f64)
            .sum()
    };
    for (span, key) in [("nap", "nap_ns"), ("wait_reply", "wait_ns")] {
        let (got, want) = (in_windows(span), truth[key]);
        let err = (got - want).abs() / want;
        eprintln!(
            "{span}: {got} ns off CPU over {recorded} windows, the program says {want} ({:+.2}%)",
            err * 100.0
        );
        assert!(err < 0.05, "{span}: {got} vs {want}");
    }
}

/// The function names of each sample carrying `key=value`, and its value `index`.
fn stacks_with(p: &TextMessage, index: usize, key: &str, value: &str) -> Vec<(Vec<String>, u64)> {
    let s = strings(p);
    let name = |m: &TextMessage, field: &str| s[m.get_u64(field).unwrap_or(0) as usize].clone();
    let functions: std::collections::HashMap<u64, String> = p
        .all("function")
        .map(|f| (f.get_u64("id").unwrap_or(0), name(f, "name")))
        .collect();
    let locations: std::collections::HashMap<u64, Vec<String>> = p
        .all("location")
        .map(|l| {
            let lines = l
                .all("line")
                .filter_map(|line| functions.get(&line.get_u64("function_id").unwrap_or(0)))
                .cloned()
                .collect();
            (l.get_u64("id").unwrap_or(0), lines)
        })
        .collect();
    p.all("sample")
        .filter(|sample| {
            sample
                .all("label")
                .any(|l| name(l, "key") == key && name(l, "str") == value)
        })
        .map(|sample| {
            let scalars = |k: &'static str| {
                sample
                    .scalars
                    .iter()
                    .filter(move |(name, _)| name == k)
                    .filter_map(|(_, v)| v.parse::<u64>().ok())
            };
            let frames = scalars("location_id")
                .flat_map(|id| locations.get(&id).cloned().unwrap_or_default())
                .collect();
            (frames, scalars("value").nth(index).unwrap_or(0))
        })
        .collect()
}

/// The same windows from a program built without frame pointers, in DWARF mode: its off-CPU
/// user stacks are unwound from copies taken at its switch-outs, which the window path must
/// match to their intervals and carry into each window's stacks. Frame pointers would stop
/// in libc, short of `nap` and `main`.
#[test]
fn off_cpu_stacks_in_dwarf_mode_reach_main_in_the_windows() {
    let bin = build_c("agent-offcpu-nofp", "offcpu.c", &c_nofp_probes());
    let (recorded, truth, windows) = off_cpu_windows(&bin, &["--call-graph", "dwarf"]);
    for (span, function, key) in [
        ("nap", "nap", "nap_ns"),
        ("wait_reply", "wait_reply", "wait_ns"),
    ] {
        let stacks: Vec<(Vec<String>, u64)> = windows
            .iter()
            .flat_map(|p| stacks_with(p, 1, "span_name", span))
            .collect();
        let all: u64 = stacks.iter().map(|(_, ns)| ns).sum();
        let reached: u64 = stacks
            .iter()
            .filter(|(f, _)| f.iter().any(|x| x == "main") && f.iter().any(|x| x == function))
            .map(|(_, ns)| ns)
            .sum();
        let want = truth[key];
        eprintln!(
            "{span}: {all} ns off CPU over {recorded} windows ({:.3} through {function} to main), the program says {want}",
            reached as f64 / all.max(1) as f64
        );
        assert!(
            (all as f64 - want).abs() / want < 0.05,
            "{span}: {all} vs {want}"
        );
        assert!(
            reached as f64 >= 0.99 * all as f64,
            "{reached} of {all} ns reach main"
        );
    }
}

/// An agent runs for days while processes come and go: what it keeps of each program (its
/// file, mapped; its parsed symbols) goes once the program has exited and its samples are
/// pushed. 60 programs, each its own file, run and exit; a few windows later the agent maps
/// none of them (it mapped all 60 for good before).
#[test]
fn programs_that_exited_are_let_go() {
    // Without a build id each copy is a module of its own (identical build ids are one).
    let bin = build_c(
        "agent-churn",
        "short.c",
        &[C_FP, &["-Wl,--build-id=none"]].concat(),
    );
    let dir = OutDir::new(scratch("agent-churn"));
    std::fs::create_dir_all(&*dir).expect("scratch directory");
    let copies: Vec<PathBuf> = (0..60)
        .map(|i| {
            let copy = dir.join(format!("achurn{i:02}"));
            std::fs::copy(&bin, &copy).expect("copy");
            copy
        })
        .collect();
    let receiver = Receiver::start();
    let url = format!("http://127.0.0.1:{}", receiver.port);
    let mut child = agent(&[
        "--comm",
        "^achurn",
        "--period",
        "1s",
        "--duration",
        "12s",
        "--frequency",
        "499",
        "--push",
        &url,
    ]);
    let agent_pid = child.id();
    let err = wait_recording(&mut child);
    let mapped = || {
        let maps = std::fs::read_to_string(format!("/proc/{agent_pid}/maps")).expect("maps");
        maps.lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .filter(|p| p.starts_with(dir.to_str().expect("utf-8")))
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    let mut peak = 0;
    for copy in &copies {
        let status = Command::new(copy).arg("20").status().expect("copy runs");
        assert!(status.success());
        peak = peak.max(mapped());
    }
    // Let go once a whole window has passed since the exit; the symbolizer's own mappings
    // go with it after at most 4 more windows.
    std::thread::sleep(Duration::from_secs(7));
    let later = mapped();
    let err = finish(child, err);
    eprintln!("programs mapped by the agent: at most {peak} while they ran, {later} 7 s later");
    let (recorded, delivered, _, _) = figures(&err, &url);
    assert_eq!(delivered, recorded);
    let named: u64 = cpu_windows(&receiver.received())
        .iter()
        .filter(|(r, _)| query(&r.path, "name").is_some_and(|n| n.starts_with("achurn")))
        .map(|(_, p)| samples(p, None))
        .sum();
    assert!(named > 100, "{named} samples of the copies pushed");
    assert!(peak >= 10, "{peak} of 60 mapped at once while they ran");
    assert!(later <= 3, "{later} of 60 exited programs still mapped");
}

/// A CA and server certificates made with the `openssl` tool in a scratch directory.
struct Pki {
    dir: OutDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A fresh CA, `ca.pem`.
    fn new(name: &str) -> Self {
        let dir = OutDir::new(scratch(name));
        std::fs::create_dir_all(&*dir).expect("pki dir");
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=profiler test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        Self { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A server certificate signed by the CA for `names` (`DNS:…`, `IP:…`): (cert, key).
    fn server(&self, file: &str, names: &str) -> (PathBuf, PathBuf) {
        let ext = format!("{file}.ext");
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "subjectAltName={names}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .expect("extensions file");
        let (key, csr, cert) = (
            format!("{file}.key"),
            format!("{file}.csr"),
            format!("{file}.pem"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                "/CN=profiler test server",
            ],
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ],
        );
        (self.dir.join(cert), self.dir.join(key))
    }
}

/// The `.window` files waiting in a destination's spool directory.
fn spooled_windows(spool: &Path, dest: &str) -> usize {
    std::fs::read_dir(spool.join(dest))
        .unwrap_or_else(|e| panic!("spool directory {dest}: {e}"))
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".window"))
        })
        .count()
}

#[test]
fn https_and_otlp_https_deliver_valid_profiles_to_a_ca_given_by_ca_file() {
    let pki = Pki::new("agent-tls-ok");
    let (cert, key) = pki.server("server", "DNS:localhost,IP:127.0.0.1");
    let pyroscope = Receiver::start_tls(&cert, &key);
    let otlp = Receiver::start_tls(&cert, &key);
    let bin = build_c("agent-split", "split.c", C_FP);
    let target = Target::start(&bin, &["60"]);
    // One by IP address, one by name: the certificate must hold each.
    let py_url = format!("https://127.0.0.1:{}", pyroscope.port);
    let otlp_url = format!("otlp+https://localhost:{}", otlp.port);
    let pid = target.pid().to_string();
    let mut child = agent(&[
        "--pid",
        &pid,
        "--period",
        "1s",
        "--duration",
        "3s",
        "--push",
        &py_url,
        "--push",
        &otlp_url,
        "--ca-file",
        pki.ca().to_str().expect("utf-8"),
    ]);
    let err = wait_recording(&mut child);
    let err = finish(child, err);
    let (recorded, delivered, dropped, spooled) = figures(&err, &py_url);
    assert_eq!((delivered, dropped, spooled), (recorded, 0, 0));
    assert_eq!(figures(&err, &otlp_url), (recorded, recorded, 0, 0));
    assert!(recorded >= 2, "{recorded} windows");
    let windows = cpu_windows(&pyroscope.received());
    assert_eq!(windows.len() as u64, recorded);
    assert_contiguous(&windows);
    for (_, p) in &windows {
        assert_eq!(sample_types(p), ["samples/count", "cpu/nanoseconds"]);
    }
    let total: u64 = windows.iter().map(|(_, p)| samples(p, None)).sum();
    assert!(total > 0, "no samples in {recorded} windows");
    let requests = otlp.received();
    assert_eq!(requests.len() as u64, recorded);
    for r in &requests {
        assert_eq!(r.path, "/v1development/profiles");
        let m = decode_otlp(&r.body);
        let scope = m
            .child("resource_profiles")
            .and_then(|r| r.child("scope_profiles"))
            .expect("scope profiles");
        assert!(scope.all("profiles").count() >= 1);
    }
}

#[test]
fn https_to_a_ca_not_trusted_fails_in_one_line_and_keeps_the_windows() {
    let pki = Pki::new("agent-tls-untrusted");
    let (cert, key) = pki.server("server", "DNS:localhost,IP:127.0.0.1");
    let pyroscope = Receiver::start_tls(&cert, &key);
    let otlp = Receiver::start_tls(&cert, &key);
    let bin = build_c("agent-split", "split.c", C_FP);
    let target = Target::start(&bin, &["60"]);
    let py_url = format!("https://localhost:{}", pyroscope.port);
    let otlp_url = format!("otlp+https://127.0.0.1:{}", otlp.port);
    let spool = OutDir::new(scratch("agent-tls-untrusted-spool"));
    let pid = target.pid().to_string();
    // No --ca-file: only the system's CAs, which did not sign the test CA's certificate.
    let mut child = agent(&[
        "--pid",
        &pid,
        "--period",
        "1s",
        "--duration",
        "2s",
        "--push",
        &py_url,
        "--push",
        &otlp_url,
        "--spool",
        spool.to_str().expect("utf-8"),
        "--flush-timeout",
        "1s",
    ]);
    let err = wait_recording(&mut child);
    let err = finish(child, err);
    for (url, dest) in [
        (&py_url, format!("pyroscope-localhost-{}", pyroscope.port)),
        (&otlp_url, format!("otlp-127.0.0.1-{}", otlp.port)),
    ] {
        let (recorded, delivered, dropped, spooled) = figures(&err, url);
        assert!(recorded >= 1, "{recorded} windows");
        // Not lost: every window waits in the spool for the day the CA is given.
        assert_eq!((delivered, dropped, spooled), (0, 0, recorded), "{url}");
        assert_eq!(spooled_windows(&spool, &dest) as u64, recorded, "{url}");
        let failed = err
            .lines()
            .find(|l| l.starts_with(&format!("profiler: {url}: push failed")))
            .unwrap_or_else(|| panic!("no push failure for {url} in:\n{err}"));
        assert!(
            failed.contains("(certificate not trusted: pass --ca-file"),
            "{failed}"
        );
    }
    assert_eq!(pyroscope.received().len(), 0);
    assert_eq!(otlp.received().len(), 0);
}

#[test]
fn a_certificate_for_another_host_name_is_refused() {
    let pki = Pki::new("agent-tls-name");
    // Signed by the CA given with --ca-file, but for a name the agent does not push to.
    let (cert, key) = pki.server("other", "DNS:other.example");
    let receiver = Receiver::start_tls(&cert, &key);
    let bin = build_c("agent-split", "split.c", C_FP);
    let target = Target::start(&bin, &["60"]);
    let url = format!("otlp+https://localhost:{}", receiver.port);
    let pid = target.pid().to_string();
    let mut child = agent(&[
        "--pid",
        &pid,
        "--period",
        "1s",
        "--duration",
        "2s",
        "--push",
        &url,
        "--ca-file",
        pki.ca().to_str().expect("utf-8"),
        "--flush-timeout",
        "1s",
    ]);
    let err = wait_recording(&mut child);
    let err = finish(child, err);
    let (recorded, delivered, _, _) = figures(&err, &url);
    assert!(recorded >= 1 && delivered == 0, "{err}");
    assert!(
        err.contains("push failed (the server's certificate is not for host name localhost"),
        "{err}"
    );
    assert_eq!(receiver.received().len(), 0);
}

#[test]
fn an_unreadable_ca_file_or_ssl_cert_file_stops_the_agent_in_one_line() {
    let https_agent = |extra: &[&str]| {
        let mut cmd = profiler();
        cmd.args(["agent", "--all", "--push", "https://127.0.0.1:1"])
            .args(["--duration", "1s"])
            .args(extra)
            .env_remove("SSL_CERT_FILE");
        cmd
    };
    let out = https_agent(&["--ca-file", "/nonexistent/ca.pem"])
        .output()
        .expect("profiler runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--ca-file /nonexistent/ca.pem: cannot read the CA certificate"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // Set to replace the system's bundle: not read, it is not quietly replaced by it.
    let out = https_agent(&[])
        .env("SSL_CERT_FILE", "/nonexistent/bundle.pem")
        .output()
        .expect("profiler runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("SSL_CERT_FILE=/nonexistent/bundle.pem: "),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn credentials_and_tenant_go_with_every_push_and_come_from_private_files() {
    let bin = build_c("agent-split", "split.c", C_FP);
    let target = Target::start(&bin, &["60"]);
    let receiver = Receiver::start();
    let url = format!("http://127.0.0.1:{}", receiver.port);
    let pid = target.pid().to_string();
    let dir = OutDir::new(scratch("agent-auth"));
    std::fs::create_dir_all(&*dir).expect("scratch dir");
    let secret = dir.join("basic");
    std::fs::write(&secret, "123456:glc_s3cret\n").expect("write");
    let private = |mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    let secret_arg = secret.to_str().expect("utf-8");
    // Readable by others: refused before anything is recorded, in one line naming the fix.
    private(0o644);
    let out = profiler()
        .args(["agent", "--pid", &pid, "--push", &url, "--duration", "1s"])
        .args(["--basic-auth-file", secret_arg])
        .output()
        .expect("profiler runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("chmod 600"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(receiver.received().is_empty());

    private(0o600);
    let mut child = agent(&[
        "--pid",
        &pid,
        "--period",
        "1s",
        "--duration",
        "2s",
        "--push",
        &url,
        "--basic-auth-file",
        secret_arg,
        "--tenant",
        "team-a",
    ]);
    let err = wait_recording(&mut child);
    let err = finish(child, err);
    // To 127.0.0.1 the credentials stay on the machine: no clear-text warning.
    assert!(!err.contains("unencrypted"), "{err}");
    let got = receiver.received();
    assert!(got.len() >= 2, "{} pushes", got.len());
    for r in &got {
        // base64("123456:glc_s3cret")
        assert_eq!(
            r.authorization.as_deref(),
            Some("Basic MTIzNDU2OmdsY19zM2NyZXQ=")
        );
        assert_eq!(r.tenant.as_deref(), Some("team-a"));
    }
}
