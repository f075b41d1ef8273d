//! What the profiler learns about a target from /proc while it is alive: names, command line
//! and memory mappings, with an open handle on every mapped file so that symbolization still
//! works after the target exits or its binary is replaced.
use std::{fs, io, path::PathBuf};

use super::{
    modules::{ModuleId, ModuleStore},
    sideband::{FileIdentity, makedev},
};
use crate::error::{Error, Result};

/// One executable mapping of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// Path as the target sees it, or a pseudo name (`[vdso]`), or empty for anonymous memory.
    pub path: String,
    /// The mapped file's device and inode, as the kernel reported them.
    pub identity: Option<FileIdentity>,
    /// The file in the recording's module store, once opened.
    pub module: Option<ModuleId>,
    /// When it was mapped (the side-band record's time); 0 for what was there before the
    /// recording looked (`/proc/PID/maps` at attach).
    pub since_ns: u64,
}

impl Mapping {
    /// A path, not a pseudo name: `[vdso]`, empty for anonymous memory in /proc, and the
    /// kernel's side-band names that begin with two slashes (`//anon` for a JIT's code).
    pub fn is_file(&self) -> bool {
        self.path.starts_with('/') && !self.path.starts_with("//")
    }
}

/// The address ranges of the files a `/proc/PID/maps` text runs code from (executables and
/// libraries, each segment whatever its permissions), adjacent ones merged. Files only read
/// (data a thread maps for a while) are left out: their addresses are reused once unmapped.
pub fn code_file_ranges(text: &str) -> Vec<(usize, usize)> {
    let lines: Vec<(&str, &str, &str)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_ascii_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            let path = fields.nth(3).filter(|p| p.starts_with('/'))?;
            Some((range, perms, path))
        })
        .collect();
    let code: std::collections::HashSet<&str> = lines
        .iter()
        .filter(|(_, perms, _)| perms.contains('x'))
        .map(|&(_, _, path)| path)
        .collect();
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (range, _, path) in lines {
        if !code.contains(path) {
            continue;
        }
        let Some((Ok(start), Ok(end))) = range
            .split_once('-')
            .map(|(a, b)| (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)))
        else {
            continue;
        };
        match out.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => out.push((start, end)),
        }
    }
    out
}

/// Parses the executable mappings of a `/proc/PID/maps` text.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms), Some(offset)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !perms.contains('x') {
            continue;
        }
        let identity = fields
            .next()
            .and_then(|dev| dev.split_once(':'))
            .zip(fields.next().and_then(|i| i.parse::<u64>().ok()))
            .and_then(|((maj, min), ino)| {
                let maj = u32::from_str_radix(maj, 16).ok()?;
                let min = u32::from_str_radix(min, 16).ok()?;
                (ino != 0).then(|| FileIdentity {
                    dev: makedev(maj, min),
                    ino,
                })
            });
        // The path is the rest of the line and may contain spaces; " (deleted)" stays part of
        // it because the open handle, not the name, is what symbolization uses.
        let path = fields.collect::<Vec<_>>().join(" ");
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end), Ok(offset)) = (
            u64::from_str_radix(start, 16),
            u64::from_str_radix(end, 16),
            u64::from_str_radix(offset, 16),
        ) else {
            continue;
        };
        out.push(Mapping {
            start,
            end,
            offset,
            path,
            identity,
            module: None,
            since_ns: 0,
        });
    }
    out
}

/// Static facts about a process.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub command: Vec<String>,
    pub exe: String,
    /// cgroup v2 path, empty when unknown (see `model::Process::cgroup`).
    pub cgroup: String,
    pub kernel_thread: bool,
}

fn proc_path(pid: u32, leaf: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{leaf}"))
}

/// Maps "file vanished" to "process exited": /proc entries disappear with the process.
fn exited_or(pid: u32, e: io::Error, other: impl FnOnce(io::Error) -> Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
        Error::ExitedBeforeAttach(pid)
    } else {
        other(e)
    }
}

impl ProcessInfo {
    pub fn capture(pid: u32) -> Result<Self> {
        let read = |leaf: &str| {
            fs::read(proc_path(pid, leaf)).map_err(|e| {
                exited_or(pid, e, |source| Error::Read {
                    path: proc_path(pid, leaf),
                    source,
                })
            })
        };
        let comm = String::from_utf8_lossy(&read("comm")?)
            .trim_end()
            .to_string();
        let command = read("cmdline")?
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // /proc/PID/exe needs ptrace access, which maps and auxv do not always (another
        // user's process without CAP_SYS_PTRACE): then the file mapped at the entry point.
        let exe = fs::read_link(proc_path(pid, "exe"))
            .map(|p| p.to_string_lossy().into_owned())
            .ok()
            .or_else(|| exe_from_auxv(pid))
            .unwrap_or_default();
        // Both only label outputs: a process that cannot tell them is still profiled.
        let text = |leaf| fs::read_to_string(proc_path(pid, leaf)).unwrap_or_default();
        let cgroup = crate::model::Process::cgroup_from_proc(&text("cgroup")).unwrap_or_default();
        let kernel_thread =
            crate::model::Process::kernel_thread_from_stat(&text("stat")).unwrap_or(false);
        Ok(Self {
            pid,
            comm,
            command,
            exe,
            cgroup,
            kernel_thread,
        })
    }
}

/// The executable's path as the file mapped at the program's entry point (AT_ENTRY of
/// /proc/PID/auxv), for when /proc/PID/exe may not be read.
fn exe_from_auxv(pid: u32) -> Option<String> {
    let auxv = fs::read(proc_path(pid, "auxv")).ok()?;
    let maps = fs::read_to_string(proc_path(pid, "maps")).ok()?;
    exe_at_entry(&auxv, &maps)
}

fn exe_at_entry(auxv: &[u8], maps: &str) -> Option<String> {
    const AT_ENTRY: u64 = 9;
    let word = |c: &[u8]| c.try_into().ok().map(u64::from_ne_bytes);
    let entry = auxv
        .chunks_exact(16)
        .filter_map(|pair| Some((word(pair.get(..8)?)?, word(pair.get(8..)?)?)))
        .find(|&(key, _)| key == AT_ENTRY)?
        .1;
    parse_maps(maps)
        .into_iter()
        .find(|m| m.start <= entry && entry < m.end && m.is_file())
        .map(|m| m.path)
}

/// Names of a process's threads, read from /proc/PID/task/*/comm.
pub fn thread_names(pid: u32) -> Vec<(u32, String)> {
    let Ok(dir) = fs::read_dir(proc_path(pid, "task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let tid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = fs::read_to_string(e.path().join("comm")).ok()?;
        Some((tid, comm.trim_end().to_string()))
    })
    .collect()
}

/// Whether two mappings overlap where a file is involved (see [`AddressSpace::overlaps`]).
fn overlap(a: &Mapping, b: &Mapping) -> bool {
    a.start < b.end && b.start < a.end && (a.is_file() || b.is_file())
}

impl Mapping {
    /// The same file at the same place (the identity where both have one).
    fn same(&self, m: &Mapping) -> bool {
        self.start == m.start
            && self.end == m.end
            && self.offset == m.offset
            && self.path == m.path
            && (self.identity == m.identity || self.identity.is_none() || m.identity.is_none())
    }
}

/// Every executable mapping seen in a process image during the recording.
#[derive(Clone, Debug, Default)]
pub struct AddressSpace {
    pub pid: u32,
    /// Newest first, so a range that was remapped resolves to its latest file.
    pub mappings: Vec<Mapping>,
    /// When a mapping went over part of an older one (a library unloaded and another loaded
    /// at its addresses, or a parent's adopted under a child's own), in order: what an
    /// address means changed then, and only then. Empty while no two mappings overlap.
    remapped_at: Vec<u64>,
}

impl AddressSpace {
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            ..Default::default()
        }
    }

    /// The space of a child `pid` forked: its parent's mappings, and when they changed.
    pub fn forked(&self, pid: u32) -> Self {
        Self {
            pid,
            ..self.clone()
        }
    }

    /// Adds a mapping not seen before. Mappings are never removed: a library unloaded during
    /// the recording still symbolizes the samples taken while it was there.
    pub fn add(&mut self, m: Mapping) {
        // For a file, only what holds its place now: a library loaded back where it was
        // before, after another, is a change again. Code of no file (a JIT's, whose records
        // come again at each mprotect) names nothing differently: once is enough.
        if self.find(m.start).is_some_and(|o| o.same(&m))
            || !m.is_file() && self.mappings.iter().any(|o| o.same(&m))
        {
            return;
        }
        if self.overlaps(&m) {
            self.remapped(m.since_ns);
        }
        self.mappings.insert(0, m);
    }

    /// Adds a mapping older than every one held: where they overlap, theirs win.
    pub fn add_older(&mut self, m: Mapping) {
        if self.mappings.iter().any(|o| o.same(&m)) {
            return;
        }
        // The mappings it goes under took their place when they were mapped: a change then.
        let over: Vec<u64> = self
            .mappings
            .iter()
            .filter(|o| overlap(o, &m))
            .map(|o| o.since_ns)
            .collect();
        for t in over {
            self.remapped(t);
        }
        self.mappings.push(m);
    }

    fn remapped(&mut self, time_ns: u64) {
        let at = self.remapped_at.partition_point(|&t| t <= time_ns);
        self.remapped_at.insert(at, time_ns);
    }

    /// Whether `m` goes over a mapping held where a file is involved: anonymous code
    /// remapped over anonymous code (a JIT's, many times a second) names nothing differently
    /// and is left out, so it costs no lookups by time.
    fn overlaps(&self, m: &Mapping) -> bool {
        self.mappings.iter().any(|o| overlap(o, m))
    }

    /// How many times the meaning of some address changed up to `time_ns`: two times with
    /// the same count see the same mapping at every address ([`AddressSpace::find_at`]).
    pub fn era_at(&self, time_ns: u64) -> u32 {
        let n = self.remapped_at.partition_point(|&t| t <= time_ns);
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The mappings in effect at `time_ns`: each the one [`AddressSpace::find_at`] gives for
    /// its own start, so no two files share a start (code of no file may: its remaps are not
    /// counted, and nothing is read from it).
    pub fn in_effect_at(&self, time_ns: u64) -> impl Iterator<Item = &Mapping> {
        self.mappings.iter().filter(move |m| {
            self.remapped_at.is_empty()
                || self
                    .find_at(m.start, time_ns)
                    .is_some_and(|found| std::ptr::eq(found, *m))
        })
    }

    /// The mapping that held `addr` at `time_ns`: the newest mapped by then. An address no
    /// mapping held yet (a record read late, or clocks a little apart) takes the oldest that
    /// holds it since.
    pub fn find_at(&self, addr: u64, time_ns: u64) -> Option<&Mapping> {
        let mut holding = self
            .mappings
            .iter()
            .filter(|m| m.start <= addr && addr < m.end);
        let newest = holding.next()?;
        if newest.since_ns <= time_ns {
            return Some(newest);
        }
        let mut oldest = newest;
        for m in holding {
            if m.since_ns <= time_ns {
                return Some(m);
            }
            oldest = m;
        }
        Some(oldest)
    }

    /// Reads /proc/PID/maps, opening the files it names into `modules`.
    pub fn refresh(&mut self, modules: &mut ModuleStore) -> Result<()> {
        let pid = self.pid;
        let text = fs::read_to_string(proc_path(pid, "maps")).map_err(|e| {
            exited_or(pid, e, |source| {
                if source.kind() == io::ErrorKind::PermissionDenied {
                    Error::NoAccessToTarget { pid, source }
                } else {
                    Error::Read {
                        path: proc_path(pid, "maps"),
                        source,
                    }
                }
            })
        })?;
        for mut m in parse_maps(&text) {
            m.module = modules.intern(pid, &m);
            self.add(m);
        }
        Ok(())
    }

    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        self.mappings
            .iter()
            .find(|m| m.start <= addr && addr < m.end)
    }
}

/// Every process /proc lists now, in pid order.
pub fn pids() -> Vec<u32> {
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// When the profiler may not read `pid`'s memory, the one-line warning that says what is lost
/// and the fix. `/proc/PID/mem` needs ptrace access (the same user, or CAP_SYS_PTRACE) and
/// passes its owner's mode bits (0600: the same user, or CAP_DAC_READ_SEARCH or
/// CAP_DAC_OVERRIDE): the capabilities named are those missing from the effective set.
pub fn memory_access_warning(pid: u32) -> Option<String> {
    let e = fs::File::open(proc_path(pid, "mem")).err()?;
    if !matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) {
        return None;
    }
    use std::os::unix::fs::MetadataExt;
    let owner = fs::metadata(proc_path(pid, ""))
        .map(|m| format!(" (uid {})", m.uid()))
        .unwrap_or_default();
    let missing = missing_for_memory(super::privileges::effective_caps());
    let missing = if missing.is_empty() {
        "access".to_string()
    } else {
        missing.join(" and ")
    };
    Some(format!(
        "missing {missing}: cannot read the memory of pid {pid}{owner}: {e}; span names and [vdso] frames are lost; run with sudo or grant {missing}"
    ))
}

/// The capabilities missing from `caps` for reading another user's process memory.
pub fn missing_for_memory(caps: u64) -> Vec<&'static str> {
    use super::privileges::{CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE};
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_SYS_PTRACE) {
        missing.push("CAP_SYS_PTRACE");
    }
    if !has(CAP_DAC_READ_SEARCH) && !has(CAP_DAC_OVERRIDE) {
        missing.push("CAP_DAC_READ_SEARCH");
    }
    missing
}

/// Whether the process has exited (gone, or a zombie waiting to be reaped).
pub fn has_exited(pid: u32) -> bool {
    match fs::read_to_string(proc_path(pid, "stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_ascii_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executable_is_the_file_mapped_at_the_entry_point() {
        let auxv = std::fs::read("/proc/self/auxv").expect("auxv");
        let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        assert_eq!(
            exe_at_entry(&auxv, &maps).as_deref(),
            exe.to_str(),
            "{maps}"
        );
        assert_eq!(exe_at_entry(&auxv[..7], &maps), None, "cut short");
        assert_eq!(exe_at_entry(&auxv, ""), None, "no maps");
    }

    #[test]
    fn names_the_capabilities_memory_reads_miss() {
        use super::super::privileges::{CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE};
        let all = (1u64 << CAP_SYS_PTRACE) | (1 << CAP_DAC_READ_SEARCH) | (1 << CAP_DAC_OVERRIDE);
        assert!(missing_for_memory(all).is_empty());
        assert_eq!(
            missing_for_memory(all & !(1 << CAP_SYS_PTRACE)),
            ["CAP_SYS_PTRACE"]
        );
        // Either DAC capability passes the 0600 mode of /proc/PID/mem.
        assert!(missing_for_memory(all & !(1 << CAP_DAC_OVERRIDE)).is_empty());
        assert_eq!(
            missing_for_memory(1 << CAP_SYS_PTRACE),
            ["CAP_DAC_READ_SEARCH"]
        );
        assert_eq!(
            missing_for_memory(0),
            ["CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]
        );
    }

    #[test]
    fn parses_executable_mappings_only() {
        let text = "\
55d0c0000000-55d0c0001000 r--p 00000000 fd:01 123 /usr/bin/app
55d0c0001000-55d0c0005000 r-xp 00001000 fd:01 123 /usr/bin/app
7f0000000000-7f0000100000 r-xp 00028000 fd:01 456 /usr/lib/x86_64-linux-gnu/libc.so.6
7f0000200000-7f0000201000 rwxp 00000000 00:00 0 
7ffd00000000-7ffd00002000 r-xp 00000000 00:00 0                          [vdso]
7f0000300000-7f0000301000 r-xp 00000000 fd:01 789 /tmp/my lib.so (deleted)
";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 5);
        assert_eq!(maps[0].start, 0x55d0c0001000);
        assert_eq!(maps[0].offset, 0x1000);
        assert_eq!(maps[0].path, "/usr/bin/app");
        assert_eq!(
            maps[0].identity,
            Some(FileIdentity {
                dev: makedev(0xfd, 1),
                ino: 123
            })
        );
        assert_eq!(maps[2].identity, None);
        assert_eq!(maps[2].path, "");
        assert!(!maps[2].is_file());
        assert_eq!(maps[3].path, "[vdso]");
        assert_eq!(maps[4].path, "/tmp/my lib.so (deleted)");
    }

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        let info = ProcessInfo::capture(pid).expect("own /proc entry");
        assert!(!info.comm.is_empty());
        let mut space = AddressSpace::new(pid);
        let mut modules = ModuleStore::default();
        space.refresh(&mut modules).expect("own maps");
        let here = reads_own_process as *const () as u64;
        let m = space.find(here).expect("own code is mapped");
        assert!(m.module.is_some(), "{m:?} was opened");
        assert!(m.identity.is_some(), "{m:?} has its inode");
        assert!(!has_exited(pid));
    }

    #[test]
    fn missing_process_reads_as_exited() {
        // PID 0 never has a /proc entry.
        assert!(matches!(
            ProcessInfo::capture(0),
            Err(Error::ExitedBeforeAttach(0))
        ));
        assert!(has_exited(0));
    }

    #[test]
    fn code_file_ranges_merge_a_programs_segments_and_skip_data_files() {
        let maps = "\
55d0c0000000-55d0c0001000 r--p 00000000 fd:01 1234 /usr/bin/profiler
55d0c0001000-55d0c0005000 r-xp 00001000 fd:01 1234 /usr/bin/profiler
55d0c0006000-55d0c0007000 rw-p 00005000 fd:01 1234 /usr/bin/profiler
55d0c0007000-55d0c0008000 rw-p 00000000 00:00 0 
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 [vdso]
7f0000002000-7f0000003000 r--p 00000000 fd:01 99 /usr/lib/libc.so.6
7f0000003000-7f0000004000 r-xp 00001000 fd:01 99 /usr/lib/libc.so.6
7f0000005000-7f0000006000 r--p 00000000 fd:01 77 /tmp/data.bin
";
        assert_eq!(
            code_file_ranges(maps),
            [
                (0x55d0c0000000, 0x55d0c0005000),
                (0x55d0c0006000, 0x55d0c0007000),
                (0x7f0000002000, 0x7f0000004000)
            ]
        );
    }

    fn file(path: &str, start: u64, len: u64, since_ns: u64) -> Mapping {
        Mapping {
            start,
            end: start + len,
            offset: 0,
            path: path.into(),
            identity: None,
            module: None,
            since_ns,
        }
    }

    #[test]
    fn an_address_means_the_mapping_of_its_time() {
        let mut space = AddressSpace::new(1);
        space.add(file("/exe", 0x1000, 0x1000, 0));
        space.add(file("/lib/a.so", 0x10000, 0x4000, 100));
        assert_eq!((space.era_at(0), space.era_at(u64::MAX)), (0, 0));
        // Unloaded, and another loaded over part of it.
        space.add(file("/lib/b.so", 0x12000, 0x4000, 300));
        let at = |addr, t| space.find_at(addr, t).map(|m| m.path.as_str());
        assert_eq!(at(0x12000, 200), Some("/lib/a.so"));
        assert_eq!(at(0x12000, 300), Some("/lib/b.so"));
        assert_eq!(at(0x10000, 400), Some("/lib/a.so"), "what b did not cover");
        // Before either: the oldest that holds it since, as a sample read early would be.
        assert_eq!(at(0x12000, 50), Some("/lib/a.so"));
        assert_eq!(at(0x15000, 50), Some("/lib/b.so"));
        assert_eq!(at(0x1000, 0), Some("/exe"));
        assert_eq!(at(0x20000, 400), None);
        assert_eq!((space.era_at(299), space.era_at(300)), (0, 1));
        fn effect(space: &AddressSpace, t: u64) -> Vec<&str> {
            space.in_effect_at(t).map(|m| m.path.as_str()).collect()
        }
        assert_eq!(effect(&space, 200), ["/lib/a.so", "/exe"]);
        assert_eq!(effect(&space, 300), ["/lib/b.so", "/lib/a.so", "/exe"]);
        // The same file again is no change; another file at the same place is one.
        space.add(file("/lib/b.so", 0x12000, 0x4000, 500));
        assert_eq!(space.era_at(u64::MAX), 1);
        space.add(file("/lib/c.so", 0x12000, 0x4000, 600));
        assert_eq!(space.era_at(u64::MAX), 2);
        assert_eq!(effect(&space, 700), ["/lib/c.so", "/lib/a.so", "/exe"]);
        // A JIT's code, as the kernel's records name it.
        space.add(file("//anon", 0x30000, 0x1000, 800));
        space.add(file("//anon", 0x30000, 0x2000, 900));
        assert_eq!(
            space.era_at(u64::MAX),
            2,
            "code of no file over code of no file"
        );
        assert!(!space.mappings[0].is_file());
        // The first library loaded back: a change again, not a duplicate.
        space.add(file("/lib/b.so", 0x12000, 0x4000, 1000));
        assert_eq!(space.era_at(u64::MAX), 3);
        assert_eq!(
            space.find_at(0x12000, 1100).map(|m| m.path.as_str()),
            Some("/lib/b.so")
        );
        assert_eq!(
            space.find_at(0x12000, 700).map(|m| m.path.as_str()),
            Some("/lib/c.so")
        );
        let child = space.forked(2);
        assert_eq!((child.pid, child.era_at(u64::MAX)), (2, 3));
    }

    #[test]
    fn a_parents_mapping_adopted_under_a_childs_own_is_a_change_at_the_childs() {
        // The child's records were read before its fork's: it mapped c.so at 450 over what
        // it had from its parent, b.so (mapped at 300).
        let mut child = AddressSpace::new(2);
        child.add(file("/lib/c.so", 0x12000, 0x4000, 450));
        assert_eq!(child.era_at(u64::MAX), 0);
        child.add_older(file("/lib/b.so", 0x12000, 0x4000, 300));
        assert_eq!((child.era_at(420), child.era_at(450)), (0, 1));
        let at = |t| child.find_at(0x12000, t).map(|m| m.path.as_str());
        assert_eq!((at(420), at(500)), (Some("/lib/b.so"), Some("/lib/c.so")));
    }
}
