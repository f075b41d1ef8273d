//! What a uprobe hit costs, per first instruction of the probed function.
//!
//! As root: `cargo run --release -p profiler-probes --example probe_cost [CALLS [ROUNDS]]`.
//! For each candidate form it times CALLS calls without a probe, then with a raw tracefs
//! uprobe on the function's first byte, in ROUNDS rounds that interleave the forms (so drift
//! of the machine hits every form alike), and prints median/min/max ns per call.
//! The probes are removed on exit, also on error.

// The candidate forms are x86-64 machine code.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn main() {
    eprintln!("probe_cost: x86-64 Linux only");
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn main() {
    bench::main()
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod bench {
    use std::fs::{self, OpenOptions};
    use std::hint::black_box;
    use std::io::Write;
    use std::time::Instant;

    const TRACEFS: &str = "/sys/kernel/tracing";

    // The candidates: same job (return), different first instruction. Bytes, not mnemonics,
    // so the assembler cannot pick another encoding; 16-byte aligned like the ABI functions.
    std::arch::global_asm!(
        ".pushsection .text.probe_cost, \"ax\", @progbits",
        ".balign 16",
        // push %rbp; mov %rsp,%rbp; pop %rbp; ret: the kernel emulates `push`.
        "probe_cost_push_rbp: .byte 0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3",
        ".balign 16",
        // nopl 0x0(%rax,%rax,1); ret: 6.18 optimizes a nop5 into a call to a trampoline.
        "probe_cost_nop5: .byte 0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3",
        ".balign 16",
        // cs nopw 0x0(%rax,%rax,1); ret: a 10-byte nop, which newer kernels optimize too.
        "probe_cost_nop10: .byte 0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0, 0xc3",
        ".balign 16",
        // nop; ret: emulated (as a jump to the next instruction), never optimized.
        "probe_cost_nop1: .byte 0x90, 0xc3",
        ".balign 16",
        // mov %rdi,%rax; ret: neither emulated nor optimized, so single-stepped out of line.
        "probe_cost_mov: .byte 0x48, 0x89, 0xf8, 0xc3",
        // The same nop5 across a page boundary, which the kernel does not optimize: the cost
        // of an emulated nop5, as on 6.16 and 6.17 (older kernels single-step it).
        ".balign 4096",
        ".skip 4093, 0xcc",
        "probe_cost_nop5_split: .byte 0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3",
        ".popsection",
    );

    unsafe extern "C" {
        safe fn probe_cost_push_rbp(x: u64);
        safe fn probe_cost_nop5(x: u64);
        safe fn probe_cost_nop10(x: u64);
        safe fn probe_cost_nop1(x: u64);
        safe fn probe_cost_mov(x: u64);
        safe fn probe_cost_nop5_split(x: u64);
    }

    /// (name, function, where the probe goes: bytes after the function's start)
    const FORMS: [(&str, extern "C" fn(u64), usize); 8] = [
        ("push_rbp", probe_cost_push_rbp, 0),
        ("nop5", probe_cost_nop5, 0),
        ("nop5_split", probe_cost_nop5_split, 0),
        ("nop10", probe_cost_nop10, 0),
        ("nop1", probe_cost_nop1, 0),
        ("mov", probe_cost_mov, 0),
        // The crate's real ABI function (nop; nop5; ret), probed on the nop (at the symbol,
        // as every profiler can) and on the nop5 (symbol + 1, where the kernel optimizes).
        ("abi_enter", profiler_probes::profiler_span_enter, 0),
        ("abi_enter+1", profiler_probes::profiler_span_enter, 1),
    ];

    type Result<T> = std::result::Result<T, String>;

    pub fn main() {
        if let Err(e) = run() {
            eprintln!("probe_cost: {e}");
            std::process::exit(1);
        }
    }

    fn run() -> Result<()> {
        let mut args = std::env::args().skip(1);
        let calls: u64 = parse(args.next(), 1_000_000)?;
        let rounds: usize = parse(args.next(), 5)?;
        if !std::path::Path::new(TRACEFS).join("uprobe_events").exists() {
            return Err(format!(
                "no {TRACEFS}/uprobe_events: run as root, with tracefs mounted \
                 (mount -t tracefs nodev {TRACEFS})"
            ));
        }
        let group = format!("probecost{}", std::process::id());
        // Events go to a trace instance of our own, not the global buffer others may read.
        let _instance = Instance::new(&group)?;
        // [form][round] = (ns without, ns with probe)
        let mut results = vec![Vec::new(); FORMS.len()];
        // Forms the kernel will not probe at all, with its answer.
        let mut refused = vec![None; FORMS.len()];
        for round in 0..rounds {
            for (i, &(name, f, at)) in FORMS.iter().enumerate() {
                if refused[i].is_some() {
                    continue;
                }
                let off = time(f, calls);
                let event = name.replace('+', "_at");
                let probe = match Probe::add(&group, &event, f as usize + at) {
                    Ok(p) => p,
                    Err(e) => {
                        eprintln!("round {round} {name:>11}: {e}");
                        refused[i] = Some(e);
                        continue;
                    }
                };
                time(f, 1000); // the first hits install the optimized path, if any
                // What the kernel made of the probed instruction: 0xcc = int3 (trap), 0xe8 =
                // call to the uprobe trampoline (optimized nop5).
                // SAFETY: reads a code byte of a function of this program.
                let first = unsafe { std::ptr::read_volatile((f as *const u8).add(at)) };
                let on = time(f, calls);
                let hits = probe.hits()?;
                drop(probe);
                if hits < calls {
                    return Err(format!("{name}: probe hit {hits} times, expected {calls}"));
                }
                eprintln!(
                    "round {round} {name:>11}: {off:7.2} ns without, {on:8.1} ns with probe \
                     (first byte while probed: {first:#04x})"
                );
                results[i].push((off, on));
            }
        }
        println!("\n{calls} calls x {rounds} rounds, ns per call: median [min..max]");
        println!(
            "{:>11} | {:>22} | {:>28}",
            "form", "no probe", "probe (raw tracefs uprobe)"
        );
        for (((name, _, _), r), refused) in FORMS.iter().zip(&results).zip(&refused) {
            match refused {
                Some(e) => println!("{name:>11} | the kernel refuses the probe: {e}"),
                None => {
                    let (off, on): (Vec<f64>, Vec<f64>) = r.iter().copied().unzip();
                    println!("{name:>11} | {:>22} | {:>28}", stats(off), stats(on));
                }
            }
        }
        Ok(())
    }

    fn parse<T: std::str::FromStr>(arg: Option<String>, default: T) -> Result<T> {
        arg.map_or(Ok(default), |a| {
            a.parse().map_err(|_| format!("bad number {a:?}"))
        })
    }

    fn time(f: extern "C" fn(u64), n: u64) -> f64 {
        let f = black_box(f);
        let start = Instant::now();
        for i in 0..n {
            f(black_box(i));
        }
        start.elapsed().as_nanos() as f64 / n as f64
    }

    fn stats(mut v: Vec<f64>) -> String {
        v.sort_by(f64::total_cmp);
        let (lo, mid, hi) = (v[0], v[v.len() / 2], v[v.len() - 1]);
        if mid < 100.0 {
            format!("{mid:.2} [{lo:.2}..{hi:.2}]")
        } else {
            format!("{mid:.0} [{lo:.0}..{hi:.0}]")
        }
    }

    /// A trace instance, removed on drop (after the probes in it: they are dropped first).
    struct Instance(String);

    impl Instance {
        fn new(name: &str) -> Result<Self> {
            let dir = format!("{TRACEFS}/instances/{name}");
            fs::create_dir(&dir).map_err(|e| format!("creating {dir}: {e}"))?;
            Ok(Self(dir))
        }
    }

    impl Drop for Instance {
        fn drop(&mut self) {
            let _ = fs::remove_dir(&self.0);
        }
    }

    /// A raw uprobe on the first byte of a function of this process; removed on drop.
    struct Probe {
        group: String,
        name: String,
        path: String,
    }

    impl Probe {
        fn add(group: &str, name: &str, addr: usize) -> Result<Self> {
            let (path, offset) = file_offset(addr)?;
            append(&format!("p:{group}/{name} {path}:{offset:#x}"))?;
            let probe = Self {
                group: group.into(),
                name: name.into(),
                path,
            };
            fs::write(probe.dir() + "/enable", "1").map_err(|e| format!("enabling {name}: {e}"))?;
            Ok(probe)
        }

        fn dir(&self) -> String {
            let g = &self.group;
            format!("{TRACEFS}/instances/{g}/events/{g}/{}", self.name)
        }

        /// Hits so far, from uprobe_profile: `PATH EVENT HITS` (6.18; older kernels add
        /// the group to EVENT and a MISSES column).
        fn hits(&self) -> Result<u64> {
            let profile = fs::read_to_string(format!("{TRACEFS}/uprobe_profile"))
                .map_err(|e| format!("reading uprobe_profile: {e}"))?;
            let full = format!("{}/{}", self.group, self.name);
            profile
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|w| w.len() >= 3 && w[0] == self.path && (w[1] == self.name || w[1] == full))
                .and_then(|w| w[2].parse().ok())
                .ok_or_else(|| format!("{full} not in uprobe_profile"))
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            let _ = fs::write(self.dir() + "/enable", "0");
            let _ = append(&format!("-:{}/{}", self.group, self.name));
        }
    }

    /// Appends (never truncates: that would delete everybody's probes) to uprobe_events.
    fn append(line: &str) -> Result<()> {
        OpenOptions::new()
            .append(true)
            .open(format!("{TRACEFS}/uprobe_events"))
            .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
            .map_err(|e| format!("writing {line:?} to uprobe_events: {e}"))
    }

    /// The file and file offset mapped at `addr` in this process, from /proc/self/maps.
    fn file_offset(addr: usize) -> Result<(String, u64)> {
        let maps = fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
        for line in maps.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            let [range, _perms, off, _dev, _inode, path] = w[..] else {
                continue;
            };
            let Some((lo, hi)) = range.split_once('-') else {
                continue;
            };
            let hex = |s: &str| usize::from_str_radix(s, 16).map_err(|e| e.to_string());
            let (lo, hi, off) = (hex(lo)?, hex(hi)?, hex(off)?);
            if (lo..hi).contains(&addr) {
                return Ok((path.to_string(), (addr - lo + off) as u64));
            }
        }
        Err(format!("{addr:#x} is in no file mapping"))
    }
}
