//! `--alloc`: what the allocator probes (`profiler-ebpf/src/alloc.rs`) and the loader share.
//!
//! The probes sample allocations by bytes: each CPU counts down a random number of bytes
//! (exponential, mean `ALLOC_SAMPLE_BYTES`), and the allocation that reaches zero is sampled,
//! so that every byte has the same chance of being the sampled one whatever the size of the
//! allocations around it. A sampled allocation of `s` bytes stands for `s / (1 - e^(-s/mean))`
//! bytes (userspace scales it back).

/// Names of the programs, maps and globals of `--alloc`.
pub mod names {
    pub const PROGRAM_ALLOC_ENTRY: &str = "alloc_entry";
    pub const PROGRAM_ALLOC_RETURN: &str = "alloc_return";
    pub const PROGRAM_ALLOC_FREE: &str = "alloc_free";
    /// Per thread: the allocator call it is in, between entry and return.
    pub const MAP_ALLOC_THREADS: &str = "ALLOC_THREADS";
    /// Sampled allocations not freed yet: (pid, address) → sequence number.
    pub const MAP_ALLOC_LIVE: &str = "ALLOC_LIVE";
    /// Exponential variates with mean `ALLOC_SAMPLE_BYTES`, filled in by the loader.
    pub const MAP_ALLOC_EXP: &str = "ALLOC_EXP";
    pub const MAP_ALLOC_COUNTDOWN: &str = "ALLOC_COUNTDOWN";
    pub const MAP_ALLOC_SEQ: &str = "ALLOC_SEQ";
    pub const MAP_ALLOC_COUNTERS: &str = "ALLOC_COUNTERS";
    /// Mean bytes between samples; 1 or less samples every allocation.
    pub const GLOBAL_ALLOC_SAMPLE_BYTES: &str = "ALLOC_SAMPLE_BYTES";
    /// Probes placed on a file for every process (`--all`): only targets' calls count.
    pub const GLOBAL_ALLOC_ANY_PROCESS: &str = "ALLOC_ANY_PROCESS";
}

pub mod defaults {
    /// Mean bytes between sampled allocations (`--alloc-sample`); see the README for the
    /// measurement behind it.
    pub const SAMPLE_BYTES: u64 = 512 << 10;
    /// Entries of the exponential table: a power of two (the index is masked).
    pub const EXP_ENTRIES: u32 = 4096;
    /// Sampled allocations alive at once that are tracked for `inuse` (24 bytes each).
    pub const LIVE_ENTRIES: u32 = 1 << 16;
    /// Threads inside an allocator call at once (only sampled calls and the calls that may
    /// call the allocator again inside, like `realloc`, are kept).
    pub const THREADS: u32 = 16384;
}

/// The functions probed; an attach cookie tells the programs which one hit.
pub mod func {
    /// `malloc(size)`
    pub const MALLOC: u64 = 0;
    /// `calloc(n, size)`
    pub const CALLOC: u64 = 1;
    /// `realloc(ptr, size)`
    pub const REALLOC: u64 = 2;
    /// `aligned_alloc(align, size)`, `memalign(align, size)`
    pub const ALIGNED_ALLOC: u64 = 3;
    /// `posix_memalign(&ptr, align, size)`: the address is written through its first argument.
    pub const POSIX_MEMALIGN: u64 = 4;
    /// `valloc(size)`, `pvalloc(size)`
    pub const VALLOC: u64 = 5;
    /// `free(ptr)`
    pub const FREE: u64 = 6;
    /// The symbols, with what each is. A file where two of them share an address (an alias)
    /// is probed there once.
    pub const SYMBOLS: [(&str, u64); 9] = [
        ("malloc", MALLOC),
        ("calloc", CALLOC),
        ("realloc", REALLOC),
        ("aligned_alloc", ALIGNED_ALLOC),
        ("memalign", ALIGNED_ALLOC),
        ("posix_memalign", POSIX_MEMALIGN),
        ("valloc", VALLOC),
        ("pvalloc", VALLOC),
        ("free", FREE),
    ];
    pub const NAMES: [&str; 7] = [
        "malloc",
        "calloc",
        "realloc",
        "aligned_alloc",
        "posix_memalign",
        "valloc",
        "free",
    ];
    /// Whether the function may call the allocator's own entry points inside (glibc:
    /// `realloc(NULL, n)` calls `malloc`, `realloc(p, 0)` calls `free`, small alignments call
    /// `malloc`): calls nested in it are not counted again.
    pub const fn may_nest(f: u64) -> bool {
        f != MALLOC && f != CALLOC
    }
}

/// A thread inside an allocator call (entry seen, return not yet).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocThread {
    /// The stack pointer at entry: calls nested inside have a lower one, and the return of
    /// this call comes with it 8 bytes higher (the return address popped).
    pub sp: u64,
    pub size: u64,
    /// realloc: the block it replaces.
    pub old_ptr: u64,
    /// posix_memalign: where the address will be written.
    pub out_ptr: u64,
    /// The return address at entry: the allocating call site (see `AllocEvent::caller`).
    pub caller: u64,
    pub timestamp_ns: u64,
    pub span_id: u64,
    pub pid: u32,
    pub func: u32,
    pub sampled: u32,
    pub user_stack_id: i32,
}

/// What `ALLOC_LIVE` is keyed by.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AllocKey {
    pub pid: u32,
    pub _pad: u32,
    pub addr: u64,
}

/// Each CPU's byte countdown to its next sample.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AllocCountdown {
    pub remaining: u64,
    /// 0 until the first draw.
    pub started: u64,
}

/// One sampled allocation, sent when the allocator returned it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocEvent {
    /// [`crate::EventKind::Alloc`] as u32.
    pub kind: u32,
    pub cpu: u32,
    /// At the allocator's entry (CLOCK_BOOTTIME).
    pub timestamp_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// Bytes asked for.
    pub size: u64,
    pub addr: u64,
    /// Its key in `ALLOC_LIVE`: the allocations still there at the end were never freed.
    pub seq: u64,
    /// The return address at the allocator's entry. The frame-pointer walk at a function's
    /// first instruction skips its caller (the frame is not set up yet), and the caller is
    /// the allocation site: userspace puts it back above the leaf.
    pub caller: u64,
    pub span_id: u64,
    pub user_stack_id: i32,
    /// [`func`] of the call.
    pub func: u32,
    /// 0 when `ALLOC_LIVE` had no room: whether it is freed is unknown (counted).
    pub tracked: u32,
    pub _pad: u32,
}

/// Indices into the per-CPU `ALLOC_COUNTERS` array.
pub mod counter {
    /// Allocator calls of targets seen (nested calls apart), and their bytes: the exact
    /// totals the sampled estimate is compared with.
    pub const CALLS: u32 = 0;
    pub const BYTES: u32 = 1;
    pub const FREES: u32 = 2;
    /// Calls made inside another allocator call (not counted again).
    pub const NESTED: u32 = 3;
    /// Allocations the countdown chose.
    pub const SAMPLED: u32 = 4;
    /// Sampled allocations sent.
    pub const EMITTED: u32 = 5;
    /// Sampled allocations lost with the ring buffer full.
    pub const LOST_RINGBUF: u32 = 6;
    /// Sampled allocations lost because `ALLOC_THREADS` was full between entry and return.
    pub const THREADS_FULL: u32 = 7;
    /// Sampled allocations sent untracked: `ALLOC_LIVE` full (their free is never seen).
    pub const LIVE_FULL: u32 = 8;
    /// Sampled calls that failed (returned no memory): nothing allocated.
    pub const FAILED: u32 = 9;
    /// Frees of sampled allocations seen.
    pub const SAMPLED_FREES: u32 = 10;
    /// Size of the array.
    pub const COUNT: u32 = 11;
}
