//! A recording session in the kernel: the eBPF object loaded and configured for one
//! recording, its programs attached, and detached again when the session stops or is dropped
//! (an error or a panic between attach and stop leaves no probe behind).
use std::{collections::HashMap, time::Duration};

use aya::{
    EbpfLoader,
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{
        PerfEvent, ProgramInfo, RawTracePoint,
        perf_event::{
            PerfEventConfig, PerfEventLinkId, PerfEventScope, SamplePolicy, SoftwareEvent,
        },
        raw_trace_point::RawTracePointLinkId,
    },
};
use profiler_common::{
    SAMPLE_DWARF_HEADER, WAIT_STACK_BIT, alloc, counter, defaults, names, target,
};

use super::{
    CallGraph, RawStack, RecordOptions,
    btf::Btf,
    scope::Scope,
    spans,
    targets::{self, Primary, Targets},
    unwind,
};
use crate::{
    error::{Error, Result},
    model::Counters,
};

/// The eBPF object built by build.rs, embedded so the binary needs no files at run time.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler-ebpf"));

pub(crate) fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
    move |e| Error::Map {
        map,
        source: Box::new(e),
    }
}

/// Map `name` of the loaded object. Its absence is a defect of the build, not of the run.
pub(crate) fn object_map_ref<'a>(
    ebpf: &'a aya::Ebpf,
    name: &'static str,
) -> Result<&'a aya::maps::Map> {
    ebpf.map(name).ok_or_else(|| missing_map(name))
}

pub(crate) fn object_map<'a>(
    ebpf: &'a mut aya::Ebpf,
    name: &'static str,
) -> Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name).ok_or_else(|| missing_map(name))
}

fn missing_map(name: &'static str) -> Error {
    Error::Internal(format!("eBPF object lacks the {name} map"))
}

fn prog_err(e: aya::programs::ProgramError) -> Error {
    Error::Program {
        program: names::PROGRAM_CPU_SAMPLE,
        source: Box::new(e),
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; newer ones charge the cgroup, and
/// raising the limit may be refused without CAP_SYS_RESOURCE, so failure is harmless.
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to a rlimit.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// What the kernel programs report at the end: run-time statistics of the sampler and of the
/// off-CPU program, (runs, ns).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunStats {
    pub sampler: (u64, u64),
    pub off_cpu: (u64, u64),
}

pub struct Session {
    pub ebpf: aya::Ebpf,
    sample_links: Vec<PerfEventLinkId>,
    off_cpu_link: Option<RawTracePointLinkId>,
    renames_link: Option<RawTracePointLinkId>,
    /// Run-time statistics stay on while this descriptor lives.
    stats_fd: Option<std::os::fd::OwnedFd>,
    pub cpus: Vec<u32>,
    pub dwarf: bool,
    /// The kernel copies user stacks to unwind here, sized per thread: some process of the
    /// run may take DWARF call graphs (`auto` may choose them later), or `--locks` copies
    /// each futex wait's.
    pub copies_stacks: bool,
    pub off_cpu_min_ns: u64,
    pub off_cpu_interval_min_ns: u64,
    /// The process whose flags live in PRIMARY_FLAGS (0: none).
    primary_pid: u32,
}

impl Session {
    /// Loads the object configured for `opts`; `initial` are its first targets (pid, DWARF
    /// call graph), and the scope of `opts` adds the processes the kernel finds in it, with
    /// the call graph `dwarf` says.
    pub fn load(
        opts: &RecordOptions,
        initial: &[(u32, bool)],
        primary: Primary,
        dwarf: bool,
    ) -> Result<Self> {
        let mut loader = take_loader();
        let kernel = KernelOffsets::take_prefetched()?;
        super::phases::mark("kernel BTF offsets read");
        raise_memlock();
        let wakeup_bytes = opts
            .wakeup_bytes
            .unwrap_or(u64::from(opts.ring_buffer_bytes / 4));
        let (pidns_dev, pidns_ino) = own_pid_namespace()?;
        let nanos = |d: Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
        let (off_cpu_min, off_cpu_interval_min) = opts
            .off_cpu
            .map_or((0, u64::MAX), |o| (nanos(o.min), nanos(o.interval_min)));
        let stack_bytes = u64::from(opts.stack_bytes);
        // A few stack copies must fit in the ring buffer, or every DWARF sample (or lock wait)
        // would be "lost".
        let dwarf_record = (SAMPLE_DWARF_HEADER as u64 + stack_bytes) * 4;
        if (dwarf || opts.locks) && u64::from(opts.ring_buffer_bytes) < dwarf_record {
            return Err(Error::InvalidArgument {
                what: "--ring-buffer-size",
                reason: format!(
                    "{} bytes holds fewer than 4 stack copies of --stack-size {}: use at least {} (a power of two)",
                    opts.ring_buffer_bytes,
                    opts.stack_bytes,
                    dwarf_record.next_power_of_two()
                ),
            });
        }
        // One DWARF scratch record per possible CPU, indexed by CPU number, when DWARF can be
        // used at all (`auto` may switch a child to it later), and one lock scratch record
        // with `--locks`. Maps a run does not use get one entry: each record holds the largest
        // copy (~256 KiB), so a 4,096-CPU machine would pin 1 GiB per map for nothing.
        let may_dwarf = dwarf
            || initial.iter().any(|&(_, d)| d)
            || (opts.call_graph == CallGraph::Auto && opts.follows());
        let copies_stacks = may_dwarf || opts.locks;
        // Without copies the sampler's DWARF path is dropped by the verifier (0 bytes to copy).
        let dwarf_stack_bytes = if copies_stacks { stack_bytes } else { 0 };
        let cpu_entries = highest_possible_cpu().map_or(1, |c| c + 1);
        let unused = |used: bool, entries: u32| if used { entries } else { 1 };
        let (scope_all, cgroup_id, cgroup_level) = match &opts.scope {
            Scope::All => (1u32, 0u64, 0u32),
            Scope::Cgroup(c) => (0, c.id, c.level),
            Scope::Pids(_) | Scope::Comm(_) => (0, 0, 0),
        };
        let exec_events: u32 = matches!(opts.scope, Scope::Comm(_)).into();
        // One pid, not followed: its probes are placed for it alone (see `attach_spans`).
        let spans_any_process: u32 =
            (opts.follows() || !matches!(&opts.scope, Scope::Pids(p) if p.len() == 1)).into();
        let follows: u32 = opts.follows().into();
        let off_cpu_sample: u32 = opts.off_cpu.map_or(1, |o| o.sample_every.max(1));
        let scope_flags: u32 = if dwarf { target::DWARF } else { 0 };
        let off_cpu = opts.off_cpu.is_some();
        let alloc_on = opts.alloc.is_some();
        let alloc_sample = opts.alloc.map_or(0, |a| a.sample_bytes);
        // Under `--all` every process is a target: the allocator probes go on each file for
        // every process and the programs check membership; otherwise they are per process.
        let alloc_any: u32 = matches!(opts.scope, Scope::All).into();
        let mut ebpf = loader
            .override_global(alloc::names::GLOBAL_ALLOC_SAMPLE_BYTES, &alloc_sample, true)
            .override_global(alloc::names::GLOBAL_ALLOC_ANY_PROCESS, &alloc_any, true)
            .map_max_entries(
                alloc::names::MAP_ALLOC_THREADS,
                unused(alloc_on, alloc::defaults::THREADS),
            )
            .map_max_entries(
                profiler_common::locks::names::MAP_LOCK_WAITS,
                unused(opts.locks, profiler_common::locks::defaults::WAITS),
            )
            .map_max_entries(
                profiler_common::locks::names::MAP_KLOCK_WAITS,
                unused(opts.locks, profiler_common::locks::defaults::KERNEL_WAITS),
            )
            .map_max_entries(
                alloc::names::MAP_ALLOC_LIVE,
                unused(alloc_on, alloc::defaults::LIVE_ENTRIES),
            )
            .override_global(names::GLOBAL_DWARF_STACK_BYTES, &dwarf_stack_bytes, true)
            .map_max_entries(names::MAP_DWARF_SCRATCH, unused(may_dwarf, cpu_entries))
            .map_max_entries(
                profiler_common::locks::names::MAP_LOCK_SCRATCH,
                unused(opts.locks, cpu_entries),
            )
            .map_max_entries(
                names::MAP_DWARF_COPY,
                unused(copies_stacks, defaults::DWARF_COPY_THREADS),
            )
            .map_max_entries(
                names::MAP_WAIT_STACKS,
                unused(
                    off_cpu || opts.locks || alloc_on,
                    defaults::WAIT_STACK_ENTRIES,
                ),
            )
            .override_global(names::GLOBAL_TASK_PID_OFFSET, &kernel.task_pid, true)
            .override_global(names::GLOBAL_TASK_TGID_OFFSET, &kernel.task_tgid, true)
            .override_global(names::GLOBAL_TASK_SIGNAL_OFFSET, &kernel.task_signal, true)
            .override_global(names::GLOBAL_SIGNAL_LIVE_OFFSET, &kernel.signal_live, true)
            .override_global(
                names::GLOBAL_TASK_SUM_EXEC_OFFSET,
                &kernel.task_sum_exec,
                true,
            )
            .override_global(
                names::GLOBAL_TASK_PREV_SUM_EXEC_OFFSET,
                &kernel.task_prev_sum_exec,
                true,
            )
            .override_global(names::GLOBAL_OFF_CPU_MIN_NS, &off_cpu_min, true)
            .override_global(
                names::GLOBAL_OFF_CPU_INTERVAL_MIN_NS,
                &off_cpu_interval_min,
                true,
            )
            .override_global(names::GLOBAL_PIDNS_DEV, &pidns_dev, true)
            .override_global(names::GLOBAL_PIDNS_INO, &pidns_ino, true)
            .override_global(names::GLOBAL_WAKEUP_BYTES, &wakeup_bytes, true)
            .map_max_entries(
                names::MAP_OFF_CPU_START,
                unused(off_cpu, defaults::OFF_CPU_THREADS),
            )
            .map_max_entries(names::MAP_OFF_CPU_OPEN, unused(off_cpu, thread_id_limit()))
            .map_max_entries(
                names::MAP_OFF_CPU_TOTALS,
                unused(off_cpu, defaults::OFF_CPU_TOTALS),
            )
            .map_max_entries(
                names::MAP_TARGETS,
                if matches!(opts.scope, Scope::Pids(_)) {
                    defaults::MAX_TARGETS
                } else {
                    // A whole machine's processes, each a target while it lives.
                    defaults::MAX_TARGETS * 8
                },
            )
            .map_max_entries(
                names::MAP_PENDING_CHILDREN,
                unused(opts.follows(), defaults::MAX_TARGETS),
            )
            .map_max_entries(
                names::MAP_THREAD_SPANS,
                unused(
                    opts.spans != spans::SpansMode::Off || !opts.span_fns.is_empty(),
                    defaults::MAX_SPAN_THREADS,
                ),
            )
            .override_global(names::GLOBAL_SCOPE_ALL, &scope_all, true)
            .override_global(names::GLOBAL_SCOPE_CGROUP_ID, &cgroup_id, true)
            .override_global(names::GLOBAL_SCOPE_CGROUP_LEVEL, &cgroup_level, true)
            .override_global(names::GLOBAL_SCOPE_FLAGS, &scope_flags, true)
            .override_global(names::GLOBAL_SCOPE_EXEC_EVENTS, &exec_events, true)
            .override_global(names::GLOBAL_SPANS_ANY_PROCESS, &spans_any_process, true)
            .override_global(names::GLOBAL_FOLLOWS, &follows, true)
            .override_global(names::GLOBAL_PRIMARY_PID, &primary.pid, true)
            .override_global(names::GLOBAL_PRIMARY_ONLY, &u32::from(primary.only), true)
            .override_global(names::GLOBAL_OFF_CPU_SAMPLE, &off_cpu_sample, true)
            .map_max_entries(names::MAP_EVENTS, opts.ring_buffer_bytes)
            .map_max_entries(names::MAP_STACKS, opts.stack_map_entries)
            .load(EBPF_OBJECT)?;
        super::phases::mark("aya: object parsed, maps created");
        {
            let mut targets = targets_map(&mut ebpf)?;
            let follow = if opts.follows() { target::FOLLOW } else { 0 };
            // Userspace has read these processes' maps already: their first samples need not
            // wake it at once (each forced wakeup is a self-IPI, a VM exit here, inside the
            // sampler's run time). An exec moves the count to the next period
            // (`target::ANNOUNCE_PERIOD`), and the new image announces.
            let announced = target::ANNOUNCE_SAMPLES << target::ANNOUNCED_SHIFT;
            let flags = |dwarf| follow | announced | if dwarf { target::DWARF } else { 0 };
            for &(pid, dwarf) in initial.iter().filter(|(pid, _)| *pid != primary.pid) {
                targets
                    .insert(pid, flags(dwarf), 0)
                    .map_err(map_err(names::MAP_TARGETS))?;
            }
            if let Some(&(_, dwarf)) = initial.iter().find(|(pid, _)| *pid == primary.pid) {
                let map = object_map(&mut ebpf, names::MAP_PRIMARY_FLAGS)?;
                let mut map = Array::try_from(map).map_err(map_err(names::MAP_PRIMARY_FLAGS))?;
                targets::set_primary(&mut map, flags(dwarf))?;
            }
        }
        if let Some(a) = &opts.alloc {
            super::alloc::configure(&mut ebpf, a)?;
        }
        if opts.follows() {
            attach_process_tracepoints(&mut ebpf, true)?;
        }
        super::phases::mark("targets, allocator config, process tracepoints");
        let cpus = aya::util::online_cpus()
            .map_err(|(what, e)| Error::io(format!("reading {what}"), e))?;
        let session = Self {
            ebpf,
            sample_links: Vec::new(),
            off_cpu_link: None,
            renames_link: None,
            stats_fd: aya::sys::enable_stats(aya::sys::Stats::RunTime).ok(),
            cpus,
            dwarf,
            copies_stacks,
            off_cpu_min_ns: off_cpu_min,
            off_cpu_interval_min_ns: off_cpu_interval_min,
            primary_pid: primary.pid,
        };
        Ok(session)
    }

    /// The targets, taken out of the object for the drain loop (`auto` and `--comm`
    /// change them).
    pub fn take_targets(&mut self) -> Result<Targets> {
        let hashed = self.take_map(names::MAP_TARGETS)?;
        let primary = self.take_map(names::MAP_PRIMARY_FLAGS)?;
        let spans_started = self.take_map(names::MAP_SPANS_STARTED)?;
        Targets::new(hashed, primary, self.primary_pid, spans_started)
    }

    /// The per-thread DWARF copy sizes, which the drain loop sets from the unwinds.
    pub fn take_copy_sizes(&mut self) -> Result<BpfHashMap<MapData, u32, u64>> {
        BpfHashMap::try_from(self.take_map(names::MAP_DWARF_COPY)?)
            .map_err(map_err(names::MAP_DWARF_COPY))
    }

    pub fn take_ring(&mut self) -> Result<RingBuf<MapData>> {
        RingBuf::try_from(self.take_map(names::MAP_EVENTS)?).map_err(map_err(names::MAP_EVENTS))
    }

    /// Map `name`, out of the object for the drain loop to own.
    fn take_map(&mut self, name: &'static str) -> Result<aya::maps::Map> {
        self.ebpf.take_map(name).ok_or_else(|| missing_map(name))
    }

    /// Span probes live as long as the object; without followed children the exit tracepoint
    /// still clears the spans of threads that die inside them.
    pub fn attach_spans(
        &mut self,
        modules: &[spans::ProbeModule],
        pid: u32,
        exe: &str,
        opts: &RecordOptions,
    ) -> Result<spans::Attached> {
        // Followed children run the same files (fork without exec): probed for every
        // process, the kernel keeps the targets' hits.
        let scope = if opts.follows() { 0 } else { pid };
        let attached = spans::attach(
            &mut self.ebpf,
            modules,
            scope,
            exe,
            opts.spans,
            &opts.span_fns,
        )?;
        let live = !attached.abi_modules.is_empty() || !attached.span_fns.is_empty();
        if live && !opts.follows() {
            attach_process_tracepoints(&mut self.ebpf, false)?;
        }
        Ok(attached)
    }

    /// Without followed processes the exit tracepoint is not there yet: it clears the span
    /// state of threads that die inside spans.
    pub fn clear_spans_at_exit(&mut self, opts: &RecordOptions) -> Result<()> {
        if opts.follows() {
            return Ok(());
        }
        attach_process_tracepoints(&mut self.ebpf, false)
    }

    fn sampler(&mut self) -> Result<&mut PerfEvent> {
        self.ebpf
            .program_mut(names::PROGRAM_CPU_SAMPLE)
            .ok_or_else(|| Error::Internal("eBPF object lacks the sampling program".into()))?
            .try_into()
            .map_err(prog_err)
    }

    /// The sampling program, to be loaded (verified) while other start-up work goes on.
    pub fn sampler_to_load(&mut self) -> Result<&mut PerfEvent> {
        self.sampler()
    }

    /// How much the verifier did for the sampler, for the start-up times.
    pub fn sampler_verified_instructions(&mut self) -> String {
        let count = self
            .sampler()
            .ok()
            .and_then(|p| p.info().ok())
            .and_then(|i| i.verified_instruction_count());
        match count {
            Some(n) => format!("sampler: {n} instructions verified"),
            None => "sampler: verified instruction count unknown".into(),
        }
    }

    /// Loads (verifies) the sampling program, unless it is already.
    pub fn load_sampler(&mut self) -> Result<()> {
        let sampler = self.sampler()?;
        if sampler.fd().is_ok() {
            return Ok(());
        }
        sampler.load().map_err(prog_err)
    }

    /// The sampler on the software CPU clock of every CPU, then (so that off-CPU time is
    /// counted over the same window as the samples) the sched_switch program.
    pub fn attach(&mut self, frequency_hz: u64, off_cpu: bool) -> Result<()> {
        // Before the sampler: a sample sends its thread's name only when its CPU has not
        // sent it since the last rename, and this program is what reports renames.
        if self.renames_link.is_none() {
            self.renames_link = Some(attach_sched(
                &mut self.ebpf,
                names::PROGRAM_THREAD_RENAMED,
                "task_rename",
            )?);
        }
        let cpus = self.cpus.clone();
        for cpu in cpus {
            let link = self
                .sampler()?
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency_hz),
                    false,
                )
                .map_err(prog_err)?;
            self.sample_links.push(link);
        }
        if off_cpu {
            self.off_cpu_link = Some(attach_sched(
                &mut self.ebpf,
                names::PROGRAM_OFF_CPU,
                "sched_switch",
            )?);
        }
        Ok(())
    }

    /// Detaches, off-CPU first (its window must not outlast the samples'), so that the
    /// counters are final; returns the programs' run-time statistics.
    pub fn stop(&mut self) -> Result<RunStats> {
        let mut stats = RunStats::default();
        // Span probes stay attached until the session drops (kallsyms then still names their
        // code), but record nothing from here on. A failure here must not keep the rest
        // attached: it is returned last.
        let spans = self.stop_spans();
        if let Some(link) = self.off_cpu_link.take() {
            let p = sched_program(&mut self.ebpf, names::PROGRAM_OFF_CPU)?;
            p.detach(link)
                .map_err(tracepoint_err(names::PROGRAM_OFF_CPU))?;
            stats.off_cpu = run_stats(p.info());
        }
        let links = std::mem::take(&mut self.sample_links);
        let program = self.sampler()?;
        for link in links {
            program.detach(link).map_err(prog_err)?;
        }
        stats.sampler = run_stats(program.info());
        if let Some(link) = self.renames_link.take() {
            sched_program(&mut self.ebpf, names::PROGRAM_THREAD_RENAMED)?
                .detach(link)
                .map_err(tracepoint_err(names::PROGRAM_THREAD_RENAMED))?;
        }
        self.stats_fd = None;
        spans?;
        Ok(stats)
    }

    fn stop_spans(&mut self) -> Result<()> {
        let mut stopped: Array<&mut MapData, u32> =
            Array::try_from(object_map(&mut self.ebpf, names::MAP_SPANS_STOPPED)?)
                .map_err(map_err(names::MAP_SPANS_STOPPED))?;
        stopped
            .set(0, 1, 0)
            .map_err(map_err(names::MAP_SPANS_STOPPED))
    }

    pub fn counters(&self) -> Result<Counters> {
        read_counters(&self.ebpf)
    }

    pub fn stacks<'a>(
        &self,
        stacks: impl Iterator<Item = &'a RawStack>,
    ) -> Result<HashMap<u32, Vec<u64>>> {
        read_stacks(&self.ebpf, stacks)
    }
}

impl Drop for Session {
    /// Every exit path detaches: an early return or a panic between attach and stop.
    fn drop(&mut self) {
        if self.off_cpu_link.is_some()
            || self.renames_link.is_some()
            || !self.sample_links.is_empty()
        {
            let _ = self.stop();
        }
    }
}

/// One more than the largest thread id the kernel gives now (`kernel.pid_max`, at most 2^22
/// on 64-bit kernels): OFF_CPU_OPEN has one byte per thread id. Ids beyond it (pid_max raised
/// during the recording) take the slower look-up.
fn thread_id_limit() -> u32 {
    const PID_MAX_LIMIT: u32 = 1 << 22;
    std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .map_or(PID_MAX_LIMIT, |n| n.clamp(1, PID_MAX_LIMIT))
}

fn targets_map(ebpf: &mut aya::Ebpf) -> Result<BpfHashMap<&mut MapData, u32, u32>> {
    BpfHashMap::try_from(object_map(ebpf, names::MAP_TARGETS)?).map_err(map_err(names::MAP_TARGETS))
}

/// Map `name` of the object, left in it.
/// The call graph `pid`'s program gets: `auto` asks its executable.
pub fn wants_dwarf(call_graph: CallGraph, exe_frame_pointers: Option<bool>) -> bool {
    match call_graph {
        CallGraph::Fp => false,
        CallGraph::Dwarf => true,
        CallGraph::Auto => !exe_frame_pointers.unwrap_or(false),
    }
}

/// The highest CPU number that can ever be online (`/sys/devices/system/cpu/possible`, e.g.
/// `0-3,8-11`): per-CPU records are indexed by CPU number, which can exceed the CPU count.
fn highest_possible_cpu() -> Option<u32> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").ok()?;
    text.trim()
        .split(',')
        .filter_map(|r| r.rsplit('-').next()?.parse::<u32>().ok())
        .max()
}

/// Inode of the initial PID namespace (PROC_PID_INIT_INO), the same on every kernel.
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// The device and inode of our PID namespace when it is not the initial one (a sidecar):
/// the BPF programs then report pids as seen from it, which is what /proc and --pid mean
/// there. The kernel helper for that only answers for tasks of exactly that namespace, so on
/// the host (0, 0) selects the global ids, which host /proc also shows for processes in
/// containers.
fn own_pid_namespace() -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self/ns/pid")
        .map_err(|e| Error::io("reading /proc/self/ns/pid", e))?;
    Ok(if m.ino() == INIT_PID_NS_INO {
        (0, 0)
    } else {
        (m.dev(), m.ino())
    })
}

/// Where the raw tracepoint programs find the fields they read in kernel structures.
#[derive(Clone, Copy)]
struct KernelOffsets {
    task_pid: u32,
    task_tgid: u32,
    task_signal: u32,
    signal_live: u32,
    task_sum_exec: u32,
    task_prev_sum_exec: u32,
}

type Pending<T> = std::sync::Mutex<Option<std::thread::JoinHandle<T>>>;

/// Kernel offsets being read ahead by [`prefetch_kernel_btf`].
static PREFETCH: Pending<Result<KernelOffsets>> = std::sync::Mutex::new(None);
/// aya's loader being made ahead by [`prefetch_kernel_btf`].
static LOADER: Pending<EbpfLoader<'static>> = std::sync::Mutex::new(None);
/// The offsets once read: they hold until the kernel reboots, and a server records many times.
static OFFSETS: std::sync::OnceLock<KernelOffsets> = std::sync::OnceLock::new();
/// Set by [`keep_a_loader_ready`].
static KEEP_READY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Starts reading the kernel's BTF (ours: the few offsets the programs take) and making
/// aya's loader on other threads, so that both overlap the checks of the target before
/// [`Session::load`] needs them (issue 17: start-up time).
pub fn prefetch_kernel_btf() {
    let spawn = |name: &str| std::thread::Builder::new().name(name.into());
    let mut slot = PREFETCH.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() && OFFSETS.get().is_none() {
        *slot = spawn("kernel-btf").spawn(KernelOffsets::read).ok();
    }
    let mut slot = LOADER.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = spawn_loader();
    }
}

/// Makes aya's loader on a thread of its own, never the caller's: that thread's root
/// changes ([`loader_without_kernel_btf`]).
fn spawn_loader() -> Option<std::thread::JoinHandle<EbpfLoader<'static>>> {
    std::thread::Builder::new()
        .name("aya-loader".into())
        .spawn(loader_without_kernel_btf)
        .ok()
}

/// For a process that records many times (`serve`): a loader is made ahead now, and again
/// each time a recording has attached ([`ready_the_next`]), so no recording waits for aya's
/// parse of the kernel's BTF. A loader cannot be reused: it keeps the previous recording's
/// settings, borrowed from it. Costs one parsed BTF held while idle.
pub fn keep_a_loader_ready() {
    KEEP_READY.store(true, std::sync::atomic::Ordering::Relaxed);
    prefetch_kernel_btf();
}

/// Called once a recording is attached, so the next one's loader is made while this one
/// records rather than competing with its start.
pub fn ready_the_next() {
    if KEEP_READY.load(std::sync::atomic::Ordering::Relaxed) {
        prefetch_kernel_btf();
    }
}

/// The loader made ahead, else a new one.
fn take_loader() -> EbpfLoader<'static> {
    let handle = LOADER.lock().unwrap_or_else(|p| p.into_inner()).take();
    handle
        .or_else(spawn_loader)
        .and_then(|h| h.join().ok())
        .unwrap_or_default()
}

/// aya's loader, without its parse of the kernel's BTF where this thread can avoid it.
///
/// `EbpfLoader::new()` parses all of `/sys/kernel/btf/vmlinux` (20-35 ms here, the longest
/// step between the command's start and "recording") and offers no way not to
/// (aya-rs/aya#1172); aya uses it only for CO-RE relocations, which our object has none of
/// (test `the_ebpf_object_needs_no_core_relocations`: `collect::btf` reads the few offsets
/// it needs). Called on a thread of its own: `unshare(CLONE_FS)` gives that thread alone
/// its own root, and rooted at `/proc` the loader finds no `/sys/kernel/btf/vmlinux`. The
/// thread opens nothing else and writes nothing. Without the privilege to change its root
/// the loader parses as usual. Never to be called on a thread that goes on to other work.
fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    // SAFETY: plain system calls; the new root affects this thread only, and only after
    // unshare has given it a filesystem context of its own.
    let hidden =
        unsafe { libc::unshare(libc::CLONE_FS) == 0 && libc::chroot(c"/proc".as_ptr()) == 0 };
    let mut loader = EbpfLoader::new();
    if hidden {
        loader.btf(None);
    }
    loader
}

impl KernelOffsets {
    /// The prefetched offsets when a prefetch was started, else read now.
    fn take_prefetched() -> Result<Self> {
        if let Some(&known) = OFFSETS.get() {
            return Ok(known);
        }
        let handle = PREFETCH.lock().unwrap_or_else(|p| p.into_inner()).take();
        let read = match handle {
            Some(h) => h
                .join()
                .map_err(|_| Error::Internal("reading the kernel's BTF panicked".into()))?,
            None => Self::read(),
        }?;
        Ok(*OFFSETS.get_or_init(|| read))
    }

    fn read() -> Result<Self> {
        let btf = Btf::vmlinux()?;
        let se = btf.member_offset("task_struct", "se")?;
        let in_se = |member| -> Result<u32> {
            let at = btf.member_offset("sched_entity", member)?;
            se.checked_add(at)
                .ok_or_else(|| Error::Internal(format!("task_struct.se.{member} offset overflows")))
        };
        Ok(Self {
            task_sum_exec: in_se("sum_exec_runtime")?,
            task_prev_sum_exec: in_se("prev_sum_exec_runtime")?,
            task_pid: btf.member_offset("task_struct", "pid")?,
            task_tgid: btf.member_offset("task_struct", "tgid")?,
            task_signal: btf.member_offset("task_struct", "signal")?,
            signal_live: btf.member_offset("signal_struct", "live")?,
        })
    }
}

/// Follows fork/exec/exit of the targets in the kernel (sched tracepoints); without
/// `follow`, only exits (which also clear the span state of dying threads).
fn attach_process_tracepoints(ebpf: &mut aya::Ebpf, follow: bool) -> Result<()> {
    let all = [
        (names::PROGRAM_PROCESS_EXIT, "sched_process_exit"),
        (names::PROGRAM_PROCESS_FORK, "sched_process_fork"),
        (names::PROGRAM_PROCESS_EXEC, "sched_process_exec"),
    ];
    for &(name, event) in &all[..if follow { 3 } else { 1 }] {
        attach_sched(ebpf, name, event)?;
    }
    Ok(())
}

fn tracepoint_err(program: &'static str) -> impl Fn(aya::programs::ProgramError) -> Error {
    move |e| Error::Program {
        program,
        source: Box::new(e),
    }
}

/// The raw tracepoint program `name` of the eBPF object.
fn sched_program<'a>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut RawTracePoint> {
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Internal(format!("eBPF object lacks {name}")))?
        .try_into()
        .map_err(tracepoint_err(name))
}

/// Loads program `name` and attaches it to the raw sched tracepoint `event`.
fn attach_sched(
    ebpf: &mut aya::Ebpf,
    name: &'static str,
    event: &str,
) -> Result<RawTracePointLinkId> {
    let p = sched_program(ebpf, name)?;
    p.load().map_err(tracepoint_err(name))?;
    p.attach(event).map_err(tracepoint_err(name))
}

/// A program's kernel run-time statistics: (runs, total ns), zeros where unavailable.
fn run_stats(info: std::result::Result<ProgramInfo, aya::programs::ProgramError>) -> (u64, u64) {
    info.map(|i| (i.run_count(), i.run_time().as_nanos() as u64))
        .unwrap_or((0, 0))
}

fn read_counters(ebpf: &aya::Ebpf) -> Result<Counters> {
    let map = object_map_ref(ebpf, names::MAP_COUNTERS)?;
    let array: PerCpuArray<_, u64> =
        PerCpuArray::try_from(map).map_err(map_err(names::MAP_COUNTERS))?;
    let sum = |index: u32| -> Result<u64> {
        let values = array.get(&index, 0).map_err(map_err(names::MAP_COUNTERS))?;
        Ok(values.iter().sum())
    };
    Ok(Counters {
        seen: sum(counter::SEEN)?,
        emitted: sum(counter::EMITTED)?,
        received: 0,
        lost_ringbuf_full: sum(counter::LOST_RINGBUF_FULL)?,
        user_stack_errors: sum(counter::USER_STACK_ERROR)?,
        kernel_stack_errors: sum(counter::KERNEL_STACK_ERROR)?,
        stack_map_full: sum(counter::STACK_MAP_FULL)?,
        stack_map_collisions: sum(counter::STACK_MAP_COLLISION)?,
        malformed_events: 0,
        span_events: sum(counter::SPAN_EVENTS)?,
        span_events_lost: sum(counter::SPAN_EVENTS_LOST)?,
        span_events_received: 0,
        span_depth_overflow: sum(counter::SPAN_DEPTH_OVERFLOW)?,
        process_events_lost: sum(counter::PROCESS_EVENTS_LOST)?,
        dwarf_stack_errors: sum(counter::DWARF_STACK_ERROR)?,
        dwarf_no_user_regs: sum(counter::DWARF_NO_USER_REGS)?,
        off_cpu_switches: sum(counter::OFF_CPU_SWITCHES)?,
        off_cpu_totals_full: sum(counter::OFF_CPU_TOTALS_FULL)?,
        off_cpu_events_lost: sum(counter::OFF_CPU_EVENTS_LOST)?,
        off_cpu_lost_ns: sum(counter::OFF_CPU_LOST_NS)?,
        off_cpu_start_full: sum(counter::OFF_CPU_START_FULL)?,
        off_cpu_unmatched: sum(counter::OFF_CPU_UNMATCHED)?,
        kernel_read_failed: sum(counter::KERNEL_READ_FAILED)?,
        pending_children_full: sum(counter::PENDING_CHILDREN_FULL)?,
        targets_full: sum(counter::TARGETS_FULL)?,
        span_threads_full: sum(counter::SPAN_THREADS_FULL)?,
        off_cpu_stacks_lost: sum(counter::OFF_CPU_STACKS_LOST)?,
        off_cpu_stack_errors: sum(counter::OFF_CPU_STACK_ERROR)?,
        wait_stacks_refused: sum(counter::WAIT_STACKS_REFUSED)?,
        off_cpu_stacks_unmatched: 0,
        sideband_lost: 0,
        modules_missed: 0,
        bpf_recursion_misses: recursion_misses(ebpf),
        off_cpu_events_received: 0,
    })
}

/// Runs the kernel skipped for recursion, summed over the loaded programs: a loss no map
/// counter can see, reported by the kernel in each program's fdinfo (since 5.12).
fn recursion_misses(ebpf: &aya::Ebpf) -> u64 {
    use std::os::fd::{AsFd, AsRawFd};
    ebpf.programs()
        .filter_map(|(_, p)| p.fd().ok())
        .filter_map(|fd| {
            let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
            let text = std::fs::read_to_string(path).ok()?;
            text.lines()
                .find_map(|l| l.strip_prefix("recursion_misses:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .fold(0, u64::saturating_add)
}

fn read_stacks<'a>(
    ebpf: &aya::Ebpf,
    stacks: impl Iterator<Item = &'a RawStack>,
) -> Result<HashMap<u32, Vec<u64>>> {
    let map = object_map_ref(ebpf, names::MAP_STACKS)?;
    let traces = StackTraceMap::try_from(map).map_err(map_err(names::MAP_STACKS))?;
    let waits = object_map_ref(ebpf, names::MAP_WAIT_STACKS)?;
    let waits = StackTraceMap::try_from(waits).map_err(map_err(names::MAP_WAIT_STACKS))?;
    let mut out = HashMap::new();
    for stack in stacks {
        if let RawStack::Id(id) = stack {
            // Unwound in userspace: not in the kernel's map.
            if out.contains_key(id) || id & unwind::UNWOUND_ID_BIT != 0 {
                continue;
            }
            // An id the map no longer holds yields an empty stack, shown as such.
            let trace = if id & WAIT_STACK_BIT != 0 {
                waits.get(&(id & !WAIT_STACK_BIT), 0)
            } else {
                traces.get(id, 0)
            };
            let frames = trace
                .ok()
                .map(|t| t.frames().iter().map(|f| f.ip).collect())
                .unwrap_or_default();
            out.insert(*id, frames);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection};

    /// The loader is made without the kernel's BTF ([`super::loader_without_kernel_btf`]),
    /// which aya needs only to apply CO-RE relocations: the object must have none, or its
    /// programs would load with offsets left unrelocated. `.BTF.ext` holds them (after its
    /// function and line info: offset and length at bytes 24 and 28 of its header).
    #[test]
    fn the_ebpf_object_needs_no_core_relocations() {
        let file = object::File::parse(super::EBPF_OBJECT).expect("the eBPF object parses");
        let Some(ext) = file.section_by_name(".BTF.ext") else {
            return;
        };
        let data = ext.data().expect(".BTF.ext readable");
        let u32_at = |at: usize| {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        assert_eq!(data.get(..2), Some(&[0x9f, 0xeb][..]), "BTF.ext magic");
        let header_len = u32_at(4).expect("header length");
        assert!(header_len >= 24, "header of {header_len} bytes");
        assert!(
            u32_at(12).expect("func info length") > 0,
            "func info present"
        );
        let core_relocations = if header_len >= 32 {
            u32_at(28).expect("CO-RE relocations length")
        } else {
            0
        };
        assert_eq!(core_relocations, 0, "CO-RE relocations in the eBPF object");
    }
}
