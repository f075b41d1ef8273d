//! Building instrumented programs (Rust example, C with the header) and reading their code.
#![allow(dead_code)] // each test file uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const SYMBOLS: [&str; 4] = [
    "profiler_span_begin",
    "profiler_span_end",
    "profiler_span_enter",
    "profiler_span_exit",
];

/// Every ABI function is exactly this: `nop` (emulated by every kernel: probed at the
/// symbol), `nopl 0x0(%rax,%rax,1)` (the 5-byte nop Linux 6.18+ optimizes: probed at symbol + 1
/// by profilers that know their kernel), `ret`.
pub const INSNS: [&str; 3] = ["90", "0f 1f 44 00 00", "c3"];

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// A directory of our own under this target dir: the nested cargo must not wait on the lock
/// of the build that runs us.
fn scratch() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe-programs")
}

/// Runs a tool; a missing tool fails the test with its name, never skips it.
pub fn run(cmd: &mut Command) -> Output {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {name} ({e}): this test needs it installed (objdump: binutils, gcc/g++)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Builds `examples/spans.rs` with the cargo running this test; returns the binary.
pub fn rust_example(release: bool) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_string());
    let target = scratch().join("cargo");
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "profiler-probes",
        "--example",
        "spans",
    ])
    .arg("--manifest-path")
    .arg(Path::new(MANIFEST_DIR).join("Cargo.toml"))
    .env("CARGO_TARGET_DIR", &target);
    if release {
        cmd.arg("--release");
    }
    run(&mut cmd);
    target
        .join(if release { "release" } else { "debug" })
        .join("examples/spans")
}

/// Builds `tests/c/{main,other}.c` with `compiler` (gcc: C11, g++: C++17) at `opt`, warnings
/// as errors; returns the binary.
pub fn c_program(compiler: &str, opt: &str) -> PathBuf {
    let dir = scratch().join("c");
    std::fs::create_dir_all(&dir).expect("creating the scratch directory");
    let bin = dir.join(format!("probes-{compiler}{opt}"));
    let src = Path::new(MANIFEST_DIR).join("tests/c");
    let lang: &[&str] = if compiler == "g++" {
        &["-std=c++17", "-x", "c++"]
    } else {
        &["-std=c11"]
    };
    run(Command::new(compiler)
        .args(lang)
        .args(["-Wall", "-Wextra", "-Wpedantic", "-Werror", opt])
        .arg("-I")
        .arg(Path::new(MANIFEST_DIR).join("include"))
        .arg(src.join("main.c"))
        .arg(src.join("other.c"))
        .arg("-o")
        .arg(&bin));
    bin
}

/// One ABI function as `objdump -d -F` shows it.
#[derive(Debug)]
pub struct Func {
    pub name: String,
    pub addr: u64,
    pub file_offset: u64,
    /// (hex bytes, mnemonic) of its first instructions.
    pub insns: Vec<(String, String)>,
}

/// The ABI functions of `bin`, each exactly once (panics otherwise).
pub fn abi_functions(bin: &Path) -> Vec<Func> {
    let out = run(Command::new("objdump").args(["-d", "-F"]).arg(bin));
    let text = String::from_utf8_lossy(&out.stdout);
    SYMBOLS
        .iter()
        .map(|name| {
            // A header starts at column 0; calls to the function mention it too, indented.
            let tag = format!(" <{name}> (File Offset: 0x");
            let is_header = |l: &str| {
                l.contains(&tag) && l.ends_with("):") && !l.starts_with(char::is_whitespace)
            };
            let mut found = text.lines().enumerate().filter(|(_, l)| is_header(l));
            let (i, header) = found
                .next()
                .unwrap_or_else(|| panic!("{name} not in {}", bin.display()));
            assert!(found.next().is_none(), "{name} twice in {}", bin.display());
            // `0000000000001220 <name> (File Offset: 0x1220):`
            let hex = |s: &str| u64::from_str_radix(s, 16).expect("objdump hex");
            let addr = hex(header.split(' ').next().unwrap_or_default());
            let file_offset = hex(header
                .rsplit("0x")
                .next()
                .unwrap_or_default()
                .trim_end_matches("):"));
            // `    1220:\t0f 1f 44 00 00       \tnopl   0x0(%rax,%rax,1)`
            let insns = text
                .lines()
                .skip(i + 1)
                .take_while(|l| !l.trim().is_empty())
                .filter_map(|l| {
                    let mut cols = l.split('\t');
                    cols.next()?;
                    Some((
                        cols.next()?.trim().to_string(),
                        cols.next()?.trim().to_string(),
                    ))
                })
                .take(INSNS.len())
                .collect();
            Func {
                name: name.to_string(),
                addr,
                file_offset,
                insns,
            }
        })
        .collect()
}

/// Asserts the four functions are distinct, aligned, and each starts with the chosen
/// instructions.
pub fn assert_abi_code(bin: &Path) {
    let funcs = abi_functions(bin);
    for f in &funcs {
        let bytes: Vec<&str> = f.insns.iter().map(|(b, _)| b.as_str()).collect();
        assert_eq!(
            bytes,
            INSNS,
            "{} in {} starts with {:?}",
            f.name,
            bin.display(),
            f.insns
        );
    }
    for f in &funcs {
        // The kernel never optimizes a nop5 that crosses a page; 16-byte alignment rules it out.
        // (The nop5 starts at +1, so it ends at +6, in the same 16 bytes.)
        assert_eq!(
            f.addr % 16,
            0,
            "{} in {} is not 16-byte aligned",
            f.name,
            bin.display()
        );
    }
    let mut addrs: Vec<u64> = funcs.iter().map(|f| f.addr).collect();
    addrs.sort_unstable();
    addrs.dedup();
    assert_eq!(
        addrs.len(),
        4,
        "ABI functions folded together in {}: {funcs:?}",
        bin.display()
    );
}
