//! Outputs of a recording of several processes (`profiler run -- sh -c '…'` starting three
//! programs of different names at once): folded roots grouped per process name by default,
//! `--group-by process|none` (in `run` and again in `report`), the per-process table of the
//! summary, and one Perfetto process track per process, named, with its threads.
use std::collections::{BTreeMap, HashMap};

use profiler_tests::*;

const NAMES: [&str; 3] = ["alpha", "bravo", "charlie"];
/// The program whose forked shell burns CPU before it execs (~130 ms in dash here), and
/// which is later flagged as a kernel thread.
const PRE_EXEC: usize = 1;
const PRE_EXEC_SPIN: &str = "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; ";

/// Samples per root frame.
fn by_root(f: &[(Vec<String>, u64)]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (frames, n) in f {
        *m.entry(frames[0].clone()).or_default() += n;
    }
    m
}

/// `profiler report DIR --format folded --group-by GROUP -o -` as folded lines.
fn report_folded(dir: &std::path::Path, group: &str) -> Vec<(Vec<String>, u64)> {
    let out = profiler()
        .arg("report")
        .arg(dir)
        .args(["--format", "folded", "--group-by", group])
        .output()
        .expect("report runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').expect("`stack count` lines");
            (
                stack.split(';').map(str::to_string).collect(),
                n.parse().expect("count"),
            )
        })
        .collect()
}

#[test]
fn several_processes_are_grouped_tabled_and_tracked_per_process() {
    // comm → hot function; comm is the file name (under 15 characters, not cut).
    let mut programs: Vec<(String, String, std::path::PathBuf)> = Vec::new();
    for name in NAMES {
        let hot = format!("burn_{name}");
        let mut flags: Vec<String> = C_FP.iter().map(|s| s.to_string()).collect();
        flags.push(format!("-DHOT={hot}"));
        let bin = build_c(name, "named.c", &flags);
        let comm = bin
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name")
            .to_string();
        assert!(comm.len() <= 15, "{comm} would be cut in comm");
        programs.push((comm, hot, bin));
    }
    // The three at once; each prints its pid so `[pid]` roots can be checked. The second
    // spins in its forked shell before its exec, so some of its process's samples are
    // always rooted under `sh`, not under its name: per-process counts must take them in.
    let script: String = programs
        .iter()
        .enumerate()
        .map(|(i, (comm, _, bin))| {
            let spin = if i == PRE_EXEC { PRE_EXEC_SPIN } else { "" };
            format!("({spin}exec {} 1.5) & echo \"{comm} $!\"; ", bin.display())
        })
        .chain(std::iter::once("wait".to_string()))
        .collect();
    let dir = OutDir::new(scratch("many"));
    let o = profiler()
        .args(["run", "--quiet", "--frequency", "199", "--output"])
        .arg(&*dir)
        .args(["--", "sh", "-c", &script])
        .output()
        .expect("profiler runs");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("stdout: {stdout}\nstderr: {}", stderr_of(&o));
    assert!(o.status.success(), "{}", stderr_of(&o));
    let pids: HashMap<String, u32> = printed_values(&stdout);
    assert_eq!(pids.len(), 3, "three pids printed: {stdout}");

    // Default: one root per process name, no `[pid]`.
    let f = folded(&dir);
    let roots = by_root(&f);
    eprintln!("roots (default): {roots:?}");
    let all = total(&f);
    for (comm, hot, _) in &programs {
        let n = roots.get(comm).copied().unwrap_or(0);
        assert!(n >= 30, "{comm}: {n} samples under its own root of {all}");
        // Its samples are its own program's: its hot function, never another's.
        let own: u64 = f
            .iter()
            .filter(|(fr, _)| &fr[0] == comm && fr.iter().any(|x| x == hot))
            .map(|(_, n)| n)
            .sum();
        assert!(own * 10 >= n * 8, "{comm}: {own} of {n} in {hot}");
        let foreign = f
            .iter()
            .filter(|(fr, _)| &fr[0] == comm)
            .any(|(fr, _)| fr.iter().any(|x| x.starts_with("burn_") && x != hot));
        assert!(!foreign, "{comm} has another program's function");
    }
    assert!(
        roots.keys().all(|r| !r.ends_with(']')),
        "no [pid] by default: {roots:?}"
    );

    // `--group-by process` (re-rendered by report): `comm [pid]`, the same samples per process.
    let p = by_root(&report_folded(&dir, "process"));
    eprintln!("roots (process): {p:?}");
    for (comm, _, _) in &programs {
        let key = format!("{comm} [{}]", pids[comm]);
        assert_eq!(p.get(&key), roots.get(comm), "{key} in {p:?}");
    }
    assert!(p.keys().all(|r| r.ends_with(']')), "{p:?}");
    let of_pid = |pid: u32| -> u64 {
        let suffix = format!(" [{pid}]");
        p.iter()
            .filter(|(k, _)| k.ends_with(&suffix))
            .map(|(_, n)| n)
            .sum()
    };
    let pre_exec = format!("sh [{}]", pids[&programs[PRE_EXEC].0]);
    assert!(
        p.get(&pre_exec).is_some_and(|&n| n > 0),
        "{pre_exec}: its samples before its exec in {p:?}"
    );
    // `--group-by none`: no grouping frame. Its stacks are the default's with the root
    // dropped, the same samples each.
    let n = report_folded(&dir, "none");
    assert_eq!(total(&n), all);
    let firsts = by_root(&n);
    eprintln!("roots (none): {firsts:?}");
    for (comm, _, _) in &programs {
        assert!(!firsts.contains_key(comm), "{comm} is a root with none");
    }
    let mut rootless: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for (frames, c) in &f {
        // A stack without frames is named so rather than left empty.
        let rest = if frames.len() > 1 {
            frames[1..].to_vec()
        } else {
            vec!["[no stack]".to_string()]
        };
        *rootless.entry(rest).or_default() += c;
    }
    let none: BTreeMap<Vec<String>, u64> = n.into_iter().collect();
    assert_eq!(none, rootless);

    // The summary's per-process table: every program, shares summing to 100%, each one's
    // hottest function its own.
    let s = summary(&dir);
    let table = s["processes"].as_array().expect("processes table");
    let sum: f64 = table.iter().filter_map(|p| p["percent"].as_f64()).sum();
    assert!((sum - 100.0).abs() < 0.01, "shares sum to {sum}");
    let samples: u64 = table.iter().filter_map(|p| p["samples"].as_u64()).sum();
    assert_eq!(Some(samples), s["samples"]["recorded"].as_u64());
    for (comm, hot, _) in &programs {
        let row = table
            .iter()
            .find(|p| p["pid"].as_u64() == Some(u64::from(pids[comm])))
            .unwrap_or_else(|| panic!("{comm} in the table: {table:?}"));
        assert_eq!(row["comm"].as_str(), Some(comm.as_str()));
        // The table is per process: a sample taken between its fork and its exec is the
        // process's too, though folded stacks root it under the name it had then (`sh`).
        assert_eq!(
            row["samples"].as_u64(),
            Some(of_pid(pids[comm])),
            "{comm}: {p:?}"
        );
        assert_eq!(row["top_self"][0]["name"].as_str(), Some(hot.as_str()));
        let top = row["top_self"].as_array().map_or(0, Vec::len);
        assert!((1..=3).contains(&top), "{comm}: {top} top functions");
        // A third of the CPU each, give or take what the other engineers' builds take.
        let share = row["percent"].as_f64().unwrap_or(0.0);
        assert!(share > 15.0, "{comm}: {share:.1}%");
    }
    // The same samples per process as pprof's own reading of the `pid` labels.
    let out = std::process::Command::new("go")
        .args([
            "tool",
            "pprof",
            "-symbolize=none",
            "-sample_index=samples",
            "-tags",
        ])
        .arg(dir.join("profile.pb.gz"))
        .output()
        .expect("go runs (cargo xtask setup installs golang-go)");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let tags = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid_counts: HashMap<u64, u64> = tags
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("pid:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let (count, pid) = l.trim().split_once(' ')?;
            let pid = pid.rsplit(": ").next()?.parse().ok()?;
            Some((pid, count.parse::<f64>().ok()? as u64))
        })
        .collect();
    assert!(!pid_counts.is_empty(), "pid tags in {tags}");
    for row in table {
        let pid = row["pid"].as_u64().expect("pid");
        assert_eq!(
            pid_counts.get(&pid).copied(),
            row["samples"].as_u64(),
            "pid {pid}"
        );
    }
    assert_eq!(pid_counts.len(), table.len());
    let text = std::fs::read_to_string(dir.join("summary.txt")).expect("summary.txt");
    assert!(text.contains("\nProcesses ("), "{text}");
    for (comm, hot, _) in &programs {
        assert!(
            text.lines().any(|l| l.contains(&pids[comm].to_string())
                && l.contains(comm)
                && l.contains(hot)),
            "{comm} row in summary.txt"
        );
    }

    // Perfetto, decoded with the official schema: one process track per process, named,
    // and every thread track under its own process's.
    let trace = decode_perfetto(&dir.join("trace.perfetto-trace"));
    check_perfetto(&trace);
    let mut process_tracks: HashMap<u64, (u64, String)> = HashMap::new(); // pid → (uuid, name)
    let mut thread_parent: HashMap<u64, (u64, u64)> = HashMap::new(); // tid → (pid, parent)
    for t in trace
        .all("packet")
        .filter_map(|p| p.child("track_descriptor"))
    {
        let uuid = t.get_u64("uuid").expect("uuid");
        if let Some(pr) = t.child("process") {
            let pid = pr.get_u64("pid").expect("pid");
            let name = pr.get("process_name").unwrap_or("").trim_matches('"');
            let before = process_tracks.insert(pid, (uuid, name.to_string()));
            assert!(before.is_none(), "two process tracks for {pid}");
        }
        if let Some(th) = t.child("thread") {
            let tid = th.get_u64("tid").expect("tid");
            let pid = th.get_u64("pid").expect("pid");
            thread_parent.insert(tid, (pid, t.get_u64("parent_uuid").unwrap_or(0)));
        }
    }
    for (comm, _, _) in &programs {
        let pid = u64::from(pids[comm]);
        let (uuid, name) = process_tracks
            .get(&pid)
            .unwrap_or_else(|| panic!("process track of {comm}"));
        assert_eq!(name, comm);
        assert_eq!(
            thread_parent.get(&pid),
            Some(&(pid, *uuid)),
            "{comm} thread"
        );
    }
    for (tid, (pid, parent)) in &thread_parent {
        let own = process_tracks.get(pid).map(|t| t.0);
        assert_eq!(own, Some(*parent), "thread {tid} under its process {pid}");
    }

    // Kernel threads are left out unless asked. None can be in scope yet, so one program is
    // flagged the way /proc flags a kernel thread, in a copy of the recording.
    let (hidden_comm, _, _) = &programs[PRE_EXEC];
    let hidden_pid = pids[hidden_comm];
    let mut rec = profiler::outputs::recording::read(&dir.join("recording.pb")).expect("read");
    let p = rec
        .processes
        .iter_mut()
        .find(|p| p.pid == hidden_pid)
        .expect("process entry");
    p.kernel_thread = true;
    let flagged = OutDir::new(scratch("many-kthread"));
    std::fs::create_dir_all(&*flagged).expect("mkdir");
    std::fs::write(
        flagged.join("recording.pb"),
        profiler::outputs::recording::encode(&rec),
    )
    .expect("write recording");
    let report = |out: &str, extra: &[&str]| {
        let o = profiler()
            .arg("report")
            .arg(&*flagged)
            .arg("--output")
            .arg(flagged.join(out))
            .args(extra)
            .output()
            .expect("report runs");
        assert!(o.status.success(), "{}", stderr_of(&o));
        flagged.join(out)
    };
    let tracked = |dir: &std::path::Path| -> Vec<u64> {
        let trace = decode_perfetto(&dir.join("trace.perfetto-trace"));
        check_perfetto(&trace);
        trace
            .all("packet")
            .filter_map(|p| {
                p.child("track_descriptor")?
                    .child("process")?
                    .get_u64("pid")
            })
            .collect()
    };
    // Hidden per process: its samples under `sh` before its exec go with it.
    let hidden_samples = of_pid(hidden_pid);
    let without = report("default", &[]);
    assert!(!by_root(&folded(&without)).contains_key(hidden_comm));
    assert_eq!(total(&folded(&without)), all - hidden_samples);
    let s = summary(&without);
    assert_eq!(s["kernel_tasks_hidden"]["processes"], 1);
    assert_eq!(s["kernel_tasks_hidden"]["samples"], hidden_samples);
    let rows = s["processes"].as_array().expect("table");
    assert!(rows.iter().all(|r| r["pid"] != hidden_pid));
    let sum: f64 = rows.iter().filter_map(|p| p["percent"].as_f64()).sum();
    assert!((sum - 100.0).abs() < 0.01, "shares of what is shown: {sum}");
    assert!(!tracked(&without).contains(&u64::from(hidden_pid)));
    let with = report("with", &["--kernel-threads"]);
    assert_eq!(
        by_root(&folded(&with)).get(hidden_comm),
        roots.get(hidden_comm)
    );
    assert_eq!(total(&folded(&with)), all);
    assert_eq!(summary(&with)["kernel_tasks_hidden"]["samples"], 0);
    assert!(tracked(&with).contains(&u64::from(hidden_pid)));
}
