//! `profiler-fuzz`: a mutation fuzzer for the profiler's decoders of untrusted input (see
//! `profiler::fuzz`), with no toolchain beyond stable Rust.
//!
//! Why not cargo-fuzz: libFuzzer needs nightly and a sanitizer build of every dependency,
//! and the eBPF build script would run again under those flags; this loop runs inside the
//! ordinary test build, so `cargo xtask test` can smoke-run it in seconds on any machine.
//! What makes up for the missing coverage feedback is structure: recordings are generated
//! as random but well-typed messages (out-of-range indices, inverted intervals, extreme
//! numbers) before their bytes are mutated, and mutated payloads get a valid header so
//! they reach the protobuf decoder and every output; maps lines and rules are built from
//! their grammar's tokens. Runs are reproducible from the printed seed.
//!
//! Usage: profiler-fuzz [recording|maps|fail_if|ring|module]... [--secs N] [--seed S] [--corpus DIR]
//!        profiler-fuzz --write-ring-seeds DIR   (the seeds of tests/fuzz/corpus/ring)
//! Crashing inputs are saved to target/fuzz-crashes/; the exit status is 1 if any.
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use profiler::model::*;

/// xorshift64*: small, fast, and the same sequence for the same seed everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    /// Numbers where bugs live: zero, edges, and small values that make valid indices.
    fn num(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX - self.below(3) as u64,
            2 => u64::from(u32::MAX) + self.below(3) as u64 - 1,
            3 => 1 << self.below(64),
            4 | 5 => self.below(8) as u64,
            _ => self.next(),
        }
    }
    fn num32(&mut self) -> u32 {
        match self.below(4) {
            0 => u32::MAX,
            1 | 2 => self.below(6) as u32,
            _ => self.next() as u32,
        }
    }
    fn text(&mut self) -> String {
        const PIECES: &[&str] = &[
            "",
            "main",
            "a;b",
            ";",
            " ",
            "\n",
            "\u{0}",
            "é",
            "🔥",
            "<svg>",
            "&amp;",
            "\"",
            "[k]",
            "_[k]",
            "_[i]",
            "[unknown]",
            "/usr/lib/libc.so.6",
            "span:",
            "%",
            "{}",
            "\\",
        ];
        (0..self.below(4))
            .map(|_| PIECES[self.below(PIECES.len())])
            .collect()
    }
    fn vec<T>(&mut self, max: usize, mut f: impl FnMut(&mut Self) -> T) -> Vec<T> {
        let n = self.below(max + 1);
        (0..n).map(|_| f(self)).collect()
    }
}

/// A random recording: every field set, indices mostly in range, sometimes not.
fn random_recording(r: &mut Rng) -> Recording {
    let base = if r.chance(4) { r.num() } else { 1_000_000_000 };
    let t = |r: &mut Rng| {
        if r.chance(3) {
            r.num()
        } else {
            base.wrapping_add(r.below(200_000_000) as u64)
        }
    };
    let pids = [r.num32(), r.num32(), 42];
    let pid = |r: &mut Rng| pids[r.below(3)];
    let modules = r.vec(4, |r| Module {
        path: r.text(),
        kind: r.below(4) as i32 - i32::from(r.chance(8)),
        build_id: r.vec(3, |r| r.next() as u8),
        has_symbols: r.chance(2),
        debug_file: r.text(),
    });
    let functions = r.vec(6, |r| Function {
        name: r.text(),
        file: r.text(),
    });
    let locations = r.vec(8, |r| Location {
        module: r.num32(),
        offset: r.num(),
        address: r.num(),
        lines: r.vec(3, |r| Line {
            function: r.num32(),
            line: r.num32(),
        }),
    });
    let stacks = r.vec(6, |r| Stack {
        locations: r.vec(6, |r| r.num32()),
    });
    let samples = r.vec(30, |r| Sample {
        timestamp_ns: t(r),
        pid: pid(r),
        tid: pid(r),
        cpu: r.num32(),
        stack: r.num32(),
        span: r.num(),
    });
    let spans = r.vec(6, |r| Span {
        id: r.num(),
        parent: r.num(),
        name: r.text(),
        target: r.text(),
        file: r.text(),
        line: r.num32(),
        begin_ns: t(r),
        end_ns: t(r),
        incomplete: r.chance(2),
        tids: r.vec(3, |r| r.num32()),
        samples: r.num(),
        depth: r.num32(),
        pid: pid(r),
    });
    let span_runs = r.vec(6, |r| SpanRun {
        span: r.num(),
        tid: pid(r),
        begin_ns: t(r),
        end_ns: t(r),
        pid: pid(r),
    });
    let off = |r: &mut Rng| OffCpu {
        pid: pid(r),
        tid: pid(r),
        stack: r.num32(),
        span: r.num(),
        runnable: r.chance(2),
        total_ns: r.num(),
        count: r.num(),
    };
    let off_cpu = r.vec(5, off);
    let off_cpu_intervals = r.vec(5, |r| OffCpuInterval {
        pid: pid(r),
        tid: pid(r),
        stack: r.num32(),
        span: r.num(),
        runnable: r.chance(2),
        begin_ns: t(r),
        end_ns: t(r),
    });
    let allocs = r.vec(5, |r| Alloc {
        pid: pid(r),
        tid: pid(r),
        stack: r.num32(),
        span: r.num(),
        timestamp_ns: t(r),
        size: r.num(),
        live: r.chance(2),
        tracked: r.chance(2),
        function: r.text(),
    });
    let mut counters = Counters::default();
    for c in [
        &mut counters.seen,
        &mut counters.emitted,
        &mut counters.received,
        &mut counters.lost_ringbuf_full,
        &mut counters.span_events,
        &mut counters.span_events_lost,
        &mut counters.off_cpu_lost_ns,
        &mut counters.malformed_events,
    ] {
        *c = r.num();
    }
    Recording {
        format_version: FORMAT_VERSION,
        meta: (!r.chance(8)).then(|| Meta {
            pid: pid(r),
            command: r.vec(3, |r| r.text()),
            comm: r.text(),
            start_boottime_ns: if r.chance(3) { r.num() } else { base },
            end_boottime_ns: t(r),
            start_unix_ns: r.num(),
            frequency_hz: r.num(),
            stop_reason: r.text(),
            load_attach_ns: r.num(),
            bpf_run_count: r.num(),
            bpf_run_time_ns: r.num(),
            cpus: r.num32(),
            warnings: r.vec(2, |r| r.text()),
            stack_bytes: r.num32(),
            unwind: r.chance(2).then(|| UnwindInfo {
                samples: r.num(),
                truncated: r.num(),
                total_ns: r.num(),
                stack_bytes_p50: r.num32(),
                stack_bytes_p99: r.num32(),
                stack_bytes_max: r.num32(),
                load_ns: r.num(),
                copied_bytes: r.num(),
                out_of_sized_copy: r.num(),
            }),
            coverage: r.chance(2).then(|| Coverage {
                cpu_ns: r.num(),
                sampled: r.num(),
                expected: r.num(),
                threads: r.num32(),
                threads_left_out: r.num32(),
                process_cpu_ns: r.num(),
                process_sampled: r.num(),
                process_expected: r.num(),
            }),
            window_cut: r.chance(4),
            ..Default::default()
        }),
        modules,
        functions,
        locations,
        stacks,
        threads: r.vec(4, |r| Thread {
            tid: pid(r),
            pid: pid(r),
            name: r.text(),
        }),
        samples,
        counters: (!r.chance(8)).then_some(counters),
        processes: r.vec(3, |r| Process {
            pid: pid(r),
            comm: r.text(),
            command: r.vec(2, |r| r.text()),
            exe: r.text(),
            parent: pid(r),
            // Sometimes a container's path, so the container id parser sees near misses.
            cgroup: if r.chance(2) {
                format!("/docker-{}{}.scope", "0f".repeat(r.below(34)), r.text())
            } else {
                r.text()
            },
            kernel_thread: r.chance(4),
            // Names before execs, in any order: a file need not keep them sorted.
            names_before: r.vec(2, |r| profiler::model::NameBefore {
                until_ns: r.num(),
                comm: r.text(),
            }),
        }),
        spans,
        span_runs,
        span_info: r.chance(2).then(|| SpanInfo {
            unmatched_ends: r.num(),
            unmatched_exits: r.num(),
            duplicate_begins: r.num(),
            abi_modules: r.vec(2, |r| r.text()),
            span_fns: r.vec(2, |r| r.text()),
        }),
        off_cpu,
        off_cpu_intervals,
        off_cpu_info: r.chance(2).then(|| OffCpuInfo {
            min_ns: r.num(),
            interval_min_ns: r.num(),
            windowed: r.chance(2),
            bpf_run_count: r.num(),
            bpf_run_time_ns: r.num(),
            sample_every: r.num() as u32,
        }),
        allocs,
        alloc_info: r.chance(2).then(|| AllocInfo {
            sample_bytes: r.num(),
            calls: r.num(),
            bytes: r.num(),
            bpf_run_count: r.num(),
            bpf_run_time_ns: r.num(),
            files: r.vec(2, |r| r.text()),
            windowed: r.chance(2),
            ..Default::default()
        }),
        lock_waits: r.vec(4, |r| LockWait {
            pid: pid(r),
            tid: pid(r),
            stack: r.num32(),
            span: r.num(),
            address: r.num(),
            symbol: r.text(),
            total_ns: r.num(),
            count: r.num(),
            first_ns: t(r),
            last_ns: t(r),
            kernel_kind: if r.chance(2) { r.text() } else { String::new() },
        }),
        lock_info: r.chance(2).then(|| LockInfo {
            waits: r.num(),
            lost: r.num(),
            kernel: r.chance(2),
            kernel_waits: r.num(),
            kernel_lost: r.num(),
            kernel_ends_missed: r.num(),
            kernel_in_flight: r.num(),
            kernel_bpf_run_count: r.num(),
            kernel_bpf_run_time_ns: r.num(),
            bpf_run_count: r.num(),
            bpf_run_time_ns: r.num(),
            windowed: r.chance(2),
            ..Default::default()
        }),
    }
}

const MAPS_TOKENS: &[&str] = &[
    "-",
    " ",
    "  ",
    "\n",
    "r-xp",
    "rw-p",
    "---s",
    "x",
    "00000000",
    "ffffffffffffffff",
    "fffffffffffffffff",
    "7f0000000000",
    "08:01",
    "fd:00",
    "1234",
    "0",
    "/usr/lib/libc.so.6",
    " (deleted)",
    "[vdso]",
    "[stack]",
    "[heap]",
    "/memfd:jit (deleted)",
    "\t",
    "é",
    "\u{0}",
    "-1",
    "+",
    "0x10",
];

const RULE_TOKENS: &[&str] = &[
    "span(",
    ")",
    "(",
    ".",
    "*",
    "db_query",
    "total",
    "mean",
    "stddev",
    "p50",
    "p95",
    "p99",
    "max",
    "count",
    "samples",
    ">",
    ">=",
    "<",
    "<=",
    "==",
    "!=",
    "=",
    " ",
    "1",
    "0",
    "700",
    "ms",
    "us",
    "µs",
    "ns",
    "s",
    "m",
    "h",
    "%",
    "1e309",
    "-1",
    "1.5",
    "nan",
    "inf",
    "spans.concurrency",
    "spans.count",
    "lost.samples",
    "lost.events",
    "spans",
    "lost",
    ",",
    "'",
    "\"",
    "\\",
    "18446744073709551616",
    "99999999999999999999ms",
];

fn grammar(r: &mut Rng, tokens: &[&str], max: usize) -> Vec<u8> {
    let n = 1 + r.below(max);
    (0..n)
        .flat_map(|_| tokens[r.below(tokens.len())].bytes())
        .collect()
}

fn mutate(r: &mut Rng, data: &mut Vec<u8>, tokens: &[&str], others: &[Vec<u8>]) {
    for _ in 0..1 + r.below(6) {
        let len = data.len();
        match r.below(9) {
            0 if len > 0 => {
                let i = r.below(len);
                data[i] ^= 1 << r.below(8);
            }
            1 if len > 0 => {
                let i = r.below(len);
                data[i] = [0, 0xff, 0x7f, 0x80, 1, b'-', b' '][r.below(7)];
            }
            2 => {
                let i = r.below(len + 1);
                let add: Vec<u8> = (0..1 + r.below(8)).map(|_| r.next() as u8).collect();
                data.splice(i..i, add);
            }
            3 if len > 0 => {
                let i = r.below(len);
                let j = (i + 1 + r.below(16)).min(len);
                data.drain(i..j);
            }
            4 if len > 0 => {
                let i = r.below(len);
                let j = (i + 1 + r.below(32)).min(len);
                let copy = data[i..j].to_vec();
                let at = r.below(len + 1);
                data.splice(at..at, copy);
            }
            5 => data.truncate(r.below(len + 1)),
            6 if !tokens.is_empty() => {
                let i = r.below(len + 1);
                let t = tokens[r.below(tokens.len())].as_bytes().to_vec();
                data.splice(i..i, t);
            }
            7 if !others.is_empty() => {
                let other = &others[r.below(others.len())];
                let cut = r.below(len + 1);
                let from = r.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            // A varint-looking run: long lengths and field numbers in protobuf.
            _ => {
                let i = r.below(len + 1);
                let run: Vec<u8> = (0..1 + r.below(10))
                    .map(|_| 0x80 | r.next() as u8)
                    .collect();
                data.splice(i..i, run);
            }
        }
    }
    data.truncate(1 << 20);
}

struct Target {
    name: &'static str,
    run: fn(&[u8]),
}

const TARGETS: &[Target] = &[
    Target {
        name: "recording",
        run: profiler::fuzz::recording,
    },
    Target {
        name: "maps",
        run: profiler::fuzz::maps,
    },
    Target {
        name: "fail_if",
        run: profiler::fuzz::fail_if,
    },
    Target {
        name: "ring",
        run: profiler::fuzz::ring_record,
    },
    Target {
        name: "module",
        run: profiler::fuzz::module,
    },
];

/// An ELF file from the corpus with its structure bent: header counts and offsets, section
/// and program header fields set to edge numbers, bytes changed inside one section's contents
/// (where the symbol, unwind and DWARF parsers look), or cut short.
fn module_input(r: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let Some(seed) = corpus.get(r.below(corpus.len())) else {
        return Vec::new();
    };
    let mut data = seed.clone();
    let u16_at = |d: &[u8], at: usize| {
        d.get(at..at.saturating_add(2))
            .and_then(|b| b.try_into().ok())
            .map_or(0, u16::from_le_bytes) as usize
    };
    let u64_at = |d: &[u8], at: usize| {
        d.get(at..at.saturating_add(8))
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes) as usize
    };
    let (shoff, shnum) = (u64_at(&data, 0x28), u16_at(&data, 0x3c));
    let (phoff, phnum) = (u64_at(&data, 0x20), u16_at(&data, 0x38));
    for _ in 0..1 + r.below(3) {
        match r.below(6) {
            // ELF header: table offsets, entry sizes and counts, the string table's index.
            0 => {
                let at = [0x18, 0x20, 0x28, 0x36, 0x38, 0x3a, 0x3c, 0x3e][r.below(8)];
                let width = if at < 0x30 { 8 } else { 2 };
                let v = r.num().to_le_bytes();
                if let Some(field) = data.get_mut(at..at + width) {
                    field.copy_from_slice(&v[..width]);
                }
            }
            // A section header's address, offset, size, link, alignment or entry size.
            1 if shnum > 0 => {
                let base = shoff.saturating_add(64 * r.below(shnum));
                let (at, width) = [
                    (4, 4),
                    (0x10, 8),
                    (0x18, 8),
                    (0x20, 8),
                    (0x28, 4),
                    (0x30, 8),
                    (0x38, 8),
                ][r.below(7)];
                let v = r.num().to_le_bytes();
                if let Some(field) =
                    data.get_mut(base.saturating_add(at)..base.saturating_add(at + width))
                {
                    field.copy_from_slice(&v[..width]);
                }
            }
            // A program header's offset, addresses or sizes.
            2 if phnum > 0 => {
                let base = phoff.saturating_add(56 * r.below(phnum));
                let at = [0, 8, 0x10, 0x20, 0x28, 0x30][r.below(6)];
                let width = if at == 0 { 4 } else { 8 };
                let v = r.num().to_le_bytes();
                if let Some(field) =
                    data.get_mut(base.saturating_add(at)..base.saturating_add(at + width))
                {
                    field.copy_from_slice(&v[..width]);
                }
            }
            // Bytes inside one section's contents.
            3 | 4 if shnum > 0 => {
                let base = shoff.saturating_add(64 * r.below(shnum));
                let (offset, size) = (
                    u64_at(&data, base.saturating_add(0x18)),
                    u64_at(&data, base.saturating_add(0x20)),
                );
                if size > 0 && offset < data.len() {
                    for _ in 0..1 + r.below(8) {
                        let at = offset.saturating_add(r.below(size)).min(data.len() - 1);
                        data[at] = match r.below(3) {
                            0 => data[at] ^ (1 << r.below(8)),
                            1 => [0, 0xff, 0x7f, 0x80, 1][r.below(5)],
                            _ => r.next() as u8,
                        };
                    }
                }
            }
            _ => mutate(r, &mut data, &[], &[]),
        }
    }
    data
}

/// A ring buffer record: a well-formed one of a random kind (or a kind that does not exist),
/// its fields filled with edge numbers, its length fields set to edges (0, the bound, just
/// past it, u32::MAX), then its length and bytes mutated.
fn ring_input(r: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    let seeds = profiler::fuzz::ring_seeds();
    let mut data = if corpus.is_empty() || r.chance(2) {
        seeds[r.below(seeds.len())].1.clone()
    } else {
        corpus[r.below(corpus.len())].clone()
    };
    if r.chance(8) && data.len() >= 4 {
        let kind = [0u32, 14, 255, u32::MAX, r.next() as u32][r.below(5)];
        data[..4].copy_from_slice(&kind.to_ne_bytes());
    }
    // Whole fields, 8 bytes at a time past the kind: pids, times, stack ids, span ids.
    for _ in 0..r.below(6) {
        if data.len() >= 16 {
            let at = 4 + r.below(data.len() - 12);
            data[at..at + 8].copy_from_slice(&r.num().to_ne_bytes());
        }
    }
    let kind = data
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes);
    for at in profiler::fuzz::ring_length_fields(kind) {
        if r.chance(2)
            && let Some(field) = data.get_mut(at..at + 4)
        {
            let v = [0u32, 1, 126, 127, 128, 4096, 1 << 17, u32::MAX, r.num32()][r.below(9)];
            field.copy_from_slice(&v.to_ne_bytes());
        }
    }
    match r.below(4) {
        // Cut short, or longer than the record (DWARF records carry a variable tail).
        0 => data.truncate(r.below(data.len() + 1)),
        1 => data.extend((0..r.below(300)).map(|_| r.next() as u8)),
        2 => mutate(r, &mut data, &[], corpus),
        _ => {}
    }
    data
}

fn load_corpus(dir: &Path) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// One input for `target`: a corpus entry or a generated one, mutated.
fn next_input(r: &mut Rng, target: &str, corpus: &[Vec<u8>]) -> Vec<u8> {
    match target {
        "recording" => {
            // Mode byte: even = whole file, odd = payload behind a valid header.
            let mode = (r.next() as u8) | u8::from(!r.chance(4));
            let mut payload = if corpus.is_empty() || r.chance(2) {
                use prost::Message;
                random_recording(r).encode_to_vec()
            } else {
                let file = &corpus[r.below(corpus.len())];
                file.get(1 + profiler::outputs::recording::HEADER_LEN..)
                    .unwrap_or_default()
                    .to_vec()
            };
            if mode & 1 == 0 {
                payload = profiler::fuzz::with_header(&payload);
            }
            if !r.chance(5) {
                mutate(r, &mut payload, &[], corpus);
            }
            let mut input = vec![mode];
            input.extend_from_slice(&payload);
            input
        }
        "ring" => ring_input(r, corpus),
        "module" => module_input(r, corpus),
        "maps" => {
            let mut data = if corpus.is_empty() || r.chance(3) {
                grammar(r, MAPS_TOKENS, 40)
            } else {
                corpus[r.below(corpus.len())].clone()
            };
            mutate(r, &mut data, MAPS_TOKENS, corpus);
            data
        }
        _ => {
            let mut data = if corpus.is_empty() || r.chance(3) {
                grammar(r, RULE_TOKENS, 12)
            } else {
                corpus[r.below(corpus.len())].clone()
            };
            mutate(r, &mut data, RULE_TOKENS, corpus);
            data
        }
    }
}

fn main() -> std::process::ExitCode {
    let mut names = Vec::new();
    let mut secs = 10.0;
    let mut seed = None;
    let mut corpus_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => secs = args.next().and_then(|s| s.parse().ok()).unwrap_or(secs),
            "--seed" => seed = args.next().and_then(|s| s.parse().ok()),
            "--corpus" => corpus_root = args.next().map(PathBuf::from).unwrap_or(corpus_root),
            "--write-ring-seeds" => {
                let dir = args.next().map(PathBuf::from).unwrap_or_default();
                for (name, bytes) in profiler::fuzz::ring_seeds() {
                    if let Err(e) = std::fs::write(dir.join(name), bytes) {
                        eprintln!("profiler-fuzz: {}: {e}", dir.join(name).display());
                        return std::process::ExitCode::FAILURE;
                    }
                }
                return std::process::ExitCode::SUCCESS;
            }
            name => names.push(name.to_string()),
        }
    }
    if names.is_empty() {
        names = TARGETS.iter().map(|t| t.name.to_string()).collect();
    }
    let seed: u64 = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    }) | 1;
    let crash_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-crashes");
    // Panics are counted and their inputs saved; the first message of each kind is printed.
    let seen_messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    {
        let seen = seen_messages.clone();
        std::panic::set_hook(Box::new(move |info| {
            // Caught where it happened and turned into the profiler's own error.
            if profiler::contain::containing() {
                return;
            }
            let msg = format!(
                "{} at {}",
                info.payload_as_str().unwrap_or("panic"),
                info.location().map(|l| l.to_string()).unwrap_or_default()
            );
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            if !seen.contains(&msg) {
                eprintln!("profiler-fuzz: panic: {msg}");
                seen.push(msg);
            }
        }));
    }
    let per_target = Duration::from_secs_f64(secs / names.len() as f64);
    let mut any_crash = false;
    for name in &names {
        let Some(target) = TARGETS.iter().find(|t| t.name == name) else {
            eprintln!(
                "profiler-fuzz: unknown target {name} (recording, maps, fail_if, ring, module)"
            );
            return std::process::ExitCode::from(2);
        };
        let corpus = load_corpus(&corpus_root.join(target.name));
        let mut r = Rng(seed);
        let started = Instant::now();
        let (mut execs, mut crashes) = (0u64, 0u64);
        // Every corpus entry once as it is, then mutations until the time is up.
        for input in &corpus {
            execs += 1;
            if std::panic::catch_unwind(|| (target.run)(input)).is_err() {
                crashes += 1;
                save(&crash_dir, target.name, input);
            }
        }
        while started.elapsed() < per_target {
            let input = next_input(&mut r, target.name, &corpus);
            execs += 1;
            if std::panic::catch_unwind(|| (target.run)(&input)).is_err() {
                crashes += 1;
                save(&crash_dir, target.name, &input);
            }
        }
        println!(
            "profiler-fuzz: {}: {execs} executions in {:.1} s, {crashes} crashes, {} corpus entries, seed {seed}",
            target.name,
            started.elapsed().as_secs_f64(),
            corpus.len()
        );
        any_crash |= crashes > 0;
    }
    if any_crash {
        eprintln!(
            "profiler-fuzz: crashing inputs saved in {}",
            crash_dir.display()
        );
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}

fn save(dir: &Path, target: &str, input: &[u8]) {
    let _ = std::fs::create_dir_all(dir);
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let _ = std::fs::write(dir.join(format!("{target}-{hash:016x}")), input);
}
