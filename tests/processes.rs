//! Short-lived processes and the files they map: every process named from the mappings the
//! kernel reported as they happened (side-band records), one module store for the recording.
use std::{
    path::{Path, PathBuf},
    process::{Output, Stdio},
    time::Duration,
};

use profiler_tests::*;

fn run(out: &Path, args: &[&str], script: &str) -> Output {
    let o = profiler()
        .args(["run", "--quiet", "--output"])
        .arg(out)
        .args(args)
        .args(["--", "sh", "-c", script])
        .stdout(Stdio::null())
        .output()
        .expect("profiler runs");
    eprintln!("stderr: {}", stderr_of(&o));
    assert!(o.status.success(), "{}", stderr_of(&o));
    o
}

fn short(name: &str, extra: &[&str]) -> PathBuf {
    let mut flags: Vec<&str> = C_FP.to_vec();
    flags.extend(extra);
    build_c(name, "short.c", &flags)
}

/// A frame nobody could name would read `[unknown]` or `module+0xOFFSET`: those of the
/// program, libc and the loader must never (the shell driving them is stripped).
fn unnamed(frame: &str, program: &str) -> bool {
    frame.contains("[unknown]")
        || [program, "libc.so.6", "ld-linux-x86-64.so.2"]
            .iter()
            .any(|m| frame.starts_with(&format!("{m}+0x")))
}

/// Samples of the processes listed in `times` (short.c's SHORT_TIMES lines: pid, main's
/// entry and exit on CLOCK_BOOTTIME) taken between those two instants, and how many of them
/// have `main` in their stack.
fn samples_while_main_ran(dir: &Path, times: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(times).expect("SHORT_TIMES file");
    let mut ran = std::collections::HashMap::new();
    for line in text.lines() {
        let f: Vec<u64> = line
            .split(' ')
            .map(|x| x.parse().expect("number"))
            .collect();
        ran.insert(f[0] as u32, (f[1], f[2]));
    }
    assert!(
        ran.len() >= 290,
        "{} processes wrote their times",
        ran.len()
    );
    let rec = profiler::outputs::recording::read(&dir.join("recording.pb")).expect("read");
    let (mut inside, mut named) = (0, 0);
    for s in &rec.samples {
        let Some(&(enter, exit)) = ran.get(&s.pid) else {
            continue;
        };
        if s.timestamp_ns < enter || s.timestamp_ns > exit {
            continue;
        }
        inside += 1;
        let frames = rec.frames(s.stack);
        if frames
            .iter()
            .any(|f| f.name == profiler::model::FrameName::Function("main"))
        {
            named += 1;
        }
    }
    (inside, named)
}

#[test]
fn three_hundred_short_processes_are_all_named() {
    let bin = short("short-many", &[]);
    let dir = scratch("many-short");
    // 300 processes of 5 to 20 ms of CPU each, fork + exec from a shell; each says when its
    // main ran.
    let times = dir.with_extension("times");
    let _ = std::fs::remove_file(&times);
    let script = format!(
        "export SHORT_TIMES={}; i=0; while [ $i -lt 300 ]; do {} $((5 + i % 16)); i=$((i+1)); done",
        times.display(),
        bin.display()
    );
    // One root per process (`name [pid]`): processes are told apart by it.
    run(
        &dir,
        &["--frequency", "999", "--group-by", "process"],
        &script,
    );
    let name = bin.file_name().and_then(|n| n.to_str()).expect("name");
    let comm = &name[..name.len().min(15)];
    let f = folded(&dir);
    let mine: Vec<&(Vec<String>, u64)> = f.iter().filter(|(s, _)| s[0].starts_with(comm)).collect();
    let processes: std::collections::HashSet<&str> =
        mine.iter().map(|(s, _)| s[0].as_str()).collect();
    let total: u64 = mine.iter().map(|(_, n)| n).sum();
    let named: u64 = mine
        .iter()
        .filter(|(s, _)| !s.iter().any(|fr| unnamed(fr, name)))
        .map(|(_, n)| n)
        .sum();
    let through_main: u64 = mine
        .iter()
        .filter(|(s, _)| s.iter().any(|fr| fr == "main"))
        .map(|(_, n)| n)
        .sum();
    let in_spin: u64 = mine
        .iter()
        .filter(|(s, _)| s.windows(2).any(|w| w[0] == "main" && w[1] == "spin"))
        .map(|(_, n)| n)
        .sum();
    let pct = |n: u64| n as f64 * 100.0 / total.max(1) as f64;
    eprintln!(
        "{} processes, {total} samples: {:.1}% fully named, {:.1}% through main, {:.1}% in main;spin",
        processes.len(),
        pct(named),
        pct(through_main),
        pct(in_spin)
    );
    for (s, n) in mine
        .iter()
        .filter(|(s, _)| s.iter().any(|fr| unnamed(fr, name)))
    {
        eprintln!("  unnamed: {n} {}", s.join(";"));
    }
    assert!(
        processes.len() >= 290,
        "{} processes sampled",
        processes.len()
    );
    assert!(total >= 2000, "{total} samples");
    assert!(pct(named) >= 99.0, "{:.1}% fully named", pct(named));
    // Between fork and exec each child is still the shell: those samples are the shell's.
    let shell: u64 = mine
        .iter()
        .filter(|(s, _)| {
            s.iter()
                .any(|fr| fr.starts_with("dash+0x") || fr.starts_with("bash+0x"))
        })
        .map(|(_, n)| n)
        .sum();
    assert_eq!(shell, 0, "shell code charged to {comm}");
    // Their stacks are shallow (well under the 16 KiB copied): whatever ended early ended in
    // code without unwind information, and the advice must not be a larger --stack-size.
    let warnings = summary(&dir)["warnings"].to_string();
    assert!(!warnings.contains("raise --stack-size"), "{warnings}");
    // What is not under main is each process's start (the exec, the dynamic loader) and its
    // exit: about 0.8 ms of each process, more on a cold or busy machine (92.6-93.7% through
    // main here; perf -g: 94.6%).
    assert!(
        pct(through_main) >= 75.0,
        "{:.1}% through main",
        pct(through_main)
    );
    // While main ran (by the process's own clock), every stack must reach it: a sample that
    // does not was misnamed or cut short, whatever the exec and the loader cost around it.
    let (in_main, in_main_named) = samples_while_main_ran(&dir, &times);
    let share = |n: u64, of: u64| n as f64 * 100.0 / of.max(1) as f64;
    eprintln!(
        "{in_main} samples ({:.1}%) taken while main ran, {:.2}% of them through main",
        pct(in_main),
        share(in_main_named, in_main)
    );
    assert!(in_main * 10 >= total * 8, "{in_main} of {total} in main");
    assert!(
        share(in_main_named, in_main) >= 98.0,
        "{in_main_named} of {in_main} samples taken while main ran reach main"
    );
    let _ = std::fs::remove_file(&times);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The values of a map keyed by `name [pid]`, in the order of the pids: the keys' own order
/// puts `[100000]` before `[99999]`.
fn in_pid_order<T: Copy>(by_process: &std::collections::BTreeMap<&str, T>) -> Vec<T> {
    let pid = |k: &str| {
        k.rsplit('[')
            .next()
            .and_then(|r| r.trim_end_matches(']').parse::<u32>().ok())
            .unwrap_or(0)
    };
    let mut v: Vec<(u32, T)> = by_process.iter().map(|(k, &c)| (pid(k), c)).collect();
    v.sort_by_key(|&(p, _)| p);
    v.into_iter().map(|(_, c)| c).collect()
}

/// Samples of one file's children per child, in pid order: (in `first_version`, in
/// `second_version`, all). Two builds that differ only in their spin function's name run in
/// turn from one path; `replace` puts the second build at `{bin}` between the two runs.
/// Returns the counts, the recording's directory and the path.
fn two_builds_in_turn(tag: &str, replace: &str) -> (Vec<(u64, u64, u64)>, PathBuf, PathBuf) {
    let first = short(&format!("{tag}-first"), &["-DSPIN=first_version"]);
    let second = short(&format!("{tag}-second"), &["-DSPIN=second_version"]);
    let dir = scratch(tag);
    let bin = dir.with_extension("bin");
    let replace = replace
        .replace("{second}", &second.display().to_string())
        .replace("{bin}", &bin.display().to_string());
    let script = format!(
        "cp {first} {bin}; {bin} 150; {replace}; {bin} 150",
        first = first.display(),
        bin = bin.display()
    );
    // One root per process (`name [pid]`): processes are told apart by it.
    run(
        &dir,
        &["--frequency", "999", "--group-by", "process"],
        &script,
    );
    let name = bin.file_name().and_then(|n| n.to_str()).expect("name");
    let f = folded(&dir);
    let mut by_process: std::collections::BTreeMap<&str, (u64, u64, u64)> = Default::default();
    for (s, n) in f
        .iter()
        .filter(|(s, _)| s[0].starts_with(&name[..name.len().min(15)]))
    {
        let e = by_process.entry(s[0].as_str()).or_default();
        if s.iter().any(|fr| fr == "first_version") {
            e.0 += n;
        }
        if s.iter().any(|fr| fr == "second_version") {
            e.1 += n;
        }
        e.2 += n;
    }
    eprintln!("first_version / second_version / all samples per process: {by_process:?}");
    let counts = in_pid_order(&by_process);
    assert_eq!(counts.len(), 2, "two children: {by_process:?}");
    (counts, dir, bin)
}

#[test]
fn a_binary_replaced_between_two_children_names_each_from_its_own_file() {
    // Replaced the way a rebuild does it: a new file renamed over the path (a new inode).
    let (counts, dir, bin) =
        two_builds_in_turn("replaced", "cp {second} {bin}.new; mv {bin}.new {bin}");
    // Pids grow: the first child ran the first file.
    let (a, b) = (counts[0], counts[1]);
    assert!(a.0 >= 50 && a.1 == 0, "first child: {a:?}");
    assert!(b.1 >= 50 && b.0 == 0, "second child: {b:?}");
    let _ = std::fs::remove_file(&bin);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plugin reloaded: a library unloaded and another loaded at its very addresses, where the
/// first had other code (`pad`, with a frame 4 KiB larger). An address means the first
/// library's code until the second was mapped, and the second's after: each sample is named,
/// and in DWARF mode unwound, from the library mapped when it was taken. Before, every
/// sample was named from the newest mapping, and the unwinder kept the first library's
/// tables for the second.
#[test]
fn a_library_loaded_where_another_was_unloaded_names_each_ones_samples() {
    let flags = |extra: &[&str]| -> Vec<String> {
        // No frame pointers whatever the toolchain's default: only unwind tables lead on.
        let shared = ["-fPIC", "-shared", "-fomit-frame-pointer"];
        C_NOFP
            .iter()
            .chain(&shared)
            .chain(extra)
            .map(|f| f.to_string())
            .collect()
    };
    let lib_a = build_c(
        "libreload-a.so",
        "reloadlib.c",
        &flags(&["-DHOT=hot_in_a", "-DPAD_FIRST"]),
    );
    let lib_b = build_c("libreload-b.so", "reloadlib.c", &flags(&["-DHOT=hot_in_b"]));
    let bin = build_c("reload", "reload.c", C_FP);
    for mode in ["fp", "dwarf"] {
        let dir = OutDir::new(scratch(&format!("reload-{mode}")));
        let said = scratch(&format!("reload-{mode}-said"));
        let script = format!(
            "{} {} {} 0.8 > {}",
            bin.display(),
            lib_a.display(),
            lib_b.display(),
            said.display()
        );
        run(&dir, &["--frequency", "499", "--call-graph", mode], &script);
        let where_b = std::fs::read_to_string(&said).expect("the target's answer");
        let _ = std::fs::remove_file(&said);
        assert_eq!(
            where_b.trim(),
            "same",
            "the second library's hot function is not where the first had pad()"
        );
        let f = folded(&dir);
        let (a, b) = (
            share(&f, |fr| fr == "hot_in_a"),
            share(&f, |fr| fr == "hot_in_b"),
        );
        eprintln!(
            "{mode}: {} samples, {a:.1}% hot_in_a, {b:.1}% hot_in_b",
            total(&f)
        );
        assert!(
            a > 35.0 && b > 35.0,
            "{mode}: hot_in_a {a:.1}%, hot_in_b {b:.1}%"
        );
        if mode == "dwarf" {
            // The libraries have no frame pointers: only their own tables lead to main.
            for hot in ["hot_in_a", "hot_in_b"] {
                let under: Vec<_> = f
                    .iter()
                    .filter(|(s, _)| s.iter().any(|fr| fr == hot))
                    .cloned()
                    .collect();
                let reach = share(&under, |fr| fr == "main");
                eprintln!("dwarf: {reach:.1}% of {hot}'s samples reach main");
                assert!(reach > 90.0, "{hot}: {reach:.1}% reach main");
            }
        }
    }
}

#[test]
fn a_binary_rewritten_in_place_lends_no_names_and_is_told() {
    // `cp` onto an existing file truncates and writes it: the same inode, other bytes. The
    // two builds differ only in a name, so the second's symbols sit at the first's addresses.
    let (counts, dir, bin) = two_builds_in_turn("rewritten", "cp {second} {bin}");
    let warnings = summary(&dir)["warnings"].to_string();
    eprintln!("warnings: {warnings}");
    // The first child ran bytes that are gone: nameless, never the second build's names.
    let (a, b) = (counts[0], counts[1]);
    assert!(
        a.2 >= 50 && a.1 == 0,
        "first child took the rewritten file's names: {a:?}"
    );
    assert!(
        b.1 >= 50,
        "second child named from the file as it is now: {b:?}"
    );
    assert!(
        warnings.contains("rewritten in place") && warnings.contains(&*bin.to_string_lossy()),
        "told: {warnings}"
    );
    let _ = std::fs::remove_file(&bin);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stripped_binary_is_named_from_its_build_id_debug_file() {
    let full = short("debuglink-full", &["-Wl,--build-id"]);
    let dir = scratch("debug-file");
    std::fs::create_dir_all(&dir).expect("dir");
    let stripped = dir.join("stripped-prog");
    let debug = dir.join("stripped-prog.debug");
    let objcopy = |args: &[&std::ffi::OsStr]| {
        let s = std::process::Command::new("objcopy")
            .args(args)
            .status()
            .expect("objcopy runs");
        assert!(s.success(), "objcopy {args:?}");
    };
    objcopy(&[
        "--only-keep-debug".as_ref(),
        full.as_os_str(),
        debug.as_os_str(),
    ]);
    objcopy(&[
        "--strip-all".as_ref(),
        full.as_os_str(),
        stripped.as_os_str(),
    ]);
    let link = format!("--add-gnu-debuglink={}", debug.display());
    objcopy(&[link.as_ref(), stripped.as_os_str()]);
    // Where Debian's -dbgsym packages put it: /usr/lib/debug/.build-id/xx/rest.debug.
    let readelf = std::process::Command::new("readelf")
        .args(["-n"])
        .arg(&stripped)
        .output()
        .expect("readelf runs");
    let notes = String::from_utf8_lossy(&readelf.stdout);
    let build_id = notes
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: "))
        .expect("the binary has a build id")
        .trim()
        .to_string();
    let id_dir = PathBuf::from(format!("/usr/lib/debug/.build-id/{}", &build_id[..2]));
    std::fs::create_dir_all(&id_dir).expect("debug dir");
    let installed = id_dir.join(format!("{}.debug", &build_id[2..]));
    std::fs::copy(&debug, &installed).expect("install the debug file");
    // The link's file next to the binary must not be what names it.
    std::fs::remove_file(&debug).expect("remove");

    let out = dir.join("out");
    run(
        &out,
        &["--frequency", "499"],
        &format!("{} 400", stripped.display()),
    );
    let _ = std::fs::remove_file(&installed);
    let f = folded(&out);
    let prog: Vec<&(Vec<String>, u64)> = f
        .iter()
        .filter(|(s, _)| s[0].starts_with("stripped-prog"))
        .collect();
    let total: u64 = prog.iter().map(|(_, n)| n).sum();
    let named: u64 = prog
        .iter()
        .filter(|(s, _)| s.windows(2).any(|w| w[0] == "main" && w[1] == "spin"))
        .map(|(_, n)| n)
        .sum();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).expect("summary"))
            .expect("json");
    eprintln!(
        "{named} of {total} samples in main;spin; debug files: {}",
        summary["debug_files"]
    );
    assert!(total >= 100, "{total} samples");
    assert!(
        named * 100 >= total * 95,
        "{named} of {total} named main;spin"
    );
    let used = summary["debug_files"].as_array().expect("debug_files");
    assert!(
        used.iter()
            .any(|d| d["debug_file"] == installed.to_string_lossy().as_ref()
                && d["module"]
                    .as_str()
                    .is_some_and(|m| m.ends_with("stripped-prog"))),
        "{used:?}"
    );
    assert!(
        summary["modules_without_symbols"]
            .as_array()
            .is_some_and(|m| !m
                .iter()
                .any(|p| p.as_str().is_some_and(|p| p.ends_with("stripped-prog")))),
        "not reported as stripped"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Peak open descriptors and peak RSS of a process, polled until it exits.
fn watch(pid: u32, until: impl Fn() -> bool) -> (usize, u64) {
    let (mut fds, mut hwm_kb) = (0usize, 0u64);
    while !until() {
        if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            fds = fds.max(d.count());
        }
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status"))
            && let Some(kb) = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        {
            hwm_kb = hwm_kb.max(kb);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    (fds, hwm_kb)
}

#[test]
fn two_thousand_processes_keep_descriptors_and_memory_bounded() {
    let bin = short("short-2000", &[]);
    let dir = scratch("two-thousand");
    let script = format!(
        "i=0; while [ $i -lt 2000 ]; do {} 1; i=$((i+1)); done",
        bin.display()
    );
    let mut child = profiler()
        .args([
            "run",
            "--quiet",
            "--frequency",
            "999",
            "--group-by",
            "process",
        ])
        .arg("--output")
        .arg(&dir)
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("profiler starts");
    let pid = child.id();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (fds, hwm_kb) = std::thread::scope(|s| {
        let w = s.spawn(|| watch(pid, || done.load(std::sync::atomic::Ordering::Relaxed)));
        let status = child.wait().expect("profiler exits");
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(status.success());
        w.join().expect("watcher")
    });
    let summary = std::fs::read_to_string(dir.join("summary.json")).expect("summary");
    let s: serde_json::Value = serde_json::from_str(&summary).expect("json");
    let name = bin.file_name().and_then(|n| n.to_str()).expect("name");
    let f = folded(&dir);
    let processes: std::collections::HashSet<&str> = f
        .iter()
        .filter(|(st, _)| st[0].starts_with(&name[..name.len().min(15)]))
        .map(|(st, _)| st[0].as_str())
        .collect();
    eprintln!(
        "2000 processes ({} sampled): peak {fds} open descriptors, peak RSS {:.1} MB; warnings {}",
        processes.len(),
        hwm_kb as f64 / 1024.0,
        s["warnings"]
    );
    assert!(
        processes.len() >= 1000,
        "{} processes sampled",
        processes.len()
    );
    assert!(fds < 256, "{fds} descriptors open at the peak");
    assert!(hwm_kb < 200 * 1024, "peak RSS {hwm_kb} kB");
    let _ = std::fs::remove_dir_all(&dir);
}
