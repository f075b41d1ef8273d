//! `profiler serve`: the sidecar as an HTTP service. A Go-compatible
//! `/debug/pprof/profile`, a JSON API to list processes and to start, watch, fetch and delete
//! recordings, Prometheus metrics, and a web page built into the binary.
//!
//! One process, one thread: hyper (HTTP/1 only, no framework: the routes are a dozen and a
//! root service is better served by less code) on the same current-thread runtime as
//! `record`. Recordings run in-process through `collect::record`, each stopped on request
//! through `RecordOptions::stop`; the CPU-bound part after it (symbols, outputs) runs on
//! tokio's blocking pool so requests keep being answered meanwhile.
mod auth;
mod body;
mod jobs;
mod metrics;
mod page;
mod processes;
mod query;
mod routes;
mod store;

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    rc::Rc,
    time::Duration,
};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    collect,
    error::{Error, Result},
};

pub use store::Retain;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on. Any address but loopback needs --token-file.
    #[arg(long, default_value = "127.0.0.1:7878", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// Where recordings are kept, one directory each, as `record --output DIR` writes them.
    #[arg(long, default_value = "/var/lib/profiler", value_name = "DIR")]
    pub data: PathBuf,
    /// File holding the bearer token every request must carry (mode 0600). Required to listen
    /// on anything but loopback.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Recordings at once; more are refused with 429.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_concurrent: u32,
    /// Longest recording a client may ask for, in seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub max_seconds: u64,
    /// Finished recordings kept: a count (`100`) or a total size (`500M`, `2G`); the oldest
    /// are removed beyond it.
    #[arg(long, default_value = "100", value_parser = store::parse_retain, value_name = "N|SIZE")]
    pub retain: Retain,
    /// Only processes in this cgroup v2 directory or below it may be profiled (repeatable);
    /// `all=1` is then refused.
    #[arg(long = "allow-cgroup", value_name = "PATH")]
    pub allow_cgroup: Vec<String>,
    /// Only processes of the server's own PID namespace may be profiled (not those of nested
    /// containers); `all=1` and cgroup scopes are then refused.
    #[arg(long)]
    pub allow_pid_ns: bool,
}

/// What may be profiled (`--allow-cgroup`, `--allow-pid-ns`).
#[derive(Debug, Default)]
pub(crate) struct Allow {
    pub cgroups: Vec<collect::scope::Cgroup>,
    /// The inode of the server's PID namespace, when `--allow-pid-ns` restricts to it.
    pub pid_ns: Option<u64>,
}

/// Everything the request handlers share; one thread, so plain cells.
pub(crate) struct State {
    pub token: Option<auth::Token>,
    /// No token: requests must name a loopback host (a web page elsewhere cannot reach us
    /// through DNS rebinding).
    pub loopback_only: bool,
    pub max_concurrent: usize,
    pub max_seconds: u64,
    pub allow: Allow,
    pub store: store::Store,
    /// Recordings started and not yet written, by id.
    pub jobs: RefCell<HashMap<String, jobs::Job>>,
    /// Slots taken: recordings in `jobs` and those being checked before they start.
    pub active: Cell<usize>,
    pub metrics: RefCell<metrics::Metrics>,
    pub shutting_down: Cell<bool>,
    /// Notified whenever a recording ends.
    pub job_ended: tokio::sync::Notify,
}

/// Open connections beyond this are closed at once: each costs memory and a descriptor.
const MAX_CONNECTIONS: usize = 256;

pub async fn serve(args: ServeArgs) -> Result<()> {
    let token = auth::load_policy(args.listen, args.token_file.as_deref())?;
    collect::checks::startup()?;
    crate::heap::for_long_running();
    collect::session::keep_a_loader_ready();
    let allow = Allow::resolve(&args.allow_cgroup, args.allow_pid_ns)?;
    let store = store::Store::open(&args.data, args.retain)?;
    store.close_interrupted();
    store.enforce_retain(&Default::default());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::Startup(format!("cannot listen on {}: {e}", args.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;
    // Registered before anything can start a recording: from now on these signals end the
    // server cleanly, never by the default action that would leave outputs unwritten.
    let sig = |kind, name| signal(kind).map_err(|e| Error::io(format!("{name} handler"), e));
    let mut sigint = sig(SignalKind::interrupt(), "SIGINT")?;
    let mut sigterm = sig(SignalKind::terminate(), "SIGTERM")?;
    let mut sighup = sig(SignalKind::hangup(), "SIGHUP")?;

    let state = Rc::new(State {
        loopback_only: token.is_none(),
        token,
        max_concurrent: args.max_concurrent as usize,
        max_seconds: args.max_seconds,
        allow,
        store,
        jobs: RefCell::new(HashMap::new()),
        active: Cell::new(0),
        metrics: RefCell::new(metrics::Metrics::default()),
        shutting_down: Cell::new(false),
        job_ended: tokio::sync::Notify::new(),
    });
    say(format_args!(
        "profiler: serving on http://{local}/ (recordings in {})",
        args.data.display()
    ));
    let tasks = tokio::task::LocalSet::new();
    let connections = Rc::new(Cell::new(0usize));
    let signal_name = tasks
        .run_until(async {
            loop {
                tokio::select! {
                    _ = sigint.recv() => break "SIGINT",
                    _ = sigterm.recv() => break "SIGTERM",
                    _ = sighup.recv() => break "SIGHUP",
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else {
                            // EMFILE and the like: waiting lets descriptors be freed.
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        if connections.get() >= MAX_CONNECTIONS {
                            continue;
                        }
                        connect(&state, &connections, stream);
                    }
                }
            }
        })
        .await;
    drop(listener);
    say(format_args!(
        "profiler: {signal_name} received: stopping {} recording(s), writing their outputs",
        state.jobs.borrow().len()
    ));
    // The recordings saw the signal too (each listens for it while it samples), but one
    // still being checked or loaded has not: every stop is asked for, and no new one starts.
    state.shutting_down.set(true);
    tasks
        .run_until(async {
            loop {
                let ended = state.job_ended.notified();
                for job in state.jobs.borrow().values() {
                    job.stop.notify_one();
                }
                if state.active.get() == 0 {
                    break;
                }
                ended.await;
            }
        })
        .await;
    say(format_args!("profiler: stopped"));
    Ok(())
}

fn connect(state: &Rc<State>, connections: &Rc<Cell<usize>>, stream: tokio::net::TcpStream) {
    let state = state.clone();
    let connections = connections.clone();
    connections.set(connections.get().saturating_add(1));
    tokio::task::spawn_local(async move {
        let service = service_fn(|req| routes::handle(state.clone(), req));
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            // A client that never finishes its headers does not hold a connection forever.
            .header_read_timeout(Duration::from_secs(10))
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let _ = conn.await;
        connections.set(connections.get().saturating_sub(1));
    });
}

/// A line for the operator. Not eprintln!: a closed stderr must not panic a server.
fn say(line: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

impl Allow {
    fn resolve(cgroups: &[String], pid_ns: bool) -> Result<Self> {
        let cgroups = cgroups
            .iter()
            .map(|c| collect::scope::Cgroup::resolve(c))
            .collect::<Result<Vec<_>>>()?;
        let pid_ns = if pid_ns {
            Some(pid_ns_of("self").ok_or_else(|| {
                Error::Startup(
                    "--allow-pid-ns: cannot read /proc/self/ns/pid (is /proc mounted?)".into(),
                )
            })?)
        } else {
            None
        };
        Ok(Self { cgroups, pid_ns })
    }

    /// Why `scope` may not be profiled, if it may not.
    pub fn refuse(&self, scope: &collect::scope::Scope) -> Option<String> {
        use collect::scope::Scope;
        match scope {
            Scope::Pids(pids) => pids.iter().find_map(|&pid| self.refuse_pid(pid)),
            Scope::All if !self.cgroups.is_empty() || self.pid_ns.is_some() => Some(
                "all=1 is refused: the server restricts what may be profiled (--allow-cgroup, --allow-pid-ns)".into(),
            ),
            Scope::Cgroup(_) if self.pid_ns.is_some() => Some(
                "cgroup scopes are refused: the server only profiles its own PID namespace (--allow-pid-ns)".into(),
            ),
            Scope::Cgroup(c) if !self.cgroups.is_empty() => {
                (!self.cgroups.iter().any(|a| a.contains(&c.relative))).then(|| {
                    format!("cgroup {} is outside the allowed cgroups (--allow-cgroup)", c.relative)
                })
            }
            _ => None,
        }
    }

    fn refuse_pid(&self, pid: u32) -> Option<String> {
        if let Some(ns) = self.pid_ns
            && pid_ns_of(&pid.to_string()) != Some(ns)
        {
            return Some(format!(
                "process {pid} is outside the server's PID namespace (--allow-pid-ns)"
            ));
        }
        if !self.cgroups.is_empty() {
            let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            let inside = crate::model::Process::cgroup_from_proc(&text)
                .is_some_and(|p| self.cgroups.iter().any(|a| a.contains(&p)));
            if !inside {
                return Some(format!(
                    "process {pid} is outside the allowed cgroups (--allow-cgroup)"
                ));
            }
        }
        None
    }
}

fn pid_ns_of(pid: &str) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}
