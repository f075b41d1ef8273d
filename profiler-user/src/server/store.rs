//! Recordings on disk: `--data DIR/ID/`, each written as `profiler record --output DIR/ID`
//! writes it, plus `meta.json` (what was asked, how it went), which is what makes the list
//! survive a restart. Ids are 128 random bits in hex and checked before any path is made of
//! them; every file is opened relative to the data directory's descriptor without following
//! links (see outputs::safe_dir for why a root process must).
use std::{
    collections::HashSet,
    ffi::CString,
    fs::File,
    io::{self, Read},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use crate::{
    error::{Error, Result},
    outputs::{self, OutputDir, safe_dir},
};

pub const META_FILE: &str = "meta.json";

/// Files a client may fetch: the outputs, and the description of the recording.
pub const FILES: &[&str] = &[
    outputs::RECORDING_FILE,
    outputs::FOLDED_FILE,
    outputs::FLAMEGRAPH_FILE,
    outputs::SUMMARY_TXT_FILE,
    outputs::SUMMARY_JSON_FILE,
    outputs::PERFETTO_FILE,
    outputs::SPANS_JSON_FILE,
    outputs::SPANS_FOLDED_FILE,
    outputs::SPANS_FLAMEGRAPH_FILE,
    outputs::OFFCPU_FOLDED_FILE,
    outputs::OFFCPU_FLAMEGRAPH_FILE,
    outputs::WALL_FOLDED_FILE,
    outputs::WALL_FLAMEGRAPH_FILE,
    outputs::PPROF_FILE,
    outputs::OFFCPU_PPROF_FILE,
    META_FILE,
];

/// How a recording is doing, as the API shows it and `meta.json` keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Loading and attaching the probes.
    Starting,
    Recording,
    /// Resolving symbols and writing the outputs.
    Writing,
    Done,
    Failed,
}

impl Phase {
    pub fn finished(self) -> bool {
        matches!(self, Self::Done | Self::Failed)
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    pub id: String,
    pub state: Phase,
    /// What is recorded, as people say it ("pid 42", "cgroup /system.slice").
    pub scope: String,
    /// The command name of the process recorded, or the scope's.
    pub target: String,
    pub created_unix_ms: u64,
    pub seconds: f64,
    pub hz: u64,
    pub off_cpu: bool,
    pub spans: String,
    pub call_graph: String,
    pub elapsed_s: f64,
    pub samples: u64,
    pub lost: u64,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Outputs written, by name.
    #[serde(default)]
    pub files: Vec<String>,
}

/// `--retain`: finished recordings kept, by count or by total size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retain {
    Count(usize),
    Bytes(u64),
}

pub fn parse_retain(s: &str) -> std::result::Result<Retain, String> {
    let s = s.trim();
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[digits.len()..];
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: a count (100) or a size (500M, 2G)"))?;
    if n == 0 {
        return Err("0 would remove every recording as soon as it is written".into());
    }
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" => {
            return usize::try_from(n)
                .map(Retain::Count)
                .map_err(|e| e.to_string());
        }
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (K, M, G, T)")),
    };
    n.checked_mul(mult)
        .map(Retain::Bytes)
        .ok_or_else(|| format!("{s:?} is too large"))
}

pub struct Store {
    path: PathBuf,
    dir: OwnedFd,
    retain: Retain,
}

/// 128 random bits in hex: unguessable, and nothing but `[0-9a-f]` reaches a path.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; 16];
    let mut filled = 0;
    while filled < b.len() {
        let rest = &mut b[filled..];
        // SAFETY: the buffer is ours and its length is passed.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        match usize::try_from(n) {
            Ok(n) => filled += n,
            Err(_) => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(Error::io("getrandom for a recording id", e));
                }
            }
        }
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

pub fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn openat(dir: &impl AsRawFd, name: &str, flags: libc::c_int) -> io::Result<OwnedFd> {
    let name = cstr(name)?;
    // SAFETY: NUL-terminated name, valid descriptor; the result is checked.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Entry names of an open directory.
fn entries(dir: &impl AsRawFd) -> io::Result<Vec<String>> {
    // Our own descriptor through /proc/self/fd: the directory it was opened on, not a path
    // that could have been swapped since.
    let names = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    Ok(names)
}

impl Store {
    pub fn open(path: &Path, retain: Retain) -> Result<Self> {
        let err = |source| Error::OutputDir {
            path: path.to_path_buf(),
            source,
        };
        // Under sudo the recordings belong to the user who ran it, as `record`'s outputs do:
        // their directory too.
        let owner = outputs::sudo_owner();
        let opened = safe_dir::open_dir(path, owner, true, safe_dir::Trusted::current()).map_err(
            |e| match e {
                safe_dir::OpenError::Io(source) => err(source),
                safe_dir::OpenError::UntrustedLink { link, uid } => Error::OutputDirLink {
                    path: path.to_path_buf(),
                    link,
                    uid,
                },
                safe_dir::OpenError::UntrustedOwner { uid } => Error::OutputDirOwner {
                    path: path.to_path_buf(),
                    uid,
                },
            },
        )?;
        let st = safe_dir::fstat(&opened.dir).map_err(err)?;
        if !safe_dir::Trusted::current().trusts(st.st_uid) {
            return Err(Error::OutputDirOwner {
                path: path.to_path_buf(),
                uid: st.st_uid,
            });
        }
        // Profiles name other users' functions and command lines: for the server's eyes
        // only. A directory made now is closed to others; an existing one is never changed
        // (`--data /tmp`, or `--data /tmp/new/..`, must not lock everyone out of /tmp), but
        // refused if others can read it.
        if opened.created.iter().any(|c| c.is(&st)) {
            // SAFETY: plain syscall on a descriptor we own.
            if unsafe { libc::fchmod(opened.dir.as_raw_fd(), 0o700) } != 0 {
                return Err(err(io::Error::last_os_error()));
            }
        } else if st.st_mode & 0o077 != 0 {
            return Err(Error::Startup(format!(
                "--data {}: mode {:04o} lets other users read the recordings: chmod 700 {0}, or name a new directory",
                path.display(),
                st.st_mode & 0o7777
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            dir: opened.dir,
            retain,
        })
    }

    /// A new recording's directory, made as `record --output` makes its own.
    pub fn prepare(&self, id: &str) -> Result<OutputDir> {
        debug_assert!(valid_id(id));
        OutputDir::prepare(&self.path.join(id))
    }

    fn open_recording(&self, id: &str) -> io::Result<OwnedFd> {
        if !valid_id(id) {
            return Err(io::ErrorKind::NotFound.into());
        }
        openat(&self.dir, id, libc::O_RDONLY | libc::O_DIRECTORY)
    }

    /// One output of a recording, for reading; `name` must be one of [`FILES`].
    pub fn open_file(&self, id: &str, name: &str) -> io::Result<File> {
        if !FILES.contains(&name) {
            return Err(io::ErrorKind::NotFound.into());
        }
        let dir = self.open_recording(id)?;
        let fd = openat(&dir, name, libc::O_RDONLY)?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(io::ErrorKind::NotFound.into());
        }
        Ok(file)
    }

    pub fn read_file(&self, id: &str, name: &str, limit: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_file(id, name)?
            .take(limit)
            .read_to_end(&mut out)?;
        Ok(out)
    }

    pub fn read_meta(&self, id: &str) -> Option<Meta> {
        let bytes = self.read_file(id, META_FILE, 1 << 20).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn write_meta(dir: &OutputDir, meta: &Meta) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(meta)
            .map_err(|e| Error::Internal(format!("meta.json: {e}")))?;
        dir.write_bytes(META_FILE, &bytes).map(drop)
    }

    /// Every recording with a readable `meta.json`, newest first.
    pub fn list(&self) -> Vec<Meta> {
        let mut all: Vec<Meta> = entries(&self.dir)
            .unwrap_or_default()
            .iter()
            .filter(|n| valid_id(n))
            .filter_map(|id| self.read_meta(id))
            .collect();
        all.sort_by_key(|m| std::cmp::Reverse(m.created_unix_ms));
        all
    }

    /// Bytes of a recording's files.
    fn size(&self, id: &str) -> u64 {
        let Ok(dir) = self.open_recording(id) else {
            return 0;
        };
        entries(&dir)
            .unwrap_or_default()
            .iter()
            .filter_map(|n| {
                let name = cstr(n).ok()?;
                // SAFETY: an all-zero stat is valid to be overwritten.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: valid descriptor, NUL-terminated name, our buffer.
                let r = unsafe {
                    libc::fstatat(
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        &mut st,
                        libc::AT_SYMLINK_NOFOLLOW,
                    )
                };
                (r == 0).then(|| u64::try_from(st.st_size).unwrap_or(0))
            })
            .sum()
    }

    /// Removes a recording: its files (nothing below them: the server writes no
    /// subdirectory), then its directory.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        let dir = self.open_recording(id)?;
        for name in entries(&dir)? {
            let c = cstr(&name)?;
            // SAFETY: valid descriptor and NUL-terminated name; unlinkat never follows links.
            unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) };
        }
        let c = cstr(id)?;
        // SAFETY: as above.
        if unsafe { libc::unlinkat(self.dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Recordings a previous server left unfinished (it was killed): marked failed, so the
    /// list says what happened to them.
    pub fn close_interrupted(&self) {
        for mut meta in self.list() {
            if meta.state.finished() || !valid_id(&meta.id) {
                continue;
            }
            meta.state = Phase::Failed;
            meta.error = Some("the server stopped before this recording was written".into());
            if let Ok(dir) = self.prepare(&meta.id) {
                let _ = Self::write_meta(&dir, &meta);
            }
        }
    }

    /// Removes the oldest finished recordings beyond `--retain`; `active` ones are kept.
    pub fn enforce_retain(&self, active: &HashSet<String>) {
        let finished: Vec<Meta> = self
            .list()
            .into_iter()
            .filter(|m| m.state.finished() && !active.contains(&m.id))
            .collect();
        let mut kept_bytes = 0u64;
        for (i, m) in finished.iter().enumerate() {
            let keep = match self.retain {
                Retain::Count(n) => i < n,
                Retain::Bytes(max) => {
                    kept_bytes = kept_bytes.saturating_add(self.size(&m.id));
                    // The newest is always kept, whatever its size.
                    i == 0 || kept_bytes <= max
                }
            };
            if !keep {
                let _ = self.remove(&m.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_hex_and_checked() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert!(valid_id(&a) && valid_id(&b) && a != b);
        for bad in [
            "",
            "..",
            "../etc",
            &a[..31],
            &a.to_uppercase(),
            &format!("{a}/x"),
        ] {
            assert!(!valid_id(bad), "{bad}");
        }
    }

    #[test]
    fn retain_values() {
        assert_eq!(parse_retain("100"), Ok(Retain::Count(100)));
        assert_eq!(parse_retain("500M"), Ok(Retain::Bytes(500 << 20)));
        assert_eq!(parse_retain("2GiB"), Ok(Retain::Bytes(2 << 30)));
        for bad in ["0", "", "x", "5Q", "-1", "99999999999999999999T"] {
            assert!(parse_retain(bad).is_err(), "{bad}");
        }
    }

    /// `--data BASE/NEW/..` makes NEW but names BASE, which exists: BASE keeps its mode
    /// (made private, `--data /tmp/x/..` took /tmp from everyone and its sticky bit).
    #[test]
    fn a_path_ending_in_an_existing_directory_leaves_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("profiler-store-up-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let opened = Store::open(&base.join("new").join(".."), Retain::Count(2));
        // NEW/SUB/.. makes two and ends in the first: that one is the server's, made private.
        let made = Store::open(&base.join("made").join("sub").join(".."), Retain::Count(2));
        let made_mode = std::fs::metadata(base.join("made"))
            .map(|m| m.permissions().mode() & 0o777)
            .ok();
        let mode = std::fs::metadata(&base).unwrap().permissions().mode() & 0o7777;
        let _ = std::fs::remove_dir_all(&base);
        assert_eq!(mode, 0o1777, "the existing directory's mode changed");
        assert!(made.is_ok(), "{:?}", made.err());
        assert_eq!(made_mode, Some(0o700));
        // It is refused for letting others read it, as `--data BASE` is.
        assert!(opened.is_err());
    }

    #[test]
    fn files_outside_the_list_are_refused() {
        let path = std::env::temp_dir().join(format!("profiler-store-{}", std::process::id()));
        let store = Store::open(&path, Retain::Count(2)).unwrap();
        let id = new_id().unwrap();
        let dir = store.prepare(&id).unwrap();
        dir.write_bytes(outputs::FOLDED_FILE, b"a;b 1\n").unwrap();
        assert_eq!(
            store.read_file(&id, outputs::FOLDED_FILE, 100).unwrap(),
            b"a;b 1\n"
        );
        std::os::unix::fs::symlink(
            "/etc/passwd",
            path.join(&id).join(outputs::SUMMARY_TXT_FILE),
        )
        .unwrap();
        assert!(
            store
                .read_file(&id, outputs::SUMMARY_TXT_FILE, 100)
                .is_err()
        );
        for name in ["../../etc/passwd", "x", "", "."] {
            assert!(store.open_file(&id, name).is_err(), "{name}");
        }
        assert!(store.open_file("..", outputs::FOLDED_FILE).is_err());
        store.remove(&id).unwrap();
        assert!(!path.join(&id).exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "made private");
        // An existing directory others can read is refused, and left as it is.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = Store::open(&path, Retain::Count(2)).err().expect("refused");
        assert!(e.to_string().contains("chmod 700"), "{e}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let _ = std::fs::remove_dir_all(&path);
    }
}
