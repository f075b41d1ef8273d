//! `--locks`: what the futex wait programs (`profiler-ebpf/src/programs/locks.rs`) and the
//! loader share.
//!
//! A target thread entering a futex wait sends a [`LockWaitEvent`] with its user registers
//! and the top of its user stack (the wait is in the C library, whose frames have no frame
//! pointers: userspace unwinds them with their CFI), and one [`LockDoneEvent`] when the call
//! returns. Only waits are seen, never the uncontended fast path, which makes no system call.

pub mod names {
    pub const PROGRAM_FUTEX_ENTER: &str = "futex_enter";
    pub const PROGRAM_FUTEX_EXIT: &str = "futex_exit";
    /// Per thread: the wait it is in (its sequence number).
    pub const MAP_LOCK_WAITS: &str = "LOCK_WAITS";
    pub const MAP_LOCK_COUNTERS: &str = "LOCK_COUNTERS";
    pub const MAP_LOCK_SEQ: &str = "LOCK_SEQ";
}

pub mod defaults {
    /// Threads waiting at once whose wait is remembered.
    pub const WAITS: u32 = 16384;
}

/// Bytes of user stack sent per wait: the C library's lock and wait frames plus the caller's.
pub const LOCK_STACK_BYTES: usize = 2048;

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

/// A target thread begins waiting on a futex.
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
    /// Bytes of `stack` copied (0 when the copy failed).
    pub stack_len: u32,
    pub regs: crate::DwarfRegs,
    pub stack: [u8; LOCK_STACK_BYTES],
}

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
    /// Waits whose user stack could not be copied.
    pub const STACK_ERRORS: u32 = 4;
    pub const COUNT: u32 = 5;
}
