//! Recordings the server runs: what a client may ask for, the checks before anything is
//! loaded, and the task that records, then writes the outputs exactly as `profiler record
//! --output DIR` does (`cli::symbolized`, `outputs::write_outputs`).
use std::{rc::Rc, sync::Arc, time::Duration};

use hyper::StatusCode;
use profiler_common::defaults;
use tokio::sync::{Notify, watch};

use super::{
    State,
    store::{Meta, Phase, Store},
};
use crate::{
    cli,
    collect::{
        self, CallGraph, RecordOptions, offcpu::OffCpuOptions, scope::Scope, spans::SpansMode,
    },
    error::Error,
    outputs::{self, OutputDir, Parts},
};

/// A recording started and not yet written.
pub struct Job {
    pub progress: watch::Receiver<Meta>,
    /// Ends the recording early; its outputs are still written.
    pub stop: Arc<Notify>,
    /// Set by DELETE: the recording is removed once it has stopped.
    pub remove: bool,
}

/// What a client asks for (`POST /api/recordings`, or the Go endpoint's query).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// One process, or several.
    #[serde(default)]
    pub pid: Option<Pids>,
    /// A cgroup v2 directory (absolute, or relative to the cgroup root).
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Every process of the server's PID namespace.
    #[serde(default)]
    pub all: bool,
    /// How long; the server's `--max-seconds` at most. Default 10.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Samples per second per CPU. Default 99.
    #[serde(default)]
    pub hz: Option<u64>,
    #[serde(default)]
    pub off_cpu: bool,
    /// "auto" (default) or "off".
    #[serde(default)]
    pub spans: Option<String>,
    /// "auto" (default), "fp" or "dwarf".
    #[serde(default)]
    pub call_graph: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
pub enum Pids {
    One(u32),
    Many(Vec<u32>),
}

/// A refusal, with the status that says whose fault it is.
#[derive(Debug)]
pub struct Refused {
    pub status: StatusCode,
    pub message: String,
}

fn refused(status: StatusCode, message: impl Into<String>) -> Refused {
    Refused {
        status,
        message: message.into(),
    }
}

fn bad(message: impl Into<String>) -> Refused {
    refused(StatusCode::BAD_REQUEST, message)
}

/// The recording a request describes, checked against the server's limits.
struct Plan {
    scope: Scope,
    opts: RecordOptions,
    meta: Meta,
}

fn plan(state: &State, req: Request) -> Result<Plan, Refused> {
    let scopes =
        usize::from(req.pid.is_some()) + usize::from(req.cgroup.is_some()) + usize::from(req.all);
    if scopes != 1 {
        return Err(bad(
            "name exactly one scope: pid (a number or a list), cgroup (a path) or all",
        ));
    }
    let seconds = req.seconds.unwrap_or(10.0);
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(bad("seconds must be a positive number"));
    }
    if seconds > state.max_seconds as f64 {
        return Err(bad(format!(
            "seconds {seconds} is above this server's limit of {} (--max-seconds)",
            state.max_seconds
        )));
    }
    let hz = req.hz.unwrap_or(99);
    if hz == 0 {
        return Err(bad("hz must be at least 1"));
    }
    cli::check_frequency(hz).map_err(|e| bad(e.to_string()))?;
    let spans = match req.spans.as_deref() {
        None | Some("auto") => SpansMode::Auto,
        Some("off") => SpansMode::Off,
        Some(other) => return Err(bad(format!("spans {other:?}: auto or off"))),
    };
    let call_graph = match req.call_graph.as_deref() {
        None | Some("auto") => CallGraph::Auto,
        Some("fp") => CallGraph::Fp,
        Some("dwarf") => CallGraph::Dwarf,
        Some(other) => return Err(bad(format!("call_graph {other:?}: auto, fp or dwarf"))),
    };
    let scope = if let Some(p) = req.pid {
        let mut pids = match p {
            Pids::One(p) => vec![p],
            Pids::Many(p) => p,
        };
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() || pids.contains(&0) {
            return Err(bad("pid: give one or more process ids (not 0)"));
        }
        if pids.len() > 64 {
            return Err(bad("pid: at most 64 processes; use a cgroup for more"));
        }
        Scope::Pids(pids)
    } else if let Some(c) = &req.cgroup {
        Scope::Cgroup(collect::scope::Cgroup::resolve(c).map_err(|e| bad(e.to_string()))?)
    } else {
        Scope::All
    };
    if let Some(why) = state.allow.refuse(&scope) {
        return Err(refused(StatusCode::FORBIDDEN, why));
    }
    let opts = RecordOptions {
        duration: Some(Duration::from_secs_f64(seconds)),
        frequency_hz: hz,
        ring_buffer_bytes: defaults::EVENTS_BYTES,
        stack_map_entries: defaults::STACK_ENTRIES,
        spans,
        span_fns: Vec::new(),
        follow_children: false,
        scope: scope.clone(),
        forward_signals_to: None,
        wakeup_bytes: None,
        call_graph,
        stack_bytes: cli::DEFAULT_STACK_BYTES,
        off_cpu: req.off_cpu.then_some(OffCpuOptions {
            min: Duration::from_micros(1),
            interval_min: Duration::from_micros(100),
            sample_every: 1,
        }),
        hold_before_attach: None,
        stall_consumer: None,
        hold_after_drain: None,
        hold_before_detach: None,
        stop: None,
        alloc: None,
        locks: false,
        window: None,
        signals_after_stop: false,
    };
    let meta = Meta {
        id: String::new(),
        state: Phase::Starting,
        scope: match &scope {
            Scope::Pids(p) => format!(
                "pid {}",
                p.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
            ),
            Scope::All => "all".into(),
            Scope::Cgroup(c) => format!("cgroup {}", c.relative),
            Scope::Comm(c) => format!("comm {}", c.pattern),
        },
        target: String::new(),
        created_unix_ms: collect::unix_ns() / 1_000_000,
        seconds,
        hz,
        off_cpu: req.off_cpu,
        spans: format!("{spans:?}").to_lowercase(),
        call_graph: format!("{call_graph:?}").to_lowercase(),
        elapsed_s: 0.0,
        samples: 0,
        lost: 0,
        stop_reason: None,
        error: None,
        warnings: Vec::new(),
        files: Vec::new(),
    };
    Ok(Plan { scope, opts, meta })
}

/// Gives a concurrency slot back when the recording that took it ends, however it ends: a
/// task that panicked leaves no job behind either (its probes went with its unwinding, its
/// watchers see the channel closed).
struct Slot(Rc<State>, Option<String>);

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(id) = &self.1
            && let Ok(mut jobs) = self.0.jobs.try_borrow_mut()
        {
            jobs.remove(id);
        }
        self.0.active.set(self.0.active.get().saturating_sub(1));
        self.0.job_ended.notify_waiters();
    }
}

/// Checks a request, prepares the target and the directory, and starts the recording.
/// Answers once it is started (or refused); the recording then runs on its own task.
pub async fn start(state: &Rc<State>, req: Request) -> Result<(String, Job), Refused> {
    if state.shutting_down.get() {
        return Err(refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is stopping",
        ));
    }
    if state.active.get() >= state.max_concurrent {
        return Err(refused(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} recording(s) already running, this server's limit (--max-concurrent); retry when one ends",
                state.max_concurrent
            ),
        ));
    }
    // Taken before the first await: concurrent requests cannot both pass the check.
    state.active.set(state.active.get().saturating_add(1));
    let mut slot = Slot(state.clone(), None);
    let Plan {
        scope,
        mut opts,
        mut meta,
    } = plan(state, req)?;
    // /proc and every mapped file are read here: off the thread that answers requests.
    let preflight_scope = scope.clone();
    let target = tokio::task::spawn_blocking(move || match &preflight_scope {
        Scope::Pids(p) if p.len() == 1 => collect::preflight(p[0]),
        s => collect::preflight_scope(s),
    })
    .await
    .map_err(|e| refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| {
        let status = match e {
            Error::NoSuchProcess(_) | Error::ExitedBeforeAttach(_) => StatusCode::NOT_FOUND,
            Error::NoAccessToTarget { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        refused(status, e.to_string())
    })?;
    if state.shutting_down.get() {
        return Err(refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is stopping",
        ));
    }
    let id = super::store::new_id()
        .map_err(|e| refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    meta.id = id.clone();
    meta.target = target.info.comm.clone();
    let dir = state
        .store
        .prepare(&id)
        .map_err(|e| refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Err(e) = Store::write_meta(&dir, &meta) {
        dir.abandon();
        return Err(refused(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
    }
    let stop = Arc::new(Notify::new());
    opts.stop = Some(stop.clone());
    let (tx, rx) = watch::channel(meta);
    state.jobs.borrow_mut().insert(
        id.clone(),
        Job {
            progress: rx.clone(),
            stop: stop.clone(),
            remove: false,
        },
    );
    slot.1 = Some(id.clone());
    tokio::task::spawn_local(run(state.clone(), slot, id.clone(), target, dir, opts, tx));
    Ok((
        id,
        Job {
            progress: rx,
            stop,
            remove: false,
        },
    ))
}

/// Records, then writes the outputs and the final `meta.json`; always frees the job's slot.
async fn run(
    state: Rc<State>,
    slot: Slot,
    id: String,
    target: collect::Target,
    dir: OutputDir,
    opts: RecordOptions,
    tx: watch::Sender<Meta>,
) {
    let raw = collect::record(
        target,
        &opts,
        |st| {
            tx.send_modify(|m| {
                m.state = Phase::Recording;
                m.elapsed_s = st.elapsed.as_secs_f64();
                m.samples = st.samples;
                m.lost = st.lost;
            })
        },
        || {
            tx.send_modify(|m| m.state = Phase::Recording);
            Ok(())
        },
    )
    .await;
    let mut meta = tx.borrow().clone();
    let dir = match raw {
        Err(e) => {
            meta.state = Phase::Failed;
            meta.error = Some(e.to_string());
            Some(dir)
        }
        Ok(raw) => write(&state, &id, raw, dir, &mut meta, &tx).await,
    };
    state.metrics.borrow_mut().count(meta.state);
    match dir {
        Some(dir) => finish(&state, &id, &dir, meta, &tx),
        None => {
            tx.send_replace(meta);
            state.jobs.borrow_mut().remove(&id);
        }
    }
    drop(slot);
    // Much of what the recording freed was allocated on the blocking pool's threads, in
    // arenas that keep freed memory resident until trimmed.
    crate::heap::give_back_freed();
}

/// Symbols and outputs, as `record --output DIR` writes them; gives the directory back (None
/// if the task writing it panicked and took it along).
async fn write(
    state: &State,
    id: &str,
    mut raw: collect::RawRecording,
    dir: OutputDir,
    meta: &mut Meta,
    tx: &watch::Sender<Meta>,
) -> Option<OutputDir> {
    meta.state = Phase::Writing;
    meta.elapsed_s =
        Duration::from_nanos(raw.end_boottime_ns.saturating_sub(raw.start_boottime_ns))
            .as_secs_f64();
    meta.samples = raw.counters.received;
    meta.lost = raw.counters.lost_ringbuf_full;
    meta.stop_reason = Some(raw.stop_reason.to_string());
    tx.send_replace(meta.clone());
    state.metrics.borrow_mut().add(&raw);
    let warnings = std::mem::take(&mut raw.warnings);
    meta.warnings.clone_from(&warnings);
    // CPU work: off the thread that answers requests.
    let written = tokio::task::spawn_blocking(move || {
        let rec = cli::symbolized(raw, warnings);
        let w = outputs::write_outputs(&rec, &dir, Parts::ALL);
        (dir, w)
    })
    .await;
    match written {
        Ok((dir, w)) => {
            meta.files = w
                .written
                .iter()
                .filter_map(|p| p.file_name()?.to_str().map(String::from))
                .collect();
            meta.warnings
                .extend(w.failed.iter().map(|(name, e)| format!("{name}: {e}")));
            if w.recording_written() {
                meta.state = Phase::Done;
            } else {
                meta.state = Phase::Failed;
                meta.error = Some("recording.pb could not be written (see warnings)".into());
            }
            Some(dir)
        }
        Err(e) => {
            meta.state = Phase::Failed;
            meta.error = Some(format!("writing the outputs failed: {e}"));
            state.store.prepare(id).ok()
        }
    }
}

/// The verdict on disk and to every watcher; the job leaves the table, and is removed from
/// disk if DELETE asked for it meanwhile; old recordings beyond `--retain` go.
fn finish(state: &State, id: &str, dir: &OutputDir, meta: Meta, tx: &watch::Sender<Meta>) {
    if let Err(e) = Store::write_meta(dir, &meta) {
        super::say(format_args!("profiler: recording {id}: {e}"));
    }
    tx.send_replace(meta);
    let job = state.jobs.borrow_mut().remove(id);
    if job.is_some_and(|j| j.remove) {
        let _ = state.store.remove(id);
    }
    let active = state.jobs.borrow().keys().cloned().collect();
    state.store.enforce_retain(&active);
}
