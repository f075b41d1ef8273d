//! `cargo xtask <setup|build|test|lint|demo>`: everything a fresh machine needs, driven from
//! the repository. Deliberately dependency-free so it compiles in seconds on a clean clone.
mod bench;
mod ebpf_toolchain;
mod testrun;

use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::Instant,
};

type Result<T = ()> = std::result::Result<T, String>;

/// bpf-linker version known to work with the installed nightly (see shared/SETUP-NOTES.md).
const BPF_LINKER_VERSION: &str = "0.13.0";

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup().map(|_| ()),
        Some("build") => setup().and_then(|env| build(&env)),
        Some("test") => testrun::test(&args[1..]),
        Some("lint") => setup().and_then(|env| lint(&env)),
        Some("demo") => demo(),
        Some("static") => setup().and_then(|env| build_static(&env)),
        Some("bench") => setup()
            .and_then(|env| build(&env))
            .and_then(|()| bench::bench()),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 setup   install what this machine lacks (rust-src, bpf-linker, gcc, protoc, go, curl, tmux, chromium, bpftrace)\n\
                 build   setup, then build everything (release)\n\
                 test    setup, build, then run every test (unit, integration as root, lint)\n\
                 lint    cargo fmt --check and clippy -D warnings, the eBPF crate for its target\n\
                 demo    setup, build, profile a bundled workload, write a flame graph and a Perfetto trace\n\
                 bench   measure the profiler's costs (heavy; writes bench/results.md)\n\
                 static  build a fully static profiler (musl) for container images"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    // xtask lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn step(what: &str) {
    eprintln!("xtask: {what}");
}

/// Runs a command with inherited stdio; an error names the command.
fn run(cmd: &mut Command) -> Result {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

fn output(cmd: &mut Command) -> Result<String> {
    stdout_of(cmd.stderr(Stdio::inherit()))
}

/// Runs `cmd` to completion and returns its stdout; its stderr goes where `cmd` says.
fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What later steps need from setup: a PATH on which bpf-linker is found, and the pinned
/// nightly toolchain (`ebpf-toolchain`) by the name it is installed under.
struct Env {
    path: OsString,
    nightly: String,
}

impl Env {
    /// The nightly cargo through rustup: `$CARGO` names a toolchain's own binary, which does
    /// not understand `+nightly`.
    fn nightly_cargo(&self) -> Command {
        let mut c = Command::new("rustup");
        c.args(["run", &self.nightly, "cargo"])
            .env("PATH", &self.path)
            .current_dir(workspace_root());
        c
    }

    fn cargo(&self) -> Command {
        let mut c = Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        c.env("PATH", &self.path).current_dir(workspace_root());
        c
    }
}

fn home() -> Result<PathBuf> {
    env::var_os("HOME")
        .map(PathBuf::from)
        .ok_or_else(|| "HOME is not set".to_string())
}

fn cargo_home() -> Result<PathBuf> {
    match env::var_os("CARGO_HOME") {
        Some(h) => Ok(PathBuf::from(h)),
        None => Ok(home()?.join(".cargo")),
    }
}

/// Idempotent: each step checks before it acts, so a set-up machine passes in about a second.
fn setup() -> Result<Env> {
    let started = Instant::now();
    let nightly = pinned_nightly()?;
    let sysroot =
        output(Command::new("rustc").args([&format!("+{nightly}"), "--print", "sysroot"]))?;
    let sysroot = PathBuf::from(sysroot.trim());

    if !sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        step(&format!(
            "installing rust-src for {nightly} (needed by -Z build-std=core)"
        ));
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            &nightly,
        ]))?;
    }

    let bin_dir = cargo_home()?.join("bin");
    let path = prepend_path(&bin_dir);
    ensure_bpf_linker(&sysroot, &nightly, &bin_dir, &path)?;

    ensure_tool(
        "gcc",
        &["gcc", "libc6-dev"],
        "builds the C programs the tests profile",
    )?;
    ensure_tool("strip", &["binutils"], "tests profile stripped binaries")?;
    ensure_tool(
        "protoc",
        &["protobuf-compiler"],
        "tests decode traces with the official schema",
    )?;
    ensure_tool(
        "setpriv",
        &["util-linux"],
        "tests run the profiler without privileges",
    )?;
    ensure_tool(
        "go",
        &["golang-go"],
        "tests read profile.pb.gz with `go tool pprof`, a reader we did not write",
    )?;
    ensure_tool(
        "curl",
        &["curl"],
        "tests talk to `profiler serve` with an HTTP client we did not write",
    )?;
    ensure_tool(
        "tmux",
        &["tmux"],
        "tests drive `profiler top` in a terminal, typing keys and reading the screen",
    )?;
    ensure_tool(
        "chromium",
        &["chromium"],
        "tests drive the page of `profiler serve` in headless Chromium",
    )?;
    ensure_tool(
        "bpftrace",
        &["bpftrace"],
        "tests compare kernel lock waits with bpftrace's on the same tracepoints",
    )?;
    step(&format!(
        "setup done in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(Env { path, nightly })
}

/// The nightly pinned in `ebpf-toolchain`, installed through rustup when this machine has no
/// toolchain of that commit (a rustup component download, like rust-src).
fn pinned_nightly() -> Result<String> {
    let root = workspace_root();
    match ebpf_toolchain::resolve(&root) {
        Ok(t) => Ok(t),
        Err(why) => {
            let pin = ebpf_toolchain::read_pin(&root)?;
            step(&format!("{why}\nxtask: installing {}", pin.channel));
            run(Command::new("rustup").args([
                "toolchain",
                "install",
                &pin.channel,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))
            .map_err(|e| format!("{e}\n{why}"))?;
            ebpf_toolchain::resolve(&root)
        }
    }
}

/// Installs `packages` from Debian when `tool` does not run.
fn ensure_tool(tool: &str, packages: &[&str], why: &str) -> Result {
    let present = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if present {
        return Ok(());
    }
    step(&format!("installing {} ({why})", packages.join(" ")));
    // One index refresh serves every tool missing on this run.
    static UPDATED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !UPDATED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        run(Command::new("apt-get").args(["update", "-q"]))?;
    }
    run(Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(packages))
}

fn prepend_path(dir: &Path) -> OsString {
    let current = env::var_os("PATH").unwrap_or_default();
    let mut parts: Vec<PathBuf> = vec![dir.to_path_buf()];
    parts.extend(env::split_paths(&current).filter(|p| p != dir));
    env::join_paths(parts).unwrap_or(current)
}

/// bpf-linker must link against the very LLVM that nightly's rustc uses, so it is built from
/// source against the libLLVM shipped in nightly's sysroot, and rebuilt when nightly changes.
fn ensure_bpf_linker(sysroot: &Path, nightly: &str, bin_dir: &Path, path: &OsString) -> Result {
    let lib = sysroot.join("lib");
    let soname = fs::read_dir(&lib)
        .map_err(|e| format!("reading {}: {e}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so.") || (n.starts_with("libLLVM-") && n.ends_with(".so")))
        .ok_or_else(|| {
            format!(
                "no libLLVM in {}: is nightly installed fully?",
                lib.display()
            )
        })?;
    let version = output(Command::new("rustc").args([&format!("+{nightly}"), "-vV"]))?;
    let llvm_major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .ok_or_else(|| format!("rustc +{nightly} -vV prints no LLVM version"))?
        .to_string();

    let cache = home()?.join(".cache/profiler-xtask");
    let stamp = cache.join("bpf-linker.stamp");
    let want = format!("{BPF_LINKER_VERSION} {soname}");
    let linker = bin_dir.join("bpf-linker");
    let works = Command::new(&linker)
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == want) {
        return Ok(());
    }

    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against nightly's {soname} (about a minute)"
    ));
    // The linked binary finds libLLVM through its RUNPATH under the soname, while the build
    // looks for plain libLLVM.so: the prefix provides both names for the same file.
    let prefix = cache.join(format!("llvm-{soname}"));
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib).map_err(|e| format!("{}: {e}", prefix_lib.display()))?;
    for name in ["libLLVM.so", soname.as_str()] {
        let link = prefix_lib.join(name);
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&soname), &link)
            .map_err(|e| format!("{}: {e}", link.display()))?;
    }
    let root = bin_dir
        .parent()
        .ok_or("cargo bin directory has no parent")?
        .to_path_buf();
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .arg("--root")
        .arg(&root)
        .env("LLVM_PREFIX", &prefix)
        .env("PATH", path))?;
    fs::write(&stamp, want).map_err(|e| format!("{}: {e}", stamp.display()))?;
    Ok(())
}

fn build(env: &Env) -> Result {
    step("building (release)");
    run(env.cargo().args(["build", "--release"]))
}

/// Compiles tests/targets/SOURCE with complete frame-pointer stacks and the span probe
/// header on the include path (see shared/SETUP-NOTES.md for why each flag is needed).
fn compile_c(out: &Path, source: &str, extra: &[&str]) -> Result {
    let root = workspace_root();
    run(Command::new("gcc")
        .args([
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
        ])
        .arg("-fno-optimize-sibling-calls")
        .arg(format!(
            "-I{}",
            root.join("profiler-probes/include").display()
        ))
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(root.join("tests/targets").join(source))
        .arg("-lpthread"))
}

const MUSL: &str = "x86_64-unknown-linux-musl";

/// A static-pie binary with nothing to install beside it, for the sidecar image
/// (deploy/Dockerfile copies it from target/x86_64-unknown-linux-musl/release/profiler).
fn build_static(env: &Env) -> Result {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|l| l.trim() == MUSL) {
        step(&format!("installing the {MUSL} target"));
        run(Command::new("rustup").args(["target", "add", MUSL]))?;
    }
    step("building the static profiler");
    run(env.cargo().args([
        "build",
        "--release",
        "-p",
        "profiler-user",
        "--target",
        MUSL,
    ]))?;
    let bin = workspace_root().join(format!("target/{MUSL}/release/profiler"));
    step(&format!(
        "static binary: {} (docker build -f deploy/Dockerfile .)",
        bin.display()
    ));
    Ok(())
}

fn profiler_bin() -> PathBuf {
    workspace_root().join("target/release/profiler")
}

fn lint(env: &Env) -> Result {
    step("cargo fmt --check");
    run(env.cargo().args(["fmt", "--all", "--", "--check"]))?;
    step("clippy (host crates)");
    run(env.cargo().args([
        "clippy",
        "--release",
        "--workspace",
        "--exclude",
        "profiler-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    step("clippy (eBPF crate, bpfel-unknown-none)");
    run(env.nightly_cargo().args([
        "clippy",
        "--release",
        "-p",
        "profiler-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

fn demo() -> Result {
    let env = setup()?;
    build(&env)?;
    let root = workspace_root();
    let out_dir = root.join("demo-output");
    let build_dir = root.join("target/demo");
    fs::create_dir_all(&build_dir).map_err(|e| format!("{}: {e}", build_dir.display()))?;
    let workload = build_dir.join("demo-workload");
    step("compiling the demo workload (C, frame pointers, span probes)");
    compile_c(&workload, "demo.c", &[])?;

    let _ = fs::remove_dir_all(&out_dir);
    // `run` attaches before the workload's first instruction, so every span is seen whole.
    let mut record = Command::new(profiler_bin());
    record
        .args(["run", "--off-cpu", "--frequency", "499", "--output"])
        .arg(&out_dir)
        .arg("--")
        .arg(&workload)
        .arg("4");
    // SAFETY: geteuid cannot fail.
    if unsafe { geteuid() } != 0 {
        step("sampling needs CAP_BPF and CAP_PERFMON: running the profiler with sudo");
        let mut sudo = Command::new("sudo");
        sudo.arg(record.get_program()).args(record.get_args());
        record = sudo;
    }
    run(&mut record)?;
    let file = |name: &str| out_dir.join(name).display().to_string();
    let shown = [
        (
            "span report",
            file("summary.txt"),
            "the Spans table: db_query's p50 against its p99 and max (every 16th query is slow), and how few CPU samples it has for its time",
        ),
        (
            "Perfetto trace",
            file("trace.perfetto-trace"),
            "open in https://ui.perfetto.dev: each worker's request → parse/db_query/render slices with the CPU samples and off-CPU waits inside them, on one timeline",
        ),
        (
            "CPU flame graph",
            file("flamegraph.svg"),
            "the widest towers are the CPU hot spots (hash_key under lookup, render, parse_request)",
        ),
        (
            "spans flame graph",
            file("flamegraph-spans.svg"),
            "the same samples under their span path: which span burns the CPU",
        ),
        (
            "wall-clock graph",
            file("wall.svg"),
            "CPU and waiting on one scale: the [off-cpu] tower under db_query (reading the database's reply) is where requests spend their time",
        ),
        (
            "pprof",
            file("profile.pb.gz"),
            "go tool pprof -top profile.pb.gz; add -tagfocus=span_name=db_query for one span's CPU, -http=:8080 for the web UI",
        ),
        (
            "pprof off-CPU",
            file("offcpu.pb.gz"),
            "go tool pprof -top offcpu.pb.gz: where threads block, -tagfocus=state=preempted for CPU waits",
        ),
    ];
    eprintln!("\nxtask: demo done.");
    for (what, path, look) in shown {
        eprintln!("  {what:<18} {path}\n  {:<18} ↳ {look}", "");
    }
    Ok(())
}
