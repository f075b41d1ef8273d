//! `--locks`: futex waits of target threads, from the `syscalls` tracepoints of the futex
//! system call (which fire only for futex calls: other system calls pay nothing). A thread
//! outside the targets leaves at its first look-up. A wait sends its user registers and the
//! top of the user stack at entry, and its end when the call returns.
//!
//! Kernel lock contention of target threads, from `lock:contention_begin`/`contention_end`
//! (raw tracepoints: no record is formatted for them, and they fire for every contended
//! kernel lock of the machine, so the early exit must be cheap): the begin remembers its
//! time, the end sends the whole wait with both stacks.
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_probe_read_kernel,
        generated::{
            bpf_get_current_task_btf, bpf_ktime_get_boot_ns, bpf_probe_read_user, bpf_task_pt_regs,
        },
    },
    macros::{map, raw_tracepoint, tracepoint},
    maps::{HashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext, tracing::StackIdContext},
};
use profiler_common::{
    DwarfRegs, EventKind, dwarf_regs, errno,
    locks::{
        KernelLockEvent, KernelLockKey, KernelLockWaiting, LOCK_STACK_BYTES, LockDoneEvent,
        LockWaitEvent, LockWaiting, counter, defaults, futex, lcb,
    },
};

use super::{
    EVENTS, REG_BP, REG_IP, REG_SP, STACKS, current_ids, innermost_span, submit_flags, target_flags,
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

/// The registers the thread entered the kernel with, and the top of its user stack copied
/// to `stack` (LOCK_STACK_BYTES of room); a failed copy is counted at `errors`.
#[inline(always)]
fn user_regs_and_stack(stack: *mut core::ffi::c_void, errors: u32) -> DwarfRegs {
    // SAFETY: helpers on the current task; the pointer is only read through
    // bpf_probe_read_kernel; `stack` has LOCK_STACK_BYTES of room.
    unsafe {
        let task_regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u64;
        let read = |slot: usize| {
            if task_regs.is_null() {
                0
            } else {
                bpf_probe_read_kernel(task_regs.add(slot)).unwrap_or(0)
            }
        };
        let (ip, sp, bp) = (read(REG_IP), read(REG_SP), read(REG_BP));
        // The whole copy fails when it runs past the stack's mapping: then a shorter one.
        let mut len = LOCK_STACK_BYTES as u32;
        if sp == 0 || bpf_probe_read_user(stack, len, sp as *const core::ffi::c_void) != 0 {
            len = 256;
            if sp == 0 || bpf_probe_read_user(stack, len, sp as *const core::ffi::c_void) != 0 {
                len = 0;
                bump(errors);
            }
        }
        DwarfRegs {
            ip,
            sp,
            bp,
            stack_len: len,
            source: dwarf_regs::TASK,
        }
    }
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
    let Some(mut entry) = EVENTS.reserve::<LockWaitEvent>(0) else {
        bump(counter::LOST_RINGBUF);
        return 0;
    };
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record, written field by field.
    unsafe {
        let regs = user_regs_and_stack(
            core::ptr::addr_of_mut!((*e).stack) as *mut core::ffi::c_void,
            counter::STACK_ERRORS,
        );
        let len = regs.stack_len;
        (*e).kind = EventKind::LockWait as u32;
        (*e).cpu = cpu;
        (*e).begin_ns = now;
        (*e).pid = pid;
        (*e).tid = tid;
        (*e).uaddr = uaddr;
        (*e).seq = seq;
        (*e).span_id = innermost_span(tid);
        (*e).op = op as u32;
        (*e).stack_len = len;
        (*e).regs = regs;
    }
    entry.submit(submit_flags(false));
    if LOCK_WAITS
        .insert(tid, LockWaiting { seq, begin_ns: now }, 0)
        .is_err()
    {
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
    let Some(mut entry) = EVENTS.reserve::<KernelLockEvent>(0) else {
        bump(counter::KERNEL_LOST_RINGBUF);
        return 0;
    };
    let kernel = match ctx.get_stackid(&STACKS, 0) {
        Ok(id) => id as i32,
        Err(e) => e,
    };
    if kernel < 0 {
        bump(counter::KERNEL_KSTACK_ERRORS);
    }
    let e = entry.as_mut_ptr();
    // SAFETY: `e` is the reserved record, written field by field.
    unsafe {
        let regs = user_regs_and_stack(
            core::ptr::addr_of_mut!((*e).stack) as *mut core::ffi::c_void,
            counter::KERNEL_STACK_ERRORS,
        );
        (*e).kind = EventKind::KernelLock as u32;
        (*e).cpu = bpf_get_smp_processor_id();
        (*e).begin_ns = w.begin_ns;
        (*e).end_ns = now;
        (*e).pid = w.pid;
        (*e).tid = w.tid;
        (*e).lock_addr = key.lock_addr;
        (*e).span_id = innermost_span(w.tid);
        (*e).flags = w.flags;
        (*e).ret = ctx.arg::<u64>(1) as i32;
        (*e).kernel_stack_id = kernel;
        (*e).stack_len = regs.stack_len;
        (*e).regs = regs;
    }
    entry.submit(submit_flags(false));
    0
}
