//! `--alloc`: uprobes on the allocator of each target process (the files it maps that define
//! `malloc`: the C library, jemalloc, tcmalloc, a static allocator in the executable), the
//! sampled allocations they send, and at the end the sampled allocations never freed.
//!
//! Probes are placed per process (`UProbeScope::OneProcess`): the kernel then sets breakpoints
//! only in that process's memory, so other processes that map the same C library never trap.
//! Only `--all`, where every process is a target, probes each file for every process.
use std::{
    collections::{HashMap, HashSet},
    num::NonZeroU32,
    path::Path,
};

use aya::{
    maps::{Array, HashMap as BpfHashMap, PerCpuArray},
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope},
    },
};
use profiler_common::alloc::{AllocEvent, AllocKey, counter, defaults, func, names};

use super::{
    RawStack, map_err, modules::ModuleStore, object_map, object_map_ref, processes::Processes,
    procfs::AddressSpace, sideband::FileIdentity,
};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocOptions {
    /// Mean bytes between sampled allocations; 1 samples every allocation.
    pub sample_bytes: u64,
}

/// One sampled allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawAlloc {
    pub pid: u32,
    pub tid: u32,
    pub timestamp_ns: u64,
    pub size: u64,
    pub addr: u64,
    pub seq: u64,
    /// The stack at the allocator's entry, its caller put back (see `AllocEvent::caller`).
    pub user: RawStack,
    pub caller: u64,
    pub span_id: u64,
    pub func: u32,
    /// Never freed while recorded (leak candidates); false when unknown (`tracked`).
    pub live: bool,
    pub tracked: bool,
    pub space: u32,
}

impl RawAlloc {
    pub fn from_event(e: &AllocEvent) -> Self {
        Self {
            pid: e.pid,
            tid: e.tid,
            timestamp_ns: e.timestamp_ns,
            size: e.size,
            addr: e.addr,
            seq: e.seq,
            user: RawStack::from_id(e.user_stack_id),
            caller: e.caller,
            span_id: e.span_id,
            func: e.func,
            live: false,
            tracked: e.tracked != 0,
            space: 0,
        }
    }
}

/// The kernel's counters of `--alloc` (see `profiler_common::alloc::counter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocCounters {
    pub calls: u64,
    pub bytes: u64,
    pub frees: u64,
    pub nested: u64,
    pub sampled: u64,
    pub emitted: u64,
    pub lost_ringbuf: u64,
    pub threads_full: u64,
    pub live_full: u64,
    pub failed: u64,
    pub sampled_frees: u64,
}

#[derive(Debug, Default)]
pub struct RawAllocData {
    pub sample_bytes: u64,
    pub allocs: Vec<RawAlloc>,
    pub counters: AllocCounters,
    /// Sampled allocations the kernel still held as live at the end but that never arrived
    /// (lost between the kernel and here): none expected.
    pub live_unmatched: u64,
    /// Kernel BPF run-time statistics of the entry, return and free programs.
    pub bpf_run_count: u64,
    pub bpf_run_time_ns: u64,
    /// Files probed, for the summary.
    pub files: Vec<String>,
}

/// `n` distances between samples, exponentially distributed with mean `mean` bytes: the
/// quantiles at the middle of `n` equal slices of probability, scaled so that their mean is
/// exactly `mean` (the estimate scales each sample by it). Shuffling is not needed: the
/// kernel picks an entry at random each time.
pub fn exp_table(mean: u64, n: u32) -> Vec<u64> {
    let n = n.max(1);
    let raw: Vec<f64> = (0..n)
        .map(|i| -(1.0 - (f64::from(i) + 0.5) / f64::from(n)).ln())
        .collect();
    let avg = raw.iter().sum::<f64>() / f64::from(n);
    raw.iter()
        .map(|x| {
            ((x / avg) * mean as f64)
                .round()
                .clamp(1.0, u64::MAX as f64) as u64
        })
        .collect()
}

/// Fills the sampling table; call before the programs are attached.
pub fn configure(ebpf: &mut aya::Ebpf, opts: &AllocOptions) -> Result<()> {
    let map = object_map(ebpf, names::MAP_ALLOC_EXP)?;
    let mut table: Array<_, u64> = Array::try_from(map).map_err(map_err(names::MAP_ALLOC_EXP))?;
    for (i, v) in exp_table(opts.sample_bytes, defaults::EXP_ENTRIES)
        .into_iter()
        .enumerate()
    {
        table
            .set(i as u32, v, 0)
            .map_err(map_err(names::MAP_ALLOC_EXP))?;
    }
    Ok(())
}

fn program<'a>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut UProbe> {
    let prog_err = |e| Error::Program {
        program: name,
        source: Box::new(e),
    };
    let p: &mut UProbe = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Internal(format!("eBPF object lacks {name}")))?
        .try_into()
        .map_err(prog_err)?;
    if p.fd().is_err() {
        p.load().map_err(prog_err)?;
    }
    Ok(p)
}

/// The allocator entry points a file defines: (file offset, function), one per address.
fn allocator_offsets(bytes: &[u8]) -> Vec<(u64, u64)> {
    use object::{Object, ObjectSegment, ObjectSymbol};
    let Ok(file) = object::File::parse(bytes) else {
        return Vec::new();
    };
    // Exported and defined here: a file that only calls malloc imports it (undefined).
    let defines_malloc = file
        .dynamic_symbols()
        .chain(file.symbols())
        .any(|s| s.name() == Ok("malloc") && s.is_definition() && s.is_global());
    if !defines_malloc {
        return Vec::new();
    }
    // File offsets from the symbols' addresses and the segments that load them (blazesym's
    // look-up by name does not see the versioned dynamic symbols of a stripped libc).
    let segments: Vec<(u64, u64, u64)> = file
        .segments()
        .map(|seg| (seg.address(), seg.size(), seg.file_range().0))
        .collect();
    let offset_of = |addr: u64| {
        segments.iter().find_map(|&(start, size, file_start)| {
            (addr >= start && addr - start < size).then(|| file_start.checked_add(addr - start))?
        })
    };
    let found: Vec<Option<u64>> = func::SYMBOLS
        .iter()
        .map(|(name, _)| {
            file.dynamic_symbols()
                .chain(file.symbols())
                .find(|s| s.name() == Ok(*name) && s.is_definition())
                .and_then(|s| offset_of(s.address()))
        })
        .collect();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (offset, (_, f)) in found.into_iter().zip(func::SYMBOLS) {
        let offset = offset.map(|o| probe_point(bytes, o, f));
        // Aliases (memalign and aligned_alloc in older glibc) share an address: probed once.
        if let Some(offset) = offset
            && !out.iter().any(|(o, _)| *o == offset)
        {
            out.push((offset, f));
        }
    }
    out
}

/// Where to probe an allocator function that starts at file offset `at`. The kernel emulates
/// a few instructions at a uprobe (push, jumps) and single-steps the others out of line,
/// which costs a second trap: here 18 µs more per call, for glibc's `free`, which starts
/// with `test %rdi,%rdi; je` (the NULL case). Leading instructions that change neither the
/// stack pointer nor the argument registers are stepped over, as long as the instruction
/// reached is one the kernel emulates: `endbr64`, a `cmpb $imm8, disp32(%rip)` (flags only),
/// and for `free` its NULL test and branch (free(NULL) is nothing to record). Anything else
/// is probed at the symbol.
fn probe_point(bytes: &[u8], at: u64, f: u64) -> u64 {
    let Ok(start) = usize::try_from(at) else {
        return at;
    };
    let Some(code) = bytes.get(start..start.saturating_add(32)) else {
        return at;
    };
    let mut i = 0usize;
    if code.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
        i += 4;
    }
    let rest = |i: usize| code.get(i..).unwrap_or(&[]);
    if rest(i).starts_with(&[0x80, 0x3d]) {
        i += 7;
    } else if f == func::FREE && rest(i).starts_with(&[0x48, 0x85, 0xff]) {
        match rest(i + 3) {
            [0x74, ..] => i += 5,
            [0x0f, 0x84, ..] => i += 9,
            _ => return at,
        }
    }
    // push, push r8-r15, and the jumps the kernel emulates.
    let emulated = matches!(
        rest(i),
        [0x50..=0x57, ..]
            | [0x41, 0x50..=0x57, ..]
            | [0x70..=0x7f, ..]
            | [0xeb, ..]
            | [0xe9, ..]
            | [0x0f, 0x80..=0x8f, ..]
    );
    if i > 0 && emulated { at + i as u64 } else { at }
}

/// The probes of one process (or, under `--all`, of every process: pid 0).
#[derive(Debug, Default)]
struct Probed {
    /// By identity: `run` probes the C library by path before the module store knows it.
    files: HashSet<FileIdentity>,
    links: Vec<(&'static str, UProbeLinkId)>,
}

/// Allocator probes placed so far, and where more are needed as processes come and go.
#[derive(Debug, Default)]
pub struct AllocProbes {
    /// Allocator entry points of each module of the store (empty: not an allocator).
    offsets: HashMap<u32, Vec<(u64, u64)>>,
    /// Probes by process; pid 0 for probes of every process (`--all`).
    by_pid: HashMap<u32, Probed>,
    any_process: bool,
    pub files: Vec<String>,
}

impl AllocProbes {
    pub fn new(any_process: bool) -> Self {
        Self {
            any_process,
            ..Default::default()
        }
    }

    /// Probes the allocator files in `space` for its process (all processes under `--all`).
    pub fn attach_space(
        &mut self,
        ebpf: &mut aya::Ebpf,
        space: &AddressSpace,
        modules: &ModuleStore,
    ) -> Result<()> {
        let pid = if self.any_process { 0 } else { space.pid };
        let mut ids: Vec<u32> = space.mappings.iter().filter_map(|m| m.module).collect();
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            let Some(m) = modules.get(id) else { continue };
            if self
                .by_pid
                .get(&pid)
                .is_some_and(|p| p.files.contains(&m.identity))
            {
                continue;
            }
            let Some(readable) = modules.readable_path(id) else {
                continue;
            };
            let offsets = self
                .offsets
                .entry(id)
                .or_insert_with(|| allocator_offsets(m.bytes()))
                .clone();
            let probed = self.by_pid.entry(pid).or_default();
            probed.files.insert(m.identity);
            if offsets.is_empty() {
                continue;
            }
            attach_file(ebpf, readable.path(), pid, &offsets, &mut probed.links).map_err(|e| {
                Error::Internal(format!("attaching --alloc probes to {}: {e}", m.path))
            })?;
            if !self.files.contains(&m.path) {
                self.files.push(m.path.clone());
            }
        }
        Ok(())
    }

    /// Probes a file by path for `pid` (the command `run` holds before its exec: its C
    /// library is not mapped yet, and is most likely the one this program maps).
    pub fn attach_path(&mut self, ebpf: &mut aya::Ebpf, path: &Path, pid: u32) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let pid = if self.any_process { 0 } else { pid };
        let (Ok(meta), Ok(bytes)) = (std::fs::metadata(path), std::fs::read(path)) else {
            return Ok(());
        };
        let identity = FileIdentity {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let offsets = allocator_offsets(&bytes);
        if offsets.is_empty() {
            return Ok(());
        }
        let probed = self.by_pid.entry(pid).or_default();
        if !probed.files.insert(identity) {
            return Ok(());
        }
        attach_file(ebpf, path, pid, &offsets, &mut probed.links)?;
        let name = path.to_string_lossy().into_owned();
        if !self.files.contains(&name) {
            self.files.push(name);
        }
        Ok(())
    }

    /// Probes the processes that appeared, or mapped another allocator, since the last call,
    /// and lets go of the probes of processes that exited. A failure is returned after the
    /// others were tried.
    pub fn update(&mut self, ebpf: &mut aya::Ebpf, procs: &Processes) -> Result<()> {
        let mut first_error = None;
        let spaces: Vec<&AddressSpace> = procs.live_spaces().map(|(_, s)| s).collect();
        for space in spaces {
            if let Err(e) = self.attach_space(ebpf, space, &procs.modules) {
                first_error.get_or_insert(e);
            }
        }
        if !self.any_process {
            let live: HashSet<u32> = procs.live_spaces().map(|(pid, _)| pid).collect();
            let gone: Vec<u32> = self
                .by_pid
                .keys()
                .copied()
                .filter(|pid| !live.contains(pid) && super::procfs::has_exited(*pid))
                .collect();
            for pid in gone {
                if let Some(p) = self.by_pid.remove(&pid) {
                    detach(ebpf, p.links);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Detaches every probe (the counters are final afterwards); returns the programs'
    /// run-time statistics.
    pub fn stop(&mut self, ebpf: &mut aya::Ebpf) -> (u64, u64) {
        for (_, p) in self.by_pid.drain() {
            detach(ebpf, p.links);
        }
        let mut runs = (0u64, 0u64);
        for name in [
            names::PROGRAM_ALLOC_ENTRY,
            names::PROGRAM_ALLOC_RETURN,
            names::PROGRAM_ALLOC_FREE,
        ] {
            if let Ok(p) = program(ebpf, name)
                && let Ok(info) = p.info()
            {
                runs.0 = runs.0.saturating_add(info.run_count());
                runs.1 = runs
                    .1
                    .saturating_add(info.run_time().as_nanos().min(u128::from(u64::MAX)) as u64);
            }
        }
        runs
    }
}

fn detach(ebpf: &mut aya::Ebpf, links: Vec<(&'static str, UProbeLinkId)>) {
    for (name, link) in links {
        if let Ok(p) = program(ebpf, name) {
            let _ = p.detach(link);
        }
    }
}

fn attach_file(
    ebpf: &mut aya::Ebpf,
    path: &Path,
    pid: u32,
    offsets: &[(u64, u64)],
    links: &mut Vec<(&'static str, UProbeLinkId)>,
) -> Result<()> {
    let scope = NonZeroU32::new(pid).map_or(UProbeScope::AllProcesses, UProbeScope::OneProcess);
    for &(offset, f) in offsets {
        let programs: &[&'static str] = if f == func::FREE {
            &[names::PROGRAM_ALLOC_FREE]
        } else {
            &[names::PROGRAM_ALLOC_ENTRY, names::PROGRAM_ALLOC_RETURN]
        };
        for &name in programs {
            let link = program(ebpf, name)?
                .attach(
                    UProbeAttachPoint {
                        location: UProbeAttachLocation::AbsoluteOffset(offset),
                        cookie: Some(f),
                    },
                    path,
                    scope,
                )
                .map_err(|e| Error::Program {
                    program: name,
                    source: Box::new(e),
                })?;
            links.push((name, link));
        }
    }
    Ok(())
}

/// The C library this program maps: under `run` the held command has not exec'd yet, and
/// the program it will run most likely maps the same one.
pub fn own_libc() -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            p.rsplit('/')
                .next()
                .is_some_and(|n| n.starts_with("libc.so") || n.starts_with("libc-"))
        })
        .map(std::path::PathBuf::from)
}

pub fn read_counters(ebpf: &aya::Ebpf) -> Result<AllocCounters> {
    let map = object_map_ref(ebpf, names::MAP_ALLOC_COUNTERS)?;
    let array: PerCpuArray<_, u64> =
        PerCpuArray::try_from(map).map_err(map_err(names::MAP_ALLOC_COUNTERS))?;
    let sum = |index: u32| -> Result<u64> {
        let values = array
            .get(&index, 0)
            .map_err(map_err(names::MAP_ALLOC_COUNTERS))?;
        Ok(values.iter().fold(0u64, |a, v| a.saturating_add(*v)))
    };
    Ok(AllocCounters {
        calls: sum(counter::CALLS)?,
        bytes: sum(counter::BYTES)?,
        frees: sum(counter::FREES)?,
        nested: sum(counter::NESTED)?,
        sampled: sum(counter::SAMPLED)?,
        emitted: sum(counter::EMITTED)?,
        lost_ringbuf: sum(counter::LOST_RINGBUF)?,
        threads_full: sum(counter::THREADS_FULL)?,
        live_full: sum(counter::LIVE_FULL)?,
        failed: sum(counter::FAILED)?,
        sampled_frees: sum(counter::SAMPLED_FREES)?,
    })
}

/// Marks the sampled allocations the kernel still holds as live (never freed while
/// recorded); returns how many live entries matched no allocation received.
pub fn mark_live(ebpf: &aya::Ebpf, allocs: &mut [RawAlloc]) -> Result<u64> {
    let map = object_map_ref(ebpf, names::MAP_ALLOC_LIVE)?;
    // Keys as bytes: `aya::Pod` stays off the shared types (no userspace dependencies).
    let live: BpfHashMap<_, [u8; size_of::<AllocKey>()], u64> =
        BpfHashMap::try_from(map).map_err(map_err(names::MAP_ALLOC_LIVE))?;
    let mut seqs = HashSet::new();
    for item in live.iter() {
        let (_, seq) = item.map_err(map_err(names::MAP_ALLOC_LIVE))?;
        seqs.insert(seq);
    }
    let mut matched = 0u64;
    for a in allocs.iter_mut() {
        a.live = a.tracked && seqs.contains(&a.seq);
        matched += u64::from(a.live);
    }
    Ok((seqs.len() as u64).saturating_sub(matched))
}

/// Puts each sampled allocation's caller back above its leaf: the frames become inline.
pub fn restore_callers(allocs: &mut [RawAlloc], stacks: &HashMap<u32, Vec<u64>>) {
    for a in allocs {
        let frames: Vec<u64> = match &a.user {
            RawStack::Id(id) => stacks.get(id).cloned().unwrap_or_default(),
            RawStack::Inline(f) => f.clone(),
            RawStack::Empty => Vec::new(),
        };
        a.user = with_caller(frames, a.caller);
    }
}

fn with_caller(mut frames: Vec<u64>, caller: u64) -> RawStack {
    if caller != 0 {
        // The walk at the allocator's first instruction starts from the caller's frame
        // pointer, whose return address is the caller's caller: the caller itself is missing
        // unless the walk found it anyway (an allocator that had set up its frame).
        if frames.get(1) != Some(&caller) {
            let at = frames.len().min(1);
            frames.insert(at, caller);
        }
    }
    if frames.is_empty() {
        RawStack::Empty
    } else {
        RawStack::Inline(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_table_has_the_mean_and_the_shape() {
        let t = exp_table(512 << 10, 4096);
        let mean = t.iter().map(|&v| v as f64).sum::<f64>() / t.len() as f64;
        assert!((mean / f64::from(512 << 10) - 1.0).abs() < 1e-4, "{mean}");
        // Exponential: the median is ln 2 of the mean, a tenth of draws below 0.105 of it.
        let mut s = t.clone();
        s.sort_unstable();
        let median = s[s.len() / 2] as f64 / f64::from(512 << 10);
        assert!((median - std::f64::consts::LN_2).abs() < 0.01, "{median}");
        let tenth = s[s.len() / 10] as f64 / f64::from(512 << 10);
        assert!((tenth - 0.105).abs() < 0.01, "{tenth}");
        assert!(exp_table(1, 16).iter().all(|&v| v >= 1));
    }

    #[test]
    fn finds_the_c_librarys_allocator() {
        let libc = own_libc().expect("this test maps a C library");
        let bytes = std::fs::read(&libc).expect("readable");
        let found = allocator_offsets(&bytes);
        let has = |f| found.iter().any(|&(_, g)| g == f);
        assert!(
            has(func::MALLOC) && has(func::FREE) && has(func::CALLOC),
            "{found:?}"
        );
        assert!(has(func::REALLOC) && has(func::POSIX_MEMALIGN), "{found:?}");
        // One probe per address, whatever the aliases.
        let mut offsets: Vec<u64> = found.iter().map(|&(o, _)| o).collect();
        offsets.dedup();
        assert_eq!(offsets.len(), found.len());
        // A file that only calls malloc is no allocator.
        let exe = std::fs::read("/proc/self/exe").expect("own exe");
        assert!(allocator_offsets(&exe).is_empty());
    }

    #[test]
    fn probes_skip_instructions_the_kernel_would_single_step() {
        let code = |b: &[u8]| {
            let mut v = vec![0xccu8; 8];
            v.extend_from_slice(b);
            v.extend_from_slice(&[0xcc; 32]);
            v
        };
        // glibc's free: test %rdi,%rdi; je rel32; push %rbp.
        let free = code(&[0x48, 0x85, 0xff, 0x0f, 0x84, 0xbf, 0, 0, 0, 0x55]);
        assert_eq!(probe_point(&free, 8, func::FREE), 8 + 9);
        // The same bytes in malloc would skip its NULL case: not moved.
        assert_eq!(probe_point(&free, 8, func::MALLOC), 8);
        // A short je.
        let free = code(&[0x48, 0x85, 0xff, 0x74, 0x10, 0x41, 0x54]);
        assert_eq!(probe_point(&free, 8, func::FREE), 8 + 5);
        // posix_memalign: cmpb $0, disp(%rip); push %r12.
        let pm = code(&[0x80, 0x3d, 1, 2, 3, 4, 0, 0x41, 0x54]);
        assert_eq!(probe_point(&pm, 8, func::POSIX_MEMALIGN), 8 + 7);
        // Already emulated at the symbol, or something unknown after the skip: the symbol.
        let malloc = code(&[0x41, 0x54, 0x55]);
        assert_eq!(probe_point(&malloc, 8, func::MALLOC), 8);
        let other = code(&[0x48, 0x85, 0xff, 0x74, 0x10, 0x48, 0x89, 0xfb]);
        assert_eq!(probe_point(&other, 8, func::FREE), 8);
        // endbr64 then push.
        let cet = code(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55]);
        assert_eq!(probe_point(&cet, 8, func::CALLOC), 8 + 4);
        // Out of the file.
        assert_eq!(probe_point(&cet, 10_000, func::FREE), 10_000);
    }

    #[test]
    fn the_caller_goes_back_above_the_leaf() {
        assert_eq!(
            with_caller(vec![0x10, 0x30], 0x20),
            RawStack::Inline(vec![0x10, 0x20, 0x30])
        );
        // Already there: not twice.
        assert_eq!(
            with_caller(vec![0x10, 0x20, 0x30], 0x20),
            RawStack::Inline(vec![0x10, 0x20, 0x30])
        );
        assert_eq!(with_caller(vec![], 0x20), RawStack::Inline(vec![0x20]));
        assert_eq!(with_caller(vec![], 0), RawStack::Empty);
    }
}
