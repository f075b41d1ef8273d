//! Secrets a root process reads from files: `serve --token-file`, and the agent's push
//! credentials. The file must be the one named (not a link another user planted), private
//! (mode 0600 or stricter) and owned by root or by us, so nobody else can read or swap it.
use std::{
    io::Read,
    os::unix::fs::{MetadataExt, OpenOptionsExt},
    path::Path,
};

use crate::error::{Error, Result};

/// The most a secret file may hold: tokens and passwords, not documents.
const MAX_BYTES: u64 = 4096;

/// The trimmed content of the secret file `path`, given with `flag`; every refusal names
/// the fix.
pub fn read(flag: &str, path: &Path) -> Result<Vec<u8>> {
    let bad = |why: String| Error::Startup(format!("{flag} {}: {why}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(bad(format!(
            "mode {:04o} lets other users read the secret: chmod 600 {}",
            meta.mode() & 0o7777,
            path.display()
        )));
    }
    // SAFETY: geteuid has no failure mode.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(bad(format!(
            "owned by uid {}, who could change the secret: chown root {}",
            meta.uid(),
            path.display()
        )));
    }
    let mut text = Vec::new();
    file.by_ref()
        .take(MAX_BYTES)
        .read_to_end(&mut text)
        .map_err(|e| bad(e.to_string()))?;
    Ok(text.trim_ascii().to_vec())
}

/// Standard base64 with padding (RFC 4648), for HTTP basic authentication.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn secret_files_must_be_private_regular_files() {
        let dir = std::env::temp_dir().join(format!("profiler-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("secret");
        std::fs::write(&file, "  user:pass \n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = read("--basic-auth-file", &file).expect_err("readable by others");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            read("--basic-auth-file", &file).expect("private"),
            b"user:pass"
        );
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&file, &link).expect("symlink");
        assert!(
            read("--basic-auth-file", &link).is_err(),
            "a link is refused"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
