//! What a recording watches: a list of processes, every process of the profiler's PID
//! namespace (`--all`), or a cgroup v2 subtree (`--cgroup`, `--container`). Beyond a list of
//! pids the kernel decides membership itself (see `in_scope` in the eBPF programs); this
//! module resolves the user's words into what the kernel compares with, and lists the
//! processes already there when the recording begins.
use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// These processes (and, when following, what they start).
    Pids(Vec<u32>),
    /// Every process of the profiler's PID namespace.
    All,
    /// Every process in a cgroup v2 directory or below it.
    Cgroup(Cgroup),
    /// Every process whose command name matches (`--comm`), judged at the start and at each
    /// exec.
    Comm(Comm),
}

/// A regular expression on command names (`/proc/PID/comm`, at most 15 bytes).
#[derive(Clone, Debug)]
pub struct Comm {
    pub pattern: String,
    regex: regex_lite::Regex,
}

impl PartialEq for Comm {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for Comm {}

impl Comm {
    pub fn new(pattern: &str) -> Result<Self> {
        let regex = regex_lite::Regex::new(pattern).map_err(|e| Error::InvalidArgument {
            what: "--comm",
            reason: format!("{pattern:?} is not a regular expression: {e}"),
        })?;
        Ok(Self {
            pattern: pattern.to_string(),
            regex,
        })
    }

    pub fn matches(&self, comm: &str) -> bool {
        self.regex.is_match(comm)
    }

    /// Whether process `pid` has a matching name now; false for a process already gone.
    pub fn matches_pid(&self, pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|text| self.matches(text.trim_end_matches('\n')))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// The directory, e.g. /sys/fs/cgroup/unified/system.slice/db.service.
    pub dir: PathBuf,
    /// Its path below the cgroup v2 root, as /proc/PID/cgroup writes it ("/system.slice/…").
    pub relative: String,
    /// The kernel's id of the cgroup (the directory's inode in cgroup2fs).
    pub id: u64,
    /// Depth below the root: the ancestor level whose id the kernel compares.
    pub level: u32,
}

impl Scope {
    /// A short name for messages and the default output directory.
    pub fn name(&self) -> String {
        match self {
            Self::Pids(p) => p.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
            Self::All => "all".into(),
            Self::Comm(c) => format!("comm-{}", c.pattern),
            Self::Cgroup(c) => c
                .relative
                .rsplit('/')
                .find(|s| !s.is_empty())
                .unwrap_or("root")
                .to_string(),
        }
    }

    /// The processes in scope now, in pid order.
    pub fn current_pids(&self) -> Vec<u32> {
        match self {
            Self::Pids(p) => p.clone(),
            Self::All => super::procfs::pids(),
            Self::Comm(c) => {
                let me = std::process::id();
                super::procfs::pids()
                    .into_iter()
                    .filter(|&pid| pid != me && c.matches_pid(pid))
                    .collect()
            }
            Self::Cgroup(c) => super::procfs::pids()
                .into_iter()
                .filter(|&pid| {
                    let text =
                        std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
                    crate::model::Process::cgroup_from_proc(&text).is_some_and(|p| c.contains(&p))
                })
                .collect(),
        }
    }
}

impl Cgroup {
    /// `path`: a directory of the cgroup v2 hierarchy, absolute or relative to its root
    /// (`/sys/fs/cgroup` on pure v2 hosts, `/sys/fs/cgroup/unified` on hybrid ones).
    pub fn resolve(path: &str) -> Result<Self> {
        let root = cgroup2_root().ok_or_else(|| Error::InvalidArgument {
            what: "--cgroup",
            reason:
                "no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)"
                    .into(),
        })?;
        let given = Path::new(path);
        let dir = if given.is_absolute() && given.starts_with(&root) {
            given.to_path_buf()
        } else {
            root.join(path.trim_start_matches('/'))
        };
        let bad = |reason: String| Error::InvalidArgument {
            what: "--cgroup",
            reason,
        };
        let dir = dir
            .canonicalize()
            .map_err(|e| bad(format!("{}: {e}", dir.display())))?;
        let relative = dir
            .strip_prefix(&root)
            .map_err(|_| {
                bad(format!(
                    "{} is not in the cgroup v2 hierarchy at {}",
                    dir.display(),
                    root.display()
                ))
            })?
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::metadata(&dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
        if !meta.is_dir() || !dir.join("cgroup.procs").exists() {
            return Err(bad(format!("{} is not a cgroup directory", dir.display())));
        }
        let level = relative.split('/').filter(|s| !s.is_empty()).count() as u32;
        Ok(Self {
            relative: format!("/{relative}"),
            dir,
            id: meta.ino(),
            level,
        })
    }

    /// Whether a process whose /proc/PID/cgroup path is `path` is in this subtree.
    pub fn contains(&self, path: &str) -> bool {
        let root = self.relative.trim_end_matches('/');
        root.is_empty()
            || path == root
            || path
                .strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// The cgroup of a container, found by its id (or a prefix of at least 12 hex digits, as
/// `docker ps` prints it) in the cgroup paths of running processes: docker
/// (`docker-ID.scope`, `/docker/ID`), containerd and Kubernetes (`cri-containerd-ID.scope`),
/// CRI-O (`crio-ID.scope`), podman (`libpod-ID.scope`).
pub fn container(id: &str) -> Result<Cgroup> {
    let bad = |reason: String| Error::InvalidArgument {
        what: "--container",
        reason,
    };
    if id.len() < 12 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad(format!(
            "{id:?} is not a container id: give at least 12 hex digits of the id `docker ps` or `crictl ps` shows"
        )));
    }
    let id = id.to_ascii_lowercase();
    let found = super::procfs::pids().into_iter().find_map(|pid| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = crate::model::Process::cgroup_from_proc(&text)?;
        container_dir(&path, &id)
    });
    let dir = found.ok_or_else(|| {
        bad(format!(
            "no running process is in a container whose id starts with {id}"
        ))
    })?;
    Cgroup::resolve(&dir)
}

/// The part of a cgroup path up to the component naming a container whose id starts with
/// `id`, if one does (the layouts [`Process::container_id`] knows).
///
/// [`Process::container_id`]: crate::model::Process::container_id
fn container_dir(path: &str, id: &str) -> Option<String> {
    let mut dir = String::new();
    for part in path.split('/').filter(|s| !s.is_empty()) {
        dir.push('/');
        dir.push_str(part);
        if crate::model::Process::container_id(part).is_some_and(|found| found.starts_with(id)) {
            return Some(dir);
        }
    }
    None
}

/// Where the cgroup v2 hierarchy is mounted, from the profiler's own mount table.
fn cgroup2_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if right.split_whitespace().next() != Some("cgroup2") {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_found_in_every_runtime_layout() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        for (path, want) in [
            (
                format!("/system.slice/docker-{id}.scope"),
                format!("/system.slice/docker-{id}.scope"),
            ),
            (format!("/docker/{id}/sub"), format!("/docker/{id}")),
            (
                format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"),
                format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope"),
            ),
            (
                format!("/machine.slice/libpod-{id}.scope/container"),
                format!("/machine.slice/libpod-{id}.scope"),
            ),
            (format!("/crio-{id}.scope"), format!("/crio-{id}.scope")),
        ] {
            assert_eq!(container_dir(&path, &id[..12]), Some(want), "{path}");
        }
        assert_eq!(
            container_dir("/user.slice/session-3.scope", "0123456789ab"),
            None
        );
        assert_eq!(
            container_dir(&format!("/docker-{id}.scope"), "fedcba987654"),
            None
        );
        assert!(container("abc").is_err());
        assert!(container("not-hex-at-all!").is_err());
    }

    #[test]
    fn comm_patterns_match_names_and_bad_ones_are_refused() {
        let c = Comm::new("^(postgres|pgbench)$").expect("valid");
        assert!(c.matches("postgres"));
        assert!(!c.matches("postgres2"));
        assert!(Comm::new("(").is_err());
        // Our own name: the profiler itself never is in its scope.
        let me = std::fs::read_to_string("/proc/self/comm").expect("comm");
        let own = Comm::new(&format!("^{}$", me.trim())).expect("valid");
        assert!(own.matches_pid(std::process::id()));
        assert!(
            !Scope::Comm(own)
                .current_pids()
                .contains(&std::process::id())
        );
    }

    #[test]
    fn a_subtree_contains_its_descendants_only() {
        let c = Cgroup {
            dir: PathBuf::from("/sys/fs/cgroup/unified/a/b"),
            relative: "/a/b".into(),
            id: 1,
            level: 2,
        };
        assert!(c.contains("/a/b"));
        assert!(c.contains("/a/b/c"));
        assert!(!c.contains("/a/bc"));
        assert!(!c.contains("/a"));
        let root = Cgroup {
            relative: "/".into(),
            level: 0,
            ..c
        };
        assert!(root.contains("/anything"));
    }
}
