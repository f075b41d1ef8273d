//! The `profiler` command line: argument parsing and the glue between collect, symbolize and
//! outputs. Library code below stays free of terminal concerns.
use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use profiler_common::defaults;

use crate::{
    collect::{
        self, CallGraph, RecordOptions, Status,
        offcpu::OffCpuOptions,
        spans::{SpanFn, SpansMode},
    },
    error::{Error, Result},
    fail_if::{self, Rule},
    interrupt::{self, Phase},
    outputs::{self, OutputDir, Parts},
    outputs::{folded::GroupBy, perfetto::SpanTracks},
    symbolize,
};

#[derive(Debug, Parser)]
#[command(
    name = "profiler",
    version,
    about = "eBPF CPU profiler: flame graphs of running processes"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample the stacks of a running process.
    Record(RecordArgs),
    /// Run a command and profile it and every process it starts; exits with its exit code.
    Run(RunArgs),
    /// Profile continuously and push a window every period to Grafana Pyroscope or an OTLP
    /// profiles endpoint.
    Agent(crate::agent::AgentArgs),
    /// Live view of the hottest functions, spans and threads, redrawn every second (keys:
    /// 1/2/3 or Tab switch views, s/t sort by self or total, q quits).
    Top(crate::top::TopArgs),
    /// Regenerate the outputs of a recording directory (no root, no target needed).
    Report(ReportArgs),
    /// List running processes that carry the span probe ABI (profiler-probes).
    Ps(PsArgs),
    /// Compare two recordings: differential flame graph, changed functions and spans, and
    /// which changes are significant.
    Diff(DiffArgs),
    /// Serve recordings over HTTP: a Go-compatible /debug/pprof/profile, a JSON API and a web
    /// page (never runs commands).
    Serve(crate::server::ServeArgs),
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The recording to compare against: a directory written by `profiler record`, or its
    /// recording.pb.
    pub base: PathBuf,
    /// The recording judged against BASE.
    pub new: PathBuf,
    /// Where diff.svg, diff.txt and diff.json go. Default: ./diff-TIMESTAMP.
    #[arg(long, short, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Exit with code 3 when a significant change breaks a rule, e.g.
    /// 'diff.fn(parse).self > +5pp', 'diff.span(*).p95 > +10%', 'diff.cpu > +5%' (repeatable).
    #[arg(long = "fail-if", value_name = "RULE")]
    pub fail_if: Vec<Rule>,
    /// Differential flame graph from raw sample counts, instead of scaling BASE to NEW's
    /// total (which shows shifts of share even when the recordings differ in length).
    #[arg(long)]
    pub absolute: bool,
    /// Keep kernel threads and the idle task in the comparison.
    #[arg(long)]
    pub kernel_threads: bool,
    /// Do not print diff.txt.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn ps(args: PsArgs) -> Result<()> {
    let found = collect::ps::find_instrumented();
    if args.json {
        let json = serde_json::to_string_pretty(&found)
            .map_err(|e| Error::Internal(format!("ps JSON: {e}")))?;
        println!("{json}");
        return Ok(());
    }
    if found.is_empty() {
        println!("no running process carries the span probes (profiler_span_begin)");
        return Ok(());
    }
    println!("{:>8}  {:<16} {:<40} PROBES IN", "PID", "COMM", "COMMAND");
    for p in found {
        let mut cmd = p.command.join(" ");
        if cmd.chars().count() > 40 {
            cmd = cmd.chars().take(39).collect::<String>() + "…";
        }
        println!(
            "{:>8}  {:<16} {:<40} {}",
            p.pid,
            p.comm,
            cmd,
            p.modules.join(", ")
        );
    }
    Ok(())
}

/// What `record`, `top` and `agent` profile: exactly one of these.
#[derive(Debug, Args)]
#[group(id = "scope", required = true, multiple = false)]
pub struct ScopeArgs {
    /// Process to profile; repeat (or separate with commas) for several.
    #[arg(long, short, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Every process of the profiler's PID namespace: the whole machine from the host, the
    /// pod's processes from a sidecar that shares its PID namespace.
    #[arg(long)]
    pub all: bool,
    /// Every process in a cgroup v2 directory and below it (absolute, or relative to the
    /// cgroup v2 root), including processes that enter it later.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Every process of a container, by id (at least 12 hex digits): docker, containerd,
    /// CRI-O and podman cgroup layouts.
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
    /// Every process whose command name (as `ps -o comm` shows it, 15 bytes at most)
    /// matches a regular expression, including processes that take such a name by exec.
    #[arg(long, value_name = "REGEX")]
    pub comm: Option<String>,
}

impl ScopeArgs {
    /// The scope, checked as far as it can be before anything is loaded, and the process
    /// that names the recording.
    pub fn resolve(&self) -> Result<(collect::Target, collect::scope::Scope)> {
        let wide = wide_scope(
            self.all,
            self.cgroup.as_deref(),
            self.container.as_deref(),
            self.comm.as_deref(),
        )?;
        let scope = wide.unwrap_or_else(|| {
            let mut pids = self.pid.clone();
            pids.dedup();
            collect::scope::Scope::Pids(pids)
        });
        let target = match &scope {
            collect::scope::Scope::Pids(p) if p.len() == 1 => collect::preflight(p[0])?,
            _ => collect::preflight_scope(&scope)?,
        };
        Ok((target, scope))
    }
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Also profile every process the target starts from now on (followed in the kernel).
    #[arg(long)]
    pub follow_children: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("scope").args(["all", "cgroup", "container", "comm"])))]
pub struct RunArgs {
    /// Under sudo, run the command as root instead of as the invoking user.
    #[arg(long)]
    pub as_root: bool,
    /// Record every process of the PID namespace while the command runs, not only the
    /// command and what it starts.
    #[arg(long)]
    pub all: bool,
    /// Record the processes of this cgroup v2 directory while the command runs (the
    /// command itself only if it runs there).
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<String>,
    /// Record the processes of this container while the command runs.
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
    /// Record the processes whose command name matches while the command runs.
    #[arg(long, value_name = "REGEX")]
    pub comm: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Options shared by `record` and `run`.
#[derive(Debug, Args)]
pub struct SamplingArgs {
    /// Stop after this long (`10`, `2.5s`, `500ms`, `1m`). Default: until Ctrl-C or the
    /// target exits.
    #[arg(long, short, allow_negative_numbers = true, value_parser = parse_duration, value_name = "SECS")]
    pub duration: Option<Duration>,
    /// Samples per second per CPU.
    #[arg(long, short = 'F', allow_negative_numbers = true, default_value_t = 99, value_parser = parse_frequency)]
    pub frequency: u64,
    /// Output directory. Default: ./profile-COMM-PID-TIMESTAMP.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Ring buffer size in bytes (a power of two, at least one page).
    #[arg(long, default_value_t = defaults::EVENTS_BYTES, value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,
    /// Distinct stacks the kernel keeps; stacks beyond it travel inline (slower, not lost).
    /// At most 2^24 (16 GiB of kernel memory): the ids' high bits mark their map.
    #[arg(long, default_value_t = defaults::STACK_ENTRIES, value_parser = clap::value_parser!(u32).range(1..=1 << 24))]
    pub stack_map_entries: u32,
    /// Trace the span probe ABI (profiler-probes) when the target has it.
    #[arg(long, value_enum, default_value_t = SpansMode::Auto)]
    pub spans: SpansMode,
    /// Make every call of a function a span: SYMBOL in the main executable, or
    /// BINARY:SYMBOL in a library (repeatable).
    #[arg(long = "span-fn", value_name = "[BINARY:]SYMBOL")]
    pub span_fns: Vec<SpanFn>,
    /// How user stacks are walked: `fp` (frame pointers, in the kernel), `dwarf` (the kernel
    /// copies the top of the stack, userspace unwinds it with the binaries' CFI), or `auto`:
    /// frame pointers when the program's executable was built with them, DWARF otherwise.
    #[arg(long, value_enum, default_value_t = CallGraph::Auto)]
    pub call_graph: CallGraph,
    /// Bytes of user stack copied per sample in DWARF mode, and per lock wait with `--locks`
    /// (up to 131072); deeper frames are cut and marked `[unwind: truncated]`.
    #[arg(long, default_value_t = DEFAULT_STACK_BYTES, value_parser = clap::value_parser!(u32).range(512..=profiler_common::MAX_DWARF_STACK as i64))]
    pub stack_size: u32,
    /// Record off-CPU time too: where target threads block (sleep, I/O, locks) or wait for a
    /// CPU, from the scheduler's context switches. Adds offcpu.* and wall.* outputs.
    #[arg(long)]
    pub off_cpu: bool,
    /// Off-CPU intervals shorter than this are not counted (`1us`, `50us`, `1ms`): bounds the
    /// cost on programs that switch very often.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_offset, default_value = "1us", value_name = "DURATION")]
    pub off_cpu_min: Duration,
    /// Off-CPU intervals at least this long are also kept one by one, for the Perfetto
    /// timeline; shorter ones are only summed.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_offset, default_value = "100us", value_name = "DURATION")]
    pub off_cpu_interval_min: Duration,
    /// Record 1 in N switch-outs of target threads, chosen at random, and count each N
    /// times: off-CPU sums stay unbiased (their spread grows for rare waits) while the
    /// scheduler hook costs about N times less on programs that switch very often. The
    /// timeline then shows that sample of intervals.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65536), value_name = "N")]
    pub off_cpu_sample: u32,
    /// Record allocations too: uprobes on the targets' allocator (malloc, calloc, realloc,
    /// the aligned allocators, free), sampled by bytes. Adds alloc.* and inuse.* outputs.
    #[arg(long)]
    pub alloc: bool,
    /// Mean bytes between sampled allocations (`512KiB`, `1MiB`, `4096`); `1` records every
    /// allocation. Totals are scaled back from the samples, unbiased.
    #[arg(long, value_parser = parse_size, default_value = "512KiB", value_name = "SIZE")]
    pub alloc_sample: u64,
    /// Record lock contention too: the futex waits of target threads (the lock or condition
    /// waited on, how long, the waiter's stack). Adds locks.* outputs.
    #[arg(long)]
    pub locks: bool,
    #[command(flatten)]
    pub outputs: OutputArgs,
    /// Then compare with the recording in DIR, as `profiler diff DIR OUTPUT` does: diff.svg,
    /// diff.txt and diff.json go beside the outputs, the top changes are printed, and
    /// `diff.*` --fail-if rules judge the comparison.
    #[arg(long, value_name = "DIR")]
    pub baseline: Option<PathBuf>,
    /// No live status line.
    #[arg(long, short)]
    pub quiet: bool,
    /// Benchmark hook: unread ring buffer bytes that make the kernel wake the reader (0: every
    /// sample, as without adaptive wakeups). Default: a quarter of the ring buffer.
    #[arg(long, hide = true)]
    pub wakeup_bytes: Option<u64>,
    /// Test hook: pause between loading and attaching (milliseconds).
    #[arg(long, hide = true)]
    pub test_hold_before_attach_ms: Option<u64>,
    /// Test hook: leave the ring buffer unread after attaching (milliseconds).
    #[arg(long, hide = true)]
    pub test_stall_consumer_ms: Option<u64>,
    /// Test hook: pause after the recording stopped, before symbols are resolved
    /// (milliseconds), to send signals during post-processing.
    #[arg(long, hide = true)]
    pub test_hold_after_stop_ms: Option<u64>,
    /// Test hook: pause between the final drain of the ring buffer and the reading of the
    /// kernel's counters (milliseconds): whatever is sent then is counted and never read.
    #[arg(long, hide = true)]
    pub test_hold_after_drain_ms: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// A directory written by `profiler record`.
    pub dir: PathBuf,
    /// Write the outputs here instead of into DIR; with --format, the file to write (`-`,
    /// the default, for standard output).
    #[arg(long, short, value_name = "DIR|FILE|-")]
    pub output: Option<PathBuf>,
    /// Write only this output, to standard output or the file -o names.
    #[arg(long, value_enum, conflicts_with_all = ["summary_only", "flame_only", "no_flame_graphs"])]
    pub format: Option<outputs::Format>,
    /// Only the part of the recording from this long after its start (`2`, `1.5s`, `500ms`).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_offset, value_name = "SECS")]
    pub from: Option<Duration>,
    /// Only the part of the recording up to this long after its start.
    #[arg(long, allow_negative_numbers = true, value_parser = parse_offset, value_name = "SECS")]
    pub to: Option<Duration>,
    /// Write only the summary (summary.txt, summary.json, spans.json).
    #[arg(long, conflicts_with_all = ["flame_only", "no_flame_graphs"])]
    pub summary_only: bool,
    /// Write only the flame graphs and their folded stacks.
    #[arg(long, conflicts_with = "no_flame_graphs")]
    pub flame_only: bool,
    /// Write everything but the SVG flame graphs.
    #[arg(long)]
    pub no_flame_graphs: bool,
    #[command(flatten)]
    pub outputs: OutputArgs,
}

/// How outputs are drawn and judged, for `record`, `run` and `report`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Exit with code 3 when a rule holds, e.g. 'span(db_query).total > 700ms',
    /// 'span(*).p99 > 10ms', 'spans.concurrency > 100', 'lost.samples > 0' (repeatable).
    #[arg(long = "fail-if", value_name = "RULE")]
    pub fail_if: Vec<Rule>,
    /// Where spans go in trace.perfetto-trace.
    #[arg(long, value_enum, default_value_t = SpanTracks::Both)]
    pub perfetto_spans: SpanTracks,
    /// Root frames of the folded stacks and flame graphs: the process name (processes of
    /// one name together), each process (`name [pid]`), each thread, or none.
    #[arg(long, value_enum, default_value_t = GroupBy::Comm)]
    pub group_by: GroupBy,
    /// Keep kernel threads and the idle task in the outputs (recording.pb always has them).
    #[arg(long)]
    pub kernel_threads: bool,
}

/// DWARF stack copy per sample: see the README (`--stack-size`) for how it was chosen.
pub const DEFAULT_STACK_BYTES: u32 = 16 << 10;

/// Durations as people type them; zero and garbage are refused with the reason.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let negative = s.trim().starts_with('-') && parse_offset(&s.trim()[1..]).is_ok();
    let d = if negative {
        Duration::ZERO
    } else {
        parse_offset(s)?
    };
    if d.is_zero() {
        return Err(format!(
            "`{}`: the duration must be greater than zero",
            s.trim()
        ));
    }
    Ok(d)
}

/// A time offset: like a duration, but zero is allowed.
pub fn parse_offset(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us").or_else(|| s.strip_suffix("µs")) {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ns") {
        (n, 1e-9)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (try 10, 2.5s, 500ms or 1m)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{s}`: a duration cannot be negative"));
    }
    let secs = v * scale;
    if secs > 365.0 * 24.0 * 3600.0 {
        return Err(format!("`{s}` is longer than a year"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A size in bytes: a number with an optional unit (`B`, `KiB`/`K`/`KB`, `MiB`/`M`/`MB`,
/// `GiB`/`G`/`GB`; all powers of 1024).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(digits);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}`: expected a size such as 4096, 64KiB or 1MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}` (B, KiB, MiB or GiB)"
            ));
        }
    };
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    if bytes == 0 {
        return Err(format!(
            "`{s}`: at least 1 byte (1 records every allocation)"
        ));
    }
    Ok(bytes)
}

fn parse_frequency(s: &str) -> std::result::Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(0) => Err("0 Hz takes no samples: give at least 1 (the default is 99)".into()),
        Ok(hz) => Ok(hz),
        Err(_) if s.trim().starts_with('-') => Err(format!(
            "`{s}`: a frequency is at least 1 Hz (the default is 99)"
        )),
        Err(_) => Err(format!(
            "`{s}` is not a whole number of samples per second (e.g. 99 or 999)"
        )),
    }
}

fn parse_ring_size(s: &str) -> std::result::Result<u32, String> {
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of bytes"))?;
    if v < 4096 || !v.is_power_of_two() {
        return Err(format!("{v} is not a power of two of at least 4096"));
    }
    Ok(v)
}

/// The most the kernel lets a perf event sample per second.
fn max_sample_rate() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_sample_rate")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `2026-11-23T21-08-01Z` from a Unix time, without a date crate.
pub fn utc_stamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn default_output_dir(comm: &str, pid: u32) -> PathBuf {
    let safe: String = comm
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let now = collect::unix_ns() / 1_000_000_000;
    PathBuf::from(format!("profile-{safe}-{pid}-{}", utc_stamp(now)))
}

struct StatusLine {
    enabled: bool,
    shown: bool,
}

impl StatusLine {
    fn new(quiet: bool) -> Self {
        Self {
            enabled: !quiet && std::io::stderr().is_terminal(),
            shown: false,
        }
    }

    fn show(&mut self, pid: u32, s: Status) {
        if !self.enabled {
            return;
        }
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "\r\x1b[Krecording pid {pid}: {:.1} s, {} samples, {} lost (Ctrl-C to stop)",
            s.elapsed.as_secs_f64(),
            s.samples,
            s.lost
        );
        let _ = e.flush();
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.shown = false;
        }
    }
}

pub(crate) fn check_frequency(hz: u64) -> Result<()> {
    if let Some(max) = max_sample_rate()
        && hz > max
    {
        return Err(Error::InvalidArgument {
            what: "--frequency",
            reason: format!(
                "{hz} Hz is above the kernel's limit of {max} Hz (kernel.perf_event_max_sample_rate)"
            ),
        });
    }
    Ok(())
}

fn record_options(
    s: &SamplingArgs,
    follow_children: bool,
    forward: Option<u32>,
    scope: collect::scope::Scope,
) -> RecordOptions {
    RecordOptions {
        scope,
        spans: s.spans,
        span_fns: s.span_fns.clone(),
        follow_children,
        forward_signals_to: forward,
        duration: s.duration,
        frequency_hz: s.frequency,
        ring_buffer_bytes: s.ring_buffer_size,
        stack_map_entries: s.stack_map_entries,
        wakeup_bytes: s.wakeup_bytes,
        call_graph: s.call_graph,
        stack_bytes: s.stack_size,
        off_cpu: s.off_cpu.then_some(OffCpuOptions {
            min: s.off_cpu_min,
            interval_min: s.off_cpu_interval_min,
            sample_every: s.off_cpu_sample,
        }),
        alloc: s.alloc.then_some(collect::alloc::AllocOptions {
            sample_bytes: s.alloc_sample,
        }),
        locks: s.locks,
        hold_before_attach: s.test_hold_before_attach_ms.map(Duration::from_millis),
        stall_consumer: s.test_stall_consumer_ms.map(Duration::from_millis),
        hold_after_drain: s.test_hold_after_drain_ms.map(Duration::from_millis),
        hold_before_detach: None,
        stop: None,
        window: None,
        signals_after_stop: true,
    }
}

/// Records `target` into `dir` and writes the outputs; `on_attached` runs once the probes
/// are live. Output for people goes to `report` (stderr under `run`, whose stdout is the
/// command's).
async fn record_into(
    target: collect::Target,
    dir: OutputDir,
    s: &SamplingArgs,
    opts: RecordOptions,
    on_attached: impl FnOnce() -> Result<()>,
    report: &mut dyn Write,
) -> Result<crate::model::Recording> {
    let pid = target.info.pid;
    let mut status = StatusLine::new(s.quiet);
    let raw = collect::record(target, &opts, |st| status.show(pid, st), on_attached).await;
    status.clear();
    let mut raw = match raw {
        Ok(raw) => raw,
        Err(e) => {
            dir.abandon();
            return Err(e);
        }
    };
    // Samples exist from here on: every failure becomes a warning, and nothing is removed.
    // Signals went to `interrupt` when the recording stopped (`signals_after_stop`).
    let warnings = std::mem::take(&mut raw.warnings);
    if let Some(ms) = s.test_hold_after_stop_ms {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let mut rec = symbolized(raw, warnings);
    interrupt::set_phase(Phase::Writing);
    if let Some(meta) = rec.meta.as_mut() {
        // A missing capability is for the user to fix, so it is said on stderr even with
        // --quiet (which only keeps the summary off the terminal), one line each.
        let mut err = std::io::stderr();
        for w in meta
            .warnings
            .iter()
            .filter(|w| w.starts_with("missing CAP_"))
        {
            let _ = writeln!(err, "profiler: warning: {w}");
        }
    }
    let parts = output_parts(&s.outputs);
    let regenerate = dir.path().to_path_buf();
    finish(&rec, &dir, parts, s.quiet, &regenerate, report)?;
    Ok(rec)
}

/// The recording `raw` becomes, with the warnings of its collection: what `record` and
/// `serve` write. Takes `raw` so its memory is freed before the outputs are drawn.
pub fn symbolized(raw: collect::RawRecording, warnings: Vec<String>) -> crate::model::Recording {
    let mut rec = symbolize::symbolize(&raw);
    drop(raw);
    if let Some(meta) = rec.meta.as_mut() {
        meta.warnings.extend(warnings);
    }
    rec
}

/// The outputs `record --output DIR` writes with these options.
pub fn output_parts(o: &OutputArgs) -> Parts {
    Parts {
        perfetto_spans: o.perfetto_spans,
        group_by: o.group_by,
        kernel_threads: o.kernel_threads,
        ..Parts::ALL
    }
}

/// The scope `--all`, `--cgroup`, `--container` or `--comm` name, if one does.
fn wide_scope(
    all: bool,
    cgroup: Option<&str>,
    container: Option<&str>,
    comm: Option<&str>,
) -> Result<Option<collect::scope::Scope>> {
    use collect::scope::{Cgroup, Comm, Scope};
    Ok(if all {
        Some(Scope::All)
    } else if let Some(path) = cgroup {
        Some(Scope::Cgroup(Cgroup::resolve(path)?))
    } else if let Some(id) = container {
        Some(Scope::Cgroup(collect::scope::container(id)?))
    } else if let Some(pattern) = comm {
        Some(Scope::Comm(Comm::new(pattern)?))
    } else {
        None
    })
}

pub async fn record(args: RecordArgs) -> Result<()> {
    collect::phases::mark("main, arguments parsed, runtime started");
    // Needed only once the checks below pass; read meanwhile. (Not in `run`: it forks, which
    // is only safe while no other thread runs.)
    collect::session::prefetch_kernel_btf();
    let baseline = read_baseline(&args.sampling)?;
    check_frequency(args.sampling.frequency)?;
    // Everything the user can get wrong is checked before the output directory exists.
    collect::checks::startup()?;
    collect::phases::mark("start-up checks");
    let (target, scope) = args.scope.resolve()?;
    let out_path = args
        .sampling
        .output
        .clone()
        .unwrap_or_else(|| default_output_dir(&target.info.comm, target.info.pid));
    let dir = OutputDir::prepare(&out_path)?;
    collect::phases::mark("output directory prepared");
    let opts = record_options(&args.sampling, args.follow_children, None, scope);
    let rec = record_into(
        target,
        dir,
        &args.sampling,
        opts,
        || Ok(()),
        &mut std::io::stdout(),
    )
    .await?;
    judge(
        &rec,
        baseline,
        &out_path,
        &args.sampling,
        &mut std::io::stdout(),
    )
}

/// `profiler agent`: the scope is checked as `record` checks it, then `agent` takes over.
pub async fn agent(args: crate::agent::AgentArgs) -> Result<()> {
    check_frequency(args.frequency)?;
    collect::checks::startup()?;
    let (target, scope) = args.scope.resolve()?;
    crate::agent::run(target, scope, args).await
}

/// `profiler top`: the scope is checked as `record` checks it, then `top` takes over.
pub async fn top(args: crate::top::TopArgs) -> Result<()> {
    crate::top::terminal::require()?;
    check_frequency(args.frequency)?;
    collect::checks::startup()?;
    let (target, scope) = args.scope.resolve()?;
    crate::top::run(target, scope, args).await
}

/// Runs the command under the profiler; returns the command's exit code (or 128 + signal).
pub async fn run(args: RunArgs) -> Result<u8> {
    let baseline = read_baseline(&args.sampling)?;
    check_frequency(args.sampling.frequency)?;
    let run_as = if args.as_root {
        None
    } else {
        collect::run::RunAs::sudo_user()
    };
    let name = args
        .command
        .first()
        .map(|c| c.rsplit('/').next().unwrap_or(c).to_string())
        .unwrap_or_default();
    let out_path = args
        .sampling
        .output
        .clone()
        .unwrap_or_else(|| default_output_dir(&name, std::process::id()));
    // Privileges and the output directory first: a command that cannot be profiled is not
    // started at all.
    // `run` follows the command's children through the sched tracepoints: tracefs is needed.
    collect::checks::startup()?;
    let wide = wide_scope(
        args.all,
        args.cgroup.as_deref(),
        args.container.as_deref(),
        args.comm.as_deref(),
    )?;
    let dir = OutputDir::prepare(&out_path)?;
    let held = match collect::run::spawn_held(&args.command, run_as.as_ref()) {
        Ok(h) => h,
        Err(e) => {
            dir.abandon();
            return Err(e);
        }
    };
    let pid = held.pid;
    let target = match &wide {
        Some(scope) => collect::preflight_scope_command(scope, pid),
        None => collect::preflight_command(pid, &args.command),
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            dir.abandon();
            return Err(e);
        }
    };
    let scope = wide.unwrap_or_else(|| collect::scope::Scope::Pids(vec![pid]));
    let opts = record_options(&args.sampling, true, Some(pid), scope);
    let recorded = record_into(
        target,
        dir,
        &args.sampling,
        opts,
        move || held.release(),
        &mut std::io::stderr(),
    )
    .await;
    // Reap the command whatever happened to the recording, so its status is known. SIGTERM
    // and SIGHUP go on to it until it has exited, not after: its pid is free once reaped.
    interrupt::set_phase(Phase::Written);
    collect::run::wait_exited(pid)?;
    interrupt::forward_to(None);
    let code = collect::run::wait_exit_code(pid)?;
    let rec = recorded?;
    judge(
        &rec,
        baseline,
        &out_path,
        &args.sampling,
        &mut std::io::stderr(),
    )?;
    Ok(code)
}

/// Writes the outputs; each one that fails is named with the way to regenerate it (`profiler
/// report REGENERATE`, the directory holding the recording), the others are still written, and
/// nothing is removed.
fn finish(
    rec: &crate::model::Recording,
    dir: &OutputDir,
    parts: Parts,
    quiet: bool,
    regenerate: &Path,
    report: &mut dyn Write,
) -> Result<()> {
    let w = outputs::write_outputs(rec, dir, parts);
    // A signal from here on has nothing left to cut short (and must not say it did).
    interrupt::set_phase(Phase::Written);
    let complete = w.failed.is_empty() && w.skipped.is_empty();
    if !quiet && complete {
        let shown = outputs::Shown::new(rec, parts.kernel_threads);
        let _ = write!(report, "{}", shown.summary().to_text());
    }
    if !w.written.is_empty() {
        let _ = writeln!(report, "\nwrote {}:", dir.path().display());
        for p in &w.written {
            let _ = writeln!(report, "  {}", p.display());
        }
    }
    // Not eprintln!: after an SSH drop stderr fails, and a panic would lose the exit status.
    let mut err = std::io::stderr();
    let recording_ok = w.recording_written() || !parts.recording;
    for (name, e) in &w.failed {
        let _ = if *name == outputs::RECORDING_FILE {
            writeln!(
                err,
                "profiler: error: {e}; the other outputs were still written, but without it they cannot be regenerated"
            )
        } else if recording_ok {
            writeln!(
                err,
                "profiler: error: {e}; once fixed, `profiler report {}` writes {name} again",
                regenerate.display()
            )
        } else {
            writeln!(err, "profiler: error: {e}")
        };
    }
    if let Some(sig) = interrupt::stop_signal()
        && !w.skipped.is_empty()
    {
        let signal = interrupt::signal_name(sig);
        let kept = if w.recording_written() {
            format!(
                "{} kept; `profiler report {}` writes the {} other output(s)",
                dir.path().join(outputs::RECORDING_FILE).display(),
                regenerate.display(),
                w.skipped.len()
            )
        } else {
            format!("{} output(s) not written", w.skipped.len())
        };
        return Err(Error::Interrupted {
            signal,
            code: u8::try_from(128 + sig).unwrap_or(u8::MAX),
            kept,
        });
    }
    if !w.failed.is_empty() {
        return Err(Error::OutputsIncomplete {
            dir: dir.path().to_path_buf(),
            failed: w.failed.len(),
        });
    }
    Ok(())
}

/// Whether two paths name one directory (device and inode); unknown counts as the same, the
/// safe answer for a caller about to replace what is in it.
fn same_directory(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => true,
    }
}

pub fn report(args: ReportArgs) -> Result<()> {
    refuse_diff_rules(&args.outputs.fail_if)?;
    if let (Some(from), Some(to)) = (args.from, args.to)
        && from >= to
    {
        return Err(Error::InvalidArgument {
            what: "--from/--to",
            reason: format!("--from {from:?} is not before --to {to:?}"),
        });
    }
    let rec = outputs::recording::read(&args.dir.join(outputs::RECORDING_FILE))?;
    let windowed = args.from.is_some() || args.to.is_some();
    let rec = if windowed {
        rec.window(args.from, args.to)
    } else {
        rec
    };
    if let Some(format) = args.format {
        let parts = Parts {
            perfetto_spans: args.outputs.perfetto_spans,
            group_by: args.outputs.group_by,
            kernel_threads: args.outputs.kernel_threads,
            ..Parts::NONE
        };
        report_one(&rec, format, parts, args.output.as_deref())?;
        return check_rules(&rec, &args.outputs.fail_if);
    }
    let out = args.output.as_deref().unwrap_or(Path::new(&args.dir));
    let dir = OutputDir::prepare(out)?;
    // A window's outputs must not replace the full recording they were cut from, wherever
    // `-o` names its directory (`-o DIR`, `-o DIR/.`, a link to it).
    let elsewhere = args.output.is_some() && !same_directory(&args.dir, dir.path());
    let mut parts = Parts {
        recording: !windowed || elsewhere,
        perfetto_spans: args.outputs.perfetto_spans,
        group_by: args.outputs.group_by,
        kernel_threads: args.outputs.kernel_threads,
        ..Parts::ALL
    };
    if args.summary_only {
        parts = Parts {
            summary: true,
            kernel_threads: args.outputs.kernel_threads,
            ..Parts::NONE
        };
    } else if args.flame_only {
        parts = Parts {
            folded: true,
            flame_graph: true,
            group_by: args.outputs.group_by,
            kernel_threads: args.outputs.kernel_threads,
            ..Parts::NONE
        };
    } else if args.no_flame_graphs {
        parts.flame_graph = false;
    }
    if let Err(e) = interrupt::install(Phase::Writing) {
        let _ = writeln!(
            std::io::stderr(),
            "profiler: warning: signals cannot be caught ({e})"
        );
    }
    finish(
        &rec,
        &dir,
        parts,
        !parts.summary,
        &args.dir,
        &mut std::io::stdout(),
    )?;
    check_rules(&rec, &args.outputs.fail_if)
}

/// `report --format`: one output to `dest` (a file) or standard output (`-` or none).
fn report_one(
    rec: &crate::model::Recording,
    format: outputs::Format,
    parts: Parts,
    dest: Option<&Path>,
) -> Result<()> {
    let Some(file) = dest.filter(|d| *d != Path::new("-")) else {
        let stdout = std::io::stdout();
        if format.is_binary() && stdout.is_terminal() {
            return Err(Error::InvalidArgument {
                what: "--format",
                reason: format!(
                    "{} output is binary: write it to a file with -o FILE, or pipe it",
                    clap::ValueEnum::to_possible_value(&format)
                        .map_or_else(|| format!("{format:?}"), |v| v.get_name().to_string())
                ),
            });
        }
        let name = Path::new("standard output");
        let mut out = std::io::BufWriter::new(stdout.lock());
        outputs::write_format(rec, format, parts, name, &mut out)?;
        return out.flush().map_err(|source| Error::Write {
            path: name.to_path_buf(),
            source,
        });
    };
    let bad = |reason: &str| Error::InvalidArgument {
        what: "-o",
        reason: format!(
            "{} {reason}: with --format, -o names the file to write",
            file.display()
        ),
    };
    if file.is_dir() {
        return Err(bad("is a directory"));
    }
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| bad("is not a UTF-8 file name"))?;
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let dir = OutputDir::prepare(parent)?;
    dir.write_with(name, |w| outputs::write_format(rec, format, parts, file, w))?;
    Ok(())
}

/// A recording directory or its recording.pb, read and shown as the outputs show it.
fn read_side(path: &Path, kernel_threads: bool) -> Result<crate::model::Recording> {
    let file = if path.is_dir() {
        path.join(outputs::RECORDING_FILE)
    } else {
        path.to_path_buf()
    };
    let rec = outputs::recording::read(&file)?;
    Ok(outputs::Shown::new(&rec, kernel_threads).rec.into_owned())
}

pub fn diff(args: DiffArgs) -> Result<()> {
    if let Some(rule) = args.fail_if.iter().find(|r| !r.is_diff()) {
        return Err(Error::InvalidArgument {
            what: "--fail-if",
            reason: format!(
                "`{rule}` judges one recording: in `profiler diff` write a change (diff.fn(NAME).self, diff.span(NAME).p95, diff.cpu), or run `profiler report NEW --fail-if '{rule}'`"
            ),
        });
    }
    let base = read_side(&args.base, args.kernel_threads)?;
    let new = read_side(&args.new, args.kernel_threads)?;
    let d = crate::diff::compare(
        &base,
        &args.base.display().to_string(),
        &new,
        &args.new.display().to_string(),
    );
    let out_path = args.output.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        PathBuf::from(format!("diff-{}", utc_stamp(now)))
    });
    let dir = OutputDir::prepare(&out_path)?;
    let failed = write_diff(
        &dir,
        &d,
        &base,
        &new,
        args.absolute,
        args.quiet,
        &mut std::io::stdout(),
    );
    let violations = fail_if::evaluate_diff(&args.fail_if, &d);
    report_violations(&violations, args.fail_if.len())?;
    incomplete(&dir, failed)
}

fn incomplete(dir: &OutputDir, failed: usize) -> Result<()> {
    if failed == 0 {
        return Ok(());
    }
    Err(Error::OutputsIncomplete {
        dir: dir.path().to_path_buf(),
        failed,
    })
}

/// Writes diff.json, diff.txt and diff.svg into `dir`, prints diff.txt (unless `quiet`) and
/// what was written to `report`; returns how many outputs failed, each named on stderr.
fn write_diff(
    dir: &OutputDir,
    d: &crate::diff::Diff,
    base: &crate::model::Recording,
    new: &crate::model::Recording,
    absolute: bool,
    quiet: bool,
    report: &mut dyn Write,
) -> usize {
    let text = outputs::diff_text::to_text(d);
    let mut written = Vec::new();
    let mut failed = Vec::new();
    let mut put = |name: &'static str, bytes: Result<Vec<u8>>| match bytes
        .and_then(|b| dir.write_bytes(name, &b))
    {
        Ok(p) => written.push(p),
        Err(e) => failed.push(e),
    };
    put(outputs::DIFF_JSON_FILE, outputs::diff_json::to_bytes(d));
    put(outputs::DIFF_TXT_FILE, Ok(text.clone().into_bytes()));
    put(
        outputs::DIFF_SVG_FILE,
        outputs::diff_flamegraph::render(d, base, new, absolute),
    );
    // Not println!/eprintln!: a closed terminal must not panic the exit status away.
    if !quiet {
        let _ = write!(report, "{text}");
    }
    if !written.is_empty() {
        let _ = writeln!(report, "\nwrote {}:", dir.path().display());
        for p in &written {
            let _ = writeln!(report, "  {}", p.display());
        }
    }
    for e in &failed {
        let _ = writeln!(std::io::stderr(), "profiler: error: {e}");
    }
    if written.is_empty() {
        dir.abandon();
    }
    failed.len()
}

/// `--baseline`: read before anything is recorded, so a wrong path fails in a second.
fn read_baseline(s: &SamplingArgs) -> Result<Option<(PathBuf, crate::model::Recording)>> {
    match &s.baseline {
        None => {
            refuse_diff_rules(&s.outputs.fail_if)?;
            Ok(None)
        }
        Some(path) => Ok(Some((
            path.clone(),
            read_side(path, s.outputs.kernel_threads)?,
        ))),
    }
}

/// After `record`/`run`: the rules, and with `--baseline` the comparison with it (written
/// beside the outputs and printed), which the `diff.*` rules judge.
fn judge(
    rec: &crate::model::Recording,
    baseline: Option<(PathBuf, crate::model::Recording)>,
    out: &Path,
    s: &SamplingArgs,
    report: &mut dyn Write,
) -> Result<()> {
    let rules = &s.outputs.fail_if;
    let Some((path, base)) = baseline else {
        return check_rules(rec, rules);
    };
    let shown = outputs::Shown::new(rec, s.outputs.kernel_threads);
    let d = crate::diff::compare(
        &base,
        &path.display().to_string(),
        &shown.rec,
        &out.display().to_string(),
    );
    let dir = OutputDir::prepare(out)?;
    let _ = writeln!(report, "\ncompared with the baseline {}:", path.display());
    let failed = write_diff(&dir, &d, &base, &shown.rec, false, s.quiet, report);
    let mut violations = rule_violations(rec, rules);
    violations.extend(fail_if::evaluate_diff(rules, &d));
    report_violations(&violations, rules.len())?;
    incomplete(&dir, failed)
}

/// A one-recording command refuses `diff.*` rules before it starts: they need two.
fn refuse_diff_rules(rules: &[Rule]) -> Result<()> {
    match rules.iter().find(|r| r.is_diff()) {
        Some(rule) => Err(Error::InvalidArgument {
            what: "--fail-if",
            reason: format!(
                "`{rule}` compares two recordings: use it with `profiler diff BASE NEW`, or record with --baseline DIR"
            ),
        }),
        None => Ok(()),
    }
}

/// Prints each violation on its own line; Err when there is one.
fn report_violations(violations: &[fail_if::Violation], rules: usize) -> Result<()> {
    if rules == 0 {
        return Ok(());
    }
    // Not eprintln!/println!: a closed terminal (SSH drop) must not panic the exit status away.
    for v in violations {
        let _ = writeln!(
            std::io::stderr(),
            "profiler: --fail-if violated: {}",
            v.message
        );
    }
    if violations.is_empty() {
        let _ = writeln!(std::io::stdout(), "--fail-if: {rules} rule(s) hold");
        Ok(())
    } else {
        Err(Error::RulesViolated(violations.len()))
    }
}

/// Evaluates `--fail-if` rules; each violation is printed on its own line.
fn check_rules(rec: &crate::model::Recording, rules: &[Rule]) -> Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    report_violations(&rule_violations(rec, rules), rules.len())
}

/// The one-recording rules' violations (`diff.*` rules are not judged here).
fn rule_violations(rec: &crate::model::Recording, rules: &[Rule]) -> Vec<fail_if::Violation> {
    let by_name = crate::spans::stats_by_name(&rec.spans);
    let c = rec.counters();
    let facts = fail_if::Facts {
        by_name: &by_name,
        concurrency_peak: crate::spans::concurrency_peak(&rec.spans).0,
        span_count: rec.spans.len() as u64,
        lost_samples: c.lost(),
        lost_events: c.span_events_lost_total(),
    };
    fail_if::evaluate(rules, &facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_people_type() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        for bad in ["0", "0s", "-1", "abc", "", "1x", "nan", "inf"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(parse_offset("0"), Ok(Duration::ZERO));
        assert_eq!(parse_offset("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_offset("-1").is_err());
    }

    /// Found by the fault table: `--duration -1` (a space, not `=`) was taken for an unknown
    /// option ("unexpected argument '-1' found"), which says nothing about the duration.
    #[test]
    fn negative_numbers_reach_the_value_parsers() {
        for (args, needle) in [
            (
                &["--duration", "-1"][..],
                "the duration must be greater than zero",
            ),
            (
                &["-d", "-0.5"][..],
                "the duration must be greater than zero",
            ),
            (&["--frequency", "-5"][..], "a frequency is at least 1 Hz"),
            (&["-F", "-1"][..], "a frequency is at least 1 Hz"),
            (&["--off-cpu-min", "-1"][..], "cannot be negative"),
        ] {
            let mut argv = vec!["profiler", "record", "--pid", "1"];
            argv.extend(args);
            let e = Cli::try_parse_from(&argv).expect_err("refused");
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{args:?}: {e}"
            );
            assert!(e.to_string().contains(needle), "{args:?}: {e}");
        }
        let e =
            Cli::try_parse_from(["profiler", "report", "d", "--from", "-2"]).expect_err("refused");
        assert!(e.to_string().contains("cannot be negative"), "{e}");
    }

    #[test]
    fn frequencies_are_positive_whole_numbers() {
        assert_eq!(parse_frequency("99"), Ok(99));
        for bad in ["0", "abc", "-1", "1.5", ""] {
            assert!(parse_frequency(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn ring_sizes_are_powers_of_two() {
        assert_eq!(parse_ring_size("4096"), Ok(4096));
        assert!(parse_ring_size("4095").is_err());
        assert!(parse_ring_size("1024").is_err());
        assert!(parse_ring_size("lots").is_err());
    }

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000Z");
        assert_eq!(utc_stamp(1_795_467_600), "20261123-210000Z");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000Z");
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
