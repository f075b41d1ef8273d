//! The kernel's set of target processes, as userspace reads and changes it: `TARGETS`
//! (hashed by pid), except the primary process, whose flags sit in the `PRIMARY_FLAGS`
//! array so that the sampler finds them without hashing.

use std::borrow::BorrowMut;

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData};
use profiler_common::{names, target};

use super::map_err;
use crate::error::Result;

/// Which process is the primary target, and whether it is the only possible one: both are
/// constants of the programs, set before they load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Primary {
    /// 0: none (a scope without a named process).
    pub pid: u32,
    /// No other process can become a target during the recording.
    pub only: bool,
}

impl Primary {
    /// `initial`: the processes that are targets from the start, the named one (`named`, 0
    /// when none) first; `follows`: whether processes can join later.
    pub fn choose(named: u32, initial: &[(u32, bool)], follows: bool) -> Self {
        let pid = if named != 0 && initial.first().is_some_and(|&(p, _)| p == named) {
            named
        } else {
            0
        };
        Primary {
            pid,
            only: pid != 0 && initial.len() == 1 && !follows,
        }
    }
}

/// The targets of a loaded object, taken out of it for the drain loop.
pub struct Targets {
    hashed: BpfHashMap<MapData, u32, u32>,
    primary: Array<MapData, u32>,
    primary_pid: u32,
    spans_started: Array<MapData, u32>,
}

impl Targets {
    pub fn new(hashed: Map, primary: Map, primary_pid: u32, spans_started: Map) -> Result<Self> {
        Ok(Targets {
            hashed: BpfHashMap::try_from(hashed).map_err(map_err(names::MAP_TARGETS))?,
            primary: Array::try_from(primary).map_err(map_err(names::MAP_PRIMARY_FLAGS))?,
            primary_pid,
            spans_started: Array::try_from(spans_started)
                .map_err(map_err(names::MAP_SPANS_STARTED))?,
        })
    }

    fn is_primary(&self, pid: u32) -> bool {
        self.primary_pid != 0 && pid == self.primary_pid
    }

    /// The flags of `pid`, None when it is not a target.
    pub fn get(&self, pid: u32) -> Option<u32> {
        if self.is_primary(pid) {
            let kernel = self.primary.get(&target::PRIMARY_KERNEL, 0).ok()?;
            let graph = self.primary.get(&target::PRIMARY_CALL_GRAPH, 0).ok()?;
            return (kernel & target::PRESENT != 0).then_some(primary_flags(kernel, graph));
        }
        self.hashed.get(&pid, 0).ok()
    }

    pub fn insert(&mut self, pid: u32, flags: u32) -> Result<()> {
        if self.is_primary(pid) {
            return set_primary(&mut self.primary, flags);
        }
        self.hashed
            .insert(pid, flags, 0)
            .map_err(map_err(names::MAP_TARGETS))
    }

    pub fn remove(&mut self, pid: u32) {
        // What is absent is no error: the kernel drops a target at its exit.
        if self.is_primary(pid) {
            let _ = self.primary.set(target::PRIMARY_KERNEL, 0, 0);
        } else {
            let _ = self.hashed.remove(&pid);
        }
    }

    /// Sets whether `pid` takes DWARF call graphs, if it is still a target.
    pub fn set_call_graph(&mut self, pid: u32, dwarf: bool) {
        let graph = if dwarf { target::DWARF } else { 0 };
        if self.is_primary(pid) {
            // Its own slot, which the kernel's adds never touch. A process gone since is
            // not made present again: `PRESENT` is in the other slot.
            let _ = self.primary.set(target::PRIMARY_CALL_GRAPH, graph, 0);
            return;
        }
        let Some(flags) = self.get(pid) else {
            return;
        };
        if flags & target::DWARF == graph {
            return;
        }
        // The update replaces the whole value: an add the kernel makes between the read
        // and the update is lost. A lost sample's announce count only wakes userspace again
        // (an exec's, from a second exec racing this update, would leave its image
        // unannounced; the side-band records still give its maps); a lost
        // span mark would hide the process's spans from its samples, so the mark is put
        // back when any span has started (at worst a needless look-up per sample).
        // BPF_EXIST: a process that exited since is not made a target again.
        let updated = (flags & !target::DWARF) | graph;
        if self.hashed.insert(pid, updated, BPF_EXIST).is_err() || updated & target::SPANS_MASK != 0
        {
            return;
        }
        if self
            .spans_started
            .get(&0, 0)
            .is_ok_and(|started| started != 0)
        {
            let _ = self
                .hashed
                .insert(pid, updated | (1 << target::SPANS_SHIFT), BPF_EXIST);
        }
    }
}

/// `BPF_EXIST`: update an element only if it is there.
const BPF_EXIST: u64 = 2;

/// The primary's flags as in `TARGETS`, from its two slots.
fn primary_flags(kernel: u32, graph: u32) -> u32 {
    (kernel & !(target::PRESENT | target::DWARF)) | (graph & target::DWARF)
}

/// Makes the primary process a target with `flags`: the call graph first, so that no
/// program finds it present with the old one.
pub fn set_primary<M: BorrowMut<MapData>>(map: &mut Array<M, u32>, flags: u32) -> Result<()> {
    map.set(target::PRIMARY_CALL_GRAPH, flags & target::DWARF, 0)
        .and_then(|()| {
            map.set(
                target::PRIMARY_KERNEL,
                (flags & !target::DWARF) | target::PRESENT,
                0,
            )
        })
        .map_err(map_err(names::MAP_PRIMARY_FLAGS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_primary_flags_take_the_call_graph_from_its_own_slot() {
        let kernel = target::PRESENT | target::FOLLOW | (3 << target::ANNOUNCED_SHIFT);
        // A stale DWARF bit in the kernel's slot counts for nothing.
        assert_eq!(
            primary_flags(kernel | target::DWARF, 0),
            target::FOLLOW | (3 << target::ANNOUNCED_SHIFT)
        );
        assert_eq!(
            primary_flags(kernel, target::DWARF),
            target::FOLLOW | target::DWARF | (3 << target::ANNOUNCED_SHIFT)
        );
    }

    #[test]
    fn the_named_process_is_primary_only_when_first_and_alone_without_following() {
        let one = [(7, false)];
        assert_eq!(
            Primary::choose(7, &one, false),
            Primary { pid: 7, only: true }
        );
        assert_eq!(
            Primary::choose(7, &one, true),
            Primary {
                pid: 7,
                only: false
            }
        );
        let two = [(7, false), (9, true)];
        assert_eq!(
            Primary::choose(7, &two, false),
            Primary {
                pid: 7,
                only: false
            }
        );
        // A scope without a named process has none, whatever comes first.
        assert_eq!(Primary::choose(0, &two, false), Primary::default());
        assert_eq!(Primary::choose(9, &two, false), Primary::default());
        assert_eq!(Primary::choose(7, &[], false), Primary::default());
    }
}
