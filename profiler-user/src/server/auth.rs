//! Who may talk to a root service: loopback without a token; any other address only with
//! `--token-file`, whose token every request then carries as `Authorization: Bearer`.
use std::{net::SocketAddr, path::Path};

use crate::error::{Error, Result};

/// Shorter tokens are refused: a network service's only secret must resist guessing.
const MIN_TOKEN_BYTES: usize = 16;

#[derive(Clone)]
pub struct Token(Vec<u8>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(…)")
    }
}

/// The token the server requires, if any; refuses to serve a non-loopback address without.
pub fn load_policy(listen: SocketAddr, token_file: Option<&Path>) -> Result<Option<Token>> {
    let Some(path) = token_file else {
        if !listen.ip().is_loopback() {
            return Err(Error::Startup(format!(
                "refusing to serve {listen} without a token: anyone who reaches it could profile this machine as root; give --token-file FILE (a secret of at least {MIN_TOKEN_BYTES} bytes, mode 0600) or listen on 127.0.0.1"
            )));
        }
        return Ok(None);
    };
    let bad = |why: String| Error::Startup(format!("--token-file {}: {why}", path.display()));
    let token = crate::secret::read("--token-file", path)?;
    if token.len() < MIN_TOKEN_BYTES || token.iter().any(|b| !b.is_ascii_graphic()) {
        return Err(bad(format!(
            "the token must be at least {MIN_TOKEN_BYTES} printable characters without spaces (e.g. head -c 32 /dev/urandom | base64 > FILE)"
        )));
    }
    Ok(Some(Token(token)))
}

impl Token {
    /// Whether an `Authorization` header value carries this token. The comparison takes the
    /// same time wherever the first difference is, so timing does not reveal the token.
    pub fn accepts(&self, header: Option<&[u8]>) -> bool {
        let Some(given) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        constant_time_eq(given.trim_ascii(), &self.0)
    }
}

/// Compares every byte of `expected` whatever `given` is; only the length of the secret
/// (which is no secret) shapes the time taken.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        let g = given.get(i).copied().unwrap_or(!e);
        diff |= std::hint::black_box(g ^ e);
    }
    diff == 0
}

/// Whether a `Host` header names this machine's loopback: what a browser sends to a
/// loopback server, and never what it sends to a page of another site, whatever that site's
/// DNS says (DNS rebinding).
pub fn loopback_host(host: Option<&[u8]>) -> bool {
    let Some(host) = host.and_then(|h| std::str::from_utf8(h).ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split_once(']').map(|(n, _)| n).unwrap_or(rest)
    } else {
        host.rsplit_once(':').map(|(n, _)| n).unwrap_or(host)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        let t = Token(b"0123456789abcdef".to_vec());
        assert!(t.accepts(Some(b"Bearer 0123456789abcdef")));
        assert!(!t.accepts(Some(b"Bearer 0123456789abcdeF")));
        assert!(!t.accepts(Some(b"Bearer 0123456789abcde")));
        assert!(!t.accepts(Some(b"Bearer 0123456789abcdef0")));
        assert!(!t.accepts(Some(b"Basic 0123456789abcdef")));
        assert!(!t.accepts(Some(b"Bearer ")));
        assert!(!t.accepts(None));
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1:7878",
            "localhost:1",
            "[::1]:80",
            "LOCALHOST",
            "127.0.0.2",
        ] {
            assert!(loopback_host(Some(ok.as_bytes())), "{ok}");
        }
        for bad in ["evil.example:7878", "10.0.0.1:7878", "", "[fe80::1]:80"] {
            assert!(!loopback_host(Some(bad.as_bytes())), "{bad}");
        }
        assert!(!loopback_host(None));
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let e = load_policy("0.0.0.0:7878".parse().unwrap(), None).unwrap_err();
        assert!(e.to_string().contains("--token-file"), "{e}");
        assert!(
            load_policy("127.0.0.1:7878".parse().unwrap(), None)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn token_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("profiler-token-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let f = dir.join("token");
        std::fs::write(&f, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let addr = "0.0.0.0:1".parse().unwrap();
        let e = load_policy(addr, Some(&f)).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_policy(addr, Some(&f)).unwrap().is_some());
        std::fs::write(&f, "short").unwrap();
        assert!(load_policy(addr, Some(&f)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
