//! `--alloc`: uprobes on the targets' allocator (malloc, calloc, realloc, the aligned
//! allocators) and on free, placed by the loader for target processes only, so a process
//! that is not recorded never traps here.
//!
//! Allocations are sampled by bytes with a per-CPU countdown (see `profiler_common::alloc`).
//! An unsampled call costs the trap, one look-up of the calling thread in `ALLOC_THREADS`
//! and the countdown; a sampled one also takes its stack, and at its return sends one record
//! and remembers its address in `ALLOC_LIVE`, which `free` clears.
use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_smp_processor_id,
        generated::{
            bpf_get_attach_cookie, bpf_get_prandom_u32, bpf_ktime_get_boot_ns, bpf_probe_read_user,
        },
    },
    macros::{map, uprobe, uretprobe},
    maps::{Array, HashMap, PerCpuArray},
    programs::{ProbeContext, RetProbeContext},
};
use profiler_common::{
    EventKind,
    alloc::{AllocCountdown, AllocEvent, AllocKey, AllocThread, counter, defaults, func},
};

use super::{EVENTS, current_ids, innermost_span, submit_flags, target_flags, wait_stack_id};
use aya_ebpf::bindings::BPF_F_USER_STACK;

#[map(name = "ALLOC_THREADS")]
static ALLOC_THREADS: HashMap<u32, AllocThread> = HashMap::with_max_entries(defaults::THREADS, 0);

#[map(name = "ALLOC_LIVE")]
static ALLOC_LIVE: HashMap<AllocKey, u64> = HashMap::with_max_entries(defaults::LIVE_ENTRIES, 0);

#[map(name = "ALLOC_EXP")]
static ALLOC_EXP: Array<u64> = Array::with_max_entries(defaults::EXP_ENTRIES, 0);

#[map(name = "ALLOC_COUNTDOWN")]
static ALLOC_COUNTDOWN: PerCpuArray<AllocCountdown> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU sequence numbers of sampled allocations (the CPU is in the top bits).
#[map(name = "ALLOC_SEQ")]
static ALLOC_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "ALLOC_COUNTERS")]
static ALLOC_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[unsafe(no_mangle)]
static ALLOC_SAMPLE_BYTES: u64 = 0;
#[unsafe(no_mangle)]
static ALLOC_ANY_PROCESS: u32 = 0;

#[inline(always)]
fn add(index: u32, n: u64) {
    if let Some(v) = ALLOC_COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot; uprobe programs run with preemption disabled.
        unsafe { *v += n };
    }
}

#[inline(always)]
fn bump(index: u32) {
    add(index, 1);
}

/// The calling process and thread when they are recorded.
#[inline(always)]
fn target() -> Option<(u32, u32)> {
    let (pid, tid) = current_ids()?;
    // SAFETY: a read-only global the loader fills in before the programs run.
    if unsafe { core::ptr::read_volatile(&ALLOC_ANY_PROCESS) } != 0 && target_flags(pid).is_none() {
        return None;
    }
    Some((pid, tid))
}

/// Bytes to the next sample, drawn from the loader's table of exponential variates.
#[inline(always)]
fn draw() -> u64 {
    // SAFETY: plain helper call.
    let r = unsafe { bpf_get_prandom_u32() } & (defaults::EXP_ENTRIES - 1);
    // SAFETY: a plain copy of the value.
    ALLOC_EXP.get(r).copied().unwrap_or(1).max(1)
}

/// Whether this allocation of `size` bytes holds the next sample point of this CPU's byte
/// stream. Memoryless: after a sample the next distance is drawn afresh from here.
#[inline(always)]
fn sample(size: u64) -> bool {
    // SAFETY: a read-only global the loader fills in before the programs run.
    if unsafe { core::ptr::read_volatile(&ALLOC_SAMPLE_BYTES) } <= 1 {
        return true;
    }
    let Some(c) = ALLOC_COUNTDOWN.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot; uprobe programs run with preemption disabled.
    let c = unsafe { &mut *c };
    if c.started == 0 {
        c.remaining = draw();
        c.started = 1;
    }
    if size < c.remaining {
        c.remaining -= size;
        false
    } else {
        c.remaining = draw();
        true
    }
}

/// The user stack pointer of the probed call.
#[inline(always)]
fn stack_pointer(regs: *const aya_ebpf::bindings::pt_regs) -> u64 {
    // SAFETY: the context of a uprobe is the user registers.
    unsafe { (*regs).rsp }
}

/// Whether the thread is inside another allocator call that this one is part of
/// (`realloc(NULL, n)` calling `malloc`): the outer call counts, this one does not.
#[inline(always)]
fn nested(tid: u32, pid: u32, sp: u64) -> bool {
    // SAFETY: a plain copy of the value.
    match unsafe { ALLOC_THREADS.get(tid) } {
        // A deeper stack pointer in the same process, or the same one: glibc's realloc(NULL,
        // n) jumps to malloc (a tail call, on the caller's return address). An entry left by a
        // thread that died inside the allocator (its tid now another thread's) is not just
        // above this stack.
        Some(t) => t.pid == pid && t.sp >= sp && t.sp - sp < (1 << 20),
        None => false,
    }
}

/// `n * size`, without the 128-bit multiply `saturating_mul` needs (no BPF instruction): a
/// product that overflows is a request calloc refuses, counted as the largest size.
#[inline(always)]
fn calloc_size(n: u64, size: u64) -> u64 {
    if n == 0 || size == 0 {
        0
    } else if n < (1 << 32) && size < (1 << 32) {
        n * size
    } else if size <= core::hint::black_box(u64::MAX / n) {
        // black_box: LLVM turns this test back into a checked multiply otherwise.
        n * size
    } else {
        u64::MAX
    }
}

#[uprobe]
pub fn alloc_entry(ctx: ProbeContext) -> u32 {
    let Some((pid, tid)) = target() else {
        return 0;
    };
    // SAFETY: plain helper call on this program's context.
    let f = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let sp = stack_pointer(ctx.regs);
    if nested(tid, pid, sp) {
        bump(counter::NESTED);
        return 0;
    }
    let arg = |n: usize| -> u64 { ctx.arg(n).unwrap_or(0) };
    let (size, old_ptr, out_ptr) = match f {
        func::MALLOC | func::VALLOC => (arg(0), 0, 0),
        func::CALLOC => (calloc_size(arg(0), arg(1)), 0, 0),
        func::REALLOC => (arg(1), arg(0), 0),
        func::ALIGNED_ALLOC => (arg(1), 0, 0),
        func::POSIX_MEMALIGN => (arg(2), 0, arg(0)),
        _ => return 0,
    };
    bump(counter::CALLS);
    add(counter::BYTES, size);
    let sampled = size > 0 && sample(size);
    if !sampled && !func::may_nest(f) {
        return 0;
    }
    if sampled {
        bump(counter::SAMPLED);
    }
    let user_stack_id = if sampled {
        wait_stack_id(&ctx, BPF_F_USER_STACK as u64)
    } else {
        -1
    };
    let caller = if sampled {
        // SAFETY: bpf_probe_read_user checks the address; at the first instruction the
        // return address is at the stack pointer.
        unsafe { bpf_probe_read_user_u64(sp) }
    } else {
        0
    };
    let t = AllocThread {
        sp,
        size,
        old_ptr,
        out_ptr,
        caller,
        // SAFETY: plain helper call without arguments.
        timestamp_ns: unsafe { bpf_ktime_get_boot_ns() },
        span_id: if sampled { innermost_span(tid) } else { 0 },
        pid,
        func: f as u32,
        sampled: u32::from(sampled),
        user_stack_id,
    };
    if ALLOC_THREADS.insert(tid, t, 0).is_err() && sampled {
        bump(counter::THREADS_FULL);
    }
    0
}

#[inline(always)]
unsafe fn bpf_probe_read_user_u64(addr: u64) -> u64 {
    let mut v: u64 = 0;
    // SAFETY: v is a valid 8-byte out-buffer; the helper checks the user address.
    let ret = unsafe {
        bpf_probe_read_user(
            (&mut v as *mut u64).cast(),
            8,
            addr as *const core::ffi::c_void,
        )
    };
    if ret == 0 { v } else { 0 }
}

#[uretprobe]
pub fn alloc_return(ctx: RetProbeContext) -> u32 {
    let Some((pid, tid)) = current_ids() else {
        return 0;
    };
    // SAFETY: a plain copy of the value.
    let Some(t) = (unsafe { ALLOC_THREADS.get(tid) }).copied() else {
        return 0;
    };
    // SAFETY: plain helper call on this program's context.
    let f = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
    let sp = stack_pointer(ctx.regs);
    // The return of the call the entry was kept for: same function, the stack pointer just
    // above the entry's (the return address popped). A nested call returns below it.
    if t.pid != pid || u64::from(t.func) != f || sp <= t.sp || sp - t.sp > 64 {
        return 0;
    }
    let _ = ALLOC_THREADS.remove(tid);
    let ret: u64 = ctx.ret();
    let addr = if f == func::POSIX_MEMALIGN {
        // It returns 0 on success and the address through its first argument.
        if ret == 0 {
            // SAFETY: bpf_probe_read_user checks the address.
            unsafe { bpf_probe_read_user_u64(t.out_ptr) }
        } else {
            0
        }
    } else {
        ret
    };
    // realloc frees its old block when it succeeds, and when asked for 0 bytes.
    if f == func::REALLOC && t.old_ptr != 0 && (addr != 0 || t.size == 0) {
        forget(pid, t.old_ptr);
    }
    if t.sampled == 0 {
        return 0;
    }
    if addr == 0 {
        bump(counter::FAILED);
        return 0;
    }
    // SAFETY: plain helper call without arguments.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let seq = match ALLOC_SEQ.get_ptr_mut(0) {
        // SAFETY: per-CPU slot; uprobe programs run with preemption disabled.
        Some(s) => unsafe {
            *s += 1;
            (u64::from(cpu) << 48) | (*s & ((1 << 48) - 1))
        },
        None => 0,
    };
    let key = AllocKey { pid, _pad: 0, addr };
    let tracked = ALLOC_LIVE.insert(key, seq, 0).is_ok();
    if !tracked {
        bump(counter::LIVE_FULL);
    }
    let event = AllocEvent {
        kind: EventKind::Alloc as u32,
        cpu,
        timestamp_ns: t.timestamp_ns,
        pid,
        tid,
        size: t.size,
        addr,
        seq,
        caller: t.caller,
        span_id: t.span_id,
        user_stack_id: t.user_stack_id,
        func: t.func,
        tracked: u32::from(tracked),
        _pad: 0,
    };
    match EVENTS.reserve::<AllocEvent>(0) {
        Some(mut entry) => {
            entry.write(event);
            entry.submit(submit_flags(false));
            bump(counter::EMITTED);
        }
        None => {
            bump(counter::LOST_RINGBUF);
            // Never reported: its free must not be looked for either.
            if tracked {
                let _ = ALLOC_LIVE.remove(key);
            }
        }
    }
    0
}

#[inline(always)]
fn forget(pid: u32, addr: u64) {
    let key = AllocKey { pid, _pad: 0, addr };
    // A free of an allocation that was not sampled finds nothing: the common case.
    if ALLOC_LIVE.remove(key).is_ok() {
        bump(counter::SAMPLED_FREES);
    }
}

#[uprobe]
pub fn alloc_free(ctx: ProbeContext) -> u32 {
    let Some((pid, _)) = target() else {
        return 0;
    };
    let ptr: u64 = ctx.arg(0).unwrap_or(0);
    if ptr == 0 {
        return 0;
    }
    bump(counter::FREES);
    forget(pid, ptr);
    0
}
