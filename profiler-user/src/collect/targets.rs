//! The kernel's set of target processes, as userspace reads and changes it: `TARGETS`
//! (hashed by pid), except the primary process, whose flags sit in the one-slot
//! `PRIMARY_FLAGS` array so that the sampler finds them without hashing.

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
}

impl Targets {
    pub fn new(hashed: Map, primary: Map, primary_pid: u32) -> Result<Self> {
        Ok(Targets {
            hashed: BpfHashMap::try_from(hashed).map_err(map_err(names::MAP_TARGETS))?,
            primary: Array::try_from(primary).map_err(map_err(names::MAP_PRIMARY_FLAGS))?,
            primary_pid,
        })
    }

    fn is_primary(&self, pid: u32) -> bool {
        self.primary_pid != 0 && pid == self.primary_pid
    }

    /// The flags of `pid`, None when it is not a target.
    pub fn get(&self, pid: u32) -> Option<u32> {
        if self.is_primary(pid) {
            let flags = self.primary.get(&0, 0).ok()?;
            return (flags & target::PRESENT != 0).then_some(flags & !target::PRESENT);
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
            let _ = self.primary.set(0, 0, 0);
        } else {
            let _ = self.hashed.remove(&pid);
        }
    }
}

/// Makes the primary process a target with `flags`.
pub fn set_primary<M: BorrowMut<MapData>>(map: &mut Array<M, u32>, flags: u32) -> Result<()> {
    map.set(0, flags | target::PRESENT, 0)
        .map_err(map_err(names::MAP_PRIMARY_FLAGS))
}

#[cfg(test)]
mod tests {
    use super::*;

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
