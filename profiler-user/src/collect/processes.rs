//! The processes of a recording and their address spaces over time, built from the kernel's
//! side-band records (fork, exec, executable mappings, exit: see `sideband`) in the order
//! they happened, and from /proc for what existed before the recording began. A sample is
//! placed in the address space its process had at the sample's time, so a child that lived
//! 5 ms is named from the files it really mapped, however late userspace reads about it.
use std::collections::{HashMap, HashSet};

use super::{
    modules::{ModuleId, ModuleStore},
    procfs::{self, AddressSpace, Mapping, ProcessInfo},
    sideband::Record,
};

/// Records of processes not (yet) known to be targets, kept this long: the record that makes
/// a process a target (its fork) can be read after its own records from another CPU's buffer.
const PENDING_NS: u64 = 2_000_000_000;

/// What [`Processes::prune_exited`] forgot.
#[derive(Debug, Default)]
pub struct Pruned {
    pub pids: HashSet<u32>,
    pub spaces: HashSet<u32>,
    pub modules: usize,
}

#[derive(Debug, Default)]
pub struct Processes {
    /// Every address space seen; samples refer to them by index.
    pub spaces: Vec<AddressSpace>,
    /// Per process: (since when, space index), oldest first; a new entry at fork and exec.
    timelines: HashMap<u32, Vec<(u64, usize)>>,
    /// Names and command lines, as last seen (after exec).
    pub infos: HashMap<u32, ProcessInfo>,
    /// The names each process had before its execs, oldest first.
    pub names_before: HashMap<u32, Vec<crate::model::NameBefore>>,
    /// Parent of each followed child.
    pub parents: HashMap<u32, u32>,
    pub modules: ModuleStore,
    /// Children become targets (`--follow-children`, `run`); otherwise only processes
    /// registered by [`Processes::add_root`] are.
    follow: bool,
    /// Unknown processes' records, by pid (forks by parent), with the newest record's time.
    pending: HashMap<u32, (u64, Vec<Record>)>,
    pending_count: usize,
    /// Side-band records the kernel dropped (buffer full).
    pub sideband_lost: u64,
    /// Records applied to the recording's own processes, not deferred: the side-band buffers
    /// are read fast while these arrive (records of the rest of the machine do not count).
    pub applied: u64,
    exited: HashMap<u32, u64>,
    /// The image each exec replaced, by space index: during the exec syscall a sample's user
    /// registers still point into the old program.
    replaced: HashMap<usize, usize>,
    /// Records newer than the last read's horizon ([`Processes::receive`]).
    held: Vec<Record>,
    /// Files of held mappings, opened while their process most likely lived: by (pid, start,
    /// time) of the mapping.
    opened_early: HashMap<(u32, u64, u64), Option<ModuleId>>,
    /// Children whose held forks make them known at the next read.
    joining: HashSet<u32>,
    /// Processes to read from /proc after a side-band loss, once their held records are
    /// applied.
    refresh_later: HashSet<u32>,
    /// Processes a sample made known before any fork of theirs was applied (a scope, a fork
    /// held or lost), with that sample's time: a fork read later, older than that sample,
    /// still gives them their parent and its mappings.
    stand_ins: HashMap<u32, u64>,
}

impl Processes {
    pub fn new(modules: ModuleStore, follow: bool) -> Self {
        Self {
            modules,
            follow,
            ..Default::default()
        }
    }

    /// A process present when the recording began, with its space as /proc describes it.
    pub fn add_root(&mut self, space: AddressSpace, info: ProcessInfo) -> usize {
        let pid = space.pid;
        self.infos.insert(pid, info);
        let index = self.push_space(space);
        self.timelines.entry(pid).or_default().insert(0, (0, index));
        self.replay(pid);
        index
    }

    fn push_space(&mut self, space: AddressSpace) -> usize {
        self.spaces.push(space);
        self.spaces.len() - 1
    }

    /// The image an exec replaced with space `index`, if it was one.
    pub fn replaced(&self, index: u32) -> Option<&AddressSpace> {
        self.replaced
            .get(&(index as usize))
            .and_then(|&i| self.spaces.get(i))
    }

    pub fn is_known(&self, pid: u32) -> bool {
        self.timelines.contains_key(&pid)
    }

    /// Whether a held fork makes `pid` known at the next read (its files are open already).
    pub fn is_joining(&self, pid: u32) -> bool {
        self.joining.contains(&pid)
    }

    /// The space `pid` had at `time_ns`: the newest begun by then, or its first one for a
    /// time before it was known.
    fn index_at(&self, pid: u32, time_ns: u64) -> Option<usize> {
        let line = self.timelines.get(&pid)?;
        line.iter()
            .rev()
            .find(|(since, _)| *since <= time_ns)
            .or(line.first())
            .map(|&(_, i)| i)
    }

    /// The address space a sample of `pid` at `time_ns` belongs to. A process no record
    /// described (records lost) is read from /proc now, if it still lives.
    pub fn space_at(&mut self, pid: u32, time_ns: u64) -> u32 {
        let index = match self.index_at(pid, time_ns) {
            Some(i) => i,
            // A process the kernel made a target by itself (a scope, or a fork whose record
            // is lost or not read yet) has its own records waiting: it is known from now on,
            // with what they say (its exec and mappings).
            None if self.pending.contains_key(&pid)
                || self.held.iter().any(|r| r.pid() == Some(pid)) =>
            {
                let index = self.push_space(AddressSpace::new(pid));
                self.timelines.insert(pid, vec![(0, index)]);
                self.stand_ins.insert(pid, time_ns);
                self.replay(pid);
                self.index_at(pid, time_ns).unwrap_or(index)
            }
            None => {
                let mut space = AddressSpace::new(pid);
                // A process that is already gone keeps an empty space: [unknown] frames.
                let _ = space.refresh(&mut self.modules);
                if let Ok(info) = ProcessInfo::capture(pid) {
                    self.infos.insert(pid, info);
                }
                let index = self.push_space(space);
                self.timelines.entry(pid).or_default().push((0, index));
                self.stand_ins.insert(pid, time_ns);
                index
            }
        };
        index as u32
    }

    /// Applies the records of one read of the side-band buffers, up to `horizon_ns`: a time
    /// by which every CPU's buffer had been read. Newer records wait for the next read: one
    /// written on another CPU just before them may not have been read yet, and applied late
    /// it would land in the wrong place (an exec read after the loader's mappings of the new
    /// image leaves them in the old one). The files those held records map are opened now,
    /// while their process most likely lives. Returns how many held records are of the
    /// recording's processes.
    pub fn receive(&mut self, records: Vec<Record>, horizon_ns: u64) -> u64 {
        let (ready, held): (Vec<Record>, Vec<Record>) = std::mem::take(&mut self.held)
            .into_iter()
            .chain(records)
            .partition(|r| r.time_ns() <= horizon_ns);
        self.apply(ready);
        self.held = held;
        if !self.refresh_later.is_empty() {
            let pids: Vec<u32> = self.refresh_later.iter().copied().collect();
            self.refresh(pids);
        }
        self.open_held_files()
    }

    /// Opens the files of held mappings of known processes, and of the children whose held
    /// forks make them known; returns how many held records are of such processes.
    pub fn open_held_files(&mut self) -> u64 {
        self.held.sort_by_key(Record::time_ns);
        let mut joining = std::mem::take(&mut self.joining);
        joining.clear();
        let mut ours = 0u64;
        for r in &self.held {
            if let Record::Fork { pid, ppid, tid, .. } = r {
                if pid == tid
                    && pid != ppid
                    && self.follow
                    && (self.is_known(*ppid) || joining.contains(ppid))
                {
                    joining.insert(*pid);
                    ours = ours.saturating_add(1);
                }
                continue;
            }
            let Some(pid) = r.pid() else { continue };
            if !self.is_known(pid) && !joining.contains(&pid) {
                continue;
            }
            ours = ours.saturating_add(1);
            if let Some((key, m)) = mapping_of(r)
                && !self.opened_early.contains_key(&key)
            {
                let module = self.modules.intern(pid, &m);
                self.opened_early.insert(key, module);
            }
        }
        self.joining = joining;
        ours
    }

    /// Applies side-band records in time order; the records deferred for a process that
    /// becomes known join them in their place.
    pub fn apply(&mut self, records: Vec<Record>) {
        use std::{cmp::Reverse, collections::BinaryHeap};
        let mut queue: Vec<Option<Record>> = Vec::with_capacity(records.len());
        let mut order = BinaryHeap::new();
        let push = |queue: &mut Vec<Option<Record>>, order: &mut BinaryHeap<_>, r: Record| {
            order.push(Reverse((r.time_ns(), queue.len())));
            queue.push(Some(r));
        };
        for r in records {
            push(&mut queue, &mut order, r);
        }
        while let Some(Reverse((_, at))) = order.pop() {
            let Some(r) = queue.get_mut(at).and_then(Option::take) else {
                continue;
            };
            if let Some(pid) = self.apply_one(r)
                && let Some((_, deferred)) = self.pending.remove(&pid)
            {
                self.pending_count = self.pending_count.saturating_sub(deferred.len());
                for r in deferred {
                    push(&mut queue, &mut order, r);
                }
            }
        }
    }

    /// Applies one record; returns the pid of a process it made known.
    fn apply_one(&mut self, r: Record) -> Option<u32> {
        // A process's own records wait until it is known (its fork may be read later).
        let own = match &r {
            Record::Exec { pid, time_ns, .. } | Record::Mmap { pid, time_ns, .. } => {
                Some((*pid, *time_ns))
            }
            Record::Exit { pid, tid, time_ns } if pid == tid => Some((*pid, *time_ns)),
            Record::Exit { .. } => return None,
            _ => None,
        };
        if let Some((pid, time_ns)) = own
            && !self.is_known(pid)
        {
            self.defer(pid, time_ns, r);
            return None;
        }
        if own.is_some() || matches!(r, Record::Lost(_)) {
            self.applied = self.applied.saturating_add(1);
        }
        match r {
            Record::Fork {
                pid,
                ppid,
                tid,
                time_ns,
            } => {
                // Threads share their process's space.
                if pid != tid || pid == ppid {
                    return None;
                }
                // Known, and not gone before this fork: the fork's own process (its exit can
                // be read first, from another CPU's buffer).
                let same =
                    self.is_known(pid) && self.exited.get(&pid).is_none_or(|&at| at >= time_ns);
                // Made known by a sample taken after this fork, not by an older process of
                // the same pid.
                let stand_in = same && self.stand_ins.get(&pid).is_some_and(|&at| at >= time_ns);
                if same && !stand_in {
                    return None;
                }
                if !(self.follow && self.is_known(ppid)) {
                    self.defer(ppid, time_ns, r);
                    return None;
                }
                self.applied = self.applied.saturating_add(1);
                self.stand_ins.remove(&pid);
                if stand_in {
                    self.adopt(pid, ppid, time_ns);
                    return Some(pid);
                }
                // A pid seen before is a new process now (pids are reused).
                self.exited.remove(&pid);
                self.names_before.remove(&pid);
                let space = self
                    .index_at(ppid, time_ns)
                    .and_then(|i| self.spaces.get(i))
                    .map_or_else(|| AddressSpace::new(pid), |parent| parent.forked(pid));
                let index = self.push_space(space);
                self.timelines.insert(pid, vec![(time_ns, index)]);
                self.parents.insert(pid, ppid);
                if let Some(info) = self.infos.get(&ppid).cloned() {
                    self.infos.insert(pid, ProcessInfo { pid, ..info });
                }
                return Some(pid);
            }
            Record::Exec { pid, time_ns, comm } => {
                let before = self.index_at(pid, time_ns);
                let index = self.push_space(AddressSpace::new(pid));
                if let Some(before) = before {
                    self.replaced.insert(index, before);
                }
                let line = self.timelines.entry(pid).or_default();
                // Records of one process can come from several CPUs' buffers.
                let at = line.partition_point(|(since, _)| *since <= time_ns);
                line.insert(at, (time_ns, index));
                // The command line is only in /proc: read it while the process may live.
                let info = ProcessInfo::capture(pid).unwrap_or_else(|_| ProcessInfo {
                    pid,
                    comm: comm.clone(),
                    ..Default::default()
                });
                if let Some(old) = self.infos.insert(pid, ProcessInfo { comm, ..info })
                    && !old.comm.is_empty()
                {
                    self.names_before
                        .entry(pid)
                        .or_default()
                        .push(crate::model::NameBefore {
                            until_ns: time_ns,
                            comm: old.comm,
                        });
                }
            }
            Record::Mmap { pid, time_ns, .. } => {
                let (key, mut m) = mapping_of(&r)?;
                m.module = match self.opened_early.remove(&key) {
                    Some(early) => early,
                    None => self.modules.intern(pid, &m),
                };
                if let Some(space) = self
                    .index_at(pid, time_ns)
                    .and_then(|i| self.spaces.get_mut(i))
                {
                    space.add(m);
                }
            }
            Record::Exit { pid, time_ns, .. } => {
                self.exited.insert(pid, time_ns);
            }
            Record::Lost(n) => self.sideband_lost = self.sideband_lost.saturating_add(n),
        }
        None
    }

    /// A fork read after a sample made its child known: the child's first space takes the
    /// parent's mappings of the fork's time, behind what it learnt since.
    fn adopt(&mut self, pid: u32, ppid: u32, time_ns: u64) {
        let parent = self
            .index_at(ppid, time_ns)
            .and_then(|i| self.spaces.get(i))
            .map(|s| s.mappings.clone())
            .unwrap_or_default();
        let first = self
            .timelines
            .get(&pid)
            .and_then(|line| line.first())
            .map(|&(_, i)| i);
        if let Some(space) = first.and_then(|i| self.spaces.get_mut(i)) {
            for m in parent {
                space.add_older(m);
            }
        }
        self.parents.insert(pid, ppid);
        if !self.infos.contains_key(&pid)
            && let Some(info) = self.infos.get(&ppid).cloned()
        {
            self.infos.insert(pid, ProcessInfo { pid, ..info });
        }
    }

    fn defer(&mut self, key: u32, time_ns: u64, r: Record) {
        let entry = self.pending.entry(key).or_default();
        entry.0 = entry.0.max(time_ns);
        entry.1.push(r);
        self.pending_count += 1;
        if self.pending_count > 100_000 {
            let horizon = time_ns.saturating_sub(PENDING_NS);
            self.pending.retain(|_, (newest, _)| *newest >= horizon);
            self.pending_count = self.pending.values().map(|(_, v)| v.len()).sum();
        }
    }

    /// Applies what was deferred for a process that just became known (its own records and
    /// the forks of its children).
    fn replay(&mut self, pid: u32) {
        if let Some((_, records)) = self.pending.remove(&pid) {
            self.pending_count = self.pending_count.saturating_sub(records.len());
            self.apply(records);
        }
    }

    /// Forgets processes that exited before `before_ns` (a long recording cut into windows,
    /// once every sample of theirs is in a window): their address spaces are emptied (the
    /// indices stay, so other spaces keep theirs) and the files no remaining space maps are
    /// let go. Returns the pids forgotten, the space indices emptied and the files let go.
    pub fn prune_exited(&mut self, before_ns: u64) -> Pruned {
        let pids: Vec<u32> = self
            .exited
            .iter()
            .filter(|&(_, &at)| at < before_ns)
            .map(|(&pid, _)| pid)
            .collect();
        let mut pruned = Pruned::default();
        for pid in pids {
            self.exited.remove(&pid);
            self.stand_ins.remove(&pid);
            self.infos.remove(&pid);
            self.names_before.remove(&pid);
            self.parents.remove(&pid);
            for (_, index) in self.timelines.remove(&pid).unwrap_or_default() {
                if let Some(space) = self.spaces.get_mut(index) {
                    *space = AddressSpace::new(space.pid);
                }
                self.replaced.remove(&index);
                pruned.spaces.insert(index as u32);
            }
            pruned.pids.insert(pid);
        }
        if pruned.pids.is_empty() {
            return pruned;
        }
        self.replaced
            .retain(|_, before| !pruned.spaces.contains(&(*before as u32)));
        self.opened_early
            .retain(|(pid, _, _), _| !pruned.pids.contains(pid));
        // Files of held mappings are in no space yet.
        let mapped: HashSet<ModuleId> = self
            .spaces
            .iter()
            .flat_map(|s| s.mappings.iter().filter_map(|m| m.module))
            .chain(self.opened_early.values().flatten().copied())
            .collect();
        pruned.modules = self.modules.retain(|id| mapped.contains(&id));
        pruned
    }

    /// Reads /proc/PID/maps again for processes still alive: only needed when side-band
    /// records were lost.
    pub fn refresh_live(&mut self) {
        let pids: Vec<u32> = self
            .timelines
            .keys()
            .filter(|pid| !self.exited.contains_key(pid))
            .copied()
            .collect();
        self.refresh(pids);
    }

    /// Reads /proc/PID/maps into the newest space of each of `pids` still alive. One with
    /// held records (an exec, say) waits until they are applied ([`Processes::receive`]):
    /// /proc now describes the image after them.
    fn refresh(&mut self, pids: impl IntoIterator<Item = u32>) {
        let held: HashSet<u32> = self.held.iter().filter_map(Record::pid).collect();
        for pid in pids {
            if held.contains(&pid) {
                self.refresh_later.insert(pid);
                continue;
            }
            self.refresh_later.remove(&pid);
            let Some(index) = self
                .timelines
                .get(&pid)
                .and_then(|l| l.last())
                .map(|&(_, i)| i)
            else {
                continue;
            };
            if procfs::has_exited(pid) {
                continue;
            }
            if let Some(space) = self.spaces.get_mut(index) {
                let _ = space.refresh(&mut self.modules);
            }
        }
    }

    /// Each process not known to have exited, with its newest address space.
    pub fn live_spaces(&self) -> impl Iterator<Item = (u32, &AddressSpace)> + '_ {
        self.timelines
            .iter()
            .filter(|(pid, _)| !self.exited.contains_key(pid))
            .filter_map(|(&pid, line)| Some((pid, self.spaces.get(line.last()?.1)?)))
    }

    pub fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.timelines.keys().copied()
    }

    /// Files mapped by targets that could not be opened, as a warning.
    pub fn missed_modules(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self
            .modules
            .missed
            .iter()
            .map(|(p, n)| (p.clone(), *n))
            .collect();
        v.sort();
        v
    }

    /// Files mapped by targets that a missing capability kept the profiler from reading, with
    /// the capability's name.
    pub fn denied_modules(&self) -> Vec<(String, &'static str)> {
        let mut v: Vec<(String, &'static str)> = self
            .modules
            .denied
            .iter()
            .map(|(p, c)| (p.clone(), *c))
            .collect();
        v.sort();
        v
    }
}

/// The mapping a record describes, with the key of its early opening.
fn mapping_of(r: &Record) -> Option<((u32, u64, u64), Mapping)> {
    let Record::Mmap {
        pid,
        time_ns,
        start,
        len,
        offset,
        identity,
        path,
    } = r
    else {
        return None;
    };
    let m = Mapping {
        start: *start,
        end: start.saturating_add(*len),
        offset: *offset,
        path: path.clone(),
        identity: *identity,
        module: None,
        since_ns: *time_ns,
    };
    Some(((*pid, *start, *time_ns), m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mmap(pid: u32, time_ns: u64, start: u64) -> Record {
        mmap_of(pid, time_ns, start, "[anon-test]")
    }

    fn mmap_of(pid: u32, time_ns: u64, start: u64, path: &str) -> Record {
        Record::Mmap {
            pid,
            time_ns,
            start,
            len: 0x1000,
            offset: 0,
            identity: None,
            path: path.into(),
        }
    }

    fn fork(pid: u32, ppid: u32, time_ns: u64) -> Record {
        Record::Fork {
            pid,
            ppid,
            tid: pid,
            time_ns,
        }
    }

    #[test]
    fn samples_land_in_the_space_of_their_time() {
        let mut p = Processes::new(ModuleStore::default(), true);
        p.add_root(AddressSpace::new(10), ProcessInfo::default());
        // The child's own records come before its fork is read (another CPU's buffer).
        p.apply(vec![mmap(11, 20, 0x1000)]);
        p.apply(vec![
            fork(11, 10, 10),
            Record::Exec {
                pid: 11,
                time_ns: 15,
                comm: "child".into(),
            },
        ]);
        assert_eq!(p.parents.get(&11), Some(&10));
        let before_exec = p.space_at(11, 12) as usize;
        let after_exec = p.space_at(11, 30) as usize;
        assert_ne!(before_exec, after_exec);
        assert!(p.spaces[after_exec].find(0x1000).is_some());
        assert!(p.spaces[before_exec].find(0x1000).is_none());
        assert_eq!(p.infos.get(&11).map(|i| i.comm.as_str()), Some("child"));
    }

    #[test]
    fn only_the_recordings_own_records_count_as_applied() {
        // Pids above pid_max: nothing of them is read from /proc.
        let (root, other) = (4_000_020, 4_000_030);
        let mut p = Processes::new(ModuleStore::default(), true);
        p.add_root(AddressSpace::new(root), ProcessInfo::default());
        // Another process of the machine: its records wait, and do not make the loop read
        // faster.
        p.apply(vec![
            mmap(other, 5, 0x1000),
            fork(other + 1, other, 6),
            Record::Exit {
                pid: other,
                tid: other,
                time_ns: 7,
            },
        ]);
        assert_eq!(p.applied, 0);
        // A followed child's fork, and its own mapping read before the fork (another CPU).
        p.apply(vec![mmap(root + 1, 20, 0x1000)]);
        assert_eq!(p.applied, 0);
        p.apply(vec![fork(root + 1, root, 10), mmap(root, 30, 0x2000)]);
        assert_eq!(
            p.applied, 3,
            "the fork, the deferred mapping, the root's mapping"
        );
    }

    #[test]
    fn exited_processes_are_forgotten_with_the_files_only_they_mapped() {
        let dir = std::env::temp_dir().join(format!("profiler-prune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (only, shared) = (dir.join("only.so"), dir.join("shared.so"));
        std::fs::write(&only, b"mapped by the child that exits").expect("write");
        std::fs::write(&shared, b"mapped by both").expect("write");
        let map = |pid, time_ns, start, path: &std::path::Path| {
            mmap_of(pid, time_ns, start, path.to_str().expect("utf-8"))
        };
        // Pids above pid_max: no /proc entry, so files are opened by path.
        let (root, gone, stays) = (4_000_010, 4_000_011, 4_000_012);
        let mut p = Processes::new(ModuleStore::default(), true);
        p.add_root(AddressSpace::new(root), ProcessInfo::default());
        p.apply(vec![
            fork(gone, root, 10),
            fork(stays, root, 11),
            map(gone, 20, 0x1000, &only),
            map(gone, 21, 0x2000, &shared),
            map(stays, 22, 0x2000, &shared),
            Record::Exit {
                pid: gone,
                tid: gone,
                time_ns: 50,
            },
        ]);
        assert_eq!(p.modules.held(), 2);
        let gone_space = p.space_at(gone, 30) as usize;
        let only_id = p.spaces[gone_space]
            .find(0x1000)
            .and_then(|m| m.module)
            .expect("interned");

        // Not yet: it exited after the horizon.
        assert!(p.prune_exited(50).pids.is_empty());
        let pruned = p.prune_exited(100);
        assert_eq!(pruned.pids, HashSet::from([gone]));
        assert!(pruned.spaces.contains(&(gone_space as u32)));
        assert_eq!(pruned.modules, 1);
        assert!(!p.is_known(gone) && p.is_known(stays));
        assert!(p.spaces[gone_space].mappings.is_empty());
        assert!(p.modules.get(only_id).is_none());
        assert_eq!(p.modules.held(), 1);
        let stays_space = p.space_at(stays, 30) as usize;
        assert!(
            p.spaces[stays_space]
                .find(0x2000)
                .is_some_and(|m| m.module.is_some())
        );

        // The same file mapped again is opened again, under a new id.
        p.apply(vec![map(stays, 60, 0x3000, &only)]);
        let again = p.spaces[stays_space]
            .find(0x3000)
            .and_then(|m| m.module)
            .expect("opened again");
        assert_ne!(again, only_id);
        assert_eq!(p.modules.held(), 2);
        // Ids are never reused: readers of new files go on from the last id they saw.
        assert_eq!(p.modules.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_exec_read_after_the_loaders_mappings_still_gets_them() {
        let root = 4_000_040;
        let mut p = Processes::new(ModuleStore::default(), true);
        p.add_root(AddressSpace::new(root), ProcessInfo::default());
        // One read: the loader's mapping of the new image (one CPU's buffer), written just
        // after the exec, whose record sits in another CPU's buffer not read yet.
        assert_eq!(p.receive(vec![mmap(root, 150, 0x5000)], 100), 1);
        p.receive(
            vec![Record::Exec {
                pid: root,
                time_ns: 120,
                comm: "new".into(),
            }],
            200,
        );
        let (old, new) = (
            p.space_at(root, 110) as usize,
            p.space_at(root, 160) as usize,
        );
        assert_ne!(old, new);
        assert!(p.spaces[new].find(0x5000).is_some(), "in the new image");
        assert!(p.spaces[old].find(0x5000).is_none(), "not in the old one");
    }

    #[test]
    fn held_mappings_are_opened_at_once_and_once() {
        let dir = std::env::temp_dir().join(format!("profiler-held-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let (lib_path, elsewhere) = (dir.join("lib.so"), dir.join("other.so"));
        std::fs::write(&lib_path, b"mapped by a child").expect("write");
        std::fs::write(&elsewhere, b"mapped by another process").expect("write");
        let lib = lib_path.to_str().expect("utf-8");
        // Pids above pid_max: files are opened by path.
        let (root, child, gone, other) = (4_000_050, 4_000_051, 4_000_052, 4_000_060);
        let mut p = Processes::new(ModuleStore::default(), true);
        p.add_root(AddressSpace::new(root), ProcessInfo::default());
        let ours = p.receive(
            vec![
                fork(gone, root, 50),
                Record::Exit {
                    pid: gone,
                    tid: gone,
                    time_ns: 60,
                },
                fork(child, root, 150),
                mmap_of(child, 160, 0x1000, lib),
                mmap_of(other, 160, 0x1000, elsewhere.to_str().expect("utf-8")),
            ],
            100,
        );
        assert_eq!(
            ours, 2,
            "the fork and the child's mapping, not the other process's"
        );
        assert!(!p.is_known(child) && p.is_joining(child));
        assert_eq!(p.modules.held(), 1, "opened while held");
        // A window's pruning keeps it, though no space maps it yet.
        assert_eq!(p.prune_exited(u64::MAX).pids, HashSet::from([gone]));
        assert_eq!(p.modules.held(), 1, "kept by the pruning");
        // Gone from disk by the time its record is applied: what was opened early names it.
        std::fs::remove_file(&lib_path).expect("remove");
        p.receive(Vec::new(), 200);
        assert!(p.is_known(child) && !p.is_joining(child));
        let at = p.space_at(child, 170) as usize;
        assert!(
            p.spaces[at]
                .find(0x1000)
                .is_some_and(|m| m.module.is_some())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_fork_read_after_its_child_was_made_known_still_gives_it_its_parent() {
        // Pids above pid_max: nothing of them is read from /proc.
        let (root, child) = (4_000_070, 4_000_071);
        let mut p = Processes::new(ModuleStore::default(), true);
        p.add_root(AddressSpace::new(root), ProcessInfo::default());
        p.receive(vec![mmap(root, 50, 0x7000)], 100);
        p.receive(vec![fork(child, root, 150)], 100);
        // A window's cut unwinds a copy of the child newer than the horizon.
        let early = p.space_at(child, 160) as usize;
        assert!(p.spaces[early].find(0x7000).is_none());
        p.receive(vec![mmap(child, 170, 0x8000)], 200);
        assert_eq!(p.parents.get(&child), Some(&root));
        let at = p.space_at(child, 180) as usize;
        assert_eq!(at, early, "samples already placed keep their space");
        assert!(p.spaces[at].find(0x7000).is_some(), "the parent's mapping");
        assert!(p.spaces[at].find(0x8000).is_some(), "its own");
    }

    #[test]
    fn a_late_fork_keeps_what_its_child_did_and_its_exit() {
        let (root, child) = (4_000_080, 4_000_081);
        let mut p = Processes::new(ModuleStore::default(), true);
        p.add_root(AddressSpace::new(root), ProcessInfo::default());
        // The child's exec, mapping and exit wait for its fork, which is late.
        p.receive(
            vec![
                Record::Exec {
                    pid: child,
                    time_ns: 155,
                    comm: "child".into(),
                },
                mmap(child, 170, 0x8000),
                Record::Exit {
                    pid: child,
                    tid: child,
                    time_ns: 300,
                },
            ],
            400,
        );
        p.space_at(child, 160);
        p.receive(vec![fork(child, root, 150)], 500);
        assert_eq!(p.parents.get(&child), Some(&root));
        let at = p.space_at(child, 200) as usize;
        assert!(p.spaces[at].find(0x8000).is_some(), "its exec's image kept");
        assert!(
            p.prune_exited(u64::MAX).pids.contains(&child),
            "its exit kept"
        );
    }

    #[test]
    fn a_reused_pid_is_not_adopted_by_the_old_processs_stand_in() {
        let (root, child) = (4_000_090, 4_000_091);
        let mut p = Processes::new(ModuleStore::default(), true);
        p.add_root(AddressSpace::new(root), ProcessInfo::default());
        p.receive(vec![mmap(root, 50, 0x7000)], 100);
        // Known from a sample at 120, its fork never read; its exit lost. The fork at 900
        // is another process's: it lends the old one nothing.
        let old = p.space_at(child, 120) as usize;
        p.receive(vec![fork(child, root, 900)], 1000);
        assert!(p.spaces[old].find(0x7000).is_none());
        assert_eq!(p.parents.get(&child), None);
    }

    #[test]
    fn after_a_loss_a_process_with_held_records_is_read_once_they_are_applied() {
        let me = std::process::id();
        let mut p = Processes::new(ModuleStore::default(), true);
        p.add_root(AddressSpace::new(me), ProcessInfo::default());
        p.receive(vec![mmap(me, 150, 0x1000)], 100);
        // A loss: /proc would describe the image after the held records; not yet.
        p.refresh_live();
        let at = p.space_at(me, 200) as usize;
        assert!(p.spaces[at].mappings.is_empty());
        p.receive(Vec::new(), 200);
        let exe = std::env::current_exe().expect("own path");
        let exe = exe.to_str().expect("utf-8");
        assert!(
            p.spaces[at].mappings.iter().any(|m| m.path == exe),
            "read from /proc once applied"
        );
        assert!(p.spaces[at].find(0x1000).is_some());
    }

    #[test]
    fn grandchildren_are_followed_and_threads_ignored() {
        let mut p = Processes::new(ModuleStore::default(), true);
        p.add_root(AddressSpace::new(10), ProcessInfo::default());
        p.apply(vec![fork(12, 11, 20)]);
        p.apply(vec![fork(11, 10, 10)]);
        assert!(p.is_known(12));
        p.apply(vec![Record::Fork {
            pid: 10,
            ppid: 10,
            tid: 13,
            time_ns: 30,
        }]);
        assert!(!p.is_known(13));
    }

    #[test]
    fn without_follow_children_stay_out() {
        let mut p = Processes::new(ModuleStore::default(), false);
        p.add_root(AddressSpace::new(10), ProcessInfo::default());
        p.apply(vec![fork(11, 10, 10), mmap(11, 20, 0x1000)]);
        assert!(!p.is_known(11));
        p.apply(vec![mmap(10, 20, 0x2000)]);
        let at = p.space_at(10, 25) as usize;
        assert!(p.spaces[at].find(0x2000).is_some());
    }
}
