//! Continuous recording cut into windows (`profiler agent`): at every period boundary the
//! drain loop hands over what it collected before that boundary, symbolized against the
//! process and module state it keeps for the rest of the recording.
//!
//! No gap, no overlap: every sample, span event and off-CPU interval belongs to exactly one
//! window, chosen by its own timestamp (CLOCK_BOOTTIME) against the boundary, never by when
//! it was read. The cut runs a little after the boundary ([`CUT_MARGIN`]) so that records
//! taken just before it have reached the buffers; records taken after it stay for the next
//! window. The kernel's off-CPU sums have no times: each window gets what they grew by
//! since the previous cut, so an interval counts in the window where the thread came back
//! on CPU (or up to [`CUT_MARGIN`] later; for a boundary that a stop crossed while detaching,
//! up to the end), once. The kernel's counters are cut the same way.
use std::{collections::HashMap, time::Duration};

use profiler_common::{EventKind, SpanEvent};

use super::{
    RawRecording, RawStack, StopReason, drain::Sink, offcpu, processes::Processes, session,
    spans::Attached, unwind,
};
use crate::{
    model::{Counters, Recording},
    symbolize::kallsyms::{BpfPrograms, Kallsyms},
};

/// How long after a boundary its window is cut: covers a record's trip from the tick that
/// took it to the ring buffer.
pub const CUT_MARGIN: Duration = Duration::from_millis(200);

/// Windows one symbolizer serves before it is replaced: what it keeps of files that are gone
/// (exited programs, replaced libraries) is let go at least this often.
const SYMBOLIZER_WINDOWS: u32 = 240;

/// Files let go (their processes exited) after which the symbolizer is replaced sooner, but
/// not before it served [`SYMBOLIZER_MIN_WINDOWS`]: replacing it means parsing every live
/// module again.
const SYMBOLIZER_STALE_MODULES: usize = 32;
const SYMBOLIZER_MIN_WINDOWS: u32 = 4;

/// `RecordOptions::window`: cut every `period`, at multiples of it in wall-clock time, and
/// send each window's recording to `tx`. The recording `collect::record` returns is then the
/// last window, from the last boundary to the stop.
#[derive(Clone, Debug)]
pub struct WindowOptions {
    pub period: Duration,
    pub tx: tokio::sync::mpsc::UnboundedSender<Recording>,
    /// The first window ends this long after the start instead of at the next boundary:
    /// a live view (`profiler top`) shows something at once, without waiting up to a whole
    /// period. The windows after it end at the boundaries again.
    pub first: Option<Duration>,
}

/// Identity of one kernel off-CPU sum.
type OffKey = (u32, u32, RawStack, RawStack, u64, bool);

/// What the cuts keep between windows.
pub(super) struct Cutter {
    opts: WindowOptions,
    start_boot_ns: u64,
    start_unix_ns: u64,
    /// The current window's beginning and end (CLOCK_BOOTTIME).
    from_ns: u64,
    to_ns: u64,
    /// When to cut the current window.
    deadline: tokio::time::Instant,
    /// Begins of spans still open at the last boundary: the next windows name their samples.
    open_begins: Vec<SpanEvent>,
    /// The kernel's off-CPU sums at the last cut.
    off_cpu_before: HashMap<OffKey, (u64, u64)>,
    /// The kernel's counters at the last cut, with the losses userspace counts.
    counters_before: Counters,
    /// Kept from window to window: parsing kallsyms and the modules' symbols again for each
    /// window was most of the agent's CPU time. Replaced every [`SYMBOLIZER_WINDOWS`]
    /// windows, since it keeps every file it ever parsed.
    symbolizer: blazesym::symbolize::Symbolizer,
    symbolizer_uses: u32,
    /// Files let go since the symbolizer was made: it may still hold them.
    symbolizer_stale: usize,
    /// Samples and span events read from the ring buffer against what the kernel counted.
    samples_read: Delivered,
    span_events_read: Delivered,
    /// The eBPF programs' kallsyms entries (ours and others'), read with each new symbolizer,
    /// whose own copy of kallsyms is as old: reading it takes ~40 ms. A window symbolizes
    /// while our programs are loaded, but blazesym names kernel addresses from vmlinux
    /// instead of kallsyms where one is installed (`/boot/vmlinux-*`), and vmlinux has no
    /// programs. A program loaded since the reading (a span probe's, at its first attach)
    /// goes unnamed until the next symbolizer. The last window is `record`'s own recording,
    /// which read the entries at the stop.
    bpf_programs: Option<BpfPrograms>,
    /// Threads found exited at the last cut: their names go at this one unless records of
    /// theirs wait in the sink. One window's grace covers records still in the ring buffer
    /// when a thread exits during a cut.
    exited_at_last_cut: std::collections::HashSet<u32>,
}

/// What a window's recording shares with the whole recording.
pub(super) struct Base<'a> {
    pub info: &'a super::ProcessInfo,
    pub spans_attached: &'a Attached,
    pub call_graph: super::CallGraph,
    pub stack_bytes: u32,
    pub frequency_hz: u64,
    pub cpus: u32,
    pub off_cpu: Option<(u64, u64)>,
}

impl Cutter {
    pub fn new(opts: WindowOptions, start_boot_ns: u64, start_unix_ns: u64) -> Self {
        let mut c = Self {
            opts,
            start_boot_ns,
            start_unix_ns,
            from_ns: start_boot_ns,
            to_ns: start_boot_ns,
            deadline: tokio::time::Instant::now(),
            open_begins: Vec::new(),
            off_cpu_before: HashMap::new(),
            counters_before: Counters::default(),
            samples_read: Delivered::default(),
            span_events_read: Delivered::default(),
            symbolizer: crate::symbolize::symbolizer(),
            symbolizer_uses: 0,
            symbolizer_stale: 0,
            bpf_programs: None,
            exited_at_last_cut: std::collections::HashSet::new(),
        };
        match c.opts.first {
            Some(first) => {
                let first_ns = u64::try_from(first.as_nanos()).unwrap_or(u64::MAX);
                c.to_ns = start_boot_ns.saturating_add(first_ns);
                let wait = c.to_ns.saturating_sub(super::boottime_ns());
                c.deadline = tokio::time::Instant::now() + Duration::from_nanos(wait) + CUT_MARGIN;
            }
            None => c.advance(),
        }
        c
    }

    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// Whether the current window ends by `boot_ns` (CLOCK_BOOTTIME).
    pub fn ends_by(&self, boot_ns: u64) -> bool {
        boot_ns >= self.to_ns
    }

    /// The next boundary after the current one: the next multiple of the period in
    /// wall-clock time, so every host's windows line up.
    fn advance(&mut self) {
        let period = u64::try_from(self.opts.period.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let now_unix = self.unix_of(self.to_ns);
        let next_unix = (now_unix / period).saturating_add(1).saturating_mul(period);
        self.from_ns = self.to_ns;
        self.to_ns = self
            .to_ns
            .saturating_add(next_unix.saturating_sub(now_unix));
        let wait = self.to_ns.saturating_sub(super::boottime_ns());
        self.deadline = tokio::time::Instant::now() + Duration::from_nanos(wait) + CUT_MARGIN;
    }

    fn unix_of(&self, boot_ns: u64) -> u64 {
        self.start_unix_ns
            .saturating_add(boot_ns.saturating_sub(self.start_boot_ns))
    }

    /// Cuts the window ending at the current boundary from what `sink` holds, symbolizes it
    /// and sends it. `kernel`: the kernel's counters, read before the ring buffer was drained
    /// for this cut, so that every record they count has been read (see [`Delivered`]).
    pub fn cut(
        &mut self,
        sink: &mut Sink,
        kernel: Option<Counters>,
        session: &session::Session,
        base: &Base,
    ) {
        let to = self.to_ns;
        let (samples, mut span_events, off_events) = sink.take_before(to);
        // Userspace's losses so far, beside the kernel's, as `record` counts them at the end:
        // the window gets what both grew by.
        let mut counters = self.counters(kernel.map(|mut c| {
            super::add_user_losses(&mut c, sink.procs, sink.malformed, sink.targets_refused);
            c
        }));
        counters.received = self.samples_read.cut(
            samples.len() as u64,
            sink.samples.len() as u64,
            counters.emitted,
        );
        counters.span_events_received = self.span_events_read.cut(
            span_events.len() as u64,
            sink.span_events.len() as u64,
            counters.span_events,
        );
        counters.off_cpu_stacks_unmatched = std::mem::take(&mut sink.off_cpu_stacks_unmatched);
        let open_from_before = std::mem::take(&mut self.open_begins);
        let queued = queued_pids(sink);
        self.open_begins = still_open(&open_from_before, &span_events, &queued);
        span_events.splice(0..0, open_from_before);

        let off_cpu = base.off_cpu.map(|(min_ns, interval_min_ns)| {
            // The sums are read now, after the boundary: waits that ended since are in them,
            // in spans that may have begun since. Their begins name them here too (they stay
            // for the next window, whose samples they also name).
            span_events.extend(sink.span_events.iter().filter(|e| is_begin(e)).copied());
            let now = offcpu::read_totals(&session.ebpf).unwrap_or_default();
            self.off_cpu_data(now, off_events, min_ns, interval_min_ns)
        });
        let mut raw = self.raw(
            sink,
            session,
            base,
            samples,
            span_events,
            off_cpu,
            counters,
            to,
        );
        raw.stop_reason = StopReason::Requested;
        // Symbolized against the live state, which is lent to the window and taken back.
        raw.processes = std::mem::take(sink.procs);
        if self.symbolizer_uses >= SYMBOLIZER_WINDOWS
            || self.symbolizer_stale >= SYMBOLIZER_STALE_MODULES
                && self.symbolizer_uses >= SYMBOLIZER_MIN_WINDOWS
        {
            self.symbolizer = crate::symbolize::symbolizer();
            self.bpf_programs = None;
            self.symbolizer_uses = 0;
            self.symbolizer_stale = 0;
        }
        self.symbolizer_uses = self.symbolizer_uses.saturating_add(1);
        let rec = crate::symbolize::symbolize_with(&raw, &self.symbolizer);
        *sink.procs = std::mem::take(&mut raw.processes);
        // A receiver gone (the agent stopping) leaves nothing to do with the window.
        let _ = self.opts.tx.send(rec);
        self.prune(sink);
        self.advance();
    }

    /// What the recording keeps of processes that exited before the window just cut began
    /// (every sample of theirs is in a window by now, with a whole window to spare for
    /// late records) goes, so an agent that runs for days on a machine whose processes
    /// come and go stays the same size.
    fn prune(&mut self, sink: &mut Sink) {
        let pruned = sink.procs.prune_exited(self.from_ns);
        self.symbolizer_stale = self.symbolizer_stale.saturating_add(pruned.modules);
        let waiting: std::collections::HashSet<u32> = sink
            .samples
            .iter()
            .map(|s| &s.user)
            .chain(sink.off_cpu.iter().map(|(o, _)| &o.user))
            .chain(sink.lock_waits.iter().map(|w| &w.user))
            .filter_map(unwound_id)
            .collect();
        sink.unwinder.prune(&pruned.spaces, &waiting);
        sink.meta.prune(&pruned.pids);
        sink.prune_off_cpu_copies();
        // Names come again with each thread's next sample. A thread that has exited keeps
        // its name while records of its wait in the sink for a later window, and for one cut
        // after it was found gone, for records still in the ring buffer then.
        let queued: std::collections::HashSet<u32> = sink
            .samples
            .iter()
            .map(|s| s.tid)
            .chain(sink.off_cpu.iter().map(|(o, _)| o.tid))
            .collect();
        let mut exited = std::collections::HashSet::new();
        sink.threads.retain(|&tid, _| {
            if queued.contains(&tid) || !super::procfs::has_exited(tid) {
                return true;
            }
            exited.insert(tid);
            !self.exited_at_last_cut.contains(&tid)
        });
        self.exited_at_last_cut = exited;
        // Pages of files read for this window: they stay in the page cache, not in the
        // agent's memory.
        sink.procs.modules.release_pages();
    }

    /// Turns the recording `record` is about to return into the last window: what is left
    /// after the last cut, with the spans still open then and only the off-CPU time since.
    pub fn finish(mut self, raw: &mut RawRecording) {
        let mut counters = delta(&raw.counters, &self.counters_before);
        // The kernel's counters were read after the final drain, with sampling stopped.
        counters.received = self
            .samples_read
            .cut(raw.samples.len() as u64, 0, counters.emitted);
        counters.span_events_received =
            self.span_events_read
                .cut(raw.span_events.len() as u64, 0, counters.span_events);
        raw.counters = counters;
        let mut events = std::mem::take(&mut self.open_begins);
        events.append(&mut raw.span_events);
        raw.span_events = events;
        raw.start_boottime_ns = self.from_ns;
        raw.start_unix_ns = self.unix_of(self.from_ns);
        if let Some(o) = raw.off_cpu.as_mut() {
            // The kernel's sums come first, before the intervals that were in none and those
            // still open, which may share their key: each sum is reduced once.
            for t in &mut o.totals {
                let key = off_key(t);
                if let Some((ns, count)) = self.off_cpu_before.remove(&key) {
                    t.total_ns = t.total_ns.saturating_sub(ns);
                    t.count = t.count.saturating_sub(count);
                }
            }
            o.totals.retain(|t| t.count > 0);
        }
    }

    fn counters(&mut self, now: Option<Counters>) -> Counters {
        let Some(now) = now else {
            return Counters::default();
        };
        let d = delta(&now, &self.counters_before);
        self.counters_before = now;
        d
    }

    /// This window's off-CPU time: what the kernel's sums grew by, the intervals they had no
    /// room for, and the intervals that ended in it.
    fn off_cpu_data(
        &mut self,
        now: Vec<offcpu::RawOffCpu>,
        events: Vec<(offcpu::RawOffCpu, bool)>,
        min_ns: u64,
        interval_min_ns: u64,
    ) -> offcpu::RawOffCpuData {
        let mut totals = Vec::new();
        let mut seen = HashMap::with_capacity(now.len());
        for mut t in now {
            let key = off_key(&t);
            let (ns, count) = self.off_cpu_before.get(&key).copied().unwrap_or((0, 0));
            seen.insert(key, (t.total_ns, t.count));
            t.total_ns = t.total_ns.saturating_sub(ns);
            t.count = t.count.saturating_sub(count);
            if t.count > 0 {
                totals.push(t);
            }
        }
        self.off_cpu_before = seen;
        let intervals = offcpu::split_events(events, interval_min_ns, &mut totals);
        offcpu::RawOffCpuData {
            min_ns,
            interval_min_ns,
            totals,
            intervals,
            ..Default::default()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn raw(
        &mut self,
        sink: &mut Sink,
        session: &session::Session,
        base: &Base,
        mut samples: Vec<super::RawSample>,
        span_events: Vec<SpanEvent>,
        mut off_cpu: Option<offcpu::RawOffCpuData>,
        counters: Counters,
        to: u64,
    ) -> RawRecording {
        for s in samples
            .iter_mut()
            .filter(|s| !matches!(s.user, RawStack::Id(id) if id & unwind::UNWOUND_ID_BIT != 0))
        {
            s.space = sink.procs.space_at(s.pid, s.timestamp_ns);
        }
        if let Some(o) = off_cpu.as_mut() {
            // A copied user stack was unwound in the address space of the interval's begin.
            for t in o.totals.iter_mut().filter(|t| !t.copied) {
                t.space = sink.procs.space_at(t.pid, to);
            }
            for i in o.intervals.iter_mut().filter(|i| !i.copied) {
                i.space = sink.procs.space_at(i.pid, i.begin_ns);
            }
        }
        let off_cpu_stacks = off_cpu
            .iter()
            .flat_map(|o| o.totals.iter().chain(&o.intervals))
            .flat_map(|o| [&o.user, &o.kernel]);
        let mut stacks = session
            .stacks(
                samples
                    .iter()
                    .flat_map(|s| [&s.user, &s.kernel])
                    .chain(off_cpu_stacks),
            )
            .unwrap_or_default();
        let unwound: std::collections::HashSet<u32> = samples
            .iter()
            .map(|s| &s.user)
            .chain(
                off_cpu
                    .iter()
                    .flat_map(|o| o.totals.iter().chain(&o.intervals))
                    .map(|o| &o.user),
            )
            .filter_map(unwound_id)
            .collect();
        if !unwound.is_empty() {
            stacks.extend(
                sink.unwinder
                    .stacks
                    .iter()
                    .filter(|(_, id)| unwound.contains(id))
                    .map(|(frames, &id)| (id, frames.clone())),
            );
        }
        let threads = samples
            .iter()
            .map(|s| s.tid)
            .chain(off_cpu.iter().flat_map(|o| o.totals.iter().map(|t| t.tid)))
            .filter_map(|tid| Some((tid, sink.threads.get(&tid)?.clone())))
            .collect();
        RawRecording {
            info: base.info.clone(),
            processes: Processes::default(),
            samples,
            span_events,
            span_meta: sink.meta.cache.clone(),
            spans_attached: base.spans_attached.clone(),
            stacks,
            counters,
            call_graph: base.call_graph,
            stack_bytes: base.stack_bytes,
            unwind: Default::default(),
            off_cpu,
            coverage: None,
            threads,
            start_boottime_ns: self.from_ns,
            end_boottime_ns: to,
            start_unix_ns: self.unix_of(self.from_ns),
            frequency_hz: base.frequency_hz,
            stop_reason: StopReason::Requested,
            load_attach: Duration::ZERO,
            bpf_run_count: 0,
            bpf_run_time_ns: 0,
            cpus: base.cpus,
            warnings: Vec::new(),
            bpf_programs: self
                .bpf_programs
                .get_or_insert_with(|| Kallsyms::read().bpf_programs())
                .clone(),
            alloc: None,
            locks: None,
        }
    }
}

/// Records of one kind read from the ring buffer, against the kernel's count of those it
/// wrote, window by window. The kernel's count is read before the drain, so the records it
/// counts have been read by the cut; records written in between are read too, beyond the
/// count, and carried over to the next window, whose count has them. A real loss hidden by
/// that surplus shows a window later. One exception: a record behind another still being
/// written (reserved on another CPU, not yet submitted) waits for the next drain, and shows
/// as lost in its window and as surplus in the next, which can hide a later loss of one.
#[derive(Debug, Default)]
struct Delivered {
    /// Records read up to the last cut, and those of them that went into windows.
    read: u64,
    assigned: u64,
    /// Read beyond what the kernel had counted at the last cut.
    surplus: u64,
}

impl Delivered {
    /// `assigned`: records that went into this window; `waiting`: read, but of later
    /// windows; `written`: the kernel's count since the last cut. Returns the records of
    /// that count received.
    fn cut(&mut self, assigned: u64, waiting: u64, written: u64) -> u64 {
        self.assigned = self.assigned.saturating_add(assigned);
        let read = self.assigned.saturating_add(waiting);
        let available = read.saturating_sub(self.read).saturating_add(self.surplus);
        self.read = read;
        let received = available.min(written);
        self.surplus = available - received;
        received
    }
}

fn off_key(t: &offcpu::RawOffCpu) -> OffKey {
    (
        t.pid,
        t.tid,
        t.user.clone(),
        t.kernel.clone(),
        t.span_id,
        t.runnable,
    )
}

fn is_begin(e: &SpanEvent) -> bool {
    matches!(
        EventKind::from_u32(e.kind),
        Some(EventKind::SpanBegin | EventKind::SpanFnCall)
    )
}

/// Processes with records still in the sink, for a later window.
fn queued_pids(sink: &Sink) -> std::collections::HashSet<u32> {
    sink.samples
        .iter()
        .map(|s| s.pid)
        .chain(sink.off_cpu.iter().map(|(o, _)| o.pid))
        .collect()
}

/// Begins (carried and new) whose span did not end by the boundary: the span goes on in the
/// next window. Spans of exited processes are let go, once none of their records wait in
/// the sink (`queued`), so a program that never ends its spans cannot grow this without
/// bound.
fn still_open(
    before: &[SpanEvent],
    window: &[SpanEvent],
    queued: &std::collections::HashSet<u32>,
) -> Vec<SpanEvent> {
    let ended: std::collections::HashSet<(u32, u64)> = window
        .iter()
        .filter(|e| {
            matches!(
                EventKind::from_u32(e.kind),
                Some(EventKind::SpanEnd | EventKind::SpanFnReturn)
            )
        })
        .map(|e| (e.pid, e.span_id))
        .collect();
    before
        .iter()
        .chain(window)
        .filter(|e| is_begin(e))
        .filter(|e| !ended.contains(&(e.pid, e.span_id)))
        .filter(|e| queued.contains(&e.pid) || !super::procfs::has_exited(e.pid))
        .copied()
        .collect()
}

/// The id of a stack the unwinder made (DWARF), not one of the kernel's stack map.
fn unwound_id(s: &RawStack) -> Option<u32> {
    match *s {
        RawStack::Id(id) if id & unwind::UNWOUND_ID_BIT != 0 => Some(id),
        _ => None,
    }
}

/// `now - before`, field by field, for the counters kept over the whole recording (the
/// kernel's, and the losses userspace counts).
fn delta(now: &Counters, before: &Counters) -> Counters {
    let mut d = now.clone();
    macro_rules! sub {
        ($($f:ident),*) => { $( d.$f = now.$f.saturating_sub(before.$f); )* };
    }
    sub!(
        seen,
        emitted,
        lost_ringbuf_full,
        user_stack_errors,
        kernel_stack_errors,
        stack_map_full,
        stack_map_collisions,
        span_events,
        span_events_lost,
        span_depth_overflow,
        process_events_lost,
        off_cpu_switches,
        off_cpu_totals_full,
        off_cpu_events_lost,
        off_cpu_lost_ns,
        off_cpu_start_full,
        dwarf_stack_errors,
        dwarf_no_user_regs,
        off_cpu_unmatched,
        kernel_read_failed,
        pending_children_full,
        targets_full,
        span_threads_full,
        bpf_recursion_misses,
        off_cpu_stacks_lost,
        off_cpu_stack_errors,
        wait_stacks_refused,
        malformed_events,
        sideband_lost,
        modules_missed
    );
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, pid: u32, id: u64, ts: u64) -> SpanEvent {
        SpanEvent {
            kind: kind as u32,
            cpu: 0,
            timestamp_ns: ts,
            pid,
            tid: pid,
            span_id: id,
            parent_id: 0,
            meta: 0,
        }
    }

    #[test]
    fn spans_open_at_a_boundary_are_carried_until_they_end() {
        let me = std::process::id();
        let w1 = [
            event(EventKind::SpanBegin, me, 1, 10),
            event(EventKind::SpanBegin, me, 2, 11),
            event(EventKind::SpanEnd, me, 1, 12),
        ];
        let none = std::collections::HashSet::new();
        let open = still_open(&[], &w1, &none);
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].span_id, 2);
        let w2 = [event(EventKind::SpanEnd, me, 2, 20)];
        assert!(still_open(&open, &w2, &none).is_empty());
        // A process that is gone takes its open spans with it, once none of its records
        // wait for the next window.
        let gone = [event(EventKind::SpanBegin, u32::MAX - 1, 3, 30)];
        assert!(still_open(&[], &gone, &none).is_empty());
        let waiting = std::collections::HashSet::from([u32::MAX - 1]);
        assert_eq!(still_open(&[], &gone, &waiting).len(), 1);
    }

    #[test]
    fn records_read_beyond_the_kernels_count_are_no_loss_and_a_real_loss_shows() {
        let mut d = Delivered::default();
        // 100 written and counted; the drain after the count read 3 more, of which 2 belong
        // to the next window's time and wait in the sink.
        assert_eq!(d.cut(101, 2, 100), 100);
        // Those 3 are in the next count: 50 written, of which 47 are new and all read.
        assert_eq!(d.cut(49, 0, 50), 50);
        // 10 lost in the ring buffer: 40 written, 30 read.
        assert_eq!(d.cut(30, 0, 40), 30);
        // A loss hidden by records read early shows a window later, and the total is exact:
        // of 100 counted, 2 were lost, and 5 written after the count were read.
        let mut d = Delivered::default();
        assert_eq!(d.cut(103, 0, 100), 100);
        assert_eq!(d.cut(45, 0, 50), 48);
    }

    /// Thread names are sent once per thread: a cut must not drop the name of a thread that
    /// has exited while samples of its wait in the sink for the next window, or may still be
    /// in the ring buffer (one cut's grace).
    #[test]
    fn an_exited_threads_name_stays_while_its_samples_wait() {
        use crate::collect::RawSample;
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut c = Cutter::new(
            WindowOptions {
                period: Duration::from_secs(1),
                tx,
                first: None,
            },
            1,
            1,
        );
        let mut procs = Processes::new(Default::default(), true);
        let mut meta = super::super::spans::MetaReader::default();
        // Beyond pid_max: threads that are gone.
        let (waiting, done, me) = (u32::MAX - 1, u32::MAX - 2, std::process::id());
        let names = [(waiting, "waiting"), (done, "done"), (me, "me")]
            .map(|(tid, name)| (tid, name.to_string()));
        let mut sink = Sink::new(&mut procs, &mut meta, HashMap::from(names), None);
        sink.samples.push(RawSample {
            timestamp_ns: 5,
            pid: waiting,
            tid: waiting,
            cpu: 0,
            user: RawStack::Empty,
            kernel: RawStack::Empty,
            span_id: 0,
            space: u32::MAX,
            truncated: false,
        });
        let kept = |sink: &Sink| {
            let mut kept: Vec<u32> = sink.threads.keys().copied().collect();
            kept.sort_unstable();
            kept
        };
        let sorted = |mut v: Vec<u32>| {
            v.sort_unstable();
            v
        };
        // Found gone: kept one cut more, for records still in the ring buffer.
        c.prune(&mut sink);
        assert_eq!(kept(&sink), sorted(vec![waiting, done, me]));
        c.prune(&mut sink);
        assert_eq!(kept(&sink), sorted(vec![waiting, me]));
        sink.samples.clear();
        c.prune(&mut sink);
        c.prune(&mut sink);
        assert_eq!(kept(&sink), vec![me]);
    }

    #[test]
    fn user_side_losses_count_in_the_window_they_happened_in() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut c = Cutter::new(
            WindowOptions {
                period: Duration::from_secs(1),
                tx,
                first: None,
            },
            1,
            1,
        );
        // What a cut reads: the kernel's counters with userspace's losses so far, its
        // refused targets inside `targets_full` (`add_user_losses`).
        let first = c.counters(Some(Counters {
            sideband_lost: 4,
            malformed_events: 1,
            targets_full: 2,
            modules_missed: 3,
            ..Default::default()
        }));
        assert_eq!(
            (
                first.sideband_lost,
                first.malformed_events,
                first.targets_full,
                first.modules_missed
            ),
            (4, 1, 2, 3)
        );
        let second = c.counters(Some(Counters {
            sideband_lost: 6,
            malformed_events: 1,
            targets_full: 2,
            modules_missed: 3,
            ..Default::default()
        }));
        assert_eq!(
            (
                second.sideband_lost,
                second.malformed_events,
                second.targets_full,
                second.modules_missed
            ),
            (2, 0, 0, 0)
        );
        // The last window: `record`'s totals, its refused targets inside `targets_full`.
        let mut raw = RawRecording::empty_for_tests();
        raw.counters.sideband_lost = 7;
        raw.counters.malformed_events = 1;
        raw.counters.modules_missed = 5;
        raw.counters.targets_full = 2 + 1;
        c.finish(&mut raw);
        assert_eq!(raw.counters.sideband_lost, 1);
        assert_eq!(raw.counters.malformed_events, 0);
        assert_eq!(raw.counters.modules_missed, 2);
        assert_eq!(raw.counters.targets_full, 1);
    }

    #[test]
    fn counters_of_a_window_are_what_grew_since_the_last_cut() {
        let before = Counters {
            seen: 10,
            lost_ringbuf_full: 2,
            ..Default::default()
        };
        let now = Counters {
            seen: 25,
            lost_ringbuf_full: 2,
            ..Default::default()
        };
        let d = delta(&now, &before);
        assert_eq!((d.seen, d.lost_ringbuf_full), (15, 0));
    }

    #[test]
    fn boundaries_are_multiples_of_the_period_in_wall_clock_time() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let period = Duration::from_secs(15);
        let start_boot = 1_000_000_000_000;
        let start_unix = 1_700_000_007_250_000_000;
        let c = Cutter::new(
            WindowOptions {
                period,
                tx,
                first: None,
            },
            start_boot,
            start_unix,
        );
        assert_eq!(c.unix_of(c.to_ns) % 15_000_000_000, 0);
        assert_eq!(c.from_ns, start_boot);
        let mut c = c;
        let first_end = c.to_ns;
        c.advance();
        assert_eq!(c.from_ns, first_end);
        assert_eq!(c.to_ns - c.from_ns, 15_000_000_000);
    }

    #[test]
    fn a_first_window_ends_early_and_the_next_at_a_boundary() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let start_boot = 1_000_000_000_000;
        let start_unix = 1_700_000_007_250_000_000;
        let mut c = Cutter::new(
            WindowOptions {
                period: Duration::from_secs(1),
                tx,
                first: Some(Duration::from_millis(300)),
            },
            start_boot,
            start_unix,
        );
        assert_eq!(c.to_ns - c.from_ns, 300_000_000);
        c.advance();
        assert_eq!(c.unix_of(c.to_ns) % 1_000_000_000, 0);
        assert_eq!(c.to_ns - c.from_ns, 450_000_000);
    }
}
