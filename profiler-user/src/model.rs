//! The profile data model: one [`Recording`] holds everything every output needs, with no
//! reference to the live target, so outputs can be regenerated anywhere (`profiler report`).
//!
//! Its shape follows pprof's (modules → locations → lines → functions, stacks of locations,
//! timestamped samples) because pprof, Perfetto and speedscope all want interned frames, and
//! timestamps per sample are what a timeline (Perfetto, span attribution) needs. The structs
//! are prost messages: the recording file is this model, serialized.
use prost::Message;

/// Bumped whenever a field changes meaning or the file's layout changes; readers refuse other
/// versions. 2: the checked header of `outputs::recording`.
pub const FORMAT_VERSION: u32 = 2;

#[derive(Clone, PartialEq, Message)]
pub struct Recording {
    #[prost(uint32, tag = "1")]
    pub format_version: u32,
    #[prost(message, optional, tag = "2")]
    pub meta: Option<Meta>,
    #[prost(message, repeated, tag = "3")]
    pub modules: Vec<Module>,
    #[prost(message, repeated, tag = "4")]
    pub functions: Vec<Function>,
    #[prost(message, repeated, tag = "5")]
    pub locations: Vec<Location>,
    #[prost(message, repeated, tag = "6")]
    pub stacks: Vec<Stack>,
    #[prost(message, repeated, tag = "7")]
    pub threads: Vec<Thread>,
    #[prost(message, repeated, tag = "8")]
    pub samples: Vec<Sample>,
    #[prost(message, optional, tag = "9")]
    pub counters: Option<Counters>,
    #[prost(message, repeated, tag = "10")]
    pub processes: Vec<Process>,
    #[prost(message, repeated, tag = "11")]
    pub spans: Vec<Span>,
    /// When each span ran on which thread (enter → exit).
    #[prost(message, repeated, tag = "12")]
    pub span_runs: Vec<SpanRun>,
    #[prost(message, optional, tag = "13")]
    pub span_info: Option<SpanInfo>,
    /// `--off-cpu`: time off CPU summed per thread, stack, span and state.
    #[prost(message, repeated, tag = "14")]
    pub off_cpu: Vec<OffCpu>,
    /// Off-CPU intervals long enough to be kept one by one (timelines).
    #[prost(message, repeated, tag = "15")]
    pub off_cpu_intervals: Vec<OffCpuInterval>,
    /// Present when off-CPU time was recorded.
    #[prost(message, optional, tag = "16")]
    pub off_cpu_info: Option<OffCpuInfo>,
    /// `--alloc`: the sampled allocations.
    #[prost(message, repeated, tag = "17")]
    pub allocs: Vec<Alloc>,
    /// Present when allocations were recorded.
    #[prost(message, optional, tag = "18")]
    pub alloc_info: Option<AllocInfo>,
    /// `--locks`: futex waits summed per thread, stack, span and address.
    #[prost(message, repeated, tag = "19")]
    pub lock_waits: Vec<LockWait>,
    /// Present when lock waits were recorded.
    #[prost(message, optional, tag = "20")]
    pub lock_info: Option<LockInfo>,
}

/// Time one thread waited on one futex (a lock, or a condition) from one stack, in one span.
#[derive(Clone, PartialEq, Message)]
pub struct LockWait {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint32, tag = "2")]
    pub tid: u32,
    /// Index into `stacks`: the waiter's stack at its futex call.
    #[prost(uint32, tag = "3")]
    pub stack: u32,
    #[prost(uint64, tag = "4")]
    pub span: u64,
    /// The futex word's address in the process.
    #[prost(uint64, tag = "5")]
    pub address: u64,
    /// The static variable there (`big_lock`), empty when no symbol names it.
    #[prost(string, tag = "6")]
    pub symbol: String,
    #[prost(uint64, tag = "7")]
    pub total_ns: u64,
    /// Waits summed.
    #[prost(uint64, tag = "8")]
    pub count: u64,
    /// CLOCK_BOOTTIME nanoseconds: the first wait's begin and the last one's end.
    #[prost(uint64, tag = "9")]
    pub first_ns: u64,
    #[prost(uint64, tag = "10")]
    pub last_ns: u64,
    /// A kernel lock wait: the lock's kind ("mutex", "rwsem write"); empty for a futex wait.
    /// Then `address` is a kernel address, `symbol` the kernel data symbol there, and the
    /// stack has the kernel frames on top.
    #[prost(string, tag = "11")]
    pub kernel_kind: String,
}

#[derive(Clone, PartialEq, Message, serde::Serialize)]
pub struct LockInfo {
    /// Futex waits of target threads the kernel saw.
    #[prost(uint64, tag = "1")]
    pub waits: u64,
    /// Waits not sent (ring buffer full) or not remembered until their end (map full).
    #[prost(uint64, tag = "2")]
    pub lost: u64,
    /// Waits whose end never came (still waiting at the end, or the end was lost): counted
    /// up to the end of the recording.
    #[prost(uint64, tag = "3")]
    pub unfinished: u64,
    /// Waits whose user stack could not be copied.
    #[prost(uint64, tag = "4")]
    pub stack_errors: u64,
    #[prost(uint64, tag = "5")]
    pub bpf_run_count: u64,
    #[prost(uint64, tag = "6")]
    pub bpf_run_time_ns: u64,
    /// Cut by `report --from/--to`: sums of the waits that overlap the window, whole.
    #[prost(bool, tag = "7")]
    pub windowed: bool,
    /// Kernel lock contention recorded (the kernel has `lock:contention_begin/end`).
    #[prost(bool, tag = "8")]
    pub kernel: bool,
    /// Kernel lock contentions of target threads the kernel saw.
    #[prost(uint64, tag = "9")]
    pub kernel_waits: u64,
    /// Kernel lock waits not sent (ring buffer full), not remembered (map full), whose end
    /// was missed, or still going on at the end (only the end sends a wait).
    #[prost(uint64, tag = "10")]
    pub kernel_lost: u64,
    /// Kernel lock waits whose user stack could not be copied or kernel stack not kept.
    #[prost(uint64, tag = "11")]
    pub kernel_stack_errors: u64,
    /// Run-time statistics of the two kernel lock programs.
    #[prost(uint64, tag = "12")]
    pub kernel_bpf_run_count: u64,
    #[prost(uint64, tag = "13")]
    pub kernel_bpf_run_time_ns: u64,
    /// Kernel lock contentions inside a futex wait of the same thread, left out: that
    /// wait's time has them already.
    #[prost(uint64, tag = "14")]
    pub kernel_in_futex: u64,
    /// `kernel_lost` by cause, so that a loss says which it was: not sent (ring buffer
    /// full), not remembered (map full), its end missed (a second begin of the same thread
    /// and lock came first), still going on when the programs were detached.
    #[prost(uint64, tag = "15")]
    pub kernel_lost_ringbuf: u64,
    #[prost(uint64, tag = "16")]
    pub kernel_waits_full: u64,
    #[prost(uint64, tag = "17")]
    pub kernel_ends_missed: u64,
    #[prost(uint64, tag = "18")]
    pub kernel_in_flight: u64,
    /// Futex waits whose user stack unwound only partly (marked `[unwind: truncated]`): the
    /// copy was too short, or unwinding information was missing.
    #[prost(uint64, tag = "19")]
    pub stacks_truncated: u64,
    /// Futex waits without a user stack: no user registers, or the copy failed.
    #[prost(uint64, tag = "20")]
    pub stacks_lost: u64,
    /// The same for kernel lock waits; `kernel_stacks_lost` also counts those whose end ran
    /// nested in another lock program (the copy's record was busy).
    #[prost(uint64, tag = "21")]
    pub kernel_stacks_truncated: u64,
    #[prost(uint64, tag = "22")]
    pub kernel_stacks_lost: u64,
}

/// One sampled allocation (`--alloc`). It stands for more than itself: see
/// `crate::alloc::scale`, with `AllocInfo::sample_bytes`.
#[derive(Clone, PartialEq, Message)]
pub struct Alloc {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint32, tag = "2")]
    pub tid: u32,
    /// Index into `stacks`: the allocator's entry, the allocating call above it.
    #[prost(uint32, tag = "3")]
    pub stack: u32,
    /// Innermost span running on the thread, 0 for none.
    #[prost(uint64, tag = "4")]
    pub span: u64,
    /// CLOCK_BOOTTIME nanoseconds, at the allocator's entry.
    #[prost(uint64, tag = "5")]
    pub timestamp_ns: u64,
    /// Bytes asked for.
    #[prost(uint64, tag = "6")]
    pub size: u64,
    /// Not freed while recorded (nor before its process exited): a leak candidate.
    #[prost(bool, tag = "7")]
    pub live: bool,
    /// False when the kernel had no room to watch for its free (then never `live`).
    #[prost(bool, tag = "8")]
    pub tracked: bool,
    /// The allocator function: malloc, calloc, realloc, aligned_alloc, posix_memalign, valloc.
    #[prost(string, tag = "9")]
    pub function: String,
}

#[derive(Clone, PartialEq, Message, serde::Serialize)]
pub struct AllocInfo {
    /// Mean bytes between samples (`--alloc-sample`); 1: every allocation.
    #[prost(uint64, tag = "1")]
    pub sample_bytes: u64,
    /// Exact counts from the kernel: allocator calls of the targets and the bytes they asked
    /// for, frees, and calls nested in another allocator call (counted once, as the outer).
    #[prost(uint64, tag = "2")]
    pub calls: u64,
    #[prost(uint64, tag = "3")]
    pub bytes: u64,
    #[prost(uint64, tag = "4")]
    pub frees: u64,
    #[prost(uint64, tag = "5")]
    pub nested: u64,
    /// Allocations sampled, and what became of them.
    #[prost(uint64, tag = "6")]
    pub sampled: u64,
    #[prost(uint64, tag = "7")]
    pub received: u64,
    #[prost(uint64, tag = "8")]
    pub lost_ringbuf: u64,
    /// Lost between entry and return: no room to remember the call.
    #[prost(uint64, tag = "9")]
    pub threads_full: u64,
    /// Sent without watching for their free (no room): never counted as in use.
    #[prost(uint64, tag = "10")]
    pub untracked: u64,
    /// Sampled calls that returned no memory.
    #[prost(uint64, tag = "11")]
    pub failed: u64,
    #[prost(uint64, tag = "12")]
    pub sampled_frees: u64,
    /// Run-time statistics of the three allocator programs.
    #[prost(uint64, tag = "13")]
    pub bpf_run_count: u64,
    #[prost(uint64, tag = "14")]
    pub bpf_run_time_ns: u64,
    /// Files whose allocator was probed.
    #[prost(string, repeated, tag = "15")]
    pub files: Vec<String>,
    /// Allocations cut out by `report --from/--to`: the exact counts are the whole recording's.
    #[prost(bool, tag = "16")]
    pub windowed: bool,
}

/// Time one thread spent off CPU, leaving it from one stack inside one span.
#[derive(Clone, PartialEq, Message)]
pub struct OffCpu {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint32, tag = "2")]
    pub tid: u32,
    /// Index into `stacks`: where the thread was when it left the CPU.
    #[prost(uint32, tag = "3")]
    pub stack: u32,
    /// Innermost span running on the thread, 0 for none.
    #[prost(uint64, tag = "4")]
    pub span: u64,
    /// Preempted while runnable (waiting for a CPU), not blocked.
    #[prost(bool, tag = "5")]
    pub runnable: bool,
    #[prost(uint64, tag = "6")]
    pub total_ns: u64,
    /// Intervals summed.
    #[prost(uint64, tag = "7")]
    pub count: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct OffCpuInterval {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(uint32, tag = "2")]
    pub tid: u32,
    #[prost(uint32, tag = "3")]
    pub stack: u32,
    #[prost(uint64, tag = "4")]
    pub span: u64,
    #[prost(bool, tag = "5")]
    pub runnable: bool,
    /// CLOCK_BOOTTIME nanoseconds.
    #[prost(uint64, tag = "6")]
    pub begin_ns: u64,
    #[prost(uint64, tag = "7")]
    pub end_ns: u64,
}

#[derive(Clone, PartialEq, Message, serde::Serialize)]
pub struct OffCpuInfo {
    /// Intervals shorter than this were not counted (`--off-cpu-min`).
    #[prost(uint64, tag = "1")]
    pub min_ns: u64,
    /// Intervals at least this long are in `off_cpu_intervals` (`--off-cpu-interval-min`).
    #[prost(uint64, tag = "2")]
    pub interval_min_ns: u64,
    /// The sums were rebuilt from the kept intervals for a time window (`report --from/--to`):
    /// shorter intervals are missing from them.
    #[prost(bool, tag = "3")]
    pub windowed: bool,
    /// Kernel BPF run-time statistics of the sched_switch program: it runs on every context
    /// switch of the machine, the targets' or not.
    #[prost(uint64, tag = "4")]
    pub bpf_run_count: u64,
    #[prost(uint64, tag = "5")]
    pub bpf_run_time_ns: u64,
    /// `--off-cpu-sample N`: 1 switch-out in N was recorded, and every sum here already
    /// counts each recorded interval N times; the intervals themselves are real ones. 0 in
    /// recordings made before the option existed: every switch-out.
    #[prost(uint32, tag = "6")]
    pub sample_every: u32,
}

/// A span: an application-defined operation (request, query, task) or a `--span-fn` call.
#[derive(Clone, PartialEq, Message, serde::Serialize)]
pub struct Span {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// 0 for a root span.
    #[prost(uint64, tag = "2")]
    pub parent: u64,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub target: String,
    #[prost(string, tag = "5")]
    pub file: String,
    #[prost(uint32, tag = "6")]
    pub line: u32,
    /// CLOCK_BOOTTIME nanoseconds.
    #[prost(uint64, tag = "7")]
    pub begin_ns: u64,
    #[prost(uint64, tag = "8")]
    pub end_ns: u64,
    /// No end was recorded: closed at the end of the recording.
    #[prost(bool, tag = "9")]
    pub incomplete: bool,
    /// Threads it ran on, in order of first entry.
    #[prost(uint32, repeated, tag = "10")]
    pub tids: Vec<u32>,
    /// CPU samples taken while it was the innermost running span of its thread.
    #[prost(uint64, tag = "11")]
    pub samples: u64,
    /// 0 for a root span, 1 for its children, ...
    #[prost(uint32, tag = "12")]
    pub depth: u32,
    #[prost(uint32, tag = "13")]
    pub pid: u32,
}

impl Span {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.begin_ns)
    }
}

#[derive(Clone, PartialEq, Message)]
pub struct SpanRun {
    #[prost(uint64, tag = "1")]
    pub span: u64,
    #[prost(uint32, tag = "2")]
    pub tid: u32,
    #[prost(uint64, tag = "3")]
    pub begin_ns: u64,
    #[prost(uint64, tag = "4")]
    pub end_ns: u64,
    #[prost(uint32, tag = "5")]
    pub pid: u32,
}

/// How span events matched up, and what was traced.
#[derive(Clone, PartialEq, Message, serde::Serialize)]
pub struct SpanInfo {
    /// Ends of spans whose begin was never seen (began before the recording, or lost).
    #[prost(uint64, tag = "1")]
    pub unmatched_ends: u64,
    /// Exits without a matching enter on that thread.
    #[prost(uint64, tag = "2")]
    pub unmatched_exits: u64,
    /// Begins of an id already open (the program reused an id).
    #[prost(uint64, tag = "3")]
    pub duplicate_begins: u64,
    /// Modules whose probe ABI was traced.
    #[prost(string, repeated, tag = "4")]
    pub abi_modules: Vec<String>,
    /// `--span-fn` probes.
    #[prost(string, repeated, tag = "5")]
    pub span_fns: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Meta {
    /// The process the user asked for.
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(string, repeated, tag = "2")]
    pub command: Vec<String>,
    #[prost(string, tag = "3")]
    pub comm: String,
    /// CLOCK_BOOTTIME, the clock of every sample timestamp.
    #[prost(uint64, tag = "4")]
    pub start_boottime_ns: u64,
    #[prost(uint64, tag = "5")]
    pub end_boottime_ns: u64,
    /// Wall clock at the start, to name things for humans.
    #[prost(uint64, tag = "6")]
    pub start_unix_ns: u64,
    #[prost(uint64, tag = "7")]
    pub frequency_hz: u64,
    #[prost(string, tag = "8")]
    pub stop_reason: String,
    #[prost(string, tag = "9")]
    pub kernel_release: String,
    #[prost(string, tag = "10")]
    pub profiler_version: String,
    /// From the start of loading the eBPF object to the last perf event attached.
    #[prost(uint64, tag = "11")]
    pub load_attach_ns: u64,
    /// Kernel BPF run-time statistics of the sampling program over the recording.
    #[prost(uint64, tag = "12")]
    pub bpf_run_count: u64,
    #[prost(uint64, tag = "13")]
    pub bpf_run_time_ns: u64,
    #[prost(uint32, tag = "14")]
    pub cpus: u32,
    /// Path of the target's main executable.
    #[prost(string, tag = "15")]
    pub exe: String,
    /// Problems the user should know about (stripped binary, lost samples, ...).
    #[prost(string, repeated, tag = "16")]
    pub warnings: Vec<String>,
    /// `fp` or `dwarf`: how user stacks were walked.
    #[prost(string, tag = "17")]
    pub call_graph: String,
    /// DWARF: bytes of user stack copied per sample at most.
    #[prost(uint32, tag = "18")]
    pub stack_bytes: u32,
    #[prost(message, optional, tag = "19")]
    pub unwind: Option<UnwindInfo>,
    /// Samples of the targets against their own CPU time; None when it could not be read.
    #[prost(message, optional, tag = "20")]
    pub coverage: Option<Coverage>,
    /// Cut to a `report --from/--to` window: the samples, spans and off-CPU intervals are,
    /// while the kernel's counters and `coverage` have no times and cover the whole recording.
    #[prost(bool, tag = "21")]
    pub window_cut: bool,
}

/// The coverage check (`collect::coverage`): threads alive at the start and at the end of
/// sampling, their CPU time from schedstat, and their samples between the two readings.
#[derive(Clone, PartialEq, Message, serde::Serialize)]
pub struct Coverage {
    /// Nanoseconds on CPU of the compared threads.
    #[prost(uint64, tag = "1")]
    pub cpu_ns: u64,
    /// Their samples.
    #[prost(uint64, tag = "2")]
    pub sampled: u64,
    /// `cpu_ns` / sampling period: what the clock should have sampled.
    #[prost(uint64, tag = "3")]
    pub expected: u64,
    /// Threads compared.
    #[prost(uint32, tag = "4")]
    pub threads: u32,
    /// Threads born or ended between the readings: left out, samples and CPU time alike.
    #[prost(uint32, tag = "5")]
    pub threads_left_out: u32,
    /// Process-wide, ended threads included: CPU time of the target processes alive at both
    /// readings (`/proc/PID/stat` utime + stime, to the clock tick), their samples, and what
    /// that CPU time should have given.
    #[prost(uint64, tag = "6")]
    pub process_cpu_ns: u64,
    #[prost(uint64, tag = "7")]
    pub process_sampled: u64,
    #[prost(uint64, tag = "8")]
    pub process_expected: u64,
}

/// What DWARF unwinding in userspace cost and found.
#[derive(Clone, PartialEq, Message, serde::Serialize)]
pub struct UnwindInfo {
    #[prost(uint64, tag = "1")]
    pub samples: u64,
    /// Stacks that ended before a thread's entry point.
    #[prost(uint64, tag = "2")]
    pub truncated: u64,
    #[prost(uint64, tag = "3")]
    pub total_ns: u64,
    /// Stack bytes above `sp` that complete unwinds read: median, 99th percentile, largest.
    #[prost(uint32, tag = "4")]
    pub stack_bytes_p50: u32,
    #[prost(uint32, tag = "5")]
    pub stack_bytes_p99: u32,
    #[prost(uint32, tag = "6")]
    pub stack_bytes_max: u32,
    /// Of `total_ns`, reading and indexing the modules' unwind tables (once per module).
    #[prost(uint64, tag = "7")]
    pub load_ns: u64,
    /// Stack bytes the kernel copied, all samples together: each thread's copy is sized to
    /// its recent unwinds (`collect::stack_copy`).
    #[prost(uint64, tag = "8")]
    pub copied_bytes: u64,
    /// Stacks that ran off a copy that sizing had cut short of `--stack-size` (or stopped at
    /// a stack top remembered wrongly).
    #[prost(uint64, tag = "9")]
    pub out_of_sized_copy: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Process {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(string, tag = "2")]
    pub comm: String,
    #[prost(string, repeated, tag = "3")]
    pub command: Vec<String>,
    #[prost(string, tag = "4")]
    pub exe: String,
    /// The followed process that started it; 0 for the process the recording began on.
    #[prost(uint32, tag = "5")]
    pub parent: u32,
    /// Its cgroup v2 path (the `0::` line of /proc/PID/cgroup, e.g.
    /// `/system.slice/docker-ID.scope`) when it became known; empty when unknown.
    #[prost(string, tag = "6")]
    pub cgroup: String,
    /// A kernel thread (PF_KTHREAD in the flags of /proc/PID/stat): no user code of its own.
    #[prost(bool, tag = "7")]
    pub kernel_thread: bool,
    /// The names it had before its execs, oldest first; `comm` is its name after the last.
    /// A forked shell that runs `cc` is `sh` until the exec: its samples before it are the
    /// shell's, as perf names them from its COMM records.
    #[prost(message, repeated, tag = "8")]
    pub names_before: Vec<NameBefore>,
}

/// A name a process had until an exec replaced its program.
#[derive(Clone, PartialEq, Message)]
pub struct NameBefore {
    /// CLOCK_BOOTTIME nanoseconds of the exec that ended this name.
    #[prost(uint64, tag = "1")]
    pub until_ns: u64,
    #[prost(string, tag = "2")]
    pub comm: String,
}

/// Which of a process's names held at a time: an index into [`Process::names_before`], or
/// its length for the current name. Outputs key samples by it so that each name is a root of
/// its own.
pub type Generation = u32;
/// The generation of a process's current name, whatever the number of its execs.
pub const CURRENT: Generation = Generation::MAX;

/// Processes by pid, for per-sample lookups of [`Generation`]s.
pub struct ProcessIndex<'a> {
    by_pid: std::collections::HashMap<u32, &'a Process>,
}

impl<'a> ProcessIndex<'a> {
    pub fn new(rec: &'a Recording) -> Self {
        Self {
            by_pid: rec.processes.iter().map(|p| (p.pid, p)).collect(),
        }
    }

    /// The generation of `pid`'s name at `timestamp_ns`.
    pub fn generation(&self, pid: u32, timestamp_ns: u64) -> Generation {
        // The names that ended at or before the time: as many as the generation's index.
        self.by_pid.get(&pid).map_or(0, |p| {
            let ended = p
                .names_before
                .partition_point(|n| n.until_ns <= timestamp_ns);
            u32::try_from(ended).unwrap_or(u32::MAX)
        })
    }
}

/// The kernel's `PF_KTHREAD` task flag (include/linux/sched.h), field 9 of /proc/PID/stat.
const PF_KTHREAD: u64 = 0x0020_0000;

impl Process {
    /// The cgroup v2 path in the text of /proc/PID/cgroup: the `0::PATH` line (the only line
    /// on a pure v2 host, beside the v1 hierarchies on a hybrid one). None without one.
    pub fn cgroup_from_proc(text: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix("0::"))
            .map(|p| p.trim_end().to_string())
            .filter(|p| !p.is_empty())
    }

    /// Whether the text of /proc/PID/stat is a kernel thread's. The name in field 2 can hold
    /// spaces and parentheses, so fields are counted after its last `)`.
    pub fn kernel_thread_from_stat(text: &str) -> Option<bool> {
        let rest = &text[text.rfind(')')? + 1..];
        // After the name: state (3), ppid, pgrp, session, tty_nr, tpgid, flags (9).
        let flags: u64 = rest.split_whitespace().nth(6)?.parse().ok()?;
        Some(flags & PF_KTHREAD != 0)
    }

    /// The container a cgroup path belongs to, for the layouts of docker
    /// (`docker-ID.scope`, `/docker/ID`), containerd (`cri-containerd-ID.scope`), CRI-O
    /// (`crio-ID.scope`) and podman (`libpod-ID.scope`): the 64-hex-digit id. None for any
    /// other cgroup.
    pub fn container_id(cgroup: &str) -> Option<&str> {
        let is_id = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        cgroup.rsplit('/').find_map(|part| {
            let part = part.strip_suffix(".scope").unwrap_or(part);
            let id = ["docker-", "cri-containerd-", "crio-", "libpod-"]
                .iter()
                .find_map(|p| part.strip_prefix(p))
                .unwrap_or(part);
            is_id(id).then_some(id)
        })
    }
}

/// Why a process is left out of the outputs unless `--kernel-threads` asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelTask {
    /// pid 0: the CPU had nothing to run.
    Idle,
    KernelThread,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, prost::Enumeration)]
#[repr(i32)]
pub enum ModuleKind {
    /// A file mapped into the process.
    File = 0,
    Kernel = 1,
    /// A mapping with no file: `[vdso]`, `[anon]` (JIT code), ...
    Special = 2,
}

#[derive(Clone, PartialEq, Message)]
pub struct Module {
    /// Path as the target sees it.
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(enumeration = "ModuleKind", tag = "2")]
    pub kind: i32,
    /// GNU build id, raw bytes; empty when the module has none.
    #[prost(bytes = "vec", tag = "3")]
    pub build_id: Vec<u8>,
    /// False when the file has neither a symbol table nor debug info (stripped).
    #[prost(bool, tag = "4")]
    pub has_symbols: bool,
    /// The separate debug file that named it (`/usr/lib/debug/...`), empty for none.
    #[prost(string, tag = "5")]
    pub debug_file: String,
}

impl Module {
    /// Short name used in `module+0xOFFSET` frames.
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct Function {
    /// Demangled name.
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub file: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    /// Index into `modules` plus one; 0 when no module covers the address.
    #[prost(uint32, tag = "1")]
    pub module: u32,
    /// File offset for file modules, the address itself for the kernel.
    #[prost(uint64, tag = "2")]
    pub offset: u64,
    /// The address in the target when it was sampled.
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Innermost (most deeply inlined) first, the outer function last, as in pprof.
    /// Empty when the address could not be symbolized.
    #[prost(message, repeated, tag = "4")]
    pub lines: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    /// Index into `functions`.
    #[prost(uint32, tag = "1")]
    pub function: u32,
    #[prost(uint32, tag = "2")]
    pub line: u32,
}

#[derive(Clone, PartialEq, Eq, Hash, Message)]
pub struct Stack {
    /// Indices into `locations`, leaf first: kernel frames, then user frames.
    #[prost(uint32, repeated, tag = "1")]
    pub locations: Vec<u32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Thread {
    #[prost(uint32, tag = "1")]
    pub tid: u32,
    #[prost(uint32, tag = "2")]
    pub pid: u32,
    #[prost(string, tag = "3")]
    pub name: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// CLOCK_BOOTTIME nanoseconds.
    #[prost(uint64, tag = "1")]
    pub timestamp_ns: u64,
    #[prost(uint32, tag = "2")]
    pub pid: u32,
    #[prost(uint32, tag = "3")]
    pub tid: u32,
    #[prost(uint32, tag = "4")]
    pub cpu: u32,
    /// Index into `stacks`.
    #[prost(uint32, tag = "5")]
    pub stack: u32,
    /// Innermost span running on the thread (`Span::id`), 0 for none.
    #[prost(uint64, tag = "6")]
    pub span: u64,
}

/// What happened to every sample the kernel program saw. `seen = emitted + lost_ringbuf_full`
/// and, after a complete drain, `received = emitted`.
#[derive(Clone, PartialEq, Message, serde::Serialize)]
pub struct Counters {
    #[prost(uint64, tag = "1")]
    pub seen: u64,
    #[prost(uint64, tag = "2")]
    pub emitted: u64,
    #[prost(uint64, tag = "3")]
    pub received: u64,
    #[prost(uint64, tag = "4")]
    pub lost_ringbuf_full: u64,
    #[prost(uint64, tag = "5")]
    pub user_stack_errors: u64,
    #[prost(uint64, tag = "6")]
    pub kernel_stack_errors: u64,
    #[prost(uint64, tag = "7")]
    pub stack_map_full: u64,
    #[prost(uint64, tag = "8")]
    pub stack_map_collisions: u64,
    /// Records userspace could not parse; always 0 unless kernel and user sides disagree.
    #[prost(uint64, tag = "9")]
    pub malformed_events: u64,
    /// Span probe hits written to the ring buffer by the kernel.
    #[prost(uint64, tag = "10")]
    pub span_events: u64,
    /// Span probe hits dropped with the ring buffer full.
    #[prost(uint64, tag = "11")]
    pub span_events_lost: u64,
    #[prost(uint64, tag = "12")]
    pub span_events_received: u64,
    /// Enters beyond the per-thread depth the kernel tracks (samples then name an outer span).
    #[prost(uint64, tag = "13")]
    pub span_depth_overflow: u64,
    /// Fork/exec/exit notifications lost with the ring buffer full (children then missed or
    /// symbolized against the image before their exec).
    #[prost(uint64, tag = "14")]
    pub process_events_lost: u64,
    /// Switch-outs of target threads the off-CPU program saw.
    #[prost(uint64, tag = "15")]
    pub off_cpu_switches: u64,
    /// Off-CPU intervals sent as events because the kernel's sums had no room (not lost).
    #[prost(uint64, tag = "16")]
    pub off_cpu_totals_full: u64,
    /// Off-CPU interval events dropped with the ring buffer full.
    #[prost(uint64, tag = "17")]
    pub off_cpu_events_lost: u64,
    /// Off-CPU time lost with them (intervals that were in no sum).
    #[prost(uint64, tag = "18")]
    pub off_cpu_lost_ns: u64,
    /// Switch-outs not tracked because the start map was full.
    #[prost(uint64, tag = "19")]
    pub off_cpu_start_full: u64,
    #[prost(uint64, tag = "20")]
    pub off_cpu_events_received: u64,
    /// DWARF samples whose stack copy failed (kept without user stack).
    #[prost(uint64, tag = "21")]
    pub dwarf_stack_errors: u64,
    /// DWARF samples with no user registers (kept with the frame-pointer stack).
    #[prost(uint64, tag = "22")]
    pub dwarf_no_user_regs: u64,
    /// Off-CPU intervals lost because the program never saw the thread come back on CPU
    /// (found at the thread's next switch-out).
    #[prost(uint64, tag = "23")]
    pub off_cpu_unmatched: u64,
    /// Side-band records (mappings, forks, execs) the kernel dropped with their buffer full.
    #[prost(uint64, tag = "24")]
    pub sideband_lost: u64,
    /// Mappings of targets whose file could not be opened (gone or replaced before it was
    /// read): their frames show as `module+0xOFFSET`.
    #[prost(uint64, tag = "25")]
    pub modules_missed: u64,
    /// Kernel structure reads (task fields at BTF offsets) that faulted in the sched programs.
    #[prost(uint64, tag = "26")]
    pub kernel_read_failed: u64,
    /// Children of followed processes not followed: the pending-children map was full.
    #[prost(uint64, tag = "27")]
    pub pending_children_full: u64,
    /// Children not followed: the targets map was full.
    #[prost(uint64, tag = "28")]
    pub targets_full: u64,
    /// Span enters not tracked: the per-thread span map was full.
    #[prost(uint64, tag = "29")]
    pub span_threads_full: u64,
    /// Runs of the profiler's programs the kernel skipped because another BPF program was
    /// running on that CPU (the kernel's `recursion_misses`, summed over programs).
    #[prost(uint64, tag = "30")]
    pub bpf_recursion_misses: u64,
    /// Off-CPU user stack copies (DWARF mode) dropped with the ring buffer full.
    #[prost(uint64, tag = "31")]
    pub off_cpu_stacks_lost: u64,
    /// Off-CPU user stack copies that failed at their first byte.
    #[prost(uint64, tag = "32")]
    pub off_cpu_stack_errors: u64,
    /// Off-CPU intervals of threads in DWARF mode kept without user stack: its copy never
    /// came (lost, or the interval was still open and the copy not found).
    #[prost(uint64, tag = "33")]
    pub off_cpu_stacks_unmatched: u64,
    /// Off-CPU, lock wait and allocation stacks neither stack map took: kept without them.
    #[prost(uint64, tag = "34")]
    pub wait_stacks_refused: u64,
}

impl Counters {
    /// Samples of the target that never reached the outputs. A malformed record is counted
    /// once: one that was a sample is already among the emitted records never received, and
    /// one of unknown kind cannot be told apart, so malformed records count as lost samples
    /// only beyond that difference.
    pub fn lost(&self) -> u64 {
        self.lost_ringbuf_full.saturating_add(
            self.emitted
                .saturating_sub(self.received)
                .max(self.malformed_events),
        )
    }

    /// Emitted samples never received for another reason than being malformed (0 after a
    /// complete drain).
    pub fn undelivered(&self) -> u64 {
        self.emitted
            .saturating_sub(self.received)
            .saturating_sub(self.malformed_events)
    }

    /// Span probe hits that never reached the recording.
    pub fn span_events_lost_total(&self) -> u64 {
        self.span_events_lost
            .saturating_add(self.span_events.saturating_sub(self.span_events_received))
    }
}

/// One frame of a stack as outputs name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub name: FrameName<'a>,
    pub kind: FrameKind,
    /// The location it comes from (None for a corrupt index), and which of its lines:
    /// 0 for the outer function, 1.. for functions inlined into it, outermost first.
    pub location: Option<u32>,
    pub inline_depth: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    User,
    /// A function inlined into its caller: same address, separate frame.
    Inlined,
    Kernel,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameName<'a> {
    Function(&'a str),
    /// An address that could not be symbolized, inside a known module.
    ModuleOffset {
        module: &'a str,
        offset: u64,
    },
    /// An address outside every known mapping.
    Unknown,
}

impl std::fmt::Display for FrameName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameName::Function(name) => f.write_str(name),
            FrameName::ModuleOffset { module, offset } => write!(f, "{module}+{offset:#x}"),
            FrameName::Unknown => f.write_str("[unknown]"),
        }
    }
}

impl std::fmt::Display for Frame<'_> {
    /// Names with the suffixes flame graph tools understand: `_[k]` kernel, `_[i]` inlined.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.name.fmt(f)?;
        match self.kind {
            FrameKind::User => Ok(()),
            FrameKind::Inlined => f.write_str("_[i]"),
            FrameKind::Kernel => f.write_str("_[k]"),
        }
    }
}

/// A stack copy's size as `--stack-size` takes it: whole KiB, else bytes (512 is not 0 KiB).
pub fn stack_size_text(bytes: u32) -> String {
    if bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

impl Recording {
    pub fn meta(&self) -> &Meta {
        static EMPTY: std::sync::OnceLock<Meta> = std::sync::OnceLock::new();
        self.meta
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(Meta::default))
    }

    pub fn counters(&self) -> Counters {
        self.counters.clone().unwrap_or_default()
    }

    /// CPU time one sample stands for, at the recording's rate.
    pub fn sample_period_ns(&self) -> u64 {
        1_000_000_000 / self.meta().frequency_hz.max(1)
    }

    pub fn duration_ns(&self) -> u64 {
        let m = self.meta();
        m.end_boottime_ns.saturating_sub(m.start_boottime_ns)
    }

    /// Frames of a stack, leaf first, inlined functions expanded into frames of their own.
    /// Indices that do not resolve (a corrupt file) yield `[unknown]` frames, not panics.
    pub fn frames(&self, stack: u32) -> Vec<Frame<'_>> {
        let mut out = Vec::new();
        let Some(stack) = self.stacks.get(stack as usize) else {
            return out;
        };
        for &loc_index in &stack.locations {
            let Some(loc) = self.locations.get(loc_index as usize) else {
                out.push(Frame {
                    name: FrameName::Unknown,
                    kind: FrameKind::User,
                    location: None,
                    inline_depth: 0,
                });
                continue;
            };
            let module = loc
                .module
                .checked_sub(1)
                .and_then(|m| self.modules.get(m as usize));
            let kernel = module.is_some_and(|m| m.kind == ModuleKind::Kernel as i32);
            let outer_kind = if kernel {
                FrameKind::Kernel
            } else {
                FrameKind::User
            };
            if loc.lines.is_empty() {
                let name = match module {
                    Some(m) if !kernel => FrameName::ModuleOffset {
                        module: m.name(),
                        offset: loc.offset,
                    },
                    _ => FrameName::Unknown,
                };
                out.push(Frame {
                    name,
                    kind: outer_kind,
                    location: Some(loc_index),
                    inline_depth: 0,
                });
                continue;
            }
            let last = loc.lines.len() - 1;
            for (i, line) in loc.lines.iter().enumerate() {
                let name = match self.functions.get(line.function as usize) {
                    Some(f) => FrameName::Function(&f.name),
                    None => FrameName::Unknown,
                };
                let kind = if i == last {
                    outer_kind
                } else {
                    FrameKind::Inlined
                };
                out.push(Frame {
                    name,
                    kind,
                    location: Some(loc_index),
                    inline_depth: (last - i) as u32,
                });
            }
        }
        out
    }

    /// Names of a stack's user frames, leaf first, for one-line descriptions ("read ←
    /// wait_reply ← main"): `skip` frames left out, then `take` at most. An inlined frame
    /// named like the function it is inlined into (glibc's `__GI___libc_read` inside
    /// `__GI___libc_read`) reads as that function once: without the `[i]` mark the folded
    /// stacks carry, the pair would read as a recursion.
    pub fn user_frame_names(&self, stack: u32, skip: usize, take: usize) -> Vec<String> {
        let frames: Vec<Frame<'_>> = self
            .frames(stack)
            .into_iter()
            .filter(|f| f.kind != FrameKind::Kernel)
            .collect();
        frames
            .iter()
            .enumerate()
            .filter(|&(i, f)| {
                f.kind != FrameKind::Inlined
                    || frames.get(i + 1).is_none_or(|outer| outer.name != f.name)
            })
            .skip(skip)
            .take(take)
            .map(|(_, f)| f.name.to_string())
            .collect()
    }

    /// Name shown as the root frame of a process's stacks. A process with no entry of its
    /// own (gone before it could be read) is named by its main thread, whose tid is its pid:
    /// in a recording of many processes the recorded process's name would be wrong for it.
    pub fn process_name(&self, pid: u32) -> &str {
        self.processes
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| p.comm.as_str())
            .filter(|c| !c.is_empty())
            .or_else(|| self.thread_name(pid).filter(|n| !n.is_empty()))
            .unwrap_or_else(|| {
                // The kernel's name for the idle task, as `ps` and perf show it.
                if pid == 0 {
                    "swapper"
                } else {
                    self.meta().comm.as_str()
                }
            })
    }

    /// The name `pid` had in `generation` (see [`ProcessIndex::generation`]): a name before
    /// one of its execs, or [`Recording::process_name`] for the current one.
    pub fn process_name_in(&self, pid: u32, generation: Generation) -> &str {
        self.processes
            .iter()
            .find(|p| p.pid == pid)
            .and_then(|p| p.names_before.get(usize::try_from(generation).ok()?))
            .map(|n| n.comm.as_str())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| self.process_name(pid))
    }

    /// Processes that are the kernel's rather than a program's: pid 0 (the idle task), and
    /// kernel threads. A process is a kernel thread when it was found flagged so
    /// ([`Process::kernel_thread`], from /proc/PID/stat), or, for processes whose flags were
    /// never read (gone first, or a recording made before the flag existed), when none of
    /// its samples has a user frame and its kernel stacks go through `kthread`, the entry of
    /// every kernel thread. A program whose user stack could not be walked still enters the
    /// kernel through a system call or an interrupt, never through `kthread`, so it stays.
    /// Pids say nothing more: `kthreadd` is pid 2 on the host, but inside a PID namespace
    /// pid 2 is an ordinary program (the profiler in a sidecar sees those pids).
    pub fn kernel_tasks(&self) -> std::collections::HashMap<u32, KernelTask> {
        use std::collections::HashMap;
        #[derive(Clone, Copy, Default)]
        struct Seen {
            user: bool,
            kthread: bool,
        }
        let mut per_stack: HashMap<u32, Seen> = HashMap::new();
        let mut per_pid: HashMap<u32, Seen> = HashMap::new();
        for s in &self.samples {
            let stack = *per_stack.entry(s.stack).or_insert_with(|| {
                let frames = self.frames(s.stack);
                Seen {
                    user: frames.iter().any(|f| f.kind != FrameKind::Kernel),
                    kthread: frames.iter().any(|f| {
                        f.kind == FrameKind::Kernel && f.name == FrameName::Function("kthread")
                    }),
                }
            });
            let seen = per_pid.entry(s.pid).or_default();
            seen.user |= stack.user;
            seen.kthread |= stack.kthread;
        }
        let mut out = HashMap::new();
        if per_pid.contains_key(&0) || self.processes.iter().any(|p| p.pid == 0) {
            out.insert(0, KernelTask::Idle);
        }
        let known: HashMap<u32, &Process> = self.processes.iter().map(|p| (p.pid, p)).collect();
        let mut pids: Vec<u32> = known.keys().chain(per_pid.keys()).copied().collect();
        pids.sort_unstable();
        pids.dedup();
        for pid in pids.into_iter().filter(|&p| p != 0) {
            let process = known.get(&pid);
            let flagged = process.is_some_and(|p| p.kernel_thread);
            let kernel_only = per_pid.get(&pid).is_some_and(|s| !s.user && s.kthread);
            if flagged || kernel_only {
                out.insert(pid, KernelTask::KernelThread);
            }
        }
        out
    }

    /// The recording without the processes in `hide` (their samples, threads, spans and
    /// off-CPU time), and how many samples went with them.
    pub fn without_pids(&self, hide: &std::collections::HashSet<u32>) -> (Self, u64) {
        let mut out = self.clone();
        out.samples.retain(|s| !hide.contains(&s.pid));
        let hidden = (self.samples.len() - out.samples.len()) as u64;
        out.processes.retain(|p| !hide.contains(&p.pid));
        out.threads.retain(|t| !hide.contains(&t.pid));
        out.spans.retain(|s| !hide.contains(&s.pid));
        out.span_runs.retain(|r| !hide.contains(&r.pid));
        out.off_cpu.retain(|o| !hide.contains(&o.pid));
        out.off_cpu_intervals.retain(|o| !hide.contains(&o.pid));
        out.allocs.retain(|a| !hide.contains(&a.pid));
        out.lock_waits.retain(|w| !hide.contains(&w.pid));
        (out, hidden)
    }

    /// A thread's name: its own, else for a main thread its process's. A short-lived child
    /// seen only off CPU was never sampled nor alive at the end to be read, but its fork or
    /// exec named its process, and a process's name is its main thread's.
    pub fn thread_name(&self, tid: u32) -> Option<&str> {
        self.threads
            .iter()
            .find(|t| t.tid == tid)
            .map(|t| t.name.as_str())
            .filter(|n| !n.is_empty())
            .or_else(|| {
                self.processes
                    .iter()
                    .find(|p| p.pid == tid)
                    .map(|p| p.comm.as_str())
                    .filter(|c| !c.is_empty())
            })
    }

    /// The command line as one string, for titles.
    pub fn command_line(&self) -> String {
        let m = self.meta();
        if m.command.is_empty() {
            m.comm.clone()
        } else {
            m.command.join(" ")
        }
    }

    /// The part of the recording between `from` and `to` after its start: samples outside are
    /// dropped, spans and their runs that overlap the window are cut to it (a span cut short
    /// counts as incomplete), and the start and end move to the window's edges.
    pub fn window(
        &self,
        from: Option<std::time::Duration>,
        to: Option<std::time::Duration>,
    ) -> Self {
        let m = self.meta();
        let start = m.start_boottime_ns;
        let clamp = |d: std::time::Duration| {
            start
                .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64)
                .min(m.end_boottime_ns)
        };
        let lo = from.map_or(start, clamp);
        let hi = to.map_or(m.end_boottime_ns, clamp).max(lo);
        let mut out = self.clone();
        if (lo, hi) != (start, m.end_boottime_ns)
            && let Some(meta) = out.meta.as_mut()
        {
            meta.window_cut = true;
        }
        out.samples
            .retain(|s| s.timestamp_ns >= lo && s.timestamp_ns <= hi);
        out.spans.retain(|s| s.end_ns >= lo && s.begin_ns <= hi);
        for s in &mut out.spans {
            if s.begin_ns < lo || s.end_ns > hi {
                s.incomplete = true;
                s.begin_ns = s.begin_ns.max(lo);
                s.end_ns = s.end_ns.min(hi);
            }
        }
        // Sample counts must match the samples left.
        let mut in_window: std::collections::HashMap<(u32, u64), u64> = Default::default();
        for s in out.samples.iter().filter(|s| s.span != 0) {
            *in_window.entry((s.pid, s.span)).or_default() += 1;
        }
        for s in &mut out.spans {
            s.samples = in_window.get(&(s.pid, s.id)).copied().unwrap_or(0);
        }
        out.span_runs.retain(|r| r.end_ns >= lo && r.begin_ns <= hi);
        for r in &mut out.span_runs {
            r.begin_ns = r.begin_ns.max(lo);
            r.end_ns = r.end_ns.min(hi);
        }
        // The kernel's off-CPU sums carry no times: a narrower window rebuilds them from the
        // intervals kept one by one, cut to it (shorter intervals are then missing, and said so).
        if (lo, hi) != (start, m.end_boottime_ns)
            && let Some(info) = out.off_cpu_info.as_mut()
        {
            info.windowed = true;
            out.off_cpu_intervals
                .retain(|o| o.end_ns > lo && o.begin_ns < hi);
            for o in &mut out.off_cpu_intervals {
                o.begin_ns = o.begin_ns.max(lo);
                o.end_ns = o.end_ns.min(hi);
            }
            // (pid, tid, stack, span, runnable) → (ns, intervals)
            type Key = (u32, u32, u32, u64, bool);
            let mut sums: std::collections::BTreeMap<Key, (u64, u64)> = Default::default();
            for o in &out.off_cpu_intervals {
                let e = sums
                    .entry((o.pid, o.tid, o.stack, o.span, o.runnable))
                    .or_default();
                // A file can hold an interval that ends before it begins.
                let weight = u64::from(info.sample_every.max(1));
                e.0 =
                    e.0.saturating_add(o.end_ns.saturating_sub(o.begin_ns).saturating_mul(weight));
                e.1 = e.1.saturating_add(weight);
            }
            out.off_cpu = sums
                .into_iter()
                .map(
                    |((pid, tid, stack, span, runnable), (total_ns, count))| OffCpu {
                        pid,
                        tid,
                        stack,
                        span,
                        runnable,
                        total_ns,
                        count,
                    },
                )
                .collect();
        }
        if (lo, hi) != (start, m.end_boottime_ns)
            && let Some(info) = out.alloc_info.as_mut()
        {
            info.windowed = true;
            out.allocs
                .retain(|a| a.timestamp_ns >= lo && a.timestamp_ns <= hi);
        }
        if (lo, hi) != (start, m.end_boottime_ns)
            && let Some(info) = out.lock_info.as_mut()
        {
            info.windowed = true;
            out.lock_waits
                .retain(|w| w.last_ns >= lo && w.first_ns <= hi);
        }
        if let Some(meta) = out.meta.as_mut() {
            // The wall clock moves with the start, for outputs that carry it (pprof).
            meta.start_unix_ns = meta.start_unix_ns.saturating_add(lo.saturating_sub(start));
            meta.start_boottime_ns = lo;
            meta.end_boottime_ns = hi;
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn stack_sizes_below_a_kib_are_not_zero() {
        assert_eq!(stack_size_text(512), "512 bytes");
        assert_eq!(stack_size_text(16 << 10), "16 KiB");
        assert_eq!(stack_size_text(1536), "1536 bytes");
    }

    /// A small recording: main → compute → {hot_a, hot_b} plus a kernel frame and an
    /// unsymbolized frame of a stripped library.
    pub fn sample_recording() -> Recording {
        let modules = vec![
            Module {
                path: "/usr/bin/app".into(),
                kind: ModuleKind::File as i32,
                build_id: vec![],
                has_symbols: true,
                debug_file: String::new(),
            },
            Module {
                path: "/lib/libstripped.so".into(),
                kind: ModuleKind::File as i32,
                build_id: vec![],
                has_symbols: false,
                debug_file: String::new(),
            },
            Module {
                path: "[kernel.kallsyms]".into(),
                kind: ModuleKind::Kernel as i32,
                build_id: vec![],
                has_symbols: true,
                debug_file: String::new(),
            },
        ];
        let f = |name: &str| Function {
            name: name.into(),
            file: String::new(),
        };
        let functions = vec![
            f("main"),
            f("compute"),
            f("hot_a"),
            f("hot_b"),
            f("inlined_helper"),
            f("asm_sysvec_apic_timer_interrupt"),
        ];
        let line = |function| Line { function, line: 0 };
        let loc = |module, offset, lines: Vec<Line>| Location {
            module,
            offset,
            address: offset,
            lines,
        };
        let locations = vec![
            loc(1, 0x100, vec![line(0)]),                 // 0 main
            loc(1, 0x200, vec![line(1)]),                 // 1 compute
            loc(1, 0x300, vec![line(4), line(2)]),        // 2 hot_a with inlined_helper
            loc(1, 0x400, vec![line(3)]),                 // 3 hot_b
            loc(2, 0x1234, vec![]),                       // 4 libstripped.so+0x1234
            loc(3, 0xffff_ffff_8100_0000, vec![line(5)]), // 5 kernel
        ];
        let stacks = vec![
            Stack {
                locations: vec![2, 1, 0],
            },
            Stack {
                locations: vec![3, 1, 0],
            },
            Stack {
                locations: vec![5, 4, 0],
            },
        ];
        let mut samples = Vec::new();
        for (i, stack) in [0, 0, 0, 0, 0, 0, 1, 1, 1, 2].into_iter().enumerate() {
            samples.push(Sample {
                timestamp_ns: 1_000_000_000 + i as u64 * 10_000_000,
                pid: 42,
                tid: 42,
                cpu: 0,
                stack,
                span: 0,
            });
        }
        Recording {
            format_version: FORMAT_VERSION,
            meta: Some(Meta {
                pid: 42,
                command: vec!["/usr/bin/app".into(), "--fast".into()],
                comm: "app".into(),
                start_boottime_ns: 1_000_000_000,
                end_boottime_ns: 1_100_000_000,
                frequency_hz: 99,
                start_unix_ns: 1_795_467_600_000_000_000,
                ..Default::default()
            }),
            modules,
            functions,
            locations,
            stacks,
            threads: vec![Thread {
                tid: 42,
                pid: 42,
                name: "app".into(),
            }],
            samples,
            counters: Some(Counters {
                seen: 12,
                emitted: 10,
                received: 10,
                lost_ringbuf_full: 2,
                ..Default::default()
            }),
            processes: vec![Process {
                pid: 42,
                comm: "app".into(),
                command: vec![],
                exe: "/usr/bin/app".into(),
                parent: 0,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn frames_expand_inlines_and_mark_kernel_and_unsymbolized() {
        let r = sample_recording();
        let names: Vec<String> = r.frames(0).iter().map(|f| f.to_string()).collect();
        assert_eq!(names, ["inlined_helper_[i]", "hot_a", "compute", "main"]);
        let names: Vec<String> = r.frames(2).iter().map(|f| f.to_string()).collect();
        assert_eq!(
            names,
            [
                "asm_sysvec_apic_timer_interrupt_[k]",
                "libstripped.so+0x1234",
                "main"
            ]
        );
    }

    #[test]
    fn descriptions_read_an_inlined_namesake_once_and_keep_recursion() {
        let mut r = sample_recording();
        // hot_b with a copy of itself inlined (as glibc's aliases are), and hot_b calling
        // itself.
        let namesake = r.locations.len() as u32;
        r.locations.push(Location {
            module: 1,
            offset: 0x500,
            address: 0x500,
            lines: vec![
                Line {
                    function: 3,
                    line: 0,
                },
                Line {
                    function: 3,
                    line: 0,
                },
            ],
        });
        r.stacks.push(Stack {
            locations: vec![namesake, 1, 0],
        });
        r.stacks.push(Stack {
            locations: vec![3, 3, 1, 0],
        });
        let names: Vec<String> = r.frames(3).iter().map(|f| f.to_string()).collect();
        assert_eq!(names, ["hot_b_[i]", "hot_b", "compute", "main"]);
        assert_eq!(r.user_frame_names(3, 0, 9), ["hot_b", "compute", "main"]);
        assert_eq!(
            r.user_frame_names(4, 0, 9),
            ["hot_b", "hot_b", "compute", "main"]
        );
        // Another function inlined stays, kernel frames go, skip and take count what is named.
        assert_eq!(
            r.user_frame_names(0, 0, 9),
            ["inlined_helper", "hot_a", "compute", "main"]
        );
        assert_eq!(
            r.user_frame_names(2, 0, 9),
            ["libstripped.so+0x1234", "main"]
        );
        assert_eq!(r.user_frame_names(3, 1, 1), ["compute"]);
    }

    #[test]
    fn corrupt_indices_do_not_panic() {
        let mut r = sample_recording();
        r.stacks.push(Stack {
            locations: vec![999],
        });
        let names: Vec<String> = r.frames(3).iter().map(|f| f.to_string()).collect();
        assert_eq!(names, ["[unknown]"]);
        assert!(r.frames(1000).is_empty());
    }

    #[test]
    fn window_rebuilds_off_cpu_sums_from_the_intervals_inside() {
        let mut rec = sample_recording();
        rec.off_cpu = vec![OffCpu {
            pid: 42,
            tid: 42,
            stack: 1,
            total_ns: 99_000_000,
            count: 1000,
            ..Default::default()
        }];
        let interval = |begin_ns, end_ns| OffCpuInterval {
            pid: 42,
            tid: 42,
            stack: 1,
            begin_ns,
            end_ns,
            ..Default::default()
        };
        rec.off_cpu_intervals = vec![
            interval(1_000_000_000, 1_010_000_000),
            interval(1_015_000_000, 1_040_000_000),
            interval(1_060_000_000, 1_070_000_000),
        ];
        rec.off_cpu_info = Some(OffCpuInfo::default());
        let full = rec.window(None, None);
        assert_eq!(
            full.off_cpu, rec.off_cpu,
            "no window: the kernel's sums stay"
        );
        assert!(!full.off_cpu_info.as_ref().is_some_and(|i| i.windowed));

        let ms = std::time::Duration::from_millis;
        let w = rec.window(Some(ms(20)), Some(ms(50)));
        assert!(w.off_cpu_info.as_ref().is_some_and(|i| i.windowed));
        assert_eq!(w.off_cpu_intervals.len(), 1);
        assert_eq!(w.off_cpu.len(), 1);
        // Cut to the window: 20 ms → 40 ms of the second interval.
        assert_eq!(w.off_cpu[0].total_ns, 20_000_000);
        assert_eq!(w.off_cpu[0].count, 1);
    }

    /// Found by profiler-fuzz: an interval that ends before it begins (a crafted file).
    #[test]
    fn window_survives_inverted_off_cpu_intervals() {
        let mut rec = sample_recording();
        rec.off_cpu_info = Some(OffCpuInfo::default());
        rec.off_cpu_intervals = vec![OffCpuInterval {
            begin_ns: 1_045_000_000,
            end_ns: 1_025_000_000,
            ..Default::default()
        }];
        let ms = std::time::Duration::from_millis;
        let w = rec.window(Some(ms(20)), Some(ms(50)));
        assert_eq!(w.off_cpu.len(), 1);
        assert_eq!(w.off_cpu[0].total_ns, 0);
    }

    #[test]
    fn window_keeps_samples_inside_and_moves_the_edges() {
        use std::time::Duration;
        let r = sample_recording(); // samples every 10 ms from +0 to +90 ms
        let w = r.window(
            Some(Duration::from_millis(20)),
            Some(Duration::from_millis(50)),
        );
        let ts: Vec<u64> = w.samples.iter().map(|s| s.timestamp_ns).collect();
        assert_eq!(
            ts,
            [1_020_000_000, 1_030_000_000, 1_040_000_000, 1_050_000_000]
        );
        assert_eq!(w.duration_ns(), 30_000_000);
        assert_eq!(
            w.meta().start_unix_ns,
            r.meta().start_unix_ns + 20_000_000,
            "the wall clock moves with the start"
        );
        assert_eq!(r.window(None, None), r);
        // Spans: one inside, one across the end edge, one outside.
        let mut r = r;
        let span = |id, begin, end| Span {
            id,
            begin_ns: begin,
            end_ns: end,
            pid: 42,
            ..Default::default()
        };
        r.spans = vec![
            span(1, 1_025_000_000, 1_030_000_000),
            span(2, 1_045_000_000, 1_090_000_000),
            span(3, 1_060_000_000, 1_070_000_000),
        ];
        r.samples[3].span = 1;
        r.samples[8].span = 2;
        r.spans[1].samples = 1;
        let w = r.window(
            Some(Duration::from_millis(20)),
            Some(Duration::from_millis(50)),
        );
        let kept: Vec<(u64, bool, u64, u64)> = w
            .spans
            .iter()
            .map(|s| (s.id, s.incomplete, s.duration_ns(), s.samples))
            .collect();
        assert_eq!(kept, [(1, false, 5_000_000, 1), (2, true, 5_000_000, 0)]);
        // Past the end: empty, not a panic.
        let late = r.window(Some(Duration::from_secs(5)), None);
        assert!(late.samples.is_empty());
        assert_eq!(late.duration_ns(), 0);
    }

    #[test]
    fn cgroup_and_kernel_thread_flag_from_proc_text() {
        // Hybrid host: v1 hierarchies beside the v2 line.
        let text = "12:cpu,cpuacct:/docker/abc\n1:name=systemd:/init.scope\n0::/system.slice/docker-0123.scope\n";
        assert_eq!(
            Process::cgroup_from_proc(text).as_deref(),
            Some("/system.slice/docker-0123.scope")
        );
        assert_eq!(Process::cgroup_from_proc("0::/\n").as_deref(), Some("/"));
        assert_eq!(Process::cgroup_from_proc("3:memory:/x\n"), None);
        assert_eq!(Process::cgroup_from_proc(""), None);
        // Real lines: kthreadd (flags 0x208040) and a shell (0x400100); a name with spaces
        // and parentheses must not shift the fields.
        let kthreadd = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 2 0 0";
        let shell = "4321 (sh) S 4300 4321 4300 34816 4321 4194560 131 0 0 0 0 0 0 0 20 0 1";
        let odd = "77 (a) b (c) R 1 77 77 0 -1 2129984 0 0";
        assert_eq!(Process::kernel_thread_from_stat(kthreadd), Some(true));
        assert_eq!(Process::kernel_thread_from_stat(shell), Some(false));
        assert_eq!(Process::kernel_thread_from_stat(odd), Some(true));
        assert_eq!(Process::kernel_thread_from_stat("12 (x) S 1"), None);
        assert_eq!(Process::kernel_thread_from_stat("garbage"), None);
    }

    #[test]
    fn container_ids_of_the_runtimes_layouts() {
        let id = "4f1c".repeat(16);
        for path in [
            format!("/system.slice/docker-{id}.scope"),
            format!("/docker/{id}"),
            format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"),
            format!("/kubepods/burstable/pod1/crio-{id}.scope"),
            format!("/machine.slice/libpod-{id}.scope/container"),
        ] {
            assert_eq!(Process::container_id(&path), Some(id.as_str()), "{path}");
        }
        assert_eq!(Process::container_id("/user.slice/session-3.scope"), None);
        assert_eq!(Process::container_id("/docker/short"), None);
        assert_eq!(Process::container_id(""), None);
    }

    /// A recording of a user process, the idle task and kernel threads known three ways.
    pub fn with_kernel_tasks() -> Recording {
        let mut r = sample_recording();
        let f = r.functions.len() as u32;
        r.functions.push(Function {
            name: "kthread".into(),
            file: String::new(),
        });
        r.functions.push(Function {
            name: "worker_thread".into(),
            file: String::new(),
        });
        let loc = r.locations.len() as u32;
        for (i, function) in [f, f + 1].into_iter().enumerate() {
            r.locations.push(Location {
                module: 3,
                offset: 0xffff_ffff_8200_0000 + i as u64,
                address: 0xffff_ffff_8200_0000 + i as u64,
                lines: vec![Line { function, line: 0 }],
            });
        }
        // 3: a kernel thread's stack; 4: kernel frames only, entered through an interrupt.
        r.stacks.push(Stack {
            locations: vec![loc + 1, loc],
        });
        r.stacks.push(Stack { locations: vec![5] });
        let sample = |pid, stack| Sample {
            timestamp_ns: 1_050_000_000,
            pid,
            tid: pid,
            stack,
            ..Default::default()
        };
        r.samples.extend([
            sample(0, 4),   // idle
            sample(900, 3), // kworker gone before it was read: known by its stack
            sample(901, 4), // a program whose user stack was lost: not a kernel thread
            sample(902, 4), // flagged from /proc
            sample(2, 0),   // pid 2 of a PID namespace: an ordinary program
            sample(903, 4), // its child, entered through an interrupt
        ]);
        r.processes.push(Process {
            pid: 902,
            kernel_thread: true,
            ..Default::default()
        });
        r.processes.push(Process {
            pid: 903,
            parent: 2,
            ..Default::default()
        });
        r
    }

    #[test]
    fn a_main_thread_never_sampled_is_named_as_its_process() {
        let mut r = sample_recording();
        r.threads = vec![
            Thread {
                tid: 44,
                pid: 42,
                name: "worker".into(),
            },
            Thread {
                tid: 45,
                pid: 42,
                name: String::new(),
            },
        ];
        r.processes = vec![Process {
            pid: 42,
            comm: "server".into(),
            ..Default::default()
        }];
        assert_eq!(r.thread_name(44), Some("worker"));
        assert_eq!(r.thread_name(42), Some("server"));
        // Another thread's name is its own (it may have renamed itself): none is known.
        assert_eq!(r.thread_name(45), None);
        assert_eq!(r.thread_name(46), None);
    }

    #[test]
    fn kernel_tasks_are_idle_flagged_or_kthread_stacks_never_by_pid() {
        let r = with_kernel_tasks();
        let mut tasks: Vec<(u32, KernelTask)> = r.kernel_tasks().into_iter().collect();
        tasks.sort_by_key(|t| t.0);
        assert_eq!(
            tasks,
            [
                (0, KernelTask::Idle),
                (900, KernelTask::KernelThread),
                (902, KernelTask::KernelThread)
            ]
        );
        let hide = tasks.iter().map(|t| t.0).collect();
        let (shown, hidden) = r.without_pids(&hide);
        assert_eq!(hidden, 3);
        assert_eq!(shown.samples.len(), 13);
        let pids: std::collections::BTreeSet<u32> = shown.samples.iter().map(|s| s.pid).collect();
        assert_eq!(pids.into_iter().collect::<Vec<_>>(), [2, 42, 901, 903]);
        let kept: Vec<u32> = shown.processes.iter().map(|p| p.pid).collect();
        assert_eq!(kept, [42, 903]);
        assert!(sample_recording().kernel_tasks().is_empty());
    }

    #[test]
    fn a_process_without_entry_is_named_by_its_main_thread() {
        let mut r = sample_recording();
        r.threads.push(Thread {
            tid: 500,
            pid: 500,
            name: "cc1".into(),
        });
        assert_eq!(r.process_name(500), "cc1");
        assert_eq!(r.process_name(42), "app");
        assert_eq!(
            r.process_name(501),
            "app",
            "nothing known: the recorded one's"
        );
    }

    #[test]
    fn lost_counts_ringbuf_drops_and_undelivered_records() {
        let c = Counters {
            seen: 100,
            emitted: 90,
            received: 85,
            lost_ringbuf_full: 10,
            ..Default::default()
        };
        assert_eq!(c.lost(), 15);
    }

    #[test]
    fn a_malformed_sample_is_lost_once() {
        // Two sample records emitted, one received, the other malformed: one lost.
        let c = Counters {
            seen: 2,
            emitted: 2,
            received: 1,
            malformed_events: 1,
            ..Default::default()
        };
        assert_eq!((c.lost(), c.undelivered()), (1, 0));
        // A malformed record that was no sample still counts, as the kind is unknown.
        let c = Counters {
            seen: 2,
            emitted: 2,
            received: 2,
            malformed_events: 1,
            ..Default::default()
        };
        assert_eq!((c.lost(), c.undelivered()), (1, 0));
        // Undelivered and malformed apart.
        let c = Counters {
            seen: 10,
            emitted: 10,
            received: 6,
            malformed_events: 1,
            lost_ringbuf_full: 0,
            ..Default::default()
        };
        assert_eq!((c.lost(), c.undelivered()), (4, 3));
    }

    /// Every prost field of this file is in the checked-in `recording.proto`, with the same
    /// number, and nothing else is: the documented schema cannot drift from the code.
    #[test]
    fn recording_proto_matches_the_model() {
        use std::collections::BTreeSet;
        let model = include_str!("model.rs");
        let model = &model[..model.find("#[cfg(test)]").unwrap_or(model.len())];
        let mut from_model = BTreeSet::new();
        let mut message = "";
        let mut tag = None;
        for line in model.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("pub struct ") {
                message = rest.split([' ', '<']).next().unwrap_or_default();
            } else if line.starts_with("#[prost(") {
                tag = line
                    .split("tag = \"")
                    .nth(1)
                    .and_then(|t| t.split('"').next())
                    .map(str::to_string);
            } else if let (Some(t), Some(rest)) = (tag.take(), line.strip_prefix("pub ")) {
                let field = rest.split(':').next().unwrap_or_default();
                from_model.insert(format!("{message}.{field}={t}"));
            }
        }
        let proto = include_str!("../../recording.proto");
        let mut from_proto = BTreeSet::new();
        message = "";
        for line in proto.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("message ") {
                message = rest.split(' ').next().unwrap_or_default();
            } else if line.starts_with('}') {
                message = "";
            } else if !message.is_empty()
                && !line.starts_with("//")
                && line.ends_with(';')
                && line.contains(" = ")
            {
                let (decl, num) = line
                    .trim_end_matches(';')
                    .split_once(" = ")
                    .unwrap_or_default();
                let Some(field) = decl.split_whitespace().last() else {
                    continue;
                };
                if field
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                {
                    from_proto.insert(format!("{message}.{field}={num}"));
                }
            }
        }
        assert!(from_model.len() > 100, "parsed {} fields", from_model.len());
        let missing: Vec<_> = from_model.difference(&from_proto).collect();
        let extra: Vec<_> = from_proto.difference(&from_model).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "recording.proto out of date: missing {missing:?}, extra {extra:?}"
        );
    }

    #[test]
    fn recording_round_trips_through_bytes() {
        let r = sample_recording();
        let bytes = r.encode_to_vec();
        assert_eq!(Recording::decode(bytes.as_slice()).ok(), Some(r));
    }
}
