//! Kernel → events: loads the eBPF programs (`session`), attaches them to the software CPU
//! clock of every CPU, and turns what the kernel reports into a [`RawRecording`]: ring buffer
//! records (`decode`, `drain`) and side-band records of the processes' mappings
//! (`sideband`, `processes`, `modules`).
pub mod alloc;
pub mod btf;
pub mod checks;
pub mod coverage;
pub mod debuginfo;
pub mod decode;
pub mod drain;
pub mod locks;
pub mod modules;
pub mod offcpu;
pub mod phases;
pub mod privileges;
pub mod processes;
pub mod procfs;
pub mod ps;
pub mod run;
pub mod scope;
pub mod session;
pub mod sideband;
pub mod spans;
pub mod stack_copy;
pub mod targets;
pub mod unwind;
pub mod window;

use std::{
    collections::HashMap,
    os::fd::{FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use profiler_common::SpanEvent;

use crate::{
    error::{Error, Result},
    model::Counters,
};
pub use decode::{Event, parse_event};
pub use procfs::{AddressSpace, ProcessInfo};
pub(crate) use session::{map_err, object_map, object_map_ref};

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
    /// What is recorded: processes by pid, the PID namespace, a cgroup.
    pub scope: scope::Scope,
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
    /// Allocations too (uprobes on the targets' allocator); None: not recorded.
    pub alloc: Option<alloc::AllocOptions>,
    /// Futex waits of target threads too (lock contention).
    pub locks: bool,
    /// Test hook: wait this long between loading and attaching.
    pub hold_before_attach: Option<Duration>,
    /// Test hook: leave the ring buffer unread this long after attaching.
    pub stall_consumer: Option<Duration>,
    /// Test hook: wait this long between the final drain and reading the counters.
    pub hold_after_drain: Option<Duration>,
    /// Test hook: wait this long, still sampling, between the stop and detaching.
    pub hold_before_detach: Option<Duration>,
    /// Ends the recording when notified (a server or agent stopping it, not a signal); use
    /// `notify_one`, whose permit is kept if the drain loop is not waiting at that moment.
    pub stop: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Cut the recording into windows at period boundaries, each sent symbolized as it ends
    /// (`profiler agent`); the recording returned is then the last window only.
    pub window: Option<window::WindowOptions>,
    /// The command line's: once recording stops, SIGINT, SIGTERM and SIGHUP go to
    /// [`crate::interrupt`] (and on to `forward_signals_to`), no longer to this loop's streams,
    /// which nothing reads after it. A server or agent keeps its own signals.
    pub signals_after_stop: bool,
}

impl RecordOptions {
    /// Whether processes started during the recording can become targets: followed
    /// children, or any process that enters a scope wider than a list of pids.
    pub fn follows(&self) -> bool {
        self.follow_children || !matches!(self.scope, scope::Scope::Pids(_))
    }
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Signal(&'static str),
    TargetExited,
    /// Stopped through `RecordOptions::stop`.
    Requested,
    /// Polling failed; the reason is among the warnings.
    Error,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Duration => f.write_str("duration elapsed"),
            Self::Signal(s) => write!(f, "{s} received"),
            Self::TargetExited => f.write_str("target exited"),
            Self::Requested => f.write_str("stop requested"),
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
    /// Callsite metadata by (process, address in it).
    pub span_meta: HashMap<(u32, u64), spans::SpanMeta>,
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
    /// `--alloc` data; None when allocations were not recorded.
    pub alloc: Option<alloc::RawAllocData>,
    /// `--locks` data; None when lock waits were not recorded.
    pub locks: Option<locks::RawLockData>,
    /// Samples against the targets' CPU time; None when no thread's could be read.
    pub coverage: Option<crate::model::Coverage>,
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
    /// The eBPF programs' code, read from kallsyms before they were unloaded.
    pub bpf_programs: crate::symbolize::kallsyms::BpfPrograms,
}

#[cfg(test)]
impl RawRecording {
    /// Nothing recorded, for tests to fill in.
    pub(crate) fn empty_for_tests() -> Self {
        Self {
            info: ProcessInfo::default(),
            processes: processes::Processes::new(Default::default(), false),
            samples: Vec::new(),
            span_events: Vec::new(),
            span_meta: HashMap::new(),
            spans_attached: Default::default(),
            stacks: HashMap::new(),
            counters: Counters::default(),
            call_graph: CallGraph::Fp,
            stack_bytes: 0,
            unwind: Default::default(),
            off_cpu: None,
            alloc: None,
            locks: None,
            coverage: None,
            threads: HashMap::new(),
            start_boottime_ns: 0,
            end_boottime_ns: 1,
            start_unix_ns: 0,
            frequency_hz: 99,
            stop_reason: StopReason::Duration,
            load_attach: Duration::ZERO,
            bpf_run_count: 0,
            bpf_run_time_ns: 0,
            cpus: 1,
            warnings: Vec::new(),
            bpf_programs: Default::default(),
        }
    }
}

/// Adds the losses userspace counts over the whole recording to the kernel's `counters`.
fn add_user_losses(
    counters: &mut Counters,
    procs: &processes::Processes,
    malformed: u64,
    targets_refused: u64,
) {
    counters.malformed_events = malformed;
    counters.sideband_lost = procs.sideband_lost;
    counters.targets_full = counters.targets_full.saturating_add(targets_refused);
    counters.modules_missed = procs.modules.missed.values().sum();
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

/// Whether the process `pidfd` refers to has exited (its pidfd is readable then).
fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; a zero timeout never blocks.
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
}

/// A process checked by [`preflight`], ready to be recorded.
#[derive(Debug)]
pub struct Target {
    pub info: ProcessInfo,
    space: AddressSpace,
    modules: modules::ModuleStore,
    /// The executable it runs (or, under `run`, will run).
    exe_module: Option<modules::ModuleId>,
    /// Ends the recording when the process exits; None for a scope of many processes.
    pidfd: Option<OwnedFd>,
    /// The other processes in scope when the recording begins, with whether their
    /// executable has frame pointers (None: unknown).
    others: Vec<(ProcessInfo, AddressSpace, Option<bool>)>,
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
    let space = AddressSpace::new(pid);
    let mut modules = modules::ModuleStore::default();
    let exe_module = exe
        .as_ref()
        .and_then(|path| modules.intern_path(&path.to_string_lossy()));
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
        // Read again at its exec, where they are its own.
        ..Default::default()
    };
    Ok(Target {
        info,
        space,
        modules,
        exe_module,
        pidfd: Some(pidfd),
        others: Vec::new(),
    })
}

/// A scope of several processes (`--pid` given more than once, `--all`, `--cgroup`): each
/// process in it now, read from /proc. The recording is described as the first `--pid`, or
/// as the scope itself (pid 0) for the others.
pub fn preflight_scope(scope: &scope::Scope) -> Result<Target> {
    preflight_scope_except(scope, None)
}

/// `run` with a scope: the scope's processes are recorded while the held command `pid` runs
/// (it is recorded too when the scope takes it in: `--all`, or its exec into a name `--comm`
/// matches). The recording ends when the command exits.
pub fn preflight_scope_command(scope: &scope::Scope, pid: u32) -> Result<Target> {
    let pidfd = open_pidfd(pid)?;
    // Before its exec the held command is a copy of the profiler: nothing of it to read.
    let mut target = preflight_scope_except(scope, Some(pid))?;
    target.pidfd = Some(pidfd);
    Ok(target)
}

fn preflight_scope_except(scope: &scope::Scope, skip: Option<u32>) -> Result<Target> {
    privileges::check_sampling()?;
    let mut modules = modules::ModuleStore::default();
    let mut others = Vec::new();
    for pid in scope.current_pids() {
        if Some(pid) == skip {
            continue;
        }
        // Processes that exit meanwhile, and kernel threads (no maps), are simply skipped
        // or kept with an empty space: the kernel still places their samples.
        let Ok(info) = ProcessInfo::capture(pid) else {
            if matches!(scope, scope::Scope::Pids(_)) {
                return Err(Error::NoSuchProcess(pid));
            }
            continue;
        };
        let mut space = AddressSpace::new(pid);
        let _ = space.refresh(&mut modules);
        let exe_fp = modules
            .intern_file(&format!("/proc/{pid}/exe"), &info.exe)
            .or_else(|| exe_mapping_module(&space, &info.exe))
            .and_then(|id| modules.get(id))
            .and_then(|m| m.frame_pointers());
        others.push((info, space, exe_fp));
    }
    let name = scope.name();
    let info = ProcessInfo {
        pid: 0,
        comm: name.clone(),
        command: Vec::new(),
        exe: String::new(),
        ..Default::default()
    };
    Ok(Target {
        info,
        space: AddressSpace::new(0),
        modules,
        exe_module: None,
        pidfd: None,
        others,
    })
}

/// The executable's module as its mapping found it, when /proc/PID/exe may not be opened
/// (another user's process without CAP_SYS_PTRACE): the mapping's file is the one the kernel
/// mapped, checked by identity.
fn exe_mapping_module(space: &AddressSpace, exe: &str) -> Option<modules::ModuleId> {
    if exe.is_empty() {
        return None;
    }
    space
        .mappings
        .iter()
        .filter(|m| m.path == exe)
        .find_map(|m| m.module)
}

/// Checks everything the user can get wrong before anything is loaded.
pub fn preflight(pid: u32) -> Result<Target> {
    let pidfd = open_pidfd(pid)?;
    let info = ProcessInfo::capture(pid)?;
    privileges::check_sampling()?;
    phases::mark("preflight: pidfd, /proc/PID, capabilities");
    let mut space = AddressSpace::new(pid);
    let mut modules = modules::ModuleStore::default();
    space.refresh(&mut modules)?;
    phases::mark("preflight: /proc/PID/maps, files opened");
    if pidfd_exited(&pidfd) || procfs::has_exited(pid) {
        return Err(Error::ExitedBeforeAttach(pid));
    }
    let exe_module = modules
        .intern_file(&format!("/proc/{pid}/exe"), &info.exe)
        .or_else(|| exe_mapping_module(&space, &info.exe));
    phases::mark("preflight: executable opened");
    Ok(Target {
        info,
        space,
        modules,
        exe_module,
        pidfd: Some(pidfd),
        others: Vec::new(),
    })
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

    let Target {
        info,
        space,
        modules,
        exe_module,
        pidfd,
        others,
    } = target;
    // pid 0: a scope of many processes, none of which the recording is named after.
    let pid = info.pid;
    let mut pids: Vec<u32> = others.iter().map(|(i, _, _)| i.pid).collect();
    if pid != 0 {
        pids.insert(0, pid);
    }
    let threads: HashMap<u32, String> =
        pids.iter().flat_map(|&p| procfs::thread_names(p)).collect();
    modules::raise_nofile();
    let started = Instant::now();
    phases::mark("thread names");

    let exe_fp = exe_module
        .and_then(|id| modules.get(id))
        .and_then(|m| m.frame_pointers());
    phases::mark("frame pointers of the executable");
    // The call graph of the process the recording is named after; in a wider scope, that of
    // processes that join it (frame pointers under `auto`, until their exec decides).
    let dwarf = if pid != 0 {
        session::wants_dwarf(opts.call_graph, exe_fp)
    } else {
        opts.call_graph == CallGraph::Dwarf
    };
    // Every process in scope now is a target from the start, each with its own call graph.
    let mut initial: Vec<(u32, bool)> = others
        .iter()
        .map(|(i, _, fp)| (i.pid, session::wants_dwarf(opts.call_graph, *fp)))
        .collect();
    if pid != 0 {
        initial.insert(0, (pid, dwarf));
    }
    let primary = targets::Primary::choose(pid, &initial, opts.follows());
    let mut session =
        session::Session::load(opts, &initial, primary, dwarf).map_err(checks::explain_refusal)?;
    let auto_call_graph = opts.call_graph == CallGraph::Auto && opts.follows();
    let auto_targets = if auto_call_graph || matches!(opts.scope, scope::Scope::Comm(_)) {
        Some(session.take_targets()?)
    } else {
        None
    };
    let copy_sizes = if session.copies_stacks {
        Some(session.take_copy_sizes()?)
    } else {
        None
    };
    let ring = session.take_ring()?;
    let cpus = session.cpus.clone();
    // The kernel verifies the sampler (20-40 ms, the longest step of the start-up) on another
    // thread while this one opens the side-band and reads the target's files for span
    // probes, which need nothing of the eBPF object (issue 17).
    let (sideband, sampler_loaded, probed, warnings) = {
        let sampler = session.sampler_to_load()?;
        std::thread::scope(|s| {
            let verifying = std::thread::Builder::new()
                .name("verify-sampler".into())
                .spawn_scoped(s, move || sampler.load());
            // Before anything can run in the target: every mapping from now on is reported.
            let sideband = sideband::Sideband::open(&cpus);
            phases::mark("side-band perf events opened");
            let mut warnings = Vec::new();
            if pid != 0 {
                warnings.extend(procfs::memory_access_warning(pid));
            }
            let probed = (pid != 0).then(|| probe_modules(&space, &modules, exe_module));
            phases::mark("memory access check, files for span probes opened");
            let sampler_loaded = match verifying {
                Ok(h) => h
                    .join()
                    .map_err(|_| Error::Internal("loading the sampling program panicked".into())),
                // No thread: loaded below, on this one.
                Err(_) => Ok(Ok(())),
            };
            (sideband, sampler_loaded, probed, warnings)
        })
    };
    let sideband = sideband?;
    // A refusal of the sampler is reported as before, by load_sampler below.
    let _ = sampler_loaded?;
    phases::mark("sampler verified (joined)");
    phases::detail(|| session.sampler_verified_instructions());
    let comm = match &opts.scope {
        scope::Scope::Comm(c) => Some(c.clone()),
        _ => None,
    };

    // Span probes first: a span that begins while the sampler attaches is then not missed.
    // The process the recording is named after gets them as before (a --span-fn it cannot
    // take is an error); when processes join during the recording (a scope, followed
    // children) every file they map is looked at as it appears, and probed once.
    let mut warnings = warnings;
    let mut live = None;
    let spans_attached = if let Some((probes, readables)) = probed {
        let attached = session
            .attach_spans(&probes, pid, &info.exe, opts)
            .map_err(checks::explain_refusal)?;
        drop(readables);
        if opts.follows() && spans::LiveProbes::wanted(opts.spans, &opts.span_fns) {
            live = Some(spans::LiveProbes::new(
                opts.spans,
                &opts.span_fns,
                modules.len(),
                attached.clone(),
            ));
        }
        attached
    } else {
        if spans::LiveProbes::wanted(opts.spans, &opts.span_fns) {
            let mut probes =
                spans::LiveProbes::new(opts.spans, &opts.span_fns, 0, Default::default());
            session
                .clear_spans_at_exit(opts)
                .map_err(checks::explain_refusal)?;
            probes
                .attach_new(&mut session.ebpf, &modules)
                .map_err(checks::explain_refusal)?;
            let attached = probes.attached.clone();
            live = Some(probes);
            attached
        } else {
            spans::Attached::default()
        }
    };
    let mut meta = spans::MetaReader::default();
    phases::mark("span probes");
    // Allocator probes before the sampler too: the processes in scope now get theirs here,
    // those that join later as they become known (the drain loop's tick).
    let mut alloc_probes = opts
        .alloc
        .map(|_| alloc::AllocProbes::new(matches!(opts.scope, scope::Scope::All)));
    if let Some(probes) = alloc_probes.as_mut() {
        if pid != 0 && space.mappings.is_empty() {
            // `run`: the held command has not exec'd; its C library is most likely ours.
            if let Some(libc) = alloc::own_libc() {
                probes
                    .attach_path(&mut session.ebpf, &libc, pid)
                    .map_err(checks::explain_refusal)?;
            }
        } else if pid != 0 {
            probes
                .attach_space(&mut session.ebpf, &space, &modules)
                .map_err(checks::explain_refusal)?;
        }
        for (_, other, _) in &others {
            if let Err(e) = probes.attach_space(&mut session.ebpf, other, &modules) {
                warnings.push(format!("{e}: allocations of pid {} left out", other.pid));
            }
        }
    }
    let mut lock_probes = if opts.locks {
        let probes =
            locks::LockProbes::attach(&mut session.ebpf).map_err(checks::explain_refusal)?;
        warnings.extend(probes.kernel_missing.clone());
        Some(probes)
    } else {
        None
    };
    phases::mark("allocator and lock probes");
    session.load_sampler().map_err(checks::explain_refusal)?;
    phases::mark("sampler loaded (verifier)");
    if let Some(hold) = opts.hold_before_attach {
        std::thread::sleep(hold);
    }
    session
        .attach(opts.frequency_hz, opts.off_cpu.is_some())
        .map_err(checks::explain_refusal)?;
    phases::mark("sampler attached on every CPU (and off-CPU program)");
    let load_attach = started.elapsed();
    let start_boottime_ns = boottime_ns();
    let start_unix_ns = unix_ns();

    let mut procs = processes::Processes::new(modules, opts.follows());
    if pid != 0 {
        let root = procs.add_root(space, info.clone());
        // The target may have died while we loaded: nothing of it could then be recorded.
        let still_there = match procs.spaces.get_mut(root) {
            Some(s) => s.refresh(&mut procs.modules).is_ok(),
            None => false,
        };
        // The pidfd, not /proc, says whether it is still the same process: once it exited its
        // pid may already name another one, which /proc would describe and the probes would
        // sample.
        if pidfd.as_ref().is_some_and(pidfd_exited) || procfs::has_exited(pid) || !still_there {
            return Err(Error::ExitedBeforeAttach(pid));
        }
    }
    for (other, mut space, _) in others {
        // Mappings made between preflight and attach: the side-band records only start now.
        let _ = space.refresh(&mut procs.modules);
        procs.add_root(space, other);
    }
    // What the start-up checks read of every file is not needed again before symbolization
    // (only the files samples land in are read then): with `--all` that was most of the
    // profiler's memory for the whole recording.
    phases::mark("target re-read after attach");
    procs.modules.release_pages();
    // The first reading of the coverage check, once sampling runs.
    let cpu_start = coverage::read(pids.iter().copied(), boottime_ns());
    phases::mark("pages released, coverage read");
    announce(&info, opts, &spans_attached, dwarf);
    phases::mark("recording announced");
    session::ready_the_next();
    on_attached()?;

    // SAFETY: each value owns its descriptor, which stays open and unchanged while the
    // AsyncFd owns it.
    let mut ring = unsafe { AsyncFd::register(ring) }
        .map_err(|e| Error::io("polling the ring buffer", e.into()))?;
    // SAFETY: as above; the epoll descriptor lives as long as the Sideband.
    let mut sideband = unsafe { AsyncFd::register(sideband) }
        .map_err(|e| Error::io("polling the side-band records", e.into()))?;
    let pidfd = match pidfd {
        Some(fd) => Some(
            unsafe { AsyncFd::register(fd) }
                .map_err(|e| Error::io("polling the target's pidfd", e.into()))?,
        ),
        None => None,
    };
    // Several --pid: the recording ends when the last of them has exited.
    let listed = match &opts.scope {
        scope::Scope::Pids(p) if p.len() > 1 => p.clone(),
        _ => Vec::new(),
    };
    if let Some(stall) = opts.stall_consumer {
        std::thread::sleep(stall);
    }

    let mut sink = drain::Sink::new(&mut procs, &mut meta, threads, auto_targets);
    if let Some(map) = copy_sizes {
        sink.copy_sizes = Some((stack_copy::Sizes::new(opts.stack_bytes), map));
    }
    // A process that joins the scope by its exec is known from then on, so the files it maps
    // are looked at (for span probes) as they are mapped, not at its first sample.
    sink.know_execs = live.is_some();
    sink.auto_call_graph = auto_call_graph;
    sink.comm = comm;
    sink.comm_flags = profiler_common::target::FOLLOW
        | if opts.call_graph == CallGraph::Dwarf {
            profiler_common::target::DWARF
        } else {
            0
        };
    if let Some(live) = live.as_mut() {
        live.tell = true;
    }
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    // Also the drain period while the ring buffer stays below its wakeup threshold.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    // A recent end reading for the coverage check, in case the targets are gone at the stop
    // (a target that exits ends the recording): refreshed about once a second.
    let mut cpu_recent = coverage::CpuTimes::default();
    let mut ticks = 0u32;
    let mut windows = opts
        .window
        .clone()
        .map(|w| window::Cutter::new(w, start_boottime_ns, start_unix_ns));
    // From here on samples exist: a failure ends the recording early or leaves a part out,
    // and is told in the warnings, but never loses what was recorded.
    let stop_reason = loop {
        let sideband_next = sink.sideband_pace.next();
        tokio::select! {
            guard = sideband.readable_mut() => match guard {
                Ok(mut guard) => {
                    sink.drain_sideband(guard.get_inner_mut());
                    guard.clear_ready();
                    probe_new_files(&mut live, &mut session, sink.procs, &mut warnings);
                    sink.unwind_pending(Some(UNWIND_BUDGET));
                }
                Err(e) => break polling_failed("the side-band records", e, &mut warnings),
            },
            guard = ring.readable_mut() => match guard {
                Ok(mut guard) => {
                    // The kernel forces this wakeup at a target's exec and exit: the exec's
                    // own mappings are in the side-band buffers by then, and the loader's
                    // follow within a millisecond (read on the side-band pace from here).
                    // Read before the ring, so the exec's process is known with its files.
                    if sideband.get_ref().pending() {
                        sink.drain_sideband(sideband.get_mut());
                    }
                    sink.drain_ring(guard.get_inner_mut());
                    guard.clear_ready();
                    probe_new_files(&mut live, &mut session, sink.procs, &mut warnings);
                    sink.unwind_pending(Some(UNWIND_BUDGET));
                }
                Err(e) => break polling_failed("the ring buffer", e, &mut warnings),
            },
            _ = async { match sideband_next {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            } } => {
                sink.drain_sideband(sideband.get_mut());
                probe_new_files(&mut live, &mut session, sink.procs, &mut warnings);
                sink.unwind_pending(Some(UNWIND_BUDGET));
            },
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
            _ = async { match &pidfd {
                Some(fd) => { let _ = fd.readable().await; }
                None => std::future::pending().await,
            } } => break StopReason::TargetExited,
            _ = async { match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            } } => break StopReason::Duration,
            _ = async { match &opts.stop {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            } } => break StopReason::Requested,
            _ = async { match &windows {
                Some(w) => tokio::time::sleep_until(w.deadline()).await,
                None => std::future::pending().await,
            } } => if let Some(w) = windows.as_mut() {
                sink.drain_sideband(sideband.get_mut());
                sink.drain_ring(ring.get_mut());
                probe_new_files(&mut live, &mut session, sink.procs, &mut warnings);
                // Read before the last drain: every record they count is read by the cut.
                let kernel = session.counters().ok();
                sink.drain_ring(ring.get_mut());
                let attached = live.as_ref().map_or(&spans_attached, |l| &l.attached);
                w.cut(&mut sink, kernel, &session, &window_base(&info, attached, opts, &session, dwarf));
            },
            _ = tick.tick() => {
                sink.drain_sideband(sideband.get_mut());
                sink.drain_ring(ring.get_mut());
                probe_new_files(&mut live, &mut session, sink.procs, &mut warnings);
                probe_new_allocators(&mut alloc_probes, &mut session, sink.procs, &mut warnings);
                sink.unwind_pending(Some(UNWIND_BUDGET));
                if !listed.is_empty() && listed.iter().all(|&p| procfs::has_exited(p)) {
                    break StopReason::TargetExited;
                }
                let lost = session.counters().map(|c| c.lost_ringbuf_full).unwrap_or(0);
                on_status(Status { elapsed: started.elapsed().saturating_sub(load_attach), samples: sink.samples.len() as u64, lost });
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(10) {
                    cpu_recent = coverage::read_end(sink.procs.pids().collect::<Vec<_>>());
                }
            }
        }
    };

    if opts.signals_after_stop {
        crate::interrupt::forward_to(opts.forward_signals_to);
        if let Err(e) = crate::interrupt::install(crate::interrupt::Phase::Symbolizing) {
            warnings.push(format!(
                "signals after the recording could not be caught ({e}): a Ctrl-C now kills the profiler"
            ));
        } else {
            // One that came since the loop's last poll waits in tokio's stream, which nothing
            // reads any more: it goes to the new handler.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            for (stream, sig) in [
                (&mut sigint, libc::SIGINT),
                (&mut sigterm, libc::SIGTERM),
                (&mut sighup, libc::SIGHUP),
            ] {
                if let std::task::Poll::Ready(Some(())) = stream.poll_recv(&mut cx) {
                    // SAFETY: raise(3) with a signal whose handler was just installed.
                    unsafe { libc::raise(sig) };
                }
            }
        }
    }

    // A stop that came after a boundary, before its cut (the cut waits for the records
    // taken before the boundary to arrive; a busy machine delays it more): the windows
    // before the stop are cut first, so none spans more than one period.
    // The stop's time is taken once: cuts slower than a period on a loaded machine must not
    // keep the stop from ever reaching the detach (the cut after it takes what is left).
    let stop_ns = boottime_ns();
    if let Some(w) = windows.as_mut() {
        while w.ends_by(stop_ns) {
            tokio::time::sleep_until(w.deadline()).await;
            sink.drain_sideband(sideband.get_mut());
            let kernel = session.counters().ok();
            sink.drain_ring(ring.get_mut());
            let attached = live.as_ref().map_or(&spans_attached, |l| &l.attached);
            w.cut(
                &mut sink,
                kernel,
                &session,
                &window_base(&info, attached, opts, &session, dwarf),
            );
        }
    }

    // The second reading, while sampling still runs: samples after it are not compared. When
    // the targets are already gone, the last reading taken while they ran stands in.
    let mut cpu_end = coverage::read_end(sink.procs.pids().collect::<Vec<_>>());
    if !cpu_start
        .threads
        .keys()
        .any(|t| cpu_end.threads.contains_key(t))
    {
        cpu_end = cpu_recent;
    }
    // Detach first so the counters are final, then take what is still in the buffers.
    let alloc_runs = alloc_probes
        .as_mut()
        .map(|p| p.stop(&mut session.ebpf))
        .unwrap_or_default();
    let lock_kernel = lock_probes.as_ref().is_some_and(locks::LockProbes::kernel);
    let lock_runs = lock_probes
        .as_mut()
        .map(|p| p.stop(&mut session.ebpf))
        .unwrap_or_default();
    if let Some(hold) = opts.hold_before_detach {
        tokio::time::sleep(hold).await;
    }
    let run_stats = kept(session.stop(), "detaching the programs", &mut warnings);
    let end_boottime_ns = boottime_ns();
    // kallsyms names our programs' code in kernel stacks only while they are loaded: they
    // are detached, not yet unloaded (the session holds them until it drops). One reading
    // serves the kernel locks' names too.
    let (bpf_programs, kernel_data) = {
        let kallsyms = crate::symbolize::kallsyms::Kallsyms::read();
        let data = lock_kernel.then(|| locks::KernelSymbols::new(&kallsyms));
        (kallsyms.bpf_programs(), data)
    };
    sink.drain_ring(ring.get_mut());
    sink.finish_sideband(sideband.get_mut());
    // A boundary the stop crossed while detaching (which takes a while, longer on a busy
    // machine): its window is cut now, so none spans more than one period. Every record is
    // read and every side-band record applied by now: nothing to wait for. Its counters are
    // the final ones, so the last window, from that boundary to the end, counts none.
    if let Some(w) = windows.as_mut() {
        while w.ends_by(end_boottime_ns) {
            let kernel = session.counters().ok();
            let attached = live.as_ref().map_or(&spans_attached, |l| &l.attached);
            w.cut(
                &mut sink,
                kernel,
                &session,
                &window_base(&info, attached, opts, &session, dwarf),
            );
        }
    }
    if let Some(hold) = opts.hold_after_drain {
        std::thread::sleep(hold);
    }
    sink.unwind_pending(None);
    let lock_waits = lock_probes
        .is_some()
        .then(|| sink.take_lock_waits(end_boottime_ns));
    // Intervals still open: those of threads in DWARF mode are unwound from the copies the
    // sink holds.
    let off_cpu_open = opts.off_cpu.map(|_| {
        let mut open = offcpu::read_open(&session.ebpf, end_boottime_ns, session.off_cpu_min_ns);
        if let Ok(open) = open.as_mut() {
            sink.unwind_open_off_cpu(open);
        }
        open
    });
    let drain::Sink {
        targets_refused,
        off_cpu_stacks_unmatched,
        mut samples,
        span_events,
        off_cpu: off_cpu_events,
        mut allocs,
        unwinder,
        mut threads,
        malformed,
        ..
    } = sink;
    for s in samples
        .iter_mut()
        .filter(|s| !matches!(s.user, RawStack::Id(id) if id & unwind::UNWOUND_ID_BIT != 0))
    {
        s.space = procs.space_at(s.pid, s.timestamp_ns);
    }
    for p in procs.pids().collect::<Vec<_>>() {
        if !procfs::has_exited(p) {
            threads.extend(procfs::thread_names(p));
        }
    }

    // Windows: the threads' CPU time covers the whole recording, the samples only the last
    // window, so the comparison would only say that samples are missing.
    let coverage = (!cpu_start.threads.is_empty() && windows.is_none()).then(|| {
        let c = coverage::compare(&cpu_start, &cpu_end, &samples, opts.frequency_hz);
        warnings.extend(coverage::warning(&c));
        c
    });
    let mut counters = kept(
        session.counters(),
        "reading the kernel's counters (losses unknown)",
        &mut warnings,
    );
    counters.received = samples.len() as u64;
    counters.span_events_received = span_events.len() as u64;
    add_user_losses(&mut counters, &procs, malformed, targets_refused);
    counters.off_cpu_stacks_unmatched = off_cpu_stacks_unmatched;
    let off_cpu = match off_cpu_open {
        Some(open) => {
            counters.off_cpu_events_received = off_cpu_events.len() as u64;
            let data = open.and_then(|open| {
                off_cpu_data(
                    &session.ebpf,
                    &mut procs,
                    off_cpu_events,
                    open,
                    end_boottime_ns,
                    session.off_cpu_min_ns,
                    session.off_cpu_interval_min_ns,
                    opts.off_cpu.map_or(1, |o| o.sample_every),
                )
            });
            match data {
                Ok(mut data) => {
                    (data.bpf_run_count, data.bpf_run_time_ns) = run_stats.off_cpu;
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
    for a in &mut allocs {
        a.space = procs.space_at(a.pid, a.timestamp_ns);
    }
    let off_cpu_stacks = off_cpu
        .iter()
        .flat_map(|o| o.totals.iter().chain(&o.intervals))
        .flat_map(|o| [&o.user, &o.kernel]);
    let mut stacks = kept(
        session.stacks(
            samples
                .iter()
                .flat_map(|s| [&s.user, &s.kernel])
                .chain(off_cpu_stacks)
                .chain(allocs.iter().map(|a| &a.user))
                .chain(
                    lock_waits
                        .iter()
                        .flat_map(|(w, _)| w.iter().map(|w| &w.kernel)),
                ),
        ),
        "reading the kernel's stack map (stacks left empty)",
        &mut warnings,
    );
    stacks.extend(unwinder.stacks.into_iter().map(|(frames, id)| (id, frames)));
    let alloc = match (opts.alloc, alloc_probes) {
        (Some(a), Some(probes)) => {
            alloc::restore_callers(&mut allocs, &stacks);
            let live_unmatched = kept(
                alloc::mark_live(&session.ebpf, &mut allocs),
                "reading the live allocations (none counted as in use)",
                &mut warnings,
            );
            let counters = kept(
                alloc::read_counters(&session.ebpf),
                "reading the allocation counters (losses unknown)",
                &mut warnings,
            );
            Some(alloc::RawAllocData {
                sample_bytes: a.sample_bytes,
                allocs,
                counters,
                live_unmatched,
                bpf_run_count: alloc_runs.0,
                bpf_run_time_ns: alloc_runs.1,
                files: probes.files,
            })
        }
        _ => None,
    };
    let locks = match lock_waits {
        Some((waits, unfinished)) => {
            // Each address looked up once, named or not.
            let mut looked: HashMap<(u32, u64), Option<String>> = HashMap::new();
            let kallsyms = kernel_data.as_ref();
            for w in &waits {
                looked.entry((w.pid, w.uaddr)).or_insert_with(|| {
                    if w.kernel_flags.is_some() {
                        kallsyms.and_then(|k| k.data_at(w.uaddr))
                    } else {
                        locks::symbol_at(&mut procs, w.pid, w.begin_ns, w.uaddr)
                    }
                });
            }
            let symbols = looked
                .into_iter()
                .filter_map(|(k, v)| Some((k, v?)))
                .collect();
            let counters = kept(
                locks::read_counters(&session.ebpf),
                "reading the lock counters (losses unknown)",
                &mut warnings,
            );
            Some(locks::RawLockData {
                waits,
                unfinished,
                symbols,
                counters,
                bpf_run_count: lock_runs.futex.0,
                bpf_run_time_ns: lock_runs.futex.1,
                kernel: lock_kernel,
                kernel_bpf_run_count: lock_runs.kernel.0,
                kernel_bpf_run_time_ns: lock_runs.kernel.1,
            })
        }
        None => None,
    };
    let (bpf_run_count, bpf_run_time_ns) = run_stats.sampler;

    let spans_attached = match live {
        Some(live) => {
            for f in live.unattached() {
                warnings.push(format!(
                    "--span-fn {f}: no file mapped in the scope defines it, no span of it recorded"
                ));
            }
            live.attached
        }
        None => spans_attached,
    };

    let mut raw = RawRecording {
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
        alloc,
        locks,
        coverage,
        threads,
        start_boottime_ns,
        end_boottime_ns,
        start_unix_ns,
        frequency_hz: opts.frequency_hz,
        stop_reason,
        load_attach,
        bpf_run_count,
        bpf_run_time_ns,
        cpus: session.cpus.len() as u32,
        warnings,
        bpf_programs,
    };
    if let Some(w) = windows {
        w.finish(&mut raw);
    }
    Ok(raw)
}

/// What every window's recording shares with the whole recording.
fn window_base<'a>(
    info: &'a ProcessInfo,
    spans_attached: &'a spans::Attached,
    opts: &RecordOptions,
    session: &session::Session,
    dwarf: bool,
) -> window::Base<'a> {
    window::Base {
        info,
        spans_attached,
        call_graph: if dwarf {
            CallGraph::Dwarf
        } else {
            CallGraph::Fp
        },
        stack_bytes: opts.stack_bytes,
        frequency_hz: opts.frequency_hz,
        cpus: session.cpus.len() as u32,
        off_cpu: opts
            .off_cpu
            .is_some()
            .then_some((session.off_cpu_min_ns, session.off_cpu_interval_min_ns)),
    }
}

/// Span probes for the files processes in scope mapped since the last look; a failure is
/// told once per file in the warnings and the recording goes on without that file's spans.
fn probe_new_files(
    live: &mut Option<spans::LiveProbes>,
    session: &mut session::Session,
    procs: &processes::Processes,
    warnings: &mut Vec<String>,
) {
    if let Some(live) = live.as_mut()
        && let Err(e) = live.attach_new(&mut session.ebpf, &procs.modules)
    {
        warnings.push(format!("{e}: spans of that file left out"));
    }
}

/// Allocator probes for the processes that appeared (or mapped another allocator) since the
/// last look; a failure is told in the warnings and the others are still probed.
fn probe_new_allocators(
    probes: &mut Option<alloc::AllocProbes>,
    session: &mut session::Session,
    procs: &processes::Processes,
    warnings: &mut Vec<String>,
) {
    if let Some(p) = probes.as_mut()
        && let Err(e) = p.update(&mut session.ebpf, procs)
    {
        let line = format!("{e}: allocations of that process left out");
        if !warnings.contains(&line) {
            warnings.push(line);
        }
    }
}

/// A descriptor the loop waits on failed: the recording ends there, and says why.
fn polling_failed(what: &str, e: std::io::Error, warnings: &mut Vec<String>) -> StopReason {
    warnings.push(format!(
        "polling {what} failed ({e}): the recording stopped early"
    ));
    StopReason::Error
}

/// The value of a step after attach, or its default with the failure kept as a warning.
fn kept<T: Default>(r: Result<T>, what: &str, warnings: &mut Vec<String>) -> T {
    r.unwrap_or_else(|e| {
        warnings.push(format!("{what}: {e}"));
        T::default()
    })
}

/// Unwinding time per drain once the buffers are empty: reading a module's unwind tables
/// takes milliseconds, and records of short-lived processes must not wait behind them.
const UNWIND_BUDGET: Duration = Duration::from_millis(10);

/// The files span probes may go into: what the target maps, and under `run` the
/// executable it is about to run.
fn probe_modules(
    space: &AddressSpace,
    modules: &modules::ModuleStore,
    exe: Option<modules::ModuleId>,
) -> (Vec<spans::ProbeModule>, Vec<modules::Readable>) {
    let mut ids: Vec<modules::ModuleId> = space.mappings.iter().filter_map(|m| m.module).collect();
    ids.extend(exe);
    ids.sort_unstable();
    ids.dedup();
    // The readables keep the descriptors behind `fd_path` open while probes are attached.
    ids.into_iter()
        .filter_map(|id| {
            let readable = modules.readable_path(id)?;
            let file = modules.get(id)?;
            let probe = spans::ProbeModule {
                path: file.path.clone(),
                fd_path: readable.path().to_path_buf(),
                map: file.map.clone(),
            };
            Some((probe, readable))
        })
        .unzip()
}

/// Scripts (and tests) wait for this line to know the probes are live.
fn announce(info: &ProcessInfo, opts: &RecordOptions, spans: &spans::Attached, dwarf: bool) {
    let mut what = format!("at {} Hz", opts.frequency_hz);
    if !spans.abi_modules.is_empty() {
        what += &format!(", span probes in {}", spans.abi_modules.join(", "));
    }
    if !spans.span_fns.is_empty() {
        what += &format!(", --span-fn {}", spans.span_fns.join(", "));
    }
    if dwarf {
        what += &format!(
            ", DWARF call graph ({} of stack)",
            crate::model::stack_size_text(opts.stack_bytes)
        );
    }
    if opts.off_cpu.is_some() {
        what += ", off-CPU";
    }
    if let Some(a) = opts.alloc {
        what += &format!(", allocations (1 sample per {} bytes)", a.sample_bytes);
    }
    if opts.locks {
        what += ", lock waits";
    }
    let whom = match &opts.scope {
        scope::Scope::Pids(p) if p.len() > 1 => format!("pids {}", opts.scope.name()),
        scope::Scope::Pids(_) => format!("pid {} ({})", info.pid, info.comm),
        scope::Scope::All => "every process of this PID namespace".into(),
        scope::Scope::Cgroup(c) => format!("cgroup {}", c.relative),
        scope::Scope::Comm(c) => format!("processes named /{}/", c.pattern),
    };
    // A server's recordings are stopped through `stop`, not by Ctrl-C; and a server may run
    // with stderr closed, where eprintln! would panic.
    let how = if opts.stop.is_some() {
        ""
    } else {
        "; Ctrl-C to stop"
    };
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "profiler: recording {whom} {what}{how}");
}

fn forward(pid: u32, signal: libc::c_int) {
    // SAFETY: plain kill(2); a command that already exited makes it fail harmlessly.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Everything off-CPU, after the program is detached: the kernel's sums, plus the intervals
/// they had no room for (or whose user stack was copied) and those still open at the end.
#[allow(clippy::too_many_arguments)]
fn off_cpu_data(
    ebpf: &aya::Ebpf,
    procs: &mut processes::Processes,
    mut events: Vec<(offcpu::RawOffCpu, bool)>,
    open: Vec<offcpu::RawOffCpu>,
    end_ns: u64,
    min_ns: u64,
    interval_min_ns: u64,
    sample_every: u32,
) -> Result<offcpu::RawOffCpuData> {
    // The kernel's sums and the intervals still open are placed in the address space of the
    // end; intervals in that of their beginning (an exec since must not move them).
    let mut totals = offcpu::read_totals(ebpf)?;
    for o in &mut totals {
        o.space = procs.space_at(o.pid, end_ns);
    }
    // A copied user stack was unwound in the address space it was taken in.
    for (e, _) in events.iter_mut().filter(|(e, _)| !e.copied) {
        e.space = procs.space_at(e.pid, e.begin_ns);
    }
    let mut intervals = offcpu::split_events(events, interval_min_ns, &mut totals);
    for mut open in open {
        // A copied user stack was unwound in the address space of the interval's begin.
        if !open.copied {
            open.space = procs.space_at(open.pid, end_ns);
        }
        if open.total_ns >= interval_min_ns {
            intervals.push(open.clone());
        }
        totals.push(open);
    }
    // Each recorded interval stands for `sample_every` switch-outs: the sums, never the
    // intervals of the timeline, are scaled, so expected totals equal the true ones.
    if sample_every > 1 {
        let weight = u64::from(sample_every);
        for t in &mut totals {
            t.total_ns = t.total_ns.saturating_mul(weight);
            t.count = t.count.saturating_mul(weight);
        }
    }
    Ok(offcpu::RawOffCpuData {
        min_ns,
        interval_min_ns,
        sample_every,
        totals,
        intervals,
        ..Default::default()
    })
}
