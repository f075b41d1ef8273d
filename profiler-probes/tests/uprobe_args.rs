//! End to end, as the profiler sees it: real uprobes (tracefs) on the ABI functions of built
//! programs must see every call, with the id, parent and a readable `SpanMeta` in the
//! registers the ABI names. Needs root, like the workspace's other probe tests.
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

mod common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::process::Command;

const TRACEFS: &str = "/sys/kernel/tracing";

#[test]
fn rust_spans_reach_the_probes() {
    let expected = [
        "begin 1 0 v1 manual spans",
        "enter 1",
        "exit 1",
        "end 1",
        // Through the tracing layer: inner is a child of outer.
        "begin 2 0 v1 outer spans",
        "enter 2",
        "begin 3 2 v1 inner spans",
        "enter 3",
        "exit 3",
        "end 3",
        "exit 2",
        "end 2",
    ];
    for release in [false, true] {
        let bin = common::rust_example(release);
        for at in [0, 1] {
            assert_eq!(probed_run(&bin, "r", at), expected, "probes at +{at}");
        }
    }
}

#[test]
fn c_spans_reach_the_probes() {
    let expected = [
        "begin 1 0 v1 main probe-test",
        "enter 1",
        "begin 2 1 v1 other probe-test",
        "enter 2",
        "exit 2",
        "end 2",
        "begin 3 1 v1 other probe-test",
        "enter 3",
        "exit 3",
        "end 3",
        "exit 1",
        "end 1",
    ];
    let bin = common::c_program("gcc", "-O2");
    for at in [0, 1] {
        assert_eq!(probed_run(&bin, "c", at), expected, "probes at +{at}");
    }
}

/// Runs `bin` with a uprobe `at` bytes into each ABI function (0: the nop every kernel
/// emulates, 1: the nop5 Linux 6.18 optimizes); returns the hits in order, as
/// `begin ID PARENT vVERSION NAME TARGET` or `enter|exit|end ID`.
fn probed_run(bin: &Path, tag: &str, at: u64) -> Vec<String> {
    tracefs_ready();
    let group = format!("profprobes_test_{}_{tag}{at}", std::process::id());
    let session = Session::new(&group);
    for f in common::abi_functions(bin) {
        let event = f.name.trim_start_matches("profiler_span_");
        // The SysV argument registers; SpanMeta: version u32 @0, name @8, target @16.
        let args = if event == "begin" {
            "id=%di:u64 parent=%si:u64 version=+0(%dx):u32 \
             name=+0(+8(%dx)):string target=+0(+16(%dx)):string"
        } else {
            "id=%di:u64"
        };
        session.add(
            event,
            &format!("{}:{:#x} {args}", bin.display(), f.file_offset),
        );
    }
    common::run(&mut Command::new(bin));
    let trace = fs::read_to_string(session.instance() + "/trace").expect("reading the trace");
    trace
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            // `  spans-123 [001] ..... 5.123456: begin: (0x5555...) id=1 parent=0 ...`
            let (_, rest) = l.split_once(": ").expect("trace line");
            let (event, rest) = rest.split_once(": ").expect("trace line");
            let value = |key: &str| {
                rest.split(' ')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .unwrap_or_else(|| panic!("no {key} in {l}"))
                    .trim_matches('"')
                    .to_string()
            };
            match event {
                "begin" => format!(
                    "begin {} {} v{} {} {}",
                    value("id"),
                    value("parent"),
                    value("version"),
                    value("name"),
                    value("target")
                ),
                _ => format!("{event} {}", value("id")),
            }
        })
        .collect()
}

/// Mounts tracefs if needed; fails with what is missing otherwise.
fn tracefs_ready() {
    let events = Path::new(TRACEFS).join("uprobe_events");
    if !events.exists() {
        let _ = Command::new("mount")
            .args(["-t", "tracefs", "nodev", TRACEFS])
            .status();
    }
    assert!(
        events.exists() && fs::metadata(&events).is_ok_and(|m| !m.permissions().readonly()),
        "{} is missing or not writable: this test places uprobes and needs root \
         (as `cargo xtask test` runs) and tracefs (mount -t tracefs nodev {TRACEFS})",
        events.display()
    );
}

/// Uprobe events in their own group, recorded into their own trace instance (so nobody
/// else's tracing is disturbed); everything is removed on drop, also when the test fails.
struct Session {
    group: String,
    events: std::cell::RefCell<Vec<String>>,
}

impl Session {
    fn new(group: &str) -> Self {
        let s = Self {
            group: group.into(),
            events: Default::default(),
        };
        fs::create_dir(s.instance()).expect("creating a trace instance");
        s
    }

    fn instance(&self) -> String {
        format!("{TRACEFS}/instances/{}", self.group)
    }

    fn add(&self, event: &str, spec: &str) {
        append(&format!("p:{}/{event} {spec}", self.group));
        self.events.borrow_mut().push(event.into());
        let enable = format!("{}/events/{}/{event}/enable", self.instance(), self.group);
        fs::write(&enable, "1").unwrap_or_else(|e| panic!("writing {enable}: {e}"));
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for event in self.events.borrow().iter() {
            let enable = format!("{}/events/{}/{event}/enable", self.instance(), self.group);
            let _ = fs::write(enable, "0");
        }
        let _ = fs::remove_dir(self.instance());
        for event in self.events.borrow().iter() {
            let _ = try_append(&format!("-:{}/{event}", self.group));
        }
    }
}

fn append(line: &str) {
    try_append(line).unwrap_or_else(|e| panic!("adding uprobe {line:?}: {e}"));
}

/// Appends (truncating would delete everybody's probes), in one write: the kernel takes
/// each write as a command.
fn try_append(line: &str) -> std::io::Result<()> {
    OpenOptions::new()
        .append(true)
        .open(format!("{TRACEFS}/uprobe_events"))?
        .write_all(format!("{line}\n").as_bytes())
}
