//! `--locks`: futex waits of target threads (the `syscalls:sys_enter_futex`/`sys_exit_futex`
//! tracepoints), their stacks unwound here from the registers and stack bytes the kernel
//! sends (the waits happen in the C library, without frame pointers), and the waited-on
//! address named when it is a named static of a mapped file.
use std::collections::HashMap;

use aya::{
    maps::PerCpuArray,
    programs::{TracePoint, trace_point::TracePointLinkId},
};
use profiler_common::{
    DwarfRegs,
    locks::{LockWaitEvent, counter, names},
};

use super::{RawStack, map_err, processes::Processes};
use crate::error::{Error, Result};

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
    pub regs: DwarfRegs,
    pub stack: Vec<u8>,
    pub user: RawStack,
    pub space: u32,
}

impl RawLockWait {
    pub fn new(e: &LockWaitEvent, stack: Vec<u8>) -> Self {
        Self {
            pid: e.pid,
            tid: e.tid,
            uaddr: e.uaddr,
            begin_ns: e.begin_ns,
            end_ns: 0,
            seq: e.seq,
            span_id: e.span_id,
            regs: e.regs,
            stack,
            user: RawStack::Empty,
            space: 0,
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

/// The futex tracepoints, attached while it lives (aya detaches them when the object drops).
#[derive(Debug, Default)]
pub struct LockProbes {
    links: Vec<(&'static str, TracePointLinkId)>,
}

impl LockProbes {
    pub fn attach(ebpf: &mut aya::Ebpf) -> Result<Self> {
        if !std::path::Path::new("/sys/kernel/tracing/events/syscalls/sys_enter_futex").exists()
            && !std::path::Path::new("/sys/kernel/debug/tracing/events/syscalls/sys_enter_futex")
                .exists()
        {
            return Err(Error::InvalidArgument {
                what: "--locks",
                reason: "the syscalls:sys_enter_futex tracepoint is not visible: mount tracefs (`mount -t tracefs tracefs /sys/kernel/tracing`) on a kernel built with CONFIG_FTRACE_SYSCALLS".into(),
            });
        }
        let mut links = Vec::new();
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
            links.push((name, p.attach("syscalls", event).map_err(err)?));
        }
        Ok(Self { links })
    }

    /// Detaches (entries first, so every wait that began can still end); returns the
    /// programs' run-time statistics.
    pub fn stop(&mut self, ebpf: &mut aya::Ebpf) -> (u64, u64) {
        let mut runs = (0u64, 0u64);
        for (name, link) in self.links.drain(..).rev() {
            if let Ok(p) = program(ebpf, name) {
                if let Ok(info) = p.info() {
                    runs.0 = runs.0.saturating_add(info.run_count());
                    runs.1 =
                        runs.1.saturating_add(
                            info.run_time().as_nanos().min(u128::from(u64::MAX)) as u64
                        );
                }
                let _ = p.detach(link);
            }
        }
        runs
    }
}

pub fn read_counters(ebpf: &aya::Ebpf) -> Result<LockCounters> {
    let map = ebpf
        .map(names::MAP_LOCK_COUNTERS)
        .ok_or_else(|| Error::Internal("eBPF object lacks the LOCK_COUNTERS map".into()))?;
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
    })
}

/// The name of the static variable at `addr` in `pid`'s memory at `time_ns`, when a mapped
/// file's symbol table has an object there (`big_lock`, `my_queue+0x40`).
pub fn symbol_at(procs: &mut Processes, pid: u32, time_ns: u64, addr: u64) -> Option<String> {
    use object::{Object, ObjectSymbol, SymbolKind};
    let index = procs.space_at(pid, time_ns);
    let space = procs.spaces.get(index as usize)?;
    // Only executable mappings are kept: the file's code mapping closest below the address
    // gives the load bias, and the address must fall in one of the file's segments (its data
    // and .bss lie above its code).
    let m = space
        .mappings
        .iter()
        .filter(|m| m.is_file() && m.start <= addr && m.module.is_some())
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
