//! `profiler top` in a real terminal: tmux runs it on a 160×50 screen, the test types keys
//! (`send-keys`) and reads the screen (`capture-pane`), as a person would.
use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use profiler_tests::*;

/// A tmux server of our own (its own socket), killed when dropped, failed test or not.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    /// Runs `profiler top ARGS` in a new 160×50 session, through a shell that then prints the
    /// exit status and the terminal's modes, and stays, so the screen after the exit is read.
    fn start(name: &str, top_args: &[String]) -> Self {
        // A socket path of our own, removed with the server (kill-server leaves the file).
        let t = Self {
            socket: scratch(&format!("top-{name}.tmux")),
        };
        let wrapper = scratch(&format!("top-{name}.sh"));
        // A trap with a command: the shell outlives a Ctrl-C, which reaches it too, while
        // `top` gets SIGINT with its default disposition.
        std::fs::write(
            &wrapper,
            "trap 'echo interrupted' INT\n\"$@\"\necho \"wrapper: exit=$?\"\n\
             stty -a | tr ' ;' '\\n\\n' | grep -E '^-?(icanon|echo|isig)$' | tr '\\n' ' '\n\
             echo\necho 'wrapper: done'\nsleep 600\n",
        )
        .expect("wrapper script");
        let mut cmd = format!("sh {} {} top", wrapper.display(), profiler_bin().display());
        for a in top_args {
            cmd.push(' ');
            cmd.push_str(a);
        }
        t.tmux(&["new-session", "-d", "-x", "160", "-y", "50", &cmd]);
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p"])
    }

    fn keys(&self, keys: &str) {
        self.tmux(&["send-keys", keys]);
    }

    fn display(&self, format: &str) -> String {
        self.tmux(&["display-message", "-p", format])
            .trim()
            .to_string()
    }

    /// The screen once `pred` holds on it, polling every 50 ms up to `limit`.
    fn wait_for(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + limit;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < until, "{what}: the screen is\n{s}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The pid of `profiler top`: the child of the pane's shell.
    fn profiler_pid(&self) -> u32 {
        let shell: u32 = self.display("#{pane_pid}").parse().expect("pane pid");
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let children = std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children"))
                .unwrap_or_default();
            if let Some(pid) = children.split_whitespace().next() {
                return pid.parse().expect("pid");
            }
            assert!(Instant::now() < until, "profiler top did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// A row of the functions view: self %, total %, samples, module, name.
#[derive(Debug)]
struct Row {
    self_pct: f64,
    total_pct: f64,
    name: String,
}

fn function_rows(screen: &str) -> Vec<Row> {
    screen
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            if cols.len() < 5 {
                return None;
            }
            Some(Row {
                self_pct: cols[0].strip_suffix('%')?.parse().ok()?,
                total_pct: cols[1].strip_suffix('%')?.parse().ok()?,
                name: cols[4].to_string(),
            })
        })
        .collect()
}

/// Seconds the sliding window covers so far (`last 3.0 s of 10 s`).
fn covered_s(screen: &str) -> f64 {
    screen
        .split("last ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0)
}

/// BPF programs and links a process holds (ids from its descriptors' fdinfo).
fn bpf_objects(pid: u32) -> (HashSet<u32>, HashSet<u32>) {
    let (mut progs, mut links) = (HashSet::new(), HashSet::new());
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return (progs, links);
    };
    for e in dir.filter_map(|e| e.ok()) {
        let info = std::fs::read_to_string(e.path()).unwrap_or_default();
        for line in info.lines() {
            let id = |key: &str| line.strip_prefix(key).and_then(|v| v.trim().parse().ok());
            if let Some(id) = id("prog_id:") {
                progs.insert(id);
            }
            if let Some(id) = id("link_id:") {
                links.insert(id);
            }
        }
    }
    (progs, links)
}

/// Whether the kernel still has the BPF program (or link) of this id, held by anyone.
fn bpf_id_exists(command: libc::c_long, id: u32) -> bool {
    // bpf_attr's first three words for *_GET_FD_BY_ID: the id, next_id, open_flags.
    let attr: [u32; 3] = [id, 0, 0];
    // SAFETY: the attribute is 12 initialized bytes, and its size says so.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd >= 0 {
        // SAFETY: a descriptor the call just gave us.
        unsafe { libc::close(fd as i32) };
        return true;
    }
    std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOENT)
}

const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;

/// Every program and link `top` held is gone from the kernel (their release is deferred
/// a little after the descriptors close).
fn assert_all_released(progs: &HashSet<u32>, links: &HashSet<u32>) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = progs
            .iter()
            .filter(|&&id| bpf_id_exists(BPF_PROG_GET_FD_BY_ID, id))
            .map(|id| format!("prog {id}"))
            .chain(
                links
                    .iter()
                    .filter(|&&id| bpf_id_exists(BPF_LINK_GET_FD_BY_ID, id))
                    .map(|id| format!("link {id}")),
            )
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < until, "still in the kernel: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The screen after `top` ended: exit 0, and the terminal's modes and screen put back.
fn assert_clean_exit(tmux: &Tmux) -> String {
    // Markers no function name has: the view may show kernel functions named `..._done`.
    let s = tmux.wait_for("top exits", Duration::from_secs(20), |s| {
        s.contains("wrapper: done")
    });
    assert!(s.contains("wrapper: exit=0"), "{s}");
    assert!(
        s.contains("isig icanon echo"),
        "the terminal's modes are back: {s}"
    );
    assert!(!s.contains("-icanon") && !s.contains("-echo "), "{s}");
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "0",
        "the alternate screen is left"
    );
    assert_eq!(tmux.display("#{cursor_flag}"), "1", "the cursor is shown");
    s
}

fn split() -> PathBuf {
    build_c("top-split", "split.c", C_FP)
}

fn args(pid: u32, extra: &[&str]) -> Vec<String> {
    let mut a = vec!["--pid".to_string(), pid.to_string()];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Must-show: the hot function with its share within 2 s of starting; the sort keys and the
/// views; `q` exits 0 with the terminal restored and every probe gone from the kernel.
#[test]
fn shows_the_hot_function_within_two_seconds_and_q_leaves_nothing_attached() {
    let bin = split();
    let target = Target::start(&bin, &["120"]);
    let started = Instant::now();
    let tmux = Tmux::start("main", &args(target.pid(), &["--span-fn", "hot_b"]));
    let first = tmux.wait_for("hot_a shown", Duration::from_secs(10), |s| {
        function_rows(s).iter().any(|r| r.name == "hot_a")
    });
    let shown_after = started.elapsed();
    let rows = function_rows(&first);
    let hot_a = rows.iter().find(|r| r.name == "hot_a").expect("hot_a");
    eprintln!(
        "hot_a shown at {:.0}% self after {:.2} s:\n{first}",
        hot_a.self_pct,
        shown_after.as_secs_f64()
    );
    assert!(
        shown_after <= Duration::from_secs(2),
        "hot_a shown only after {shown_after:?}"
    );
    assert!(hot_a.self_pct > 0.0, "{first}");
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "1",
        "on the alternate screen"
    );
    let pid = tmux.profiler_pid();
    let (progs, links) = bpf_objects(pid);
    eprintln!("top holds BPF programs {progs:?} and links {links:?}");
    assert!(!progs.is_empty(), "top holds its programs while it runs");

    // A few seconds in, the split the target makes itself: 70% hot_a, 30% hot_b.
    let s = tmux.wait_for("3 s of window", Duration::from_secs(15), |s| {
        covered_s(s) >= 3.0
    });
    let rows = function_rows(&s);
    eprintln!("{s}");
    assert_eq!(rows[0].name, "hot_a", "hot_a first by self: {s}");
    let share = |n: &str| rows.iter().find(|r| r.name == n).map(|r| r.self_pct);
    let (a, b) = (share("hot_a").unwrap_or(0.0), share("hot_b").unwrap_or(0.0));
    assert!((55.0..=85.0).contains(&a), "hot_a self {a}%: {s}");
    assert!((15.0..=45.0).contains(&b), "hot_b self {b}%: {s}");

    // Sorted by total: the callers of both come first, and the order is by total.
    tmux.keys("t");
    let s = tmux.wait_for("sorted by total", Duration::from_secs(5), |s| {
        s.contains("[t total]")
    });
    let rows = function_rows(&s);
    assert!(rows[0].total_pct >= 95.0, "{s}");
    assert!(
        [
            "main",
            "__libc_start_call_main",
            "__libc_start_main",
            "_start"
        ]
        .contains(&rows[0].name.as_str()),
        "{s}"
    );
    assert!(
        rows.windows(2).all(|w| w[0].total_pct >= w[1].total_pct),
        "{s}"
    );
    tmux.keys("s");
    let s = tmux.wait_for("sorted by self", Duration::from_secs(5), |s| {
        s.contains("[s self]")
    });
    assert_eq!(function_rows(&s)[0].name, "hot_a", "{s}");

    // Threads: the target's one thread, its hottest function hot_a.
    tmux.keys("3");
    let s = tmux.wait_for("threads view", Duration::from_secs(5), |s| {
        s.contains("[3 threads]")
    });
    let row = s
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|c| c.len() >= 7 && c[1] == target.pid().to_string())
        .unwrap_or_else(|| panic!("the target's thread: {s}"));
    assert_eq!(row[0], target.pid().to_string(), "{s}");
    assert_eq!(row.last().copied(), Some("hot_a"), "{s}");

    // Spans: every call of hot_b (--span-fn) with its count and p95. Each call spends
    // 1.5-4.5 ms of CPU time; its wall time is at least that.
    tmux.keys("2");
    let s = tmux.wait_for("spans view", Duration::from_secs(5), |s| {
        s.contains("[2 spans]") && s.lines().any(|l| l.ends_with(" hot_b"))
    });
    let cols: Vec<&str> = s
        .lines()
        .find(|l| l.ends_with(" hot_b"))
        .expect("hot_b")
        .split_whitespace()
        .collect();
    let count: u64 = cols[0].parse().expect("count");
    let p95_ms: f64 = if let Some(ms) = cols[3].strip_suffix("ms") {
        ms.parse().expect("p95")
    } else if let Some(s) = cols[3].strip_suffix('s') {
        s.parse::<f64>().expect("p95") * 1e3
    } else {
        panic!("p95 below a millisecond: {s}")
    };
    eprintln!("{s}");
    assert!(count >= 10, "{s}");
    assert!((1.5..1000.0).contains(&p95_ms), "p95 {p95_ms} ms: {s}");
    // Tab goes round: spans, threads, functions.
    tmux.keys("Tab");
    tmux.wait_for("Tab: threads", Duration::from_secs(5), |s| {
        s.contains("[3 threads]")
    });
    tmux.keys("Tab");
    tmux.wait_for("Tab: functions", Duration::from_secs(5), |s| {
        s.contains("[1 functions]")
    });

    tmux.keys("q");
    let quit = Instant::now();
    let s = assert_clean_exit(&tmux);
    eprintln!("exited {:.2} s after q:\n{s}", quit.elapsed().as_secs_f64());
    assert_all_released(&progs, &links);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the profiler is gone"
    );
}

/// Ctrl-C and SIGTERM end `top` as `q` does: exit 0, terminal back, nothing left attached.
#[test]
fn ctrl_c_and_sigterm_leave_the_terminal_and_the_kernel_clean() {
    let bin = split();
    let target = Target::start(&bin, &["120"]);
    for how in ["ctrl-c", "sigterm"] {
        let tmux = Tmux::start(how, &args(target.pid(), &[]));
        tmux.wait_for("hot_a shown", Duration::from_secs(10), |s| {
            function_rows(s).iter().any(|r| r.name == "hot_a")
        });
        let pid = tmux.profiler_pid();
        let (progs, links) = bpf_objects(pid);
        assert!(!progs.is_empty(), "{how}: top holds its programs");
        if how == "ctrl-c" {
            tmux.keys("C-c");
        } else {
            // SAFETY: plain kill(2) of the profiler this test started.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        let s = assert_clean_exit(&tmux);
        eprintln!("{how}:\n{s}");
        assert_all_released(&progs, &links);
    }
}

/// The terminal going away (the tmux server killed, an ssh session dropped) ends `top` as
/// `q` does, probes detached; it once spun on the dead terminal, at 100% of a CPU, for good.
#[test]
fn a_terminal_that_goes_away_ends_top() {
    let bin = split();
    let target = Target::start(&bin, &["120"]);
    let tmux = Tmux::start("hangup", &args(target.pid(), &[]));
    tmux.wait_for("hot_a shown", Duration::from_secs(10), |s| {
        function_rows(s).iter().any(|r| r.name == "hot_a")
    });
    let pid = tmux.profiler_pid();
    // Not left spinning if this test fails.
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: plain kill(2) of the profiler this test started.
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let kill = Kill(pid);
    let (progs, links) = bpf_objects(pid);
    assert!(!progs.is_empty(), "top holds its programs");
    tmux.tmux(&["kill-server"]);
    let until = Instant::now() + Duration::from_secs(10);
    // Gone, or a zombie of a parent that is gone too (reaped by init shortly).
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
            .is_some_and(|r| !r.starts_with('Z'))
    };
    while alive() {
        assert!(
            Instant::now() < until,
            "profiler top still runs 10 s after its terminal went away"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Gone: its pid may be someone else's soon.
    std::mem::forget(kill);
    assert_all_released(&progs, &links);
}
