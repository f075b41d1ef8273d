//! Kernel side of the profiler.
//!
//! `cpu_sample` runs on every software CPU-clock tick of every CPU. It keeps only ticks that hit
//! a thread of a target process (the `TARGETS` map, filled by the loader), deduplicates their
//! stacks in `STACKS`, and sends one record per sample through the `EVENTS` ring buffer, so
//! that userspace gets every sample with its time, thread and CPU rather than only counts.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
// `atomic_xadd`: core's atomic types are not built for bpfel (issue 17's race on target flags),
// and the intrinsic is the one way to the XADD instruction from Rust.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod programs {
    // Kernel sides of `--alloc` and `--locks`, in files of their own (src/programs/); they
    // use the shared maps and helpers below (ring buffer, stack map, target membership).
    mod alloc;
    mod locks;
    use aya_ebpf::{
        EbpfContext,
        bindings::{
            BPF_F_USER_STACK, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP,
            BPF_RB_NO_WAKEUP, bpf_pidns_info,
        },
        helpers::{
            bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id,
            bpf_probe_read_kernel,
            generated::{
                bpf_get_attach_cookie, bpf_get_current_ancestor_cgroup_id, bpf_get_current_task,
                bpf_get_current_task_btf, bpf_get_ns_current_pid_tgid, bpf_get_prandom_u32,
                bpf_get_stack, bpf_ktime_get_boot_ns, bpf_probe_read_user, bpf_ringbuf_output,
                bpf_task_pt_regs,
            },
        },
        macros::{map, perf_event, raw_tracepoint, uprobe, uretprobe},
        maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
        programs::{
            PerfEventContext, ProbeContext, RawTracePointContext, RetProbeContext,
            tracing::StackIdContext,
        },
    };
    use profiler_common::{
        COMM_LEN, DwarfRegs, EventKind, MAX_DWARF_STACK, MAX_SPAN_DEPTH, MAX_STACK_DEPTH,
        OffCpuEvent, OffCpuKey, OffCpuStart, OffCpuTotal, ProcessEvent, SAMPLE_DWARF_HEADER,
        SPAN_FN_ID_BIT, SampleDwarfEvent, SampleEvent, SampleInlineEvent, SpanEvent, ThreadSpans,
        USER_STACK_COPIED, WAIT_STACK_BIT, counter, defaults, dwarf_copy, dwarf_regs, errno,
        target,
    };

    #[map(name = "EVENTS")]
    static EVENTS: RingBuf = RingBuf::with_byte_size(defaults::EVENTS_BYTES, 0);

    #[map(name = "STACKS")]
    static STACKS: StackTrace = StackTrace::with_max_entries(defaults::STACK_ENTRIES, 0);

    /// Wait stacks whose bucket in STACKS another stack held ([`wait_stack_id`]).
    #[map(name = "WAIT_STACKS")]
    static WAIT_STACKS: StackTrace = StackTrace::with_max_entries(defaults::WAIT_STACK_ENTRIES, 0);

    /// Process ids (tgid) to sample, with their flags (`target`); the primary process is in
    /// PRIMARY_FLAGS instead.
    #[map(name = "TARGETS")]
    static TARGETS: HashMap<u32, u32> = HashMap::with_max_entries(defaults::MAX_TARGETS, 0);

    /// The primary target's flags (slot `target::PRIMARY_KERNEL`, with `target::PRESENT`
    /// while it is one) and call graph (slot `target::PRIMARY_CALL_GRAPH`), found by
    /// comparing the pid with the constant PRIMARY_PID: an array's look-up is inlined, where
    /// a TARGETS hit hashes the key and walks a bucket (2-8% of a sample in the bench's
    /// rounds, issue 17). Both slots share one cache line.
    #[map(name = "PRIMARY_FLAGS")]
    static PRIMARY_FLAGS: Array<u32> = Array::with_max_entries(target::PRIMARY_SLOTS, 0);
    #[unsafe(no_mangle)]
    static PRIMARY_PID: u32 = 0;
    #[unsafe(no_mangle)]
    static PRIMARY_ONLY: u32 = 0;

    /// A target process as a program found it.
    #[derive(Clone, Copy)]
    struct Target {
        /// The flags the kernel changes, only through `flags_add`.
        word: *mut u32,
        /// The flags when looked up, `target::DWARF` included wherever it lives.
        flags: u32,
    }

    /// Adds `n` to a target's flags in one atomic instruction. Every writer of a target
    /// may run at once on another CPU (its samples, exec, spans and exit, and userspace), and
    /// a plain read-modify-write would store back what it read: a lost `SPANS`, or `PRESENT`
    /// set again after the exit cleared it. The sum is not fetched, so LLVM emits the XADD
    /// of the first BPF instruction set (`atomic_or` would need v3).
    #[inline(always)]
    fn flags_add(word: *mut u32, n: u32) {
        use core::intrinsics::AtomicOrdering;
        // SAFETY: `word` is a map value's address, from a look-up in this program run.
        unsafe { core::intrinsics::atomic_xadd::<u32, u32, { AtomicOrdering::Relaxed }>(word, n) };
    }

    /// Whether `pid` is the primary process, whose flags are in PRIMARY_FLAGS.
    #[inline(always)]
    fn is_primary(pid: u32) -> bool {
        // SAFETY: a read-only global the loader fills in before the programs run.
        let primary = unsafe { core::ptr::read_volatile(&PRIMARY_PID) };
        primary != 0 && pid == primary
    }

    /// `pid` if it is a target, wherever its flags live.
    #[inline(always)]
    fn target_entry(pid: u32) -> Option<Target> {
        if is_primary(pid) {
            let word = PRIMARY_FLAGS.get_ptr_mut(target::PRIMARY_KERNEL)?;
            // SAFETY: a map value, only read.
            let flags = unsafe { *word };
            if flags & target::PRESENT == 0 {
                return None;
            }
            let graph = PRIMARY_FLAGS
                .get(target::PRIMARY_CALL_GRAPH)
                .map_or(0, |g| *g & target::DWARF);
            return Some(Target {
                word,
                flags: (flags & !target::DWARF) | graph,
            });
        }
        // SAFETY: a read-only global the loader fills in before the programs run.
        if unsafe { core::ptr::read_volatile(&PRIMARY_ONLY) } != 0 {
            return None;
        }
        let word = TARGETS.get_ptr_mut(pid)?;
        // SAFETY: a map value, only read.
        let flags = unsafe { *word };
        Some(Target { word, flags })
    }

    /// Makes `pid` a target with `flags`; false when TARGETS is full.
    #[inline(always)]
    fn add_target(pid: u32, flags: u32) -> bool {
        if is_primary(pid) {
            let (Some(graph), Some(word)) = (
                PRIMARY_FLAGS.get_ptr_mut(target::PRIMARY_CALL_GRAPH),
                PRIMARY_FLAGS.get_ptr_mut(target::PRIMARY_KERNEL),
            ) else {
                return true;
            };
            // SAFETY: map values. Stores, not read-modify-writes: the call graph first, so
            // that no program finds the process present with the old one.
            unsafe {
                *graph = flags & target::DWARF;
                *word = (flags & !target::DWARF) | target::PRESENT;
            }
            return true;
        }
        // Two CPUs may promote the same process at once: the second must not replace the
        // value the first may already have added to.
        match TARGETS.insert(pid, flags, BPF_NOEXIST as u64) {
            Ok(()) => true,
            Err(e) => e == -errno::EEXIST,
        }
    }

    #[inline(always)]
    fn remove_target(pid: u32) {
        if is_primary(pid) {
            if let Some(word) = PRIMARY_FLAGS.get_ptr_mut(target::PRIMARY_KERNEL) {
                // SAFETY: a map value. A store: an add racing it, before or after, cannot
                // carry into `PRESENT` (`target`'s fields).
                unsafe { *word = 0 };
            }
            return;
        }
        let _ = TARGETS.remove(pid);
    }

    /// Per-CPU, so the hot path needs no atomics (64-bit atomic add is not available on bpfel
    /// in stable core); userspace sums the CPUs.
    #[map(name = "COUNTERS")]
    static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

    /// Bytes of unread records above which a submit wakes the reader; set by the loader.
    /// Below it the reader is not woken (it drains on a timer): every wakeup is an irq_work
    /// self-IPI, which in a VM costs an exit and dominated the program's run time.
    #[unsafe(no_mangle)]
    static WAKEUP_BYTES: u64 = 0;

    /// `force`: wake the reader whatever the threshold (a process userspace must look at now).
    #[inline(always)]
    fn submit_flags(force: bool) -> u64 {
        if force {
            return BPF_RB_FORCE_WAKEUP as u64;
        }
        // SAFETY: a read-only global the loader fills in before the program runs.
        let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
        if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= threshold {
            BPF_RB_FORCE_WAKEUP as u64
        } else {
            BPF_RB_NO_WAKEUP as u64
        }
    }

    /// The spans running on each thread (by tid), so a sample knows its innermost span.
    /// Entries go when their thread exits (process_exit). Not an LRU map: an eviction would
    /// silently lose a running span, where a full map refuses and is counted.
    #[map(name = "THREAD_SPANS")]
    static THREAD_SPANS: HashMap<u32, ThreadSpans> =
        HashMap::with_max_entries(defaults::MAX_SPAN_THREADS, 0);

    /// Slot 0 becomes 1 when a thread first enters a span. Until then no span can be running,
    /// and the off-CPU, allocation and lock programs skip the THREAD_SPANS look-up (a hash
    /// miss). An array: the verifier inlines its look-up. The sampler asks its process's
    /// `target::SPANS_MASK` count instead, already in cache.
    #[map(name = "SPANS_STARTED")]
    static SPANS_STARTED: Array<u32> = Array::with_max_entries(1, 0);

    /// Per-CPU sequence numbers for the ids of `--span-fn` spans.
    #[map(name = "SPAN_FN_SEQ")]
    static SPAN_FN_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    /// Bumped whenever a task's name may have changed (exec, prctl, a write to its comm: the
    /// `task_rename` tracepoint) and when a target thread exits (its tid may come back with
    /// another name). Slot 0; an array, so the sampler's look-up is inlined.
    #[map(name = "NAMES_GENERATION")]
    static NAMES_GENERATION: Array<u32> = Array::with_max_entries(1, 0);

    /// Per CPU: (generation << 32 | tid) of the last thread whose name a sample sent from this
    /// CPU. A thread sampled again on the same CPU with no rename since sends no name: the
    /// copy costs ~150 ns of a ~2.5 µs sample here (issue 17), and userspace keeps the name.
    #[map(name = "NAME_SENT")]
    static NAME_SENT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

    /// The current thread's name and the mark to remember once a sample carrying it is sent,
    /// or no name (zeros) and 0 when this CPU already sent it.
    #[inline(always)]
    fn thread_name(tid: u32) -> ([u8; COMM_LEN], u64) {
        let generation = NAMES_GENERATION.get(0).copied().unwrap_or(0);
        let mark = (u64::from(generation) << 32) | u64::from(tid);
        if NAME_SENT.get(0).is_some_and(|sent| *sent == mark) {
            return ([0u8; COMM_LEN], 0);
        }
        (bpf_get_current_comm().unwrap_or([0u8; COMM_LEN]), mark)
    }

    /// A sample is in the ring buffer: counted, and its thread's name (if it carried one)
    /// remembered as sent. Only here, so that a name lost with its sample is sent again.
    #[inline(always)]
    fn sample_sent(mark: u64) {
        bump(counter::EMITTED);
        if mark != 0
            && let Some(sent) = NAME_SENT.get_ptr_mut(0)
        {
            // SAFETY: per-CPU slot, and BPF programs are not preempted on their CPU.
            unsafe { *sent = mark };
        }
    }

    #[inline(always)]
    fn names_changed() {
        if let Some(generation) = NAMES_GENERATION.get_ptr_mut(0) {
            // SAFETY: two racing bumps may count one, which still changes the value.
            unsafe { *generation = (*generation).wrapping_add(1) };
        }
    }

    #[inline(always)]
    fn bump(index: u32) {
        add(index, 1);
    }

    #[inline(always)]
    fn add(index: u32, n: u64) {
        if let Some(v) = COUNTERS.get_ptr_mut(index) {
            // SAFETY: per-CPU slot, and BPF programs are not preempted on their CPU.
            unsafe { *v += n };
        }
    }

    /// True when the stack map refused the stack for lack of room or a hash collision: the
    /// sample is then sent with its frames inline instead of being lost.
    #[inline(always)]
    fn map_refused(ret: i64) -> bool {
        ret == -(errno::EEXIST as i64) || ret == -(errno::ENOMEM as i64)
    }

    /// The stack id of an off-CPU interval, a lock wait or an allocation: from STACKS, else
    /// (its bucket held by another stack, or the map full) from WAIT_STACKS, marked with
    /// `WAIT_STACK_BIT`. A sample's stack refused goes inline instead; these are summed or
    /// matched by id, and a site whose stack is refused once is refused every time.
    #[inline(always)]
    fn wait_stack_id<C: StackIdContext>(ctx: &C, flags: u64) -> i32 {
        match ctx.get_stackid(&STACKS, flags) {
            Ok(id) => id as i32,
            Err(e) if map_refused(e as i64) => match ctx.get_stackid(&WAIT_STACKS, flags) {
                Ok(id) => (id as u32 | WAIT_STACK_BIT) as i32,
                Err(e) => {
                    if map_refused(e as i64) {
                        bump(counter::WAIT_STACKS_REFUSED);
                    }
                    e
                }
            },
            Err(e) => e,
        }
    }

    #[unsafe(no_mangle)]
    static PIDNS_DEV: u64 = 0;
    #[unsafe(no_mangle)]
    static PIDNS_INO: u64 = 0;

    /// (process id, thread id) of the current task as the profiler's PID namespace sees
    /// them; None for a task outside it.
    #[inline(always)]
    fn current_ids() -> Option<(u32, u32)> {
        // SAFETY: read-only globals the loader fills in before the programs run.
        let (dev, ino) = unsafe {
            (
                core::ptr::read_volatile(&PIDNS_DEV),
                core::ptr::read_volatile(&PIDNS_INO),
            )
        };
        if ino == 0 {
            let pid_tgid = bpf_get_current_pid_tgid();
            return Some(((pid_tgid >> 32) as u32, pid_tgid as u32));
        }
        let mut info = bpf_pidns_info { pid: 0, tgid: 0 };
        // SAFETY: info is a valid, correctly sized out-buffer.
        let ret = unsafe {
            bpf_get_ns_current_pid_tgid(dev, ino, &mut info, size_of::<bpf_pidns_info>() as u32)
        };
        (ret == 0).then_some((info.tgid, info.pid))
    }

    /// Children forked by followed targets, by host pid (the fork tracepoint cannot see the
    /// child's pid in our namespace): the parent's pid (low half) and its flags at the fork
    /// (high half, kept there because the parent may be gone when the child is promoted).
    /// They become targets at their first event in their own context, where their namespaced
    /// pid is known.
    #[map(name = "PENDING_CHILDREN")]
    static PENDING_CHILDREN: HashMap<u32, u64> =
        HashMap::with_max_entries(defaults::MAX_TARGETS, 0);

    #[unsafe(no_mangle)]
    static SCOPE_ALL: u32 = 0;
    #[unsafe(no_mangle)]
    static SCOPE_CGROUP_ID: u64 = 0;
    #[unsafe(no_mangle)]
    static SCOPE_CGROUP_LEVEL: u32 = 0;
    #[unsafe(no_mangle)]
    static SCOPE_FLAGS: u32 = 0;
    #[unsafe(no_mangle)]
    static SCOPE_EXEC_EVENTS: u32 = 0;
    /// Whether processes can join during the recording (followed children, a scope): without
    /// it PENDING_CHILDREN stays empty and a non-target tick skips its look-up.
    #[unsafe(no_mangle)]
    static FOLLOWS: u32 = 0;

    /// Whether the current task's process belongs to the scope (`--all`, `--cgroup`), which
    /// the kernel decides by itself: a process that starts and ends between two reads of
    /// userspace is still in it. The idle task (pid 0) never is.
    #[inline(always)]
    fn in_scope(pid: u32) -> bool {
        // SAFETY: read-only globals the loader fills in before the programs run.
        let (all, cgroup, level) = unsafe {
            (
                core::ptr::read_volatile(&SCOPE_ALL),
                core::ptr::read_volatile(&SCOPE_CGROUP_ID),
                core::ptr::read_volatile(&SCOPE_CGROUP_LEVEL),
            )
        };
        if pid == 0 {
            return false;
        }
        if all != 0 {
            return true;
        }
        // SAFETY: plain helper call; an ancestor level deeper than the task's gives 0.
        cgroup != 0 && unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) } == cgroup
    }

    /// The current task's flags if its process is a target, promoting a pending child or a
    /// process of the scope.
    #[inline(always)]
    fn target_flags(pid: u32) -> Option<Target> {
        if let Some(found) = target_entry(pid) {
            return Some(found);
        }
        // A program may run in a process's last thread after its exit took it out (a switch
        // while closing its files, a tick): it must not come back.
        if in_scope(pid) && !process_dying() {
            // SAFETY: a read-only global the loader fills in before the programs run.
            let flags = unsafe { core::ptr::read_volatile(&SCOPE_FLAGS) } & target::DWARF;
            if !add_target(pid, target::FOLLOW | flags) {
                bump(counter::TARGETS_FULL);
                return None;
            }
            return target_entry(pid);
        }
        // SAFETY: a read-only global the loader fills in before the programs run.
        if unsafe { core::ptr::read_volatile(&FOLLOWS) } == 0 {
            return None;
        }
        let host = (bpf_get_current_pid_tgid() >> 32) as u32;
        // SAFETY: a plain copy of the value.
        let pending = unsafe { PENDING_CHILDREN.get(host) }.copied()?;
        let _ = PENDING_CHILDREN.remove(host);
        let parent = pending as u32;
        let inherited = (pending >> 32) as u32 & target::DWARF;
        if !add_target(pid, target::FOLLOW | inherited) {
            // The child is not followed: its samples are counted, never sent.
            bump(counter::TARGETS_FULL);
            return None;
        }
        emit_process(EventKind::ProcessFork, pid, parent);
        target_entry(pid)
    }

    /// Whether every thread of the current process is exiting (`signal->live` is 0).
    #[inline(always)]
    fn process_dying() -> bool {
        // SAFETY: read-only globals the loader fills in before the programs run; a plain
        // helper call.
        let (signal_offset, live_offset, task) = unsafe {
            (
                core::ptr::read_volatile(&TASK_SIGNAL_OFFSET),
                core::ptr::read_volatile(&SIGNAL_LIVE_OFFSET),
                bpf_get_current_task(),
            )
        };
        kernel_u64(task, signal_offset).and_then(|signal| kernel_u32(signal, live_offset))
            == Some(0)
    }

    #[perf_event]
    pub fn cpu_sample(ctx: PerfEventContext) -> u32 {
        let Some((pid, tid)) = current_ids() else {
            return 0;
        };
        // The idle task, never a target, takes most ticks of a quiet CPU: it leaves before
        // any map look-up.
        if pid == 0 {
            return 0;
        }
        let Some(found) = target_flags(pid) else {
            return 0;
        };
        let flags = found.flags;
        bump(counter::SEEN);
        // The first samples of a process image wake userspace at once, whatever the
        // threshold, so it reads the memory map while a short-lived process still lives.
        // Samples racing here on other CPUs may each add one and wake it once more.
        let count = (flags & target::ANNOUNCED_MASK) >> target::ANNOUNCED_SHIFT;
        let announce = count % target::ANNOUNCE_PERIOD < target::ANNOUNCE_SAMPLES
            && count < target::ANNOUNCED_LIMIT;
        if announce {
            flags_add(found.word, 1 << target::ANNOUNCED_SHIFT);
        }

        // SAFETY: a read-only global the loader fills in. It is 0 when no process of the run
        // can take DWARF call graphs and `--locks` copies no stacks: the verifier reads frozen
        // globals as constants and then leaves the DWARF path out of its work (issue 17).
        let dwarf = flags & target::DWARF != 0
            && unsafe { core::ptr::read_volatile(&DWARF_STACK_BYTES) } != 0;
        // A tick in user mode has no kernel stack: the helper would find none, at a cost of
        // ~1.2 µs of a ~4 µs sample here (per-CPU callchain buffer, recursion guard).
        let kernel = if interrupted_user_mode(&ctx) {
            -(errno::EFAULT as i64)
        } else {
            match ctx.get_stackid(&STACKS, 0) {
                Ok(id) => id,
                Err(e) => e as i64,
            }
        };
        // -EFAULT for the kernel stack is the normal case of a tick in user mode.
        if kernel < 0 && kernel != -(errno::EFAULT as i64) && !map_refused(kernel) {
            bump(counter::KERNEL_STACK_ERROR);
        }
        let span_id = running_span(tid, flags);
        let (comm, name_mark) = thread_name(tid);
        let mut header = SampleEvent {
            kind: EventKind::Sample as u32,
            // SAFETY: plain helper calls without arguments.
            cpu: unsafe { bpf_get_smp_processor_id() },
            timestamp_ns: unsafe { bpf_ktime_get_boot_ns() },
            pid,
            tid,
            user_stack_id: -errno::EFAULT,
            kernel_stack_id: kernel as i32,
            comm,
            span_id,
        };
        if dwarf && !map_refused(kernel) && send_dwarf(&ctx, header, announce, name_mark) {
            return 0;
        }

        let user = match ctx.get_stackid(&STACKS, BPF_F_USER_STACK as u64) {
            Ok(id) => id,
            Err(e) => e as i64,
        };
        if user < 0 && !map_refused(user) {
            bump(counter::USER_STACK_ERROR);
        }
        header.user_stack_id = user as i32;

        if map_refused(user) || map_refused(kernel) {
            if user == -(errno::ENOMEM as i64) || kernel == -(errno::ENOMEM as i64) {
                bump(counter::STACK_MAP_FULL);
            } else {
                bump(counter::STACK_MAP_COLLISION);
            }
            return send_inline(&ctx, header, name_mark);
        }

        match EVENTS.reserve::<SampleEvent>(0) {
            Some(mut entry) => {
                entry.write(header);
                entry.submit(submit_flags(announce));
                sample_sent(name_mark);
            }
            None => bump(counter::LOST_RINGBUF_FULL),
        }
        0
    }

    /// Whether the tick interrupted user mode: the privilege level in the interrupted code
    /// segment selector (x86-64 `pt_regs.cs`, 3 in user mode).
    #[inline(always)]
    fn interrupted_user_mode(ctx: &PerfEventContext) -> bool {
        let data = ctx.as_ptr() as *const aya_ebpf::bindings::bpf_perf_event_data;
        // SAFETY: the context is the kernel's bpf_perf_event_data, whose regs the verifier
        // lets programs read.
        let cs = unsafe { (*data).regs.cs };
        cs & 3 == 3
    }

    /// One record per CPU to assemble DWARF samples and off-CPU stack copies in: too large for
    /// the BPF stack, and for a per-CPU map value (32 KiB at most). Indexed by CPU (the loader
    /// sizes it). Its two users never overlap on a CPU: the sampler runs in the hard IRQ of
    /// the software CPU clock's hrtimer, sched_switch with IRQs off, and neither nests with
    /// itself. A hardware (NMI) sampling event would break this. The lock programs, which
    /// IRQs can interrupt, have their own (`programs::locks`).
    #[map(name = "DWARF_SCRATCH")]
    static DWARF_SCRATCH: Array<SampleDwarfEvent> = Array::with_max_entries(1, 0);

    /// Bytes of user stack to copy per DWARF sample, off-CPU stack or lock wait at most; set by
    /// the loader, 0 when the run copies none (no DWARF call graphs, no `--locks`).
    #[unsafe(no_mangle)]
    static DWARF_STACK_BYTES: u64 = 0;

    /// Per thread (tid), at most `DWARF_STACK_BYTES`: what its recent complete unwinds read
    /// plus a margin, grown when one ran past its copy, and where its stack ends when a copy
    /// found it (`collect::stack_copy`, packed as `dwarf_copy`). Most stacks
    /// need a few KiB of the 16 KiB copied by default, and the copy is most of a DWARF
    /// sample's cost (issue 17). LRU: a thread evicted goes back to the full copy.
    #[map(name = "DWARF_COPY")]
    static DWARF_COPY: LruHashMap<u32, u64> =
        LruHashMap::with_max_entries(defaults::DWARF_COPY_THREADS, 0);

    const PAGE: u64 = 4096;
    const STACK_INDEX_MASK: usize = MAX_DWARF_STACK - 1;
    /// pt_regs slots (x86-64, in u64s) of the registers unwinding starts from.
    const REG_BP: usize = 4;
    const REG_IP: usize = 16;
    const REG_CS: usize = 17;
    const REG_SP: usize = 19;

    /// A copy the optimizer cannot see through, so the mask applied to it stays where the
    /// verifier checks the access.
    #[inline(always)]
    fn opaque(v: usize) -> usize {
        core::hint::black_box(v)
    }

    /// Sends the user registers and the top of the user stack for unwinding in userspace.
    /// False when there is nothing to unwind from (the caller walks frame pointers instead).
    #[inline(always)]
    fn send_dwarf(
        ctx: &PerfEventContext,
        mut header: SampleEvent,
        announce: bool,
        name_mark: u64,
    ) -> bool {
        let regs = ctx.as_ptr() as *const u64;
        // SAFETY: the perf_event context starts with the interrupted pt_regs.
        let cs = unsafe { *regs.add(REG_CS) };
        let user = if cs & 3 == 3 {
            // SAFETY: as above.
            unsafe {
                Some(UserRegs {
                    ip: *regs.add(REG_IP),
                    sp: *regs.add(REG_SP),
                    bp: *regs.add(REG_BP),
                    source: dwarf_regs::INTERRUPTED,
                })
            }
        } else {
            // In the kernel (a syscall, a fault): the user registers were saved at entry.
            saved_user_regs()
        };
        let Some(user) = user.filter(|u| u.sp != 0 && u.ip != 0) else {
            bump(counter::DWARF_NO_USER_REGS);
            return false;
        };
        header.kind = EventKind::SampleDwarf as u32;
        let flags = submit_flags(announce);
        match send_stack_copy(
            &DWARF_SCRATCH,
            header.cpu,
            header.tid,
            header,
            user,
            flags,
            || bump(counter::DWARF_STACK_ERROR),
        ) {
            None => {
                bump(counter::DWARF_NO_USER_REGS);
                false
            }
            Some(true) => {
                sample_sent(name_mark);
                true
            }
            Some(false) => {
                bump(counter::LOST_RINGBUF_FULL);
                true
            }
        }
    }

    /// Where user code was when the thread entered the kernel, for DWARF unwinding.
    #[derive(Clone, Copy)]
    struct UserRegs {
        ip: u64,
        sp: u64,
        bp: u64,
        /// `dwarf_regs::INTERRUPTED` or `dwarf_regs::TASK`.
        source: u32,
    }

    /// The user registers the current task saved when it entered the kernel; None for a
    /// kernel thread, or when they cannot be read.
    #[inline(always)]
    fn saved_user_regs() -> Option<UserRegs> {
        // SAFETY: helpers on the current task; the pointer is only read through
        // bpf_probe_read_kernel.
        let regs = unsafe {
            let task_regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u64;
            if task_regs.is_null() {
                return None;
            }
            let read = |slot: usize| bpf_probe_read_kernel(task_regs.add(slot)).unwrap_or(0);
            UserRegs {
                ip: read(REG_IP),
                sp: read(REG_SP),
                bp: read(REG_BP),
                source: dwarf_regs::TASK,
            }
        };
        (regs.sp != 0 && regs.ip != 0).then_some(regs)
    }

    /// Sends `header` (a record head the size of a `SampleEvent`, its kind set by the
    /// caller), the registers and the top of `tid`'s user stack from `user.sp` as one record,
    /// assembled in `scratch`'s record `slot` (the caller's own on this CPU). None when there
    /// is no such record; otherwise whether the ring buffer took it. A copy that failed at its
    /// first byte calls `on_empty` and is sent without stack.
    #[inline(always)]
    fn send_stack_copy<H: Copy>(
        scratch: &Array<SampleDwarfEvent>,
        slot: u32,
        tid: u32,
        header: H,
        user: UserRegs,
        flags: u64,
        on_empty: impl FnOnce(),
    ) -> Option<bool> {
        const { assert!(size_of::<H>() == size_of::<SampleEvent>()) };
        let rec = scratch.get_ptr_mut(slot)?;
        let UserRegs { ip, sp, bp, source } = user;
        // SAFETY: a read-only global the loader fills in before the program runs.
        let most =
            unsafe { core::ptr::read_volatile(&DWARF_STACK_BYTES) }.min(MAX_DWARF_STACK as u64);
        // A thread sized by userspace copies its size in one read, stopping at the top of its
        // stack when known (a read past it fails whole). The page-by-page loop stays bounded
        // by the constant `most`: with a bound the verifier does not know, it explored 240k
        // instructions instead of 22k (~130 ms more start-up).
        // SAFETY: a plain copy of the value.
        let (mut want, top) = match unsafe { DWARF_COPY.get(tid) } {
            Some(&v) => (dwarf_copy::bytes(v).min(most), dwarf_copy::top(v)),
            None => (0, 0),
        };
        // A copy that ends there exactly stopped at the top too.
        let mut at_top = false;
        if top > sp && top - sp <= want {
            want = top - sp;
            at_top = true;
        }
        let mut off: u64 = 0;
        if want != 0 {
            let n = (opaque(want as usize) & STACK_INDEX_MASK) as u32;
            // SAFETY: `n` is less than the scratch record's stack array; the source is user
            // memory, read with the fault-tolerant helper.
            let r = unsafe {
                bpf_probe_read_user(
                    (*rec).stack.as_mut_ptr().cast(),
                    n,
                    sp as *const core::ffi::c_void,
                )
            };
            if r == 0 {
                off = u64::from(n);
            }
        }
        let mut source = source;
        if at_top && off == want {
            source |= dwarf_regs::AT_TOP;
        }
        // A thread not sized yet, or whose sized copy failed (it ran past the top, or into a
        // page not present): page by page, up to the page that cannot be read.
        if off == 0 {
            let (copied, ended) = copy_pages(rec, sp, most);
            off = copied;
            if ended && off != 0 {
                source |= dwarf_regs::STACK_END;
            }
        }
        if off == 0 {
            on_empty();
        }
        // SAFETY: `rec` is this CPU's scratch record; `header` fills its head exactly (the
        // assertion above).
        unsafe {
            core::ptr::write_unaligned(core::ptr::addr_of_mut!((*rec).header).cast::<H>(), header);
            (*rec).regs = DwarfRegs {
                ip,
                sp,
                bp,
                stack_len: off as u32,
                source,
            };
        }
        let size = opaque(SAMPLE_DWARF_HEADER + off as usize) & (2 * MAX_DWARF_STACK - 1);
        // SAFETY: `size` is at most the record's size, and the ring buffer copies it.
        let r = unsafe {
            bpf_ringbuf_output(
                core::ptr::addr_of!(EVENTS).cast_mut().cast(),
                rec.cast(),
                size as u64,
                flags,
            )
        };
        Some(r == 0)
    }

    /// Copies the user stack from `sp` up into the scratch record, a page at a time, `most`
    /// bytes at most (a constant to the verifier, which keeps the loop's bound known). A copy
    /// that runs past the top of the stack mapping fails whole, so the page that faults ends
    /// the copy and everything before it is kept. Returns the bytes copied, and whether a
    /// page could not be read.
    #[inline(always)]
    fn copy_pages(rec: *mut SampleDwarfEvent, sp: u64, most: u64) -> (u64, bool) {
        let mut off: u64 = 0;
        let mut ended = false;
        let mut chunk = PAGE - (sp & (PAGE - 1));
        for _ in 0..MAX_DWARF_STACK / PAGE as usize + 1 {
            if off >= most {
                break;
            }
            let n = chunk.min(most - off);
            let at = opaque(off as usize) & STACK_INDEX_MASK;
            let n = (opaque(n as usize) & 0x1fff) as u32;
            // SAFETY: `at + n` stays inside the scratch record's stack array (twice the
            // largest copy); the source is user memory, read with the fault-tolerant helper.
            let r = unsafe {
                bpf_probe_read_user(
                    (*rec).stack.as_mut_ptr().add(at).cast(),
                    n,
                    (sp + off) as *const core::ffi::c_void,
                )
            };
            if r != 0 {
                ended = true;
                break;
            }
            off += u64::from(n);
            chunk = PAGE;
        }
        (off, ended)
    }

    /// Emits a sample with both stacks copied into the record. The frames are written by
    /// `bpf_get_stack` straight into ring buffer memory: a 2 KiB record would not fit on the
    /// 512-byte BPF stack.
    #[inline(always)]
    fn send_inline(ctx: &PerfEventContext, mut header: SampleEvent, name_mark: u64) -> u32 {
        let Some(mut entry) = EVENTS.reserve::<SampleInlineEvent>(0) else {
            bump(counter::LOST_RINGBUF_FULL);
            return 0;
        };
        header.kind = EventKind::SampleInline as u32;
        let rec = entry.as_mut_ptr();
        const BYTES: u32 = (MAX_STACK_DEPTH * 8) as u32;
        // SAFETY: `rec` points to a reserved record of the right size; the helper writes at
        // most BYTES into each array.
        unsafe {
            (*rec).header = header;
            let user = bpf_get_stack(
                ctx.as_ptr(),
                (*rec).user.as_mut_ptr().cast(),
                BYTES,
                BPF_F_USER_STACK as u64,
            );
            let kernel = bpf_get_stack(ctx.as_ptr(), (*rec).kernel.as_mut_ptr().cast(), BYTES, 0);
            (*rec).user_len = if user > 0 { (user / 8) as u32 } else { 0 };
            (*rec).kernel_len = if kernel > 0 { (kernel / 8) as u32 } else { 0 };
        }
        entry.submit(submit_flags(false));
        sample_sent(name_mark);
        0
    }

    /// The compiler checks an index on one register and indexes with another; the verifier
    /// loses the bound between them. A mask the optimizer cannot see through (black_box)
    /// right at the access keeps the bound provable (MAX_SPAN_DEPTH is a power of two).
    const SPAN_INDEX_MASK: usize = MAX_SPAN_DEPTH - 1;
    const _: () = assert!(MAX_SPAN_DEPTH.is_power_of_two());

    #[inline(always)]
    fn span_index(i: usize) -> usize {
        core::hint::black_box(i) & SPAN_INDEX_MASK
    }

    #[inline(always)]
    fn innermost_span(tid: u32) -> u64 {
        if SPANS_STARTED.get(0).is_none_or(|started| *started == 0) {
            return 0;
        }
        // SAFETY: read-only look-up; a racing update at worst yields a neighbouring id.
        match unsafe { THREAD_SPANS.get(tid) } {
            Some(t) => innermost_of(t),
            None => 0,
        }
    }

    /// The sampler's look-up: the process's own flag (in the TARGETS value it has just read)
    /// says whether any of its threads ever entered a span, which spares the samples of
    /// processes without spans both the global flag's and the thread map's cache lines.
    #[inline(always)]
    fn running_span(tid: u32, flags: u32) -> u64 {
        if flags & target::SPANS_MASK == 0 {
            return 0;
        }
        // SAFETY: read-only look-up; a racing update at worst yields a neighbouring id.
        match unsafe { THREAD_SPANS.get(tid) } {
            Some(t) => innermost_of(t),
            None => 0,
        }
    }

    #[inline(always)]
    fn innermost_of(t: &ThreadSpans) -> u64 {
        let depth = t.depth as usize;
        if depth > 0 && depth <= MAX_SPAN_DEPTH {
            t.ids[span_index(depth - 1)]
        } else {
            0
        }
    }

    /// Sends one span event; counts it as sent or lost.
    #[inline(always)]
    fn emit_span(kind: EventKind, span_id: u64, parent_id: u64, meta: u64) {
        let Some((pid, tid)) = current_ids() else {
            return;
        };
        let event = SpanEvent {
            kind: kind as u32,
            // SAFETY: plain helper calls without arguments.
            cpu: unsafe { bpf_get_smp_processor_id() },
            timestamp_ns: unsafe { bpf_ktime_get_boot_ns() },
            pid,
            tid,
            span_id,
            parent_id,
            meta,
        };
        match EVENTS.reserve::<SpanEvent>(0) {
            Some(mut entry) => {
                entry.write(event);
                entry.submit(submit_flags(false));
                bump(counter::SPAN_EVENTS);
            }
            None => bump(counter::SPAN_EVENTS_LOST),
        }
    }

    /// Pushes `id` on the calling thread's running spans; false when the thread already runs
    /// MAX_SPAN_DEPTH spans (counted: its exit must then pop nothing).
    #[inline(always)]
    fn push_running(id: u64) -> bool {
        let Some((pid, tid)) = current_ids() else {
            return false;
        };
        let Some(t) = THREAD_SPANS.get_ptr_mut(tid) else {
            let mut fresh = ThreadSpans {
                depth: 1,
                overflow: 0,
                ids: [0; MAX_SPAN_DEPTH],
            };
            fresh.ids[0] = id;
            let ok = THREAD_SPANS.insert(tid, fresh, 0).is_ok();
            if let Some(started) = SPANS_STARTED.get_ptr_mut(0) {
                // SAFETY: every writer stores the same value.
                unsafe { *started = 1 };
            }
            // Each thread's first enter, so a process that joins the targets later still
            // gets the flag from its threads' first spans.
            if let Some(found) = target_entry(pid)
                && found.flags & target::SPANS_MASK == 0
            {
                flags_add(found.word, 1 << target::SPANS_SHIFT);
            }
            if !ok {
                bump(counter::SPAN_THREADS_FULL);
            }
            return ok;
        };
        // SAFETY: the value belongs to this thread, which is running this program.
        let t = unsafe { &mut *t };
        let depth = t.depth as usize;
        if depth < MAX_SPAN_DEPTH {
            t.ids[span_index(depth)] = id;
            t.depth += 1;
            true
        } else {
            t.overflow += 1;
            bump(counter::SPAN_DEPTH_OVERFLOW);
            false
        }
    }

    /// Removes the innermost running span that `matches`, wherever it is on the stack (async
    /// runtimes may exit spans out of order); returns its id.
    #[inline(always)]
    fn pop_running(matches: impl Fn(u64) -> bool) -> u64 {
        let Some((_, tid)) = current_ids() else {
            return 0;
        };
        let Some(t) = THREAD_SPANS.get_ptr_mut(tid) else {
            return 0;
        };
        // SAFETY: the value belongs to this thread, which is running this program.
        let t = unsafe { &mut *t };
        // Exits of untracked (overflowed) enters come first: they are the innermost.
        if t.overflow > 0 {
            t.overflow -= 1;
            return 0;
        }
        let depth = (t.depth as usize).min(MAX_SPAN_DEPTH);
        let mut found = MAX_SPAN_DEPTH;
        for i in (0..MAX_SPAN_DEPTH).rev() {
            if i < depth && matches(t.ids[i]) {
                found = i;
                break;
            }
        }
        if found == MAX_SPAN_DEPTH {
            return 0;
        }
        let id = t.ids[found];
        for i in 0..MAX_SPAN_DEPTH - 1 {
            if i >= found && i + 1 < depth {
                t.ids[i] = t.ids[i + 1];
            }
        }
        t.depth = (depth - 1) as u32;
        id
    }

    #[unsafe(no_mangle)]
    static SPANS_ANY_PROCESS: u32 = 0;

    /// Set by userspace at the stop, the same instant for every span program: taking the
    /// probes out waits for the kernel probe by probe, and an event sent after the final
    /// drain would be counted and never received (reported lost), while begins without ends
    /// (or the reverse) from a probe-by-probe stop would read as incomplete or stray spans.
    #[map(name = "SPANS_STOPPED")]
    static SPANS_STOPPED: Array<u32> = Array::with_max_entries(1, 0);

    /// Span probes go on a file for every process that maps it when the scope is wider
    /// than one pid (a file is probed once, not per process): only targets' hits count.
    #[inline(always)]
    fn span_target() -> bool {
        if SPANS_STOPPED.get(0).is_some_and(|stopped| *stopped != 0) {
            return false;
        }
        // SAFETY: a read-only global the loader fills in before the programs run.
        if unsafe { core::ptr::read_volatile(&SPANS_ANY_PROCESS) } == 0 {
            return true;
        }
        current_ids().is_some_and(|(pid, _)| target_flags(pid).is_some())
    }

    #[uprobe]
    pub fn span_begin(ctx: ProbeContext) -> u32 {
        if !span_target() {
            return 0;
        }
        let id: u64 = ctx.arg(0).unwrap_or(0);
        let parent: u64 = ctx.arg(1).unwrap_or(0);
        let meta: u64 = ctx.arg(2).unwrap_or(0);
        emit_span(EventKind::SpanBegin, id, parent, meta);
        0
    }

    #[uprobe]
    pub fn span_end(ctx: ProbeContext) -> u32 {
        if !span_target() {
            return 0;
        }
        let id: u64 = ctx.arg(0).unwrap_or(0);
        emit_span(EventKind::SpanEnd, id, 0, 0);
        0
    }

    #[uprobe]
    pub fn span_enter(ctx: ProbeContext) -> u32 {
        if !span_target() {
            return 0;
        }
        let id: u64 = ctx.arg(0).unwrap_or(0);
        let _ = push_running(id);
        emit_span(EventKind::SpanEnter, id, 0, 0);
        0
    }

    #[uprobe]
    pub fn span_exit(ctx: ProbeContext) -> u32 {
        if !span_target() {
            return 0;
        }
        let id: u64 = ctx.arg(0).unwrap_or(0);
        pop_running(|x| x == id);
        emit_span(EventKind::SpanExit, id, 0, 0);
        0
    }

    /// Entry of a `--span-fn` function: a new span, child of whatever runs on this thread.
    #[uprobe]
    pub fn span_fn_entry(ctx: ProbeContext) -> u32 {
        if !span_target() {
            return 0;
        }
        // SAFETY: plain helper calls on this program's context.
        let cpu = u64::from(unsafe { bpf_get_smp_processor_id() });
        let cookie = unsafe { bpf_get_attach_cookie(ctx.as_ptr()) };
        let Some(seq) = SPAN_FN_SEQ.get_ptr_mut(0) else {
            return 0;
        };
        // SAFETY: per-CPU slot, and BPF programs are not preempted on their CPU.
        let n = unsafe {
            *seq += 1;
            *seq
        };
        let id = SPAN_FN_ID_BIT | ((cpu & 0xff) << 55) | (n & ((1 << 55) - 1));
        let Some((_, tid)) = current_ids() else {
            return 0;
        };
        let parent = innermost_span(tid);
        // An untracked call must not emit a span: its return pops nothing either.
        if push_running(id) {
            emit_span(EventKind::SpanFnCall, id, parent, cookie);
        }
        0
    }

    /// Return of a `--span-fn` function: ends the innermost span-fn span of this thread, which
    /// is its own call however deep the recursion.
    #[uretprobe]
    pub fn span_fn_return(_ctx: RetProbeContext) -> u32 {
        if !span_target() {
            return 0;
        }
        let id = pop_running(|x| x & SPAN_FN_ID_BIT != 0);
        if id != 0 {
            emit_span(EventKind::SpanFnReturn, id, 0, 0);
        }
        0
    }

    /// The last switch-out of each target thread (by global tid, the only id `next` gives
    /// cheaply), open until the thread runs again, then closed (`start_ns` 0). An entry stays
    /// while its thread lives and is rewritten in place: an insert at each switch-out and a
    /// delete at each switch-in cost more than the two look-ups that replace them. It goes at
    /// the thread's last switch-out (TASK_DEAD).
    #[map(name = "OFF_CPU_START")]
    static OFF_CPU_START: HashMap<u32, OffCpuStart> =
        HashMap::with_max_entries(defaults::OFF_CPU_THREADS, 0);

    /// One byte per thread id: whether OFF_CPU_START has an entry for that thread, and whether
    /// its interval is open. Most switches involve no open interval, and this inlined array
    /// read spares them the hash look-ups (~300 ns each here). Sized to kernel.pid_max by the
    /// loader.
    #[map(name = "OFF_CPU_OPEN")]
    static OFF_CPU_OPEN: Array<u8> = Array::with_max_entries(1, 0);

    const NO_ENTRY: u8 = 0;
    const OPEN: u8 = 1;
    const CLOSED: u8 = 2;

    /// The byte of `tid`; None beyond the array (pid_max raised since the start), where the
    /// hash map has to be asked.
    #[inline(always)]
    fn entry_state(tid: u32) -> Option<u8> {
        OFF_CPU_OPEN.get(tid).copied()
    }

    #[inline(always)]
    fn set_state(tid: u32, state: u8) {
        if let Some(slot) = OFF_CPU_OPEN.get_ptr_mut(tid) {
            // SAFETY: a thread's switch-outs and switch-ins are ordered by the scheduler; no
            // other thread writes this byte.
            unsafe { *slot = state };
        }
    }

    /// Off-CPU time summed in the kernel, so a program that switches 100k times a second
    /// costs map updates, not ring buffer records. One map for all CPUs, updated without
    /// atomics: the key holds the thread, and a thread's intervals close one at a time (at its
    /// switch-in, or at its next switch-out), so a key never has two writers at once. A
    /// per-CPU map would cost a per-CPU allocation per entry when it is created (22-56 ms of
    /// start-up for 16k entries here).
    #[map(name = "OFF_CPU_TOTALS")]
    static OFF_CPU_TOTALS: HashMap<OffCpuKey, OffCpuTotal> =
        HashMap::with_max_entries(defaults::OFF_CPU_TOTALS, 0);

    /// Intervals shorter than this are not counted (`--off-cpu-min`).
    #[unsafe(no_mangle)]
    static OFF_CPU_MIN_NS: u64 = 0;
    /// `--off-cpu-sample`: 1 target switch-out in this many is recorded.
    #[unsafe(no_mangle)]
    static OFF_CPU_SAMPLE: u32 = 1;
    /// Intervals at least this long are also sent one by one, for timelines.
    #[unsafe(no_mangle)]
    static OFF_CPU_INTERVAL_MIN_NS: u64 = u64::MAX;
    /// Offset of `pid` (the global thread id) in `struct task_struct`, from the kernel's BTF.
    #[unsafe(no_mangle)]
    static TASK_PID_OFFSET: u32 = 0;
    /// Offsets of `se.sum_exec_runtime` and `se.prev_sum_exec_runtime` in `struct
    /// task_struct`: CPU time in all, and at the moment the scheduler last picked the task.
    #[unsafe(no_mangle)]
    static TASK_SUM_EXEC_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static TASK_PREV_SUM_EXEC_OFFSET: u32 = 0;

    /// `__state` bit of a task that has exited: its last switch-out. It never runs again, so
    /// its entry would only leak (and be claimed by the next task that gets its tid).
    const TASK_DEAD: u64 = 0x80;
    /// The states the scheduler reports as blocked (TASK_REPORT, 0x7f) and TASK_RTLOCK_WAIT
    /// (0x1000), which it reports as uninterruptible.
    const TASK_BLOCKED: u64 = 0x7f | 0x1000;

    /// sched_switch runs in the context of the task going off CPU (`prev`): its stacks are the
    /// current ones. The task coming in (`next`) closes its own interval here too.
    ///
    /// A raw tracepoint rather than the classic one: the classic one formats a record in the
    /// perf trace buffer first and is skipped whenever that buffer or `bpf_prog_active` is
    /// busy on the CPU (about 1 switch in 2,000 here), leaving an interval that never closes.
    /// Arguments: (bool preempt, task_struct *prev, task_struct *next, unsigned prev_state).
    #[raw_tracepoint(tracepoint = "sched_switch")]
    pub fn off_cpu_switch(ctx: RawTracePointContext) -> u32 {
        // SAFETY: a read-only global the loader fills in before the program runs.
        let pid_offset = unsafe { core::ptr::read_volatile(&TASK_PID_OFFSET) };
        let next: u64 = ctx.arg(2);
        if let Some(next_tid) = kernel_u32(next, pid_offset) {
            let state = entry_state(next_tid);
            if state.is_none_or(|s| s == OPEN) {
                close_on_return(next_tid);
            }
        } else {
            bump(counter::KERNEL_READ_FAILED);
        }

        let prev_state: u64 = ctx.arg(3);
        if prev_state & TASK_DEAD != 0 {
            forget_thread(bpf_get_current_pid_tgid() as u32);
            return 0;
        }
        // Only a target thread's switch-out opens an entry, so this needs no target check.
        let host_tid = bpf_get_current_pid_tgid() as u32;
        let state = entry_state(host_tid);
        if state.is_none_or(|s| s == OPEN)
            && let Some(e) = OFF_CPU_START.get_ptr_mut(host_tid)
        {
            // SAFETY: the thread's own entry; only its own switches write it.
            let open = unsafe { *e };
            if open.start_ns != 0 {
                // SAFETY: plain helper call without arguments.
                close_unseen_return(&open, ctx.arg(1), unsafe { bpf_ktime_get_boot_ns() });
            }
            // Closed: an unsampled switch-out must not leave it to a later one, whose CPU
            // time since its last return would no longer date this one's.
            // SAFETY: as above.
            unsafe { (*e).start_ns = 0 };
            set_state(host_tid, CLOSED);
        }
        // Drawn before the target check: a switch-out left out then costs no TARGETS look-up
        // (issue 17), and OFF_CPU_SWITCHES counts the recorded ones, 1 in `every`.
        // SAFETY: a read-only global the loader fills in before the program runs.
        let every = unsafe { core::ptr::read_volatile(&OFF_CPU_SAMPLE) };
        // SAFETY: plain helper call without arguments.
        if every > 1 && unsafe { bpf_get_prandom_u32() } % every != 0 {
            return 0;
        }
        let Some((pid, tid)) = current_ids() else {
            return 0;
        };
        let Some(found) = target_flags(pid) else {
            return 0;
        };
        let preempt: u64 = ctx.arg(0);
        bump(counter::OFF_CPU_SWITCHES);
        // SAFETY: plain helper call without arguments.
        let now = unsafe { bpf_ktime_get_boot_ns() };
        let kernel = wait_stack_id(&ctx, 0);
        let span_id = innermost_span(tid);
        // SAFETY: a read-only global the loader fills in; 0 (and the copy then left out by
        // the verifier) when the run copies no stacks.
        let copied = found.flags & target::DWARF != 0
            && unsafe { core::ptr::read_volatile(&DWARF_STACK_BYTES) } != 0
            && send_off_cpu_stack(pid, tid, now, kernel, span_id);
        let user = if copied {
            USER_STACK_COPIED
        } else {
            wait_stack_id(&ctx, BPF_F_USER_STACK as u64)
        };
        let start = OffCpuStart {
            start_ns: now,
            span_id,
            pid,
            tid,
            user_stack_id: user,
            kernel_stack_id: kernel,
            // Preempted, or yielded while still runnable (sched_yield, cond_resched).
            runnable: u32::from(preempt & 1 != 0 || prev_state & TASK_BLOCKED == 0),
            _pad: 0,
        };
        // An unsampled switch-out looks nothing up beyond the byte; a recorded one rewrites
        // the thread's entry where it has one.
        let entry = if state == Some(NO_ENTRY) {
            None
        } else {
            OFF_CPU_START.get_ptr_mut(host_tid)
        };
        match entry {
            // SAFETY: the thread's own entry; only its own switches write it.
            Some(e) => unsafe { *e = start },
            None => {
                if OFF_CPU_START.insert(host_tid, start, 0).is_err() {
                    bump(counter::OFF_CPU_START_FULL);
                    return 0;
                }
            }
        }
        set_state(host_tid, OPEN);
        0
    }

    /// A switch-out of a thread in DWARF mode: its user registers and the top of its stack go
    /// to userspace now, to be unwound for the interval that begins (`now`), since frame
    /// pointers would not lead through its code. False when there is nothing to copy from
    /// (the caller walks frame pointers instead); true once the copy is sent or counted lost.
    #[inline(always)]
    fn send_off_cpu_stack(pid: u32, tid: u32, now: u64, kernel: i32, span_id: u64) -> bool {
        let Some(user) = saved_user_regs() else {
            return false;
        };
        // SAFETY: plain helper call without arguments.
        let cpu = unsafe { bpf_get_smp_processor_id() };
        let header = SampleEvent {
            kind: EventKind::OffCpuStack as u32,
            cpu,
            timestamp_ns: now,
            pid,
            tid,
            user_stack_id: USER_STACK_COPIED,
            kernel_stack_id: kernel,
            comm: [0u8; COMM_LEN],
            span_id,
        };
        let flags = submit_flags(false);
        match send_stack_copy(&DWARF_SCRATCH, cpu, tid, header, user, flags, || {
            bump(counter::OFF_CPU_STACK_ERROR)
        }) {
            None => false,
            Some(sent) => {
                if !sent {
                    bump(counter::OFF_CPU_STACKS_LOST);
                }
                true
            }
        }
    }

    /// `tid` is coming back on CPU: its open interval, if any, is counted and closed.
    #[inline(always)]
    fn close_on_return(tid: u32) {
        let Some(e) = OFF_CPU_START.get_ptr_mut(tid) else {
            set_state(tid, NO_ENTRY);
            return;
        };
        // SAFETY: the thread's own entry; it is not running, so nothing else writes it.
        let start = unsafe { *e };
        if start.start_ns != 0 {
            // SAFETY: plain helper call without arguments.
            account_off_cpu(&start, unsafe { bpf_ktime_get_boot_ns() });
            // SAFETY: as above.
            unsafe { (*e).start_ns = 0 };
        }
        set_state(tid, CLOSED);
    }

    /// A thread's last switch-out: its entry goes, whether or not its process is still a
    /// target (userspace may already have dropped an exiting process), so it neither leaks
    /// nor is taken by the next thread that gets its tid.
    #[inline(always)]
    fn forget_thread(tid: u32) {
        if entry_state(tid) != Some(NO_ENTRY) {
            let _ = OFF_CPU_START.remove(tid);
            set_state(tid, NO_ENTRY);
        }
    }

    /// The thread is switching out again with its last interval still open: the kernel came
    /// back to it without running this program (seen on switches from some tasks whose own
    /// context runs no tracepoint programs). It has been on CPU since the scheduler last
    /// picked it, for `sum_exec_runtime - prev_sum_exec_runtime`, so it came back that long
    /// before now: the interval closes there, with its stacks and span, and is counted.
    #[inline(always)]
    fn close_unseen_return(open: &OffCpuStart, task: u64, now: u64) {
        bump(counter::OFF_CPU_UNMATCHED);
        // SAFETY: read-only globals the loader fills in before the program runs.
        let (sum_at, prev_at) = unsafe {
            (
                core::ptr::read_volatile(&TASK_SUM_EXEC_OFFSET),
                core::ptr::read_volatile(&TASK_PREV_SUM_EXEC_OFFSET),
            )
        };
        let (Some(sum), Some(prev)) = (kernel_u64(task, sum_at), kernel_u64(task, prev_at)) else {
            bump(counter::KERNEL_READ_FAILED);
            return;
        };
        // A task of another scheduling class leaves prev_sum_exec_runtime stale: clamp to the
        // switch-out so that a bad estimate shortens the interval, never lengthens it.
        let back = now
            .saturating_sub(sum.saturating_sub(prev))
            .max(open.start_ns);
        account_off_cpu(open, back);
    }

    #[inline(always)]
    fn account_off_cpu(start: &OffCpuStart, now: u64) {
        let delta = now.saturating_sub(start.start_ns);
        // SAFETY: read-only globals the loader fills in before the program runs.
        let (min, interval_min) = unsafe {
            (
                core::ptr::read_volatile(&OFF_CPU_MIN_NS),
                core::ptr::read_volatile(&OFF_CPU_INTERVAL_MIN_NS),
            )
        };
        if delta < min {
            return;
        }
        let key = OffCpuKey {
            pid: start.pid,
            tid: start.tid,
            user_stack_id: start.user_stack_id,
            kernel_stack_id: start.kernel_stack_id,
            span_id: start.span_id,
            runnable: start.runnable,
            _pad: 0,
        };
        // A copied user stack has no id to sum under: the interval goes to userspace whole.
        let in_totals = start.user_stack_id != USER_STACK_COPIED && add_to_totals(&key, delta);
        if in_totals && delta < interval_min {
            return;
        }
        let event = OffCpuEvent {
            kind: EventKind::OffCpu as u32,
            // SAFETY: plain helper call without arguments.
            cpu: unsafe { bpf_get_smp_processor_id() },
            begin_ns: start.start_ns,
            end_ns: now,
            span_id: start.span_id,
            pid: start.pid,
            tid: start.tid,
            user_stack_id: start.user_stack_id,
            kernel_stack_id: start.kernel_stack_id,
            runnable: start.runnable,
            in_totals: u32::from(in_totals),
        };
        match EVENTS.reserve::<OffCpuEvent>(0) {
            Some(mut entry) => {
                entry.write(event);
                entry.submit(submit_flags(false));
            }
            None => {
                bump(counter::OFF_CPU_EVENTS_LOST);
                if !in_totals {
                    add(counter::OFF_CPU_LOST_NS, delta);
                }
            }
        }
    }

    /// Adds an interval to the kernel's sums; false when they had no room for its key.
    #[inline(always)]
    fn add_to_totals(key: &OffCpuKey, delta: u64) -> bool {
        match OFF_CPU_TOTALS.get_ptr_mut(key) {
            Some(total) => {
                // SAFETY: a key has one writer at a time (see OFF_CPU_TOTALS).
                unsafe {
                    (*total).total_ns += delta;
                    (*total).count += 1;
                }
                true
            }
            None => {
                let fresh = OffCpuTotal {
                    total_ns: delta,
                    count: 1,
                };
                let ok = OFF_CPU_TOTALS.insert(key, fresh, 0).is_ok();
                if !ok {
                    bump(counter::OFF_CPU_TOTALS_FULL);
                }
                ok
            }
        }
    }

    /// Offsets in kernel structures, from the kernel's BTF: `task_struct.tgid`,
    /// `task_struct.signal` and `signal_struct.live`.
    #[unsafe(no_mangle)]
    static TASK_TGID_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static TASK_SIGNAL_OFFSET: u32 = 0;
    #[unsafe(no_mangle)]
    static SIGNAL_LIVE_OFFSET: u32 = 0;

    /// A u32 field of a kernel structure, or None where the read faults.
    #[inline(always)]
    fn kernel_u32(base: u64, offset: u32) -> Option<u32> {
        // SAFETY: bpf_probe_read_kernel checks the address itself.
        unsafe { bpf_probe_read_kernel((base as usize + offset as usize) as *const u32) }.ok()
    }

    #[inline(always)]
    fn kernel_u64(base: u64, offset: u32) -> Option<u64> {
        // SAFETY: as above.
        unsafe { bpf_probe_read_kernel((base as usize + offset as usize) as *const u64) }.ok()
    }

    #[inline(always)]
    fn emit_process(kind: EventKind, pid: u32, parent: u32) {
        let event = ProcessEvent {
            kind: kind as u32,
            // SAFETY: plain helper calls without arguments.
            cpu: unsafe { bpf_get_smp_processor_id() },
            timestamp_ns: unsafe { bpf_ktime_get_boot_ns() },
            pid,
            parent,
        };
        match EVENTS.reserve::<ProcessEvent>(0) {
            Some(mut entry) => {
                entry.write(event);
                // Rare, and userspace must look at the process while it exists.
                entry.submit(BPF_RB_FORCE_WAKEUP as u64);
            }
            None => bump(counter::PROCESS_EVENTS_LOST),
        }
    }

    /// A target that follows its children forked: the child is a target from its first
    /// event (sample, exec) on. Raw tracepoints, like sched_switch, so that no fork or exit is
    /// skipped; arguments (task_struct *parent, task_struct *child).
    #[raw_tracepoint(tracepoint = "sched_process_fork")]
    pub fn process_fork(ctx: RawTracePointContext) -> u32 {
        let Some((parent, _)) = current_ids() else {
            return 0;
        };
        // A pending child that forks before any event of its own is promoted here, so its
        // own children (subshells, double forks) are followed too.
        let Some(found) = target_flags(parent) else {
            return 0;
        };
        let flags = found.flags;
        if flags & target::FOLLOW == 0 {
            return 0;
        }
        // SAFETY: read-only globals the loader fills in before the program runs.
        let (pid_offset, tgid_offset) = unsafe {
            (
                core::ptr::read_volatile(&TASK_PID_OFFSET),
                core::ptr::read_volatile(&TASK_TGID_OFFSET),
            )
        };
        let child: u64 = ctx.arg(1);
        let (Some(tid), Some(tgid)) = (
            kernel_u32(child, pid_offset),
            kernel_u32(child, tgid_offset),
        ) else {
            bump(counter::KERNEL_READ_FAILED);
            return 0;
        };
        // A new thread of a process already followed: nothing to do.
        if tid != tgid {
            return 0;
        }
        let pending = u64::from(parent) | (u64::from(flags & target::DWARF) << 32);
        if PENDING_CHILDREN.insert(tid, pending, 0).is_err() {
            bump(counter::PENDING_CHILDREN_FULL);
        }
        0
    }

    #[raw_tracepoint(tracepoint = "sched_process_exec")]
    pub fn process_exec(_ctx: RawTracePointContext) -> u32 {
        let Some((pid, tid)) = current_ids() else {
            return 0;
        };
        let Some(found) = target_flags(pid) else {
            // SAFETY: a read-only global the loader fills in before the program runs.
            if unsafe { core::ptr::read_volatile(&SCOPE_EXEC_EVENTS) } != 0 {
                emit_process(EventKind::ProcessExec, pid, 0);
            }
            return 0;
        };
        // A new image: its map must be read again at its first samples. Samples racing on
        // other CPUs may add since the read: they count among the new image's announcements.
        let count = (found.flags & target::ANNOUNCED_MASK) >> target::ANNOUNCED_SHIFT;
        let next = target::ANNOUNCE_PERIOD - count % target::ANNOUNCE_PERIOD;
        if count + next < target::ANNOUNCED_LIMIT {
            flags_add(found.word, next << target::ANNOUNCED_SHIFT);
        }
        // And a new stack, whose top and depth are not the old one's.
        let _ = DWARF_COPY.remove(tid);
        emit_process(EventKind::ProcessExec, pid, 0);
        0
    }

    /// Arguments (task_struct *p) and, since 6.16, group_dead, which is not read so that older
    /// kernels attach too: `signal->live` has already dropped to 0 for the last thread.
    #[raw_tracepoint(tracepoint = "sched_process_exit")]
    pub fn process_exit(ctx: RawTracePointContext) -> u32 {
        let host = bpf_get_current_pid_tgid();
        // A child that exits before any event of its own: no longer pending.
        let _ = PENDING_CHILDREN.remove(host as u32);
        let Some((pid, tid)) = current_ids() else {
            return 0;
        };
        // A thread that dies inside spans must not hand them to the next thread with its tid.
        let _ = THREAD_SPANS.remove(tid);
        if target_entry(pid).is_none() {
            return 0;
        }
        // Nor its stack copy's size and top: the next thread starts from the full copy.
        let _ = DWARF_COPY.remove(tid);
        names_changed();
        // SAFETY: read-only globals the loader fills in before the program runs.
        let (signal_offset, live_offset) = unsafe {
            (
                core::ptr::read_volatile(&TASK_SIGNAL_OFFSET),
                core::ptr::read_volatile(&SIGNAL_LIVE_OFFSET),
            )
        };
        let task: u64 = ctx.arg(0);
        let live =
            kernel_u64(task, signal_offset).and_then(|signal| kernel_u32(signal, live_offset));
        let Some(live) = live else {
            bump(counter::KERNEL_READ_FAILED);
            return 0;
        };
        // The last thread to exit, which need not be the leader.
        if live == 0 {
            emit_process(EventKind::ProcessExit, pid, 0);
            // Harnesses start thousands of processes over a run: free the slot.
            remove_target(pid);
        }
        0
    }

    /// Any task renamed (exec, prctl(PR_SET_NAME), a write to /proc/…/comm, possibly from
    /// another CPU): every CPU sends its threads' names again (`thread_name`). Arguments
    /// (task_struct *task, const char *comm); renames are rare, so nothing is filtered.
    #[raw_tracepoint(tracepoint = "task_rename")]
    pub fn thread_renamed(_ctx: RawTracePointContext) -> u32 {
        names_changed();
        0
    }

    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        // The verifier rejects any reachable panic path, so this is never executed.
        loop {}
    }

    #[unsafe(link_section = "license")]
    #[unsafe(no_mangle)]
    static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
