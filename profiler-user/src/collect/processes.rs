//! The processes of a recording: the target and, when children are followed, everything it
//! starts. Each process gets a fresh address space at every exec, read as soon as the kernel
//! reports the process (its first sample wakes userspace at once), so short-lived children are
//! symbolized from the files they really ran.
use std::collections::{HashMap, HashSet};

use super::procfs::{AddressSpace, ProcessInfo};

#[derive(Debug, Default)]
pub struct Processes {
    /// Every address space seen; samples refer to them by index.
    pub spaces: Vec<AddressSpace>,
    /// The current address space of each process.
    current: HashMap<u32, usize>,
    /// Names and command lines, as last seen (after exec).
    pub infos: HashMap<u32, ProcessInfo>,
    /// Parent of each followed child.
    pub parents: HashMap<u32, u32>,
    exited: HashSet<u32>,
    /// Spaces read at fork or exec, before the dynamic loader mapped the libraries: read
    /// again at each of the process's first samples (the kernel wakes us for each at once),
    /// with how many rereads are left.
    stale: HashMap<u32, u32>,
}

fn is_thread(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
        })
        .is_some_and(|tgid| tgid != pid)
}

impl Processes {
    pub fn new(root: AddressSpace, info: ProcessInfo) -> Self {
        let mut p = Self::default();
        p.current.insert(root.pid, 0);
        p.infos.insert(info.pid, info);
        p.spaces.push(root);
        p
    }

    fn read(&mut self, pid: u32) -> usize {
        let mut space = AddressSpace::new(pid);
        // A process that is already gone keeps an empty space: its frames show as [unknown].
        let _ = space.refresh();
        if let Ok(info) = ProcessInfo::capture(pid) {
            self.infos.insert(pid, info);
        }
        self.spaces.push(space);
        let index = self.spaces.len() - 1;
        self.current.insert(pid, index);
        index
    }

    /// The address space a sample of `pid` taken now belongs to.
    pub fn space_of(&mut self, pid: u32) -> u32 {
        let index = match self.current.get(&pid) {
            Some(&i) => {
                if let Some(left) = self.stale.get_mut(&pid) {
                    let _ = self.spaces[i].refresh();
                    *left -= 1;
                    if *left == 0 {
                        self.stale.remove(&pid);
                    }
                }
                i
            }
            None => self.read(pid),
        };
        index as u32
    }

    /// Also called for new threads (the kernel cannot tell them apart cheaply): those are
    /// recognised here and ignored.
    pub fn forked(&mut self, pid: u32, parent: u32) {
        // A pid seen before that exited is a new process now (pids are reused).
        let reused = self.exited.remove(&pid);
        if (self.current.contains_key(&pid) && !reused) || is_thread(pid) {
            return;
        }
        self.parents.insert(pid, parent);
        self.read(pid);
        self.stale
            .insert(pid, profiler_common::target::ANNOUNCE_SAMPLES);
    }

    pub fn exec(&mut self, pid: u32) {
        self.read(pid);
        self.stale
            .insert(pid, profiler_common::target::ANNOUNCE_SAMPLES);
    }

    pub fn exited(&mut self, pid: u32) {
        self.exited.insert(pid);
    }

    /// Rereads the maps of processes still alive (libraries loaded later).
    pub fn refresh_live(&mut self) {
        for (&pid, &i) in &self.current {
            if !self.exited.contains(&pid) {
                let _ = self.spaces[i].refresh();
            }
        }
    }

    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.current.keys().copied()
    }
}
