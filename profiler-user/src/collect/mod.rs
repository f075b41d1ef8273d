//! Kernel → events: loads the eBPF programs, attaches them to the software CPU clock of every
//! CPU, and turns ring buffer records into [`RawSample`]s until the recording stops.
pub mod offcpu;
pub mod privileges;
pub mod processes;
pub mod procfs;
pub mod ps;
pub mod run;
pub mod spans;
pub mod unwind;

use std::{
    collections::HashMap,
    os::fd::{FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use aya::{
    EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf, StackTraceMap},
    programs::{
        PerfEvent, ProgramInfo, TracePoint,
        perf_event::{
            PerfEventConfig, PerfEventLinkId, PerfEventScope, SamplePolicy, SoftwareEvent,
        },
        trace_point::TracePointLinkId,
    },
};
use profiler_common::{
    COMM_LEN, DwarfRegs, EventKind, OffCpuEvent, ProcessEvent, SAMPLE_DWARF_HEADER, SampleEvent,
    SampleInlineEvent, SpanEvent, counter, names, target,
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    error::{Error, Result},
    model::Counters,
};
pub use procfs::{AddressSpace, ProcessInfo};

/// The eBPF object built by build.rs, embedded so the binary needs no files at run time.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler-ebpf"));

#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// None: until Ctrl-C, SIGTERM or the target's exit.
    pub duration: Option<Duration>,
    pub frequency_hz: u64,
    pub ring_buffer_bytes: u32,
    pub stack_map_entries: u32,
    pub spans: spans::SpansMode,
    pub span_fns: Vec<spans::SpanFn>,
    /// Processes the target forks become targets too.
    pub follow_children: bool,
    /// `run`: SIGTERM goes to this process (the command) and Ctrl-C is left to it, instead of
    /// stopping the recording, which ends when the command exits.
    pub forward_signals_to: Option<u32>,
    /// Unread bytes above which the kernel wakes the reader; None: a quarter of the buffer.
    pub wakeup_bytes: Option<u64>,
    /// How user stacks are walked.
    pub call_graph: CallGraph,
    /// Bytes of user stack copied per sample for DWARF unwinding.
    pub stack_bytes: u32,
    /// Off-CPU time too (sched_switch); None: CPU samples only.
    pub off_cpu: Option<offcpu::OffCpuOptions>,
    /// Test hook: wait this long between loading and attaching.
    pub hold_before_attach: Option<Duration>,
    /// Test hook: leave the ring buffer unread this long after attaching.
    pub stall_consumer: Option<Duration>,
}

/// How user stacks are walked (`--call-graph`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CallGraph {
    /// The kernel walks frame pointers: cheapest, complete only for code built with them.
    Fp,
    /// The kernel copies registers and the top of the stack; userspace unwinds with the
    /// modules' DWARF CFI (`.eh_frame`), falling back to frame pointers where there is none.
    Dwarf,
    /// Frame pointers when the program's executable was built with them, DWARF otherwise.
    #[default]
    Auto,
}

/// A stack as the kernel reported it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RawStack {
    /// Id in the stack map.
    Id(u32),
    /// Frames sent inline (the stack map refused them), leaf first.
    Inline(Vec<u64>),
    /// No stack: the kernel stack of a tick in user mode, or a failed walk.
    Empty,
}

impl RawStack {
    fn from_id(id: i32) -> Self {
        u32::try_from(id).map_or(Self::Empty, Self::Id)
    }
}

#[derive(Clone, Debug)]
pub struct RawSample {
    pub timestamp_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub user: RawStack,
    pub kernel: RawStack,
    /// Innermost span running on the thread, 0 for none.
    pub span_id: u64,
    /// Index of the address space (`RawRecording::processes.spaces`) it was taken in.
    pub space: u32,
    /// DWARF unwinding stopped before the thread's entry point.
    pub truncated: bool,
}

/// One record from the ring buffer.
#[derive(Clone, Debug)]
pub enum Event {
    Sample(RawSample, String),
    /// A sample to unwind: its registers and where its stack bytes are in the record.
    SampleDwarf(RawSample, String, DwarfRegs, std::ops::Range<usize>),
    Span(SpanEvent),
    Process(ProcessEvent),
    OffCpu(OffCpuEvent),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Signal(&'static str),
    TargetExited,
    /// Polling failed; the reason is among the warnings.
    Error,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Duration => f.write_str("duration elapsed"),
            Self::Signal(s) => write!(f, "{s} received"),
            Self::TargetExited => f.write_str("target exited"),
            Self::Error => f.write_str("error (see warnings)"),
        }
    }
}

/// Everything collected, before symbolization.
#[derive(Debug)]
pub struct RawRecording {
    /// The process the recording was started on.
    pub info: ProcessInfo,
    /// It and every process it started that was followed.
    pub processes: processes::Processes,
    pub samples: Vec<RawSample>,
    /// Span probe hits, in arrival order.
    pub span_events: Vec<SpanEvent>,
    /// Callsite metadata by address in the target.
    pub span_meta: HashMap<u64, spans::SpanMeta>,
    pub spans_attached: spans::Attached,
    /// Frames of every stack id the samples reference, leaf first.
    pub stacks: HashMap<u32, Vec<u64>>,
    pub counters: Counters,
    /// The call graph used for the process the recording began on, and what unwinding cost.
    pub call_graph: CallGraph,
    pub stack_bytes: u32,
    pub unwind: unwind::UnwindStats,
    /// `--off-cpu` data; None when off-CPU time was not recorded.
    pub off_cpu: Option<offcpu::RawOffCpuData>,
    /// Thread names: from /proc at the start and end, and from the samples themselves.
    pub threads: HashMap<u32, String>,
    pub start_boottime_ns: u64,
    pub end_boottime_ns: u64,
    pub start_unix_ns: u64,
    pub frequency_hz: u64,
    pub stop_reason: StopReason,
    pub load_attach: Duration,
    pub bpf_run_count: u64,
    pub bpf_run_time_ns: u64,
    pub cpus: u32,
    /// Failures after attach: the recording was kept without the part they concern.
    pub warnings: Vec<String>,
}

/// Progress shown while recording.
#[derive(Clone, Copy, Debug)]
pub struct Status {
    pub elapsed: Duration,
    pub samples: u64,
    pub lost: u64,
}

pub fn boottime_ns() -> u64 {
    clock_ns(libc::CLOCK_BOOTTIME)
}

pub fn unix_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; both clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A pidfd becomes readable when its process exits, whoever its parent is.
fn open_pidfd(pid: u32) -> Result<OwnedFd> {
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ESRCH) {
            Error::NoSuchProcess(pid)
        } else {
            Error::io(format!("pidfd_open({pid})"), e)
        });
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
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

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> Error {
    move |e| Error::Map {
        map,
        source: Box::new(e),
    }
}

fn prog_err(e: aya::programs::ProgramError) -> Error {
    Error::Program {
        program: names::PROGRAM_CPU_SAMPLE,
        source: Box::new(e),
    }
}

/// A process checked by [`preflight`], ready to be recorded.
#[derive(Debug)]
pub struct Target {
    pub info: ProcessInfo,
    space: AddressSpace,
    pidfd: OwnedFd,
}

/// `run`: the held child has not exec'd yet, so its /proc describes the profiler itself.
/// The target is described from the command instead: its executable, resolved on PATH as
/// execvp will, carries the span probes to attach to (uprobes on a file, for this pid,
/// outlive the exec).
pub fn preflight_command(pid: u32, argv: &[String]) -> Result<Target> {
    let pidfd = open_pidfd(pid)?;
    privileges::check_sampling()?;
    let program = argv.first().map(String::as_str).unwrap_or_default();
    let exe = if program.contains('/') {
        Some(std::path::PathBuf::from(program))
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(program))
                .find(|p| p.is_file())
        })
    }
    .and_then(|p| std::fs::canonicalize(p).ok());
    let mut space = AddressSpace::new(pid);
    if let Some(path) = &exe {
        space.add_file(&path.to_string_lossy());
    }
    let comm: String = program
        .rsplit('/')
        .next()
        .unwrap_or(program)
        .chars()
        .take(15)
        .collect();
    let info = ProcessInfo {
        pid,
        comm,
        command: argv.to_vec(),
        exe: exe
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    Ok(Target { info, space, pidfd })
}

/// Checks everything the user can get wrong before anything is loaded.
pub fn preflight(pid: u32) -> Result<Target> {
    let pidfd = open_pidfd(pid)?;
    let info = ProcessInfo::capture(pid)?;
    privileges::check_sampling()?;
    let mut space = AddressSpace::new(pid);
    space.refresh()?;
    if procfs::has_exited(pid) {
        return Err(Error::ExitedBeforeAttach(pid));
    }
    Ok(Target { info, space, pidfd })
}

/// Records `target` until the duration, a signal or the target's exit; calls `on_status`
/// about ten times a second.
pub async fn record(
    target: Target,
    opts: &RecordOptions,
    mut on_status: impl FnMut(Status),
    on_attached: impl FnOnce() -> Result<()>,
) -> Result<RawRecording> {
    // Registered first: a Ctrl-C while loading then ends the recording cleanly.
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| Error::io("SIGINT handler", e))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| Error::io("SIGTERM handler", e))?;
    // An SSH drop must end the recording like SIGTERM, not kill it with nothing written.
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| Error::io("SIGHUP handler", e))?;

    let Target { info, space, pidfd } = target;
    let pid = info.pid;
    let threads: HashMap<u32, String> = procfs::thread_names(pid).into_iter().collect();

    raise_memlock();
    let started = Instant::now();
    // A quarter full wakes the reader early; otherwise it drains on its timer tick.
    let wakeup_bytes = opts
        .wakeup_bytes
        .unwrap_or(u64::from(opts.ring_buffer_bytes / 4));
    // Following children needs the sched tracepoints; span tracking uses the exit one to
    // forget the spans of threads that die inside them, where tracefs allows.
    let offsets = if opts.follow_children || opts.spans != spans::SpansMode::Off {
        ensure_tracefs();
        tracepoint_field_offset("sched/sched_process_fork", "child_pid").and_then(|fork| {
            Ok((
                fork,
                tracepoint_field_offset("sched/sched_process_exit", "group_dead")?,
            ))
        })
    } else {
        Ok((0, 0))
    };
    let (fork_child, exit_dead) = match offsets {
        Ok(o) => o,
        Err(e) if opts.follow_children => return Err(e),
        Err(_) => (0, 0),
    };
    let (pidns_dev, pidns_ino) = own_pid_namespace()?;
    let (switch_state, switch_next) = match opts.off_cpu {
        Some(_) => {
            ensure_tracefs();
            (
                tracepoint_field_offset("sched/sched_switch", "prev_state")?,
                tracepoint_field_offset("sched/sched_switch", "next_pid")?,
            )
        }
        None => (0, 0),
    };
    let nanos = |d: Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
    let (off_cpu_min, off_cpu_interval_min) = opts
        .off_cpu
        .map_or((0, u64::MAX), |o| (nanos(o.min), nanos(o.interval_min)));
    let stack_bytes = u64::from(opts.stack_bytes);
    let dwarf = match opts.call_graph {
        CallGraph::Fp => false,
        CallGraph::Dwarf => true,
        CallGraph::Auto => !main_has_frame_pointers(&space, &info.exe),
    };
    // A few DWARF records must fit in the ring buffer, or every sample would be "lost".
    let dwarf_record = (SAMPLE_DWARF_HEADER as u64 + stack_bytes) * 4;
    if dwarf && u64::from(opts.ring_buffer_bytes) < dwarf_record {
        return Err(Error::InvalidArgument {
            what: "--ring-buffer-size",
            reason: format!(
                "{} bytes holds fewer than 4 DWARF samples of --stack-size {}: use at least {} (a power of two)",
                opts.ring_buffer_bytes,
                opts.stack_bytes,
                dwarf_record.next_power_of_two()
            ),
        });
    }
    // One DWARF scratch record per possible CPU, indexed by CPU number.
    let scratch_entries = highest_possible_cpu().map_or(1, |c| c + 1);
    let mut ebpf = EbpfLoader::new()
        .override_global(names::GLOBAL_DWARF_STACK_BYTES, &stack_bytes, true)
        .map_max_entries(names::MAP_DWARF_SCRATCH, scratch_entries)
        .override_global(names::GLOBAL_SWITCH_PREV_STATE_OFFSET, &switch_state, true)
        .override_global(names::GLOBAL_SWITCH_NEXT_PID_OFFSET, &switch_next, true)
        .override_global(names::GLOBAL_OFF_CPU_MIN_NS, &off_cpu_min, true)
        .override_global(
            names::GLOBAL_OFF_CPU_INTERVAL_MIN_NS,
            &off_cpu_interval_min,
            true,
        )
        .override_global(names::GLOBAL_PIDNS_DEV, &pidns_dev, true)
        .override_global(names::GLOBAL_PIDNS_INO, &pidns_ino, true)
        .override_global(names::GLOBAL_WAKEUP_BYTES, &wakeup_bytes, true)
        .override_global(names::GLOBAL_FORK_CHILD_PID_OFFSET, &fork_child, true)
        .override_global(names::GLOBAL_EXIT_GROUP_DEAD_OFFSET, &exit_dead, true)
        .map_max_entries(names::MAP_EVENTS, opts.ring_buffer_bytes)
        .map_max_entries(names::MAP_STACKS, opts.stack_map_entries)
        .load(EBPF_OBJECT)?;
    {
        let map = ebpf
            .map_mut(names::MAP_TARGETS)
            .ok_or_else(|| Error::Internal("eBPF object lacks the TARGETS map".into()))?;
        let mut targets: BpfHashMap<_, u32, u32> =
            BpfHashMap::try_from(map).map_err(map_err(names::MAP_TARGETS))?;
        let mut flags = if opts.follow_children {
            target::FOLLOW
        } else {
            0
        };
        if dwarf {
            flags |= target::DWARF;
        }
        targets
            .insert(pid, flags, 0)
            .map_err(map_err(names::MAP_TARGETS))?;
    }
    if opts.follow_children {
        attach_process_tracepoints(&mut ebpf, true)?;
    }
    // `auto` decides again for each program a followed process execs (a shell built with
    // frame pointers may start one built without): the drain loop updates its flags.
    let auto_targets = if opts.call_graph == CallGraph::Auto && opts.follow_children {
        let map = ebpf
            .take_map(names::MAP_TARGETS)
            .ok_or_else(|| Error::Internal("eBPF object lacks the TARGETS map".into()))?;
        Some(BpfHashMap::<MapData, u32, u32>::try_from(map).map_err(map_err(names::MAP_TARGETS))?)
    } else {
        None
    };
    let ring = ebpf
        .take_map(names::MAP_EVENTS)
        .ok_or_else(|| Error::Internal("eBPF object lacks the EVENTS map".into()))?;
    let ring: RingBuf<MapData> = RingBuf::try_from(ring).map_err(map_err(names::MAP_EVENTS))?;
    // Run-time statistics stay on while this descriptor lives.
    let stats_fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();

    // Span probes first: a span that begins while the sampler attaches is then not missed.
    let spans_attached = spans::attach(&mut ebpf, &space, &info.exe, opts.spans, &opts.span_fns)?;
    let spans_live = !spans_attached.abi_modules.is_empty() || !spans_attached.span_fns.is_empty();
    if spans_live && !opts.follow_children && exit_dead != 0 {
        attach_process_tracepoints(&mut ebpf, false)?;
    }
    let mut meta = spans::MetaReader::open(pid);
    let program: &mut PerfEvent = ebpf
        .program_mut(names::PROGRAM_CPU_SAMPLE)
        .ok_or_else(|| Error::Internal("eBPF object lacks the sampling program".into()))?
        .try_into()
        .map_err(prog_err)?;
    program.load().map_err(prog_err)?;
    if let Some(hold) = opts.hold_before_attach {
        std::thread::sleep(hold);
    }
    let cpus =
        aya::util::online_cpus().map_err(|(what, e)| Error::io(format!("reading {what}"), e))?;
    let mut links: Vec<PerfEventLinkId> = Vec::with_capacity(cpus.len());
    for &cpu in &cpus {
        let link = program
            .attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(opts.frequency_hz),
                false,
            )
            .map_err(prog_err)?;
        links.push(link);
    }
    // Last, so off-CPU time is counted over the same window as the samples.
    let off_cpu_link = match opts.off_cpu {
        Some(_) => Some(attach_sched(
            &mut ebpf,
            names::PROGRAM_OFF_CPU,
            "sched_switch",
        )?),
        None => None,
    };
    let load_attach = started.elapsed();
    let start_boottime_ns = boottime_ns();
    let start_unix_ns = unix_ns();

    let mut procs = processes::Processes::new(space, info.clone());
    // The target may have died while we loaded: nothing of it could then be recorded.
    if procfs::has_exited(pid) || procs.spaces[0].refresh().is_err() {
        return Err(Error::ExitedBeforeAttach(pid));
    }
    // Scripts (and tests) wait for this line to know the probes are live.
    let mut what = format!("at {} Hz", opts.frequency_hz);
    if !spans_attached.abi_modules.is_empty() {
        what += &format!(", span probes in {}", spans_attached.abi_modules.join(", "));
    }
    if !spans_attached.span_fns.is_empty() {
        what += &format!(", --span-fn {}", spans_attached.span_fns.join(", "));
    }
    if dwarf {
        what += &format!(
            ", DWARF call graph ({} KiB of stack)",
            opts.stack_bytes / 1024
        );
    }
    if opts.off_cpu.is_some() {
        what += ", off-CPU";
    }
    eprintln!(
        "profiler: recording pid {pid} ({}) {what}; Ctrl-C to stop",
        info.comm
    );
    on_attached()?;

    // SAFETY: both values own their descriptor, which stays open and unchanged while the
    // AsyncFd owns them.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| Error::io("polling the ring buffer", e.into()))?;
    let pidfd = unsafe { AsyncFd::register(pidfd) }
        .map_err(|e| Error::io("polling the target's pidfd", e.into()))?;
    if let Some(stall) = opts.stall_consumer {
        std::thread::sleep(stall);
    }

    let mut sink = Sink {
        samples: Vec::new(),
        span_events: Vec::new(),
        off_cpu: Vec::new(),
        unwinder: unwind::Unwinder::default(),
        to_unwind: Default::default(),
        auto_targets,
        threads,
        meta: &mut meta,
        procs: &mut procs,
        malformed: 0,
    };
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    // Also the drain period while the ring buffer stays below its wakeup threshold.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut ticks = 0u64;
    // From here on samples exist: a failure ends the recording early or leaves a part out,
    // and is told in the warnings, but never loses what was recorded.
    let mut warnings = Vec::new();
    let stop_reason = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                match guard {
                    Ok(mut guard) => {
                        drain(guard.get_inner_mut(), &mut sink);
                        guard.clear_ready();
                    }
                    Err(e) => {
                        warnings.push(format!("polling the ring buffer failed ({e}): the recording stopped early"));
                        break StopReason::Error;
                    }
                }
            }
            _ = sigint.recv() => {
                // Under `run`, Ctrl-C reached the command too (same process group): passing
                // it on would make a second Ctrl-C of it. Recording goes on until it exits.
                if opts.forward_signals_to.is_none() {
                    break StopReason::Signal("SIGINT");
                }
            }
            _ = sigterm.recv() => match opts.forward_signals_to {
                Some(child) => forward(child, libc::SIGTERM),
                None => break StopReason::Signal("SIGTERM"),
            },
            _ = sighup.recv() => match opts.forward_signals_to {
                Some(child) => forward(child, libc::SIGHUP),
                None => break StopReason::Signal("SIGHUP"),
            },
            _ = pidfd.readable() => break StopReason::TargetExited,
            _ = async { match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            } } => break StopReason::Duration,
            _ = tick.tick() => {
                ticks += 1;
                drain(ring.get_mut(), &mut sink);
                let lost = read_counters(&ebpf).map(|c| c.lost_ringbuf_full).unwrap_or(0);
                on_status(Status { elapsed: started.elapsed().saturating_sub(load_attach), samples: sink.samples.len() as u64, lost });
                // Libraries loaded later (dlopen) must be captured while the target lives.
                if ticks.is_multiple_of(10) {
                    sink.procs.refresh_live();
                }
            }
        }
    };

    // Detach first so the counters are final, then take what is still in the ring buffer.
    // The off-CPU program goes first: its window must not outlast the samples'.
    let mut off_cpu_stats = (0, 0);
    if let Some(link) = off_cpu_link {
        let detached = sched_program(&mut ebpf, names::PROGRAM_OFF_CPU).and_then(|p| {
            p.detach(link)
                .map_err(tracepoint_err(names::PROGRAM_OFF_CPU))?;
            Ok(run_stats(p.info()))
        });
        off_cpu_stats = kept(detached, "detaching the off-CPU program", &mut warnings);
    }
    let sampling = ebpf
        .program_mut(names::PROGRAM_CPU_SAMPLE)
        .ok_or_else(|| Error::Internal("sampling program vanished".into()))
        .and_then(|p| <&mut PerfEvent>::try_from(p).map_err(prog_err))
        .and_then(|program| {
            for link in links {
                program.detach(link).map_err(prog_err)?;
            }
            Ok(run_stats(program.info()))
        });
    let end_boottime_ns = boottime_ns();
    let (bpf_run_count, bpf_run_time_ns) =
        kept(sampling, "detaching the sampling program", &mut warnings);
    drop(stats_fd);
    drain(ring.get_mut(), &mut sink);
    unwind_pending(&mut sink, None);
    let Sink {
        samples,
        span_events,
        off_cpu: off_cpu_events,
        unwinder,
        mut threads,
        malformed,
        ..
    } = sink;
    procs.refresh_live();
    for p in procs.pids().collect::<Vec<_>>() {
        if !procfs::has_exited(p) {
            threads.extend(procfs::thread_names(p));
        }
    }

    let mut counters = kept(
        read_counters(&ebpf),
        "reading the kernel's counters (losses unknown)",
        &mut warnings,
    );
    counters.received = samples.len() as u64;
    counters.malformed_events = malformed;
    counters.span_events_received = span_events.len() as u64;
    let off_cpu = match opts.off_cpu {
        Some(_) => {
            counters.off_cpu_events_received = off_cpu_events.len() as u64;
            let data = off_cpu_data(
                &ebpf,
                &mut procs,
                off_cpu_events,
                end_boottime_ns,
                off_cpu_min,
                off_cpu_interval_min,
            );
            match data {
                Ok(mut data) => {
                    (data.bpf_run_count, data.bpf_run_time_ns) = off_cpu_stats;
                    Some(data)
                }
                Err(e) => {
                    warnings.push(format!(
                        "reading the off-CPU sums failed, off-CPU time left out: {e}"
                    ));
                    None
                }
            }
        }
        None => None,
    };
    let off_cpu_stacks = off_cpu
        .iter()
        .flat_map(|o| o.totals.iter().chain(&o.intervals))
        .flat_map(|o| [&o.user, &o.kernel]);
    let mut stacks = kept(
        read_stacks(
            &ebpf,
            samples
                .iter()
                .flat_map(|s| [&s.user, &s.kernel])
                .chain(off_cpu_stacks),
        ),
        "reading the kernel's stack map (stacks left empty)",
        &mut warnings,
    );
    stacks.extend(unwinder.stacks.into_iter().map(|(frames, id)| (id, frames)));

    Ok(RawRecording {
        info,
        processes: procs,
        samples,
        span_events,
        span_meta: meta.cache,
        spans_attached,
        stacks,
        counters,
        call_graph: if dwarf {
            CallGraph::Dwarf
        } else {
            CallGraph::Fp
        },
        stack_bytes: opts.stack_bytes,
        unwind: unwinder.stats,
        off_cpu,
        threads,
        start_boottime_ns,
        end_boottime_ns,
        start_unix_ns,
        frequency_hz: opts.frequency_hz,
        stop_reason,
        load_attach,
        bpf_run_count,
        bpf_run_time_ns,
        cpus: cpus.len() as u32,
        warnings,
    })
}

/// The value of a step after attach, or its default with the failure kept as a warning.
fn kept<T: Default>(r: Result<T>, what: &str, warnings: &mut Vec<String>) -> T {
    r.unwrap_or_else(|e| {
        warnings.push(format!("{what}: {e}"));
        T::default()
    })
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

fn forward(pid: u32, signal: libc::c_int) {
    // SAFETY: plain kill(2); a command that already exited makes it fail harmlessly.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Offset of `field` in a classic tracepoint's record, from its tracefs format file.
fn tracepoint_field_offset(event: &str, field: &str) -> Result<u32> {
    let path = format!("/sys/kernel/tracing/events/{event}/format");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::io(format!("reading {path} (is tracefs mounted?)"), e))?;
    text.lines()
        .find(|l| {
            l.split(';')
                .next()
                .is_some_and(|decl| decl.trim_end().ends_with(&format!(" {field}")))
        })
        .and_then(|l| l.split("offset:").nth(1)?.split(';').next()?.parse().ok())
        .ok_or_else(|| Error::Internal(format!("{path} has no field {field}")))
}

/// Classic tracepoints need tracefs, which is not always mounted at boot.
fn ensure_tracefs() {
    if !std::path::Path::new("/sys/kernel/tracing/events").exists() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
            .status();
    }
}

/// Follows fork/exec/exit of the targets in the kernel (sched tracepoints); without
/// `follow`, only exits (which also clear the span state of dying threads).
fn attach_process_tracepoints(ebpf: &mut aya::Ebpf, follow: bool) -> Result<()> {
    ensure_tracefs();
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

/// The classic tracepoint program `name` of the eBPF object.
fn sched_program<'a>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut TracePoint> {
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Internal(format!("eBPF object lacks {name}")))?
        .try_into()
        .map_err(tracepoint_err(name))
}

/// Loads program `name` and attaches it to the sched tracepoint `event`.
fn attach_sched(ebpf: &mut aya::Ebpf, name: &'static str, event: &str) -> Result<TracePointLinkId> {
    let p = sched_program(ebpf, name)?;
    p.load().map_err(tracepoint_err(name))?;
    p.attach("sched", event).map_err(tracepoint_err(name))
}

/// A program's kernel run-time statistics: (runs, total ns), zeros where unavailable.
fn run_stats(info: std::result::Result<ProgramInfo, aya::programs::ProgramError>) -> (u64, u64) {
    info.map(|i| (i.run_count(), i.run_time().as_nanos() as u64))
        .unwrap_or((0, 0))
}

/// Everything off-CPU, after the program is detached: the kernel's sums, plus the intervals
/// they had no room for and those still open at the end.
fn off_cpu_data(
    ebpf: &aya::Ebpf,
    procs: &mut processes::Processes,
    events: Vec<(offcpu::RawOffCpu, bool)>,
    end_ns: u64,
    min_ns: u64,
    interval_min_ns: u64,
) -> Result<offcpu::RawOffCpuData> {
    // The kernel's sums and the intervals still open are placed in the address space current
    // now; events got theirs when they arrived (an exec since must not move them).
    let mut totals = offcpu::read_totals(ebpf)?;
    for o in &mut totals {
        o.space = procs.space_of(o.pid);
    }
    let mut intervals = Vec::with_capacity(events.len());
    for (e, in_totals) in events {
        if !in_totals {
            totals.push(e.clone());
        }
        intervals.push(e);
    }
    for mut open in offcpu::read_open(ebpf, end_ns, min_ns)? {
        open.space = procs.space_of(open.pid);
        if open.total_ns >= interval_min_ns {
            intervals.push(open.clone());
        }
        totals.push(open);
    }
    Ok(offcpu::RawOffCpuData {
        min_ns,
        interval_min_ns,
        totals,
        intervals,
        ..Default::default()
    })
}

/// Where drained records go.
struct Sink<'a> {
    samples: Vec<RawSample>,
    span_events: Vec<SpanEvent>,
    /// Off-CPU intervals, and whether the kernel's sums hold them too.
    off_cpu: Vec<(offcpu::RawOffCpu, bool)>,
    unwinder: unwind::Unwinder,
    /// DWARF samples not unwound yet: (index in `samples`, registers, stack bytes).
    to_unwind: std::collections::VecDeque<(usize, DwarfRegs, Vec<u8>)>,
    /// `--call-graph auto` with children followed: the targets' flags, to update at exec.
    auto_targets: Option<BpfHashMap<MapData, u32, u32>>,
    threads: HashMap<u32, String>,
    meta: &'a mut spans::MetaReader,
    procs: &'a mut processes::Processes,
    malformed: u64,
}

fn drain(ring: &mut RingBuf<MapData>, sink: &mut Sink<'_>) {
    while let Some(item) = ring.next() {
        match parse_event(&item) {
            Some(Event::SampleDwarf(mut sample, comm, regs, stack)) => {
                sink.threads.insert(sample.tid, comm);
                sample.space = sink.procs.space_of(sample.pid);
                // Code the maps read so far do not cover: a library loaded since.
                if let Some(space) = sink.procs.spaces.get_mut(sample.space as usize)
                    && space.find(regs.ip).is_none()
                {
                    let _ = space.refresh();
                }
                let bytes = item.get(stack).unwrap_or(&[]).to_vec();
                sink.to_unwind.push_back((sink.samples.len(), regs, bytes));
                sink.samples.push(sample);
            }
            Some(Event::Sample(mut sample, comm)) => {
                // The latest name wins: threads rename themselves, and exec renames them.
                sink.threads.insert(sample.tid, comm);
                sample.space = sink.procs.space_of(sample.pid);
                sink.samples.push(sample);
            }
            Some(Event::Process(e)) => match EventKind::from_u32(e.kind) {
                Some(EventKind::ProcessFork) => sink.procs.forked(e.pid, e.parent),
                Some(EventKind::ProcessExec) => {
                    sink.procs.exec(e.pid);
                    if let Some(targets) = sink.auto_targets.as_mut() {
                        choose_call_graph(targets, sink.procs, e.pid);
                    }
                    if e.pid == sink.meta.pid() {
                        sink.meta.reopen();
                    }
                }
                _ => sink.procs.exited(e.pid),
            },
            Some(Event::OffCpu(e)) => {
                let mut o = offcpu::from_event(&e);
                o.space = sink.procs.space_of(o.pid);
                sink.off_cpu.push((o, e.in_totals != 0));
            }
            Some(Event::Span(e)) => {
                // Metadata is read while the target is alive, once per callsite.
                if e.kind == EventKind::SpanBegin as u32 && e.meta != 0 {
                    sink.meta.read(e.meta);
                }
                sink.span_events.push(e);
            }
            None => sink.malformed += 1,
        }
    }
    unwind_pending(sink, Some(UNWIND_BUDGET));
}

/// Unwinding time per drain once the ring buffer is empty.
const UNWIND_BUDGET: Duration = Duration::from_millis(10);

/// Unwinds queued DWARF samples, oldest first, for at most `budget` (None: all of them).
/// The queue is worked on only after the ring buffer is drained: reading a module's unwind
/// tables takes milliseconds, and a short-lived child's fork or exec must reach /proc while
/// the child still lives.
fn unwind_pending(sink: &mut Sink<'_>, budget: Option<Duration>) {
    let started = Instant::now();
    while let Some((at, regs, stack)) = sink.to_unwind.pop_front() {
        if let Some(sample) = sink.samples.get_mut(at)
            && let Some(space) = sink.procs.spaces.get(sample.space as usize)
        {
            let unwound = sink.unwinder.unwind(sample.space, space, &regs, &stack);
            sample.user = unwound.id.map_or(RawStack::Empty, RawStack::Id);
            sample.truncated = unwound.truncated;
        }
        if budget.is_some_and(|b| started.elapsed() >= b) {
            break;
        }
    }
}

/// Decodes one ring buffer record; None for a record of unknown kind or size.
pub fn parse_event(bytes: &[u8]) -> Option<Event> {
    let kind = EventKind::from_u32(u32::from_ne_bytes(bytes.get(..4)?.try_into().ok()?))?;
    let (header, user, kernel) = match kind {
        EventKind::ProcessFork | EventKind::ProcessExec | EventKind::ProcessExit => {
            if bytes.len() < size_of::<ProcessEvent>() {
                return None;
            }
            // SAFETY: length checked; ProcessEvent is plain old data, read unaligned.
            let e: ProcessEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            return Some(Event::Process(e));
        }
        EventKind::SpanBegin
        | EventKind::SpanEnd
        | EventKind::SpanEnter
        | EventKind::SpanExit
        | EventKind::SpanFnCall
        | EventKind::SpanFnReturn => {
            if bytes.len() < size_of::<SpanEvent>() {
                return None;
            }
            // SAFETY: length checked; SpanEvent is plain old data, read unaligned.
            let e: SpanEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            return Some(Event::Span(e));
        }
        EventKind::SampleDwarf => {
            if bytes.len() < SAMPLE_DWARF_HEADER {
                return None;
            }
            // SAFETY: length checked; both are plain old data, read unaligned.
            let (h, regs): (SampleEvent, DwarfRegs) = unsafe {
                (
                    std::ptr::read_unaligned(bytes.as_ptr().cast()),
                    std::ptr::read_unaligned(bytes[size_of::<SampleEvent>()..].as_ptr().cast()),
                )
            };
            let end = (SAMPLE_DWARF_HEADER + regs.stack_len as usize).min(bytes.len());
            let (sample, comm) =
                raw_sample(&h, RawStack::Empty, RawStack::from_id(h.kernel_stack_id));
            return Some(Event::SampleDwarf(
                sample,
                comm,
                regs,
                SAMPLE_DWARF_HEADER..end,
            ));
        }
        EventKind::OffCpu => {
            if bytes.len() < size_of::<OffCpuEvent>() {
                return None;
            }
            // SAFETY: length checked; OffCpuEvent is plain old data, read unaligned.
            let e: OffCpuEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            return Some(Event::OffCpu(e));
        }
        EventKind::Sample => {
            if bytes.len() < size_of::<SampleEvent>() {
                return None;
            }
            // SAFETY: length checked; SampleEvent is plain old data, read unaligned.
            let h: SampleEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            (
                h,
                RawStack::from_id(h.user_stack_id),
                RawStack::from_id(h.kernel_stack_id),
            )
        }
        EventKind::SampleInline => {
            if bytes.len() < size_of::<SampleInlineEvent>() {
                return None;
            }
            // SAFETY: length checked; SampleInlineEvent is plain old data, read unaligned.
            let e: SampleInlineEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
            let frames = |all: &[u64], len: u32| {
                let v: Vec<u64> = all[..(len as usize).min(all.len())].to_vec();
                if v.is_empty() {
                    RawStack::Empty
                } else {
                    RawStack::Inline(v)
                }
            };
            (
                e.header,
                frames(&e.user, e.user_len),
                frames(&e.kernel, e.kernel_len),
            )
        }
    };
    let (sample, comm) = raw_sample(&header, user, kernel);
    Some(Event::Sample(sample, comm))
}

fn raw_sample(header: &SampleEvent, user: RawStack, kernel: RawStack) -> (RawSample, String) {
    let comm_len = header.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
    let comm = String::from_utf8_lossy(&header.comm[..comm_len]).into_owned();
    (
        RawSample {
            timestamp_ns: header.timestamp_ns,
            pid: header.pid,
            tid: header.tid,
            cpu: header.cpu,
            user,
            kernel,
            span_id: header.span_id,
            space: 0,
            truncated: false,
        },
        comm,
    )
}

/// Sets or clears the DWARF flag of `pid` for the program it now runs (`auto`).
fn choose_call_graph(
    targets: &mut BpfHashMap<MapData, u32, u32>,
    procs: &mut processes::Processes,
    pid: u32,
) {
    let index = procs.space_of(pid) as usize;
    let (Some(info), Some(space)) = (procs.infos.get(&pid), procs.spaces.get(index)) else {
        return;
    };
    let dwarf = !main_has_frame_pointers(space, &info.exe);
    if let Ok(flags) = targets.get(&pid, 0) {
        let updated = if dwarf {
            flags | target::DWARF
        } else {
            flags & !target::DWARF
        };
        if updated != flags {
            let _ = targets.insert(pid, updated, 0);
        }
    }
}

/// Whether the target's executable sets up frame pointers (the `auto` call graph's choice).
fn main_has_frame_pointers(space: &AddressSpace, exe: &str) -> bool {
    space
        .files
        .get(exe)
        .and_then(|open| std::fs::read(open.fd_path()).ok())
        .and_then(|bytes| unwind::has_frame_pointers(&bytes))
        .unwrap_or(false)
}

fn read_counters(ebpf: &aya::Ebpf) -> Result<Counters> {
    let map = ebpf
        .map(names::MAP_COUNTERS)
        .ok_or_else(|| Error::Internal("eBPF object lacks the COUNTERS map".into()))?;
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
        off_cpu_events_received: 0,
    })
}

fn read_stacks<'a>(
    ebpf: &aya::Ebpf,
    stacks: impl Iterator<Item = &'a RawStack>,
) -> Result<HashMap<u32, Vec<u64>>> {
    let map = ebpf
        .map(names::MAP_STACKS)
        .ok_or_else(|| Error::Internal("eBPF object lacks the STACKS map".into()))?;
    let traces = StackTraceMap::try_from(map).map_err(map_err(names::MAP_STACKS))?;
    let mut out = HashMap::new();
    for stack in stacks {
        if let RawStack::Id(id) = stack {
            // Unwound in userspace: not in the kernel's map.
            if out.contains_key(id) || id & unwind::UNWOUND_ID_BIT != 0 {
                continue;
            }
            // An id the map no longer holds yields an empty stack, shown as such.
            let frames = traces
                .get(id, 0)
                .map(|t| t.frames().iter().map(|f| f.ip).collect())
                .unwrap_or_default();
            out.insert(*id, frames);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: EventKind) -> SampleEvent {
        let mut comm = [0u8; COMM_LEN];
        comm[..6].copy_from_slice(b"worker");
        SampleEvent {
            kind: kind as u32,
            cpu: 1,
            timestamp_ns: 123,
            pid: 10,
            tid: 11,
            user_stack_id: 5,
            kernel_stack_id: -14,
            comm,
            span_id: 9,
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: reading the bytes of a plain-old-data value.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn sample(bytes: &[u8]) -> (RawSample, String) {
        match parse_event(bytes) {
            Some(Event::Sample(s, comm)) => (s, comm),
            other => panic!("not a sample: {other:?}"),
        }
    }

    #[test]
    fn parses_span_events() {
        let e = SpanEvent {
            kind: EventKind::SpanBegin as u32,
            cpu: 1,
            timestamp_ns: 5,
            pid: 10,
            tid: 11,
            span_id: 7,
            parent_id: 3,
            meta: 0x1000,
        };
        match parse_event(&bytes_of(&e)) {
            Some(Event::Span(got)) => assert_eq!(got, e),
            other => panic!("not a span event: {other:?}"),
        }
        assert!(parse_event(&bytes_of(&e)[..40]).is_none());
    }

    #[test]
    fn parses_plain_sample() {
        let (s, comm) = sample(&bytes_of(&header(EventKind::Sample)));
        assert_eq!((s.pid, s.tid, s.cpu, s.timestamp_ns), (10, 11, 1, 123));
        assert_eq!(s.user, RawStack::Id(5));
        assert_eq!(s.kernel, RawStack::Empty);
        assert_eq!(s.span_id, 9);
        assert_eq!(comm, "worker");
    }

    #[test]
    fn parses_inline_sample() {
        let mut e = SampleInlineEvent {
            header: header(EventKind::SampleInline),
            user_len: 2,
            kernel_len: 0,
            user: [0; profiler_common::MAX_STACK_DEPTH],
            kernel: [0; profiler_common::MAX_STACK_DEPTH],
        };
        e.user[0] = 0x1000;
        e.user[1] = 0x2000;
        let (s, _) = sample(&bytes_of(&e));
        assert_eq!(s.user, RawStack::Inline(vec![0x1000, 0x2000]));
        assert_eq!(s.kernel, RawStack::Empty);
    }

    #[test]
    fn rejects_short_and_unknown_records() {
        let b = bytes_of(&header(EventKind::Sample));
        assert!(parse_event(&b[..20]).is_none());
        assert!(parse_event(&[9, 0, 0, 0, 0, 0, 0, 0]).is_none());
        assert!(parse_event(&[]).is_none());
    }
}
