//! `--locks`: what the futex wait programs (`profiler-ebpf/src/programs/locks.rs`) and the
//! loader share.
//!
//! A target thread entering a futex wait sends a [`LockWaitEvent`] with its user registers
//! and the top of its user stack (the wait is in the C library, whose frames have no frame
//! pointers: userspace unwinds them with their CFI), and one [`LockDoneEvent`] when the call
//! returns. Only waits are seen, never the uncontended fast path, which makes no system call.
//!
//! The kernel's own locks (`lock:contention_begin`/`contention_end`, where the kernel has
//! them) are seen by a second pair of programs: the begin remembers its time per (thread,
//! lock), the end sends one [`KernelLockEvent`] with the whole wait, its kernel stack and, as
//! for a futex wait, the user registers and stack top (the thread is in a system call or a
//! page fault, usually in a C library wrapper without frame pointers).

pub mod names {
    pub const PROGRAM_FUTEX_ENTER: &str = "futex_enter";
    pub const PROGRAM_FUTEX_EXIT: &str = "futex_exit";
    /// Per thread: the wait it is in (its sequence number).
    pub const MAP_LOCK_WAITS: &str = "LOCK_WAITS";
    pub const MAP_LOCK_COUNTERS: &str = "LOCK_COUNTERS";
    pub const MAP_LOCK_SEQ: &str = "LOCK_SEQ";
    /// Per CPU: where a lock wait's record and stack copy are assembled.
    pub const MAP_LOCK_SCRATCH: &str = "LOCK_SCRATCH";
    pub const PROGRAM_KLOCK_BEGIN: &str = "klock_begin";
    pub const PROGRAM_KLOCK_END: &str = "klock_end";
    /// The same end program again, for the ends the kernel does not run `klock_end` for
    /// (nested in it on the same CPU).
    pub const PROGRAM_KLOCK_END_NESTED: &str = "klock_end_nested";
    /// Per (thread, kernel lock): the contention it is in.
    pub const MAP_KLOCK_WAITS: &str = "KLOCK_WAITS";
}

pub mod defaults {
    /// Threads waiting at once whose wait is remembered.
    pub const WAITS: u32 = 16384;
    /// (thread, kernel lock) contentions going on at once that are remembered.
    pub const KERNEL_WAITS: u32 = 16384;
}

/// futex operations that wait (`op & FUTEX_CMD_MASK`).
pub mod futex {
    pub const WAIT: u64 = 0;
    pub const LOCK_PI: u64 = 6;
    pub const WAIT_BITSET: u64 = 9;
    pub const WAIT_REQUEUE_PI: u64 = 11;
    pub const LOCK_PI2: u64 = 13;
    /// Without FUTEX_PRIVATE_FLAG (128) and FUTEX_CLOCK_REALTIME (256).
    pub const CMD_MASK: u64 = 0x7f;
}

/// A target thread begins waiting on a futex. The head of its record: its user registers
/// and stack top follow, as in a [`crate::SampleDwarfEvent`] (the same size as its head).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LockWaitEvent {
    /// [`crate::EventKind::LockWait`] as u32.
    pub kind: u32,
    pub cpu: u32,
    pub begin_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// The futex word: the lock (or condition) waited on, in the process's memory.
    pub uaddr: u64,
    /// Pairs it with its [`LockDoneEvent`].
    pub seq: u64,
    pub span_id: u64,
    pub op: u32,
    pub _pad: u32,
}

const _: () = assert!(size_of::<LockWaitEvent>() == size_of::<crate::SampleEvent>());
const _: () = assert!(size_of::<KernelLockEvent>() == size_of::<crate::SampleEvent>());

/// The wait ended (the futex call returned).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockDoneEvent {
    /// [`crate::EventKind::LockDone`] as u32.
    pub kind: u32,
    pub cpu: u32,
    pub end_ns: u64,
    pub seq: u64,
    pub tid: u32,
    pub _pad: u32,
}

/// What `LOCK_WAITS` keeps per waiting thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct LockWaiting {
    pub seq: u64,
    pub begin_ns: u64,
}

pub mod counter {
    /// Futex waits of target threads seen.
    pub const WAITS: u32 = 0;
    /// Waits not sent: ring buffer full.
    pub const LOST_RINGBUF: u32 = 1;
    /// Wait ends not sent: ring buffer full (the wait is then closed at the recording's end).
    pub const DONE_LOST: u32 = 2;
    /// Waits not remembered: LOCK_WAITS full.
    pub const WAITS_FULL: u32 = 3;
    /// Waits sent without their user stack: no user registers, the copy failed, or (never
    /// seen: a futex wait does not begin inside another lock program) the record was busy.
    pub const STACK_ERRORS: u32 = 4;
    /// Kernel lock contentions of target threads seen (`contention_begin`).
    pub const KERNEL_WAITS: u32 = 5;
    /// Kernel lock waits not sent at their end: ring buffer full.
    pub const KERNEL_LOST_RINGBUF: u32 = 6;
    /// Kernel lock contentions not remembered: KLOCK_WAITS full.
    pub const KERNEL_WAITS_FULL: u32 = 7;
    /// Kernel lock waits sent without their user stack: no user registers, the copy failed,
    /// or the wait's end ran nested in another lock program (the scratch record was busy).
    pub const KERNEL_STACK_ERRORS: u32 = 8;
    /// Kernel lock waits without a kernel stack (the stack map refused it).
    pub const KERNEL_KSTACK_ERRORS: u32 = 9;
    /// A contention began on a (thread, lock) whose previous one never ended (its end was
    /// missed): the old begin is dropped, the wait counted lost.
    pub const KERNEL_ENDS_MISSED: u32 = 10;
    /// Kernel lock contentions inside a futex wait of the thread, left out: the futex wait's
    /// time has them already.
    pub const KERNEL_IN_FUTEX: u32 = 11;
    pub const COUNT: u32 = 12;
}

/// `contention_begin`'s flags (`include/trace/events/lock.h`): what kind of lock it is.
pub mod lcb {
    pub const SPIN: u32 = 1 << 0;
    pub const READ: u32 = 1 << 1;
    pub const WRITE: u32 = 1 << 2;
    pub const RT: u32 = 1 << 3;
    pub const PERCPU: u32 = 1 << 4;
    pub const MUTEX: u32 = 1 << 5;
    pub const ALL: u32 = (1 << 6) - 1;

    /// The lock's kind as the flags tell it (`rwsem write`), None for a combination the
    /// kernel does not send today.
    pub fn kind(flags: u32) -> Option<&'static str> {
        Some(match flags & ALL {
            SPIN => "spinlock",
            f if f == SPIN | READ => "rwlock read",
            f if f == SPIN | WRITE => "rwlock write",
            READ => "rwsem read",
            WRITE => "rwsem write",
            RT => "rtmutex",
            f if f == RT | READ => "rt rwlock read",
            f if f == RT | WRITE => "rt rwlock write",
            f if f == PERCPU | READ => "percpu-rwsem read",
            f if f == PERCPU | WRITE => "percpu-rwsem write",
            // A mutex announces its optimistic spin (MUTEX | SPIN) and, when the spin fails,
            // its sleep (MUTEX): one wait either way.
            MUTEX => "mutex",
            f if f == MUTEX | SPIN => "mutex",
            _ => return None,
        })
    }
}

/// `KLOCK_WAITS`' key: a thread (host tid) and the lock it contends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLockKey {
    pub lock_addr: u64,
    pub host_tid: u32,
    pub _pad: u32,
}

/// What `KLOCK_WAITS` keeps per contention.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct KernelLockWaiting {
    pub begin_ns: u64,
    /// Process and thread ids as the profiler's PID namespace sees them.
    pub pid: u32,
    pub tid: u32,
    /// `contention_begin`'s flags ([`lcb`]).
    pub flags: u32,
    pub _pad: u32,
}

/// A target thread waited for a kernel lock: sent at the wait's end, with all of it. The
/// head of its record: its user registers and stack top follow, as in a
/// [`crate::SampleDwarfEvent`] (the same size as its head).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelLockEvent {
    /// [`crate::EventKind::KernelLock`] as u32.
    pub kind: u32,
    /// Id in the stack map, or a negative errno.
    pub kernel_stack_id: i32,
    pub begin_ns: u64,
    pub end_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// The lock's kernel address.
    pub lock_addr: u64,
    pub span_id: u64,
    /// `contention_begin`'s flags ([`lcb`]).
    pub flags: u32,
    /// `contention_end`'s ret: 0, or the error that ended the wait (-EINTR).
    pub ret: i32,
}
