//! What the recording loop does with what arrives: ring buffer records become samples, span
//! and off-CPU events; side-band records build the processes' address spaces; DWARF samples
//! are unwound once the side-band records of their time have been read.
use std::{collections::HashMap, time::Instant};

use aya::maps::{HashMap as BpfHashMap, MapData, RingBuf};
use profiler_common::{DwarfRegs, EventKind, SpanEvent, dwarf_regs};

use super::{
    RawSample, RawStack, alloc,
    decode::{Event, parse_event},
    locks, offcpu, processes, sideband, spans, stack_copy,
    targets::Targets,
    unwind,
};

/// Side-band records are written when their event happens; this margin covers the time
/// between taking a record's timestamp and its bytes reaching the buffer. A read that began
/// at T holds every record of every CPU up to T minus this margin.
const SIDEBAND_MARGIN_NS: u64 = 1_000_000;

/// Where drained records go.
pub struct Sink<'a> {
    pub samples: Vec<RawSample>,
    pub span_events: Vec<SpanEvent>,
    /// Off-CPU intervals, and whether the kernel's sums hold them too.
    pub off_cpu: Vec<(offcpu::RawOffCpu, bool)>,
    /// Sampled allocations (`--alloc`).
    pub allocs: Vec<alloc::RawAlloc>,
    /// Futex and kernel lock waits (`--locks`); the futex waits' ends by sequence number.
    pub lock_waits: Vec<locks::RawLockWait>,
    pub lock_ends: HashMap<u64, u64>,
    pub unwinder: unwind::Unwinder,
    /// Per-thread stack copy sizes and the kernel's map of them, when the kernel copies stacks
    /// (DWARF may be used, or `--locks`).
    pub copy_sizes: Option<(stack_copy::Sizes, BpfHashMap<MapData, u32, u64>)>,
    /// Stack copies not unwound yet: (whose, registers, stack bytes).
    to_unwind: std::collections::VecDeque<(Copied, DwarfRegs, Vec<u8>)>,
    /// Off-CPU user stack copies waiting for their interval's end, by thread: (the
    /// interval's begin, registers, stack bytes). A thread has one interval open at a time:
    /// a copy whose interval was too short to count (`--off-cpu-min`) is replaced by the next.
    off_cpu_copies: HashMap<u32, (u64, DwarfRegs, Vec<u8>)>,
    /// Threads holding a copy that had exited at the last prune.
    copies_of_exited: std::collections::HashSet<u32>,
    /// Off-CPU intervals whose user stack copy never came (the kernel counts copies lost):
    /// they are kept without user stack.
    pub off_cpu_stacks_unmatched: u64,
    /// The targets map, where userspace updates it at exec: the call graph (`--call-graph
    /// auto` with processes followed) and membership (`--comm`).
    pub auto_targets: Option<Targets>,
    /// `--call-graph auto`: each exec chooses the call graph of the new program.
    pub auto_call_graph: bool,
    /// `--comm`: each exec in the PID namespace is judged by the new command name.
    pub comm: Option<super::scope::Comm>,
    /// Flags of a process `--comm` adds (before `auto` judges its program).
    pub comm_flags: u32,
    /// Processes `--comm` could not add: the targets map was full.
    pub targets_refused: u64,
    pub threads: HashMap<u32, String>,
    pub meta: &'a mut spans::MetaReader,
    pub procs: &'a mut processes::Processes,
    pub malformed: u64,
    /// Side-band records up to this time (CLOCK_BOOTTIME) have been applied.
    pub sideband_horizon_ns: u64,
    /// When to read the side-band buffers next, the kernel no longer waking us per record.
    pub sideband_pace: sideband::Pace,
    /// A target's exec makes it known at once (its files are then looked at as it maps
    /// them), not at its first sample.
    pub know_execs: bool,
}

/// What a queued stack copy belongs to: an index in `Sink::samples`, `Sink::off_cpu` or
/// `Sink::lock_waits`.
#[derive(Clone, Copy, Debug)]
enum Copied {
    Sample(usize),
    OffCpu(usize),
    LockWait(usize),
}

impl<'a> Sink<'a> {
    pub fn new(
        procs: &'a mut processes::Processes,
        meta: &'a mut spans::MetaReader,
        threads: HashMap<u32, String>,
        auto_targets: Option<Targets>,
    ) -> Self {
        Self {
            samples: Vec::new(),
            span_events: Vec::new(),
            off_cpu: Vec::new(),
            allocs: Vec::new(),
            lock_waits: Vec::new(),
            lock_ends: HashMap::new(),
            unwinder: unwind::Unwinder::default(),
            copy_sizes: None,
            to_unwind: Default::default(),
            off_cpu_copies: HashMap::new(),
            copies_of_exited: Default::default(),
            off_cpu_stacks_unmatched: 0,
            auto_targets,
            threads,
            meta,
            procs,
            malformed: 0,
            sideband_horizon_ns: 0,
            sideband_pace: sideband::Pace::default(),
            know_execs: false,
            auto_call_graph: false,
            comm: None,
            comm_flags: 0,
            targets_refused: 0,
        }
    }

    /// Reads the side-band records available now, and applies those every CPU's buffer is
    /// complete up to (the newer ones wait for the next read).
    pub fn drain_sideband(&mut self, sideband: &mut sideband::Sideband) {
        let read_at = super::boottime_ns();
        self.apply_sideband(sideband, read_at.saturating_sub(SIDEBAND_MARGIN_NS));
    }

    /// Applies every side-band record, once the programs are detached.
    pub fn finish_sideband(&mut self, sideband: &mut sideband::Sideband) {
        self.apply_sideband(sideband, u64::MAX);
    }

    fn apply_sideband(&mut self, sideband: &mut sideband::Sideband, horizon_ns: u64) {
        let records = sideband.read();
        let lost_before = self.procs.sideband_lost;
        let applied_before = self.procs.applied;
        let held = self.procs.receive(records, horizon_ns);
        self.sideband_pace.read(
            Instant::now(),
            self.procs
                .applied
                .saturating_sub(applied_before)
                .saturating_add(held),
        );
        // With records lost, /proc is the only way left to learn the live processes' maps.
        if self.procs.sideband_lost > lost_before {
            self.procs.refresh_live();
        }
        self.sideband_horizon_ns = horizon_ns;
    }

    pub fn drain_ring(&mut self, ring: &mut RingBuf<MapData>) {
        while let Some(item) = ring.next() {
            match parse_event(&item) {
                Some(Event::SampleDwarf(sample, comm, regs, stack)) => {
                    if let Some(comm) = comm {
                        self.threads.insert(sample.tid, comm);
                    }
                    let bytes = item.get(stack).unwrap_or(&[]).to_vec();
                    self.to_unwind
                        .push_back((Copied::Sample(self.samples.len()), regs, bytes));
                    self.samples.push(sample);
                }
                Some(Event::Sample(sample, comm)) => {
                    // The latest name wins: threads rename themselves, and exec renames them.
                    // The kernel sends a name again after any rename (`thread_name`).
                    if let Some(comm) = comm {
                        self.threads.insert(sample.tid, comm);
                    }
                    self.samples.push(sample);
                }
                Some(Event::Process(e)) => match EventKind::from_u32(e.kind) {
                    Some(EventKind::ProcessExec) => {
                        self.meta.forget(e.pid);
                        // Samples of the old image still waiting to be unwound may teach it
                        // the old stack's top again: a copy cut there is seen (`PastEnd`)
                        // and the top dropped.
                        if let Some((sizes, _)) = self.copy_sizes.as_mut() {
                            sizes.forget(e.pid);
                        }
                        if !self.judge_comm(e.pid) {
                            continue;
                        }
                        if self.auto_call_graph
                            && let Some(targets) = self.auto_targets.as_mut()
                        {
                            choose_call_graph(targets, self.procs, e.pid);
                        }
                        if self.know_execs
                            && !self.procs.is_known(e.pid)
                            && !self.procs.is_joining(e.pid)
                        {
                            self.procs.space_at(e.pid, e.timestamp_ns);
                            // The exec's own records, still held, name the files it maps.
                            let held = self.procs.open_held_files();
                            if held > 0 {
                                self.sideband_pace.read(Instant::now(), held);
                            }
                        }
                    }
                    Some(EventKind::ProcessExit) => self.meta.forget(e.pid),
                    _ => {}
                },
                Some(Event::OffCpuStack {
                    tid,
                    begin_ns,
                    regs,
                    stack,
                }) => {
                    let bytes = item.get(stack).unwrap_or(&[]).to_vec();
                    self.off_cpu_copies.insert(tid, (begin_ns, regs, bytes));
                }
                Some(Event::OffCpu(e)) => {
                    let interval = offcpu::from_event(&e);
                    // The copy was sent at the interval's begin, before this record.
                    if interval.copied {
                        match self.take_off_cpu_copy(e.tid, e.begin_ns) {
                            Some((regs, bytes)) => self.to_unwind.push_back((
                                Copied::OffCpu(self.off_cpu.len()),
                                regs,
                                bytes,
                            )),
                            None => {
                                self.off_cpu_stacks_unmatched =
                                    self.off_cpu_stacks_unmatched.saturating_add(1);
                            }
                        }
                    }
                    self.off_cpu.push((interval, e.in_totals != 0));
                }
                Some(Event::Alloc(e)) => self.allocs.push(alloc::RawAlloc::from_event(&e)),
                Some(Event::LockWait(e, regs, stack)) => {
                    self.push_lock_wait(locks::RawLockWait::new(&e), regs, item.get(stack));
                }
                Some(Event::KernelLock(e, regs, stack)) => {
                    self.push_lock_wait(locks::RawLockWait::from_kernel(&e), regs, item.get(stack));
                }
                Some(Event::LockDone(e)) => {
                    self.lock_ends.insert(e.seq, e.end_ns);
                }
                Some(Event::Span(e)) => {
                    // Metadata is read while the target is alive, once per callsite.
                    if e.kind == EventKind::SpanBegin as u32 && e.meta != 0 {
                        self.meta.read(e.pid, e.meta);
                    }
                    self.span_events.push(e);
                }
                None => self.malformed += 1,
            }
        }
    }

    /// Whether the process that exec'd is a target now. Under `--comm` the kernel reports
    /// every exec of the PID namespace: a process whose new name matches joins the targets
    /// (from now on: its samples since the exec are not recorded), one whose name no longer
    /// matches leaves them.
    fn judge_comm(&mut self, pid: u32) -> bool {
        let (Some(comm), Some(targets)) = (self.comm.as_ref(), self.auto_targets.as_mut()) else {
            return true;
        };
        let wanted = comm.matches_pid(pid);
        let present = targets.get(pid).is_some();
        if wanted && !present && targets.insert(pid, self.comm_flags).is_err() {
            self.targets_refused = self.targets_refused.saturating_add(1);
            return false;
        }
        if !wanted && present {
            targets.remove(pid);
        }
        wanted
    }

    /// Takes out what happened before `boundary_ns` (CLOCK_BOOTTIME): samples, span events
    /// and off-CPU intervals that ended before it, for a window (`collect::window`), their
    /// stack copies unwound.
    pub fn take_before(
        &mut self,
        boundary_ns: u64,
    ) -> (
        Vec<RawSample>,
        Vec<SpanEvent>,
        Vec<(offcpu::RawOffCpu, bool)>,
    ) {
        // Copies taken after the horizon wait for the side-band records of their time (a
        // child's fork, its loader's mappings): they stay queued, renumbered to where their
        // samples and intervals are after the cut.
        self.unwind_until(self.sideband_horizon_ns.max(boundary_ns));
        let (before, sample_at) = split_off(&mut self.samples, |s| s.timestamp_ns < boundary_ns);
        let (spans, later) = std::mem::take(&mut self.span_events)
            .into_iter()
            .partition(|e| e.timestamp_ns < boundary_ns);
        self.span_events = later;
        let (off_cpu, off_cpu_at) = split_off(&mut self.off_cpu, |(o, _)| o.end_ns < boundary_ns);
        self.to_unwind.retain_mut(|(owner, _, _)| {
            let moved = match owner {
                Copied::Sample(at) => sample_at.get(*at).copied().flatten().map(|n| *at = n),
                Copied::OffCpu(at) => off_cpu_at.get(*at).copied().flatten().map(|n| *at = n),
                Copied::LockWait(_) => Some(()),
            };
            moved.is_some()
        });
        (before, spans, off_cpu)
    }

    /// The lock waits with their ends (a futex wait whose end never came is closed at
    /// `end_ns`, and counted), their user stacks unwound; and how many were unfinished.
    pub fn take_lock_waits(&mut self, end_ns: u64) -> (Vec<locks::RawLockWait>, u64) {
        self.unwind_pending(None);
        let mut waits = std::mem::take(&mut self.lock_waits);
        let mut unfinished = 0u64;
        for w in &mut waits {
            // A kernel lock wait arrives whole, at its end.
            if w.kernel_flags.is_none() {
                w.end_ns = match self.lock_ends.get(&w.seq) {
                    Some(&end) => end.max(w.begin_ns),
                    None => {
                        unfinished += 1;
                        end_ns.max(w.begin_ns)
                    }
                };
            }
            if !w.copied {
                w.space = self.procs.space_at(w.pid, w.begin_ns);
            }
        }
        (waits, unfinished)
    }

    /// A lock wait, its user stack queued to unwind; one whose copy failed (empty) stays
    /// without stack.
    fn push_lock_wait(&mut self, wait: locks::RawLockWait, regs: DwarfRegs, stack: Option<&[u8]>) {
        if let Some(bytes) = stack.filter(|b| !b.is_empty()) {
            self.to_unwind.push_back((
                Copied::LockWait(self.lock_waits.len()),
                regs,
                bytes.to_vec(),
            ));
        }
        self.lock_waits.push(wait);
    }

    /// The copy of `tid`'s user stack taken at `begin_ns`, if it came. An older copy of the
    /// thread's goes: its interval was too short to count, or its record was lost.
    fn take_off_cpu_copy(&mut self, tid: u32, begin_ns: u64) -> Option<(DwarfRegs, Vec<u8>)> {
        let (begin, _, _) = self.off_cpu_copies.get(&tid)?;
        if *begin > begin_ns {
            return None;
        }
        let (begin, regs, bytes) = self.off_cpu_copies.remove(&tid)?;
        (begin == begin_ns).then_some((regs, bytes))
    }

    /// Unwinds the user stacks of off-CPU intervals still open at the end (`offcpu::read_open`),
    /// from the copies taken at their begins; an interval whose copy never came is counted.
    pub fn unwind_open_off_cpu(&mut self, open: &mut [offcpu::RawOffCpu]) {
        for o in open.iter_mut().filter(|o| o.copied) {
            let Some((regs, stack)) = self.take_off_cpu_copy(o.tid, o.begin_ns) else {
                self.off_cpu_stacks_unmatched = self.off_cpu_stacks_unmatched.saturating_add(1);
                continue;
            };
            o.space = self.procs.space_at(o.pid, o.begin_ns);
            let at = (o.space, o.begin_ns);
            (o.user, o.truncated) = self.unwind_waiting(o.tid, at, &regs, &stack);
        }
    }

    /// An off-CPU or lock wait user stack, unwound apart from the samples' statistics, which
    /// describe the samples' copies. What it read sizes the thread's next copies as samples
    /// do: a thread that mostly waits has few samples to size them from.
    fn unwind_waiting(
        &mut self,
        tid: u32,
        (space, time_ns): (u32, u64),
        regs: &DwarfRegs,
        stack: &[u8],
    ) -> (RawStack, bool) {
        let Some(s) = self.procs.spaces.get(space as usize) else {
            return (RawStack::Empty, false);
        };
        let copy = copy_of(regs, stack.len());
        let stats = std::mem::take(&mut self.unwinder.stats);
        let unwound = self.unwinder.unwind(
            (space, time_ns),
            s,
            &self.procs.modules,
            regs,
            stack,
            copy.reached_top(),
        );
        self.unwinder.stats = stats;
        self.observe_copy(tid, copy, unwound.outcome);
        (
            unwound.id.map_or(RawStack::Empty, RawStack::Id),
            unwound.truncated,
        )
    }

    /// Copies of threads that have exited: their intervals will not end (a thread's last
    /// switch-out closes none), and a recording that runs for days must not keep them. A
    /// thread may come back, close its interval and exit after the last drain, so a copy goes
    /// only when its thread had already exited at the previous prune: its interval's record,
    /// if any, has been drained since.
    pub fn prune_off_cpu_copies(&mut self) {
        let exited: std::collections::HashSet<u32> = self
            .off_cpu_copies
            .keys()
            .copied()
            .filter(|&tid| super::procfs::has_exited(tid))
            .collect();
        let before = std::mem::replace(&mut self.copies_of_exited, exited);
        self.off_cpu_copies.retain(|tid, _| !before.contains(tid));
    }

    /// Tells the thread's copy sizing what an unwind of its copy found; true when the copy,
    /// cut short by that sizing, was too short.
    fn observe_copy(
        &mut self,
        tid: u32,
        copy: stack_copy::Copy,
        outcome: stack_copy::Outcome,
    ) -> bool {
        let Some((sizes, _)) = self.copy_sizes.as_mut() else {
            return false;
        };
        sizes.observe(tid, copy, outcome)
    }

    /// When the stack of a queued copy was taken, None when its owner is gone.
    fn taken_at(&self, owner: Copied) -> Option<u64> {
        match owner {
            Copied::Sample(at) => self.samples.get(at).map(|s| s.timestamp_ns),
            Copied::OffCpu(at) => self.off_cpu.get(at).map(|(o, _)| o.begin_ns),
            Copied::LockWait(at) => self.lock_waits.get(at).map(|w| w.begin_ns),
        }
    }

    /// Unwinds queued stack copies (DWARF samples, off-CPU intervals, lock waits) whose
    /// address space is known (side-band records up to their time applied), oldest first,
    /// for at most `budget`; at the end (None) all of them.
    pub fn unwind_pending(&mut self, budget: Option<std::time::Duration>) {
        let started = Instant::now();
        while let Some(&(owner, _, _)) = self.to_unwind.front() {
            let ready = budget.is_none()
                || self
                    .taken_at(owner)
                    .is_none_or(|t| t <= self.sideband_horizon_ns);
            if !ready {
                break;
            }
            let Some((owner, regs, stack)) = self.to_unwind.pop_front() else {
                break;
            };
            self.unwind_one(owner, &regs, &stack);
            if budget.is_some_and(|b| started.elapsed() >= b) {
                break;
            }
        }
        if let Some((sizes, map)) = self.copy_sizes.as_mut() {
            sizes.flush(map);
        }
    }

    /// Unwinds every queued copy taken by `until_ns`, wherever it is in the queue; the others
    /// stay queued, in order.
    fn unwind_until(&mut self, until_ns: u64) {
        for (owner, regs, stack) in std::mem::take(&mut self.to_unwind) {
            if self.taken_at(owner).is_none_or(|t| t <= until_ns) {
                self.unwind_one(owner, &regs, &stack);
            } else {
                self.to_unwind.push_back((owner, regs, stack));
            }
        }
        if let Some((sizes, map)) = self.copy_sizes.as_mut() {
            sizes.flush(map);
        }
    }

    fn unwind_one(&mut self, owner: Copied, regs: &DwarfRegs, stack: &[u8]) {
        match owner {
            Copied::Sample(at) => self.unwind_sample(at, regs, stack),
            Copied::OffCpu(at) => {
                if let Some((o, _)) = self.off_cpu.get(at) {
                    let (tid, space) = (o.tid, self.procs.space_at(o.pid, o.begin_ns));
                    let when = (space, o.begin_ns);
                    let (user, truncated) = self.unwind_waiting(tid, when, regs, stack);
                    if let Some((o, _)) = self.off_cpu.get_mut(at) {
                        (o.space, o.user, o.truncated) = (space, user, truncated);
                    }
                }
            }
            Copied::LockWait(at) => {
                if let Some(w) = self.lock_waits.get(at) {
                    let (tid, space) = (w.tid, self.procs.space_at(w.pid, w.begin_ns));
                    let when = (space, w.begin_ns);
                    let (user, truncated) = self.unwind_waiting(tid, when, regs, stack);
                    if let Some(w) = self.lock_waits.get_mut(at) {
                        (w.space, w.user, w.truncated) = (space, user, truncated);
                        w.copied = true;
                    }
                }
            }
        }
    }

    fn unwind_sample(&mut self, at: usize, regs: &DwarfRegs, stack: &[u8]) {
        let Some(sample) = self.samples.get_mut(at) else {
            return;
        };
        sample.space = self.procs.space_at(sample.pid, sample.timestamp_ns);
        let Some(space) = self.procs.spaces.get(sample.space as usize) else {
            return;
        };
        let tid = sample.tid;
        let copy = copy_of(regs, stack.len());
        let unwound = self.unwinder.unwind(
            (sample.space, sample.timestamp_ns),
            space,
            &self.procs.modules,
            regs,
            stack,
            copy.reached_top(),
        );
        sample.user = unwound.id.map_or(RawStack::Empty, RawStack::Id);
        sample.truncated = unwound.truncated;
        if self.observe_copy(tid, copy, unwound.outcome) {
            self.unwinder.stats.out_of_sized_copy += 1;
        }
    }
}

/// One copy of a thread's stack, as the kernel made it.
fn copy_of(regs: &DwarfRegs, len: usize) -> stack_copy::Copy {
    stack_copy::Copy {
        sp: regs.sp,
        len: u32::try_from(len).unwrap_or(u32::MAX),
        at_stack_end: regs.source & dwarf_regs::STACK_END != 0,
        at_top: regs.source & dwarf_regs::AT_TOP != 0,
    }
}

/// Sets or clears the DWARF flag of `pid` for the program it now runs (`auto`).
/// Takes out of `items` those `leaves`; returns them, and where each item that stayed was
/// before (its new index, by old index; None for those taken).
fn split_off<T>(items: &mut Vec<T>, leaves: impl Fn(&T) -> bool) -> (Vec<T>, Vec<Option<usize>>) {
    let mut gone = Vec::new();
    let mut at = Vec::with_capacity(items.len());
    for item in std::mem::take(items) {
        if leaves(&item) {
            at.push(None);
            gone.push(item);
        } else {
            at.push(Some(items.len()));
            items.push(item);
        }
    }
    (gone, at)
}

fn choose_call_graph(targets: &mut Targets, procs: &mut processes::Processes, pid: u32) {
    // The exec event comes at the end of the exec: /proc/PID/exe is the new program.
    let exe = format!("/proc/{pid}/exe");
    let Ok(path) = std::fs::read_link(&exe) else {
        return;
    };
    let Some(id) = procs.modules.intern_file(&exe, &path.to_string_lossy()) else {
        return;
    };
    let fp = procs.modules.get(id).and_then(|m| m.frame_pointers());
    targets.set_call_graph(pid, !fp.unwrap_or(false));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(timestamp_ns: u64, pid: u32) -> RawSample {
        RawSample {
            timestamp_ns,
            pid,
            tid: pid,
            cpu: 0,
            user: RawStack::Empty,
            kernel: RawStack::Empty,
            span_id: 0,
            space: u32::MAX,
            truncated: false,
        }
    }

    #[test]
    fn a_cut_leaves_copies_newer_than_the_horizon_queued_for_their_records() {
        // Pids above pid_max: nothing is read from /proc.
        let (root, child) = (4_000_100, 4_000_101);
        let mut procs = processes::Processes::new(Default::default(), true);
        procs.add_root(
            super::super::procfs::AddressSpace::new(root),
            Default::default(),
        );
        let mut meta = spans::MetaReader::default();
        let mut sink = Sink::new(&mut procs, &mut meta, HashMap::new(), None);
        sink.sideband_horizon_ns = 100;
        for (at, s) in [sample(10, root), sample(500, child)]
            .into_iter()
            .enumerate()
        {
            sink.samples.push(s);
            sink.to_unwind
                .push_back((Copied::Sample(at), DwarfRegs::default(), Vec::new()));
        }
        let (before, _, _) = sink.take_before(50);
        assert_eq!(before.len(), 1);
        assert_ne!(before[0].space, u32::MAX, "unwound in its space");
        // The child's fork (at 400) is read after the cut: its sample waits for it.
        assert!(matches!(
            sink.to_unwind.front(),
            Some((Copied::Sample(0), _, _))
        ));
        assert!(!sink.procs.is_known(child));
        sink.procs.receive(
            vec![sideband::Record::Fork {
                pid: child,
                ppid: root,
                tid: child,
                time_ns: 400,
            }],
            1000,
        );
        sink.sideband_horizon_ns = 1000;
        sink.unwind_pending(Some(std::time::Duration::from_secs(1)));
        assert_eq!(sink.procs.parents.get(&child), Some(&root));
        assert_eq!(
            sink.samples[0].space,
            sink.procs.space_at(child, 500),
            "in the space its fork made"
        );
    }

    #[test]
    fn split_off_tells_where_each_kept_item_went() {
        let mut v = vec![1, 20, 3, 40, 50];
        let (gone, at) = split_off(&mut v, |&x| x < 10);
        assert_eq!((gone, v), (vec![1, 3], vec![20, 40, 50]));
        assert_eq!(at, vec![None, Some(0), None, Some(1), Some(2)]);
    }
}
