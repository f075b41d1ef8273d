//! Types shared by the eBPF programs (`profiler-ebpf`) and the loader (`profiler-user`).
//!
//! Every type here crosses the kernel/user boundary as raw bytes, so all of them are
//! `#[repr(C)]`, contain no pointers and have explicit padding: one definition serves both
//! sides and a layout change breaks both builds at once instead of silently corrupting data.
#![no_std]

use core::mem::size_of;

pub mod alloc;
pub mod locks;

/// Frames kept per stack; the kernel's own limit for `bpf_get_stackid` (PERF_MAX_STACK_DEPTH).
pub const MAX_STACK_DEPTH: usize = 127;

/// Length of a task's `comm`, including the trailing NUL (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// Names of the maps and programs in the eBPF object, so the loader never spells them twice.
pub mod names {
    pub const PROGRAM_CPU_SAMPLE: &str = "cpu_sample";
    pub const PROGRAM_SPAN_BEGIN: &str = "span_begin";
    pub const PROGRAM_SPAN_END: &str = "span_end";
    pub const PROGRAM_SPAN_ENTER: &str = "span_enter";
    pub const PROGRAM_SPAN_EXIT: &str = "span_exit";
    pub const PROGRAM_SPAN_FN_ENTRY: &str = "span_fn_entry";
    pub const PROGRAM_SPAN_FN_RETURN: &str = "span_fn_return";
    pub const MAP_THREAD_SPANS: &str = "THREAD_SPANS";
    pub const MAP_PENDING_CHILDREN: &str = "PENDING_CHILDREN";
    /// Scopes beyond a list of pids: every process of the profiler's PID namespace, or
    /// every process in a cgroup v2 subtree (its id and depth below the root).
    pub const GLOBAL_SCOPE_ALL: &str = "SCOPE_ALL";
    pub const GLOBAL_SCOPE_CGROUP_ID: &str = "SCOPE_CGROUP_ID";
    pub const GLOBAL_SCOPE_CGROUP_LEVEL: &str = "SCOPE_CGROUP_LEVEL";
    /// Target flags (`target::DWARF`) of processes that join a scope.
    pub const GLOBAL_SCOPE_FLAGS: &str = "SCOPE_FLAGS";
    /// `--comm`: every exec of the PID namespace is reported, targets or not, so userspace
    /// can judge the new command name and add the process to (or drop it from) `TARGETS`.
    pub const GLOBAL_SCOPE_EXEC_EVENTS: &str = "SCOPE_EXEC_EVENTS";
    /// Span probes are placed for every process that maps a file (scopes, followed
    /// children): the programs then keep only targets' hits. 0 when they are placed for the
    /// one target only, which spares every hit a map look-up.
    pub const GLOBAL_SPANS_ANY_PROCESS: &str = "SPANS_ANY_PROCESS";
    pub const GLOBAL_FOLLOWS: &str = "FOLLOWS";
    pub const GLOBAL_OFF_CPU_SAMPLE: &str = "OFF_CPU_SAMPLE";
    pub const PROGRAM_PROCESS_FORK: &str = "process_fork";
    pub const PROGRAM_PROCESS_EXEC: &str = "process_exec";
    pub const PROGRAM_PROCESS_EXIT: &str = "process_exit";
    /// `task_rename`: samples send a thread's name again after any rename.
    pub const PROGRAM_THREAD_RENAMED: &str = "thread_renamed";
    /// The profiler's PID namespace (st_dev and st_ino of /proc/self/ns/pid): every pid the
    /// programs report or compare is as seen from there, so a profiler in a container works
    /// with the pids it can see.
    pub const GLOBAL_PIDNS_DEV: &str = "PIDNS_DEV";
    pub const GLOBAL_PIDNS_INO: &str = "PIDNS_INO";
    pub const MAP_EVENTS: &str = "EVENTS";
    pub const MAP_STACKS: &str = "STACKS";
    pub const MAP_WAIT_STACKS: &str = "WAIT_STACKS";
    pub const MAP_TARGETS: &str = "TARGETS";
    /// The process a recording is named after (`--pid`, the command of `run`) keeps its
    /// flags in this array (slots `target::PRIMARY_*`) instead of `TARGETS`: the sampler
    /// finds them by comparing with a constant, without hashing (issue 17).
    pub const MAP_PRIMARY_FLAGS: &str = "PRIMARY_FLAGS";
    /// Slot 0 becomes 1 when any thread first enters a span.
    pub const MAP_SPANS_STARTED: &str = "SPANS_STARTED";
    pub const MAP_SPANS_STOPPED: &str = "SPANS_STOPPED";
    pub const GLOBAL_PRIMARY_PID: &str = "PRIMARY_PID";
    /// No process but the primary can be a target (one pid, no children followed, no
    /// scope): every other process leaves the programs before any look-up.
    pub const GLOBAL_PRIMARY_ONLY: &str = "PRIMARY_ONLY";
    pub const MAP_COUNTERS: &str = "COUNTERS";
    pub const GLOBAL_WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// `--off-cpu`: the sched_switch program, its maps and settings.
    pub const PROGRAM_OFF_CPU: &str = "off_cpu_switch";
    pub const MAP_OFF_CPU_START: &str = "OFF_CPU_START";
    pub const MAP_OFF_CPU_OPEN: &str = "OFF_CPU_OPEN";
    pub const MAP_OFF_CPU_TOTALS: &str = "OFF_CPU_TOTALS";
    pub const GLOBAL_OFF_CPU_MIN_NS: &str = "OFF_CPU_MIN_NS";
    pub const GLOBAL_OFF_CPU_INTERVAL_MIN_NS: &str = "OFF_CPU_INTERVAL_MIN_NS";
    /// Offsets in kernel structures the raw tracepoint programs read, from the kernel's BTF.
    pub const GLOBAL_TASK_PID_OFFSET: &str = "TASK_PID_OFFSET";
    pub const GLOBAL_TASK_TGID_OFFSET: &str = "TASK_TGID_OFFSET";
    pub const GLOBAL_TASK_SIGNAL_OFFSET: &str = "TASK_SIGNAL_OFFSET";
    pub const GLOBAL_SIGNAL_LIVE_OFFSET: &str = "SIGNAL_LIVE_OFFSET";
    pub const GLOBAL_TASK_SUM_EXEC_OFFSET: &str = "TASK_SUM_EXEC_OFFSET";
    pub const GLOBAL_TASK_PREV_SUM_EXEC_OFFSET: &str = "TASK_PREV_SUM_EXEC_OFFSET";
    /// DWARF call graphs: bytes of user stack copied per sample, and the per-CPU scratch
    /// record they are assembled in (one entry per possible CPU).
    pub const GLOBAL_DWARF_STACK_BYTES: &str = "DWARF_STACK_BYTES";
    pub const MAP_DWARF_SCRATCH: &str = "DWARF_SCRATCH";
    /// Bytes of user stack to copy for each thread in DWARF mode, which userspace sizes from
    /// the thread's recent unwinds; a thread not in it gets `DWARF_STACK_BYTES`.
    pub const MAP_DWARF_COPY: &str = "DWARF_COPY";
}

/// Default sizes, overridable at load time.
pub mod defaults {
    /// Ring buffer bytes. A plain sample is 64 bytes with its header, so 8 MiB hold ~130k
    /// samples or span events: several seconds of every CPU at 10 kHz, or a burst of 30k
    /// spans (4 events each), which covers any stall of the reader.
    pub const EVENTS_BYTES: u32 = 8 << 20;
    /// Distinct stacks. Each entry preallocates 8 * 127 bytes: 16k entries cost 16 MiB.
    pub const STACK_ENTRIES: u32 = 16 << 10;
    /// Distinct off-CPU, lock wait and allocation stacks whose bucket in the stack map another
    /// stack held (see [`crate::WAIT_STACK_BIT`]): 4 MiB, made only when a run has such stacks.
    pub const WAIT_STACK_ENTRIES: u32 = 4 << 10;
    /// Processes that may be sampled at once.
    pub const MAX_TARGETS: u32 = 4096;
    /// Threads whose running spans are tracked at once (LRU: dead threads age out). Each
    /// entry is 264 bytes, preallocated: 16k threads cost 4 MiB.
    pub const MAX_SPAN_THREADS: u32 = 16384;
    /// Live target threads whose last switch-out is remembered (40 bytes each): an entry
    /// stays from a thread's first switch-out to its exit.
    pub const OFF_CPU_THREADS: u32 = 16384;
    /// Distinct (thread, stacks, span, state) off-CPU sums kept in the kernel, 16 bytes
    /// each (one map for all CPUs). Beyond it intervals travel as events (counted), so none is lost.
    pub const OFF_CPU_TOTALS: u32 = 16384;
    /// Threads whose DWARF stack copy is sized to their needs (LRU, 8 bytes each): a thread
    /// evicted goes back to the full `--stack-size` copy until userspace sizes it again.
    pub const DWARF_COPY_THREADS: u32 = 16384;
}

/// Flags, the values of the `TARGETS` map. After a target is added, the kernel changes its
/// value only by atomic adds (a plain read-modify-write racing another would store a stale
/// value back: a lost `SPANS`, or `PRESENT` set again after the exit), so the counts below
/// are fields an add cannot carry out of.
pub mod target {
    /// Children this process forks become targets too (in the kernel, so short-lived
    /// children are not missed).
    pub const FOLLOW: u32 = 1;
    /// Samples copy registers and the top of the user stack for DWARF unwinding in userspace
    /// instead of walking frame pointers. For the primary process it is in slot
    /// `PRIMARY_CALL_GRAPH` of `PRIMARY_FLAGS`, which only whoever sets the call graph writes.
    pub const DWARF: u32 = 2;
    /// Bits 8..20 count the samples that woke userspace at once, so it (re)reads the memory
    /// map while the process lives: the first sample of an image may come while the dynamic
    /// loader is still mapping libraries, so the first few do. An image's samples announce
    /// while the count modulo `ANNOUNCE_PERIOD` is below `ANNOUNCE_SAMPLES`; an exec adds up
    /// to the next multiple of the period. Only adds, never a subtraction: one racing a
    /// store of a smaller count would borrow from the fields above. Near the field's end the
    /// adds stop, and the process's later images announce no more (userspace still learns
    /// their maps from the side-band records).
    pub const ANNOUNCED_SHIFT: u32 = 8;
    pub const ANNOUNCED_MASK: u32 = 0xfff << ANNOUNCED_SHIFT;
    pub const ANNOUNCE_SAMPLES: u32 = 4;
    pub const ANNOUNCE_PERIOD: u32 = 8;
    /// The count the adds stop below, a period and its racing samples short of the field's end.
    pub const ANNOUNCED_LIMIT: u32 = (ANNOUNCED_MASK >> ANNOUNCED_SHIFT) - 4 * ANNOUNCE_PERIOD;
    /// Bits 20..31, set by the kernel when a thread of the process first enters a span: until
    /// then its samples skip the running-span look-up, whose cache lines are cold at 99 Hz.
    /// A count, not a bit, so that threads entering their first spans at once may each add
    /// one: the field holds 2047 of them.
    pub const SPANS_SHIFT: u32 = 20;
    pub const SPANS_MASK: u32 = 0x7ff << SPANS_SHIFT;
    /// In `PRIMARY_FLAGS` only: the primary process is a target (cleared at its exit, so
    /// that a later process given its pid is not taken for it).
    pub const PRESENT: u32 = 1 << 31;
    /// Slots of `PRIMARY_FLAGS`: the flags the kernel changes (all but `DWARF`), and the
    /// call graph (`DWARF` or 0), which userspace sets at an exec under `auto`. Apart, so
    /// that neither writer's store can undo the other's.
    pub const PRIMARY_KERNEL: u32 = 0;
    pub const PRIMARY_CALL_GRAPH: u32 = 1;
    pub const PRIMARY_SLOTS: u32 = 2;

    // The count fields are packed up to `PRESENT`, each below the next: the kernel adds to a
    // count only while it reads a small one, so only racing CPUs take it further.
    const _: () = assert!(ANNOUNCE_SAMPLES < ANNOUNCE_PERIOD);
    const _: () = assert!(ANNOUNCE_PERIOD.is_power_of_two());
    const _: () = assert!(ANNOUNCED_MASK + (1 << ANNOUNCED_SHIFT) == 1 << SPANS_SHIFT);
    const _: () = assert!(SPANS_MASK + (1 << SPANS_SHIFT) == PRESENT);
}

/// Largest user stack copy per sample (`--stack-size`); a power of two.
pub const MAX_DWARF_STACK: usize = 128 << 10;

/// x86-64 user registers DWARF unwinding starts from, and the stack above `sp`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DwarfRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// Bytes of stack copied from `sp` up.
    pub stack_len: u32,
    /// Where the registers came from: see [`dwarf_regs`].
    pub source: u32,
}

pub mod dwarf_regs {
    /// The tick interrupted user code: the interrupted registers.
    pub const INTERRUPTED: u32 = 1;
    /// The tick interrupted the kernel: the registers saved at the thread's kernel entry.
    pub const TASK: u32 = 2;
    /// Flag: the copy stopped at a page it could not read, the top of the stack (or a page
    /// not present): `sp + stack_len` is where the thread's stack ends.
    pub const STACK_END: u32 = 4;
    /// Flag: the copy stopped at the top of the stack userspace told the kernel for the
    /// thread (`dwarf_copy::top`), which may be wrong (a thread id reused).
    pub const AT_TOP: u32 = 8;
}

/// Values of the `DWARF_COPY` map: per thread, the bytes of stack to copy, in KiB (bits
/// 0..8), and the page of the top of its stack when known (bits 8..), so that a copy stops
/// there instead of failing whole. One u64, which both sides read without a shared struct.
pub mod dwarf_copy {
    const KIB_BITS: u32 = 8;

    /// `bytes` rounded up to whole KiB (at most 255 KiB); `top` rounded down to its page.
    pub const fn pack(bytes: u32, top: u64) -> u64 {
        let kib = bytes.div_ceil(1024);
        let kib = if kib > 255 { 255 } else { kib };
        ((top >> 12) << KIB_BITS) | kib as u64
    }

    pub const fn bytes(value: u64) -> u64 {
        (value & ((1 << KIB_BITS) - 1)) << 10
    }

    /// 0 when not known.
    pub const fn top(value: u64) -> u64 {
        (value >> KIB_BITS) << 12
    }
}

/// A sample for DWARF unwinding. Sent with only `stack_len` bytes of `stack`; the rest of the
/// array is scratch room, sized so that masked offsets provably stay inside it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SampleDwarfEvent {
    pub header: SampleEvent,
    pub regs: DwarfRegs,
    pub stack: [u8; 2 * MAX_DWARF_STACK],
}

/// Bytes of a [`SampleDwarfEvent`] before its stack.
pub const SAMPLE_DWARF_HEADER: usize = size_of::<SampleEvent>() + size_of::<DwarfRegs>();

/// Spans running at once on one thread that a sample can be attributed to.
pub const MAX_SPAN_DEPTH: usize = 32;

/// Ids the kernel gives to spans made by `--span-fn` probes: the top bit keeps them apart from
/// the ids instrumented programs choose; the next 8 bits are the CPU, the rest a per-CPU count.
pub const SPAN_FN_ID_BIT: u64 = 1 << 63;

/// The spans running on one thread, innermost last.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ThreadSpans {
    pub depth: u32,
    /// Enters beyond MAX_SPAN_DEPTH not tracked; their exits pop nothing.
    pub overflow: u32,
    pub ids: [u64; MAX_SPAN_DEPTH],
}

/// The span probe ABI: functions a target program calls at span begin/end/enter/exit, found by
/// symbol name and uprobed by the profiler. Stable: names, argument order and the metadata
/// layout only ever grow (a new version number), never change. x86-64 SysV calling convention.
///
/// - `profiler_span_begin(id: u64, parent: u64, meta: *const SpanMeta)`: a span exists
///   (`parent` 0 = root). `id` is unique within the process for the whole run (never reused),
///   nonzero and below 2^63: the top bit is reserved for spans the profiler makes itself.
/// - `profiler_span_end(id: u64)`: the span is finished.
/// - `profiler_span_enter(id: u64)`: the span starts running on the calling thread.
/// - `profiler_span_exit(id: u64)`: the span stops running on the calling thread.
pub mod abi {
    pub const SYM_BEGIN: &str = "profiler_span_begin";
    pub const SYM_END: &str = "profiler_span_end";
    pub const SYM_ENTER: &str = "profiler_span_enter";
    pub const SYM_EXIT: &str = "profiler_span_exit";
    pub const SYMBOLS: [&str; 4] = [SYM_BEGIN, SYM_END, SYM_ENTER, SYM_EXIT];
    /// `SpanMeta::version` of the layout below.
    pub const META_VERSION: u32 = 1;
    /// The machine code of each ABI function in profiler-probes (x86-64): a 1-byte nop, which
    /// every kernel emulates cheaply at a uprobe, then a 5-byte nop, which Linux 6.16+
    /// emulates and 6.18 rewrites into a call to a uprobe trampoline (no trap), then `ret`.
    /// A profiler probes `symbol + NOP5_PROBE_OFFSET` on such kernels and the symbol itself on
    /// older ones. Part of the ABI: implementations in other languages should use these bytes.
    pub const X86_64_CODE: [u8; 7] = [0x90, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0xc3];
    pub const NOP5_PROBE_OFFSET: u64 = 1;

    /// Static metadata of a span callsite, as the profiler reads it from the target's memory.
    /// Instrumentation libraries define the same layout with real pointers to NUL-terminated
    /// UTF-8 strings (null when unknown); the memory must live as long as the process.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct SpanMetaRaw {
        pub version: u32,
        pub line: u32,
        pub name: u64,
        pub target: u64,
        pub file: u64,
    }
}

/// Discriminant at the start of every ring buffer record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A [`SampleEvent`]: its stacks are ids into the stack map.
    Sample = 1,
    /// A [`SampleInlineEvent`]: the stack map could not take a stack (full, or a hash
    /// collision with a different stack), so the frames travel in the record itself.
    SampleInline = 2,
    /// [`SpanEvent`]s from the probe ABI.
    SpanBegin = 3,
    SpanEnd = 4,
    SpanEnter = 5,
    SpanExit = 6,
    /// [`SpanEvent`]s from `--span-fn` probes: a call (begin + enter; `meta` is the probe's
    /// index) and its return (exit + end).
    SpanFnCall = 7,
    SpanFnReturn = 8,
    /// [`ProcessEvent`]s: a target forked a process, exec'd, or exited.
    ProcessFork = 9,
    ProcessExec = 10,
    ProcessExit = 11,
    /// An [`OffCpuEvent`]: one interval a target thread spent off CPU.
    OffCpu = 12,
    /// A [`SampleDwarfEvent`], cut after its copied stack bytes.
    SampleDwarf = 13,
    /// An [`alloc::AllocEvent`]: one sampled allocation (`--alloc`).
    Alloc = 14,
    /// A [`locks::LockWaitEvent`]: a target thread began waiting on a futex (`--locks`); sent
    /// as the head of a [`SampleDwarfEvent`] (same size), cut after its copied stack bytes.
    LockWait = 15,
    /// A [`locks::LockDoneEvent`]: that wait ended.
    LockDone = 16,
    /// A [`locks::KernelLockEvent`]: a target thread waited for a kernel lock (`--locks`);
    /// sent as the head of a [`SampleDwarfEvent`] (same size), cut after its copied stack
    /// bytes.
    KernelLock = 17,
    /// A [`SampleDwarfEvent`] taken at a recorded switch-out of a thread in DWARF mode, cut
    /// after its copied stack bytes: the user stack of the off-CPU interval of that thread
    /// that begins at its `timestamp_ns` (whose `user_stack_id` is [`USER_STACK_COPIED`]).
    OffCpuStack = 18,
}

impl EventKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Sample),
            2 => Some(Self::SampleInline),
            3 => Some(Self::SpanBegin),
            4 => Some(Self::SpanEnd),
            5 => Some(Self::SpanEnter),
            6 => Some(Self::SpanExit),
            7 => Some(Self::SpanFnCall),
            8 => Some(Self::SpanFnReturn),
            9 => Some(Self::ProcessFork),
            10 => Some(Self::ProcessExec),
            11 => Some(Self::ProcessExit),
            12 => Some(Self::OffCpu),
            13 => Some(Self::SampleDwarf),
            14 => Some(Self::Alloc),
            15 => Some(Self::LockWait),
            16 => Some(Self::LockDone),
            17 => Some(Self::KernelLock),
            18 => Some(Self::OffCpuStack),
            _ => None,
        }
    }
}

/// One CPU-clock sample of a target thread.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SampleEvent {
    /// [`EventKind`] as u32.
    pub kind: u32,
    pub cpu: u32,
    /// CLOCK_BOOTTIME nanoseconds (Perfetto's default clock).
    pub timestamp_ns: u64,
    /// Process id (kernel tgid) in the initial PID namespace.
    pub pid: u32,
    /// Thread id (kernel pid) in the initial PID namespace.
    pub tid: u32,
    /// Id in the stack map, or a negative errno from `bpf_get_stackid`.
    pub user_stack_id: i32,
    /// Id in the stack map, or a negative errno (`-EFAULT` when the sample hit user mode).
    pub kernel_stack_id: i32,
    /// The thread's name at the time of the sample, NUL-padded; all zeros when the same CPU
    /// already sent it with an earlier sample of the thread and no task was renamed since.
    pub comm: [u8; COMM_LEN],
    /// The innermost span running on the thread, 0 for none.
    pub span_id: u64,
}

/// A span probe hit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanEvent {
    /// [`EventKind`] as u32.
    pub kind: u32,
    pub cpu: u32,
    pub timestamp_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub span_id: u64,
    /// Begin and span-fn calls: the parent span (0 = root).
    pub parent_id: u64,
    /// Begin: address of the callsite's `SpanMeta` in the target; span-fn calls: the probe's
    /// index in the `--span-fn` list.
    pub meta: u64,
}

/// A sample whose stacks did not fit in the stack map: frames are carried inline.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SampleInlineEvent {
    pub header: SampleEvent,
    /// Number of valid entries in `user`.
    pub user_len: u32,
    /// Number of valid entries in `kernel`.
    pub kernel_len: u32,
    /// Leaf first.
    pub user: [u64; MAX_STACK_DEPTH],
    /// Leaf first.
    pub kernel: [u64; MAX_STACK_DEPTH],
}

/// A change in the set of target processes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessEvent {
    /// [`EventKind`] as u32.
    pub kind: u32,
    pub cpu: u32,
    pub timestamp_ns: u64,
    /// The process forked, exec'd or exited.
    pub pid: u32,
    /// Fork: the parent process.
    pub parent: u32,
}

/// A target thread's switch-out, remembered (by its global tid) until it runs again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct OffCpuStart {
    pub start_ns: u64,
    pub span_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    /// 1 when the thread was preempted (still runnable: waiting for a CPU), 0 when it blocked.
    pub runnable: u32,
    pub _pad: u32,
}

/// `user_stack_id` of an off-CPU interval whose user stack went to userspace as a copy to
/// unwind (an [`EventKind::OffCpuStack`] record): such an interval has no stack id to be
/// summed under, so it is always sent as an [`OffCpuEvent`], with `in_totals` 0.
pub const USER_STACK_COPIED: i32 = i32::MIN;

/// Marks a stack id of the `WAIT_STACKS` map. The stack map hashes a stack's frames without
/// a seed to one bucket, which the first stack to come keeps: after a few thousand distinct
/// sampled stacks, a wait's stack (off-CPU, lock, allocation) finds its bucket taken one
/// time in four, and that site would have no stack for the whole recording. It goes to a
/// map of its own kind instead, where the samples' stacks are not.
pub const WAIT_STACK_BIT: u32 = 1 << 30;

/// What off-CPU time is summed by, in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OffCpuKey {
    pub pid: u32,
    pub tid: u32,
    /// Ids in the stack map, or a negative errno.
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    pub span_id: u64,
    pub runnable: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuTotal {
    pub total_ns: u64,
    pub count: u64,
}

/// One off-CPU interval: sent when it is long enough for the timeline, or when the totals map
/// had no room for its key (then `in_totals` is 0 and it counts only here).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuEvent {
    /// [`EventKind`] as u32.
    pub kind: u32,
    pub cpu: u32,
    pub begin_ns: u64,
    pub end_ns: u64,
    pub span_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub user_stack_id: i32,
    pub kernel_stack_id: i32,
    pub runnable: u32,
    pub in_totals: u32,
}

/// Indices into the per-CPU `COUNTERS` array. Every sample the program sees ends in exactly one
/// of `EMITTED` or `LOST_RINGBUF_FULL`; the others qualify emitted samples.
pub mod counter {
    /// Samples of a target thread seen by the program.
    pub const SEEN: u32 = 0;
    /// Samples written to the ring buffer.
    pub const EMITTED: u32 = 1;
    /// Samples dropped because the ring buffer had no room.
    pub const LOST_RINGBUF_FULL: u32 = 2;
    /// Samples whose user stack could not be walked (emitted with an empty user stack).
    pub const USER_STACK_ERROR: u32 = 3;
    /// Samples whose stacks the stack map could not take because it was full (sent inline).
    pub const STACK_MAP_FULL: u32 = 4;
    /// Samples whose stack collided with another stack in the map (sent inline).
    pub const STACK_MAP_COLLISION: u32 = 5;
    /// Samples whose kernel stack walk failed while in kernel mode (emitted without it).
    pub const KERNEL_STACK_ERROR: u32 = 6;
    /// Span probe hits written to the ring buffer.
    pub const SPAN_EVENTS: u32 = 7;
    /// Span probe hits dropped because the ring buffer had no room.
    pub const SPAN_EVENTS_LOST: u32 = 8;
    /// Enters on a thread already running MAX_SPAN_DEPTH spans (not tracked for samples).
    pub const SPAN_DEPTH_OVERFLOW: u32 = 9;
    /// Fork/exec/exit events dropped with the ring buffer full.
    pub const PROCESS_EVENTS_LOST: u32 = 10;
    /// Switch-outs of target threads recorded by the off-CPU program (1 in `--off-cpu-sample`).
    pub const OFF_CPU_SWITCHES: u32 = 11;
    /// Off-CPU intervals sent as events because the totals map was full.
    pub const OFF_CPU_TOTALS_FULL: u32 = 12;
    /// Off-CPU events dropped with the ring buffer full (lost time if not also in the totals).
    pub const OFF_CPU_EVENTS_LOST: u32 = 13;
    /// Off-CPU time lost: interval events not in the totals that the ring buffer refused.
    pub const OFF_CPU_LOST_NS: u32 = 14;
    /// Switch-outs not remembered because the start map was full.
    pub const OFF_CPU_START_FULL: u32 = 15;
    /// DWARF samples whose user stack copy failed at its first byte (sent without stack).
    pub const DWARF_STACK_ERROR: u32 = 16;
    /// DWARF samples sent with the frame-pointer stack instead: taken in the kernel with no
    /// user registers to start from, or on a CPU without a scratch record.
    pub const DWARF_NO_USER_REGS: u32 = 17;
    /// Target switch-outs that found the thread's previous switch-out still open: the
    /// program never saw that thread come back on CPU. The interval is closed at the time the
    /// thread's CPU time says it came back.
    pub const OFF_CPU_UNMATCHED: u32 = 18;
    /// Reads of kernel structures (task_struct fields at BTF offsets) that faulted: a
    /// switch-in, fork or exit the programs could not account.
    pub const KERNEL_READ_FAILED: u32 = 19;
    /// Children of followed processes not followed because PENDING_CHILDREN was full.
    pub const PENDING_CHILDREN_FULL: u32 = 20;
    /// Children not followed because TARGETS was full.
    pub const TARGETS_FULL: u32 = 21;
    /// Span enters not tracked because THREAD_SPANS was full (their samples get no span).
    pub const SPAN_THREADS_FULL: u32 = 22;
    /// Off-CPU user stack copies (DWARF mode) the ring buffer had no room for: their
    /// intervals are kept without a user stack.
    pub const OFF_CPU_STACKS_LOST: u32 = 23;
    /// Off-CPU user stack copies that failed at their first byte (sent without stack).
    pub const OFF_CPU_STACK_ERROR: u32 = 24;
    /// Off-CPU, lock wait and allocation stacks that neither stack map took (their buckets
    /// held by other stacks, or the maps full): kept without that stack.
    pub const WAIT_STACKS_REFUSED: u32 = 25;
    /// Size of the array.
    pub const COUNT: u32 = 26;
}

/// Errno values the program distinguishes (the kernel returns them negated).
pub mod errno {
    pub const EFAULT: i32 = 14;
    pub const EEXIST: i32 = 17;
    pub const ENOMEM: i32 = 12;
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::mem::{align_of, size_of};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<SampleEvent>(), 56);
        assert_eq!(
            size_of::<SampleInlineEvent>(),
            56 + 8 + 2 * 8 * MAX_STACK_DEPTH
        );
        assert_eq!(size_of::<SpanEvent>(), 48);
        assert_eq!(size_of::<ProcessEvent>(), 24);
        assert_eq!(size_of::<OffCpuStart>(), 40);
        assert_eq!(size_of::<OffCpuKey>(), 32);
        assert_eq!(size_of::<OffCpuTotal>(), 16);
        assert_eq!(size_of::<OffCpuEvent>(), 56);
        assert_eq!(SAMPLE_DWARF_HEADER, 56 + 32);
        assert!(MAX_DWARF_STACK.is_power_of_two());
        assert_eq!(size_of::<ThreadSpans>(), 8 + 8 * MAX_SPAN_DEPTH);
        assert_eq!(size_of::<abi::SpanMetaRaw>(), 32);
        assert_eq!(size_of::<alloc::AllocEvent>(), 80);
        assert_eq!(size_of::<alloc::AllocThread>(), 72);
        assert_eq!(size_of::<alloc::AllocKey>(), 16);
        assert_eq!(size_of::<locks::LockDoneEvent>(), 32);
        assert_eq!(size_of::<locks::LockWaitEvent>(), 56);
        assert_eq!(size_of::<locks::KernelLockKey>(), 16);
        assert_eq!(size_of::<locks::KernelLockWaiting>(), 24);
        assert_eq!(size_of::<locks::KernelLockEvent>(), 56);
        // The ring buffer hands out 8-byte aligned records.
        assert!(align_of::<SampleInlineEvent>() <= 8);
    }

    #[test]
    fn target_flag_fields_do_not_overlap() {
        let fields = [
            target::FOLLOW,
            target::DWARF,
            target::ANNOUNCED_MASK,
            target::SPANS_MASK,
            target::PRESENT,
        ];
        for (i, a) in fields.iter().enumerate() {
            for b in &fields[i + 1..] {
                assert_eq!(a & b, 0, "{a:#x} and {b:#x} overlap");
            }
        }
    }

    #[test]
    fn event_kind_round_trips() {
        for k in [
            EventKind::Sample,
            EventKind::SampleInline,
            EventKind::SpanBegin,
            EventKind::SpanEnd,
            EventKind::SpanEnter,
            EventKind::SpanExit,
            EventKind::SpanFnCall,
            EventKind::SpanFnReturn,
            EventKind::ProcessFork,
            EventKind::ProcessExec,
            EventKind::ProcessExit,
            EventKind::OffCpu,
            EventKind::SampleDwarf,
            EventKind::Alloc,
            EventKind::LockWait,
            EventKind::LockDone,
            EventKind::KernelLock,
            EventKind::OffCpuStack,
        ] {
            assert_eq!(EventKind::from_u32(k as u32), Some(k));
        }
        assert_eq!(EventKind::from_u32(0), None);
    }
}
