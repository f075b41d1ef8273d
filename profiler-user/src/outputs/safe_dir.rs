//! Writing into a directory as root without being redirected.
//!
//! The profiler runs as root and its `--output` may lie in a directory other users can write
//! to (`/tmp`, a shared 1777 directory). Every path-based step (create, chown, rename, a write
//! test) would follow a link another user planted there, and root would then truncate, create
//! or chown a file of that user's choosing. So the directory is opened once, component by
//! component without following links, and every later step works on that descriptor: files
//! are created under random names with `O_CREAT|O_EXCL|O_NOFOLLOW`, chowned through their
//! descriptor and renamed into place with `renameat`, which replaces a planted link itself,
//! never what it points to.
use std::{
    ffi::{CStr, CString, OsStr},
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Component, Path, PathBuf},
};

/// Links a walk may pass through before it is taken for a loop (the kernel's own limit).
const MAX_LINKS: u32 = 40;

/// Users whose links and directories are trusted: root, whoever runs the profiler, and the
/// user who ran `sudo` (they could write there anyway).
#[derive(Clone, Copy, Debug)]
pub struct Trusted {
    pub euid: u32,
    pub sudo_uid: Option<u32>,
}

impl Trusted {
    pub fn current() -> Self {
        // SAFETY: geteuid has no failure mode.
        let euid = unsafe { libc::geteuid() };
        let sudo_uid = std::env::var("SUDO_UID").ok().and_then(|s| s.parse().ok());
        Self { euid, sudo_uid }
    }

    pub fn trusts(&self, uid: u32) -> bool {
        uid == 0 || uid == self.euid || Some(uid) == self.sudo_uid
    }
}

/// Why a directory could not be opened safely: a plain I/O error, or a refusal that needs
/// its own explanation.
#[derive(Debug)]
pub enum OpenError {
    Io(io::Error),
    /// A link on the way belongs to a user we do not trust.
    UntrustedLink {
        link: PathBuf,
        uid: u32,
    },
    /// The output directory belongs to a user we do not trust.
    UntrustedOwner {
        uid: u32,
    },
}

impl From<io::Error> for OpenError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

fn cstr(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn openat(
    dir: libc::c_int,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; on success the kernel hands us a new descriptor that
    // nothing else owns.
    let fd = check(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            libc::c_uint::from(mode),
        )
    })?;
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_dir_nofollow(dir: libc::c_int, name: &CStr) -> io::Result<OwnedFd> {
    openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

fn lstatat(dir: libc::c_int, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor, NUL-terminated name, and a stat buffer we own.
    check(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

pub fn fstat(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    // SAFETY: as in lstatat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and a stat buffer we own.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

fn readlinkat(dir: libc::c_int, name: &CStr) -> io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: the buffer is ours and its length is passed.
    let n = unsafe { libc::readlinkat(dir, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).map_err(|_| io::Error::last_os_error())?;
    buf.truncate(n);
    Ok(PathBuf::from(OsStr::from_bytes(&buf)))
}

pub fn fchown(fd: &impl AsRawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor we own.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// A directory created by the walk, to be removed again while still empty.
#[derive(Debug)]
pub struct Created {
    parent: OwnedFd,
    name: CString,
    /// Device and inode, to tell it from the directory a path ends in (`NEW/..` creates NEW
    /// and ends in its parent).
    id: (u64, u64),
}

impl Created {
    /// Whether `st` (an fstat) is this directory.
    pub fn is(&self, st: &libc::stat) -> bool {
        self.id == (st.st_dev, st.st_ino)
    }

    /// Removes the directory if it is still empty: never anything written into it.
    pub fn remove_if_empty(&self) {
        // SAFETY: valid descriptor and NUL-terminated name; failure (not empty) is fine.
        unsafe {
            libc::unlinkat(
                self.parent.as_raw_fd(),
                self.name.as_ptr(),
                libc::AT_REMOVEDIR,
            )
        };
    }
}

/// The result of opening a path: the directory, and what was created on the way (outermost
/// first).
pub struct Opened {
    pub dir: OwnedFd,
    pub created: Vec<Created>,
}

/// Opens (and with `create`, makes) the directory `path` without following any link a user we
/// do not trust could have planted. Links of trusted users (root's `/var/run`, a user's own
/// `~/data` link) are followed, their targets walked by the same rules.
pub fn open_dir(
    path: &Path,
    owner: Option<(u32, u32)>,
    make: bool,
    trusted: Trusted,
) -> Result<Opened, OpenError> {
    let mut created = Vec::new();
    let start = if path.is_absolute() { c"/" } else { c"." };
    let base = openat(libc::AT_FDCWD, start, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut links = 0;
    let dir = walk(base, path, make, owner, trusted, &mut links, &mut created)?;
    Ok(Opened { dir, created })
}

fn walk(
    mut dir: OwnedFd,
    path: &Path,
    make: bool,
    owner: Option<(u32, u32)>,
    trusted: Trusted,
    links: &mut u32,
    created: &mut Vec<Created>,
) -> Result<OwnedFd, OpenError> {
    let mut walked = PathBuf::new();
    for component in path.components() {
        let name = match component {
            Component::RootDir => {
                walked.push("/");
                dir = openat(libc::AT_FDCWD, c"/", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                continue;
            }
            Component::CurDir => continue,
            Component::Prefix(_) => return Err(io::Error::from(io::ErrorKind::InvalidInput).into()),
            Component::ParentDir => OsStr::new(".."),
            Component::Normal(n) => n,
        };
        walked.push(name);
        let c_name = cstr(name)?;
        dir = loop {
            match open_dir_nofollow(dir.as_raw_fd(), &c_name) {
                Ok(next) => break next,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && make => {
                    // SAFETY: valid descriptor and NUL-terminated name.
                    let made = unsafe { libc::mkdirat(dir.as_raw_fd(), c_name.as_ptr(), 0o755) };
                    match check(made) {
                        Ok(_) => {}
                        // Someone made it meanwhile: open whatever is there, by the same rules.
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => continue,
                        Err(e) => return Err(e.into()),
                    }
                    let next = open_dir_nofollow(dir.as_raw_fd(), &c_name)?;
                    // The directory may have been swapped between mkdirat and openat: only one
                    // we own and that is empty is ours to chown and to remove later.
                    let st = fstat(&next)?;
                    if st.st_uid == trusted.euid {
                        if let Some((uid, gid)) = owner {
                            fchown(&next, uid, gid)?;
                        }
                        created.push(Created {
                            parent: dir.try_clone()?,
                            name: c_name.clone(),
                            id: (st.st_dev, st.st_ino),
                        });
                    }
                    break next;
                }
                // ELOOP: the last component is a link. ENOTDIR: a link to a non-directory or a
                // plain file; lstat tells which.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    let st = lstatat(dir.as_raw_fd(), &c_name)?;
                    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                        return Err(e.into());
                    }
                    if !trusted.trusts(st.st_uid) {
                        return Err(OpenError::UntrustedLink {
                            link: walked,
                            uid: st.st_uid,
                        });
                    }
                    *links += 1;
                    if *links > MAX_LINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP).into());
                    }
                    let target = readlinkat(dir.as_raw_fd(), &c_name)?;
                    // A relative target is resolved from the directory holding the link.
                    break walk(
                        dir.try_clone()?,
                        &target,
                        false,
                        owner,
                        trusted,
                        links,
                        created,
                    )?;
                }
                Err(e) => return Err(e.into()),
            }
        };
    }
    Ok(dir)
}

/// 16 random hex digits for temporary names nobody can predict.
fn random_suffix() -> io::Result<String> {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is ours and its length is passed.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if usize::try_from(n).ok() != Some(bytes.len()) {
        return Err(io::Error::last_os_error());
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A new file under a random name in `dir`, created exclusively (never an existing file, never
/// through a link). Returns the file and its name.
pub fn create_temp(dir: &OwnedFd, stem: &str) -> io::Result<(File, CString)> {
    loop {
        let name = cstr(OsStr::new(&format!(".{stem}.{}.tmp", random_suffix()?)))?;
        match openat(
            dir.as_raw_fd(),
            &name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
            0o644,
        ) {
            Ok(fd) => return Ok((File::from(fd), name)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

pub fn unlink(dir: &OwnedFd, name: &CStr) {
    // SAFETY: valid descriptor and NUL-terminated name; a failure leaves a stray temp file.
    unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
}

/// Opens `name` in `dir` for reading, refusing a link in its place.
pub fn open_file_nofollow(dir: &OwnedFd, name: &str) -> io::Result<File> {
    let name = cstr(OsStr::new(name))?;
    openat(dir.as_raw_fd(), &name, libc::O_RDONLY | libc::O_NOFOLLOW, 0).map(File::from)
}

/// Removes `name` from `dir`: a link there is removed itself, never what it points to.
pub fn unlink_name(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let name = cstr(OsStr::new(name))?;
    // SAFETY: valid descriptor and NUL-terminated name.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(drop)
}

/// Renames `from` to `to` inside `dir`; an existing `to` (a link included) is replaced itself.
pub fn rename(dir: &OwnedFd, from: &CStr, to: &str) -> io::Result<()> {
    let to = cstr(OsStr::new(to))?;
    // SAFETY: valid descriptors and NUL-terminated names.
    check(unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("profiler-safedir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn me() -> Trusted {
        Trusted::current()
    }

    #[test]
    fn creates_missing_directories_and_removes_them_while_empty() {
        let base = scratch("create");
        let opened = open_dir(&base.join("a/b"), None, true, me())
            .map_err(|e| format!("{e:?}"))
            .expect("opens");
        assert!(base.join("a/b").is_dir());
        assert_eq!(opened.created.len(), 3);
        for c in opened.created.iter().rev() {
            c.remove_if_empty();
        }
        assert!(!base.exists());
    }

    #[test]
    fn follows_own_links_and_refuses_a_plain_file() {
        let base = scratch("links");
        std::fs::create_dir_all(base.join("real")).expect("mkdir");
        symlink("real", base.join("link")).expect("symlink");
        let opened = open_dir(&base.join("link/out"), None, true, me())
            .map_err(|e| format!("{e:?}"))
            .expect("own link");
        drop(opened);
        assert!(base.join("real/out").is_dir());
        std::fs::write(base.join("file"), b"").expect("file");
        assert!(open_dir(&base.join("file"), None, true, me()).is_err());
        assert!(open_dir(&base.join("file/sub"), None, true, me()).is_err());
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn refuses_links_of_untrusted_users() {
        let base = scratch("untrusted");
        std::fs::create_dir_all(base.join("real")).expect("mkdir");
        symlink("real", base.join("link")).expect("symlink");
        // As root the link is handed to nobody; otherwise we trust a uid that is not ours.
        // SAFETY: geteuid has no failure mode.
        let trusted = if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::lchown(base.join("link"), Some(65534), Some(65534)).expect("lchown");
            me()
        } else {
            Trusted {
                euid: u32::MAX - 1,
                sudo_uid: None,
            }
        };
        match open_dir(&base.join("link"), None, false, trusted) {
            Err(OpenError::UntrustedLink { link, uid }) => {
                assert!(link.ends_with("link"));
                assert_ne!(uid, 0);
            }
            other => panic!("followed an untrusted link: {:?}", other.map(|_| ())),
        }
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn temp_files_are_exclusive_and_renamed_over_links() {
        let base = scratch("temp");
        std::fs::create_dir_all(&base).expect("mkdir");
        let victim = base.join("victim");
        std::fs::write(&victim, b"keep").expect("victim");
        symlink(&victim, base.join("out.txt")).expect("planted link");
        let opened = open_dir(&base, None, false, me())
            .map_err(|e| format!("{e:?}"))
            .expect("opens");
        let (mut f, name) = create_temp(&opened.dir, "out.txt").expect("temp");
        io::Write::write_all(&mut f, b"new").expect("write");
        rename(&opened.dir, &name, "out.txt").expect("rename");
        assert_eq!(std::fs::read(&victim).ok().as_deref(), Some(&b"keep"[..]));
        assert_eq!(
            std::fs::read(base.join("out.txt")).ok().as_deref(),
            Some(&b"new"[..])
        );
        assert!(
            !std::fs::symlink_metadata(base.join("out.txt"))
                .expect("exists")
                .file_type()
                .is_symlink()
        );
        let _ = std::fs::remove_dir_all(&base);
    }
}
