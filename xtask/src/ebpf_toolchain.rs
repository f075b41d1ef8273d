//! Which installed toolchain builds the eBPF crate: the nightly pinned in `ebpf-toolchain` at
//! the workspace root, by name (`nightly-2026-05-20`) or as a plain `nightly` whose rustc has
//! the pinned commit. Shared by xtask and profiler-user/build.rs (`#[path]`), so both accept
//! and refuse the same toolchains. Dependency-free: only `rustup` and `rustc -vV`.
#![allow(dead_code)]

use std::{path::Path, process::Command};

/// The pinned toolchain, as `ebpf-toolchain` states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub channel: String,
    pub commit_hash: String,
    pub commit_date: String,
}

/// Overrides the pin with any installed toolchain, to try another nightly on purpose.
pub const OVERRIDE_ENV: &str = "PROFILER_EBPF_TOOLCHAIN";

pub fn parse_pin(text: &str) -> Result<Pin, String> {
    let field = |key: &str| {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("ebpf-toolchain has no `{key} = …` line"))
    };
    Ok(Pin {
        channel: field("channel")?,
        commit_hash: field("commit-hash")?,
        commit_date: field("commit-date")?,
    })
}

pub fn read_pin(workspace_root: &Path) -> Result<Pin, String> {
    let path = workspace_root.join("ebpf-toolchain");
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_pin(&text)
}

/// `commit-hash` and `commit-date` of `rustc -vV` output.
pub fn rustc_commit(version: &str) -> (Option<&str>, Option<&str>) {
    let get = |key: &str| {
        version
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(str::trim)
    };
    (get("commit-hash:"), get("commit-date:"))
}

fn rustc_version(toolchain: &str) -> Option<String> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        // Never download a toolchain behind the user's back (rustup ≥ 1.28 may).
        .env("RUSTUP_AUTO_INSTALL", "0")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn installed_toolchains() -> Vec<String> {
    Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What to do with the toolchains installed: the one to use, or why none will do.
pub fn choose(
    pin: &Pin,
    installed: &[String],
    version_of: impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let matches = |v: &str| rustc_commit(v).0 == Some(pin.commit_hash.as_str());
    // `nightly-2026-05-20` or `nightly-2026-05-20-x86_64-unknown-linux-gnu`.
    if let Some(name) = installed
        .iter()
        .find(|t| **t == pin.channel || t.starts_with(&format!("{}-", pin.channel)))
    {
        return match version_of(name) {
            Some(v) if matches(&v) => Ok(pin.channel.clone()),
            _ => Err(format!(
                "toolchain {name} is installed but its rustc is not commit {}: reinstall it with `rustup toolchain install --force {} --component rust-src`",
                pin.commit_hash, pin.channel
            )),
        };
    }
    let nightly = version_of("nightly");
    match nightly.as_deref() {
        Some(v) if matches(v) => Ok("nightly".to_string()),
        Some(v) => {
            let (hash, date) = rustc_commit(v);
            Err(format!(
                "the eBPF programs are built with {} (rustc {}, {}), and `nightly` here is another one (rustc {}, {}): install the pinned one with `rustup toolchain install {} --profile minimal --component rust-src` (or set {OVERRIDE_ENV}=nightly to try it anyway)",
                pin.channel,
                &pin.commit_hash[..pin.commit_hash.len().min(9)],
                pin.commit_date,
                hash.map_or("?", |h| &h[..h.len().min(9)]),
                date.unwrap_or("?"),
                pin.channel
            ))
        }
        None => Err(format!(
            "no nightly toolchain: the eBPF programs are built with {}; install it with `rustup toolchain install {} --profile minimal --component rust-src`",
            pin.channel, pin.channel
        )),
    }
}

/// The toolchain to build the eBPF crate with on this machine.
pub fn resolve(workspace_root: &Path) -> Result<String, String> {
    if let Some(t) = std::env::var(OVERRIDE_ENV).ok().filter(|t| !t.is_empty()) {
        return Ok(t);
    }
    let pin = read_pin(workspace_root)?;
    choose(&pin, &installed_toolchains(), rustc_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a";

    fn pin() -> Pin {
        Pin {
            channel: "nightly-2026-05-20".into(),
            commit_hash: HASH.into(),
            commit_date: "2026-05-19".into(),
        }
    }

    fn version(hash: &str, date: &str) -> String {
        format!(
            "rustc 1.97.0-nightly\nbinary: rustc\ncommit-hash: {hash}\ncommit-date: {date}\nhost: x86_64-unknown-linux-gnu\n"
        )
    }

    #[test]
    fn the_checked_in_pin_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let p = read_pin(&root).expect("ebpf-toolchain");
        assert!(p.channel.starts_with("nightly-"), "{p:?}");
        assert_eq!(p.commit_hash.len(), 40);
        assert!(parse_pin("channel = x\n").is_err());
    }

    #[test]
    fn plain_nightly_of_the_pinned_commit_is_accepted() {
        let installed = vec![
            "stable-x86_64-unknown-linux-gnu".to_string(),
            "nightly-x86_64-unknown-linux-gnu".to_string(),
        ];
        let got = choose(&pin(), &installed, |_| Some(version(HASH, "2026-05-19")));
        assert_eq!(got.as_deref(), Ok("nightly"));
    }

    #[test]
    fn the_pinned_channel_is_preferred_and_checked() {
        let installed = vec![
            "nightly-x86_64-unknown-linux-gnu".to_string(),
            "nightly-2026-05-20-x86_64-unknown-linux-gnu".to_string(),
        ];
        let got = choose(&pin(), &installed, |t| {
            Some(if t.starts_with("nightly-2026") {
                version(HASH, "2026-05-19")
            } else {
                version("0000", "2027-01-01")
            })
        });
        assert_eq!(got.as_deref(), Ok("nightly-2026-05-20"));
        let got = choose(&pin(), &installed, |_| Some(version("0000", "2027-01-01")));
        assert!(got.is_err_and(|e| e.contains("--force nightly-2026-05-20")));
    }

    #[test]
    fn another_nightly_is_refused_with_the_install_command() {
        let installed = vec!["nightly-x86_64-unknown-linux-gnu".to_string()];
        let e = choose(&pin(), &installed, |_| {
            Some(version("1234567890abcdef", "2027-01-01"))
        })
        .expect_err("refused");
        assert!(
            e.contains("`nightly` here is another one (rustc 123456789, 2027-01-01)")
                && e.contains("rustup toolchain install nightly-2026-05-20 --profile minimal --component rust-src"),
            "{e}"
        );
        let e = choose(&pin(), &[], |_| None).expect_err("none");
        assert!(e.starts_with("no nightly toolchain"), "{e}");
    }
}
