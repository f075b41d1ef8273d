//! `profiler agent`: continuous profiling for fleets. The recording is cut into windows at
//! period boundaries (`collect::window`); each window becomes pprof profiles (CPU, and
//! off-CPU when on) per service or per process and is pushed to every `--push` destination:
//! Grafana Pyroscope's ingest API (`pyroscope`) or OTLP profiles over HTTP (`otlp`). A
//! destination that fails gets its windows queued (`spool`, in memory or in a directory),
//! retried oldest first with backoff, and sent in order when it answers again.
pub mod http;
pub mod otlp;
pub mod pyroscope;
pub mod spool;
pub mod tls;

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    time::Duration,
};

use clap::Args;

use crate::{
    collect::{self, CallGraph, RecordOptions, spans::SpanFn, spans::SpansMode, window},
    error::Result,
    model::Recording,
    outputs::{self, OutputDir, pprof},
};

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub scope: crate::cli::ScopeArgs,
    /// Window length: windows end at multiples of it in wall-clock time (`15s`, `1m`).
    #[arg(long, default_value = "15s", value_parser = parse_period, value_name = "DURATION")]
    pub period: Duration,
    /// Samples per second per CPU (low by default: the agent runs all the time).
    #[arg(long, short = 'F', default_value_t = 19, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub frequency: u64,
    /// Where windows go (repeatable): `http://HOST:PORT` or `https://…` for Grafana
    /// Pyroscope's ingest API, `otlp+http://HOST:4318` or `otlp+https://…` for OTLP profiles
    /// (v1development) over HTTP.
    #[arg(long, required = true, value_parser = Destination::parse, value_name = "URL")]
    pub push: Vec<Destination>,
    /// Also trust the CA certificates of this PEM file for https destinations (a private
    /// CA, such as an in-cluster collector's); the system's CAs stay trusted.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Credentials for every destination: a file (mode 0600) holding USER:PASSWORD, sent as
    /// HTTP basic authentication (Grafana Cloud: the stack's user id and an access token).
    #[arg(long, value_name = "FILE", conflicts_with = "bearer_token_file")]
    pub basic_auth_file: Option<PathBuf>,
    /// Credentials for every destination: a file (mode 0600) holding a token, sent as
    /// `Authorization: Bearer TOKEN`.
    #[arg(long, value_name = "FILE")]
    pub bearer_token_file: Option<PathBuf>,
    /// The tenant of a multi-tenant Pyroscope (or gateway), sent as `X-Scope-OrgID`.
    #[arg(long, value_name = "ID")]
    pub tenant: Option<String>,
    /// Keep windows a destination did not take in this directory (one subdirectory per
    /// destination), so they outlive the agent; default: in memory.
    #[arg(long, value_name = "DIR")]
    pub spool: Option<PathBuf>,
    /// Most bytes of windows waiting per destination; the oldest are dropped beyond it
    /// (`64M`, `512K`, `1G`).
    #[arg(long, default_value = "64M", value_parser = parse_size, value_name = "SIZE")]
    pub spool_max: u64,
    /// A label of every profile pushed (repeatable); `service_name=NAME` names the service
    /// instead of the process name.
    #[arg(long = "label", value_parser = parse_label, value_name = "KEY=VALUE")]
    pub labels: Vec<(String, String)>,
    /// One profile per service (processes of one name, per container) or per process.
    #[arg(long, value_enum, default_value_t = GroupBy::Service)]
    pub group: GroupBy,
    /// Record off-CPU time too; pushed as its own profile.
    #[arg(long)]
    pub off_cpu: bool,
    /// Trace the span probe ABI (profiler-probes) where present: samples get `span_name`.
    #[arg(long, value_enum, default_value_t = SpansMode::Auto)]
    pub spans: SpansMode,
    /// Make every call of a function a span (repeatable).
    #[arg(long = "span-fn", value_name = "[BINARY:]SYMBOL")]
    pub span_fns: Vec<SpanFn>,
    /// How user stacks are walked (see `profiler record --help`).
    #[arg(long, value_enum, default_value_t = CallGraph::Auto)]
    pub call_graph: CallGraph,
    /// Keep kernel threads and the idle task in what is pushed.
    #[arg(long)]
    pub kernel_threads: bool,
    /// Stop after this long (default: until SIGTERM or Ctrl-C).
    #[arg(long, short, value_parser = parse_period, value_name = "DURATION")]
    pub duration: Option<Duration>,
    /// How long one push may take before it counts as failed.
    #[arg(long, default_value = "10s", value_parser = parse_period, value_name = "DURATION")]
    pub push_timeout: Duration,
    /// At the stop, how long to keep trying to deliver what is waiting.
    #[arg(long, default_value = "10s", value_parser = parse_period, value_name = "DURATION")]
    pub flush_timeout: Duration,
    /// Longest wait between two attempts at a failing destination.
    #[arg(long, default_value = "60s", value_parser = parse_period, value_name = "DURATION")]
    pub retry_max: Duration,
    /// Test hook: keep sampling this long after the stop before detaching (milliseconds), so
    /// that the stop crosses a window boundary.
    #[arg(long, hide = true)]
    pub test_hold_before_detach_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    Service,
    Process,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pyroscope,
    Otlp,
}

#[derive(Clone, Debug)]
pub struct Destination {
    pub url: String,
    pub kind: Kind,
    pub endpoint: http::Endpoint,
    pub tls: bool,
}

impl Destination {
    pub fn parse(url: &str) -> std::result::Result<Self, String> {
        // OTLP/HTTP's port is 4318 with and without TLS; Pyroscope behind TLS is usually a
        // load balancer or Grafana Cloud on 443.
        let (kind, tls, rest, port) = if let Some(rest) = url.strip_prefix("otlp+http://") {
            (Kind::Otlp, false, rest, 4318)
        } else if let Some(rest) = url.strip_prefix("otlp+https://") {
            (Kind::Otlp, true, rest, 4318)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (Kind::Pyroscope, false, rest, 4040)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (Kind::Pyroscope, true, rest, 443)
        } else {
            return Err(format!(
                "{url}: expected http[s]://HOST:PORT (Pyroscope) or otlp+http[s]://HOST:PORT (OTLP profiles)"
            ));
        };
        Ok(Self {
            url: url.to_string(),
            kind,
            endpoint: http::Endpoint::parse(url, rest, port)?,
            tls,
        })
    }

    /// The destination's spool subdirectory: its kind, host and port, and a digest of its
    /// path when it has one. Two destinations on one server under different
    /// paths each keep their own windows: in one directory their sequence numbers collided
    /// and one outbox sent and deleted the other's files.
    fn spool_name(&self) -> String {
        let kind = match self.kind {
            Kind::Pyroscope => "pyroscope",
            Kind::Otlp => "otlp",
        };
        let host: String = self
            .endpoint
            .host
            .chars()
            // Host names are not case-sensitive: `GW` and `gw` are one destination.
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("{kind}-{host}-{}", self.endpoint.port);
        if self.endpoint.base_path.is_empty() {
            return name;
        }
        // FNV-1a: a digest that stays the same from one build to the next, so a restarted
        // agent finds its spool.
        let digest = self
            .endpoint
            .base_path
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        format!("{name}-{digest:016x}")
    }
}

fn parse_period(s: &str) -> std::result::Result<Duration, String> {
    let d = crate::cli::parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s}: at least 1s"));
    }
    Ok(d)
}

fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().trim_end_matches(['B', 'I']) {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("{s}: a size such as 64M, 512K or 1G")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s}: a size such as 64M, 512K or 1G"))?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s}: too large"))?;
    if bytes < 4096 {
        return Err(format!("{s}: at least 4K"));
    }
    Ok(bytes)
}

fn parse_label(s: &str) -> std::result::Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s}: expected KEY=VALUE"))?;
    let valid = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    if !valid {
        return Err(format!(
            "{s}: the key must be letters, digits, `_` and `.`, not starting with a digit"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// One service's (or process's) share of a window.
struct Group {
    service: String,
    labels: Vec<(String, String)>,
    pids: HashSet<u32>,
}

/// Splits a window's processes into services (by process name and container) or processes.
fn groups(rec: &Recording, by: GroupBy, labels: &[(String, String)]) -> Vec<Group> {
    let named = labels
        .iter()
        .find(|(k, _)| k == "service_name")
        .map(|(_, v)| v.clone());
    let extra: Vec<(String, String)> = labels
        .iter()
        .filter(|(k, _)| k != "service_name")
        .cloned()
        .collect();
    let mut pids: Vec<u32> = rec
        .samples
        .iter()
        .map(|s| s.pid)
        .chain(rec.off_cpu.iter().map(|o| o.pid))
        .collect();
    pids.sort_unstable();
    pids.dedup();
    // (service, labels) → its processes.
    type Key = (String, Vec<(String, String)>);
    let mut out: BTreeMap<Key, HashSet<u32>> = BTreeMap::new();
    for pid in pids {
        let process = rec.process_name(pid).to_string();
        let container = rec
            .processes
            .iter()
            .find(|p| p.pid == pid)
            .and_then(|p| crate::model::Process::container_id(&p.cgroup))
            .map(|id| id.chars().take(12).collect::<String>());
        let service = named.clone().unwrap_or_else(|| process.clone());
        let mut l = extra.clone();
        if let Some(c) = container {
            l.push(("container_id".into(), c));
        }
        if by == GroupBy::Process {
            l.push(("process".into(), process));
            l.push(("pid".into(), pid.to_string()));
        }
        out.entry((service, l)).or_default().insert(pid);
    }
    if out.is_empty() {
        // Nothing ran: an empty profile still says the agent is alive and the window is whole.
        let service = named.unwrap_or_else(|| rec.meta().comm.clone());
        out.insert((service, extra), HashSet::new());
    }
    out.into_iter()
        .map(|((service, labels), pids)| Group {
            service,
            labels,
            pids,
        })
        .collect()
}

fn gzip(p: &pprof::proto::Profile) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into memory cannot fail.
    let _ = pprof::write(p, &mut out);
    out
}

/// What one window sends to each destination.
fn render(rec: &Recording, args: &AgentArgs) -> (spool::Entry, spool::Entry) {
    let shown = outputs::Shown::new(rec, args.kernel_threads);
    let rec = shown.rec.as_ref();
    let m = rec.meta();
    let from_ns = m.start_unix_ns;
    let until_ns = from_ns.saturating_add(rec.duration_ns());
    let groups = groups(rec, args.group, &args.labels);
    let all: HashSet<u32> = groups.iter().flat_map(|g| g.pids.iter().copied()).collect();
    let mut pyroscope = Vec::new();
    let mut profiles = Vec::new();
    for g in &groups {
        let sub;
        let part = if groups.len() == 1 {
            rec
        } else {
            let others: HashSet<u32> = all.difference(&g.pids).copied().collect();
            sub = rec.without_pids(&others).0;
            &sub
        };
        let cpu = pprof::cpu_profile(part);
        let off = pprof::off_cpu_profile(part);
        let t = pyroscope::Target {
            service: &g.service,
            labels: &g.labels,
            from_ns,
            until_ns,
            frequency_hz: m.frequency_hz,
        };
        pyroscope.push(pyroscope::cpu(&t, gzip(&cpu)));
        if let Some(off) = &off {
            pyroscope.push(pyroscope::off_cpu(&t, gzip(off)));
        }
        let mut attributes = vec![("service.name".to_string(), g.service.clone())];
        attributes.extend(g.labels.iter().map(|(k, v)| {
            let k = if k == "pid" {
                "process.pid"
            } else {
                k.as_str()
            };
            (k.to_string(), v.clone())
        }));
        profiles.push((attributes, cpu, off));
    }
    let otlp_groups: Vec<otlp::Group> = profiles
        .iter()
        .map(|(attributes, cpu, off)| otlp::Group {
            attributes: attributes.clone(),
            profiles: std::iter::once(cpu).chain(off.as_ref()).collect(),
        })
        .collect();
    let otlp = spool::Request {
        target: otlp::PATH.to_string(),
        content_type: otlp::CONTENT_TYPE.to_string(),
        body: otlp::request(&otlp_groups),
    };
    (
        spool::Entry {
            from_ns,
            until_ns,
            requests: pyroscope,
        },
        spool::Entry {
            from_ns,
            until_ns,
            requests: vec![otlp],
        },
    )
}

/// A window's edges for messages.
fn when(from_ns: u64, until_ns: u64) -> String {
    if from_ns == 0 && until_ns == 0 {
        return "(unreadable spool file)".into();
    }
    format!(
        "{}..{}",
        crate::cli::utc_stamp(from_ns / 1_000_000_000),
        crate::cli::utc_stamp(until_ns.div_ceil(1_000_000_000))
    )
}

fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    // Not eprintln!: stderr may be gone (a closed terminal) and the agent must go on.
    let _ = writeln!(std::io::stderr(), "profiler: {line}");
}

/// One destination's queue and what happened to its windows.
struct Outbox {
    dest: Destination,
    tls: Option<tokio_rustls::TlsConnector>,
    /// Header lines every request carries (credentials, tenant), each ending in CRLF.
    headers: std::sync::Arc<str>,
    spool: spool::Spool,
    recorded: u64,
    delivered: u64,
    /// Windows the destination refused (4xx): sending them again cannot help.
    refused: u64,
    /// Requests of the oldest window already accepted: a retry resumes after them.
    sent_of_front: usize,
    failing: bool,
    backoff: Duration,
    next_try: tokio::time::Instant,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(1);

impl Outbox {
    fn dropped(&self) -> u64 {
        self.spool.dropped.saturating_add(self.refused)
    }

    fn push(&mut self, entry: spool::Entry) {
        self.recorded = self.recorded.saturating_add(1);
        let (dropped, error) = self.spool.push(entry);
        if let Some(e) = error {
            say(format_args!(
                "warning: {e}: the window waits in memory instead"
            ));
        }
        for d in dropped {
            say(format_args!(
                "{}: window {} dropped: the spool is full ({} windows dropped so far)",
                self.dest.url,
                when(d.from_ns, d.until_ns),
                self.dropped()
            ));
        }
    }

    /// Sends waiting windows, oldest first, while the destination takes them.
    async fn send_due(&mut self, timeout: Duration, retry_max: Duration) {
        while tokio::time::Instant::now() >= self.next_try {
            let (entry, lost) = self.spool.front();
            for d in lost {
                say(format_args!(
                    "{}: window {} dropped: its spool file could not be read",
                    self.dest.url,
                    when(d.from_ns, d.until_ns)
                ));
            }
            let Some(entry) = entry else {
                self.sent_of_front = 0;
                return;
            };
            match self.send(&entry, timeout).await {
                Ok(()) => {
                    self.spool.pop();
                    self.sent_of_front = 0;
                    self.delivered = self.delivered.saturating_add(1);
                    self.backoff = FIRST_BACKOFF;
                    if self.failing {
                        self.failing = false;
                        say(format_args!(
                            "{}: pushing again ({} windows waiting)",
                            self.dest.url,
                            self.spool.len()
                        ));
                    }
                }
                Err(http::PushError::Status(code, body))
                    if (400..500).contains(&code) && code != 408 && code != 429 =>
                {
                    self.spool.pop();
                    self.sent_of_front = 0;
                    self.refused = self.refused.saturating_add(1);
                    say(format_args!(
                        "{}: window {} refused and dropped: {}",
                        self.dest.url,
                        when(entry.from_ns, entry.until_ns),
                        http::PushError::Status(code, body)
                    ));
                }
                Err(e) => {
                    if !self.failing {
                        say(format_args!(
                            "{}: push failed ({e}): windows wait in the {} and are retried in order",
                            self.dest.url,
                            if self.spool.in_memory() < self.spool.len() {
                                "spool"
                            } else {
                                "memory"
                            }
                        ));
                    }
                    self.failing = true;
                    self.next_try = tokio::time::Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(retry_max);
                    return;
                }
            }
        }
    }

    async fn send(
        &mut self,
        entry: &spool::Entry,
        timeout: Duration,
    ) -> std::result::Result<(), http::PushError> {
        let ep = &self.dest.endpoint;
        for r in entry.requests.iter().skip(self.sent_of_front) {
            let target = format!("{}{}", ep.base_path, r.target);
            http::post(
                ep,
                self.tls.as_ref(),
                &target,
                &http::Payload {
                    headers: &self.headers,
                    content_type: &r.content_type,
                    body: &r.body,
                },
                timeout,
            )
            .await?;
            self.sent_of_front = self.sent_of_front.saturating_add(1);
        }
        Ok(())
    }
}

/// The header lines of `--basic-auth-file`, `--bearer-token-file` and `--tenant`, read once
/// at the start: a secret that cannot be read is a mistake to fix now, not a push to retry.
fn push_headers(args: &AgentArgs) -> Result<String> {
    // Anything else could end the header line and start another (header injection).
    let header_safe = |v: &[u8]| !v.is_empty() && v.iter().all(|b| (0x20..0x7f).contains(b));
    let mut headers = String::new();
    if let Some(path) = &args.basic_auth_file {
        let secret = crate::secret::read("--basic-auth-file", path)?;
        if !header_safe(&secret) || !secret.contains(&b':') {
            return Err(crate::error::Error::Startup(format!(
                "--basic-auth-file {}: expected one line USER:PASSWORD of printable characters",
                path.display()
            )));
        }
        headers += &format!(
            "Authorization: Basic {}\r\n",
            crate::secret::base64(&secret)
        );
    }
    if let Some(path) = &args.bearer_token_file {
        let token = crate::secret::read("--bearer-token-file", path)?;
        if !header_safe(&token) || token.contains(&b' ') {
            return Err(crate::error::Error::Startup(format!(
                "--bearer-token-file {}: expected one token of printable characters without spaces",
                path.display()
            )));
        }
        headers += &format!(
            "Authorization: Bearer {}\r\n",
            String::from_utf8_lossy(&token)
        );
    }
    if let Some(tenant) = &args.tenant {
        if !header_safe(tenant.as_bytes()) {
            return Err(crate::error::Error::InvalidArgument {
                what: "--tenant",
                reason: format!("{tenant:?}: printable characters only"),
            });
        }
        headers += &format!("X-Scope-OrgID: {tenant}\r\n");
    }
    if args.basic_auth_file.is_some() || args.bearer_token_file.is_some() {
        for d in args
            .push
            .iter()
            .filter(|d| !d.tls && !d.endpoint.is_loopback())
        {
            say(format_args!(
                "warning: {}: credentials go to it unencrypted: use https:// or otlp+https://",
                d.url
            ));
        }
    }
    Ok(headers)
}

/// Runs the agent on `target` until `--duration`, SIGTERM, SIGINT or SIGHUP; the window in
/// progress then is cut, pushed with the others still waiting (for up to `--flush-timeout`)
/// and what is left stays in the spool.
pub async fn run(
    target: collect::Target,
    scope: collect::scope::Scope,
    args: AgentArgs,
) -> Result<()> {
    crate::heap::for_long_running();
    // Read once, before recording: a CA file that cannot be read is a mistake to fix now,
    // not a push failure to retry.
    let tls = if args.push.iter().any(|d| d.tls) {
        let config =
            tls::client_config(args.ca_file.as_deref()).map_err(crate::error::Error::Startup)?;
        Some(tokio_rustls::TlsConnector::from(config))
    } else {
        if let Some(path) = &args.ca_file {
            say(format_args!(
                "warning: --ca-file {} unused: no --push URL is https:// or otlp+https://",
                path.display()
            ));
        }
        None
    };
    let headers: std::sync::Arc<str> = push_headers(&args)?.into();
    let mut names = std::collections::HashSet::new();
    if let Some(dup) = args.push.iter().find(|d| !names.insert(d.spool_name())) {
        return Err(crate::error::Error::Startup(format!(
            "--push {}: another --push goes to the same kind of server, host, port and path: give each destination once",
            dup.url
        )));
    }
    let mut outboxes = Vec::new();
    for dest in &args.push {
        let dir = match &args.spool {
            Some(root) => Some(OutputDir::prepare(&root.join(dest.spool_name()))?),
            None => None,
        };
        let (spool, warnings) = spool::Spool::open(dir, args.spool_max);
        for w in warnings {
            say(format_args!("warning: {w}"));
        }
        if !spool.is_empty() {
            say(format_args!(
                "{}: {} windows of an earlier run waiting in the spool: sent first",
                dest.url,
                spool.len()
            ));
        }
        outboxes.push(Outbox {
            dest: dest.clone(),
            tls: tls.clone().filter(|_| dest.tls),
            headers: headers.clone(),
            spool,
            recorded: 0,
            delivered: 0,
            refused: 0,
            sent_of_front: 0,
            failing: false,
            backoff: FIRST_BACKOFF,
            next_try: tokio::time::Instant::now(),
        });
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let opts = RecordOptions {
        duration: args.duration,
        frequency_hz: args.frequency,
        ring_buffer_bytes: profiler_common::defaults::EVENTS_BYTES,
        stack_map_entries: profiler_common::defaults::STACK_ENTRIES,
        spans: args.spans,
        span_fns: args.span_fns.clone(),
        follow_children: true,
        scope,
        forward_signals_to: None,
        wakeup_bytes: None,
        call_graph: args.call_graph,
        stack_bytes: crate::cli::DEFAULT_STACK_BYTES,
        off_cpu: args.off_cpu.then_some(collect::offcpu::OffCpuOptions {
            min: Duration::from_micros(1),
            interval_min: Duration::from_millis(100),
            // Every switch-out: collect::window cuts the kernel's sums per window without
            // scaling them, which sampling would need.
            sample_every: 1,
        }),
        hold_before_attach: None,
        stall_consumer: None,
        hold_after_drain: None,
        hold_before_detach: args.test_hold_before_detach_ms.map(Duration::from_millis),
        stop: None,
        alloc: None,
        locks: false,
        window: Some(window::WindowOptions {
            period: args.period,
            tx: tx.clone(),
            first: None,
        }),
        signals_after_stop: false,
    };
    // Owns the senders: the window channel closes, and delivery turns to its final flush,
    // once the recording has handed over its last window.
    let recording = async move {
        let raw = collect::record(target, &opts, |_| {}, || Ok(())).await;
        drop(opts);
        let result = raw.map(|raw| {
            for w in &raw.warnings {
                say(format_args!("warning: {w}"));
            }
            say(format_args!(
                "stopping ({}): pushing the last window",
                raw.stop_reason
            ));
            // The window in progress at the stop is the last one.
            let _ = tx.send(crate::symbolize::symbolize(&raw));
        });
        drop(tx);
        result
    };
    let delivering = async {
        loop {
            let due = outboxes
                .iter()
                .filter(|o| !o.spool.is_empty())
                .map(|o| o.next_try)
                .min();
            tokio::select! {
                w = rx.recv() => match w {
                    Some(rec) => {
                        let (py, ot) = render(&rec, &args);
                        for o in &mut outboxes {
                            o.push(match o.dest.kind {
                                Kind::Pyroscope => py.clone(),
                                Kind::Otlp => ot.clone(),
                            });
                        }
                    }
                    None => break,
                },
                _ = async { match due {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                } } => {}
            }
            for o in &mut outboxes {
                o.send_due(args.push_timeout, args.retry_max).await;
            }
        }
        // The stop: what waits gets until the flush deadline.
        let deadline = tokio::time::Instant::now() + args.flush_timeout;
        for o in &mut outboxes {
            o.next_try = tokio::time::Instant::now();
            while !o.spool.is_empty() && tokio::time::Instant::now() < deadline {
                if o.next_try > tokio::time::Instant::now() {
                    tokio::time::sleep_until(o.next_try.min(deadline)).await;
                    continue;
                }
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                o.send_due(args.push_timeout.min(left), args.retry_max)
                    .await;
            }
        }
    };
    let (recorded, ()) = tokio::join!(recording, delivering);
    for o in &outboxes {
        let memory = o.spool.in_memory() as u64;
        let kept = (o.spool.len() as u64).saturating_sub(memory);
        say(format_args!(
            "{}: {} windows recorded, {} delivered, {} dropped, {} left in the spool",
            o.dest.url,
            o.recorded,
            o.delivered,
            o.dropped().saturating_add(memory),
            kept
        ));
    }
    recorded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_are_pyroscope_or_otlp_over_http_or_https() {
        let d = Destination::parse("http://pyro:4040").unwrap();
        assert_eq!(
            (d.kind, d.endpoint.port, d.tls),
            (Kind::Pyroscope, 4040, false)
        );
        let d = Destination::parse("otlp+http://collector").unwrap();
        assert_eq!((d.kind, d.endpoint.port, d.tls), (Kind::Otlp, 4318, false));
        let d = Destination::parse("https://profiles.example.net/prefix").unwrap();
        assert_eq!(
            (d.kind, d.endpoint.port, d.tls),
            (Kind::Pyroscope, 443, true)
        );
        assert_eq!(d.endpoint.base_path, "/prefix");
        let d = Destination::parse("otlp+https://collector:4319").unwrap();
        assert_eq!((d.kind, d.endpoint.port, d.tls), (Kind::Otlp, 4319, true));
        let e = Destination::parse("pyro:4040").unwrap_err();
        assert!(e.contains("expected http[s]://"), "{e}");
        assert!(!e.contains('\n'));
        assert!(Destination::parse("ftp://pyro:4040").is_err());
    }

    #[test]
    fn each_destination_has_its_own_spool_directory() {
        let name = |url| Destination::parse(url).unwrap().spool_name();
        // The name an earlier build gave stays for a plain destination.
        assert_eq!(name("http://gw:80"), "pyroscope-gw-80");
        let all = [
            name("http://gw:80"),
            name("http://gw:80/a"),
            name("http://gw:80/b"),
            name("otlp+http://gw:80/a"),
        ];
        let distinct: std::collections::HashSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{all:?}");
        assert_eq!(name("http://gw:80/a"), name("http://gw:80/a/"));
        assert_eq!(name("http://GW:80/a"), name("http://gw:80/a"));
        // A server speaks one protocol on a port: these are one destination, refused twice.
        assert_eq!(name("https://gw:80/a"), name("http://gw:80/a"));
        assert!(all.iter().all(|n| {
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        }));
    }

    #[test]
    fn sizes_and_labels_parse_as_people_write_them() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("8192"), Ok(8192));
        assert!(parse_size("1").is_err());
        assert!(parse_size("99999999999G").is_err());
        assert!(parse_size("12X").is_err());
        assert_eq!(parse_label("env=prod"), Ok(("env".into(), "prod".into())));
        assert!(parse_label("1x=y").is_err());
        assert!(parse_label("novalue").is_err());
    }

    #[test]
    fn windows_group_by_process_name_unless_a_service_name_is_given() {
        let rec = crate::model::tests::sample_recording();
        let g = groups(&rec, GroupBy::Service, &[]);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].service, rec.process_name(rec.samples[0].pid));
        let labels = vec![
            ("service_name".to_string(), "checkout".to_string()),
            ("env".to_string(), "prod".to_string()),
        ];
        let g = groups(&rec, GroupBy::Process, &labels);
        assert_eq!(g[0].service, "checkout");
        assert!(g[0].labels.iter().any(|(k, _)| k == "pid"));
        assert!(g[0].labels.iter().any(|(k, v)| k == "env" && v == "prod"));
        assert!(!g[0].labels.iter().any(|(k, _)| k == "service_name"));
    }
}
