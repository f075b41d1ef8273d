//! An HTTP server under load, instrumented with `profiler_probes::layer()`: every request is a
//! `request` span with `parse`, `db_query` and `render` inside. `parse` and `render` compute a
//! few tens of microseconds; `db_query` stands for a database round trip: an async wait of
//! DB_WAIT during which no thread runs it. The load comes from CLIENTS threads of this process
//! on keep-alive connections. Usage: http-spans [seconds] (default 3). Prints "ready", waits
//! for a line on stdin, serves for that long, then prints what it measured itself.
use std::convert::Infallible;
use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tracing::Instrument;
use tracing_subscriber::prelude::*;

const CLIENTS: usize = 4;
const DB_WAIT: Duration = Duration::from_millis(2);

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static REQUEST_NS: AtomicU64 = AtomicU64::new(0);
static DB_NS: AtomicU64 = AtomicU64::new(0);

/// CPU work of `rounds` rounds, about 1 ns each.
#[inline(never)]
fn compute(seed: u64, rounds: u64) -> u64 {
    let mut x = seed;
    for _ in 0..rounds {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
    }
    black_box(x)
}

#[inline(never)]
fn parse_request(path: &str) -> u64 {
    compute(path.len() as u64, 20_000)
}

#[inline(never)]
fn render_page(rows: u64) -> String {
    format!("rows {}\n", compute(rows, 30_000) % 1000)
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    async move {
        let start = Instant::now();
        let key = {
            let _parse = tracing::info_span!("parse").entered();
            parse_request(req.uri().path())
        };
        let db_start = Instant::now();
        let rows = async {
            tokio::time::sleep(DB_WAIT).await;
            key.wrapping_mul(3)
        }
        .instrument(tracing::info_span!("db_query"))
        .await;
        let db = db_start.elapsed();
        let body = {
            let _render = tracing::info_span!("render").entered();
            render_page(rows)
        };
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        REQUEST_NS.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        DB_NS.fetch_add(db.as_nanos() as u64, Ordering::Relaxed);
        Ok(Response::new(Full::new(Bytes::from(body))))
    }
    .instrument(tracing::info_span!("request"))
    .await
}

/// One keep-alive client: GET after GET until `stop`.
fn client(port: u16, stop: Instant) {
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    let mut buf = Vec::with_capacity(4096);
    while Instant::now() < stop {
        conn.write_all(b"GET /items HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("send request");
        buf.clear();
        // Headers, then exactly Content-Length bytes of body.
        loop {
            let mut chunk = [0u8; 1024];
            let n = conn.read(&mut chunk).expect("read response");
            assert!(n > 0, "server closed the connection");
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .expect("content-length");
                if buf.len() >= end + 4 + length {
                    break;
                }
            }
        }
    }
}

fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    tracing_subscriber::registry()
        .with(profiler_probes::layer())
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(handle))
                    .await;
            });
        }
    });
    println!("ready");
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).is_err() {
        return;
    }
    let stop = Instant::now() + Duration::from_secs_f64(seconds);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| std::thread::spawn(move || client(port, stop)))
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    println!(
        "requests {} request_ns {} db_query_ns {}",
        REQUESTS.load(Ordering::Relaxed),
        REQUEST_NS.load(Ordering::Relaxed),
        DB_NS.load(Ordering::Relaxed)
    );
}
