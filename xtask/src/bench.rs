//! `cargo xtask bench`: the profiler's costs, measured against a baseline in the same run.
//! Rounds are interleaved (baseline, measured, baseline, …) and the target is pinned to one CPU
//! and the profiler to the other, because this machine's run-to-run noise is ±10-20%.
//! Results: bench/results.md (a table, each figure with its method) and bench/results.json.
use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{Result, compile_c as compile, profiler_bin, step, workspace_root};

const ROUNDS: usize = 5;

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

fn json_number(text: &str, key: &str) -> Option<f64> {
    // summary.json is ours and flat enough for a key search; keeps xtask dependency-free.
    let at = text.find(&format!("\"{key}\":"))?;
    let rest = text[at + key.len() + 3..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A target started pinned to CPU 1, past its "ready" line.
struct Target {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Target {
    fn start(bin: &Path, args: &[&str]) -> Result<Self> {
        let mut child = Command::new("taskset")
            .args(["-c", "1"])
            .arg(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        if !line.starts_with("ready") {
            return Err(format!("{} said {line:?} instead of ready", bin.display()));
        }
        Ok(Self { child, out })
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
}

/// Starts the profiler pinned to CPU 0 on `pid` and returns once its probes are live.
fn start_profiler(pid: u32, out: &Path, args: &[&str]) -> Result<std::process::Child> {
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(profiler_bin())
        .args(["record", "--quiet", "--pid", &pid.to_string(), "--output"])
        .arg(out)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting the profiler: {e}"))?;
    let mut err = BufReader::new(child.stderr.take().ok_or("no stderr")?);
    let mut line = String::new();
    loop {
        line.clear();
        if err.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err(format!("profiler ended before recording: {line}"));
        }
        if line.starts_with("profiler: recording") {
            break;
        }
    }
    // Keep draining stderr so the profiler never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = err.read_to_string(&mut sink);
    });
    Ok(child)
}

fn seconds_of(printed: &str) -> Result<f64> {
    printed
        .split_whitespace()
        .skip_while(|w| *w != "seconds")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no `seconds` in {printed:?}"))
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
    let (mut alone, mut probed, mut lost) = (Vec::new(), Vec::new(), 0.0);
    for round in 0..ROUNDS {
        step(&format!("span probes: round {}/{ROUNDS}", round + 1));
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
        let summary = fs::read_to_string(out.join("summary.json")).map_err(|e| e.to_string())?;
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
            "100k-span burst (tests/targets/burst.c, one thread, pinned to CPU 1) alone vs under `profiler record` (pinned to CPU 0), {ROUNDS} interleaved rounds, median of per-round differences"
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
            "{:.2} M events/s, {} events lost in {ROUNDS} × 400k",
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

/// The sampler: kernel-side cost per sample and attach latency at two rates.
fn sampling_cost(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let bin = dir.join("split");
    compile(&bin, "split.c", &[])?;
    for hz in ["99", "999"] {
        let (mut ns, mut attach) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            step(&format!(
                "sampling at {hz} Hz: round {}/{ROUNDS}",
                round + 1
            ));
            let t = Target::start(&bin, &["8"])?;
            let out = dir.join("split-profile");
            let _ = fs::remove_dir_all(&out);
            let mut p =
                start_profiler(t.child.id(), &out, &["--frequency", hz, "--duration", "5"])?;
            p.wait().map_err(|e| e.to_string())?;
            let mut t = t;
            let _ = t.child.kill();
            let _ = t.finish();
            let s = fs::read_to_string(out.join("summary.json")).map_err(|e| e.to_string())?;
            let runs = json_number(&s, "bpf_runs").unwrap_or(f64::NAN);
            let per_run = json_number(&s, "bpf_ns_per_run").unwrap_or(f64::NAN);
            let seen = json_number(&s, "seen_by_kernel").unwrap_or(f64::NAN);
            ns.push(runs * per_run / seen);
            attach.push(json_number(&s, "load_attach_ms").unwrap_or(f64::NAN));
        }
        let n = stat(ns);
        let a = stat(attach);
        rows.push(Row {
            what: format!("BPF cost per target sample at {hz} Hz"),
            value: format!("{:.0} ns (spread {:.0}–{:.0})", n.median, n.min, n.max),
            method: format!(
                "kernel BPF run-time statistics (BPF_ENABLE_STATS): run time of the sampling program over 5 s / samples of the target (CPU-bound split.c), {ROUNDS} rounds"
            ),
            json: format!(
                "{{\"name\":\"bpf_ns_per_sample\",\"hz\":{hz},\"median\":{:.1},\"min\":{:.1},\"max\":{:.1}}}",
                n.median, n.min, n.max
            ),
        });
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

/// Runs `cmd`, which ends by running the workload; returns the CPU seconds the workload
/// reported for itself.
fn workload_cpu(cmd: &mut Command) -> Result<f64> {
    let out = cmd
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "cpu_s")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{cmd:?} printed no cpu_s: {text}"))
}

/// Target slowdown and per-sample cost against perf and bpftrace, same workload, same rates.
/// The workload runs pinned to CPU 1, each profiler on CPU 0; per round every variant runs
/// once, in the same order, so drift hits all alike.
fn slowdown(dir: &Path, rows: &mut Vec<Row>) -> Result {
    let work = dir.join("work");
    compile(&work, "work.c", &[])?;
    let work_cmd = format!("taskset -c 1 {} 1 300", work.display());
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
    let rates = ["99", "999", "9999"];
    // (tool, rate) → per-round (cpu under tool, cpu alone in the same round).
    type Rounds = Vec<(f64, f64)>;
    let mut results: Vec<((String, String), Rounds)> = Vec::new();
    for round in 0..ROUNDS {
        step(&format!("slowdown: round {}/{ROUNDS}", round + 1));
        for tool in &tools {
            for hz in rates {
                let mut cmd = Command::new("taskset");
                // bpftrace aggregates in the kernel and idles in userspace until the end; it
                // runs on the workload's CPU because it refuses `taskset` as its -c command,
                // and its child inherits its CPU.
                cmd.args(["-c", if *tool == "bpftrace" { "1" } else { "0" }]);
                match *tool {
                    "profiler" => {
                        cmd.arg(profiler_bin())
                            .args(["run", "--quiet", "--frequency", hz, "--output"])
                            .arg(dir.join("slowdown-profile"))
                            .args(["--", "sh", "-c", &work_cmd]);
                    }
                    "perf" => {
                        cmd.args(["perf", "record", "-q", "-g", "-F", hz, "-o"])
                            .arg(dir.join("perf.data"))
                            .args(["--", "sh", "-c", &work_cmd]);
                    }
                    _ => {
                        let prog = format!(
                            "profile:hz:{hz} /pid == cpid/ {{ @[ustack] = count(); }} END {{ clear(@); }}"
                        );
                        cmd.args(["bpftrace", "-q", "-e", &prog, "-c"])
                            .arg(format!("{} 1 300", work.display()));
                    }
                }
                // Each measured run has its own baseline right beside it, alternately before
                // and after, so drift and warm-up do not favour either side.
                let alone = || workload_cpu(Command::new("sh").args(["-c", &work_cmd]));
                let (cpu, alone) = if round % 2 == 0 {
                    let a = alone()?;
                    (workload_cpu(&mut cmd)?, a)
                } else {
                    let c = workload_cpu(&mut cmd)?;
                    (c, alone()?)
                };
                let key = (tool.to_string(), hz.to_string());
                match results.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, v)) => v.push((cpu, alone)),
                    None => results.push((key, vec![(cpu, alone)])),
                }
            }
        }
    }
    for ((tool, hz), v) in &results {
        let hz_f: f64 = hz.parse().unwrap_or(1.0);
        let ratio = stat(v.iter().map(|(c, a)| c / a).collect());
        let us = stat(v.iter().map(|(c, a)| (c - a) / (hz_f * a) * 1e6).collect());
        rows.push(Row {
            what: format!("slowdown under {tool} at {hz} Hz"),
            value: format!(
                "×{:.3} CPU time (spread {:.3}–{:.3}); {:.1} µs per sample (spread {:.1}–{:.1})",
                ratio.median, ratio.min, ratio.max, us.median, us.min, us.max
            ),
            method: format!(
                "tests/targets/work.c (fixed work, 1 thread, its own getrusage CPU time) pinned to CPU 1, the tool on CPU 0; ratio to an unprofiled run right beside it (alternately before and after); µs/sample = extra CPU / (rate × unprofiled CPU); {ROUNDS} interleaved rounds; tool = {}",
                match tool.as_str() {
                    "profiler" => "`profiler run`",
                    "perf" => "`perf record -g` (frame pointers)",
                    _ => "`bpftrace profile:hz ustack`",
                }
            ),
            json: format!(
                "{{\"name\":\"slowdown\",\"tool\":\"{tool}\",\"hz\":{hz},\"ratio_median\":{:.4},\"ratio_min\":{:.4},\"ratio_max\":{:.4},\"us_per_sample_median\":{:.2}}}",
                ratio.median, ratio.min, ratio.max, us.median
            ),
        });
    }
    Ok(())
}

pub fn bench() -> Result {
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
    span_cost(&dir, &mut rows)?;
    sampling_cost(&dir, &mut rows)?;
    slowdown(&dir, &mut rows)?;
    // Let the machine settle between benchmark runs of the same session.
    std::thread::sleep(Duration::from_millis(10));

    let out = root.join("bench");
    fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut md = String::from(
        "# Benchmark results\n\nWritten by `cargo xtask bench` on this machine (2 vCPU VM, Linux 6.18); regenerate to update.\n\n| what | result | method |\n|---|---|---|\n",
    );
    for r in &rows {
        md.push_str(&format!("| {} | {} | {} |\n", r.what, r.value, r.method));
    }
    let json = format!(
        "{{\"results\":[{}]}}\n",
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
