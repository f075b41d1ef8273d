//! Checks the capabilities the profiler needs before it touches the kernel, so a missing one
//! is reported by name instead of as an EPERM from deep inside the loader.
use std::fs;

use crate::error::{Error, Result};

pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Effective capability set of this process, from /proc/self/status.
pub fn effective_caps() -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .unwrap_or(0)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// The capabilities missing from `caps` for loading and attaching the sampling programs.
/// CAP_SYS_ADMIN stands in for both on its own, as the kernel allows.
pub fn missing_for_sampling(caps: u64) -> Vec<&'static str> {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

pub fn check_sampling() -> Result<()> {
    let missing = missing_for_sampling(effective_caps());
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::MissingCapabilities {
            missing: missing.join(" and "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let status = "Name:\tbash\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
    }

    #[test]
    fn names_each_missing_capability() {
        assert_eq!(missing_for_sampling(0), ["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_for_sampling(1 << CAP_BPF), ["CAP_PERFMON"]);
        assert!(missing_for_sampling((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing_for_sampling(1 << CAP_SYS_ADMIN).is_empty());
    }
}
