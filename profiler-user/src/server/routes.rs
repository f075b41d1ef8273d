//! Requests to answers: the checks every request passes, then one function per endpoint.
use std::{convert::Infallible, rc::Rc, sync::Arc};

use http_body_util::BodyExt;
use hyper::{
    Method, Request, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderValue},
};
use tokio::sync::Notify;

use super::{
    State, auth,
    body::{self, Reply},
    jobs, page, processes, query,
    store::{self, Phase},
};
use crate::outputs;

/// Largest request body (a recording request is a few hundred bytes of JSON).
const MAX_BODY: usize = 64 * 1024;
/// Largest output served; a recording's files are far smaller.
const MAX_FILE: u64 = 4 << 30;

pub async fn handle(state: Rc<State>, req: Request<Incoming>) -> Result<Reply, Infallible> {
    Ok(match refuse(&state, &req) {
        Some(r) => r,
        None => route(&state, req).await,
    })
}

/// Whether the request may not go further: who sent it, and from where.
fn refuse(state: &State, req: &Request<Incoming>) -> Option<Reply> {
    let h = req.headers();
    // A page of another site may make the browser send requests here (a form, an image):
    // browsers say so, and such requests never start or read anything.
    if let Some(site) = h.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Some(body::error(
            StatusCode::FORBIDDEN,
            "cross-site requests are refused",
        ));
    }
    if state.loopback_only && !auth::loopback_host(h.get(header::HOST).map(|v| v.as_bytes())) {
        return Some(body::error(
            StatusCode::FORBIDDEN,
            "this server answers loopback host names only (localhost, 127.0.0.1); to serve others start it with --token-file",
        ));
    }
    // The page is static and holds no data; browsers cannot add a header to the request
    // that loads it, so it asks for the token and sends it with every API call.
    let public = req.method() == Method::GET && req.uri().path() == "/";
    if let Some(token) = &state.token
        && !public
        && !token.accepts(h.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
    {
        let mut r = body::error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong token: send the server's --token-file content as `Authorization: Bearer TOKEN`",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return Some(r);
    }
    None
}

async fn route(state: &Rc<State>, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match (&method, segments.as_slice()) {
        (&Method::GET, [""]) => page::index(),
        (&Method::GET, ["debug", "pprof", "profile"]) => pprof(state, req.uri().query()).await,
        (&Method::GET, ["metrics"]) => body::bytes(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            state.metrics.borrow().render(state.active.get()),
        ),
        (&Method::GET, ["api", "processes"]) => {
            match tokio::task::spawn_blocking(processes::list).await {
                Ok(list) => body::json(StatusCode::OK, &list),
                Err(e) => body::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        (&Method::GET, ["api", "recordings"]) => list(state),
        (&Method::POST, ["api", "recordings"]) => create(state, req).await,
        (&Method::GET, ["api", "recordings", id]) => {
            let stream = req
                .headers()
                .get(header::ACCEPT)
                .is_some_and(|a| a.as_bytes().starts_with(b"text/event-stream"));
            show(state, id, stream)
        }
        (&Method::DELETE, ["api", "recordings", id]) => delete(state, id),
        (&Method::POST, ["api", "recordings", id, "stop"]) => stop(state, id),
        (&Method::GET, ["api", "recordings", id, file]) => file_of(state, id, file),
        (
            _,
            [""]
            | ["metrics"]
            | ["debug", "pprof", "profile"]
            | ["api", "processes"]
            | ["api", "recordings"]
            | ["api", "recordings", _]
            | ["api", "recordings", _, _],
        ) => body::error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here"),
        _ => body::error(StatusCode::NOT_FOUND, "no such endpoint"),
    }
}

fn refused(r: jobs::Refused) -> Reply {
    body::error(r.status, &r.message)
}

/// `GET /debug/pprof/profile?seconds=N&pid=P` (or `cgroup=`, `all=1`; `hz=`): records, then
/// answers with the gzipped pprof profile, as Go's net/http/pprof does. A client that goes
/// away stops the recording (hyper drops this future when the connection closes).
async fn pprof(state: &Rc<State>, q: Option<&str>) -> Reply {
    let mut req = jobs::Request {
        // Go's default.
        seconds: Some(30.0),
        ..Default::default()
    };
    let mut pids = Vec::new();
    for (k, v) in query::pairs(q) {
        let number = |what: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{what}={v:?}: a whole number"))
        };
        let r = match k.as_str() {
            "seconds" => number("seconds").map(|n| req.seconds = Some(n as f64)),
            "hz" => number("hz").map(|n| req.hz = Some(n)),
            "pid" => v
                .split(',')
                .map(|p| p.parse::<u32>())
                .collect::<Result<Vec<_>, _>>()
                .map(|p| pids.extend(p))
                .map_err(|_| format!("pid={v:?}: process ids")),
            "cgroup" => {
                req.cgroup = Some(v.clone());
                Ok(())
            }
            "all" => {
                req.all = matches!(v.as_str(), "1" | "true");
                Ok(())
            }
            "off_cpu" => {
                req.off_cpu = matches!(v.as_str(), "1" | "true");
                Ok(())
            }
            _ => Err(format!(
                "unknown parameter {k:?} (seconds, pid, cgroup, all, hz, off_cpu)"
            )),
        };
        if let Err(e) = r {
            return body::error(StatusCode::BAD_REQUEST, &e);
        }
    }
    if !pids.is_empty() {
        req.pid = Some(jobs::Pids::Many(pids));
    }
    let (id, job) = match jobs::start(state, req).await {
        Ok(j) => j,
        Err(r) => return refused(r),
    };
    let mut guard = StopOnDrop(Some(job.stop.clone()));
    let meta = wait_finished(job.progress).await;
    guard.0 = None;
    if meta.state != Phase::Done {
        return body::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            meta.error.as_deref().unwrap_or("the recording failed"),
        );
    }
    match state.store.read_file(&id, outputs::PPROF_FILE, MAX_FILE) {
        Ok(b) => {
            let mut r = body::bytes(StatusCode::OK, "application/octet-stream", b);
            r.headers_mut().insert(
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"profile\""),
            );
            r
        }
        Err(e) => body::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("{}: {e}", outputs::PPROF_FILE),
        ),
    }
}

/// Stops the recording a request waits for if the request goes away first.
struct StopOnDrop(Option<Arc<Notify>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            stop.notify_one();
        }
    }
}

async fn wait_finished(mut rx: tokio::sync::watch::Receiver<store::Meta>) -> store::Meta {
    loop {
        let meta = rx.borrow_and_update().clone();
        if meta.state.finished() || rx.changed().await.is_err() {
            return meta;
        }
    }
}

fn list(state: &State) -> Reply {
    let mut all = state.store.list();
    // Running ones from memory: their meta.json is only rewritten when they end.
    for m in &mut all {
        if let Some(j) = state.jobs.borrow().get(&m.id) {
            *m = j.progress.borrow().clone();
        }
    }
    body::json(StatusCode::OK, &all)
}

async fn create(state: &Rc<State>, req: Request<Incoming>) -> Reply {
    // Only JSON: a cross-site form can post text/plain without the browser asking first.
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| c.as_bytes().starts_with(b"application/json"));
    if !json {
        return body::error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the recording request as Content-Type: application/json",
        );
    }
    let bytes = match read_body(req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let request: jobs::Request = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return body::error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "recording request: {e} (fields: pid, cgroup, all, seconds, hz, off_cpu, spans, call_graph)"
                ),
            );
        }
    };
    match jobs::start(state, request).await {
        Ok((id, job)) => {
            let meta = job.progress.borrow().clone();
            let mut r = body::json(StatusCode::CREATED, &meta);
            if let Ok(v) = HeaderValue::from_str(&format!("/api/recordings/{id}")) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
        Err(r) => refused(r),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    let too_large = || {
        body::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request bodies are limited to {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(body::error(StatusCode::BAD_REQUEST, &e.to_string())),
    }
}

fn bad_id() -> Reply {
    body::error(StatusCode::NOT_FOUND, "no such recording")
}

/// A recording as JSON, or with `Accept: text/event-stream` its progress as server-sent
/// events until it is written (one event if it already is).
fn show(state: &State, id: &str, stream: bool) -> Reply {
    if !store::valid_id(id) {
        return bad_id();
    }
    let live = state.jobs.borrow().get(id).map(|j| j.progress.clone());
    if !stream {
        return match live
            .map(|rx| rx.borrow().clone())
            .or_else(|| state.store.read_meta(id))
        {
            Some(m) => body::json(StatusCode::OK, &m),
            None => bad_id(),
        };
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let event = |m: &store::Meta| {
        Bytes::from(format!(
            "event: progress\ndata: {}\n\n",
            serde_json::to_string(m).unwrap_or_default()
        ))
    };
    match live {
        Some(mut progress) => {
            tokio::task::spawn_local(async move {
                loop {
                    let m = progress.borrow_and_update().clone();
                    // A client gone closes the channel: nothing left to send to.
                    if tx.send(event(&m)).await.is_err() || m.state.finished() {
                        break;
                    }
                    if progress.changed().await.is_err() {
                        break;
                    }
                }
            });
        }
        None => {
            let Some(m) = state.store.read_meta(id) else {
                return bad_id();
            };
            let _ = tx.try_send(event(&m));
        }
    }
    body::stream("text/event-stream", rx)
}

/// Stops a running recording early; its outputs are written as at the end of its duration.
fn stop(state: &State, id: &str) -> Reply {
    if !store::valid_id(id) {
        return bad_id();
    }
    match state.jobs.borrow().get(id) {
        Some(j) => {
            j.stop.notify_one();
            body::json(StatusCode::ACCEPTED, &*j.progress.borrow())
        }
        None if state.store.read_meta(id).is_some() => {
            body::error(StatusCode::CONFLICT, "this recording has already ended")
        }
        None => bad_id(),
    }
}

/// Removes a recording; a running one is stopped first and removed once it has ended.
fn delete(state: &State, id: &str) -> Reply {
    if !store::valid_id(id) {
        return bad_id();
    }
    if let Some(j) = state.jobs.borrow_mut().get_mut(id) {
        j.remove = true;
        j.stop.notify_one();
        return body::empty(StatusCode::ACCEPTED);
    }
    match state.store.remove(id) {
        Ok(()) => body::empty(StatusCode::NO_CONTENT),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bad_id(),
        Err(e) => body::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn file_of(state: &State, id: &str, name: &str) -> Reply {
    if !store::valid_id(id) || !store::FILES.contains(&name) {
        return body::error(StatusCode::NOT_FOUND, "no such recording or file");
    }
    // A file of a recording still being written may be half there: not served yet.
    if state.jobs.borrow().contains_key(id) && name != store::META_FILE {
        return body::error(
            StatusCode::CONFLICT,
            "the recording is not written yet: wait until its state is done",
        );
    }
    match state.store.read_file(id, name, MAX_FILE) {
        Ok(b) => {
            let mut r = body::bytes(StatusCode::OK, content_type(name), b);
            // Outputs hold text of the profiled programs (function names): never rendered
            // as a page of this origin when opened directly.
            r.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("sandbox allow-scripts"),
            );
            r
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            body::error(StatusCode::NOT_FOUND, "this recording has no such file")
        }
        Err(e) => body::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn content_type(name: &str) -> &'static str {
    if name.ends_with(".svg") {
        "image/svg+xml"
    } else if name.ends_with(".json") {
        "application/json"
    } else if name.ends_with(".txt") || name.ends_with(".folded") {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}
