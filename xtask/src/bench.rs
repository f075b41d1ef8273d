//! `cargo xtask bench`: the profiler's costs, measured against a baseline in the same run.
//! Rounds are interleaved (baseline, measured, baseline, …) and, where one thread is measured,
//! the target is pinned to one CPU and the profiler to the other, because this machine's
//! run-to-run noise is ±10-20%.
//! Results: bench/results.md (a table, each figure with its method) and bench/results.json.
//! `BENCH_QUICK=1` runs every part once with short recordings, to check the bench itself;
//! `BENCH_ONLY=a,b` runs only some parts. Both write to target/bench, not bench/.
//! `BENCH_ROUNDS=N` sets the rounds of the interleaved comparisons (5).
use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{Result, compile_c as compile, profiler_bin, run, step, workspace_root};

fn quick() -> bool {
    std::env::var_os("BENCH_QUICK").is_some_and(|v| !v.is_empty() && v != "0")
}

/// `BENCH_ONLY=post,own` runs only those parts (spans, span-fn, sampling, slowdown,
/// slowdown-mt, attach, startup, post, own, offcpu, callgraph, build, all, short, agent, alloc),
/// to work on one without waiting for the others.
fn part(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|p| p.trim() == name))
}

/// Rounds of each interleaved comparison: enough for a median and a spread on 2 cores within
/// the bench's 15-minute budget. `BENCH_ROUNDS=N` asks for more where a part's figures
/// overlap on a machine others use too.
fn rounds() -> usize {
    if quick() {
        return 1;
    }
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(5)
}

/// Median and the spread (min–max) of a set of measurements.
struct Stat {
    median: f64,
    min: f64,
    max: f64,
}

fn stat(mut v: Vec<f64>) -> Stat {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Stat {
        median,
        min: v.first().copied().unwrap_or(f64::NAN),
        max: v.last().copied().unwrap_or(f64::NAN),
    }
}

impl Stat {
    /// `median (spread min–max)`, or the lone value when there was one run.
    fn show(&self, decimals: usize) -> String {
        if self.min == self.max {
            format!("{:.decimals$}", self.median)
        } else {
            format!(
                "{:.decimals$} (spread {:.decimals$}–{:.decimals$})",
                self.median, self.min, self.max
            )
        }
    }

    fn json(&self, name: &str) -> String {
        format!(
            "\"{name}_median\":{},\"{name}_min\":{},\"{name}_max\":{}",
            num(self.median),
            num(self.min),
            num(self.max)
        )
    }
}

/// A JSON number; NaN (a measurement that failed) becomes null.
fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "null".into()
    }
}

fn json_number(text: &str, key: &str) -> Option<f64> {
    // summary.json is ours and flat enough for a key search; keeps xtask dependency-free.
    let at = text.find(&format!("\"{key}\":"))?;
    let rest = text[at + key.len() + 3..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn read_summary(out: &Path) -> Result<String> {
    let path = out.join("summary.json");
    fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The few libc calls the bench needs beyond std: resource usage of one child (std's wait
/// gives only the status) and the clocks the profilers stamp samples with.
mod sys {
    #[repr(C)]
    #[derive(Default)]
    pub struct Timeval {
        pub sec: i64,
        pub usec: i64,
    }

    #[repr(C)]
    #[derive(Default)]
    pub struct Rusage {
        pub utime: Timeval,
        pub stime: Timeval,
        /// KiB.
        pub maxrss: i64,
        pub rest: [i64; 13],
    }

    #[repr(C)]
    #[derive(Default)]
    pub struct Timespec {
        pub sec: i64,
        pub nsec: i64,
    }

    pub const CLOCK_MONOTONIC: i32 = 1;
    pub const CLOCK_BOOTTIME: i32 = 7;
    pub const SIGINT: i32 = 2;

    unsafe extern "C" {
        pub fn wait4(pid: i32, status: *mut i32, options: i32, usage: *mut Rusage) -> i32;
        pub fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
        pub fn kill(pid: i32, sig: i32) -> i32;
    }
}

fn clock_ns(clock: i32) -> u64 {
    let mut ts = sys::Timespec::default();
    // SAFETY: ts is a valid timespec; both clocks exist on every Linux this profiler runs on.
    unsafe { sys::clock_gettime(clock, &mut ts) };
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: plain syscall; `pid` is a child of ours that has not been reaped yet.
    unsafe { sys::kill(pid as i32, sig) };
}

/// What a child cost, from wait4 when it ended.
struct Usage {
    ended: Instant,
    cpu_s: f64,
    max_rss_mb: f64,
    success: bool,
}

/// Reaps `child` with wait4 for its CPU time and peak RSS. The Child must not be waited on
/// (nor killed) afterwards: std does not know it is gone.
fn wait_usage(child: &Child) -> Result<Usage> {
    let pid = child.id() as i32;
    let mut status = 0;
    let mut ru = sys::Rusage::default();
    loop {
        // SAFETY: status and ru are valid for writes; pid is our child, not yet reaped.
        let r = unsafe { sys::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4({pid}): {e}"));
        }
    }
    let tv = |t: &sys::Timeval| t.sec as f64 + t.usec as f64 * 1e-6;
    Ok(Usage {
        ended: Instant::now(),
        cpu_s: tv(&ru.utime) + tv(&ru.stime),
        max_rss_mb: ru.maxrss as f64 / 1024.0,
        // Exited (not signalled) with code 0.
        success: status & 0x7f == 0 && (status >> 8) & 0xff == 0,
    })
}

/// A target past its "ready" line; killed when dropped, so an error cannot leave it spinning.
struct Target {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Target {
    /// Pinned to CPU 1, as every single-thread measurement.
    fn start(bin: &Path, args: &[&str]) -> Result<Self> {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "1"]).arg(bin).args(args);
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Result<Self> {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {cmd:?}: {e}"))?;
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.starts_with("ready") {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} said {line:?} instead of ready"));
        }
        Ok(Self { child, out })
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn go(&mut self) -> Result {
        let stdin = self.child.stdin.as_mut().ok_or("no stdin")?;
        stdin.write_all(b"go\n").map_err(|e| e.to_string())
    }

    fn finish(mut self) -> Result<String> {
        let mut rest = String::new();
        self.out
            .read_to_string(&mut rest)
            .map_err(|e| e.to_string())?;
        self.child.wait().map_err(|e| e.to_string())?;
        Ok(rest)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        // std sends nothing to a child it has already reaped, so this is safe after finish.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns a profiler command (stderr piped) and returns once its probes are live, with the
/// instant its "recording" line arrived.
fn spawn_recording(mut cmd: Command) -> Result<(Child, Instant)> {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the profiler: {e}"))?;
    let mut err = BufReader::new(child.stderr.take().ok_or("no stderr")?);
    let mut line = String::new();
    let mut said = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            let _ = child.wait();
            return Err(format!("profiler ended before recording: {said}"));
        }
        if line.starts_with("profiler: recording") {
            break;
        }
        said.push_str(&line);
    }
    let live = Instant::now();
    // Keep draining stderr so the profiler never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = err.read_to_string(&mut sink);
    });
    Ok((child, live))
}

fn record_cmd(pid: &str, out: &Path, args: &[&str]) -> Command {
    record_cmd_bin(&profiler_bin(), pid, out, args)
}

fn record_cmd_bin(bin: &Path, pid: &str, out: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["record", "--quiet", "--pid", pid, "--output"])
        .arg(out)
        .args(args);
    cmd
}

/// Starts the profiler pinned to CPU 0 on `pid` and returns once its probes are live.
fn start_profiler(pid: u32, out: &Path, args: &[&str]) -> Result<Child> {
    start_profiler_bin(&profiler_bin(), pid, out, args)
}

/// The number after `key` in a target's "key value key value" report.
fn printed_value(printed: &str, key: &str) -> Result<f64> {
    printed
        .split_whitespace()
        .skip_while(|w| *w != key)
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no `{key}` in {printed:?}"))
}

fn seconds_of(printed: &str) -> Result<f64> {
    printed_value(printed, "seconds")
}

struct Row {
    what: String,
    value: String,
    method: String,
    json: String,
}

/// Span probes: the same 100k-span burst alone and under the profiler.
fn span_cost(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("burst");
    compile(&bin, "burst.c", &[])?;
    const SPANS: f64 = 100_000.0;
    let rounds = rounds();
    let (mut alone, mut probed, mut lost) = (Vec::new(), Vec::new(), 0.0);
    for round in 0..rounds {
        step(&format!("span probes: round {}/{rounds}", round + 1));
        let mut t = Target::start(&bin, &[])?;
        t.go()?;
        alone.push(seconds_of(&t.finish()?)?);

        let t = Target::start(&bin, &[])?;
        let out = dir.join("burst-profile");
        let _ = fs::remove_dir_all(&out);
        let mut p = start_profiler(t.child.id(), &out, &[])?;
        let mut t = t;
        t.go()?;
        probed.push(seconds_of(&t.finish()?)?);
        p.wait().map_err(|e| e.to_string())?;
        let summary = read_summary(&out)?;
        lost += json_number(&summary, "lost_events").unwrap_or(f64::NAN);
    }
    let per_span: Vec<f64> = probed
        .iter()
        .zip(&alone)
        .map(|(p, a)| (p - a) / SPANS * 1e9)
        .collect();
    let s = stat(per_span);
    let base = stat(alone.iter().map(|a| a / SPANS * 1e9).collect());
    let rate = stat(probed.iter().map(|p| SPANS * 4.0 / p).collect());
    rows.push(Row {
        what: "span probe cost, per span (begin+enter+exit+end)".into(),
        value: format!(
            "+{:.0} ns (spread {:.0}–{:.0}); unprobed span {:.0} ns",
            s.median, s.min, s.max, base.median
        ),
        method: format!(
            "100k-span burst (tests/targets/burst.c, one thread, pinned to CPU 1) alone vs under `profiler record` (pinned to CPU 0), {rounds} interleaved rounds, median of per-round differences"
        ),
        json: format!(
            "{{\"name\":\"span_probe_ns_per_span\",\"median\":{:.1},\"min\":{:.1},\"max\":{:.1},\"unprobed_ns_per_span\":{:.1}}}",
            s.median, s.min, s.max, base.median
        ),
    });
    rows.push(Row {
        what: "span probe cost, per probe hit".into(),
        value: format!("+{:.0} ns", s.median / 4.0),
        method: "the per-span figure / 4 (each span hits 4 probes)".into(),
        json: format!(
            "{{\"name\":\"span_probe_ns_per_hit\",\"median\":{:.1}}}",
            s.median / 4.0
        ),
    });
    rows.push(Row {
        what: "span events sustained".into(),
        value: format!(
            "{:.2} M events/s, {} events lost in {rounds} × 400k",
            rate.median / 1e6,
            lost
        ),
        method: "probe hits / burst duration under the profiler, default settings".into(),
        json: format!(
            "{{\"name\":\"span_events_per_s\",\"median\":{:.0},\"lost\":{lost}}}",
            rate.median
        ),
    });
    Ok(())
}

/// `--span-fn`: 100k calls of one tiny function alone and with a uprobe+uretprobe pair on it.
fn span_fn_cost(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("fncalls");
    compile(&bin, "fncalls.c", &[])?;
    const CALLS: f64 = 100_000.0;
    let rounds = rounds();
    let (mut alone, mut probed, mut traced, mut lost) = (Vec::new(), Vec::new(), 0.0, 0.0);
    for round in 0..rounds {
        step(&format!("--span-fn: round {}/{rounds}", round + 1));
        let mut t = Target::start(&bin, &[])?;
        t.go()?;
        alone.push(seconds_of(&t.finish()?)?);

        let mut t = Target::start(&bin, &[])?;
        let out = dir.join("fncalls-profile");
        let _ = fs::remove_dir_all(&out);
        let mut p = start_profiler(t.child.id(), &out, &["--span-fn", "traced"])?;
        t.go()?;
        probed.push(seconds_of(&t.finish()?)?);
        p.wait().map_err(|e| e.to_string())?;
        let summary = read_summary(&out)?;
        // The spans object comes after the samples; its `total` counts the calls seen.
        let spans = summary
            .find("\"spans\":")
            .map(|at| &summary[at..])
            .ok_or("summary.json has no spans: --span-fn did not attach")?;
        traced += json_number(spans, "total").unwrap_or(f64::NAN);
        lost += json_number(spans, "lost_events").unwrap_or(f64::NAN);
    }
    let s = stat(
        probed
            .iter()
            .zip(&alone)
            .map(|(p, a)| (p - a) / CALLS * 1e9)
            .collect(),
    );
    let base = stat(alone.iter().map(|a| a / CALLS * 1e9).collect());
    rows.push(Row {
        what: "`--span-fn` cost, per call (uprobe + uretprobe)".into(),
        value: format!(
            "+{:.0} ns (spread {:.0}–{:.0}); unprobed call {:.1} ns; {traced} of {} calls became spans, {lost} events lost",
            s.median,
            s.min,
            s.max,
            base.median,
            CALLS * rounds as f64
        ),
        method: format!(
            "100k calls of a one-multiply function (tests/targets/fncalls.c, one thread, pinned to CPU 1) alone vs under `profiler record --span-fn traced` (pinned to CPU 0), {rounds} interleaved rounds, median of per-round differences / calls"
        ),
        json: format!(
            "{{\"name\":\"span_fn_ns_per_call\",\"median\":{:.1},\"min\":{:.1},\"max\":{:.1},\"unprobed_ns_per_call\":{:.2},\"spans\":{traced},\"calls\":{},\"lost\":{lost}}}",
            s.median,
            s.min,
            s.max,
            base.median,
            CALLS * rounds as f64
        ),
    });
    Ok(())
}

/// Turns on kernel.bpf_stats_enabled for bpftrace's programs (ours enable statistics through
/// their own descriptor) and puts the old value back when dropped.
struct BpfStats {
    old: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Result<Self> {
        let old = fs::read_to_string(BPF_STATS).map_err(|e| format!("{BPF_STATS}: {e}"))?;
        fs::write(BPF_STATS, "1").map_err(|e| format!("{BPF_STATS}: {e}"))?;
        Ok(Self { old })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = fs::write(BPF_STATS, self.old.trim());
    }
}

/// Run time and run count summed over `pid`'s perf_event BPF programs, from the fdinfo of its
/// program descriptors (the kernel keeps them while bpf_stats_enabled is on).
fn prog_stats(pid: u32) -> Result<(f64, f64)> {
    prog_stats_of_type(pid, 7)
}

/// The same for `pid`'s BPF programs of one type (7 perf_event, 5 tracepoint).
fn prog_stats_of_type(pid: u32, prog_type: u32) -> Result<(f64, f64)> {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).map_err(|e| format!("fds of {pid}: {e}"))?;
    let (mut ns, mut runs) = (0.0, 0.0);
    for fd in fds.flatten() {
        let is_prog = fs::read_link(fd.path())
            .is_ok_and(|l| l.as_os_str() == std::ffi::OsStr::new("anon_inode:bpf-prog"));
        if !is_prog {
            continue;
        }
        let Ok(info) = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        )) else {
            continue;
        };
        let field = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(key)?.trim().parse::<f64>().ok())
        };
        // BPF_PROG_TYPE_PERF_EVENT: the sampling program, not BEGIN/END helpers.
        if field("prog_type:") != Some(f64::from(prog_type)) {
            continue;
        }
        ns += field("run_time_ns:").unwrap_or(0.0);
        runs += field("run_cnt:").unwrap_or(0.0);
    }
    if runs == 0.0 {
        return Err(format!(
            "pid {pid} has no BPF program of type {prog_type} with run statistics"
        ));
    }
    Ok((ns, runs))
}

/// `bpftrace` sampling `pid` at `hz` with the stacks `key`, pinned to CPU 0, once its
/// probes are live (BEGIN runs after they are attached).
fn start_bpftrace_sampler(pid: u32, hz: &str, key: &str) -> Result<Child> {
    let prog = format!(
        "BEGIN {{ printf(\"live\\n\"); }} profile:hz:{hz} /pid == {pid}/ {{ @s[{key}] = count(); }} END {{ clear(@s); }}"
    );
    let mut child = Command::new("taskset")
        .args(["-c", "0", "bpftrace", "-e", &prog])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting bpftrace: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    while line.trim() != "live" {
        line.clear();
        if out.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            let _ = child.wait();
            return Err("bpftrace ended before attaching".into());
        }
    }
    // Nothing more is printed but the END probe's empty output; drained all the same.
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
    });
    Ok(child)
}

/// SIGINT every 200 ms until `child` exits (at most 10 s), for a tool that checks for it only
/// when its poll wakes up.
fn interrupt_until_exit(child: &mut Child) -> Result {
    for _ in 0..50 {
        signal(child.id(), sys::SIGINT);
        std::thread::sleep(Duration::from_millis(200));
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Ok(());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(format!("pid {} ignored SIGINT for 10 s", child.id()))
}

/// What `measure_together` measured over its window: each tool's BPF run time and runs,
/// and how much `mark` moved.
struct Together {
    deltas: Vec<(f64, f64)>,
    mark: f64,
}

/// Tools measured at the same time, so that the host's noise falls on each alike: `start(i)`
/// starts tool i (its process, and the type of the BPF programs to read), in an order rotated
/// by `round` (the first may find caches warmer); then `go`, half a second for every
/// program's first runs, and a window of `secs` over which each tool's run time and runs are
/// read from its fdinfo, with `mark` read at both ends. Every tool started is then stopped
/// (SIGINT until it exits), `stopped(i)` called for those that exited.
fn measure_together(
    count: usize,
    round: usize,
    secs: f64,
    mut start: impl FnMut(usize) -> Result<(Child, u32)>,
    go: impl FnOnce() -> Result,
    mark: impl Fn() -> f64,
    mut stopped: impl FnMut(usize),
) -> Result<Together> {
    let mut children: Vec<Option<(Child, u32)>> = (0..count).map(|_| None).collect();
    let mut started = Ok(());
    for k in 0..count {
        let i = (round + k) % count;
        match start(i) {
            Ok(c) => children[i] = Some(c),
            Err(e) => {
                started = Err(e);
                break;
            }
        }
    }
    let measured = started.and_then(|()| {
        go()?;
        let stats = |children: &[Option<(Child, u32)>]| -> Result<Vec<(f64, f64)>> {
            children
                .iter()
                .map(|c| {
                    let (c, kind) = c.as_ref().ok_or("a tool did not start")?;
                    prog_stats_of_type(c.id(), *kind)
                })
                .collect()
        };
        // A program not yet run has no statistics.
        std::thread::sleep(Duration::from_millis(500));
        let (before, mark0) = (stats(&children)?, mark());
        std::thread::sleep(Duration::from_secs_f64(secs));
        let (after, mark1) = (stats(&children)?, mark());
        Ok(Together {
            deltas: before
                .iter()
                .zip(&after)
                .map(|((ns0, n0), (ns1, n1))| (ns1 - ns0, n1 - n0))
                .collect(),
            mark: mark1 - mark0,
        })
    });
    for (i, child) in children.iter_mut().enumerate() {
        if let Some((child, _)) = child
            && interrupt_until_exit(child).is_ok()
        {
            stopped(i);
        }
    }
    measured
}

/// One round of tools measured together: each tool's value, and its ratio to the first's.
fn push_round(values: &mut [Vec<f64>], ratios: &mut [Vec<f64>], measured: &[f64]) {
    let Some(&first) = measured.first() else {
        return;
    };
    for ((v, values), ratios) in measured.iter().zip(values).zip(ratios) {
        values.push(*v);
        ratios.push(v / first);
    }
}

/// One of the samplers measured together in a round of `sampling_cost`.
#[derive(Clone, Copy, PartialEq)]
enum Sampler {
    Ours,
    Before,
    Bpftrace,
    BpftraceKernel,
}

impl Sampler {
    fn start(self, pid: u32, hz: &str, out: &Path) -> Result<Child> {
        let args = ["--frequency", hz];
        match self {
            Sampler::Ours => start_profiler(pid, out, &args),
            Sampler::Before => {
                let bin = before_build().ok_or("BENCH_BEFORE is not set")?;
                start_profiler_bin(&bin, pid, out, &args)
            }
            Sampler::Bpftrace => start_bpftrace_sampler(pid, hz, "ustack"),
            Sampler::BpftraceKernel => start_bpftrace_sampler(pid, hz, "kstack, ustack"),
        }
    }
}

/// The sampler: kernel-side cost per sample of the target, ours, bpftrace's (user stacks; both
/// stacks) and, with BENCH_BEFORE, an earlier build's, all sampling the same target at the same
/// time, so that the machine's noise (±50% between rounds here) falls on each alike and the
/// per-round ratios hold still; and our attach time, at two rates.
fn sampling_cost(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("split");
    compile(&bin, "split.c", &[])?;
    let _stats = BpfStats::enable()?;
    let rounds = rounds();
    const SECS: f64 = 5.0;
    let mut tools = vec![Sampler::Ours, Sampler::Bpftrace, Sampler::BpftraceKernel];
    if before_build().is_some() {
        tools.push(Sampler::Before);
    }
    for hz in ["99", "999"] {
        let rate: f64 = hz.parse().map_err(|_| "rate")?;
        let mut ns: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
        let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
        let mut attach = Vec::new();
        for round in 0..rounds {
            step(&format!(
                "sampling at {hz} Hz: round {}/{rounds}",
                round + 1
            ));
            let t = Target::start(&bin, &["600"])?;
            let pid = t.child.id();
            let outs: Vec<PathBuf> = (0..tools.len())
                .map(|i| dir.join(format!("split-profile-{i}")))
                .collect();
            let measured = measure_together(
                tools.len(),
                round,
                SECS,
                |i| {
                    let _ = fs::remove_dir_all(&outs[i]);
                    tools[i].start(pid, hz, &outs[i]).map(|c| (c, 7))
                },
                || Ok(()),
                || task_cpu_ns(pid),
                |i| {
                    if tools[i] == Sampler::Ours
                        && let Ok(s) = read_summary(&outs[i])
                    {
                        attach.push(json_number(&s, "load_attach_ms").unwrap_or(f64::NAN));
                    }
                },
            )
            .map(|w| {
                // Every tool's CPU clock ticks on the target's CPU at the same rate: its
                // samples are its CPU time in the window × the rate.
                let samples = w.mark / 1e9 * rate;
                w.deltas
                    .iter()
                    .map(|(ns, _)| ns / samples)
                    .collect::<Vec<f64>>()
            });
            t.stop();
            push_round(&mut ns, &mut ratio, &measured?);
        }
        let window = format!(
            "split.c (frame pointers, CPU-bound) pinned to CPU 1; every tool pinned to CPU 0 and sampling it at the same time, started in a rotating order; BPF run time (kernel.bpf_stats_enabled, /proc/PID/fdinfo of each tool's perf_event programs) over the same {SECS} s window / the target's samples in it (its CPU time × rate); a run on another CPU's tick counts against the tool; {rounds} rounds"
        );
        for (i, tool) in tools.iter().enumerate() {
            let n = stat(ns[i].clone());
            let r = stat(ratio[i].clone());
            let (what, name, detail) = match tool {
                Sampler::Ours => (
                    format!("BPF cost per target sample at {hz} Hz"),
                    "bpf_ns_per_sample",
                    format!(
                        "`profiler record --pid N --frequency {hz}`: kernel and user stacks, time, thread, span, one ring-buffer record per sample"
                    ),
                ),
                Sampler::Bpftrace => (
                    format!("bpftrace BPF cost per target sample at {hz} Hz"),
                    "bpftrace_bpf_ns_per_sample",
                    format!(
                        "`bpftrace -e 'profile:hz:{hz} /pid == N/ {{ @s[ustack] = count(); }}'`: user stacks counted in a map, no time or record"
                    ),
                ),
                Sampler::BpftraceKernel => (
                    format!(
                        "bpftrace BPF cost per target sample at {hz} Hz, kernel and user stacks"
                    ),
                    "bpftrace_kstack_bpf_ns_per_sample",
                    format!(
                        "`bpftrace -e 'profile:hz:{hz} /pid == N/ {{ @s[kstack, ustack] = count(); }}'`: both stacks, as ours"
                    ),
                ),
                Sampler::Before => (
                    format!("BPF cost per target sample at {hz} Hz, earlier build (BENCH_BEFORE)"),
                    "before_bpf_ns_per_sample",
                    "the earlier build, same options as ours".to_string(),
                ),
            };
            let value = if *tool == Sampler::Ours {
                format!("{} ns", n.show(0))
            } else {
                format!("{} ns; ×{} of ours (per-round ratio)", n.show(0), r.show(3))
            };
            rows.push(Row {
                what,
                value,
                method: format!("{detail}; {window}"),
                json: format!(
                    "{{\"name\":\"{name}\",\"hz\":{hz},{},{}}}",
                    n.json("ns_per_sample"),
                    r.json("ratio_to_ours")
                ),
            });
        }
        let a = stat(attach);
        rows.push(Row {
            what: format!("load + attach at {hz} Hz"),
            value: format!("{:.1} ms (spread {:.1}–{:.1})", a.median, a.min, a.max),
            method: "from loading the eBPF object to the last perf event attached (2 CPUs)".into(),
            json: format!(
                "{{\"name\":\"load_attach_ms\",\"hz\":{hz},\"median\":{:.2},\"min\":{:.2},\"max\":{:.2}}}",
                a.median, a.min, a.max
            ),
        });
    }
    Ok(())
}

/// Runs `cmd`, which ends by running the workload; returns the CPU and wall seconds the
/// workload reported for itself.
fn workload_cpu(cmd: &mut Command) -> Result<(f64, f64)> {
    let out = cmd
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |key: &str| printed_value(&text, key).ok();
    match (value("cpu_s"), value("wall_s")) {
        (Some(c), Some(w)) => Ok((c, w)),
        _ => Err(format!("{cmd:?} printed no cpu_s/wall_s: {text}")),
    }
}

/// Target slowdown and per-sample cost against perf and bpftrace, same workload, same rates.
/// One thread: the workload runs pinned to CPU 1, each profiler on CPU 0. Two threads: nothing
/// is pinned, the workload takes both CPUs and every tool competes with it, as on a busy
/// machine. Per round every variant runs once, in the same order, so drift hits all alike.
fn slowdown(dir: &Path, rows: &mut Vec<Row>, threads: u32, rates: &[&str]) -> Result {
    let work = dir.join("work");
    compile(&work, "work.c", &[])?;
    let pinned = threads == 1;
    let work_args = format!("{} {threads} 300", work.display());
    let work_cmd = if pinned {
        format!("taskset -c 1 {work_args}")
    } else {
        work_args.clone()
    };
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    let tools: Vec<&str> = ["profiler", "perf", "bpftrace"]
        .into_iter()
        .filter(|t| *t == "profiler" || have(t))
        .collect();
    let rounds = rounds();
    // (tool, rate) → per round ((cpu, wall) under tool, (cpu, wall) alone in the same round).
    type Rounds = Vec<((f64, f64), (f64, f64))>;
    let mut results: Vec<((String, String), Rounds)> = Vec::new();
    for round in 0..rounds {
        step(&format!(
            "slowdown, {threads} thread(s): round {}/{rounds}",
            round + 1
        ));
        for tool in &tools {
            for &hz in rates {
                let program = match *tool {
                    "profiler" => profiler_bin().into_os_string(),
                    t => t.into(),
                };
                let mut cmd = if pinned {
                    let mut c = Command::new("taskset");
                    // bpftrace aggregates in the kernel and idles in userspace until the end;
                    // it runs on the workload's CPU because it refuses `taskset` as its -c
                    // command, and its child inherits its CPU.
                    c.args(["-c", if *tool == "bpftrace" { "1" } else { "0" }])
                        .arg(program);
                    c
                } else {
                    Command::new(program)
                };
                match *tool {
                    "profiler" => {
                        cmd.args(["run", "--quiet", "--frequency", hz, "--output"])
                            .arg(dir.join("slowdown-profile"))
                            .args(["--", "sh", "-c", &work_cmd]);
                    }
                    "perf" => {
                        cmd.args(["record", "-q", "-g", "-F", hz, "-o"])
                            .arg(dir.join("perf.data"))
                            .args(["--", "sh", "-c", &work_cmd]);
                    }
                    _ => {
                        let prog = format!(
                            "profile:hz:{hz} /pid == cpid/ {{ @[ustack] = count(); }} END {{ clear(@); }}"
                        );
                        cmd.args(["-q", "-e", &prog, "-c", &work_args]);
                    }
                }
                // Each measured run has its own baseline right beside it, alternately before
                // and after, so drift and warm-up do not favour either side.
                let alone = || workload_cpu(Command::new("sh").args(["-c", &work_cmd]));
                let (under, alone) = if round % 2 == 0 {
                    let a = alone()?;
                    (workload_cpu(&mut cmd)?, a)
                } else {
                    let c = workload_cpu(&mut cmd)?;
                    (c, alone()?)
                };
                let key = (tool.to_string(), hz.to_string());
                match results.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push((under, alone)),
                    None => results.push((key, vec![(under, alone)])),
                }
            }
        }
    }
    for ((tool, hz), v) in &results {
        let hz_f: f64 = hz.parse().unwrap_or(1.0);
        let ratio = stat(v.iter().map(|((c, _), (a, _))| c / a).collect());
        let wall = stat(v.iter().map(|((_, w), (_, a))| w / a).collect());
        // Samples ≈ rate × CPU time of the target, whatever its thread count.
        let us = stat(
            v.iter()
                .map(|((c, _), (a, _))| (c - a) / (hz_f * a) * 1e6)
                .collect(),
        );
        let tool_text = match tool.as_str() {
            "profiler" => "`profiler run`",
            "perf" => "`perf record -g` (frame pointers)",
            _ => "`bpftrace profile:hz ustack`",
        };
        let (what, placement) = if pinned {
            (
                format!("slowdown under {tool} at {hz} Hz"),
                "tests/targets/work.c (fixed work, 1 thread, its own getrusage CPU time) pinned to CPU 1, the tool on CPU 0",
            )
        } else {
            (
                format!("slowdown, 2 threads, under {tool} at {hz} Hz"),
                "tests/targets/work.c with 2 threads (fixed work, its own getrusage CPU time of both threads), nothing pinned: the workload fills both CPUs and the tool competes with it, so the tool's own CPU shows in wall time, not in CPU time",
            )
        };
        rows.push(Row {
            what,
            value: format!(
                "×{:.3} CPU time (spread {:.3}–{:.3}); ×{:.3} wall (spread {:.3}–{:.3}); {:.1} µs per sample (spread {:.1}–{:.1})",
                ratio.median, ratio.min, ratio.max, wall.median, wall.min, wall.max, us.median, us.min, us.max
            ),
            method: format!(
                "{placement}; ratio to an unprofiled run right beside it (alternately before and after); µs/sample = extra CPU / (rate × unprofiled CPU); {rounds} interleaved rounds; tool = {tool_text}"
            ),
            json: format!(
                "{{\"name\":\"slowdown\",\"threads\":{threads},\"tool\":\"{tool}\",\"hz\":{hz},\"ratio_median\":{:.4},\"ratio_min\":{:.4},\"ratio_max\":{:.4},{},\"us_per_sample_median\":{:.2},\"us_per_sample_min\":{:.2},\"us_per_sample_max\":{:.2}}}",
                ratio.median,
                ratio.min,
                ratio.max,
                wall.json("wall_ratio"),
                us.median,
                us.min,
                us.max
            ),
        });
    }
    Ok(())
}

/// `record --all` on a busy machine beside `perf record -a -g`, same rate and duration: the
/// tool's CPU, peak RSS and (ours) BPF time per program run.
fn all_cost(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("threads");
    compile(&bin, "threads.c", &[])?;
    let secs: f64 = if quick() { 10.0 } else { 60.0 };
    let hz = "99";
    let duration = secs.to_string();
    let target = threads_target(&bin, 2.0 * secs + 20.0)?;
    // Ours first, perf second, on the same busy machine (both CPUs spinning).
    step(&format!("--all cost: profiler, {secs} s at {hz} Hz"));
    let out = dir.join("all-profile");
    let _ = fs::remove_dir_all(&out);
    let mut cmd = Command::new(profiler_bin());
    cmd.args([
        "record",
        "--all",
        "--quiet",
        "--frequency",
        hz,
        "--duration",
        &duration,
        "--output",
    ])
    .arg(&out);
    let (child, live) = spawn_recording(cmd)?;
    std::thread::sleep(Duration::from_secs_f64(secs - 0.5).saturating_sub(live.elapsed()));
    let (bpf_ns, bpf_runs) = prog_stats(child.id())?;
    let ours = wait_usage(&child)?;
    if !ours.success {
        return Err("profiler record --all failed".into());
    }
    let samples = json_number(&read_summary(&out)?, "recorded").unwrap_or(f64::NAN);
    step(&format!("--all cost: perf, {secs} s at {hz} Hz"));
    let data = dir.join("all-perf.data");
    let perf = Command::new("perf")
        .args(["record", "-q", "-a", "-g", "-F", hz, "-o"])
        .arg(&data)
        .args(["--", "sleep", &duration])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("perf: {e}"))?;
    let theirs = wait_usage(&perf)?;
    target.stop();
    let pct = |cpu: f64| cpu / secs * 100.0;
    rows.push(Row {
        what: format!("`record --all`, {secs:.0} s at {hz} Hz on a busy machine, beside `perf record -a -g`"),
        value: format!(
            "ours: {:.2} s CPU ({:.2}% of one CPU, outputs included), peak RSS {:.0} MB, {:.0} ns of BPF per program run, {samples:.0} samples; perf: {:.2} s CPU ({:.2}%), peak RSS {:.0} MB",
            ours.cpu_s,
            pct(ours.cpu_s),
            ours.max_rss_mb,
            bpf_ns / bpf_runs.max(1.0),
            theirs.cpu_s,
            pct(theirs.cpu_s),
            theirs.max_rss_mb
        ),
        method: format!(
            "tests/targets/threads.c spinning on both CPUs; `profiler record --all --frequency {hz} --duration {secs:.0}` then `perf record -a -g -F {hz} -- sleep {secs:.0}`, one after the other; CPU = utime+stime and ru_maxrss from wait4 (ours includes symbolizing and writing every output; perf's only recording); BPF time from the perf_event program's fdinfo (kernel.bpf_stats_enabled) 0.5 s before the end; one run each"
        ),
        json: format!(
            "{{\"name\":\"all_cost\",\"hz\":{hz},\"seconds\":{secs},\"ours_cpu_s\":{},\"ours_peak_rss_mb\":{},\"ours_bpf_ns_per_run\":{},\"perf_cpu_s\":{},\"perf_peak_rss_mb\":{}}}",
            num(ours.cpu_s),
            num(ours.max_rss_mb),
            num(bpf_ns / bpf_runs.max(1.0)),
            num(theirs.cpu_s),
            num(theirs.max_rss_mb)
        ),
    });
    Ok(())
}

/// A parallel C build: 40 generated files of 60 functions each (5 rounds fit the budget), `make -j2`.
fn write_build(src: &Path) -> Result {
    let _ = fs::remove_dir_all(src);
    fs::create_dir_all(src).map_err(|e| format!("{}: {e}", src.display()))?;
    let mut objs = Vec::new();
    for f in 0..40 {
        let mut c = String::new();
        for i in 0..60 {
            c += &format!(
                "int f{f}_{i}(int *a, int n) {{ int s = {i}; for (int j = 0; j < n; j++) {{ s += a[j] * {i} ^ (s >> 3); if (s % 7 == {f} % 7) s -= a[(j + {i}) % n]; }} return s; }}\n"
            );
        }
        let name = format!("f{f}.c");
        fs::write(src.join(&name), c).map_err(|e| format!("{name}: {e}"))?;
        objs.push(format!("f{f}.o"));
    }
    let makefile = format!("all: {}\n%.o: %.c\n\tcc -O2 -c $< -o $@\n", objs.join(" "));
    fs::write(src.join("Makefile"), makefile).map_err(|e| format!("Makefile: {e}"))
}

/// Shares of samples with a frame in no known mapping (`[unknown]` module: the process's
/// address space was not known when it was symbolized) and with a frame without a function
/// name (that, or code without symbols: `module+0xOFFSET` in ours, `[unknown]` in perf).
fn unnamed_shares(stacks: &[(Vec<(String, bool)>, u64)]) -> (f64, f64) {
    let total = stacks.iter().map(|(_, n)| n).sum::<u64>().max(1) as f64;
    let share = |bad: &dyn Fn(&(String, bool)) -> bool| {
        let n: u64 = stacks
            .iter()
            .filter(|(frames, _)| frames.iter().any(bad))
            .map(|(_, n)| n)
            .sum();
        n as f64 / total
    };
    (
        share(&|(_, module_known)| !module_known),
        share(&|(name, module_known)| {
            !module_known || name.contains("[unknown]") || name.contains("+0x")
        }),
    )
}

/// Our folded stacks: a frame `[unknown]` is one no mapping explains.
fn our_stacks(folded: &str) -> Vec<(Vec<(String, bool)>, u64)> {
    folded
        .lines()
        .filter_map(|l| {
            let (stack, n) = l.rsplit_once(' ')?;
            let frames = stack
                .split(';')
                .map(|f| (f.to_string(), f != "[unknown]"))
                .collect();
            Some((frames, n.parse().ok()?))
        })
        .collect()
}

/// `perf script -F comm,ip,sym,dso` blocks (one per sample: a header line, then frames
/// "ADDR SYMBOL (DSO)", leaf first) as stacks.
fn perf_stacks(script: &str) -> Vec<(Vec<(String, bool)>, u64)> {
    script
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(|block| {
            let frames = block
                .lines()
                .skip(1)
                .map(|l| {
                    let mut f = l.split_whitespace();
                    let _addr = f.next();
                    let sym = f.next().unwrap_or("[unknown]").to_string();
                    let dso_known = !l.trim_end().ends_with("([unknown])");
                    (sym, dso_known)
                })
                .collect();
            (frames, 1)
        })
        .collect()
}

/// Naming in a parallel build (issue: every process named, however briefly it lives):
/// `profiler run -- make -j2` against `perf record --call-graph dwarf` on the same build.
fn build_naming(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let src = dir.join("build-src");
    // A round is two full builds under DWARF profilers (about 2.5 min here): 3 of them.
    let rounds = rounds().min(3);
    let hz = "499";
    let (mut ours, mut perf) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        step(&format!("build naming: round {}/{rounds}", round + 1));
        for tool in if round % 2 == 0 {
            ["profiler", "perf"]
        } else {
            ["perf", "profiler"]
        } {
            write_build(&src)?;
            if tool == "profiler" {
                let out = dir.join("build-profile");
                let _ = fs::remove_dir_all(&out);
                run(Command::new(profiler_bin())
                    .args([
                        "run",
                        "--quiet",
                        "--call-graph",
                        "dwarf",
                        "--frequency",
                        hz,
                        "--output",
                    ])
                    .arg(&out)
                    .args(["--", "make", "-s", "-j2", "-C"])
                    .arg(&src))?;
                let folded = fs::read_to_string(out.join("profile.folded"))
                    .map_err(|e| format!("profile.folded: {e}"))?;
                ours.push(unnamed_shares(&our_stacks(&folded)));
            } else {
                let data = dir.join("build-perf.data");
                run(Command::new("perf")
                    .args(["record", "-q", "--call-graph", "dwarf", "-F", hz, "-o"])
                    .arg(&data)
                    .args(["--", "make", "-s", "-j2", "-C"])
                    .arg(&src)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()))?;
                let script = quiet_output(
                    Command::new("perf")
                        .args(["script", "-F", "comm,ip,sym,dso", "-i"])
                        .arg(&data),
                )?;
                perf.push(unnamed_shares(&perf_stacks(&script)));
            }
        }
    }
    let pct = |v: &[(f64, f64)], second: bool| {
        stat(
            v.iter()
                .map(|&(a, b)| 100.0 * if second { b } else { a })
                .collect(),
        )
    };
    let (om, pm, os, ps) = (
        pct(&ours, false),
        pct(&perf, false),
        pct(&ours, true),
        pct(&perf, true),
    );
    rows.push(Row {
        what: "samples with a frame in no known mapping / with a nameless frame, `make -j2` of 40 C files".into(),
        value: format!(
            "no mapping: ours {} %, perf {} %; nameless: ours {} %, perf {} %",
            om.show(1),
            pm.show(1),
            os.show(1),
            ps.show(1)
        ),
        method: format!(
            "`profiler run --call-graph dwarf -F {hz} -- make -j2` vs `perf record --call-graph dwarf -F {hz} -- make -j2`, the build written afresh before each, {rounds} interleaved rounds. No mapping: a frame `[unknown]` (ours) or DSO `[unknown]` (perf). Nameless: that, or a frame with no function name (`module+0xOFFSET` in ours, `[unknown]` symbol in perf); Debian's cc1 is stripped, so most samples of the build are nameless in both"
        ),
        json: format!(
            "{{\"name\":\"build_naming\",{},{},{},{}}}",
            om.json("ours_no_mapping_pct"),
            pm.json("perf_no_mapping_pct"),
            os.json("ours_nameless_pct"),
            ps.json("perf_nameless_pct")
        ),
    });
    Ok(())
}

/// Short processes (issue: every process named, however briefly it lives): 300 fork + execs
/// of 5 to 20 ms of CPU each from a shell, the share of their samples whose stack reaches
/// `main`, ours beside `perf record -g` at the same rate; and what each tool costs every child
/// before its main (issue 17: the kernel's wakeups of a tool are charged to the process that
/// caused them), with no tool as the baseline. `BENCH_BASE_PROFILER=PATH` adds another
/// profiler binary (a build of the base commit) to the same interleaved rounds.
fn short_processes(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("short-bench");
    crate::compile_c(&bin, "short.c", &[])?;
    let count = if quick() { 60 } else { 300 };
    // Each child appends its main's CPU span (SHORT_TIMES); `times` then gives the CPU of all
    // the children: their ratio is the most any tool can find under main in that run.
    let times = dir.join("short-times");
    let children = dir.join("short-children");
    // Written by the workload's first command: the tool's start-up is over by then.
    let started = dir.join("short-started");
    let script = format!(
        ": > {}; export SHORT_TIMES={}; i=0; while [ $i -lt {count} ]; do {} $((5 + i % 16)); i=$((i+1)); done; times > {}",
        started.display(),
        times.display(),
        bin.display(),
        children.display()
    );
    let comm = "short-bench";
    let hz = "999";
    let rounds = rounds();
    let base = std::env::var_os("BENCH_BASE_PROFILER")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    if let Some(b) = &base
        && !b.is_file()
    {
        return Err(format!(
            "BENCH_BASE_PROFILER={}: no such file (build the base commit's profiler there, or unset it)",
            b.display()
        ));
    }
    let mut tools = vec![Tool::None, Tool::Profiler(profiler_bin())];
    if let Some(b) = base.clone() {
        tools.push(Tool::Base(b));
    }
    tools.push(Tool::Perf);
    // Of the program's samples (those its name roots), the share through main.
    let through_main = |stacks: &[(String, Vec<String>, u64)]| {
        let mine = stacks.iter().filter(|(c, _, _)| c == comm);
        let (mut all, mut main) = (0u64, 0u64);
        for (_, frames, n) in mine {
            all += n;
            if frames.iter().any(|f| f == "main") {
                main += n;
            }
        }
        100.0 * main as f64 / all.max(1) as f64
    };
    // Per tool (in `tools` order), one entry per round.
    let mut shares: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    let mut ceilings: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    let mut before_main: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    let mut tool_cpu: Vec<Vec<(f64, f64)>> = vec![Vec::new(); tools.len()];
    for round in 0..rounds {
        step(&format!("short processes: round {}/{rounds}", round + 1));
        // Interleaved, each tool first in turn.
        let mut order: Vec<usize> = (0..tools.len()).collect();
        order.rotate_left(round % tools.len());
        for i in order {
            let tool = &tools[i];
            for f in [&times, &children, &started] {
                let _ = fs::remove_file(f);
            }
            let out = dir.join("short-profile");
            let data = dir.join("short-perf.data");
            let _ = fs::remove_dir_all(&out);
            let mut cmd = match tool {
                Tool::None => Command::new("sh"),
                Tool::Profiler(p) | Tool::Base(p) => {
                    let mut c = Command::new(p);
                    c.args(["run", "--quiet", "--frequency", hz, "--output"])
                        .arg(&out)
                        .args(["--", "sh"]);
                    c
                }
                Tool::Perf => {
                    let mut c = Command::new("perf");
                    c.args(["record", "-q", "-g", "-F", hz, "-o"])
                        .arg(&data)
                        .args(["--", "sh"]);
                    c
                }
            };
            cmd.args(["-c", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let cpu = watch_tool_cpu(cmd, &started, &children)?;
            if !matches!(tool, Tool::None) {
                tool_cpu[i].push(cpu);
            }
            before_main[i].push(median_cpu_before_main_us(&times)?);
            let stacks = match tool {
                Tool::None => continue,
                Tool::Profiler(_) | Tool::Base(_) => {
                    let folded = fs::read_to_string(out.join("profile.folded"))
                        .map_err(|e| format!("profile.folded: {e}"))?;
                    folded
                        .lines()
                        .filter_map(|l| {
                            let (stack, n) = l.rsplit_once(' ')?;
                            let mut frames = stack.split(';').map(str::to_string);
                            let root = frames.next()?;
                            Some((root, frames.collect(), n.parse().ok()?))
                        })
                        .collect::<Vec<(String, Vec<String>, u64)>>()
                }
                Tool::Perf => {
                    let text = quiet_output(
                        Command::new("perf")
                            .args(["script", "-F", "comm,ip,sym", "-i"])
                            .arg(&data),
                    )?;
                    // Blocks: a header line starting with the comm, then one `ADDR SYM` per
                    // frame.
                    text.split("\n\n")
                        .filter_map(|block| {
                            let mut lines = block.lines().filter(|l| !l.trim().is_empty());
                            let comm = lines.next()?.split_whitespace().next()?.to_string();
                            let frames = lines
                                .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
                                .collect();
                            Some((comm, frames, 1))
                        })
                        .collect()
                }
            };
            shares[i].push(through_main(&stacks));
            ceilings[i].push(share_in_main(&times, &children)?);
        }
    }
    let index = |name: &str| tools.iter().position(|t| t.name() == name);
    let share_of = |name: &str| {
        index(name).map_or(String::new(), |i| {
            format!(
                "{} {} % (ceiling {} %)",
                name,
                stat(shares[i].clone()).show(1),
                stat(ceilings[i].clone()).show(1)
            )
        })
    };
    let measured: Vec<&str> = ["ours", "base", "perf"]
        .into_iter()
        .filter(|&n| index(n).is_some())
        .collect();
    rows.push(Row {
        what: format!("samples of {count} short processes (5-20 ms each, fork + exec) whose stack reaches main"),
        value: measured.iter().map(|&n| share_of(n)).collect::<Vec<_>>().join(", "),
        method: format!(
            "`profiler run -F {hz} -- sh -c LOOP` vs `perf record -g -F {hz} -- sh -c LOOP`{}, tests/targets/short.c with frame pointers, {rounds} interleaved rounds; of the samples named after the program (perf: its COMM at the sample), the share with `main` in the stack. What is not under main is the exec, the dynamic loader and exit: the ceiling is the share of the children's CPU time (the shell's `times`) spent inside main by their own CPU clocks, in the same run",
            if base.is_some() { " (base: BENCH_BASE_PROFILER)" } else { "" }
        ),
        json: format!(
            "{{\"name\":\"short_processes\",{}}}",
            measured
                .iter()
                .filter_map(|&n| index(n).map(|i| format!(
                    "{},{}",
                    stat(shares[i].clone()).json(&format!("{n}_through_main_pct")),
                    stat(ceilings[i].clone()).json(&format!("{n}_ceiling_pct"))
                )))
                .collect::<Vec<_>>()
                .join(",")
        ),
    });
    // The cost before main, as the ratio to no tool in the same round, and the tool's own CPU.
    let none = index("none")
        .map(|i| before_main[i].clone())
        .unwrap_or_default();
    let mut value = format!("none {} µs", stat(none.clone()).show(0));
    let mut json = format!(
        "{{\"name\":\"short_processes_cpu_before_main\",\"children\":{count},\"rounds\":{rounds},{}",
        stat(none.clone()).json("none_us")
    );
    for &n in &measured {
        let Some(i) = index(n) else { continue };
        let ratios: Vec<f64> = before_main[i]
            .iter()
            .zip(&none)
            .map(|(t, b)| t / b)
            .collect();
        let per_child: Vec<f64> = tool_cpu[i]
            .iter()
            .map(|(cpu, _)| cpu / count as f64 * 1e6)
            .collect();
        let pct: Vec<f64> = tool_cpu[i].iter().map(|(_, pct)| *pct).collect();
        value.push_str(&format!(
            "; {n} {} µs ({}× none; the tool's own CPU {} µs per child, {} % of a CPU)",
            stat(before_main[i].clone()).show(0),
            stat(ratios.clone()).show(3),
            stat(per_child.clone()).show(0),
            stat(pct.clone()).show(1)
        ));
        json.push_str(&format!(
            ",{},{},{},{}",
            stat(before_main[i].clone()).json(&format!("{n}_us")),
            stat(ratios).json(&format!("{n}_ratio")),
            stat(per_child).json(&format!("{n}_own_cpu_us_per_child")),
            stat(pct).json(&format!("{n}_own_cpu_pct"))
        ));
    }
    json.push('}');
    rows.push(Row {
        what: format!("CPU each of {count} short processes spends before its main"),
        value,
        method: format!(
            "the same runs as the row above, plus the loop with no tool, all interleaved ({rounds} rounds, each tool first in turn): per run the median over the children of the process CPU clock at main's entry (short.c's SHORT_TIMES `cpu_enter`: fork, exec, loader, and every kernel wakeup of a tool charged to the child), then the median (spread) of the runs, and of each run's ratio to the no-tool run of its round. The tool's own CPU: run time of its threads (/proc/PID/task/*/schedstat) from the workload's first command to its last, per child and as a share of that wall time"
        ),
        json,
    });
    Ok(())
}

/// A tool the short-process bench runs the workload under.
enum Tool {
    None,
    Profiler(PathBuf),
    Base(PathBuf),
    Perf,
}

impl Tool {
    fn name(&self) -> &'static str {
        match self {
            Tool::None => "none",
            Tool::Profiler(_) => "ours",
            Tool::Base(_) => "base",
            Tool::Perf => "perf",
        }
    }
}

/// Runs `cmd` to its end; returns the CPU its own threads ran between the moments `started`
/// and `ended` appeared (s), and that as a share of the wall time between them (%). Polled
/// every 10 ms: the error is a few ms of a tool's CPU over seconds of workload.
fn watch_tool_cpu(mut cmd: Command, started: &Path, ended: &Path) -> Result<(f64, f64)> {
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let pid = child.id();
    let (mut from, mut to) = (None, None);
    let status = loop {
        if from.is_none() && started.exists() {
            from = Some((Instant::now(), task_cpu_ns(pid)));
        }
        if to.is_none() && ended.exists() {
            to = Some((Instant::now(), task_cpu_ns(pid)));
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    };
    if !status.success() {
        return Err(format!("{cmd:?} failed: {status}"));
    }
    Ok(match (from, to) {
        (Some((t0, c0)), Some((t1, c1))) => {
            let cpu = (c1 - c0) / 1e9;
            (cpu, 100.0 * cpu / (t1 - t0).as_secs_f64().max(1e-9))
        }
        _ => (f64::NAN, f64::NAN),
    })
}

/// The median over the children of their CPU before main (µs): short.c's `cpu_enter`, the
/// fourth field of each SHORT_TIMES line.
fn median_cpu_before_main_us(times: &Path) -> Result<f64> {
    let lines = fs::read_to_string(times).map_err(|e| format!("{}: {e}", times.display()))?;
    let v: Vec<f64> = lines
        .lines()
        .filter_map(|l| l.split(' ').nth(3)?.parse::<f64>().ok())
        .map(|ns| ns / 1e3)
        .collect();
    if v.is_empty() {
        return Err(format!("{}: no child wrote its times", times.display()));
    }
    Ok(stat(v).median)
}

/// The share of the children's CPU time spent in main: the sum of what each child measured
/// between main's entry and exit (short.c's SHORT_TIMES lines, ns) over the children's
/// user + system time the shell's `times` printed (its second line, `XmY.YYYs XmY.YYYs`).
fn share_in_main(times: &Path, children: &Path) -> Result<f64> {
    let lines = fs::read_to_string(times).map_err(|e| format!("{}: {e}", times.display()))?;
    let in_main_ns: f64 = lines
        .lines()
        .filter_map(|l| {
            let f: Vec<f64> = l.split(' ').filter_map(|x| x.parse().ok()).collect();
            Some(f.get(4)? - f.get(3)?)
        })
        .sum();
    let text = fs::read_to_string(children).map_err(|e| format!("{}: {e}", children.display()))?;
    let seconds = |t: &str| -> Option<f64> {
        let (m, s) = t.trim_end_matches('s').split_once('m')?;
        Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
    };
    let total: f64 = text
        .lines()
        .nth(1)
        .ok_or_else(|| format!("{}: no children line", children.display()))?
        .split_whitespace()
        .filter_map(seconds)
        .sum();
    if total <= 0.0 {
        return Err(format!(
            "{}: no CPU time for the children",
            children.display()
        ));
    }
    Ok(100.0 * in_main_ns / 1e9 / total)
}

/// A command's stdout; its stderr is dropped (bpftrace warns about RLIMIT_MEMLOCK each run).
fn quiet_output(cmd: &mut Command) -> Result<String> {
    crate::stdout_of(cmd.stderr(Stdio::null()))
}

enum Pb<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Calls `f` with each field of a protobuf message; None when the bytes are malformed.
fn pb_walk<'a>(mut buf: &'a [u8], mut f: impl FnMut(u64, Pb<'a>)) -> Option<()> {
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let value = match key & 7 {
            0 => Pb::Varint(varint(&mut buf)?),
            1 => {
                buf = buf.get(8..)?;
                Pb::Fixed
            }
            2 => {
                let n = usize::try_from(varint(&mut buf)?).ok()?;
                let (bytes, rest) = buf.split_at_checked(n)?;
                buf = rest;
                Pb::Bytes(bytes)
            }
            5 => {
                buf = buf.get(4..)?;
                Pb::Fixed
            }
            _ => return None,
        };
        f(key >> 3, value);
    }
    Some(())
}

/// From a recording.pb: when the probes went live (meta.start_boottime_ns) and the earliest
/// sample's timestamp, both CLOCK_BOOTTIME. A hand-rolled protobuf walk keeps xtask free of
/// dependencies; the field numbers are those of profiler-user/src/model.rs (Recording.meta = 2,
/// Meta.start_boottime_ns = 4, Recording.samples = 8, Sample.timestamp_ns = 1).
fn recording_times(bytes: &[u8]) -> Option<(u64, u64)> {
    // Past the header of profiler-user/src/outputs/recording.rs: magic, then format version,
    // payload length and CRC-32 (16 bytes), which the profiler itself has checked.
    let body = bytes.strip_prefix(b"\x89PRFREC\n")?.get(16..)?;
    let (mut start, mut first): (Option<u64>, Option<u64>) = (None, None);
    let mut ok = true;
    pb_walk(body, |field, value| match (field, value) {
        (2, Pb::Bytes(meta)) => {
            ok &= pb_walk(meta, |f, v| {
                if let (4, Pb::Varint(ns)) = (f, v) {
                    start = Some(ns);
                }
            })
            .is_some();
        }
        (8, Pb::Bytes(sample)) => {
            ok &= pb_walk(sample, |f, v| {
                if let (1, Pb::Varint(ns)) = (f, v) {
                    first = Some(first.map_or(ns, |m| m.min(ns)));
                }
            })
            .is_some();
        }
        _ => {}
    })?;
    if !ok {
        return None;
    }
    Some((start?, first?))
}

/// Command start to first sample, for us, perf and bpftrace on a target already busy on both
/// CPUs. Each tool's first sample is compared with the clock it stamps samples with.
fn attach_latency(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("threads");
    compile(&bin, "threads.c", &[])?;
    let rounds = rounds();
    let mut t = Command::new(&bin);
    t.arg("300");
    let target = Target::spawn(t)?;
    let pid = target.pid();
    let ms = |from: u64, to: u64| (to as f64 - from as f64) / 1e6;
    for hz in ["99", "999"] {
        let (mut ours, mut live, mut perf, mut bt) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            step(&format!(
                "attach latency at {hz} Hz: round {}/{rounds}",
                round + 1
            ));
            let out = dir.join("attach-profile");
            let _ = fs::remove_dir_all(&out);
            let mut cmd = record_cmd(&pid, &out, &["--frequency", hz, "--duration", "500ms"]);
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
            let t0 = clock_ns(sys::CLOCK_BOOTTIME);
            run(&mut cmd)?;
            let rec = fs::read(out.join("recording.pb"))
                .map_err(|e| format!("{}: {e}", out.display()))?;
            let (start, first) =
                recording_times(&rec).ok_or("recording.pb: no samples or not readable")?;
            ours.push(ms(t0, first));
            live.push(ms(t0, start));

            let data = dir.join("attach-perf.data");
            let t0 = clock_ns(sys::CLOCK_BOOTTIME);
            run(Command::new("perf")
                .args(["record", "-q", "-k", "boottime", "-g", "-F", hz, "-o"])
                .arg(&data)
                .args(["-p", &pid, "--", "sleep", "0.5"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()))?;
            let times = quiet_output(
                Command::new("perf")
                    .args(["script", "-F", "time", "--ns", "-i"])
                    .arg(&data),
            )?;
            let first = times
                .lines()
                .filter_map(|l| l.trim().trim_end_matches(':').parse::<f64>().ok())
                .min_by(|a, b| a.total_cmp(b))
                .ok_or("perf script printed no sample time")?;
            perf.push((first * 1e9 - t0 as f64) / 1e6);

            // bpftrace's nsecs is CLOCK_MONOTONIC.
            let prog = format!(
                "profile:hz:{hz} /pid == {pid}/ {{ printf(\"first %llu\\n\", nsecs); exit(); }}"
            );
            let t0 = clock_ns(sys::CLOCK_MONOTONIC);
            let printed = quiet_output(Command::new("bpftrace").args(["-e", &prog]))?;
            let first: u64 = printed
                .lines()
                .find_map(|l| l.strip_prefix("first ")?.trim().parse().ok())
                .ok_or_else(|| format!("bpftrace printed {printed:?}"))?;
            bt.push(ms(t0, first));
        }
        let (o, l, p, b) = (stat(ours), stat(live), stat(perf), stat(bt));
        rows.push(Row {
            what: format!("attach latency (command start to first sample) at {hz} Hz"),
            value: format!(
                "profiler {} ms (probes live after {} ms); perf record -g {} ms; bpftrace {} ms",
                o.show(1),
                l.show(1),
                p.show(1),
                b.show(1)
            ),
            method: format!(
                "target tests/targets/threads.c already spinning on both CPUs, nothing pinned; clock read just before spawning `profiler record --pid` / `perf record -k boottime -g -p` / `bpftrace -e 'profile:hz:{hz} /pid == PID/ {{ printf(nsecs); exit() }}'`, compared with the earliest sample's timestamp (recording.pb, `perf script -F time`, bpftrace's nsecs; CLOCK_BOOTTIME, CLOCK_BOOTTIME, CLOCK_MONOTONIC); includes up to one sampling period (1/{hz} s) of waiting for the first tick; {rounds} rounds"
            ),
            json: format!(
                "{{\"name\":\"attach_latency_ms\",\"hz\":{hz},{},{},{},{}}}",
                o.json("profiler"),
                l.json("profiler_live"),
                p.json("perf"),
                b.json("bpftrace")
            ),
        });
    }
    target.stop();
    Ok(())
}

/// Issue 17: from the exec of `profiler record --pid N` to its "recording" line, plainly and
/// with --off-cpu, and bpftrace's time to its probes attached, in the same rounds, on an idle
/// target without span probes (it waits for a line on stdin, so nothing but the start-ups is
/// measured).
fn startup_time(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("spanfn");
    compile(&bin, "spanfn.c", &["-lpthread"])?;
    let rounds = rounds();
    let target = Target::start(&bin, &[])?;
    let pid = target.pid();
    let out = dir.join("startup-profile");
    let ms = |from: u64, to: u64| (to as f64 - from as f64) / 1e6;
    let (mut plain, mut off_cpu, mut bt) = (Vec::new(), Vec::new(), Vec::new());
    // With BENCH_BEFORE, the earlier build's default start-up in the same rounds.
    let before = before_build();
    let mut earlier = Vec::new();
    // bpftrace attaches its probes in the order of the program: the interval probe's first
    // run (1 ms after it is attached, stamped with nsecs, CLOCK_MONOTONIC) bounds the moment
    // the profile probe was attached from above, by 1 ms at most.
    let prog = format!(
        "profile:hz:99 /pid == {pid}/ {{ @n = count(); }} interval:ms:1 {{ printf(\"attached %llu\\n\", nsecs); exit(); }}"
    );
    for round in 0..rounds {
        step(&format!("start-up time: round {}/{rounds}", round + 1));
        let now = profiler_bin();
        let mut runs = vec![
            (&now, &[][..], &mut plain),
            (&now, &["--off-cpu"][..], &mut off_cpu),
        ];
        if let Some(b) = &before {
            runs.push((b, &[][..], &mut earlier));
        }
        for (bin, args, into) in runs {
            let _ = fs::remove_dir_all(&out);
            let mut cmd = record_cmd_bin(bin, &pid, &out, args);
            cmd.stdin(Stdio::null());
            let t0 = clock_ns(sys::CLOCK_MONOTONIC);
            let (mut child, _) = spawn_recording(cmd)?;
            // spawn_recording returns as the line is read: the clock now is its arrival.
            into.push(ms(t0, clock_ns(sys::CLOCK_MONOTONIC)));
            signal(child.id(), sys::SIGINT);
            let _ = child.wait();
        }
        let t0 = clock_ns(sys::CLOCK_MONOTONIC);
        let printed = quiet_output(Command::new("bpftrace").args(["-e", &prog]))?;
        let attached: u64 = printed
            .lines()
            .find_map(|l| l.strip_prefix("attached ")?.trim().parse().ok())
            .ok_or_else(|| format!("bpftrace printed {printed:?}"))?;
        bt.push(ms(t0, attached));
    }
    target.stop();
    let earlier = (!earlier.is_empty()).then(|| stat(earlier));
    let (p, o, b) = (stat(plain), stat(off_cpu), stat(bt));
    rows.push(Row {
        what: "start-up (command start to probes live), idle target".into(),
        value: format!(
            "profiler {} ms; with --off-cpu {} ms; bpftrace {} ms{}",
            p.show(1),
            o.show(1),
            b.show(1),
            earlier
                .as_ref()
                .map(|e| format!("; earlier build (BENCH_BEFORE) {} ms", e.show(1)))
                .unwrap_or_default()
        ),
        method: format!(
            "target tests/targets/spanfn.c waiting on stdin (idle, frame pointers, no span ABI), pinned to CPU 1; CLOCK_MONOTONIC read just before spawning `profiler record --pid N` (default options, then --off-cpu) and again when its stderr line 'profiler: recording' is read (then SIGINT); bpftrace: `bpftrace -e 'profile:hz:99 /pid == N/ {{…}} interval:ms:1 {{ printf(nsecs); exit() }}'` from spawn to the nsecs of its interval probe's first run, attached after the profile probe (at most 1 ms late); {rounds} rounds, all of them interleaved in each (with BENCH_BEFORE, the earlier build's default run too)"
        ),
        json: format!(
            "{{\"name\":\"startup_ms\",{},{},{}}}",
            p.json("profiler"),
            o.json("profiler_off_cpu"),
            b.json("bpftrace")
        ),
    });
    Ok(())
}

/// inferno's binaries, installed once into cargo's bin directory like the other tools.
fn ensure_inferno() -> Result<PathBuf> {
    let home = crate::cargo_home()?;
    let bin = home.join("bin");
    let works = || {
        // inferno has no --version.
        Command::new(bin.join("inferno-flamegraph"))
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !works() {
        step(
            "installing inferno (cargo xtask bench compares with perf script | inferno-collapse-perf | inferno-flamegraph)",
        );
        run(Command::new("cargo")
            .args(["install", "inferno", "--locked", "--root"])
            .arg(&home))?;
        if !works() {
            return Err(format!(
                "inferno-flamegraph does not run from {}",
                bin.display()
            ));
        }
    }
    Ok(bin)
}

/// `perf script | inferno-collapse-perf | inferno-flamegraph > svg`: wall time and the peak
/// RSS of each stage (MB).
fn perf_pipeline(data: &Path, inferno: &Path, svg: &Path) -> Result<(f64, [f64; 3])> {
    let started = Instant::now();
    let mut script = Command::new("perf")
        .args(["script", "-i"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("perf script: {e}"))?;
    let mut collapse = Command::new(inferno.join("inferno-collapse-perf"))
        .stdin(Stdio::from(script.stdout.take().ok_or("no stdout")?))
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("inferno-collapse-perf: {e}"))?;
    let file = fs::File::create(svg).map_err(|e| format!("{}: {e}", svg.display()))?;
    let flame = Command::new(inferno.join("inferno-flamegraph"))
        .stdin(Stdio::from(collapse.stdout.take().ok_or("no stdout")?))
        .stdout(file)
        .spawn()
        .map_err(|e| format!("inferno-flamegraph: {e}"))?;
    let stages = [
        wait_usage(&script)?,
        wait_usage(&collapse)?,
        wait_usage(&flame)?,
    ];
    if !stages.iter().all(|u| u.success) {
        return Err("perf script | inferno-collapse-perf | inferno-flamegraph failed".into());
    }
    let ended = stages.iter().map(|u| u.ended).max().unwrap_or(started);
    Ok((
        ended.duration_since(started).as_secs_f64(),
        stages.map(|u| u.max_rss_mb),
    ))
}

fn perf_samples(data: &Path) -> Result<f64> {
    let stats = quiet_output(
        Command::new("perf")
            .args(["report", "--stats", "-i"])
            .arg(data),
    )?;
    stats
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("SAMPLE events:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| {
            format!(
                "perf report --stats counts no SAMPLE events in {}",
                data.display()
            )
        })
}

/// The "time of last sample" perf writes in its header, in seconds of its sample clock.
fn perf_last_sample_s(data: &Path) -> Result<f64> {
    let header = quiet_output(
        Command::new("perf")
            .args(["report", "--header-only", "-i"])
            .arg(data),
    )?;
    header
        .lines()
        .find_map(|l| {
            l.strip_prefix("# time of last sample :")?
                .trim()
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("no time of last sample in {}'s header", data.display()))
}

fn threads_target(bin: &Path, secs: f64) -> Result<Target> {
    let mut cmd = Command::new(bin);
    cmd.arg(format!("{secs:.1}"));
    Target::spawn(cmd)
}

/// Post-processing at three sizes, ours against perf + inferno on the same workload with the
/// same sample counts.
fn post_processing(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let inferno = ensure_inferno()?;
    let bin = dir.join("threads");
    compile(&bin, "threads.c", &[])?;
    // (samples wanted, runs): one run of the largest keeps the bench within its budget.
    let sizes: &[(f64, usize)] = if quick() {
        &[(10_000.0, 1), (100_000.0, 1)]
    } else {
        &[(10_000.0, 3), (100_000.0, 3), (1_000_000.0, 1)]
    };
    // Samples per second at 9999 Hz with both CPUs busy (perf gets fewer: its own work takes
    // CPU from the target), corrected after every run so each tool gets the count asked for.
    let (mut our_rate, mut perf_rate) = (19_000.0, 17_000.0);
    let data = dir.join("pp-perf.data");
    for &(want, runs) in sizes {
        let mut ours: Vec<(f64, f64, f64)> = Vec::new();
        let mut theirs: Vec<(f64, f64, f64, f64, [f64; 3])> = Vec::new();
        for i in 0..runs {
            step(&format!(
                "post-processing, {want} samples: run {}/{runs}",
                i + 1
            ));
            let secs = (want / our_rate * 1000.0).round() / 1000.0;
            let target = threads_target(&bin, secs + 10.0)?;
            let out = dir.join("pp-profile");
            let _ = fs::remove_dir_all(&out);
            let duration = format!("{secs}s");
            let (child, live) = spawn_recording(record_cmd(
                &target.pid(),
                &out,
                &["--frequency", "9999", "--duration", &duration],
            ))?;
            let u = wait_usage(&child)?;
            target.stop();
            if !u.success {
                return Err("profiler record failed".into());
            }
            let n = json_number(&read_summary(&out)?, "recorded").ok_or("no sample count")?;
            our_rate = n / secs;
            let post = u.ended.duration_since(live).as_secs_f64() - secs;
            ours.push((post, u.max_rss_mb, n));

            let secs = (want / perf_rate * 1000.0).round() / 1000.0;
            let target = threads_target(&bin, secs + 10.0)?;
            // Stamped on CLOCK_BOOTTIME so its last sample compares with the clock at its exit.
            let child = Command::new("perf")
                .args(["record", "-q", "-k", "boottime", "-g", "-F", "9999", "-o"])
                .arg(&data)
                .args(["-p", &target.pid(), "--", "sleep", &secs.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("perf record: {e}"))?;
            let u = wait_usage(&child)?;
            let exited_ns = clock_ns(sys::CLOCK_BOOTTIME);
            target.stop();
            if !u.success {
                return Err("perf record failed".into());
            }
            // Not wall − D: perf's start-up (≈0.2 s here) is not post-processing.
            let tail = exited_ns as f64 / 1e9 - perf_last_sample_s(&data)?;
            let (wall, rss) = perf_pipeline(&data, &inferno, &dir.join("pp-perf.svg"))?;
            let n = perf_samples(&data)?;
            perf_rate = n / secs;
            theirs.push((tail, wall, n, u.max_rss_mb, rss));
        }
        let _ = fs::remove_file(&data);
        let o_t = stat(ours.iter().map(|o| o.0).collect());
        let o_us = stat(ours.iter().map(|o| o.0 / o.2 * 1e6).collect());
        let o_rss = stat(ours.iter().map(|o| o.1).collect());
        let o_n = stat(ours.iter().map(|o| o.2).collect());
        let p_total = stat(theirs.iter().map(|p| p.0 + p.1).collect());
        let p_tail = stat(theirs.iter().map(|p| p.0).collect());
        let p_pipe = stat(theirs.iter().map(|p| p.1).collect());
        let p_us = stat(theirs.iter().map(|p| (p.0 + p.1) / p.2 * 1e6).collect());
        let p_n = stat(theirs.iter().map(|p| p.2).collect());
        let p_rec_rss = stat(theirs.iter().map(|p| p.3).collect());
        let p_pipe_rss = stat(theirs.iter().map(|p| p.4.iter().sum()).collect());
        let p_script_rss = stat(theirs.iter().map(|p| p.4[0]).collect());
        let label = match want as u64 {
            n if n >= 1_000_000 => format!("{}M", n / 1_000_000),
            n => format!("{}k", n / 1000),
        };
        rows.push(Row {
            what: format!("post-processing, ~{label} samples"),
            value: format!(
                "profiler {} s ({} µs/sample), peak RSS {} MB, {:.0} samples; perf + inferno {} s ({} µs/sample: perf record last sample → exit {} s + pipeline {} s), peak RSS perf record {} MB, pipeline {} MB (perf script {} MB), {:.0} samples",
                o_t.show(2),
                o_us.show(1),
                o_rss.show(0),
                o_n.median,
                p_total.show(2),
                p_us.show(1),
                p_tail.show(2),
                p_pipe.show(2),
                p_rec_rss.show(0),
                p_pipe_rss.show(0),
                p_script_rss.show(0),
                p_n.median
            ),
            method: format!(
                "tests/targets/threads.c (2 threads, both CPUs busy, nothing pinned) recorded at 9999 Hz for D s, D set from the previous run's rate so each tool gets about the sample count; profiler: `profiler record --duration D`, time from the end of the window (its 'recording' line + D) to exit — drain, symbolize, write recording.pb, folded, flamegraph.svg, summary.txt/json, Perfetto trace — and ru_maxrss (wait4) of the whole run; perf: wall of `perf record -k boottime -g -F 9999 -p PID -- sleep D` from its last sample (its header) to its exit + wall of `perf script | inferno-collapse-perf | inferno-flamegraph > svg`, pipeline RSS = sum of its three concurrent stages' ru_maxrss; {runs} run(s) (1M once: it records ~55 s per tool)"
            ),
            json: format!(
                "{{\"name\":\"post_processing\",\"samples_wanted\":{want},\"runs\":{runs},{},{},{},{},{},{},{},{},{},{},{}}}",
                o_t.json("profiler_s"),
                o_rss.json("profiler_peak_rss_mb"),
                o_n.json("profiler_samples"),
                p_total.json("perf_inferno_s"),
                p_tail.json("perf_record_exit_s"),
                p_pipe.json("perf_pipeline_s"),
                p_rec_rss.json("perf_record_peak_rss_mb"),
                p_pipe_rss.json("perf_pipeline_peak_rss_sum_mb"),
                p_n.json("perf_samples"),
                o_us.json("profiler_us_per_sample"),
                p_us.json("perf_inferno_us_per_sample")
            ),
        });
    }
    Ok(())
}

/// CPU time the process's live threads have run, from their schedstat (ns resolution;
/// /proc/PID/stat counts 10 ms ticks, too coarse for a 10-s window of a mostly idle process).
fn task_cpu_ns(pid: u32) -> f64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter_map(|t| fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum()
}

/// The profiler's own CPU and peak RSS over a long recording of a busy target.
fn own_cost(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("threads");
    compile(&bin, "threads.c", &[])?;
    let secs: f64 = if quick() { 10.0 } else { 60.0 };
    const WINDOWS: u32 = 6;
    for hz in ["99", "999"] {
        step(&format!("profiler's own cost: {secs} s at {hz} Hz"));
        let target = threads_target(&bin, secs + 10.0)?;
        let out = dir.join("own-profile");
        let _ = fs::remove_dir_all(&out);
        let duration = secs.to_string();
        let (child, live) = spawn_recording(record_cmd(
            &target.pid(),
            &out,
            &["--frequency", hz, "--duration", &duration],
        ))?;
        let pid = child.id();
        let mut marks = vec![(0.0, task_cpu_ns(pid))];
        for k in 1..=WINDOWS {
            // The last mark just before the window closes, while it still only records.
            let at =
                secs * f64::from(k) / f64::from(WINDOWS) - if k == WINDOWS { 0.2 } else { 0.0 };
            std::thread::sleep(Duration::from_secs_f64(at).saturating_sub(live.elapsed()));
            marks.push((live.elapsed().as_secs_f64(), task_cpu_ns(pid)));
        }
        let u = wait_usage(&child)?;
        target.stop();
        if !u.success {
            return Err("profiler record failed".into());
        }
        let samples = json_number(&read_summary(&out)?, "recorded").unwrap_or(f64::NAN);
        let (t0, c0) = marks[0];
        let (t1, c1) = marks[marks.len() - 1];
        let during = (c1 - c0) / 1e9;
        let pct = during / (t1 - t0) * 100.0;
        let windows = stat(
            marks
                .windows(2)
                .map(|w| (w[1].1 - w[0].1) / 1e9 / (w[1].0 - w[0].0) * 100.0)
                .collect(),
        );
        rows.push(Row {
            what: format!("profiler's own CPU and memory, {secs:.0} s at {hz} Hz"),
            value: format!(
                "{during:.2} s CPU while recording ({pct:.2}% of one CPU; {:.0}-s windows {:.2}–{:.2}%); {:.2} s CPU for the whole run with outputs; peak RSS {:.0} MB; {samples:.0} samples",
                secs / f64::from(WINDOWS),
                windows.min,
                windows.max,
                u.cpu_s,
                u.max_rss_mb
            ),
            method: format!(
                "`profiler record --duration {secs:.0} --frequency {hz}` (not pinned) on tests/targets/threads.c, 2 threads spinning on both CPUs (2 × {hz} samples/s); while recording: run time of its threads (/proc/PID/task/*/schedstat) from the 'recording' line to just before the end, in {WINDOWS} windows for the spread; whole run: utime+stime and ru_maxrss from wait4 (start-up, recording, symbolizing, writing outputs); one run per rate"
            ),
            json: format!(
                "{{\"name\":\"profiler_own_cost\",\"hz\":{hz},\"seconds\":{secs},\"cpu_s_recording\":{},\"cpu_percent_recording\":{},{},\"cpu_s_total\":{},\"peak_rss_mb\":{},\"samples\":{}}}",
                num(during),
                num(pct),
                windows.json("cpu_percent_window"),
                num(u.cpu_s),
                num(u.max_rss_mb),
                num(samples)
            ),
        });
    }
    Ok(())
}

/// One way of watching the ping-pong's context switches in the off-CPU bench.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watch {
    Alone,
    /// `profiler record` without `--off-cpu`: the reference for `--off-cpu`'s own cost.
    Record,
    /// `--off-cpu --off-cpu-sample P` (1: every switch-out).
    OffCpu(u32),
    /// `--off-cpu` recording a sleeping process: every switch of the ping-pong is out of scope,
    /// so the program's run time per run is what the machine's other switches pay.
    OutOfScope,
    /// `--off-cpu` with the binary in BENCH_BEFORE (an earlier build), interleaved
    /// with this one so that before and after share the machine's state.
    /// With `--off-cpu-sample P` (1: every switch-out).
    Before(u32),
    /// bpftrace: switch-out time per thread, summed at switch-in, no stacks.
    BpftraceMin,
    /// bpftrace: the same with the kernel and user stacks at switch-out, as `--off-cpu` does.
    BpftraceStacks,
    /// `perf record -e sched:sched_switch -g`: a sample with both call chains at each switch-out.
    Perf,
}

/// What one watched run of the ping-pong gave: its CPU and wall seconds, and for BPF tools
/// the switch program's run time (ns), its runs and the target switch-outs it recorded.
#[derive(Clone, Copy)]
struct SwitchRun {
    cpu_s: f64,
    wall_s: f64,
    bpf_ns: f64,
    bpf_runs: f64,
    switch_outs: f64,
}

/// bpftrace on sched_switch for the threads of `pid`; returns once attached. `stacks`: also
/// keep the kernel and user stacks at each switch-out and sum per stack pair, as `--off-cpu`
/// does; otherwise the minimum (a start time per thread, a sum per thread).
fn start_bpftrace_switch(
    pid: u32,
    stacks: bool,
) -> Result<(Child, std::thread::JoinHandle<String>)> {
    let (keep, key, clear) = if stacks {
        (
            "@k[tid] = kstack; @u[tid] = ustack;",
            "@k[args->next_pid], @u[args->next_pid]",
            "clear(@k); clear(@u);",
        )
    } else {
        ("", "args->next_pid", "")
    };
    let prog = format!(
        "tracepoint:sched:sched_switch {{ \
             if (pid == {pid}) {{ @s[tid] = nsecs; {keep} @n = count(); }} \
             $t = @s[args->next_pid]; \
             if ($t) {{ @w[{key}] = sum(nsecs - $t); delete(@s[args->next_pid]); }} \
         }} \
         BEGIN {{ printf(\"live\\n\"); }} \
         END {{ clear(@s); clear(@w); {clear} }}"
    );
    bpftrace_live(pid, &prog)
}

/// `perf record -e sched:sched_switch -g -p PID` pinned to CPU 0, once its events are open
/// (it says nothing when attached: its perf_event descriptors are looked for, then it is
/// given a moment to enable them).
fn start_perf_switch(pid: u32, data: &Path) -> Result<Child> {
    let mut child = Command::new("taskset")
        .args([
            "-c",
            "0",
            "perf",
            "record",
            "-q",
            "-e",
            "sched:sched_switch",
            "-g",
        ])
        .args(["-p", &pid.to_string(), "-o"])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting perf record: {e}"))?;
    let opened = |perf: u32| {
        fs::read_dir(format!("/proc/{perf}/fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().contains("perf_event"))
            })
        })
    };
    let started = Instant::now();
    // taskset execs perf in the same process, so the child's descriptors become perf's.
    while !opened(child.id()) {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("perf record opened no event in 20 s".into());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("perf record ended before attaching: {status}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

/// An earlier build of the profiler to measure beside this one (BENCH_BEFORE), in the parts
/// that compare with it (offcpu, callgraph, startup): before and after, in the same rounds.
fn before_build() -> Option<PathBuf> {
    std::env::var_os("BENCH_BEFORE").map(PathBuf::from)
}

/// Starts `bin record` (with `args`) pinned to CPU 0 on `pid`.
fn start_profiler_bin(bin: &Path, pid: u32, out: &Path, args: &[&str]) -> Result<Child> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"])
        .arg(bin)
        .args(["record", "--quiet", "--pid", &pid.to_string(), "--output"])
        .arg(out)
        .args(args);
    spawn_recording(cmd).map(|(child, _)| child)
}

/// `--off-cpu` on a context-switch-heavy program: two threads bouncing a byte over a pair of
/// pipes (tests/targets/pingpong.c, both on CPU 1), alone, under `profiler record` with and without
/// `--off-cpu` (and `--off-cpu-sample` 16 and 64), with `--off-cpu` recording another (sleeping)
/// process, under bpftrace (with and without stacks) and `perf record -e sched:sched_switch -g`,
/// and, when BENCH_BEFORE names an earlier build, under its `--off-cpu` (and
/// `--off-cpu-sample 16`); each round all of them in a rotating order.
fn off_cpu_cost(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("pingpong");
    compile(&bin, "pingpong.c", &[])?;
    let _stats = BpfStats::enable()?;
    let rounds = rounds();
    let bounces = if quick() { "5000" } else { "100000" };
    // Two sampling rates beside none: how the cost falls as fewer switch-outs take stacks
    // (issue 17).
    const SAMPLES: [u32; 2] = [16, 64];
    let before = before_build();
    let mut watches = vec![
        Watch::Alone,
        Watch::Record,
        Watch::OffCpu(1),
        Watch::OffCpu(SAMPLES[0]),
        Watch::OffCpu(SAMPLES[1]),
        Watch::OutOfScope,
        Watch::BpftraceMin,
        Watch::BpftraceStacks,
        Watch::Perf,
    ];
    if before.is_some() {
        watches.push(Watch::Before(1));
        watches.push(Watch::Before(SAMPLES[0]));
    }
    let mut runs: Vec<Vec<SwitchRun>> = vec![Vec::new(); watches.len()];
    let data = dir.join("pingpong-perf.data");
    for round in 0..rounds {
        step(&format!("off-CPU cost: round {}/{rounds}", round + 1));
        for k in 0..watches.len() {
            let slot = (round + k) % watches.len();
            let watch = watches[slot];
            let mut t = Target::start(&bin, &[bounces])?;
            let pid = t.child.id();
            let out = dir.join("pingpong-profile");
            let _ = fs::remove_dir_all(&out);
            // A process that only sleeps, for the out-of-scope variant to record.
            let mut idle = None;
            let mut bpftrace = None;
            let mut perf = None;
            let profiler = match watch {
                Watch::Alone => None,
                Watch::Record => Some(start_profiler(pid, &out, &[])?),
                Watch::OffCpu(every) => Some(start_profiler(
                    pid,
                    &out,
                    &["--off-cpu", "--off-cpu-sample", &every.to_string()],
                )?),
                Watch::OutOfScope => {
                    let sleeper = Command::new("sleep")
                        .arg("600")
                        .spawn()
                        .map_err(|e| format!("starting sleep: {e}"))?;
                    let p = start_profiler(sleeper.id(), &out, &["--off-cpu"]);
                    idle = Some(sleeper);
                    if p.is_err()
                        && let Some(s) = idle.as_mut()
                    {
                        let _ = s.kill();
                        let _ = s.wait();
                    }
                    Some(p?)
                }
                Watch::Before(every) => {
                    let b = before.as_deref().ok_or("BENCH_BEFORE unset")?;
                    let every = every.to_string();
                    let args = ["--off-cpu", "--off-cpu-sample", &every];
                    Some(start_profiler_bin(b, pid, &out, &args)?)
                }
                Watch::BpftraceMin | Watch::BpftraceStacks => {
                    bpftrace = Some(start_bpftrace_switch(pid, watch == Watch::BpftraceStacks)?);
                    None
                }
                Watch::Perf => {
                    perf = Some(start_perf_switch(pid, &data)?);
                    None
                }
            };
            t.go()?;
            let printed = t.finish()?;
            let mut run = SwitchRun {
                cpu_s: printed_value(&printed, "cpu_ns")? / 1e9,
                wall_s: printed_value(&printed, "wall_ns")? / 1e9,
                bpf_ns: f64::NAN,
                bpf_runs: f64::NAN,
                switch_outs: f64::NAN,
            };
            // The sleeper's exit ends its recording, as the ping-pong's ends the others.
            if let Some(mut sleeper) = idle {
                let _ = sleeper.kill();
                let _ = sleeper.wait();
            }
            if let Some(mut p) = profiler {
                p.wait().map_err(|e| e.to_string())?;
                if watch != Watch::Record {
                    let s = read_summary(&out)?;
                    let per_run = json_number(&s, "bpf_ns_per_switch").unwrap_or(f64::NAN);
                    run.bpf_runs = json_number(&s, "bpf_switch_runs").unwrap_or(f64::NAN);
                    run.bpf_ns = per_run * run.bpf_runs;
                    run.switch_outs = json_number(&s, "switches").unwrap_or(f64::NAN);
                }
            }
            if let Some((child, rest)) = bpftrace {
                // Read while its programs are loaded (type 5: tracepoint).
                let stats = prog_stats_of_type(child.id(), 5);
                signal(child.id(), sys::SIGINT);
                let wait = wait_usage(&child);
                let rest = rest.join().unwrap_or_default();
                let (ns, n) = stats?;
                wait?;
                run.bpf_ns = ns;
                run.bpf_runs = n;
                run.switch_outs = rest
                    .lines()
                    .find_map(|l| l.strip_prefix("@n:")?.trim().parse().ok())
                    .unwrap_or(f64::NAN);
            }
            if let Some(child) = perf {
                // perf ends by itself when the ping-pong has exited, or at SIGINT by raising
                // it again once its file is written: its status says little, its file does.
                signal(child.id(), sys::SIGINT);
                wait_usage(&child)?;
                let written = fs::metadata(&data).map_or(0, |m| m.len());
                let _ = fs::remove_file(&data);
                if written == 0 {
                    return Err("perf record wrote nothing".into());
                }
            }
            runs[slot].push(run);
        }
    }
    let of = |w: Watch| watches.iter().position(|x| *x == w).unwrap_or(0);
    let ratio = |num: Watch, den: Watch, wall: bool| {
        stat(
            runs[of(num)]
                .iter()
                .zip(&runs[of(den)])
                .map(|(a, b)| {
                    if wall {
                        a.wall_s / b.wall_s
                    } else {
                        a.cpu_s / b.cpu_s
                    }
                })
                .collect(),
        )
    };
    let per = |w: Watch, f: &dyn Fn(&SwitchRun) -> f64| stat(runs[of(w)].iter().map(f).collect());
    let record_alone = ratio(Watch::Record, Watch::Alone, false);
    let switches_k = 2 * bounces.parse::<u32>().unwrap_or(0) / 1000;
    let out_of_scope = per(Watch::OutOfScope, &|r| r.bpf_ns / r.bpf_runs);
    let setup = format!(
        "tests/targets/pingpong.c: 2 threads bounce a byte over 2 pipes {bounces} times (2 blocking reads per bounce, {switches_k}k context switches of target threads), its own CPU and wall time; both threads pinned to CPU 1, so that every switch goes straight from one to the other and each switch's program time lands on the ping-pong (unpinned, how the threads spread over the 2 CPUs changed its speed ×3 from run to run), the tool pinned to CPU 0; {rounds} rounds, every variant once per round in rotating order, ratios per round"
    );
    let flags = |every: u32| match every {
        1 => ("`--off-cpu`".to_string(), "off_cpu".to_string()),
        _ => (
            format!("`--off-cpu --off-cpu-sample {every}`"),
            format!("off_cpu_sampled_{every}"),
        ),
    };
    let mut ours = Vec::new();
    for &watch in &watches {
        match watch {
            Watch::OffCpu(every) => {
                let (label, key) = flags(every);
                ours.push((watch, label, key));
            }
            Watch::Before(every) => {
                let (label, key) = flags(every);
                ours.push((
                    watch,
                    format!("{label} of the earlier build (BENCH_BEFORE)"),
                    format!("{key}_before"),
                ));
            }
            _ => {}
        }
    }
    for (watch, label, key) in ours {
        let (vs_alone, vs_record) = (
            ratio(watch, Watch::Alone, false),
            ratio(watch, Watch::Record, false),
        );
        let (wall_alone, wall_record) = (
            ratio(watch, Watch::Alone, true),
            ratio(watch, Watch::Record, true),
        );
        rows.push(Row {
            what: format!("{label} slowdown of a context-switch-heavy program"),
            value: format!(
                "×{} CPU time and ×{} wall vs recording without --off-cpu; ×{} CPU and ×{} wall vs alone (recording without --off-cpu vs alone: ×{} CPU)",
                vs_record.show(3),
                wall_record.show(3),
                vs_alone.show(3),
                wall_alone.show(3),
                record_alone.show(3)
            ),
            method: format!(
                "{setup}; alone, under `profiler record` and under `profiler record {}` (default --off-cpu-min 1us)",
                label.trim_matches('`')
            ),
            json: format!(
                "{{\"name\":\"{key}_slowdown\",{},{},{},{},{}}}",
                vs_record.json("cpu_vs_record"),
                wall_record.json("wall_vs_record"),
                vs_alone.json("cpu_vs_alone"),
                wall_alone.json("wall_vs_alone"),
                record_alone.json("record_cpu_vs_alone")
            ),
        });
        let any = per(watch, &|r| r.bpf_ns / r.bpf_runs);
        let target = per(watch, &|r| r.bpf_ns / r.switch_outs);
        // What the target's switches add beyond the run every switch of the machine pays,
        // with the out-of-scope run time of the same round.
        let extra = stat(
            runs[of(watch)]
                .iter()
                .zip(&runs[of(Watch::OutOfScope)])
                .map(|(r, o)| (r.bpf_ns - r.bpf_runs * o.bpf_ns / o.bpf_runs) / r.switch_outs)
                .collect(),
        );
        rows.push(Row {
            what: format!("{label} BPF cost per context switch"),
            value: format!(
                "{} ns per run (every switch of the machine); {} ns per target switch-out (all runs' time / target switch-outs); {} ns added per target switch-out and its switch-in beyond the out-of-scope run; out-of-scope run {} ns",
                any.show(0),
                target.show(0),
                extra.show(0),
                out_of_scope.show(0)
            ),
            method: "same rounds: kernel BPF run-time statistics of the sched_switch program (bpf_stats_enabled) over the recording / its runs; per target switch-out: the same total / the target switch-outs it saw (so it includes the runs for other tasks); added: (total − runs × the out-of-scope ns per run of the same round) / target switch-outs; out-of-scope: `--off-cpu` recording a sleeping process while the ping-pong runs, every run out of scope".into(),
            json: format!(
                "{{\"name\":\"{key}_bpf_ns\",{},{},{},{}}}",
                any.json("per_run"),
                target.json("per_target_switch"),
                extra.json("added_per_target_switch"),
                out_of_scope.json("out_of_scope_per_run")
            ),
        });
    }
    let oos = ratio(Watch::OutOfScope, Watch::Record, false);
    rows.push(Row {
        what: "`--off-cpu` on another process: slowdown of a context-switch-heavy program outside the scope".into(),
        value: format!(
            "×{} CPU vs recording the ping-pong without --off-cpu; ×{} CPU vs alone",
            oos.show(3),
            ratio(Watch::OutOfScope, Watch::Alone, false).show(3)
        ),
        method: format!("{setup}; `profiler record --off-cpu --pid` of a `sleep`, so the ping-pong's switches all run the program out of scope"),
        json: format!(
            "{{\"name\":\"off_cpu_out_of_scope_slowdown\",{},{}}}",
            oos.json("cpu_vs_record"),
            ratio(Watch::OutOfScope, Watch::Alone, false).json("cpu_vs_alone")
        ),
    });
    for (watch, label, key) in [
        (
            Watch::BpftraceMin,
            "bpftrace, sched_switch: start time per thread, sum per thread (no stacks)",
            "bpftrace_switch_min",
        ),
        (
            Watch::BpftraceStacks,
            "bpftrace, sched_switch: the same with kstack and ustack per switch-out",
            "bpftrace_switch_stacks",
        ),
        (
            Watch::Perf,
            "`perf record -e sched:sched_switch -g -p PID`",
            "perf_sched_switch",
        ),
    ] {
        let cpu = ratio(watch, Watch::Alone, false);
        let wall = ratio(watch, Watch::Alone, true);
        let bpf = (watch != Watch::Perf).then(|| {
            (
                per(watch, &|r| r.bpf_ns / r.bpf_runs),
                per(watch, &|r| r.bpf_ns / r.switch_outs),
            )
        });
        rows.push(Row {
            what: format!("baseline: {label}, on the same ping-pong"),
            value: format!(
                "×{} CPU and ×{} wall vs alone{}",
                cpu.show(3),
                wall.show(3),
                bpf.as_ref().map_or(String::new(), |(any, target)| format!(
                    "; {} ns per run, {} ns per target switch-out",
                    any.show(0),
                    target.show(0)
                ))
            ),
            method: format!(
                "{setup}; the same rounds as `--off-cpu`; BPF run time from the fdinfo of its tracepoint programs (a classic tracepoint: the kernel formats the record before the program runs, outside the run time)"
            ),
            json: format!(
                "{{\"name\":\"{key}\",{},{}{}}}",
                cpu.json("cpu_vs_alone"),
                wall.json("wall_vs_alone"),
                bpf.as_ref().map_or(String::new(), |(any, target)| format!(
                    ",{},{}",
                    any.json("per_run"),
                    target.json("per_target_switch")
                ))
            ),
        });
    }
    off_cpu_together(dir, &bin, rows)
}

/// A sched_switch program recording the ping-pong in `off_cpu_together`.
#[derive(Clone, Copy, PartialEq)]
enum SwitchTool {
    /// `--off-cpu --off-cpu-sample N`.
    Ours(u32),
    /// The same with `--call-graph dwarf`: a user stack copy per recorded switch-out.
    OursDwarf(u32),
    /// The BENCH_BEFORE build's `--off-cpu`.
    Before,
    /// bpftrace keeping both stacks per switch-out.
    Bpftrace,
}

/// The sched_switch programs' BPF cost, all recording the same ping-pong at the same time:
/// ours (`--off-cpu`, and sampled 1 in 16, each with frame pointers and in DWARF mode),
/// bpftrace keeping both stacks and, with
/// BENCH_BEFORE, the earlier build's `--off-cpu`. The sequential rounds above swing ±40%
/// between rounds on this VM (one showed a 45% "regression" that this found to be none);
/// here the noise falls on every tool alike.
fn off_cpu_together(dir: &Path, bin: &Path, rows: &mut Vec<Row>) -> Result {
    const SECS: f64 = 3.0;
    let mut tools = vec![
        SwitchTool::Ours(1),
        SwitchTool::Ours(16),
        SwitchTool::OursDwarf(1),
        SwitchTool::OursDwarf(16),
        SwitchTool::Bpftrace,
    ];
    if before_build().is_some() {
        tools.push(SwitchTool::Before);
    }
    let rounds = rounds();
    let mut per_run: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    let mut ratio: Vec<Vec<f64>> = vec![Vec::new(); tools.len()];
    for round in 0..rounds {
        step(&format!(
            "off-CPU cost, tools together: round {}/{rounds}",
            round + 1
        ));
        // Far more bounces than the window needs: stopped after it.
        let mut t = Target::start(bin, &["1000000000"])?;
        let pid = t.child.id();
        // Each with the type of its sched_switch program: 17 raw tracepoint (ours; its
        // rename program shares the type and runs only at renames), 5 tracepoint.
        let measured = measure_together(
            tools.len(),
            round,
            SECS,
            |i| {
                let out = dir.join(format!("pingpong-together-{i}"));
                let _ = fs::remove_dir_all(&out);
                match tools[i] {
                    SwitchTool::Ours(every) => {
                        let every = every.to_string();
                        start_profiler(pid, &out, &["--off-cpu", "--off-cpu-sample", &every])
                            .map(|c| (c, 17))
                    }
                    SwitchTool::OursDwarf(every) => {
                        let every = every.to_string();
                        let args = [
                            "--off-cpu",
                            "--off-cpu-sample",
                            &every,
                            "--call-graph",
                            "dwarf",
                        ];
                        start_profiler(pid, &out, &args).map(|c| (c, 17))
                    }
                    SwitchTool::Before => before_build()
                        .ok_or_else(|| "BENCH_BEFORE is not set".to_string())
                        .and_then(|b| start_profiler_bin(&b, pid, &out, &["--off-cpu"]))
                        .map(|c| (c, 17)),
                    // Its output thread ends with it.
                    SwitchTool::Bpftrace => start_bpftrace_switch(pid, true).map(|(c, _)| (c, 5)),
                }
            },
            || t.go(),
            || 0.0,
            |_| {},
        )
        .map(|w| {
            w.deltas
                .iter()
                .map(|(ns, runs)| ns / runs)
                .collect::<Vec<f64>>()
        });
        t.stop();
        push_round(&mut per_run, &mut ratio, &measured?);
    }
    let setup = format!(
        "tests/targets/pingpong.c (both threads on CPU 1) recorded by every tool at the same time, each pinned to CPU 0 and started in a rotating order; BPF run time / runs of each tool's sched_switch program (kernel.bpf_stats_enabled, /proc/PID/fdinfo) over the same {SECS} s window, nearly every run a switch of the ping-pong; ×: per-round ratio to ours without sampling; {rounds} rounds"
    );
    for (i, tool) in tools.iter().enumerate() {
        let (what, key) = match tool {
            SwitchTool::Ours(1) => ("`--off-cpu`".to_string(), "offcpu_together".to_string()),
            SwitchTool::Ours(every) => (
                format!("`--off-cpu --off-cpu-sample {every}`"),
                format!("offcpu_sample{every}_together"),
            ),
            SwitchTool::OursDwarf(1) => (
                "`--off-cpu --call-graph dwarf` (a user stack copy per switch-out)".to_string(),
                "offcpu_dwarf_together".to_string(),
            ),
            SwitchTool::OursDwarf(every) => (
                format!("`--off-cpu --off-cpu-sample {every} --call-graph dwarf`"),
                format!("offcpu_dwarf_sample{every}_together"),
            ),
            SwitchTool::Before => (
                "`--off-cpu` of the earlier build (BENCH_BEFORE)".to_string(),
                "offcpu_before_together".to_string(),
            ),
            SwitchTool::Bpftrace => (
                "bpftrace with kstack and ustack per switch-out".to_string(),
                "bpftrace_stacks_together".to_string(),
            ),
        };
        let n = stat(per_run[i].clone());
        let r = stat(ratio[i].clone());
        rows.push(Row {
            what: format!("{what}: BPF ns per sched_switch, tools together"),
            value: if i == 0 {
                format!("{} ns", n.show(0))
            } else {
                format!("{} ns; ×{}", n.show(0), r.show(3))
            },
            method: setup.clone(),
            json: format!(
                "{{\"name\":\"{key}\",{},{}}}",
                n.json("ns_per_run"),
                r.json("ratio_to_offcpu")
            ),
        });
    }
    Ok(())
}

/// `--alloc`: nanoseconds added per allocation (malloc + free) of a tight allocation loop, at
/// the default sampling and sampling every allocation, beside bpftrace with the equivalent
/// probes (uprobe and uretprobe on malloc, uprobe on free, for that process only; it keeps
/// every allocation, so it compares with `--alloc-sample 1`).
fn alloc_cost(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("allocloop");
    compile(&bin, "allocloop.c", &[])?;
    let calls = if quick() { 100_000.0 } else { 1_000_000.0 };
    let n = format!("{calls}");
    let rounds = rounds();
    let libc = own_libc().ok_or("this program maps no libc.so: cannot point bpftrace at one")?;
    // [alone, --alloc, --alloc --alloc-sample 1, bpftrace] → seconds per round.
    let mut runs: [Vec<f64>; 4] = Default::default();
    let mut bpf_ns = Vec::new();
    for round in 0..rounds {
        step(&format!("--alloc cost: round {}/{rounds}", round + 1));
        for k in 0..4 {
            let variant = (round + k) % 4;
            let mut t = Target::start(&bin, &[&n, "64"])?;
            let out = dir.join("alloc-profile");
            let _ = fs::remove_dir_all(&out);
            let mut tracer = match variant {
                0 => None,
                1 => Some(start_profiler(t.child.id(), &out, &["--alloc"])?),
                2 => Some(start_profiler(
                    t.child.id(),
                    &out,
                    &["--alloc", "--alloc-sample", "1"],
                )?),
                _ => Some(start_bpftrace_alloc(t.child.id(), &libc)?),
            };
            t.go()?;
            let printed = t.finish()?;
            runs[variant].push(seconds_of(&printed)?);
            if let Some(mut p) = tracer.take() {
                if variant == 3 {
                    signal(p.id(), sys::SIGINT);
                }
                p.wait().map_err(|e| e.to_string())?;
                if variant == 1 {
                    let s = read_summary(&out)?;
                    let a = s.find("\"alloc\":").map_or("", |at| &s[at..]);
                    bpf_ns.push(json_number(a, "bpf_ns_per_run").unwrap_or(f64::NAN));
                }
            }
        }
    }
    let added = |v: usize| {
        stat(
            runs[v]
                .iter()
                .zip(&runs[0])
                .map(|(p, a)| (p - a) / calls * 1e9)
                .collect(),
        )
    };
    let (default, every, bpftrace) = (added(1), added(2), added(3));
    let base = stat(runs[0].iter().map(|a| a / calls * 1e9).collect());
    let bpf = stat(bpf_ns);
    rows.push(Row {
        what: "`--alloc` cost per allocation (malloc + free)".into(),
        value: format!(
            "+{} ns at the default sampling (512 KiB); +{} ns with --alloc-sample 1; bpftrace with the same probes +{} ns; unprobed {} ns; our BPF time {} ns per probe hit",
            default.show(0),
            every.show(0),
            bpftrace.show(0),
            base.show(0),
            bpf.show(0)
        ),
        method: format!(
            "tests/targets/allocloop.c: {calls} × malloc(64) + free in one thread pinned to CPU 1, timed by itself; alone, under `profiler record --alloc` (and `--alloc-sample 1`) pinned to CPU 0, and under `bpftrace -p PID` with uprobe+uretprobe on malloc (size by tid, then live[retval] and @bytes[ustack]) and a uprobe on free (delete live[arg0]), placed at the symbols as a bpftrace user writes them (the profiler probes glibc's free after its NULL test, which the kernel emulates instead of single-stepping); {rounds} rounds, the four in rotating order, median of per-round differences / calls"
        ),
        json: format!(
            "{{\"name\":\"alloc_ns_per_allocation\",{},{},{},{},{}}}",
            default.json("default"),
            every.json("every"),
            bpftrace.json("bpftrace"),
            base.json("unprobed"),
            bpf.json("bpf_ns_per_hit")
        ),
    });
    Ok(())
}

/// `--locks`: the kernel-side cost per contended wait (a futex wait of a target thread),
/// ours and bpftrace's with the equivalent tracepoints, on two threads fighting over one
/// mutex. Kernel BPF run-time statistics: the target pays this at each wait; the unwinding
/// of our records happens in the profiler, not in the target. (Wall-time differences were
/// tried: the number of waits of such a program swings tenfold between runs, and with it the
/// time, so they measured the contention, not the probes.)
fn locks_cost(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("lockloop");
    compile(&bin, "lockloop.c", &["-lpthread"])?;
    let _stats = BpfStats::enable()?;
    let n = if quick() { "5000" } else { "20000" };
    let rounds = rounds();
    // With BENCH_BEFORE, an earlier build takes its turn too.
    let before = before_build();
    let tools = if before.is_some() { 3 } else { 2 };
    let (mut ours, mut theirs, mut waits) = (Vec::new(), Vec::new(), Vec::new());
    let mut earlier = Vec::new();
    for round in 0..rounds {
        step(&format!("--locks cost: round {}/{rounds}", round + 1));
        for k in 0..tools {
            let mut t = Target::spawn({
                let mut c = Command::new(&bin);
                c.arg(n);
                c
            })?;
            let tool = (round + k) % tools;
            if tool != 1 {
                let profiler = match (&before, tool) {
                    (Some(b), 2) => b.clone(),
                    _ => profiler_bin(),
                };
                let out = dir.join("locks-profile");
                let _ = fs::remove_dir_all(&out);
                let mut p = start_profiler_bin(&profiler, t.child.id(), &out, &["--locks"])?;
                t.go()?;
                t.finish()?;
                p.wait().map_err(|e| e.to_string())?;
                let s = read_summary(&out)?;
                let l = s.find("\"locks\":").map_or("", |at| &s[at..]);
                let w = json_number(l, "waits").unwrap_or(f64::NAN);
                let runs = json_number(l, "bpf_runs").unwrap_or(f64::NAN);
                let per_run = json_number(l, "bpf_ns_per_run").unwrap_or(f64::NAN);
                if tool == 2 {
                    earlier.push(per_run * runs / w);
                } else {
                    ours.push(per_run * runs / w);
                    waits.push(w);
                }
            } else {
                let (mut p, printed) = start_bpftrace_locks(t.child.id())?;
                t.go()?;
                t.finish()?;
                // Read while its programs are loaded.
                let stats = prog_stats_of_type(p.id(), 5);
                signal(p.id(), sys::SIGINT);
                p.wait().map_err(|e| e.to_string())?;
                let out = printed.join().unwrap_or_default();
                let (ns, _) = stats?;
                let n: f64 = out
                    .lines()
                    .find_map(|l| l.strip_prefix("@n:")?.trim().parse().ok())
                    .ok_or_else(|| format!("bpftrace printed no @n: {out:?}"))?;
                theirs.push(ns / n);
            }
        }
    }
    let (ours, theirs, w) = (stat(ours), stat(theirs), stat(waits));
    let earlier = (!earlier.is_empty()).then(|| stat(earlier));
    rows.push(Row {
        what: "`--locks` cost per contended wait".into(),
        value: format!(
            "{} ns of BPF time per futex wait (entry and return; {} waits per run); bpftrace with the same tracepoints {} ns{}",
            ours.show(0),
            w.show(0),
            theirs.show(0),
            earlier
                .as_ref()
                .map(|e| format!("; earlier build (BENCH_BEFORE) {} ns", e.show(0)))
                .unwrap_or_default()
        ),
        method: format!(
            "tests/targets/lockloop.c: 2 threads × {n} lock/unlock of one mutex around ~2000 multiplies, ~200 between; `profiler record --locks` (pinned to CPU 0): the futex programs' kernel run time (bpf_ns_per_run × bpf_runs) / waits; `bpftrace -p PID` on tracepoint:syscalls:sys_enter_futex (wait ops: begin time by tid, @[ustack] count, @n) and sys_exit_futex (sum of the wait): run_time_ns of its tracepoint programs (fdinfo, kernel.bpf_stats_enabled=1) / @n; each includes the cheap runs for the target's other futex calls; {rounds} rounds alternating"
        ),
        json: format!(
            "{{\"name\":\"locks_bpf_ns_per_wait\",{},{},{}}}",
            ours.json("profiler"),
            theirs.json("bpftrace"),
            w.json("waits")
        ),
    });
    Ok(())
}

/// bpftrace with tracepoints equivalent to `--locks` on `pid`, pinned to CPU 0; returns once
/// they are attached.
fn start_bpftrace_locks(pid: u32) -> Result<(Child, std::thread::JoinHandle<String>)> {
    let prog = "tracepoint:syscalls:sys_enter_futex /(args->op & 0x7f) == 0 || (args->op & 0x7f) == 9 || (args->op & 0x7f) == 6/ { @s[tid] = nsecs; @st[ustack] = count(); @n = count(); } \
         tracepoint:syscalls:sys_exit_futex /@s[tid]/ { @w = sum(nsecs - @s[tid]); delete(@s[tid]); } \
         BEGIN { printf(\"live\\n\"); } \
         END { clear(@s); clear(@st); clear(@w); }";
    bpftrace_live(pid, prog)
}

/// The C library this program maps, for bpftrace's uprobes.
fn own_libc() -> Option<String> {
    let maps = fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("libc.so"))
        })
        .map(str::to_string)
}

/// bpftrace with probes equivalent to `--alloc --alloc-sample 1` on `pid`, pinned to CPU 0;
/// returns once they are attached.
fn start_bpftrace_alloc(pid: u32, libc: &str) -> Result<Child> {
    let prog = format!(
        "uprobe:{libc}:malloc {{ @size[tid] = arg0; }} \
         uretprobe:{libc}:malloc /@size[tid]/ {{ @live[retval] = @size[tid]; @bytes[ustack] = sum(@size[tid]); delete(@size[tid]); }} \
         uprobe:{libc}:free {{ delete(@live[arg0]); }} \
         BEGIN {{ printf(\"live\\n\"); }} \
         END {{ clear(@live); clear(@bytes); clear(@size); }}"
    );
    bpftrace_live(pid, &prog).map(|(child, _)| child)
}

/// `bpftrace -p PID -e PROG` pinned to CPU 0, once its BEGIN probe printed "live" (it says
/// "Attaching N probes..." before they are attached).
/// Returns it with the rest of what it prints (read until it exits, so it never blocks).
fn bpftrace_live(pid: u32, prog: &str) -> Result<(Child, std::thread::JoinHandle<String>)> {
    let mut child = Command::new("taskset")
        .args(["-c", "0", "bpftrace", "-p", &pid.to_string(), "-e", prog])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting bpftrace: {e}"))?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    // "Attaching N probes..." comes before they are attached; BEGIN runs once they are.
    while line.trim() != "live" {
        line.clear();
        if out.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            let _ = child.wait();
            return Err("bpftrace ended before attaching".into());
        }
    }
    let rest = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
        rest
    });
    Ok((child, rest))
}

/// DWARF unwinding against frame pointers on the same program: split.c built without frame
/// pointers (gcc -O2), recorded with `--call-graph fp` and `--call-graph dwarf` (and, with
/// BENCH_BEFORE, the earlier build's `--call-graph dwarf`) in a rotating order at 99 and
/// 999 Hz: kernel cost per sample, userspace unwinding per sample, complete stacks, bytes
/// of stack copied.
fn call_graph_cost(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("split-nofp");
    compile(
        &bin,
        "split.c",
        &["-fomit-frame-pointer", "-momit-leaf-frame-pointer"],
    )?;
    let _stats = BpfStats::enable()?;
    let rounds = rounds();
    let secs = if quick() { "2" } else { "4" };
    let before = before_build();
    // (label, binary, call graph)
    let mut modes: Vec<(&str, PathBuf, &str)> = vec![
        ("fp", profiler_bin(), "fp"),
        ("dwarf", profiler_bin(), "dwarf"),
    ];
    if let Some(b) = &before {
        modes.push(("dwarf, earlier build (BENCH_BEFORE)", b.clone(), "dwarf"));
    }
    for hz in ["99", "999"] {
        // Per mode: (BPF ns/sample, unwind ns/sample, complete %, bytes copied/sample)
        let mut m: Vec<Vec<(f64, f64, f64, f64)>> = vec![Vec::new(); modes.len()];
        for round in 0..rounds {
            step(&format!(
                "call graphs at {hz} Hz: round {}/{rounds}",
                round + 1
            ));
            let t = Target::start(&bin, &["30"])?;
            for k in 0..modes.len() {
                let mode = (round + k) % modes.len();
                let (_, profiler, graph) = &modes[mode];
                let out = dir.join("split-nofp-profile");
                let _ = fs::remove_dir_all(&out);
                let mut p = start_profiler_bin(
                    profiler,
                    t.child.id(),
                    &out,
                    &["--frequency", hz, "--duration", secs, "--call-graph", graph],
                )?;
                p.wait().map_err(|e| e.to_string())?;
                let s = read_summary(&out)?;
                let runs = json_number(&s, "bpf_runs").unwrap_or(f64::NAN);
                let per_run = json_number(&s, "bpf_ns_per_run").unwrap_or(f64::NAN);
                let seen = json_number(&s, "seen_by_kernel").unwrap_or(f64::NAN);
                let unwind = json_number(&s, "unwind_ns_per_sample").unwrap_or(0.0);
                let complete = json_number(&s, "complete_percent").unwrap_or(f64::NAN);
                // An earlier build copied --stack-size whole and did not say so.
                let copied = json_number(&s, "stack_copied_bytes_mean")
                    .unwrap_or(if *graph == "dwarf" { 16384.0 } else { 0.0 });
                m[mode].push((runs * per_run / seen, unwind, complete, copied));
            }
            t.stop();
        }
        let fp_bpf = stat(m[0].iter().map(|x| x.0).collect());
        for (mode, (name, _, graph)) in modes.iter().enumerate() {
            let bpf = stat(m[mode].iter().map(|x| x.0).collect());
            let unwind = stat(m[mode].iter().map(|x| x.1).collect());
            let total = stat(m[mode].iter().map(|x| x.0 + x.1).collect());
            let complete = stat(m[mode].iter().map(|x| x.2).collect());
            let copied = stat(m[mode].iter().map(|x| x.3).collect());
            // Per round, against the frame-pointer walk of the same round.
            let ratio = stat(
                m[mode]
                    .iter()
                    .zip(&m[0])
                    .map(|(x, fp)| x.0 / fp.0)
                    .collect(),
            );
            let versus_fp = if mode == 0 {
                String::new()
            } else {
                format!("; BPF ×{} of fp's {} ns", ratio.show(2), fp_bpf.show(0))
            };
            let copy = if *graph == "dwarf" {
                format!(", {} B of stack copied per sample", copied.show(0))
            } else {
                String::new()
            };
            rows.push(Row {
                what: format!("cost per sample, --call-graph {name}, at {hz} Hz"),
                value: format!(
                    "{} ns (BPF {} ns + userspace unwinding {} ns); {}% of stacks complete{copy}{versus_fp}",
                    total.show(0),
                    bpf.show(0),
                    unwind.show(0),
                    complete.show(1)
                ),
                method: format!(
                    "split.c built with gcc -O2 -fomit-frame-pointer, pinned to CPU 1; `profiler record --call-graph fp` and `--call-graph dwarf` (each thread's copy sized to its recent unwinds, at most 16 KiB) for {secs} s each on the same process, in a rotating order, the profiler on CPU 0; BPF: kernel run-time statistics / samples of the target; unwinding: the profiler's own timing of framehop per sample, loading unwind tables excluded; complete: stacks reaching a thread entry point; ×: per-round ratio to fp; {rounds} rounds"
                ),
                json: format!(
                    "{{\"name\":\"call_graph_cost\",\"mode\":\"{name}\",\"hz\":{hz},{},{},{},{},{},{}}}",
                    total.json("ns_per_sample"),
                    bpf.json("bpf_ns"),
                    unwind.json("unwind_ns"),
                    complete.json("complete_percent"),
                    copied.json("copied_bytes"),
                    ratio.json("bpf_vs_fp")
                ),
            });
        }
    }
    Ok(())
}

pub fn bench() -> Result {
    let started = Instant::now();
    // Only the bench compares with them: test runs need neither.
    crate::ensure_tool(
        "perf",
        &["linux-perf"],
        "cargo xtask bench compares with perf",
    )?;
    crate::ensure_tool(
        "bpftrace",
        &["bpftrace"],
        "cargo xtask bench compares with bpftrace",
    )?;
    let root = workspace_root();
    let dir: PathBuf = root.join("target/bench");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut rows = Vec::new();
    if part("spans") {
        span_cost(&dir, &mut rows)?;
    }
    if part("span-fn") {
        span_fn_cost(&dir, &mut rows)?;
    }
    if part("sampling") {
        sampling_cost(&dir, &mut rows)?;
    }
    if part("slowdown") {
        slowdown(&dir, &mut rows, 1, &["99", "999", "9999"])?;
    }
    if part("slowdown-mt") {
        slowdown(&dir, &mut rows, 2, &["99", "999"])?;
    }
    if part("attach") {
        attach_latency(&dir, &mut rows)?;
    }
    if part("startup") {
        startup_time(&dir, &mut rows)?;
    }
    if part("post") {
        post_processing(&dir, &mut rows)?;
    }
    if part("own") {
        own_cost(&dir, &mut rows)?;
    }
    if part("offcpu") {
        off_cpu_cost(&dir, &mut rows)?;
    }
    if part("callgraph") {
        call_graph_cost(&dir, &mut rows)?;
    }
    if part("build") {
        build_naming(&dir, &mut rows)?;
    }
    if part("all") {
        all_cost(&dir, &mut rows)?;
    }
    if part("short") {
        short_processes(&dir, &mut rows)?;
    }
    if part("agent") {
        agent_cost(&dir, &mut rows)?;
    }
    if part("alloc") {
        alloc_cost(&dir, &mut rows)?;
        locks_cost(&dir, &mut rows)?;
    }

    // A quick or partial run checks the bench: it must not replace the real figures.
    let partial = std::env::var_os("BENCH_ONLY").is_some();
    let out = if quick() || partial {
        dir.clone()
    } else {
        root.join("bench")
    };
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let minutes = started.elapsed().as_secs_f64() / 60.0;
    // Which profiler the figures belong to: the tree is often ahead of the last commit.
    let commit = quiet_output(Command::new("git").args(["-C"]).arg(&root).args([
        "rev-parse",
        "--short",
        "HEAD",
    ]))
    .map(|c| c.trim().to_string())
    .unwrap_or_else(|_| "unknown".into());
    let dirty = quiet_output(Command::new("git").args(["-C"]).arg(&root).args([
        "status",
        "--porcelain",
        "--untracked-files=no",
    ]))
    .is_ok_and(|s| !s.trim().is_empty());
    let built = format!(
        "{commit}{}",
        if dirty {
            " with uncommitted changes"
        } else {
            ""
        }
    );
    let mut md = format!(
        "# Benchmark results\n\nWritten by `cargo xtask bench` on this machine (2 vCPU VM, Linux 6.18), profiler built from {built}; regenerate to update.\n\n| what | result | method |\n|---|---|---|\n",
    );
    for r in &rows {
        md.push_str(&format!("| {} | {} | {} |\n", r.what, r.value, r.method));
    }
    md.push_str(&format!(
        "\nThe whole bench took {minutes:.1} min{}.\n",
        if quick() {
            " (BENCH_QUICK: one round each, short recordings)"
        } else {
            ""
        }
    ));
    let json = format!(
        "{{\"minutes\":{minutes:.2},\"quick\":{},\"built_from\":\"{built}\",\"results\":[{}]}}\n",
        quick(),
        rows.iter()
            .map(|r| r.json.as_str())
            .collect::<Vec<_>>()
            .join(",")
    );
    fs::write(out.join("results.md"), &md).map_err(|e| e.to_string())?;
    fs::write(out.join("results.json"), json).map_err(|e| e.to_string())?;
    print!("{md}");
    step(&format!("wrote {}", out.join("results.md").display()));
    Ok(())
}

/// An HTTP sink for `profiler agent`: answers every POST with 200 and counts requests and
/// body bytes. Plain std (xtask stays dependency-free); one thread per connection is plenty
/// for a few requests a minute.
struct Sink {
    port: u16,
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

fn http_sink() -> Result<Sink> {
    use std::sync::{Arc, atomic::AtomicU64, atomic::Ordering};
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bench sink: {e}"))?;
    let port = listener
        .local_addr()
        .map_err(|e| format!("bench sink: {e}"))?
        .port();
    let requests = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (r, b) = (requests.clone(), bytes.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(|s| s.ok()) {
            let (r, b) = (r.clone(), b.clone());
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 65536];
                let mut body_len = None;
                loop {
                    let n = match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = body_len
                        .get_or_insert_with(|| {
                            head.lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0)
                        })
                        .to_owned();
                    if buf.len() >= end + 4 + len {
                        r.fetch_add(1, Ordering::Relaxed);
                        b.fetch_add(len as u64, Ordering::Relaxed);
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                        return;
                    }
                }
            });
        }
    });
    Ok(Sink {
        port,
        requests,
        bytes,
    })
}

/// Resident memory of a process now, from /proc (kB): all of it, the anonymous part (what the
/// process itself holds) and the pages of files it maps (page cache, which the kernel takes
/// back under pressure).
#[derive(Clone, Copy)]
struct Rss {
    total: f64,
    anon: f64,
    file: f64,
}

fn rss_kb(pid: u32) -> Option<Rss> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |key: &str| -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some(Rss {
        total: field("VmRSS:")?,
        anon: field("RssAnon:")?,
        file: field("RssFile:")?,
    })
}

/// `profiler agent --all` with its defaults (19 Hz, 15 s windows) on a busy machine for ten
/// minutes (`BENCH_AGENT_SECS` shortens it, to check the bench), pushing to a sink in this
/// process: its CPU share, its memory (peak, and resident after the first minute and at the
/// end, to show growth) and the bytes pushed per minute.
fn agent_cost(dir: &Path, rows: &mut Vec<Row>) -> Result {
    use std::sync::atomic::Ordering;
    let bin = dir.join("threads");
    compile(&bin, "threads.c", &[])?;
    let secs: f64 = match std::env::var("BENCH_AGENT_SECS") {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("BENCH_AGENT_SECS={v}: a number of seconds"))?,
        Err(_) if quick() => 30.0,
        Err(_) => 600.0,
    };
    let target = threads_target(&bin, secs + 30.0)?;
    let sink = http_sink()?;
    step(&format!(
        "agent cost: `profiler agent --all`, {secs} s, defaults"
    ));
    let mut cmd = Command::new(profiler_bin());
    cmd.args([
        "agent",
        "--all",
        "--duration",
        &format!("{secs}s"),
        "--push",
    ])
    .arg(format!("http://127.0.0.1:{}", sink.port));
    let (child, live) = spawn_recording(cmd)?;
    let pid = child.id();
    let mut rss_1min = None;
    let mut rss_end = None;
    while live.elapsed().as_secs_f64() < secs - 1.0 {
        std::thread::sleep(Duration::from_secs(1));
        if rss_1min.is_none()
            && live.elapsed() >= Duration::from_secs(60).min(Duration::from_secs_f64(secs / 2.0))
        {
            rss_1min = rss_kb(pid);
        }
        rss_end = rss_kb(pid).or(rss_end);
    }
    let usage = wait_usage(&child)?;
    target.stop();
    if !usage.success {
        return Err("profiler agent failed".into());
    }
    let minutes = secs / 60.0;
    let bytes = sink.bytes.load(Ordering::Relaxed) as f64;
    let requests = sink.requests.load(Ordering::Relaxed);
    let mb = |kb: Option<f64>| kb.map_or(f64::NAN, |k| k / 1024.0);
    let total = |r: Option<Rss>| mb(r.map(|r| r.total));
    let anon = |r: Option<Rss>| mb(r.map(|r| r.anon));
    let file = |r: Option<Rss>| mb(r.map(|r| r.file));
    rows.push(Row {
        what: format!("`agent --all` (19 Hz, 15 s windows, Pyroscope push), {secs:.0} s on a busy machine"),
        value: format!(
            "{:.2}% of one CPU ({:.1} s CPU), peak RSS {:.0} MB; resident {:.0} MB after {:.0} s ({:.0} MB anonymous, {:.0} MB of mapped files), {:.0} MB at the end ({:.0} MB anonymous, {:.0} MB of files); {:.0} KB pushed per minute in {requests} requests",
            usage.cpu_s / secs * 100.0,
            usage.cpu_s,
            usage.max_rss_mb,
            total(rss_1min),
            (secs / 2.0).min(60.0),
            anon(rss_1min),
            file(rss_1min),
            total(rss_end),
            anon(rss_end),
            file(rss_end),
            bytes / minutes / 1024.0,
        ),
        method: "tests/targets/threads.c spinning on both CPUs; `profiler agent --all --duration SECS --push http://127.0.0.1:PORT` with every other option at its default, pushing to an HTTP sink in the bench process that answers 200 and counts body bytes; CPU = utime+stime and ru_maxrss from wait4 (recording, symbolizing each window, building pprof and pushing); VmRSS, RssAnon and RssFile read from /proc every second; one run".into(),
        json: format!(
            "{{\"name\":\"agent_cost\",\"seconds\":{secs},\"cpu_s\":{},\"cpu_pct\":{},\"peak_rss_mb\":{},\"rss_1min_mb\":{},\"rss_end_mb\":{},\"anon_1min_mb\":{},\"anon_end_mb\":{},\"bytes_per_min\":{},\"requests\":{requests}}}",
            num(usage.cpu_s),
            num(usage.cpu_s / secs * 100.0),
            num(usage.max_rss_mb),
            num(total(rss_1min)),
            num(total(rss_end)),
            num(anon(rss_1min)),
            num(anon(rss_end)),
            num(bytes / minutes),
        ),
    });
    Ok(())
}
