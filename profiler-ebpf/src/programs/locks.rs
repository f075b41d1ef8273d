//! `--locks`: futex waits of target threads, from the `syscalls` tracepoints of the futex
//! system call (which fire only for futex calls: other system calls pay nothing). A thread
//! outside the targets leaves at its first look-up. A wait sends its user registers and the
//! top of the user stack at entry (a copy sized per thread), and its end when the call
//! returns.
//!
//! Kernel lock contention of target threads, from `lock:contention_begin`/`contention_end`
//! (raw tracepoints: no record is formatted for them, and they fire for every contended
//! kernel lock of the machine, so the early exit must be cheap): the begin remembers its
//! time, the end sends the whole wait with its kernel stack, and its user stack copied as a
//! futex wait's is.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, generated::bpf_ktime_get_boot_ns,
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, HashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};
use profiler_common::{
    DwarfRegs, EventKind, SampleDwarfEvent, errno,
    locks::{
        KernelLockEvent, KernelLockKey, KernelLockWaiting, LockDoneEvent, LockWaitEvent,
        LockWaiting, counter, defaults, futex, lcb,
    },
};

use super::{
    EVENTS, current_ids, innermost_span, saved_user_regs, send_stack_copy, submit_flags,
    target_flags, wait_stack_id,
};

#[map(name = "LOCK_WAITS")]
static LOCK_WAITS: HashMap<u32, LockWaiting> = HashMap::with_max_entries(defaults::WAITS, 0);

#[map(name = "LOCK_COUNTERS")]
static LOCK_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[map(name = "KLOCK_WAITS")]
static KLOCK_WAITS: HashMap<KernelLockKey, KernelLockWaiting> =
    HashMap::with_max_entries(defaults::KERNEL_WAITS, 0);

#[map(name = "LOCK_SEQ")]
static LOCK_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
fn bump(index: u32) {
    if let Some(v) = LOCK_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; tracepoint programs run with preemption disabled.
        unsafe { *v += 1 };
    }
}

/// One record per CPU to assemble lock waits in, with their user stack copies, as
/// `DWARF_SCRATCH` is for samples: apart from it, since an IRQ may interrupt these programs
/// and the sampler runs in one. Indexed by CPU (the loader sizes it).
#[map(name = "LOCK_SCRATCH")]
static LOCK_SCRATCH: Array<SampleDwarfEvent> = Array::with_max_entries(1, 0);

/// Per CPU: 1 while a program assembles its wait in this CPU's `LOCK_SCRATCH` record. The
/// kernel lock end programs may run nested in the futex program or in each other (a
/// contention ending in an interrupt): the nested one sends its wait without stack rather
/// than overwrite the record being sent. One record per CPU, not one per program: a record
/// holds the largest copy (~256 KiB).
#[map(name = "LOCK_SCRATCH_BUSY")]
static LOCK_SCRATCH_BUSY: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// Sends a wait's record, `head`, followed by the user registers and the top of `tid`'s user
/// stack, sized per thread as DWARF samples' copies are: futex waits happen in the C library,
/// which has no frame pointers, and a fixed copy cut deep callers' stacks short. False when
/// the ring buffer refused it (the caller counts the wait lost). A wait sent without stack
/// (no user registers, the copy failed, or the record busy) is counted at `errors`.
#[inline(always)]
fn send_wait<H: Copy + 'static>(tid: u32, head: H, errors: u32) -> bool {
    let without_stack = |head: H| {
        let sent = send_head(head);
        if sent {
            bump(errors);
        }
        sent
    };
    let (Some(busy), Some(user)) = (LOCK_SCRATCH_BUSY.get_ptr_mut(0), saved_user_regs()) else {
        return without_stack(head);
    };
    // SAFETY: per-CPU slot; a program nested on this CPU runs to its end before this one
    // goes on.
    if unsafe { *busy } != 0 {
        return without_stack(head);
    }
    // SAFETY: plain helper call without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let mut empty = false;
    // SAFETY: as above.
    unsafe { *busy = 1 };
    let sent = send_stack_copy(
        &LOCK_SCRATCH,
        cpu,
        tid,
        head,
        user,
        submit_flags(false),
        || empty = true,
    );
    // SAFETY: as above.
    unsafe { *busy = 0 };
    match sent {
        Some(true) => {
            if empty {
                bump(errors);
            }
            true
        }
        Some(false) => false,
        None => without_stack(head),
    }
}

/// A wait's record without stack: its head and empty registers.
#[inline(always)]
fn send_head<H: Copy + 'static>(head: H) -> bool {
    #[repr(C)]
    struct Headed<H> {
        head: H,
        regs: DwarfRegs,
    }
    let Some(mut entry) = EVENTS.reserve::<Headed<H>>(0) else {
        return false;
    };
    entry.write(Headed {
        head,
        regs: DwarfRegs::default(),
    });
    entry.submit(submit_flags(false));
    true
}

/// sys_enter_futex: (nr, uaddr, op, val, utime, uaddr2, val3) from offset 8, 8 bytes each
/// but the number.
#[tracepoint(category = "syscalls", name = "sys_enter_futex")]
pub fn futex_enter(ctx: TracePointContext) -> u32 {
    let Some((pid, tid)) = current_ids() else {
        return 0;
    };
    if target_flags(pid).is_none() {
        return 0;
    }
    // SAFETY: offsets of the tracepoint's format, stable for syscall tracepoints.
    let (uaddr, op) = unsafe {
        (
            ctx.read_at::<u64>(16).unwrap_or(0),
            ctx.read_at::<u64>(24).unwrap_or(0),
        )
    };
    let cmd = op & futex::CMD_MASK;
    if !matches!(
        cmd,
        futex::WAIT
            | futex::LOCK_PI
            | futex::WAIT_BITSET
            | futex::WAIT_REQUEUE_PI
            | futex::LOCK_PI2
    ) {
        return 0;
    }
    bump(counter::WAITS);
    // SAFETY: plain helper calls without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let seq = match LOCK_SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; tracepoint programs run with preemption disabled.
        Some(s) => unsafe {
            *s += 1;
            (u64::from(cpu) << 48) | (*s & ((1 << 48) - 1))
        },
        None => 0,
    };
    let wait = LockWaitEvent {
        kind: EventKind::LockWait as u32,
        cpu,
        begin_ns: now,
        pid,
        tid,
        uaddr,
        seq,
        span_id: innermost_span(tid),
        op: op as u32,
        _pad: 0,
    };
    // Remembered before it is sent: a kernel lock contended while it is sent (the ring
    // buffer's wake-up takes a run queue lock) is then inside this wait (`klock_begin`), and
    // is not counted apart, without its user stack (the scratch record is busy).
    let remembered = LOCK_WAITS
        .insert(tid, LockWaiting { seq, begin_ns: now }, 0)
        .is_ok();
    // One loss, one count: a wait not sent is not also one not remembered.
    if !send_wait(tid, wait, counter::STACK_ERRORS) {
        bump(counter::LOST_RINGBUF);
        if remembered {
            let _ = LOCK_WAITS.remove(tid);
        }
    } else if !remembered {
        bump(counter::WAITS_FULL);
    }
    0
}

#[tracepoint(category = "syscalls", name = "sys_exit_futex")]
pub fn futex_exit(_ctx: TracePointContext) -> u32 {
    let Some((_, tid)) = current_ids() else {
        return 0;
    };
    // SAFETY: a plain copy of the value; only waits of targets were remembered.
    let Some(w) = (unsafe { LOCK_WAITS.get(tid) }).copied() else {
        return 0;
    };
    let _ = LOCK_WAITS.remove(tid);
    let done = LockDoneEvent {
        kind: EventKind::LockDone as u32,
        // SAFETY: plain helper calls without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        end_ns: unsafe { bpf_ktime_get_boot_ns() },
        seq: w.seq,
        tid,
        _pad: 0,
    };
    match EVENTS.reserve::<LockDoneEvent>(0) {
        Some(mut entry) => {
            entry.write(done);
            entry.submit(submit_flags(false));
        }
        None => bump(counter::DONE_LOST),
    }
    0
}

/// contention_begin(void *lock, unsigned int flags). A thread outside the targets leaves
/// after its target look-up, as in the futex programs.
#[raw_tracepoint(tracepoint = "contention_begin")]
pub fn klock_begin(ctx: RawTracePointContext) -> u32 {
    let Some((pid, tid)) = current_ids() else {
        return 0;
    };
    if target_flags(pid).is_none() {
        return 0;
    }
    // Inside a futex wait (the futex's hash bucket lock, a wake-up's run queue lock) the
    // time is the futex wait's already: counting it again would show it twice.
    // SAFETY: a look-up only.
    if unsafe { LOCK_WAITS.get(tid) }.is_some() {
        bump(counter::KERNEL_IN_FUTEX);
        return 0;
    }
    let lock: u64 = ctx.arg(0);
    let flags = ctx.arg::<u64>(1) as u32;
    let key = KernelLockKey {
        lock_addr: lock,
        host_tid: bpf_get_current_pid_tgid() as u32,
        _pad: 0,
    };
    let waiting = KernelLockWaiting {
        // SAFETY: plain helper call without arguments.
        begin_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid,
        tid,
        flags,
        _pad: 0,
    };
    match KLOCK_WAITS.insert(key, waiting, BPF_NOEXIST as u64) {
        Ok(()) => bump(counter::KERNEL_WAITS),
        Err(e) if e == -errno::EEXIST => {
            let Some(w) = KLOCK_WAITS.get_ptr_mut(key) else {
                return 0;
            };
            // SAFETY: this thread's own entry; only it updates or removes it.
            unsafe {
                // One mutex wait announces its optimistic spin (MUTEX | SPIN), then its sleep
                // (MUTEX), and again both each time it wakes as the first waiter and spins
                // (__mutex_lock_common's wait loop): the same wait goes on.
                if (*w).flags & lcb::MUTEX != 0 && flags & lcb::MUTEX != 0 {
                    (*w).flags = flags;
                } else {
                    // The previous contention's end was missed: it is dropped, counted.
                    bump(counter::KERNEL_ENDS_MISSED);
                    bump(counter::KERNEL_WAITS);
                    *w = waiting;
                }
            }
        }
        Err(_) => {
            bump(counter::KERNEL_WAITS);
            bump(counter::KERNEL_WAITS_FULL);
        }
    }
    0
}

/// contention_end(void *lock, int ret). A thread without a remembered contention leaves after
/// one look-up.
///
/// The kernel does not run a raw tracepoint program on a CPU where it is already running
/// (it counts a recursion miss instead), and a contention can begin and end inside it: the
/// ring buffer's wake-up in this program is an interrupt (irq_work) that wakes the reader,
/// taking the run queue lock, on the spot when interrupts are on; a timer tick can do the
/// same. Its begin is remembered (another program) but its end would never come, and
/// the thread's next contention of that lock counted the wait lost while bpftrace saw it.
/// So the end is attached twice, as two programs: when one is running, the other sees
/// the end nested in it. Both run for every end; the one whose removal of the contention
/// succeeds sends it.
#[raw_tracepoint(tracepoint = "contention_end")]
pub fn klock_end(ctx: RawTracePointContext) -> u32 {
    klock_end_run(&ctx)
}

/// [`klock_end`]'s twin, for the ends nested in it (and its for those nested in this one).
#[raw_tracepoint(tracepoint = "contention_end")]
pub fn klock_end_nested(ctx: RawTracePointContext) -> u32 {
    klock_end_run(&ctx)
}

#[inline(always)]
fn klock_end_run(ctx: &RawTracePointContext) -> u32 {
    let key = KernelLockKey {
        lock_addr: ctx.arg(0),
        host_tid: bpf_get_current_pid_tgid() as u32,
        _pad: 0,
    };
    // SAFETY: a plain copy of the value; only contentions of targets were remembered.
    let Some(w) = (unsafe { KLOCK_WAITS.get(key) }).copied() else {
        return 0;
    };
    // The twin program took it (it ran nested in this one, between the look-up and here).
    if KLOCK_WAITS.remove(key).is_err() {
        return 0;
    }
    // SAFETY: plain helper call without arguments.
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let kernel = wait_stack_id(ctx, 0);
    let event = KernelLockEvent {
        kind: EventKind::KernelLock as u32,
        tid: w.tid,
        pid: w.pid,
        begin_ns: w.begin_ns,
        end_ns: now,
        lock_addr: key.lock_addr,
        span_id: innermost_span(w.tid),
        flags: w.flags,
        ret: ctx.arg::<u64>(1) as i32,
        kernel_stack_id: kernel,
    };
    // A wait not sent is counted lost, and only that.
    if !send_wait(w.tid, event, counter::KERNEL_STACK_ERRORS) {
        bump(counter::KERNEL_LOST_RINGBUF);
    } else if kernel < 0 {
        bump(counter::KERNEL_KSTACK_ERRORS);
    }
    0
}
