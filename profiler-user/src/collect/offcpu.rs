//! `--off-cpu`: when target threads leave the CPU (sched_switch) and for how long, summed per
//! (thread, stacks, span, state) in the kernel; long intervals also arrive one by one.
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData};
use profiler_common::{OffCpuEvent, OffCpuKey, OffCpuStart, OffCpuTotal, USER_STACK_COPIED, names};

use super::{RawStack, map_err, object_map_ref};
use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpuOptions {
    /// Intervals shorter than this are not counted.
    pub min: Duration,
    /// Intervals at least this long are kept one by one (timelines) besides being summed.
    pub interval_min: Duration,
    /// 1 switch-out in this many is recorded, at random, and counted this many times.
    pub sample_every: u32,
}

/// Off-CPU time of one thread from one place: a sum over intervals, or one interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawOffCpu {
    pub pid: u32,
    pub tid: u32,
    pub user: RawStack,
    pub kernel: RawStack,
    /// The user stack was sent as a copy to unwind (DWARF mode): `user` is Empty until it is.
    pub copied: bool,
    /// Its unwinding stopped before the thread's entry point.
    pub truncated: bool,
    pub span_id: u64,
    /// Preempted while runnable (waiting for a CPU) rather than blocked.
    pub runnable: bool,
    pub total_ns: u64,
    pub count: u64,
    /// An interval's edges (CLOCK_BOOTTIME); 0 in sums.
    pub begin_ns: u64,
    pub end_ns: u64,
    /// Index of the address space its stacks were taken in.
    pub space: u32,
}

#[derive(Debug, Default)]
pub struct RawOffCpuData {
    pub min_ns: u64,
    pub interval_min_ns: u64,
    /// `--off-cpu-sample`: the sums count each recorded interval this many times.
    pub sample_every: u32,
    /// Every counted interval, summed: the kernel's sums, intervals the sums had no room for,
    /// and intervals still open when the recording stopped (cut at its end).
    pub totals: Vec<RawOffCpu>,
    /// Intervals of at least `interval_min_ns`, in arrival order.
    pub intervals: Vec<RawOffCpu>,
    /// Kernel BPF run-time statistics of the sched_switch program.
    pub bpf_run_count: u64,
    pub bpf_run_time_ns: u64,
}

impl RawOffCpu {
    /// Whose and where from, as the kernel's records say; no time yet.
    fn new(
        pid: u32,
        tid: u32,
        user_stack_id: i32,
        kernel_stack_id: i32,
        span_id: u64,
        runnable: u32,
    ) -> Self {
        Self {
            pid,
            tid,
            user: RawStack::from_id(user_stack_id),
            kernel: RawStack::from_id(kernel_stack_id),
            copied: user_stack_id == USER_STACK_COPIED,
            truncated: false,
            span_id,
            runnable: runnable != 0,
            total_ns: 0,
            count: 0,
            begin_ns: 0,
            end_ns: 0,
            space: 0,
        }
    }

    /// One interval, from `begin_ns` to `end_ns`.
    fn interval(self, begin_ns: u64, end_ns: u64) -> Self {
        Self {
            total_ns: end_ns.saturating_sub(begin_ns),
            count: 1,
            begin_ns,
            end_ns,
            ..self
        }
    }
}

/// Interval events as the kernel sent them, each (interval, whether its sums hold it): those
/// the sums do not hold go to `totals`, to be summed here; those long enough for the
/// timeline are returned.
pub fn split_events(
    events: Vec<(RawOffCpu, bool)>,
    interval_min_ns: u64,
    totals: &mut Vec<RawOffCpu>,
) -> Vec<RawOffCpu> {
    let mut intervals = Vec::with_capacity(events.len());
    for (e, in_totals) in events {
        if e.total_ns >= interval_min_ns {
            intervals.push(e.clone());
        }
        if !in_totals {
            totals.push(e);
        }
    }
    intervals
}

pub fn from_event(e: &OffCpuEvent) -> RawOffCpu {
    RawOffCpu::new(
        e.pid,
        e.tid,
        e.user_stack_id,
        e.kernel_stack_id,
        e.span_id,
        e.runnable,
    )
    .interval(e.begin_ns, e.end_ns)
}

/// Plain old data read back from map bytes; the byte arrays keep `aya::Pod` off the shared
/// types, which must stay free of userspace dependencies.
fn read_pod<T: Copy>(bytes: &[u8]) -> Option<T> {
    // SAFETY: length checked; callers only use repr(C) integer-only types.
    (bytes.len() >= size_of::<T>())
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) })
}

type KeyBytes = [u8; size_of::<OffCpuKey>()];
type TotalBytes = [u8; size_of::<OffCpuTotal>()];
type StartBytes = [u8; size_of::<OffCpuStart>()];

/// The kernel's sums.
pub fn read_totals(ebpf: &aya::Ebpf) -> Result<Vec<RawOffCpu>> {
    let map = object_map_ref(ebpf, names::MAP_OFF_CPU_TOTALS)?;
    let totals: BpfHashMap<&MapData, KeyBytes, TotalBytes> =
        BpfHashMap::try_from(map).map_err(map_err(names::MAP_OFF_CPU_TOTALS))?;
    let mut out = Vec::new();
    for item in totals.iter() {
        let (key, total) = item.map_err(map_err(names::MAP_OFF_CPU_TOTALS))?;
        let (Some(k), Some(t)) = (read_pod::<OffCpuKey>(&key), read_pod::<OffCpuTotal>(&total))
        else {
            continue;
        };
        if t.count == 0 {
            continue;
        }
        out.push(RawOffCpu {
            total_ns: t.total_ns,
            count: t.count,
            ..RawOffCpu::new(
                k.pid,
                k.tid,
                k.user_stack_id,
                k.kernel_stack_id,
                k.span_id,
                k.runnable,
            )
        });
    }
    Ok(out)
}

/// Threads still off CPU when the recording stopped: their time up to `end_ns` counts too.
/// (A thread that was already off CPU when the recording started and never ran during it is
/// not seen at all: the program learns of a thread at its switch-out.) Threads that no longer
/// exist are skipped.
pub fn read_open(ebpf: &aya::Ebpf, end_ns: u64, min_ns: u64) -> Result<Vec<RawOffCpu>> {
    let map = object_map_ref(ebpf, names::MAP_OFF_CPU_START)?;
    let starts: BpfHashMap<&MapData, u32, StartBytes> =
        BpfHashMap::try_from(map).map_err(map_err(names::MAP_OFF_CPU_START))?;
    let mut out = Vec::new();
    for item in starts.iter() {
        let (_, bytes) = item.map_err(map_err(names::MAP_OFF_CPU_START))?;
        let Some(s) = read_pod::<OffCpuStart>(&bytes) else {
            continue;
        };
        let alive = std::path::Path::new(&format!("/proc/{}/task/{}", s.pid, s.tid)).exists();
        if !alive || s.start_ns == 0 || end_ns.saturating_sub(s.start_ns) < min_ns {
            continue;
        }
        out.push(
            RawOffCpu::new(
                s.pid,
                s.tid,
                s.user_stack_id,
                s.kernel_stack_id,
                s.span_id,
                s.runnable,
            )
            .interval(s.start_ns, end_ns),
        );
    }
    Ok(out)
}
