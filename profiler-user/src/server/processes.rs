//! `/api/processes`: what could be profiled, as `profiler ps --json` sees it plus who runs
//! each process and where (cgroup, container), and whether it carries the span probe ABI.
use std::collections::{HashMap, HashSet};

use crate::collect::{procfs, ps};

#[derive(Debug, serde::Serialize)]
pub struct Process {
    pub pid: u32,
    pub comm: String,
    pub command: Vec<String>,
    pub uid: Option<u32>,
    pub user: String,
    /// cgroup v2 path; empty when unknown.
    pub cgroup: String,
    /// A container id found in the cgroup path (docker, containerd, CRI-O, podman).
    pub container: Option<String>,
    /// Carries the span probe ABI (profiler-probes): spans are recorded.
    pub probes: bool,
    pub kernel_thread: bool,
}

/// Every process of the server's PID namespace but the server itself. Reads /proc and the
/// symbol tables of mapped files: run off the request thread.
pub fn list() -> Vec<Process> {
    let users = users();
    let probed: HashSet<u32> = ps::find_instrumented().iter().map(|p| p.pid).collect();
    let me = std::process::id();
    procfs::pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let info = procfs::ProcessInfo::capture(pid).ok()?;
            let uid = uid_of(pid);
            Some(Process {
                pid,
                user: uid
                    .and_then(|u| users.get(&u).cloned())
                    .or_else(|| uid.map(|u| u.to_string()))
                    .unwrap_or_default(),
                uid,
                container: container_id(&info.cgroup),
                comm: info.comm,
                command: info.command,
                cgroup: info.cgroup,
                probes: probed.contains(&pid),
                kernel_thread: info.kernel_thread,
            })
        })
        .collect()
}

fn uid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// uid → name from /etc/passwd; names of other sources (LDAP) show as numbers.
fn users() -> HashMap<u32, String> {
    std::fs::read_to_string("/etc/passwd")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            Some((uid, name.to_string()))
        })
        .collect()
}

/// The 64-hex-digit id container runtimes put in their cgroup names.
fn container_id(cgroup: &str) -> Option<String> {
    cgroup
        .split(|c: char| !c.is_ascii_hexdigit())
        .find(|run| run.len() == 64)
        .map(String::from)
}

#[cfg(test)]
mod tests {
    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "a".repeat(64);
        assert_eq!(
            super::container_id(&format!("/system.slice/docker-{id}.scope")),
            Some(id.clone())
        );
        assert_eq!(
            super::container_id(&format!(
                "/kubepods/burstable/pod1/cri-containerd-{id}.scope"
            )),
            Some(id)
        );
        assert_eq!(super::container_id("/user.slice/user-1000.slice"), None);
    }

    #[test]
    fn lists_this_machine_without_the_server() {
        let all = super::list();
        assert!(all.iter().all(|p| p.pid != std::process::id()));
        assert!(all.iter().any(|p| p.pid == 1));
    }
}
