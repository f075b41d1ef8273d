//! `cargo xtask test`: every test binary compiled by one cargo invocation, then run in two
//! groups: unit tests (in parallel) and the integration tests of `tests/` (real probes, one
//! at a time).
//!
//! One invocation because cargo resolves features over the packages it is asked for: `-p
//! profiler-tests` alone drops `syn/full` (wanted by profiler-probes' tracing), which rebuilt
//! every proc macro and everything derived with them, and leaving profiler-tests out changed
//! quick-xml's, which rebuilt inferno and the profiler; together about three minutes of a
//! clean clone's CI. The whole workspace resolves as `cargo build` does, so nothing the build
//! step made is built again.
use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use crate::{Env, Result, lint, profiler_bin, step, workspace_root};

pub fn test(args: &[String]) -> Result {
    let started = Instant::now();
    let env = crate::setup()?;
    crate::build(&env)?;
    // SAFETY: geteuid cannot fail. Integration tests attach real probes and need root.
    if unsafe { crate::geteuid() } != 0 {
        return Err(
            "the integration tests attach real eBPF probes: run as root (sudo -E cargo xtask test)"
                .into(),
        );
    }
    step("building the tests");
    let binaries = compile(&env)?;
    let integration_dir = workspace_root().join("tests");
    let (integration, unit): (Vec<_>, Vec<_>) =
        binaries.into_iter().partition(|b| b.dir == integration_dir);

    step("unit tests");
    let mut counts = TestCounts::default();
    for b in &unit {
        counts.add(&b.name, run_binary(&env, b, &[], args));
    }
    // Doc tests have no binary to run; the same package selection keeps the build as it is.
    let mut doc = env.cargo();
    doc.args(["test", "--release", "--doc", "--workspace"])
        .args(["--exclude", "profiler-ebpf"]);
    if !args.is_empty() {
        doc.arg("--").args(args);
    }
    counts.add("doc tests", run_counting(&mut doc));

    // One at a time: each test measures a CPU split, which concurrent targets on two cores
    // would distort.
    step("integration tests (real probes, one at a time)");
    for b in &integration {
        counts.add(&b.name, run_binary(&env, b, &["--test-threads=1"], args));
    }

    let lint_result = if counts.failed_binaries.is_empty() {
        lint(&env)
    } else {
        Err(format!(
            "failing test binaries: {}",
            counts.failed_binaries.join(", ")
        ))
    };
    if lint_result.is_ok() {
        step(&format!(
            "all tests and lints passed in {:.0} s",
            started.elapsed().as_secs_f64()
        ));
    }
    // The closing line CI reads: totals over every test binary.
    println!(
        "tests: {} passed, {} failed",
        counts.passed,
        if counts.failed_binaries.is_empty() {
            counts.failed
        } else {
            counts.failed.max(1)
        }
    );
    lint_result
}

/// A test executable cargo built, and the package directory it runs in (as `cargo test`
/// runs it).
struct TestBinary {
    dir: PathBuf,
    exe: PathBuf,
    name: String,
}

/// `cargo test --no-run` over the workspace; the executables from its JSON messages.
fn compile(env: &Env) -> Result<Vec<TestBinary>> {
    let mut cmd = env.cargo();
    cmd.args(["test", "--release", "--no-run", "--workspace"])
        .args(["--exclude", "profiler-ebpf"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let mut found = Vec::new();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            if let Some(b) = test_binary(&line) {
                found.push(b);
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {cmd:?}: {e}"))?;
    if !status.success() {
        println!("tests: 0 passed, 1 failed");
        return Err(format!("{cmd:?} failed: {status}"));
    }
    // cargo test's order: package by package, the library's unit tests first.
    found.sort_by(|a, b| (&a.dir, &a.name).cmp(&(&b.dir, &b.name)));
    Ok(found)
}

/// A `compiler-artifact` message of a test harness (`"test":true` in its profile) with an
/// executable; None for anything else.
fn test_binary(line: &str) -> Option<TestBinary> {
    if !line.starts_with("{\"reason\":\"compiler-artifact\"") {
        return None;
    }
    // The profile's flag: the target's own `"test":true` only says it may have tests.
    let profile = &line[line.find("\"profile\":{")?..];
    if !profile[..profile.find('}')?].contains("\"test\":true") {
        return None;
    }
    let exe = PathBuf::from(json_string(line, "executable")?);
    let manifest = PathBuf::from(json_string(line, "manifest_path")?);
    let target = line.find("\"target\":")?;
    let name = json_string(&line[target..], "name")?;
    Some(TestBinary {
        dir: manifest.parent()?.to_path_buf(),
        exe,
        name,
    })
}

/// The string value of the first `"key":"…"` in `json` (cargo's messages are one object per
/// line; workspace paths need only the `\\` and `\"` escapes).
fn json_string(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = json[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

/// Runs one test executable where `cargo test` would (its package directory, `CARGO` set).
fn run_binary(
    env: &Env,
    b: &TestBinary,
    harness: &[&str],
    filters: &[String],
) -> Result<TestCounts> {
    println!("     Running {} ({})", b.name, b.exe.display());
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&b.exe);
    cmd.args(harness)
        .args(filters)
        .current_dir(&b.dir)
        .env("PATH", &env.path)
        .env("CARGO", cargo)
        .env("CARGO_MANIFEST_DIR", &b.dir)
        .env("PROFILER_BIN", profiler_bin());
    run_counting(&mut cmd)
}

/// Runs a test command, echoing its output, and totals its `test result:` lines.
fn run_counting(cmd: &mut Command) -> Result<TestCounts> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    let mut counts = TestCounts::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let number_before = |word: &str| {
                    rest.split(';')
                        .find_map(|part| part.trim().strip_suffix(word))
                        .and_then(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                counts.passed += number_before(" passed");
                counts.failed += number_before(" failed");
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {cmd:?}: {e}"))?;
    if status.success() {
        Ok(counts)
    } else {
        Err(format!("{}: {status}", display(cmd.get_program())))
    }
}

fn display(p: &std::ffi::OsStr) -> String {
    Path::new(p)
        .file_name()
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

#[derive(Default)]
struct TestCounts {
    passed: u64,
    failed: u64,
    /// Binaries that exited with failure (a crash counts even with no `test result:` line).
    failed_binaries: Vec<String>,
}

impl TestCounts {
    /// Every binary runs whatever the others did (`--no-fail-fast`): one failing binary
    /// must not hide the others' results.
    fn add(&mut self, name: &str, result: Result<TestCounts>) {
        match result {
            Ok(c) => {
                self.passed += c.passed;
                self.failed += c.failed;
            }
            Err(e) => {
                println!("xtask: {e}");
                self.failed_binaries.push(name.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_harnesses_are_read_from_cargo_messages() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#profiler-tests@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"crate_types":["bin"],"name":"agent","src_path":"/w/tests/agent.rs","edition":"2024","doc":false,"doctest":false,"test":true},"profile":{"opt_level":"3","debuginfo":1,"debug_assertions":false,"overflow_checks":false,"test":true},"features":[],"filenames":["/w/target/release/deps/agent-1"],"executable":"/w/target/release/deps/agent-1","fresh":true}"#;
        let b = test_binary(line).expect("a test binary");
        assert_eq!(b.dir, Path::new("/w/tests"));
        assert_eq!(b.exe, Path::new("/w/target/release/deps/agent-1"));
        assert_eq!(b.name, "agent");
        // The library itself (not a test harness) and a build script are not.
        let lib = line.replace(
            "\"overflow_checks\":false,\"test\":true",
            "\"overflow_checks\":false,\"test\":false",
        );
        assert!(test_binary(&lib).is_none());
        assert!(test_binary(r#"{"reason":"build-script-executed","package_id":"x"}"#).is_none());
    }

    #[test]
    fn escaped_strings_are_read_whole() {
        assert_eq!(
            json_string(r#"{"a":"x\"y\\z","b":"c"}"#, "a").as_deref(),
            Some(r#"x"y\z"#)
        );
        assert_eq!(json_string(r#"{"a":"open"#, "a"), None);
    }
}
