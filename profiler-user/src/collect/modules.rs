//! One store of the files a recording's processes map: each file known once, by identity,
//! read through one memory mapping that every consumer shares (symbolization, DWARF
//! unwinding, the frame-pointer check, the stripped check, separate debug files).
//!
//! The mapping, not a descriptor, is what keeps a file's bytes: it pins the inode, so a file
//! deleted or replaced on disk (a new inode renamed over it) still reads as it was when the
//! target mapped it (one rewritten in place does not: [`ModuleFile::rewritten`]), and the
//! (device, inode) pair cannot be reused for another file while the store lives. Descriptors
//! are only a convenience for blazesym, which opens paths; they are bounded and reopened on
//! demand.
use std::{
    collections::HashMap,
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use memmap2::Mmap;
use object::{Object, ObjectSegment};

use super::{procfs::Mapping, sideband::FileIdentity, unwind};

pub type ModuleId = u32;

/// Descriptors kept open for symbolization; files beyond it are reopened (or copied) when
/// symbolized, so a recording of thousands of processes stays far from RLIMIT_NOFILE.
const MAX_OPEN: usize = 128;

/// A separate debug file that names a stripped module.
#[derive(Debug)]
pub struct DebugFile {
    /// Where it was found, for people.
    pub path: PathBuf,
    /// The file that was checked, open: readers go through it ([`DebugFile::readable_path`]),
    /// never through `path` again.
    pub file: File,
    pub map: Arc<Mmap>,
    /// How it was found: `build-id` or `debuglink`.
    pub how: &'static str,
}

impl DebugFile {
    /// A path to the checked file's own descriptor.
    pub fn readable_path(&self) -> PathBuf {
        fd_path(&self.file)
    }
}

/// What a write to a file changes: its size and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        Self {
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
        }
    }
}

#[derive(Debug)]
pub struct ModuleFile {
    /// The path the target mapped it under (in its own mount namespace).
    pub path: String,
    pub identity: FileIdentity,
    pub map: Arc<Mmap>,
    /// As it was when opened, or at the last `touch` seen since.
    stamp: std::sync::Mutex<Stamp>,
    /// For a file without a build id: a hash of its first and last 64 KiB when opened.
    fingerprint: u64,
    /// Open while within the descriptor budget.
    file: Option<File>,
    build_id: OnceLock<Vec<u8>>,
    debug: OnceLock<Option<DebugFile>>,
    frame_pointers: OnceLock<Option<bool>>,
    has_symbols: OnceLock<bool>,
    sections: OnceLock<Option<Arc<unwind::Sections>>>,
}

impl ModuleFile {
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The GNU build id, empty when the file has none.
    pub fn build_id(&self) -> &[u8] {
        self.build_id.get_or_init(|| {
            object::File::parse(self.bytes())
                .ok()
                .and_then(|f| f.build_id().ok().flatten().map(<[u8]>::to_vec))
                .unwrap_or_default()
        })
    }

    /// A separate debug file for this module (`/usr/lib/debug/.build-id/…` or
    /// `.gnu_debuglink`), checked against the module (build id or CRC).
    pub fn debug_file(&self) -> Option<&DebugFile> {
        self.debug
            .get_or_init(|| super::debuginfo::find(self))
            .as_ref()
    }

    /// Whether its own functions set up frame pointers; None when it has no symbols to judge.
    pub fn frame_pointers(&self) -> Option<bool> {
        *self
            .frame_pointers
            .get_or_init(|| unwind::has_frame_pointers(self.bytes()))
    }

    /// Symbol table or DWARF, here or in a debug file.
    pub fn has_symbols(&self) -> bool {
        *self.has_symbols.get_or_init(|| {
            crate::symbolize::elf::bytes_have_symbols(self.bytes()) || self.debug_file().is_some()
        })
    }

    /// Gives back the pages of the file the process has touched (start-up checks read
    /// headers, symbol and string tables of every file a whole machine maps): they stay in
    /// the page cache and come back on the next read, but no longer count in the profiler's
    /// memory while the recording runs.
    pub fn release_pages(&self) {
        // SAFETY: a read-only private file mapping that is never written: dropping its pages
        // loses nothing, the next access reads the same bytes of the (pinned) file again.
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    /// Whether the file was written to since it was opened. A rewrite in place (`cp` over
    /// it, a shell's `>`) keeps the inode, so neither the mapping nor the descriptor keeps
    /// the bytes the target ran: what reads as the file now is another program's code, and
    /// reading past a shrunk end would fault. A new modification time with the same size and
    /// the same build id (or, without one, the same first and last 64 KiB) is a `touch`, not a
    /// rewrite. False when the file can no longer be looked at (no descriptor held, and its
    /// path leads elsewhere from here: another mount namespace, or replaced since).
    pub fn rewritten(&self) -> bool {
        let now = match &self.file {
            Some(f) => f.metadata().ok(),
            None => self.reopen().and_then(|f| f.metadata().ok()),
        };
        let Some(now) = now.map(|m| Stamp::of(&m)) else {
            return false;
        };
        let mut stamp = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if now == *stamp {
            return false;
        }
        if now.size != stamp.size {
            return true;
        }
        // Same size: the mapping can be read through without faulting.
        let same = if self.build_id().is_empty() {
            fingerprint(self.bytes()) == self.fingerprint
        } else {
            object::File::parse(self.bytes())
                .ok()
                .and_then(|f| f.build_id().ok().flatten().map(<[u8]>::to_vec))
                .as_deref()
                == Some(self.build_id())
        };
        // A touch: the next look compares with it, without reading the file again.
        if same {
            *stamp = now;
        }
        !same
    }

    /// Its path opened again, if that still leads to this file.
    fn reopen(&self) -> Option<File> {
        open_regular(&self.path)
            .ok()
            .filter(|f| identity_of(f) == Some(self.identity))
    }

    /// Unwind tables, parsed once.
    pub fn sections(&self) -> Option<Arc<unwind::Sections>> {
        self.sections
            .get_or_init(|| unwind::Sections::parse(self.map.clone()).map(Arc::new))
            .clone()
    }

    /// The virtual addresses (ELF `p_vaddr` space) of file offsets, 0 for an offset no
    /// segment holds: what a debug file, which has no file contents for code, is indexed by.
    pub fn vaddrs_of(&self, offsets: &[u64]) -> Vec<u64> {
        let segments: Vec<(u64, u64, u64)> = object::File::parse(self.bytes())
            .map(|file| {
                file.segments()
                    .map(|s| {
                        let (start, size) = s.file_range();
                        (start, size, s.address())
                    })
                    .collect()
            })
            .unwrap_or_default();
        offsets
            .iter()
            .map(|&offset| {
                segments
                    .iter()
                    .find_map(|&(start, size, vaddr)| {
                        (start <= offset && offset < start.checked_add(size)?)
                            .then(|| vaddr.checked_add(offset - start))?
                    })
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// Every file mapped by a recorded process.
#[derive(Debug, Default)]
pub struct ModuleStore {
    /// By id; None for a file let go (no process that maps it is left, [`ModuleStore::retain`]).
    modules: Vec<Option<ModuleFile>>,
    by_identity: HashMap<FileIdentity, ModuleId>,
    /// Same content under another inode (a copy, another container's layer).
    by_build_id: HashMap<Vec<u8>, ModuleId>,
    open: usize,
    /// Mapped files that could not be opened (gone, replaced, no access), by path.
    pub missed: HashMap<String, u64>,
    /// Of those, the ones refused for want of a capability, with its name: the file is there
    /// but the profiler may not read it (see `Refusal`).
    pub denied: HashMap<String, &'static str>,
}

fn identity_of(f: &File) -> Option<FileIdentity> {
    let m = f.metadata().ok()?;
    m.is_file().then(|| FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
    })
}

/// Raises the soft descriptor limit to the hard one: a recording of many processes opens many
/// files briefly, and running out would silently stop naming them.
pub fn raise_nofile() {
    let mut rlim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer, then a valid in-pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rlim) == 0 && rlim.rlim_cur < rlim.rlim_max {
            rlim.rlim_cur = rlim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &rlim);
        }
    }
}

impl ModuleStore {
    pub fn get(&self, id: ModuleId) -> Option<&ModuleFile> {
        self.modules.get(id as usize)?.as_ref()
    }

    /// Ids issued so far: every id below it was a file (held, or let go), so a reader of new
    /// files walks from where it stopped up to this.
    pub fn len(&self) -> usize {
        self.modules.len()
    }

    /// Files held now (not those let go).
    pub fn held(&self) -> usize {
        self.modules.iter().flatten().count()
    }

    /// The file (a held module or its debug file) whose mapping holds `address` of the
    /// profiler's own memory: where a page cut off a file (`crate::sigbus`) was read.
    pub fn path_mapped_at(&self, address: usize) -> Option<String> {
        let holds = |map: &Mmap| {
            let start = map.as_ptr() as usize;
            start <= address && address - start < map.len()
        };
        self.modules.iter().flatten().find_map(|m| {
            if holds(&m.map) {
                return Some(m.path.clone());
            }
            let debug = m.debug.get()?.as_ref()?;
            holds(&debug.map).then(|| debug.path.display().to_string())
        })
    }

    /// [`ModuleFile::release_pages`] for every file.
    pub fn release_pages(&self) {
        for m in self.modules.iter().flatten() {
            m.release_pages();
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lets go of every file `keep` refuses: its mapping, its descriptor, its parsed tables.
    /// A file mapped again later is opened again under a new id. Returns how many went.
    pub fn retain(&mut self, keep: impl Fn(ModuleId) -> bool) -> usize {
        let mut gone = 0;
        for (id, slot) in self.modules.iter_mut().enumerate() {
            let Ok(id) = ModuleId::try_from(id) else {
                break;
            };
            if slot.is_none() || keep(id) {
                continue;
            }
            if let Some(m) = slot.take()
                && m.file.is_some()
            {
                self.open = self.open.saturating_sub(1);
            }
            gone += 1;
        }
        if gone > 0 {
            self.by_identity
                .retain(|_, id| self.modules.get(*id as usize).is_some_and(Option::is_some));
            self.by_build_id
                .retain(|_, id| self.modules.get(*id as usize).is_some_and(Option::is_some));
        }
        gone
    }

    /// The module a mapping of `pid` refers to, opened now if it is new. `identity` is what
    /// the kernel reported when it was mapped; a file found by path must match it.
    pub fn intern(&mut self, pid: u32, m: &Mapping) -> Option<ModuleId> {
        if !m.is_file() {
            return None;
        }
        if let Some(identity) = m.identity
            && let Some(id) = self.current(identity)
        {
            return Some(id);
        }
        let file = match open_mapped(pid, m) {
            Ok(file) => file,
            Err(refusal) => {
                *self.missed.entry(m.path.clone()).or_default() += 1;
                if let Some(cap) = refusal.capability() {
                    self.denied.insert(m.path.clone(), cap);
                }
                return None;
            }
        };
        let identity = identity_of(&file)?;
        if let Some(id) = self.current(identity) {
            return Some(id);
        }
        self.insert(m.path.clone(), identity, file)
    }

    /// A file the process will map (a command before its exec).
    pub fn intern_path(&mut self, path: &str) -> Option<ModuleId> {
        self.intern_file(path, path)
    }

    /// The file `open` reaches (such as `/proc/PID/exe`), known as `path`.
    pub fn intern_file(&mut self, open: &str, path: &str) -> Option<ModuleId> {
        let file = open_regular(open).ok()?;
        let identity = identity_of(&file)?;
        if let Some(id) = self.current(identity) {
            return Some(id);
        }
        self.insert(path.to_string(), identity, file)
    }

    /// The module of the file `identity` names, unless it was rewritten in place since it
    /// was opened: that one keeps its id for what mapped it before, and is no longer found
    /// by identity or build id, so the file is opened again as it is now.
    fn current(&mut self, identity: FileIdentity) -> Option<ModuleId> {
        let id = *self.by_identity.get(&identity)?;
        if !self.get(id).is_some_and(ModuleFile::rewritten) {
            return Some(id);
        }
        self.by_identity.retain(|_, i| *i != id);
        self.by_build_id.retain(|_, i| *i != id);
        None
    }

    fn insert(&mut self, path: String, identity: FileIdentity, file: File) -> Option<ModuleId> {
        let stamp = Stamp::of(&file.metadata().ok()?);
        // SAFETY: a read-only view, never written. A file cut short under us would fault on
        // access past its new end: `crate::sigbus` turns those pages into zeros, which every
        // reader of a module's bytes takes (they are fuzzed with any bytes).
        let map = Arc::new(unsafe { Mmap::map(&file) }.ok()?);
        let module = ModuleFile {
            path,
            identity,
            stamp: std::sync::Mutex::new(stamp),
            fingerprint: 0,
            file: None,
            build_id: OnceLock::new(),
            debug: OnceLock::new(),
            frame_pointers: OnceLock::new(),
            has_symbols: OnceLock::new(),
            sections: OnceLock::new(),
            map,
        };
        let build_id = module.build_id().to_vec();
        let mut module = module;
        if build_id.is_empty() {
            module.fingerprint = fingerprint(module.bytes());
        }
        if !build_id.is_empty()
            && let Some(&id) = self.by_build_id.get(&build_id)
        {
            self.by_identity.insert(identity, id);
            return Some(id);
        }
        let id = ModuleId::try_from(self.modules.len()).ok()?;
        if self.open < MAX_OPEN {
            module.file = Some(file);
            self.open += 1;
        }
        self.modules.push(Some(module));
        self.by_identity.insert(identity, id);
        if !build_id.is_empty() {
            self.by_build_id.insert(build_id, id);
        }
        Some(id)
    }

    /// A path blazesym can open that reads exactly this module's bytes: its open descriptor,
    /// else its path if that still is the same file, else a copy in memory (the file was
    /// replaced or deleted since).
    pub fn readable_path(&self, id: ModuleId) -> Option<Readable> {
        let m = self.get(id)?;
        if let Some(f) = &m.file {
            return Some(Readable {
                path: fd_path(f),
                _file: None,
            });
        }
        let file = m.reopen().or_else(|| memfd_copy(&m.map))?;
        Some(Readable {
            path: fd_path(&file),
            _file: Some(file),
        })
    }
}

/// A path to a module's bytes, and the descriptor that keeps it valid while it is used.
pub struct Readable {
    path: PathBuf,
    _file: Option<File>,
}

impl Readable {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

pub(crate) fn fd_path(f: &File) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()))
}

/// A hash of a file's first and last 64 KiB (ELF and program headers, section headers and
/// most symbol tables): what tells a rewrite of the same size from a `touch`.
fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    const PART: usize = 64 * 1024;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.get(..PART).unwrap_or(bytes).hash(&mut h);
    bytes
        .get(bytes.len().saturating_sub(PART)..)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

pub(crate) fn memfd_copy(bytes: &[u8]) -> Option<File> {
    use std::{io::Write, os::fd::FromRawFd};
    // SAFETY: a valid NUL-terminated name; the result is checked.
    let fd = unsafe { libc::memfd_create(c"profiler-module".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(bytes).ok()?;
    Some(f)
}

/// Why no way to a mapped file worked: which ways were refused with a permission error.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The path as the profiler sees it was refused (mode bits, a directory not searchable).
    path_denied: bool,
    /// The target's root (`/proc/PID/root`) was refused: ptrace access to another user.
    root_denied: bool,
    /// The path does not exist in the profiler's own mount namespace.
    path_absent: bool,
}

impl Refusal {
    /// The capability that would have opened the file, when a permission error stood in the
    /// way: CAP_DAC_READ_SEARCH for a file the profiler can see but not read,
    /// CAP_SYS_PTRACE for one only the target's root (another mount namespace) reaches.
    /// Only a capability missing from the effective set is named: with it present, the
    /// refusal came from elsewhere (a security policy) and the file counts as merely missed.
    pub fn capability(&self) -> Option<&'static str> {
        use super::privileges::{
            CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, effective_caps,
        };
        let has = |cap: u32| effective_caps() & (1u64 << cap) != 0;
        if self.path_denied && !has(CAP_DAC_READ_SEARCH) && !has(CAP_DAC_OVERRIDE) {
            Some("CAP_DAC_READ_SEARCH")
        } else if self.root_denied && self.path_absent && !has(CAP_SYS_PTRACE) {
            Some("CAP_SYS_PTRACE")
        } else {
            None
        }
    }
}

/// Opens a file a target named (a mapped path, a debug link beside it) for reading, only if
/// it is a regular file. It is looked at first through an O_PATH descriptor, which opens
/// nothing: a FIFO planted at that path would block a plain open forever (and the recording
/// with it), and a device's open runs its driver (`/dev/watchdog` arms the watchdog). The
/// file is then opened through that descriptor, so it is the inode that was looked at.
pub(crate) fn open_regular(path: impl AsRef<Path>) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)?;
    if !handle.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOCTTY)
        .open(fd_path(&handle))
}

fn is_denied(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

/// Opens a mapped file through the target's eyes: map_files is the mapping itself (deleted
/// files, other mount namespaces); a path, in the target's root or ours, must still be the
/// file the kernel mapped.
fn open_mapped(pid: u32, m: &Mapping) -> Result<File, Refusal> {
    let by_range = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
    if let Ok(f) = open_regular(by_range) {
        return Ok(f);
    }
    let path = m.path.strip_suffix(" (deleted)").unwrap_or(&m.path);
    let mut refusal = Refusal::default();
    for (in_root, p) in [
        (true, format!("/proc/{pid}/root{path}")),
        (false, path.to_string()),
    ] {
        match open_regular(&p) {
            Ok(f) if m.identity.is_none() || identity_of(&f) == m.identity => return Ok(f),
            Ok(_) => {}
            Err(e) if is_denied(&e) && in_root => refusal.root_denied = true,
            Err(e) if is_denied(&e) => refusal.path_denied = true,
            Err(e) if !in_root && e.kind() == std::io::ErrorKind::NotFound => {
                refusal.path_absent = true
            }
            Err(_) => {}
        }
    }
    Err(refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touch_is_not_a_rewrite_and_new_bytes_are() {
        let dir = std::env::temp_dir().join(format!("profiler-rewrite-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("scratch directory");
        let copy = dir.join("prog");
        let exe = std::env::current_exe().expect("own path");
        std::fs::copy(&exe, &copy).expect("copy");
        let path = copy.to_str().expect("utf-8");
        let mut store = ModuleStore::default();
        let id = store.intern_path(path).expect("opened");
        let m = store.get(id).expect("held");
        assert!(!m.build_id().is_empty(), "the test binary has a build id");
        assert!(!m.rewritten());
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&copy)
            .expect("open");
        file.set_modified(later).expect("touch");
        assert!(!m.rewritten(), "a new time over the same bytes");
        // In place, as `cp` does: truncated, then other bytes.
        std::fs::write(&copy, b"another program").expect("rewrite");
        assert!(m.rewritten());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn without_a_build_id_the_bytes_tell_a_touch_from_a_rewrite() {
        let dir = std::env::temp_dir().join(format!("profiler-rewrite-nb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("scratch directory");
        let path = dir.join("prog");
        std::fs::write(&path, vec![7u8; 200_000]).expect("write");
        let mut store = ModuleStore::default();
        let id = store
            .intern_path(path.to_str().expect("utf-8"))
            .expect("opened");
        let touch = |secs| {
            let later = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .expect("open");
            f.set_modified(later).expect("touch");
        };
        touch(5);
        assert!(!store.get(id).expect("held").rewritten(), "a touch");
        // The same size, other bytes in place (the file's end), another time.
        let mut bytes = vec![7u8; 200_000];
        bytes[199_999] = 8;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        std::os::unix::fs::FileExt::write_all_at(&f, &bytes[199_999..], 199_999).expect("write");
        drop(f);
        touch(10);
        assert!(store.get(id).expect("held").rewritten());
        // Mapped again, it is the file as it is now: a new module; the old id stays.
        let again = store
            .intern_path(path.to_str().expect("utf-8"))
            .expect("opened");
        assert_ne!(again, id);
        assert!(store.get(id).is_some() && !store.get(again).expect("held").rewritten());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A target can put a FIFO where its mapped file was: opening it must fail at once,
    /// not wait for a writer with the recording stuck behind it.
    #[test]
    fn a_fifo_or_device_at_a_mapped_path_is_refused_without_blocking() {
        let dir = std::env::temp_dir().join(format!("profiler-fifo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).expect("scratch directory");
        let fifo = dir.join("lib.so");
        let c = std::ffi::CString::new(fifo.to_str().expect("utf-8")).expect("no NUL");
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.to_str().expect("utf-8").to_string();
        std::thread::spawn(move || {
            let m = Mapping {
                // No such range in our map_files: the path is what is left to open.
                start: 0x1000,
                end: 0x2000,
                offset: 0,
                path,
                identity: None,
                module: None,
                since_ns: 0,
            };
            let _ = tx.send(open_mapped(std::process::id(), &m).is_err());
        });
        let refused = rx.recv_timeout(std::time::Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            refused,
            Ok(true),
            "the FIFO was opened, or the open blocked"
        );
        assert!(open_regular("/dev/null").is_err());
        assert!(open_regular("/proc/self/exe").is_ok());
    }

    fn own_exe_mapping() -> Mapping {
        let pid = std::process::id();
        let text = std::fs::read_to_string("/proc/self/maps").expect("maps");
        let here = own_exe_mapping as *const () as u64;
        let _ = pid;
        super::super::procfs::parse_maps(&text)
            .into_iter()
            .find(|m| m.start <= here && here < m.end)
            .expect("own code is mapped")
    }

    #[test]
    fn one_module_per_file_whatever_the_mapping() {
        let mut store = ModuleStore::default();
        let m = own_exe_mapping();
        let a = store.intern(std::process::id(), &m).expect("opens");
        let b = store.intern(std::process::id(), &m).expect("known");
        let c = store.intern_path("/proc/self/exe").expect("by path");
        assert_eq!((a, b), (a, c));
        assert_eq!(store.len(), 1);
        let module = store.get(a).expect("stored");
        assert!(module.has_symbols());
        let p = store.readable_path(a).expect("readable");
        assert!(std::fs::metadata(p.path()).is_ok());
    }

    #[test]
    fn a_path_that_is_now_another_file_is_refused() {
        let mut m = own_exe_mapping();
        // The kernel mapped some other inode: our own exe at that path must not stand in.
        m.identity = Some(FileIdentity { dev: 1, ino: 1 });
        m.start = 1;
        m.end = 2;
        let mut store = ModuleStore::default();
        assert_eq!(store.intern(0, &m), None);
        assert_eq!(store.missed.len(), 1);
    }

    #[test]
    fn a_replaced_module_still_reads_as_mapped() {
        let dir = std::env::temp_dir().join(format!("profiler-modules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("lib.so");
        std::fs::write(&path, b"first contents").expect("write");
        let mut store = ModuleStore::default();
        let id = store
            .intern_path(path.to_str().expect("utf-8"))
            .expect("opens");
        // Replaced the way a rebuild does: a new inode renamed over the old name.
        let tmp = dir.join("lib.so.new");
        std::fs::write(&tmp, b"second").expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        store.modules[id as usize].as_mut().expect("held").file = None;
        let p = store.readable_path(id).expect("readable");
        assert_eq!(std::fs::read(p.path()).expect("read"), b"first contents");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
