//! `profiler ps`: running processes whose executable or libraries carry the span probe ABI, so
//! users can find what to attach to.
use std::{collections::HashMap, fs, os::unix::fs::MetadataExt};

use profiler_common::abi;

use super::{procfs, spans::symbol_offsets};

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Instrumented {
    pub pid: u32,
    pub comm: String,
    pub command: Vec<String>,
    /// Mapped files that export the probe ABI.
    pub modules: Vec<String>,
}

/// Scans /proc. Processes that vanish or cannot be read meanwhile are skipped; each file is
/// inspected once however many processes map it.
pub fn find_instrumented() -> Vec<Instrumented> {
    let mut by_file: HashMap<(u64, u64), bool> = HashMap::new();
    let mut out = Vec::new();
    for pid in procfs::pids() {
        if pid == std::process::id() {
            continue;
        }
        let Ok(maps) = fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let mut modules = Vec::new();
        for m in procfs::parse_maps(&maps) {
            if !m.is_file() || modules.contains(&m.path) {
                continue;
            }
            // Through the target's root: right for containers, and for files replaced since.
            let path = format!("/proc/{pid}/root{}", m.path);
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            let has_abi = *by_file.entry((meta.dev(), meta.ino())).or_insert_with(|| {
                symbol_offsets(path.as_ref(), &[abi::SYM_BEGIN])
                    .is_ok_and(|found| found.first().is_some_and(Option::is_some))
            });
            if has_abi {
                modules.push(m.path);
            }
        }
        if modules.is_empty() {
            continue;
        }
        let Ok(info) = procfs::ProcessInfo::capture(pid) else {
            continue;
        };
        out.push(Instrumented {
            pid,
            comm: info.comm,
            command: info.command,
            modules,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn our_own_tests_are_not_instrumented() {
        let me = std::process::id();
        assert!(super::find_instrumented().iter().all(|p| p.pid != me));
    }
}
