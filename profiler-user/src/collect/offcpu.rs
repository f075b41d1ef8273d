//! `--off-cpu`: when target threads leave the CPU (sched_switch) and for how long, summed per
//! (thread, stacks, span, state) in the kernel; long intervals also arrive one by one.
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap};
use profiler_common::{OffCpuEvent, OffCpuKey, OffCpuStart, OffCpuTotal, names};

use super::{RawStack, map_err};
use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OffCpuOptions {
    /// Intervals shorter than this are not counted.
    pub min: Duration,
    /// Intervals at least this long are kept one by one (timelines) besides being summed.
    pub interval_min: Duration,
}

/// Off-CPU time of one thread from one place: a sum over intervals, or one interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawOffCpu {
    pub pid: u32,
    pub tid: u32,
    pub user: RawStack,
    pub kernel: RawStack,
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
    /// Every counted interval, summed: the kernel's sums, intervals the sums had no room for,
    /// and intervals still open when the recording stopped (cut at its end).
    pub totals: Vec<RawOffCpu>,
    /// Intervals of at least `interval_min_ns`, in arrival order.
    pub intervals: Vec<RawOffCpu>,
    /// Kernel BPF run-time statistics of the sched_switch program.
    pub bpf_run_count: u64,
    pub bpf_run_time_ns: u64,
}

pub fn from_event(e: &OffCpuEvent) -> RawOffCpu {
    RawOffCpu {
        pid: e.pid,
        tid: e.tid,
        user: RawStack::from_id(e.user_stack_id),
        kernel: RawStack::from_id(e.kernel_stack_id),
        span_id: e.span_id,
        runnable: e.runnable != 0,
        total_ns: e.end_ns.saturating_sub(e.begin_ns),
        count: 1,
        begin_ns: e.begin_ns,
        end_ns: e.end_ns,
        space: 0,
    }
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

/// The kernel's sums, per CPU added up.
pub fn read_totals(ebpf: &aya::Ebpf) -> Result<Vec<RawOffCpu>> {
    let map = ebpf
        .map(names::MAP_OFF_CPU_TOTALS)
        .ok_or_else(|| Error::Internal("eBPF object lacks the OFF_CPU_TOTALS map".into()))?;
    let totals: PerCpuHashMap<&MapData, KeyBytes, TotalBytes> =
        PerCpuHashMap::try_from(map).map_err(map_err(names::MAP_OFF_CPU_TOTALS))?;
    let mut out = Vec::new();
    for item in totals.iter() {
        let (key, per_cpu) = item.map_err(map_err(names::MAP_OFF_CPU_TOTALS))?;
        let Some(k) = read_pod::<OffCpuKey>(&key) else {
            continue;
        };
        let (mut total_ns, mut count) = (0u64, 0u64);
        for v in per_cpu.iter() {
            if let Some(t) = read_pod::<OffCpuTotal>(v) {
                total_ns += t.total_ns;
                count += t.count;
            }
        }
        if count == 0 {
            continue;
        }
        out.push(RawOffCpu {
            pid: k.pid,
            tid: k.tid,
            user: RawStack::from_id(k.user_stack_id),
            kernel: RawStack::from_id(k.kernel_stack_id),
            span_id: k.span_id,
            runnable: k.runnable != 0,
            total_ns,
            count,
            begin_ns: 0,
            end_ns: 0,
            space: 0,
        });
    }
    Ok(out)
}

/// Threads still off CPU when the recording stopped: their time up to `end_ns` counts too.
/// (A thread that was already off CPU when the recording started and never ran during it is
/// not seen at all: the program learns of a thread at its switch-out.) Threads that no longer
/// exist are skipped.
pub fn read_open(ebpf: &aya::Ebpf, end_ns: u64, min_ns: u64) -> Result<Vec<RawOffCpu>> {
    let map = ebpf
        .map(names::MAP_OFF_CPU_START)
        .ok_or_else(|| Error::Internal("eBPF object lacks the OFF_CPU_START map".into()))?;
    let starts: BpfHashMap<&MapData, u32, StartBytes> =
        BpfHashMap::try_from(map).map_err(map_err(names::MAP_OFF_CPU_START))?;
    let mut out = Vec::new();
    for item in starts.iter() {
        let (_, bytes) = item.map_err(map_err(names::MAP_OFF_CPU_START))?;
        let Some(s) = read_pod::<OffCpuStart>(&bytes) else {
            continue;
        };
        let alive = std::path::Path::new(&format!("/proc/{}/task/{}", s.pid, s.tid)).exists();
        let total_ns = end_ns.saturating_sub(s.start_ns);
        if !alive || s.start_ns == 0 || total_ns < min_ns {
            continue;
        }
        out.push(RawOffCpu {
            pid: s.pid,
            tid: s.tid,
            user: RawStack::from_id(s.user_stack_id),
            kernel: RawStack::from_id(s.kernel_stack_id),
            span_id: s.span_id,
            runnable: s.runnable != 0,
            total_ns,
            count: 1,
            begin_ns: s.start_ns,
            end_ns,
            space: 0,
        });
    }
    Ok(out)
}
