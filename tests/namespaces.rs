//! PID and mount namespaces built for real with unshare: a target in its own PID namespace
//! with a private root, profiled from the host; and a profiler started inside a PID namespace
//! that it shares with its target (a sidecar with shareProcessNamespace).
use std::{path::Path, process::Command};

use profiler_tests::*;

/// A private root holding only a static build of split.c as /app.
fn private_root(name: &str) -> std::path::PathBuf {
    let root = scratch(name);
    std::fs::create_dir_all(root.join("proc")).expect("root dir");
    let mut flags: Vec<&str> = C_FP.to_vec();
    flags.push("-static");
    let bin = build_c("split-static", "split.c", &flags);
    std::fs::copy(&bin, root.join("app")).expect("copy the binary in");
    root
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn host_profiler_symbolizes_a_process_in_its_own_pid_and_mount_namespace() {
    let root = private_root("ns-root");
    let script = format!(
        "mount -t proc proc {0}/proc && exec chroot {0} /app 20",
        root.display()
    );
    let target = Target::start(
        Path::new("unshare"),
        // --kill-child: the target dies with unshare when the test drops it.
        &[
            "--pid",
            "--mount",
            "--fork",
            "--kill-child",
            "sh",
            "-c",
            &script,
        ],
    );
    // The target is the child unshare forked; its binary exists only inside the new root.
    let pid = children_of(target.pid())
        .first()
        .copied()
        .expect("unshare forked the target");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe link");
    assert!(exe.ends_with("app"), "{exe:?}");
    let inner_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).expect("ns link");
    let own_ns = std::fs::read_link("/proc/self/ns/pid").expect("own ns");
    assert_ne!(inner_ns, own_ns, "the target is in another PID namespace");

    let out_dir = scratch("ns-host");
    let out = record(pid, &out_dir, &["--duration", "2", "--frequency", "499"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let f = folded(&out_dir);
    let (a, b, main) = (
        share(&f, |fr| fr == "hot_a"),
        share(&f, |fr| fr == "hot_b"),
        share(&f, |fr| fr == "main"),
    );
    eprintln!(
        "{} samples: hot_a {a:.1}%, hot_b {b:.1}%, main {main:.1}%",
        total(&f)
    );
    assert_sampled_its_cpu_time(&out_dir, 300);
    assert!((60.0..=80.0).contains(&a) && (20.0..=40.0).contains(&b));
    assert!(main >= 95.0, "names from a binary only the container has");
    drop(target);
    let _ = std::fs::remove_dir_all(&out_dir);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn profiler_inside_a_shared_pid_namespace_uses_the_pids_it_sees() {
    let bin = build_c("split-nsin", "split.c", C_FP);
    let out_dir = scratch("ns-inside");
    // In the new namespace the target gets pid 2 ($!), which only means something there.
    let script = format!(
        "{} 20 > /dev/null & sleep 0.3; echo target $!; exec {} record --quiet --pid $! --duration 2 --frequency 499 --output {}",
        bin.display(),
        profiler_bin().display(),
        out_dir.display()
    );
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "sh", "-c", &script])
        .output()
        .expect("unshare runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}\n{}", stderr_of(&out));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let inner_pid: u32 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("target "))
        .and_then(|p| p.trim().parse().ok())
        .expect("the target's pid inside");
    assert!(inner_pid < 10, "a pid of the new namespace ({inner_pid})");
    let f = folded(&out_dir);
    let a = share(&f, |fr| fr == "hot_a");
    eprintln!("{} samples, hot_a {a:.1}%", total(&f));
    // Samples matched by the namespaced pid, as many as its CPU time gives.
    assert_sampled_its_cpu_time(&out_dir, 300);
    assert!((60.0..=80.0).contains(&a));
    assert_eq!(
        summary(&out_dir)["pid"].as_u64(),
        Some(u64::from(inner_pid))
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}
