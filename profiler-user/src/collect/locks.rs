//! `--locks`: futex waits of target threads (the `syscalls:sys_enter_futex`/`sys_exit_futex`
//! tracepoints), their stacks unwound here from the registers and stack bytes the kernel
//! sends (the waits happen in the C library, without frame pointers), and the waited-on
//! address named when it is a named static of a mapped file.
use std::collections::HashMap;

use aya::{
    maps::PerCpuArray,
    programs::{
        RawTracePoint, TracePoint, raw_trace_point::RawTracePointLinkId,
        trace_point::TracePointLinkId,
    },
};
use profiler_common::locks::{KernelLockEvent, LockWaitEvent, counter, names};

use super::{RawStack, map_err, object_map_ref, processes::Processes};
use crate::{
    error::{Error, Result},
    symbolize::kallsyms::Kallsyms,
};

#[derive(Clone, Debug)]
pub struct RawLockWait {
    pub pid: u32,
    pub tid: u32,
    pub uaddr: u64,
    pub begin_ns: u64,
    /// 0 until its end arrives.
    pub end_ns: u64,
    pub seq: u64,
    pub span_id: u64,
    pub user: RawStack,
    /// The unwind of the user stack stopped before its end: the copy was too short, or
    /// unwinding information was missing.
    pub truncated: bool,
    /// Its user stack copy came and was unwound (`Sink::unwind_pending`).
    pub copied: bool,
    pub space: u32,
    /// A kernel lock wait: `contention_begin`'s flags (its kind); None for a futex wait.
    pub kernel_flags: Option<u32>,
    /// A kernel lock wait's kernel stack, from the stack map.
    pub kernel: RawStack,
}

impl RawLockWait {
    pub fn new(e: &LockWaitEvent) -> Self {
        Self {
            pid: e.pid,
            tid: e.tid,
            uaddr: e.uaddr,
            begin_ns: e.begin_ns,
            end_ns: 0,
            seq: e.seq,
            span_id: e.span_id,
            user: RawStack::Empty,
            truncated: false,
            copied: false,
            space: 0,
            kernel_flags: None,
            kernel: RawStack::Empty,
        }
    }

    pub fn from_kernel(e: &KernelLockEvent) -> Self {
        Self {
            pid: e.pid,
            tid: e.tid,
            uaddr: e.lock_addr,
            begin_ns: e.begin_ns,
            // Both from the kernel's clock, but not trusted to be in order.
            end_ns: e.end_ns.max(e.begin_ns),
            seq: 0,
            span_id: e.span_id,
            user: RawStack::Empty,
            truncated: false,
            copied: false,
            space: 0,
            kernel_flags: Some(e.flags),
            kernel: RawStack::from_id(e.kernel_stack_id),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct LockCounters {
    pub waits: u64,
    pub lost_ringbuf: u64,
    pub done_lost: u64,
    pub waits_full: u64,
    pub stack_errors: u64,
    pub kernel_waits: u64,
    pub kernel_lost_ringbuf: u64,
    pub kernel_waits_full: u64,
    pub kernel_stack_errors: u64,
    pub kernel_kstack_errors: u64,
    pub kernel_ends_missed: u64,
    pub kernel_in_futex: u64,
    /// Kernel lock waits still going on when the programs were detached: never sent.
    pub kernel_in_flight: u64,
}

/// Run-time statistics of the futex programs and of the kernel lock programs: (runs, ns).
#[derive(Clone, Copy, Debug, Default)]
pub struct LockRuns {
    pub futex: (u64, u64),
    pub kernel: (u64, u64),
}

#[derive(Debug, Default)]
pub struct RawLockData {
    pub waits: Vec<RawLockWait>,
    /// Waits whose end never arrived: closed at the end of the recording.
    pub unfinished: u64,
    /// The symbol of each waited-on address, by (pid, address), where one names it.
    pub symbols: HashMap<(u32, u64), String>,
    pub counters: LockCounters,
    pub bpf_run_count: u64,
    pub bpf_run_time_ns: u64,
    /// Whether kernel lock contention was recorded (the kernel has the tracepoints).
    pub kernel: bool,
    pub kernel_bpf_run_count: u64,
    pub kernel_bpf_run_time_ns: u64,
}

fn program<'a>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut TracePoint> {
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Internal(format!("eBPF object lacks {name}")))?
        .try_into()
        .map_err(|e| Error::Program {
            program: name,
            source: Box::new(e),
        })
}

/// The futex tracepoints and, where the kernel has them, the kernel lock contention ones,
/// attached while it lives (aya detaches them when the object drops).
#[derive(Debug, Default)]
pub struct LockProbes {
    links: Vec<(&'static str, TracePointLinkId)>,
    kernel_links: Vec<(&'static str, RawTracePointLinkId)>,
    /// Why kernel lock contention is not recorded, for the summary's warnings.
    pub kernel_missing: Option<String>,
}

fn tracepoint_exists(category: &str, name: &str) -> bool {
    [
        "/sys/kernel/tracing/events",
        "/sys/kernel/debug/tracing/events",
    ]
    .iter()
    .any(|root| {
        std::path::Path::new(root)
            .join(category)
            .join(name)
            .exists()
    })
}

fn raw_program<'a>(ebpf: &'a mut aya::Ebpf, name: &'static str) -> Result<&'a mut RawTracePoint> {
    ebpf.program_mut(name)
        .ok_or_else(|| Error::Internal(format!("eBPF object lacks {name}")))?
        .try_into()
        .map_err(|e| Error::Program {
            program: name,
            source: Box::new(e),
        })
}

/// (runs, ns) of a loaded program, from the kernel's statistics.
fn run_stats(info: aya::programs::ProgramInfo) -> (u64, u64) {
    (
        info.run_count(),
        info.run_time().as_nanos().min(u128::from(u64::MAX)) as u64,
    )
}

impl LockProbes {
    pub fn attach(ebpf: &mut aya::Ebpf) -> Result<Self> {
        if !tracepoint_exists("syscalls", "sys_enter_futex") {
            return Err(Error::InvalidArgument {
                what: "--locks",
                reason: "the syscalls:sys_enter_futex tracepoint is not visible: mount tracefs (`mount -t tracefs tracefs /sys/kernel/tracing`) on a kernel built with CONFIG_FTRACE_SYSCALLS".into(),
            });
        }
        let mut probes = Self::default();
        for (name, event) in [
            (names::PROGRAM_FUTEX_EXIT, "sys_exit_futex"),
            (names::PROGRAM_FUTEX_ENTER, "sys_enter_futex"),
        ] {
            let p = program(ebpf, name)?;
            let err = |e| Error::Program {
                program: name,
                source: Box::new(e),
            };
            p.load().map_err(err)?;
            probes
                .links
                .push((name, p.attach("syscalls", event).map_err(err)?));
        }
        // Kernel lock contention is a bonus: a kernel without it (before 5.19) still records
        // futex waits, and says so once.
        if !tracepoint_exists("lock", "contention_begin") {
            probes.kernel_missing = Some(
                "--locks: this kernel has no lock:contention_begin tracepoint (Linux 5.19+), kernel lock contention not recorded".into(),
            );
            return Ok(probes);
        }
        // The ends first: every contention the begin remembers can end.
        for (name, event) in [
            (names::PROGRAM_KLOCK_END, "contention_end"),
            (names::PROGRAM_KLOCK_END_NESTED, "contention_end"),
            (names::PROGRAM_KLOCK_BEGIN, "contention_begin"),
        ] {
            let attached = raw_program(ebpf, name).and_then(|p| {
                let err = |e| Error::Program {
                    program: name,
                    source: Box::new(e),
                };
                p.load().map_err(err)?;
                p.attach(event).map_err(err)
            });
            match attached {
                Ok(link) => probes.kernel_links.push((name, link)),
                Err(e) => {
                    probes.detach_kernel(ebpf);
                    probes.kernel_missing = Some(format!(
                        "--locks: lock:{event} could not be attached ({e}), kernel lock contention not recorded"
                    ));
                    break;
                }
            }
        }
        Ok(probes)
    }

    fn detach_kernel(&mut self, ebpf: &mut aya::Ebpf) -> (u64, u64) {
        let mut runs = (0u64, 0u64);
        // Begins first, so every contention that began can still end.
        for (name, link) in self.kernel_links.drain(..).rev() {
            if let Ok(p) = raw_program(ebpf, name) {
                if let Ok(info) = p.info() {
                    let (n, ns) = run_stats(info);
                    runs = (runs.0.saturating_add(n), runs.1.saturating_add(ns));
                }
                let _ = p.detach(link);
            }
        }
        runs
    }

    /// Whether the kernel lock programs are attached.
    pub fn kernel(&self) -> bool {
        !self.kernel_links.is_empty()
    }

    /// Detaches (entries first, so every wait that began can still end); returns the
    /// programs' run-time statistics.
    pub fn stop(&mut self, ebpf: &mut aya::Ebpf) -> LockRuns {
        let kernel = self.detach_kernel(ebpf);
        let mut futex = (0u64, 0u64);
        for (name, link) in self.links.drain(..).rev() {
            if let Ok(p) = program(ebpf, name) {
                if let Ok(info) = p.info() {
                    let (n, ns) = run_stats(info);
                    futex = (futex.0.saturating_add(n), futex.1.saturating_add(ns));
                }
                let _ = p.detach(link);
            }
        }
        LockRuns { futex, kernel }
    }
}

pub fn read_counters(ebpf: &aya::Ebpf) -> Result<LockCounters> {
    let map = object_map_ref(ebpf, names::MAP_LOCK_COUNTERS)?;
    let array: PerCpuArray<_, u64> =
        PerCpuArray::try_from(map).map_err(map_err(names::MAP_LOCK_COUNTERS))?;
    let sum = |index: u32| -> Result<u64> {
        let values = array
            .get(&index, 0)
            .map_err(map_err(names::MAP_LOCK_COUNTERS))?;
        Ok(values.iter().fold(0u64, |a, v| a.saturating_add(*v)))
    };
    Ok(LockCounters {
        waits: sum(counter::WAITS)?,
        lost_ringbuf: sum(counter::LOST_RINGBUF)?,
        done_lost: sum(counter::DONE_LOST)?,
        waits_full: sum(counter::WAITS_FULL)?,
        stack_errors: sum(counter::STACK_ERRORS)?,
        kernel_waits: sum(counter::KERNEL_WAITS)?,
        kernel_lost_ringbuf: sum(counter::KERNEL_LOST_RINGBUF)?,
        kernel_waits_full: sum(counter::KERNEL_WAITS_FULL)?,
        kernel_stack_errors: sum(counter::KERNEL_STACK_ERRORS)?,
        kernel_kstack_errors: sum(counter::KERNEL_KSTACK_ERRORS)?,
        kernel_ends_missed: sum(counter::KERNEL_ENDS_MISSED)?,
        kernel_in_futex: sum(counter::KERNEL_IN_FUTEX)?,
        kernel_in_flight: in_flight(ebpf)?,
    })
}

/// Kernel lock contentions that began and had not ended when the programs were detached:
/// only their end sends them.
fn in_flight(ebpf: &aya::Ebpf) -> Result<u64> {
    use profiler_common::locks::{KernelLockKey, KernelLockWaiting};
    let map = object_map_ref(ebpf, names::MAP_KLOCK_WAITS)?;
    // As bytes: `aya::Pod` stays off the shared types (no userspace dependencies).
    let waits: aya::maps::HashMap<
        _,
        [u8; size_of::<KernelLockKey>()],
        [u8; size_of::<KernelLockWaiting>()],
    > = aya::maps::HashMap::try_from(map).map_err(map_err(names::MAP_KLOCK_WAITS))?;
    let mut n = 0u64;
    for key in waits.keys() {
        key.map_err(map_err(names::MAP_KLOCK_WAITS))?;
        n = n.saturating_add(1);
    }
    Ok(n)
}

/// The name of the static variable at `addr` in `pid`'s memory at `time_ns`, when a mapped
/// file's symbol table has an object there (`big_lock`, `my_queue+0x40`).
pub fn symbol_at(procs: &mut Processes, pid: u32, time_ns: u64, addr: u64) -> Option<String> {
    use object::{Object, ObjectSymbol, SymbolKind};
    let index = procs.space_at(pid, time_ns);
    let space = procs.spaces.get(index as usize)?;
    // Only executable mappings are kept: of those in place at the wait's time (a plugin
    // unloaded is not), the file's code mapping closest below the address gives the load
    // bias, and the address must fall in one of the file's segments (its data and .bss lie
    // above its code).
    let below = |m: &&super::procfs::Mapping| m.is_file() && m.start <= addr && m.module.is_some();
    let m = space
        .in_effect_at(time_ns)
        .filter(below)
        .max_by_key(|m| m.start)?;
    let module = procs.modules.get(m.module?)?;
    let file = object::File::parse(module.bytes()).ok()?;
    let code_vaddr = *module.vaddrs_of(&[m.offset]).first()?;
    let bias = m.start.checked_sub(code_vaddr)?;
    let vaddr = addr.checked_sub(bias)?;
    {
        use object::ObjectSegment;
        if !file
            .segments()
            .any(|seg| seg.address() <= vaddr && vaddr - seg.address() < seg.size())
        {
            return None;
        }
    }
    let symbol = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == SymbolKind::Data && s.size() > 0)
        .find(|s| s.address() <= vaddr && vaddr - s.address() < s.size())?;
    let name = symbol.name().ok()?;
    let at = vaddr - symbol.address();
    Some(if at == 0 {
        name.to_string()
    } else {
        format!("{name}+{at:#x}")
    })
}

/// Kernel data symbols from /proc/kallsyms, to name the static locks of the kernel
/// (`cgroup_mutex`, `init_mm+0x60`). Kernels built without CONFIG_KALLSYMS_ALL list no data
/// symbols but section bounds: their locks stay unnamed.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    /// (address, is data, name), by address.
    symbols: Vec<(u64, bool, String)>,
}

/// A lock this far past a data symbol with no symbol in between is taken to be another,
/// unnamed object: kallsyms gives no sizes, and a sparse table would otherwise name it after
/// whatever lies below.
const KERNEL_SYMBOL_REACH: u64 = 4096;

impl KernelSymbols {
    /// Empty where kallsyms cannot be read or hides its addresses (kptr_restrict).
    pub fn new(kallsyms: &Kallsyms) -> Self {
        let symbols = kallsyms
            .entries()
            .iter()
            .map(|e| {
                // Section bounds (`__start_rodata`) mark where objects begin, not one.
                let data = matches!(e.kind, 'd' | 'D' | 'b' | 'B' | 'r' | 'R')
                    && !e.name.starts_with("__start_")
                    && !e.name.starts_with("__stop_");
                (e.addr, data, e.name.clone())
            })
            .collect();
        Self { symbols }
    }

    /// The data symbol `addr` lies in, as `name` or `name+0x40`.
    pub fn data_at(&self, addr: u64) -> Option<String> {
        let after = self.symbols.partition_point(|s| s.0 <= addr);
        let (start, data, name) = self.symbols.get(after.checked_sub(1)?)?;
        let at = addr.checked_sub(*start)?;
        if !data || at >= KERNEL_SYMBOL_REACH {
            return None;
        }
        Some(if at == 0 {
            name.clone()
        } else {
            format!("{name}+{at:#x}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_locks_are_named_only_inside_a_data_symbol() {
        let k = KernelSymbols::new(&Kallsyms::parse(
            "ffffffff81000000 T _text\n\
             ffffffff82000000 D __start_rodata\n\
             ffffffff83000100 D cgroup_mutex\n\
             ffffffff83000140 d other_lock\n\
             ffffffff83100000 t some_function\n\
             0000000000000000 b hidden\n",
        ));
        assert_eq!(
            k.data_at(0xffffffff83000100).as_deref(),
            Some("cgroup_mutex")
        );
        assert_eq!(
            k.data_at(0xffffffff83000108).as_deref(),
            Some("cgroup_mutex+0x8")
        );
        assert_eq!(
            k.data_at(0xffffffff83000150).as_deref(),
            Some("other_lock+0x10")
        );
        // Past the reach of the last data symbol, in code, at a section bound, below all.
        assert_eq!(k.data_at(0xffffffff83002000), None);
        assert_eq!(k.data_at(0xffffffff83100010), None);
        assert_eq!(k.data_at(0xffffffff82000010), None);
        assert_eq!(k.data_at(0x1000), None);
        // kptr_restrict: every address 0, nothing named.
        let hidden = KernelSymbols::new(&Kallsyms::parse("0000000000000000 D cgroup_mutex\n"));
        assert_eq!(hidden.data_at(0), None);
    }
}
