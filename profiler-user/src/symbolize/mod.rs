//! Raw addresses → named frames, with blazesym: user addresses through the files captured
//! while the target was alive (so a target that has exited still symbolizes), kernel
//! addresses through kallsyms.
pub mod elf;
pub mod kallsyms;

use std::collections::HashMap;

use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Kernel, Source},
};

use crate::{
    collect::{RawRecording, RawStack},
    model::{
        FORMAT_VERSION, Function, Line, Location, Meta, Module, ModuleKind, OffCpu, OffCpuInfo,
        OffCpuInterval, Process, Recording, Sample, Stack, Thread,
    },
};

pub const KERNEL_MODULE: &str = "[kernel.kallsyms]";
/// The root frame of a stack whose DWARF unwinding ended before a thread entry point.
pub const TRUNCATED_FRAME: &str = "[unwind: truncated]";
const TRUNCATED_MODULE: &str = "[unwind]";

/// Builds the model's interned tables.
#[derive(Default)]
struct Interner {
    modules: Vec<Module>,
    /// Files by their id in the recording's module store (two files at one path are two
    /// modules); pseudo modules (`[vdso]`, the kernel) by name.
    module_ids: HashMap<ModuleKey, u32>,
    /// The store's id of each file module.
    store_ids: HashMap<u32, crate::collect::modules::ModuleId>,
    functions: Vec<Function>,
    function_ids: HashMap<(String, String), u32>,
    locations: Vec<Location>,
    location_ids: HashMap<(u32, u64), u32>,
    stacks: Vec<Stack>,
    stack_ids: HashMap<Vec<u32>, u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ModuleKey {
    File(crate::collect::modules::ModuleId),
    Named(String),
}

impl Interner {
    fn module(&mut self, path: &str, kind: ModuleKind) -> u32 {
        self.module_keyed(ModuleKey::Named(path.to_string()), path, kind)
    }

    fn file_module(&mut self, store_id: crate::collect::modules::ModuleId, path: &str) -> u32 {
        let id = self.module_keyed(ModuleKey::File(store_id), path, ModuleKind::File);
        self.store_ids.insert(id, store_id);
        id
    }

    fn module_keyed(&mut self, key: ModuleKey, path: &str, kind: ModuleKind) -> u32 {
        if let Some(&id) = self.module_ids.get(&key) {
            return id;
        }
        self.modules.push(Module {
            path: path.to_string(),
            kind: kind as i32,
            build_id: Vec::new(),
            has_symbols: true,
            debug_file: String::new(),
        });
        let id = self.modules.len() as u32; // one-based: 0 means "no module"
        self.module_ids.insert(key, id);
        id
    }

    fn function(&mut self, name: &str, file: &str) -> u32 {
        let key = (name.to_string(), file.to_string());
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = self.functions.len() as u32;
        self.functions.push(Function {
            name: key.0.clone(),
            file: key.1.clone(),
        });
        self.function_ids.insert(key, id);
        id
    }

    fn location(&mut self, module: u32, offset: u64, address: u64) -> u32 {
        *self
            .location_ids
            .entry((module, offset))
            .or_insert_with(|| {
                self.locations.push(Location {
                    module,
                    offset,
                    address,
                    lines: Vec::new(),
                });
                self.locations.len() as u32 - 1
            })
    }

    fn stack(&mut self, locations: Vec<u32>) -> u32 {
        if let Some(&id) = self.stack_ids.get(&locations) {
            return id;
        }
        let id = self.stacks.len() as u32;
        self.stacks.push(Stack {
            locations: locations.clone(),
        });
        self.stack_ids.insert(locations, id);
        id
    }
}

/// A return address points after its call; looking up the byte before it names the caller's
/// line and inline context (and the right function when the call was the last instruction).
fn lookup_addr(addr: u64, is_leaf: bool) -> u64 {
    if is_leaf {
        addr
    } else {
        addr.saturating_sub(1)
    }
}

fn frames<'a>(stack: &'a RawStack, table: &'a HashMap<u32, Vec<u64>>) -> &'a [u64] {
    match stack {
        RawStack::Id(id) => table.get(id).map(Vec::as_slice).unwrap_or_default(),
        RawStack::Inline(v) => v,
        RawStack::Empty => &[],
    }
}

/// Raw (kernel, user) stack pairs → interned stacks, each distinct pair resolved once.
struct Stacks<'a> {
    raw: &'a RawRecording,
    kernel_module: u32,
    /// Keyed by address space too: the same addresses mean other code in another process.
    /// Also keyed by truncation.
    /// And by whether the kernel stack is an off-CPU one, trimmed to `__schedule`.
    /// And by the space's era ([`crate::collect::AddressSpace::era_at`]): the same address is
    /// other code once a library was unloaded and another loaded over it.
    resolved: HashMap<(u32, u32, &'a RawStack, &'a RawStack, bool, Trim), u32>,
    empty: crate::collect::AddressSpace,
    /// Where `__schedule` lies in kernel text, when kallsyms says.
    schedule: Option<std::ops::Range<u64>>,
    /// Where the functions that run a lock tracepoint's program lie, when kallsyms says.
    lock_trace: Vec<std::ops::Range<u64>>,
}

/// What of a kernel stack's top is the profiler's own machinery, cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Trim {
    None,
    /// An off-CPU stack: up to `__schedule`.
    Schedule,
    /// A kernel lock wait's: the tracepoint's frames, up to the lock function.
    LockTrace,
}

/// Kernel functions between a lock tracepoint and the program it runs.
const LOCK_TRACE_FUNCTIONS: &[&str] = &[
    "bpf_trace_run2",
    "__bpf_trace_contention_begin",
    "__bpf_trace_contention_end",
    "__traceiter_contention_begin",
    "__traceiter_contention_end",
];

/// The tracepoint machinery is within the first few frames; deeper, a match would be a
/// coincidence of the task's own stack.
const LOCK_TRACE_DEPTH: usize = 8;

impl<'a> Stacks<'a> {
    /// The stack of something that happened at `time_ns` in `space`.
    fn resolve(
        &mut self,
        t: &mut Interner,
        (space, time_ns): (u32, u64),
        kernel: &'a RawStack,
        user: &'a RawStack,
        truncated: bool,
    ) -> u32 {
        self.resolve_stack(t, (space, time_ns), kernel, user, truncated, Trim::None)
    }

    /// A kernel lock wait's stack: taken in the contention_end program, its innermost kernel
    /// frames are the tracepoint's (`bpf_trace_run2`, the program); the task's own stack
    /// starts at the lock function that waited (`rwsem_down_write_slowpath`).
    fn resolve_kernel_lock(
        &mut self,
        t: &mut Interner,
        at: (u32, u64),
        kernel: &'a RawStack,
        user: &'a RawStack,
        truncated: bool,
    ) -> u32 {
        self.resolve_stack(t, at, kernel, user, truncated, Trim::LockTrace)
    }

    /// An off-CPU stack: taken in the sched_switch program, so its innermost kernel frames
    /// are the tracepoint's machinery (`bpf_trace_run4`, the program itself). The task's own
    /// stack starts at `__schedule`.
    fn resolve_off_cpu(
        &mut self,
        t: &mut Interner,
        o: &'a crate::collect::offcpu::RawOffCpu,
    ) -> u32 {
        // A sum's stacks were taken all through the recording: they are read as the space
        // ended, an interval's as it began.
        let time_ns = if o.begin_ns == 0 {
            u64::MAX
        } else {
            o.begin_ns
        };
        let at = (o.space, time_ns);
        self.resolve_stack(t, at, &o.kernel, &o.user, o.truncated, Trim::Schedule)
    }

    fn resolve_stack(
        &mut self,
        t: &mut Interner,
        (space, time_ns): (u32, u64),
        kernel: &'a RawStack,
        user: &'a RawStack,
        truncated: bool,
        trim: Trim,
    ) -> u32 {
        let addr_space = self
            .raw
            .processes
            .spaces
            .get(space as usize)
            .unwrap_or(&self.empty);
        let key = (
            space,
            addr_space.era_at(time_ns),
            kernel,
            user,
            truncated,
            trim,
        );
        if let Some(&id) = self.resolved.get(&key) {
            return id;
        }
        let mut locs = Vec::new();
        let kernel_frames = frames(kernel, &self.raw.stacks);
        let first = match (&self.schedule, trim) {
            (Some(range), Trim::Schedule) => kernel_frames
                .iter()
                .position(|a| range.contains(a))
                .unwrap_or(0),
            (_, Trim::LockTrace) => kernel_frames
                .iter()
                .take(LOCK_TRACE_DEPTH)
                .rposition(|a| self.lock_trace.iter().any(|r| r.contains(a)))
                .map_or(0, |i| i + 1),
            _ => 0,
        };
        for (i, &addr) in kernel_frames.iter().enumerate().skip(first) {
            let a = lookup_addr(addr, i == 0);
            locs.push(t.location(self.kernel_module, a, addr));
        }
        let mut truncated = truncated;
        for (i, &addr) in frames(user, &self.raw.stacks).iter().enumerate() {
            // The user leaf is the registers' IP, never a return address: after a syscall it is
            // the next instruction of the same function, and at a page fault on code not yet
            // read it is the faulting instruction, often a function's first (one byte back
            // would name the function before it).
            let a = lookup_addr(addr, i == 0);
            // An address the new image does not map, in a sample taken during the exec that
            // made it, is the old program's (the syscall's caller).
            let mapping = addr_space.find_at(a, time_ns).or_else(|| {
                self.raw
                    .processes
                    .replaced(space)
                    .and_then(|old| old.find_at(a, time_ns))
            });
            let (module, offset) = match mapping {
                Some(m) if m.is_file() => {
                    // `find` guarantees a >= start; the file offset comes from the kernel's
                    // record or /proc and is not trusted not to overflow.
                    let offset = (a - m.start).saturating_add(m.offset);
                    match m.module {
                        Some(id) => (t.file_module(id, &m.path), offset),
                        // A file that could not be opened: named, never symbolized.
                        None => (t.module(&m.path, ModuleKind::File), offset),
                    }
                }
                Some(m) => {
                    // The side-band's name for it (`//anon`) read as /proc shows it.
                    let name = if m.path.is_empty() || m.path == "//anon" {
                        "[anon]"
                    } else {
                        &m.path
                    };
                    (t.module(name, ModuleKind::Special), a - m.start)
                }
                // A caller outside every mapping is no code: the walk read something that is
                // not a return address (a frame-pointer walk through code without frame
                // pointers), and every frame it finds above is as wrong. The stack ends here.
                None if i > 0 => {
                    truncated = true;
                    break;
                }
                None => (0, a),
            };
            locs.push(t.location(module, offset, addr));
        }
        if truncated {
            // The root of a stack whose unwinding stopped early says so.
            let module = t.module(TRUNCATED_MODULE, ModuleKind::Special);
            let loc = t.location(module, 0, 0);
            if t.locations[loc as usize].lines.is_empty() {
                let function = t.function(TRUNCATED_FRAME, "");
                t.locations[loc as usize].lines = vec![Line { function, line: 0 }];
            }
            locs.push(loc);
        }
        let id = t.stack(locs);
        self.resolved.insert(key, id);
        id
    }
}

/// A kernel lock's kind from `contention_begin`'s flags, the flags themselves for a
/// combination the kernel does not send today.
fn kernel_lock_kind(flags: u32) -> String {
    profiler_common::locks::lcb::kind(flags)
        .map_or_else(|| format!("lock (flags {flags:#x})"), str::to_string)
}

/// The kernel stack of an allocation: none (the allocator runs in user space).
static NO_STACK: RawStack = RawStack::Empty;

pub fn symbolize(raw: &RawRecording) -> Recording {
    symbolize_with(raw, &symbolizer())
}

/// The symbolizer `symbolize` uses. It keeps every file it parsed (kallsyms, ELF, DWARF) and
/// checks each file's identity (device, inode, size, mtime) before reusing what it parsed, so
/// one can serve many windows of a continuous recording (`collect::window`).
pub fn symbolizer() -> Symbolizer {
    Symbolizer::builder()
        .enable_code_info(true)
        .enable_inlined_fns(true)
        .enable_demangling(true)
        .build()
}

/// [`symbolize`] with a symbolizer that may have served earlier recordings.
pub fn symbolize_with(raw: &RawRecording, symbolizer: &Symbolizer) -> Recording {
    let mut t = Interner::default();
    let mut stacks = Stacks {
        raw,
        kernel_module: t.module(KERNEL_MODULE, ModuleKind::Kernel),
        resolved: HashMap::new(),
        empty: crate::collect::AddressSpace::default(),
        schedule: raw
            .off_cpu
            .as_ref()
            .and_then(|_| kernel_function_range("__schedule")),
        lock_trace: match &raw.locks {
            Some(l) if l.kernel => kernel_function_ranges(LOCK_TRACE_FUNCTIONS),
            _ => Vec::new(),
        },
    };
    let mut samples = Vec::with_capacity(raw.samples.len());
    let mut thread_pids: HashMap<u32, u32> = HashMap::new();

    for s in &raw.samples {
        thread_pids.entry(s.tid).or_insert(s.pid);
        let at = (s.space, s.timestamp_ns);
        let stack = stacks.resolve(&mut t, at, &s.kernel, &s.user, s.truncated);
        samples.push(Sample {
            timestamp_ns: s.timestamp_ns,
            pid: s.pid,
            tid: s.tid,
            cpu: s.cpu,
            stack,
            span: s.span_id,
        });
    }

    let mut off_cpu = Vec::new();
    let mut off_cpu_intervals = Vec::new();
    let mut off_cpu_info = None;
    if let Some(o) = &raw.off_cpu {
        for x in &o.totals {
            thread_pids.entry(x.tid).or_insert(x.pid);
            off_cpu.push(OffCpu {
                pid: x.pid,
                tid: x.tid,
                stack: stacks.resolve_off_cpu(&mut t, x),
                span: x.span_id,
                runnable: x.runnable,
                total_ns: x.total_ns,
                count: x.count,
            });
        }
        for x in &o.intervals {
            off_cpu_intervals.push(OffCpuInterval {
                pid: x.pid,
                tid: x.tid,
                stack: stacks.resolve_off_cpu(&mut t, x),
                span: x.span_id,
                runnable: x.runnable,
                begin_ns: x.begin_ns,
                end_ns: x.end_ns,
            });
        }
        off_cpu_intervals.sort_by_key(|i| (i.begin_ns, i.tid));
        off_cpu_info = Some(OffCpuInfo {
            min_ns: o.min_ns,
            interval_min_ns: o.interval_min_ns,
            windowed: false,
            bpf_run_count: o.bpf_run_count,
            bpf_run_time_ns: o.bpf_run_time_ns,
            sample_every: o.sample_every,
        });
    }
    let mut allocs = Vec::new();
    let mut alloc_info = None;
    if let Some(a) = &raw.alloc {
        for x in &a.allocs {
            thread_pids.entry(x.tid).or_insert(x.pid);
            allocs.push(crate::model::Alloc {
                pid: x.pid,
                tid: x.tid,
                stack: stacks.resolve(&mut t, (x.space, x.timestamp_ns), &NO_STACK, &x.user, false),
                span: x.span_id,
                timestamp_ns: x.timestamp_ns,
                size: x.size,
                live: x.live,
                tracked: x.tracked,
                function: profiler_common::alloc::func::NAMES
                    .get(x.func as usize)
                    .copied()
                    .unwrap_or("?")
                    .to_string(),
            });
        }
        allocs.sort_by_key(|a| (a.timestamp_ns, a.tid));
        let c = &a.counters;
        alloc_info = Some(crate::model::AllocInfo {
            sample_bytes: a.sample_bytes,
            calls: c.calls,
            bytes: c.bytes,
            frees: c.frees,
            nested: c.nested,
            sampled: c.sampled,
            received: a.allocs.len() as u64,
            lost_ringbuf: c.lost_ringbuf,
            threads_full: c.threads_full,
            untracked: c.live_full,
            failed: c.failed,
            sampled_frees: c.sampled_frees,
            bpf_run_count: a.bpf_run_count,
            bpf_run_time_ns: a.bpf_run_time_ns,
            files: a.files.clone(),
            windowed: false,
        });
    }
    let mut lock_waits = Vec::new();
    let mut lock_info = None;
    if let Some(l) = &raw.locks {
        // (pid, tid, stack, span, address, kernel lock kind) → (ns, waits, first, last)
        type Key = (u32, u32, u32, u64, u64, Option<u32>);
        let mut sums: std::collections::BTreeMap<Key, (u64, u64, u64, u64)> = Default::default();
        for w in &l.waits {
            thread_pids.entry(w.tid).or_insert(w.pid);
            let at = (w.space, w.begin_ns);
            let stack = if w.kernel_flags.is_some() {
                stacks.resolve_kernel_lock(&mut t, at, &w.kernel, &w.user, w.truncated)
            } else {
                stacks.resolve(&mut t, at, &NO_STACK, &w.user, w.truncated)
            };
            let e = sums
                .entry((w.pid, w.tid, stack, w.span_id, w.uaddr, w.kernel_flags))
                .or_insert((0, 0, u64::MAX, 0));
            e.0 = e.0.saturating_add(w.end_ns.saturating_sub(w.begin_ns));
            e.1 = e.1.saturating_add(1);
            e.2 = e.2.min(w.begin_ns);
            e.3 = e.3.max(w.end_ns);
        }
        lock_waits = sums
            .into_iter()
            .map(
                |(
                    (pid, tid, stack, span, address, flags),
                    (total_ns, count, first_ns, last_ns),
                )| {
                    crate::model::LockWait {
                        pid,
                        tid,
                        stack,
                        span,
                        address,
                        symbol: l.symbols.get(&(pid, address)).cloned().unwrap_or_default(),
                        total_ns,
                        count,
                        first_ns,
                        last_ns,
                        kernel_kind: flags.map(kernel_lock_kind).unwrap_or_default(),
                    }
                },
            )
            .collect();
        let c = &l.counters;
        let count = |kernel: bool, what: fn(&crate::collect::locks::RawLockWait) -> bool| {
            l.waits
                .iter()
                .filter(|w| w.kernel_flags.is_some() == kernel && what(w))
                .count() as u64
        };
        lock_info = Some(crate::model::LockInfo {
            waits: c.waits,
            lost: c
                .lost_ringbuf
                .saturating_add(c.waits_full)
                .saturating_add(c.done_lost),
            unfinished: l.unfinished,
            stack_errors: c.stack_errors,
            bpf_run_count: l.bpf_run_count,
            bpf_run_time_ns: l.bpf_run_time_ns,
            windowed: false,
            kernel: l.kernel,
            kernel_waits: c.kernel_waits,
            kernel_lost: c
                .kernel_lost_ringbuf
                .saturating_add(c.kernel_waits_full)
                .saturating_add(c.kernel_ends_missed)
                .saturating_add(c.kernel_in_flight),
            kernel_stack_errors: c.kernel_stack_errors.saturating_add(c.kernel_kstack_errors),
            kernel_bpf_run_count: l.kernel_bpf_run_count,
            kernel_bpf_run_time_ns: l.kernel_bpf_run_time_ns,
            kernel_in_futex: c.kernel_in_futex,
            kernel_lost_ringbuf: c.kernel_lost_ringbuf,
            kernel_waits_full: c.kernel_waits_full,
            kernel_ends_missed: c.kernel_ends_missed,
            kernel_in_flight: c.kernel_in_flight,
            stacks_truncated: count(false, |w| w.truncated),
            stacks_lost: count(false, |w| !w.copied),
            kernel_stacks_truncated: count(true, |w| w.truncated),
            kernel_stacks_lost: count(true, |w| !w.copied),
        });
    }
    drop(stacks);

    let unnamed = resolve_names(&mut t, raw, symbolizer);

    let mut threads: Vec<Thread> = raw
        .threads
        .iter()
        .map(|(&tid, name)| Thread {
            tid,
            pid: thread_pids.get(&tid).copied().unwrap_or(raw.info.pid),
            name: name.clone(),
        })
        .collect();
    threads.sort_by_key(|t| t.tid);

    let mut warnings = Vec::new();
    if let Some(main) = t.modules.iter().find(|m| m.path == raw.info.exe)
        && !main.has_symbols
    {
        warnings.push(format!(
            "{} has no symbols (stripped): its frames are shown as {}+0xOFFSET",
            main.path,
            main.name()
        ));
    }
    let c = &raw.counters;
    if c.lost() > 0 {
        warnings.push(format!(
            "{} of {} samples lost ({} with the ring buffer full): raise --ring-buffer-size",
            c.lost(),
            c.seen,
            c.lost_ringbuf_full
        ));
    }
    if c.sideband_lost > 0 {
        warnings.push(format!(
            "{} mapping/fork/exec records lost by the kernel (side-band buffer full): processes started then may show [unknown] frames",
            c.sideband_lost
        ));
    }
    let denied = raw.processes.denied_modules();
    warnings.extend(denied_warnings(&denied));
    let missed: Vec<(String, u64)> = raw
        .processes
        .missed_modules()
        .into_iter()
        .filter(|(p, _)| !denied.iter().any(|(d, _)| d == p))
        .collect();
    if !missed.is_empty() {
        let paths: Vec<String> = missed.into_iter().map(|(p, _)| p).collect();
        warnings.push(format!(
            "{} mapped files could not be opened (gone or replaced before they were read): {}",
            paths.len(),
            list_of(&paths)
        ));
    }
    if !unnamed.rewritten.is_empty() {
        warnings.push(format!(
            "{} files rewritten in place while the recording held them (same inode, other bytes: the code that ran is gone): their frames from before are left as module+0xOFFSET; replace a program with a new file (mv, install), not cp over it: {}",
            unnamed.rewritten.len(),
            list_of(&unnamed.rewritten)
        ));
    }
    warnings.extend(shrunk_warning(&crate::sigbus::take(), |a| {
        raw.processes.modules.path_mapped_at(a)
    }));
    for u in &unnamed.unreadable {
        warnings.push(format!(
            "{}: its symbols or debug information are malformed (the symbolizer failed: {}): of its {} addresses, {} are named in full, {} from the symbol table alone (no source lines or inlined frames) and {} could not be named because of it; {}",
            u.path, u.panic, u.addresses, u.in_full, u.without_lines, u.unnamed, u.fix
        ));
    }
    if c.process_events_lost > 0 {
        warnings.push(format!(
            "{} process fork/exec/exit events lost (ring buffer full): raise --ring-buffer-size",
            c.process_events_lost
        ));
    }
    let u = &raw.unwind;
    if u.samples > 0 && u.truncated * 20 > u.samples {
        // Only stacks that ran out of copied bytes grow with --stack-size; the rest stopped
        // in code whose unwind information does not lead on (the kernel's exec of a new
        // program, hand-written assembly, JIT code).
        let elsewhere = u.truncated.saturating_sub(u.out_of_copy);
        let mut w = format!(
            "{} of {} DWARF stacks ended early ([unwind: truncated])",
            u.truncated, u.samples
        );
        // A wild read past the copy (unwinding with the wrong rules) looks the same as a deep
        // stack: advise a larger copy only when that is common. A copy its thread's sizing
        // cut short grows by itself.
        let at_limit = u.out_of_copy.saturating_sub(u.out_of_sized_copy);
        if at_limit * 20 > u.samples {
            w.push_str(&format!(
                ": {} at the end of the copied stack, raise --stack-size (now {}, at most {})",
                u.out_of_copy,
                crate::model::stack_size_text(raw.stack_bytes),
                crate::model::stack_size_text(profiler_common::MAX_DWARF_STACK as u32)
            ));
        } else if u.out_of_copy > 0 {
            w.push_str(&format!(
                ": {} at the end of the copied stack",
                u.out_of_copy
            ));
        }
        if u.out_of_sized_copy > 0 {
            w.push_str(&format!(
                " ({} of them copied short by sizing, which then grew)",
                u.out_of_sized_copy
            ));
        }
        if elsewhere > 0 {
            w.push_str(&format!(
                "{} {elsewhere} in code without usable unwind information (no larger --stack-size helps)",
                if u.out_of_copy > 0 { ";" } else { ":" }
            ));
        }
        warnings.push(w);
    }
    if c.dwarf_stack_errors + c.dwarf_no_user_regs > 0 {
        warnings.push(format!(
            "{} samples had no user stack to unwind and {} no user registers (kept with kernel or frame-pointer stacks)",
            c.dwarf_stack_errors, c.dwarf_no_user_regs
        ));
    }
    if c.wait_stacks_refused > 0 {
        warnings.push(format!(
            "{} off-CPU, lock wait or allocation stacks refused by both stack maps (a hash collision in each, or the maps full): kept without that stack; a larger --stack-map-entries keeps more of them in the first",
            c.wait_stacks_refused
        ));
    }
    if c.off_cpu_stacks_unmatched > 0 {
        warnings.push(format!(
            "{} off-CPU intervals of DWARF-mode threads kept without user stack, their copies lost ({} copies lost with the ring buffer full, some of them for intervals too short to record): raise --ring-buffer-size or --off-cpu-sample",
            c.off_cpu_stacks_unmatched, c.off_cpu_stacks_lost
        ));
    }
    if c.off_cpu_stack_errors > 0 {
        warnings.push(format!(
            "{} off-CPU user stack copies failed at their first byte: those stacks show only the function that blocked",
            c.off_cpu_stack_errors
        ));
    }
    if c.off_cpu_events_lost > 0 {
        warnings.push(format!(
            "{} off-CPU intervals lost with the ring buffer full ({:.3} s of off-CPU time not counted): raise --ring-buffer-size or --off-cpu-interval-min",
            c.off_cpu_events_lost,
            c.off_cpu_lost_ns as f64 / 1e9
        ));
    }
    if c.bpf_recursion_misses + c.kernel_read_failed > 0 {
        warnings.push(format!(
            "the kernel skipped the profiler's programs {} times (another BPF program was running on that CPU) and {} reads of task fields failed: some samples, switches or process events are missing",
            c.bpf_recursion_misses, c.kernel_read_failed
        ));
    }
    let not_followed = c.pending_children_full.saturating_add(c.targets_full);
    if not_followed > 0 {
        warnings.push(format!(
            "{not_followed} child processes not followed (the kernel's target maps were full): their samples are missing",
        ));
    }
    if c.span_threads_full > 0 {
        warnings.push(format!(
            "{} span enters not tracked (more threads inside spans at once than the kernel map holds): their samples carry no span",
            c.span_threads_full
        ));
    }
    if c.span_depth_overflow > 0 {
        warnings.push(format!(
            "{} span enters past {} spans running at once on a thread: their samples carry the span they are nested in",
            c.span_depth_overflow,
            profiler_common::MAX_SPAN_DEPTH
        ));
    }
    if c.off_cpu_start_full > 0 {
        warnings.push(format!(
            "{} switch-outs not tracked (more target threads off CPU at once than the kernel map holds): their off-CPU time is missing",
            c.off_cpu_start_full
        ));
    }
    if c.stack_map_full > 0 {
        warnings.push(format!(
            "the stack map was full for {} samples (sent inline, not lost): raise --stack-map-entries",
            c.stack_map_full
        ));
    }
    if let Some(a) = &raw.alloc {
        let lost = a
            .counters
            .lost_ringbuf
            .saturating_add(a.counters.threads_full);
        if lost > 0 {
            warnings.push(format!(
                "{lost} sampled allocations lost (ring buffer full, or too many threads inside the allocator at once): the allocation totals are low by about that many samples; raise --ring-buffer-size or --alloc-sample"
            ));
        }
        if a.counters.live_full > 0 {
            warnings.push(format!(
                "{} sampled allocations not watched for their free (more live samples than the kernel map holds): they are left out of inuse.*; raise --alloc-sample",
                a.counters.live_full
            ));
        }
    }
    if let Some(l) = &raw.locks {
        let c = &l.counters;
        let lost = c
            .lost_ringbuf
            .saturating_add(c.waits_full)
            .saturating_add(c.done_lost);
        if lost > 0 {
            warnings.push(format!(
                "{lost} futex waits lost or left without their end (ring buffer or wait map full): lock wait time is missing or counted to the end of the recording; raise --ring-buffer-size"
            ));
        }
        // The lock summary above has counted them.
        let (without, cut) = lock_info.as_ref().map_or((0, 0), |i| {
            (
                i.stacks_lost.saturating_add(i.kernel_stacks_lost),
                i.stacks_truncated.saturating_add(i.kernel_stacks_truncated),
            )
        });
        if without > 0 {
            warnings.push(format!(
                "{without} lock waits came without their user stack (no user registers, the copy failed, or a kernel lock wait ended inside another lock program, whose copy was being sent): their time shows without callers"
            ));
        }
        if cut.saturating_mul(20) > l.waits.len() as u64 {
            warnings.push(format!(
                "{cut} of {} lock wait user stacks were cut short (shown ending in {TRUNCATED_FRAME}): deep stacks need a larger --stack-size, or their code lacks unwinding information",
                l.waits.len()
            ));
        }
    }

    let mut matched = crate::spans::match_events(
        &raw.span_events,
        &raw.span_meta,
        &raw.spans_attached.span_fns,
        raw.end_boottime_ns,
    );
    crate::spans::attribute_samples(&mut matched.spans, &samples);
    matched.info.abi_modules = raw.spans_attached.abi_modules.clone();
    matched.info.span_fns = raw.spans_attached.span_fns.clone();
    if c.span_events_lost_total() > 0 {
        warnings.push(format!(
            "{} span events lost (ring buffer full): raise --ring-buffer-size",
            c.span_events_lost_total()
        ));
    }
    let info = &matched.info;
    if info.unmatched_ends.saturating_add(info.unmatched_exits) > 0 {
        warnings.push(format!(
            "{} span ends and {} exits had no matching begin/enter (spans begun before the recording)",
            info.unmatched_ends, info.unmatched_exits
        ));
    }

    Recording {
        format_version: FORMAT_VERSION,
        meta: Some(Meta {
            pid: raw.info.pid,
            command: raw.info.command.clone(),
            comm: raw.info.comm.clone(),
            start_boottime_ns: raw.start_boottime_ns,
            end_boottime_ns: raw.end_boottime_ns,
            start_unix_ns: raw.start_unix_ns,
            frequency_hz: raw.frequency_hz,
            stop_reason: raw.stop_reason.to_string(),
            kernel_release: kernel_release(),
            profiler_version: env!("CARGO_PKG_VERSION").to_string(),
            load_attach_ns: raw.load_attach.as_nanos() as u64,
            bpf_run_count: raw.bpf_run_count,
            bpf_run_time_ns: raw.bpf_run_time_ns,
            cpus: raw.cpus,
            exe: raw.info.exe.clone(),
            warnings,
            call_graph: match raw.call_graph {
                crate::collect::CallGraph::Dwarf => "dwarf",
                _ => "fp",
            }
            .to_string(),
            stack_bytes: raw.stack_bytes,
            unwind: (raw.unwind.samples > 0).then(|| unwind_info(&raw.unwind)),
            coverage: raw.coverage.clone(),
            window_cut: false,
        }),
        modules: t.modules,
        functions: t.functions,
        locations: t.locations,
        stacks: t.stacks,
        threads,
        samples,
        counters: Some(raw.counters.clone()),
        processes: {
            let mut p: Vec<Process> = raw
                .processes
                .infos
                .values()
                .map(|i| Process {
                    pid: i.pid,
                    // A followed child is named by its main thread's latest name (from the
                    // kernel's samples or /proc at the end): one that exec'd and exited before
                    // userspace read its new name must not keep its parent's. The process the
                    // recording began on keeps the name it was found with (under `run`, the
                    // thread table was first read before the command's exec).
                    comm: if i.pid == raw.info.pid {
                        i.comm.clone()
                    } else {
                        raw.threads.get(&i.pid).unwrap_or(&i.comm).clone()
                    },
                    command: i.command.clone(),
                    exe: i.exe.clone(),
                    parent: raw.processes.parents.get(&i.pid).copied().unwrap_or(0),
                    cgroup: i.cgroup.clone(),
                    kernel_thread: i.kernel_thread,
                    names_before: raw
                        .processes
                        .names_before
                        .get(&i.pid)
                        .cloned()
                        .unwrap_or_default(),
                })
                .collect();
            // A process gone before userspace could read anything of it still has its
            // samples, and the name they carry.
            let mut sampled: Vec<u32> = thread_pids.values().copied().collect();
            sampled.sort_unstable();
            sampled.dedup();
            for pid in sampled {
                if !raw.processes.infos.contains_key(&pid)
                    && let Some(name) = raw.threads.get(&pid)
                {
                    p.push(Process {
                        pid,
                        comm: name.clone(),
                        parent: raw.processes.parents.get(&pid).copied().unwrap_or(0),
                        ..Default::default()
                    });
                }
            }
            p.sort_by_key(|p| p.pid);
            p
        },
        spans: matched.spans,
        span_runs: matched.runs,
        // Span outputs exist when span probes were attached, even if no span happened.
        span_info: (!matched.info.abi_modules.is_empty() || !matched.info.span_fns.is_empty())
            .then_some(matched.info),
        off_cpu,
        off_cpu_intervals,
        off_cpu_info,
        allocs,
        alloc_info,
        lock_waits,
        lock_info,
    }
}

fn unwind_info(u: &crate::collect::unwind::UnwindStats) -> crate::model::UnwindInfo {
    let mut used: Vec<u64> = u.stack_bytes_used.iter().map(|&b| u64::from(b)).collect();
    used.sort_unstable();
    let at = |p: f64| crate::spans::percentile(&used, p) as u32;
    crate::model::UnwindInfo {
        samples: u.samples,
        truncated: u.truncated,
        total_ns: u.total_ns,
        stack_bytes_p50: at(50.0),
        stack_bytes_p99: at(99.0),
        stack_bytes_max: at(100.0),
        load_ns: u.load_ns,
        copied_bytes: u.copied_bytes,
        out_of_sized_copy: u.out_of_sized_copy,
    }
}

/// Addresses of kernel function `name`: from its kallsyms address to the next symbol's.
/// None where kallsyms hides addresses (kptr_restrict) or lacks the function.
fn kernel_function_range(name: &str) -> Option<std::ops::Range<u64>> {
    kernel_function_ranges(&[name]).pop()
}

/// [`kernel_function_range`] of each of `names` kallsyms has, in one reading.
fn kernel_function_ranges(names: &[&str]) -> Vec<std::ops::Range<u64>> {
    kallsyms::Kallsyms::read().function_ranges(names)
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The first five paths, and an ellipsis for more.
fn list_of(paths: &[String]) -> String {
    let mut s = paths
        .iter()
        .take(5)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > 5 {
        s.push_str(", …");
    }
    s
}

/// Fills `lines` of every location, one blazesym batch per module. Returns the files left
/// unnamed because they were rewritten in place since they were opened, and those blazesym
/// failed on.
fn resolve_names(t: &mut Interner, raw: &RawRecording, symbolizer: &Symbolizer) -> Unnamed {
    let mut unnamed = Unnamed::default();
    let mut by_module: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, loc) in t.locations.iter().enumerate() {
        if loc.module != 0 {
            by_module.entry(loc.module).or_default().push(i);
        }
    }
    for (module_id, locs) in by_module {
        let module = &t.modules[module_id as usize - 1];
        let kernel = module.kind == ModuleKind::Kernel as i32;
        let name = module.path.clone();
        let offsets: Vec<u64> = locs.iter().map(|&i| t.locations[i].offset).collect();
        let results = match ModuleKind::try_from(module.kind) {
            Ok(ModuleKind::Kernel) => {
                let src = Source::Kernel(Kernel {
                    debug_syms: false,
                    ..Default::default()
                });
                let what = (
                    name.as_str(),
                    "check the kernel's vmlinux and its modules under /lib/modules",
                );
                names_of(
                    symbolizer,
                    &src,
                    |a| Input::AbsAddr(a),
                    &offsets,
                    what,
                    &mut unnamed,
                )
            }
            Ok(ModuleKind::File) => {
                let store = &raw.processes.modules;
                let Some(file) = t.store_ids.get(&module_id).and_then(|&id| store.get(id)) else {
                    continue;
                };
                let m = &mut t.modules[module_id as usize - 1];
                m.build_id = file.build_id().to_vec();
                // Its names now would be another program's; its build id, read when it was
                // opened, can still name it elsewhere.
                if file.rewritten() {
                    unnamed.rewritten.push(file.path.clone());
                    continue;
                }
                m.has_symbols = file.has_symbols();
                match file.debug_file() {
                    // A debug file has no code, only the program's addresses: offsets in the
                    // module become its virtual addresses first.
                    Some(debug) => {
                        m.debug_file = debug.path.to_string_lossy().into_owned();
                        let vaddrs = file.vaddrs_of(&offsets);
                        let src = Source::Elf(Elf::new(debug.readable_path()));
                        let path = debug.path.to_string_lossy();
                        let what = (&*path, "reinstall or remove that debug file");
                        names_of(
                            symbolizer,
                            &src,
                            |a| Input::VirtOffset(a),
                            &vaddrs,
                            what,
                            &mut unnamed,
                        )
                    }
                    None => {
                        let Some(readable) = t
                            .store_ids
                            .get(&module_id)
                            .and_then(|&id| store.readable_path(id))
                        else {
                            continue;
                        };
                        let src = Source::Elf(Elf::new(readable.path()));
                        let what = (
                            name.as_str(),
                            "rebuild it, or strip its debug information (strip -g)",
                        );
                        names_of(
                            symbolizer,
                            &src,
                            |a| Input::FileOffset(a),
                            &offsets,
                            what,
                            &mut unnamed,
                        )
                    }
                }
            }
            _ => continue,
        };
        for (&loc, sym) in locs.iter().zip(results) {
            // Our programs' code, gone from kallsyms since: its name from when it was loaded.
            // blazesym's own answer cannot judge it: its addresses are in vmlinux's or a
            // module file's space when it reads those instead of kallsyms.
            if kernel && let Some(name) = raw.bpf_programs.find(t.locations[loc].offset) {
                let function = t.function(name, "");
                t.locations[loc].lines = vec![Line { function, line: 0 }];
                continue;
            }
            let Some(sym) = sym else { continue };
            let file_of = |ci: Option<&blazesym::symbolize::CodeInfo<'_>>| {
                ci.map(|c| c.to_path().to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let line_of = |ci: Option<&blazesym::symbolize::CodeInfo<'_>>| {
                ci.and_then(|c| c.line).unwrap_or(0)
            };
            // blazesym lists inlined calls outermost first; the model wants innermost first.
            let mut lines = Vec::with_capacity(sym.inlined.len() + 1);
            for inl in sym.inlined.iter().rev() {
                let f = t.function(&inl.name, &file_of(inl.code_info.as_ref()));
                lines.push(Line {
                    function: f,
                    line: line_of(inl.code_info.as_ref()),
                });
            }
            let f = t.function(&sym.name, &file_of(sym.code_info.as_deref()));
            lines.push(Line {
                function: f,
                line: line_of(sym.code_info.as_deref()),
            });
            t.locations[loc].lines = lines;
        }
    }
    unnamed.rewritten.sort();
    unnamed.rewritten.dedup();
    unnamed
}

/// Files whose frames `resolve_names` left without names, or with fewer.
#[derive(Debug, Default)]
pub(crate) struct Unnamed {
    /// Rewritten in place since they were opened.
    pub rewritten: Vec<String>,
    /// blazesym panicked reading them.
    pub unreadable: Vec<Unreadable>,
}

/// A file blazesym panicked on, and what its addresses kept.
#[derive(Debug)]
pub(crate) struct Unreadable {
    pub path: String,
    /// The first panic's message and place.
    pub panic: String,
    /// What the user can do about it.
    pub fix: &'static str,
    pub addresses: usize,
    /// Named as blazesym names them normally, read on their own.
    pub in_full: usize,
    /// Named from the symbol table alone: their source lines are what failed.
    pub without_lines: usize,
    /// Left as module+0xOFFSET.
    pub unnamed: usize,
}

/// How addresses are handed to blazesym (`Input::FileOffset`, …).
pub(crate) type InputKind = for<'a> fn(&'a [u64]) -> Input<&'a [u64]>;

/// What blazesym makes of one file's addresses, `None` where it found no symbol; empty when
/// it cannot read the file at all (its frames keep module+0xOFFSET). blazesym reads a file
/// the target chose, and panics on some malformed ones: a panic costs that file only. Its
/// addresses are then read one at a time, and one that fails again is read once more from
/// the ELF symbol table alone (no DWARF: no source lines, no inlined frames), or for the
/// kernel from kallsyms alone (no vmlinux or module files), so each keeps what can still be
/// read. Always one entry per address unless blazesym cannot read the
/// file at all. `fix` ends the warning: what the user can do about the file.
pub(crate) fn names_of(
    symbolizer: &Symbolizer,
    src: &Source<'_>,
    input: InputKind,
    addrs: &[u64],
    (path, fix): (&str, &'static str),
    unnamed: &mut Unnamed,
) -> Vec<Option<blazesym::symbolize::Sym<'static>>> {
    // A file whose every address fails would be parsed again for each, in every window of
    // an agent: past this many failures, the rest go straight to the next way, or unnamed.
    const RETRIES_WITH_DWARF: usize = 256;
    const RETRIES_SYMBOL_TABLE: usize = 16;
    fn owned(r: Vec<Symbolized<'_>>) -> Vec<Option<blazesym::symbolize::Sym<'static>>> {
        r.into_iter()
            .map(|s| match s {
                Symbolized::Sym(s) => Some(s.into_owned()),
                _ => None,
            })
            .collect()
    }
    let first = match crate::contain::contained(|| symbolizer.symbolize(src, input(addrs))) {
        Ok(Ok(r)) => return owned(r),
        Ok(Err(_)) => return Vec::new(),
        Err(panic) => panic,
    };
    // The ELF symbol table without DWARF; for the kernel, kallsyms without vmlinux.
    let table_only = match src {
        Source::Elf(elf) => {
            let mut elf = elf.clone();
            elf.debug_syms = false;
            Some(Source::Elf(elf))
        }
        Source::Kernel(kernel) => {
            let mut kernel = kernel.clone();
            kernel.vmlinux = blazesym::MaybeDefault::None;
            kernel.debug_syms = false;
            Some(Source::Kernel(kernel))
        }
        _ => None,
    };
    let plain = std::cell::OnceCell::new();
    let mut failed = Unreadable {
        path: path.to_string(),
        panic: first,
        fix,
        addresses: addrs.len(),
        in_full: 0,
        without_lines: 0,
        unnamed: 0,
    };
    let (mut dwarf_failures, mut table_failures) = (0usize, 0usize);
    let names = addrs
        .iter()
        .map(|addr| {
            let one = std::slice::from_ref(addr);
            if dwarf_failures < RETRIES_WITH_DWARF {
                if let Ok(Ok(r)) =
                    crate::contain::contained(|| symbolizer.symbolize(src, input(one)))
                {
                    let sym = owned(r).pop().flatten();
                    if sym.is_some() {
                        failed.in_full += 1;
                    }
                    return sym;
                }
                dwarf_failures += 1;
            }
            let sym = match &table_only {
                Some(table_only) if table_failures < RETRIES_SYMBOL_TABLE => {
                    let plain: &Symbolizer = plain.get_or_init(|| {
                        Symbolizer::builder()
                            .enable_code_info(false)
                            .enable_inlined_fns(false)
                            .enable_demangling(true)
                            .build()
                    });
                    match crate::contain::contained(|| plain.symbolize(table_only, input(one))) {
                        Ok(Ok(r)) => owned(r).pop().flatten(),
                        _ => {
                            table_failures += 1;
                            None
                        }
                    }
                }
                _ => None,
            };
            match sym {
                Some(_) => failed.without_lines += 1,
                None => failed.unnamed += 1,
            }
            sym
        })
        .collect();
    unnamed.unreadable.push(failed);
    names
}

/// The pages of mapped files read as zeros because the file shrank under the profiler
/// (`crate::sigbus`), by file where `path_at` knows the address; taken after every file was
/// read, so unwinding and symbolizing this recording are both counted.
fn shrunk_warning(
    faults: &crate::sigbus::Faults,
    path_at: impl Fn(usize) -> Option<String>,
) -> Option<String> {
    if faults.pages == 0 {
        return None;
    }
    let mut paths: Vec<String> = faults
        .addresses
        .iter()
        .filter_map(|&a| path_at(a))
        .collect();
    paths.sort();
    paths.dedup();
    let files = if paths.is_empty() {
        String::new()
    } else {
        format!(": {}", list_of(&paths))
    };
    let pages = match faults.pages {
        1 => "1 page".to_string(),
        n => format!("{n} pages"),
    };
    Some(format!(
        "{pages} of mapped files read as zeros: the files shrank on disk while the profiler read them (cut, or rewritten in place) or could not be read (an I/O error), so stacks through them may end early and their frames stay unnamed; replace a file in use with a new one (mv, install), never write into it{files}"
    ))
}

/// One line per missing capability that kept mapped files unread: which files, and the fix.
fn denied_warnings(denied: &[(String, &'static str)]) -> Vec<String> {
    let mut caps: Vec<&'static str> = denied.iter().map(|(_, c)| *c).collect();
    caps.sort_unstable();
    caps.dedup();
    caps.into_iter()
        .map(|cap| {
            let files: Vec<&str> = denied
                .iter()
                .filter(|(_, c)| *c == cap)
                .map(|(p, _)| p.as_str())
                .collect();
            let why = if cap == "CAP_SYS_PTRACE" {
                "another user's process, reached only through its /proc/PID/root"
            } else {
                "other users' files"
            };
            format!(
                "missing {cap}: {} mapped files could not be read ({why}), their frames show as FILE+0xOFFSET: {}{}; run with sudo or grant {cap}",
                files.len(),
                files.iter().take(5).copied().collect::<Vec<_>>().join(", "),
                if files.len() > 5 { ", …" } else { "" }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::{AddressSpace, ProcessInfo, RawSample};

    /// The fuzz corpus's split.c build whose `.debug_line` sets a file index its header does
    /// not list, for the rows from 0x120b (end of hot_a) to 0x12b0 (in main): blazesym
    /// panics on those, and only their source lines are lost.
    #[test]
    fn a_panic_of_blazesym_costs_only_the_source_lines_it_failed_on() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fuzz/corpus/module/crash-debug-line-file-index"
        );
        let src = Source::Elf(Elf::new(path));
        let addrs = [0x11c0, 0x1240, 0x1300, 0x1];
        let mut unnamed = Unnamed::default();
        let names = names_of(
            &symbolizer(),
            &src,
            |a| Input::FileOffset(a),
            &addrs,
            ("badline", "fix"),
            &mut unnamed,
        );
        let got: Vec<(Option<&str>, bool)> = names
            .iter()
            .map(|s| {
                let name = s.as_ref().map(|s| &*s.name);
                (name, s.as_ref().is_some_and(|s| s.code_info.is_some()))
            })
            .collect();
        assert_eq!(
            got,
            [
                (Some("hot_a"), true),
                (Some("hot_b"), false),
                (Some("main"), true),
                (None, false)
            ]
        );
        let [u] = &unnamed.unreadable[..] else {
            panic!("{unnamed:?}");
        };
        // The address without a symbol is neither named nor a failure.
        assert_eq!(
            (u.addresses, u.in_full, u.without_lines, u.unnamed),
            (4, 2, 1, 0)
        );
        assert!(u.panic.contains("unwrap"), "{}", u.panic);
    }

    #[inline(never)]
    fn marker_function_for_symbolization() -> u64 {
        std::hint::black_box(marker_function_for_symbolization as *const () as u64)
    }

    fn raw_with(user: Vec<u64>) -> RawRecording {
        let pid = std::process::id();
        let mut processes = crate::collect::processes::Processes::new(Default::default(), false);
        let mut space = AddressSpace::new(pid);
        space.refresh(&mut processes.modules).expect("own maps");
        let info = ProcessInfo::capture(pid).expect("own info");
        processes.add_root(space, info.clone());
        RawRecording {
            info: info.clone(),
            processes,
            samples: vec![RawSample {
                timestamp_ns: 1,
                pid,
                tid: pid,
                cpu: 0,
                user: RawStack::Inline(user),
                kernel: RawStack::Empty,
                span_id: 0,
                space: 0,
                truncated: false,
            }],
            ..RawRecording::empty_for_tests()
        }
    }

    /// A kernel address in a program gone from kallsyms is named from the entries read while
    /// it was loaded, up to the next entry: kernel text after a program keeps its own name.
    #[test]
    fn kernel_addresses_in_unloaded_programs_are_named_by_the_program() {
        let start = 0xffff_ffff_c000_1000_u64;
        let schedule = kernel_function_range("schedule").map(|r| r.start);
        let mut kallsyms = format!("{start:x} t bpf_prog_0123456789abcdef_cpu_sample\t[bpf]\n");
        if let Some(s) = schedule {
            // A program listed just before `schedule`, which ends it.
            kallsyms += &format!("{:x} t bpf_prog_fedcba9876543210_near\t[bpf]\n", s - 0x10);
            kallsyms += &format!("{s:x} T schedule\n");
        }
        let mut raw = raw_with(vec![]);
        raw.bpf_programs = kallsyms::BpfPrograms::parse(&kallsyms);
        let mut kernel = vec![start + 0x40];
        kernel.extend(schedule.map(|s| s + 0x10));
        raw.samples[0].kernel = RawStack::Inline(kernel);
        let rec = symbolize(&raw);
        let names: Vec<String> = rec.frames(0).iter().map(|f| f.to_string()).collect();
        assert_eq!(
            names[0], "bpf_prog_0123456789abcdef_cpu_sample_[k]",
            "{names:?}"
        );
        // Where kallsyms shows addresses (root), kernel text keeps its own name.
        if schedule.is_some() {
            assert_eq!(names[1], "schedule_[k]", "{names:?}");
        }
    }

    #[test]
    fn spans_nested_past_the_kernels_depth_are_told() {
        let mut raw = raw_with(vec![]);
        raw.counters.span_depth_overflow = 3;
        let rec = symbolize(&raw);
        let w = rec.meta().warnings.join("\n");
        assert!(
            w.contains("3 span enters past 32 spans running at once on a thread"),
            "{w}"
        );
    }

    #[test]
    fn symbolizes_own_function_and_falls_back_to_module_offset() {
        let addr = marker_function_for_symbolization();
        // An address past the last function of our own executable's text mapping.
        let exe_map = {
            let raw = raw_with(vec![]);
            raw.processes.spaces[0].find(addr).expect("mapped").clone()
        };
        let raw = raw_with(vec![addr, exe_map.end - 1, 0x10]);
        let rec = symbolize(&raw);
        let names: Vec<String> = rec.frames(0).iter().map(|f| f.to_string()).collect();
        // The first address may expand into inlined frames before its function's own.
        let marker = names
            .iter()
            .position(|n| n.contains("marker_function_for_symbolization"))
            .unwrap_or_else(|| panic!("marker not found in {names:?}"));
        assert!(
            names[..marker].iter().all(|n| n.ends_with("_[i]")),
            "{names:?}"
        );
        assert!(!names[marker].starts_with("_ZN"), "demangled: {names:?}");
        // A caller outside every mapping ends the stack, which says it was cut.
        assert_eq!(names.len(), marker + 3, "{names:?}");
        assert_eq!(names[marker + 2], TRUNCATED_FRAME, "{names:?}");
        // The tail of the text mapping is either a real symbol or exe+0xOFFSET; never a bare
        // address.
        assert!(!names[marker + 1].starts_with("0x"), "{names:?}");
        let exe_name = exe_map.path.rsplit('/').next().unwrap_or_default();
        let tail = &names[marker + 1];
        assert!(
            !tail.contains('+') || tail.starts_with(&format!("{exe_name}+0x")),
            "{names:?}"
        );
    }

    #[test]
    fn pages_cut_off_files_are_counted_and_named_by_file_where_known() {
        use crate::sigbus::Faults;
        assert_eq!(shrunk_warning(&Faults::default(), |_| None), None);
        let at = |a: usize| (a < 0x2000).then(|| format!("/lib/{}.so", a >> 12));
        let faults = Faults {
            pages: 70,
            addresses: vec![0x1010, 0x5000, 0x1020, 0x0100],
        };
        let w = shrunk_warning(&faults, at).expect("a warning");
        assert!(
            w.starts_with("70 pages of mapped files read as zeros"),
            "{w}"
        );
        assert!(
            w.ends_with("never write into it: /lib/0.so, /lib/1.so"),
            "{w}"
        );
        let unknown = Faults {
            pages: 1,
            addresses: vec![0x5000],
        };
        let w = shrunk_warning(&unknown, at).expect("a warning");
        assert!(w.starts_with("1 page of mapped files"), "{w}");
        assert!(w.ends_with("never write into it"), "{w}");
    }
}
