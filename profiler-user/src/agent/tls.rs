//! TLS for `https://` and `otlp+https://` destinations: rustls on the ring provider, which
//! builds with a C compiler alone and links into the static musl binary of the sidecar image
//! (OpenSSL is a system library; aws-lc-rs needs cmake and builds for minutes). Server
//! certificates are verified against the system's trust store and `--ca-file`; nothing turns
//! verification off: a private CA is what `--ca-file` is for.
use std::{path::Path, sync::Arc};

use rustls::{
    CertificateError, ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};

/// Where distributions keep their bundle of trusted CAs, in the order tried: Debian, Ubuntu
/// and Alpine (ca-certificates), Fedora and RHEL, openSUSE, Arch. One bundle file rather than
/// the hashed files of /etc/ssl/certs: the bundle holds the same certificates in one read.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The certificates of a PEM file, or why there are none.
fn read_pem(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM ({e})"))?;
    if certs.is_empty() {
        return Err("no `BEGIN CERTIFICATE` in it".into());
    }
    Ok(certs)
}

/// The trust of https pushes: the system's CAs (those of `SSL_CERT_FILE` instead when set,
/// as OpenSSL reads it) and those of `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let system = match std::env::var_os("SSL_CERT_FILE") {
        // Set on purpose to narrow or replace the trust store: falling back to the system's
        // bundle when it cannot be read would trust more than was asked.
        Some(env) => Some(read_pem(Path::new(&env)).map_err(|e| {
            format!(
                "SSL_CERT_FILE={}: {e}; point it at a PEM bundle of CA certificates or unset it",
                Path::new(&env).display()
            )
        })?),
        None => SYSTEM_BUNDLES
            .iter()
            .find_map(|p| read_pem(Path::new(p)).ok()),
    };
    if let Some(certs) = system {
        roots.add_parsable_certificates(certs);
    }
    if let Some(path) = ca_file {
        let certs = read_pem(path).map_err(|e| {
            format!(
                "--ca-file {}: cannot read the CA certificate: {e}; pass the PEM file of the CA that signed the server's certificate",
                path.display()
            )
        })?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "--ca-file {}: no certificate in it could be parsed; pass the PEM file of the CA that signed the server's certificate",
                path.display()
            ));
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "https: no trusted CA certificates on this system (looked in {}); install ca-certificates, mount the host's /etc/ssl/certs, or pass --ca-file",
            SYSTEM_BUNDLES.join(", ")
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("https: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A failed TLS connection in one line, naming the fix where there is one. `None` when `e`
/// did not come from TLS.
pub fn explain(e: &std::io::Error, host: &str) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => format!(
                "certificate not trusted: pass --ca-file with the CA that signed {host}'s certificate ({tls})"
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the server's certificate is not for host name {host}: push to a name the certificate holds ({tls})"
                )
            }
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. } => format!(
                "the server's certificate is out of date, or this machine's clock is ({tls})"
            ),
            _ => format!("the server's certificate was refused ({tls})"),
        },
        rustls::Error::InvalidMessage(_) => format!(
            "TLS handshake failed: the server does not speak TLS here; push to http:// if it serves plain HTTP ({tls})"
        ),
        _ => format!("TLS handshake failed: {tls}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(e: rustls::Error) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }

    #[test]
    fn certificate_errors_name_their_fix() {
        let untrusted = wrap(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer,
        ));
        let m = explain(&untrusted, "pyro").expect("a TLS error");
        assert!(
            m.starts_with("certificate not trusted: pass --ca-file"),
            "{m}"
        );
        let wrong = wrap(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName,
        ));
        let m = explain(&wrong, "pyro").expect("a TLS error");
        assert!(m.contains("not for host name pyro"), "{m}");
        assert!(!m.contains('\n'));
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(explain(&plain, "pyro"), None);
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_an_error() {
        let e = client_config(Some(Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            e.starts_with("--ca-file /nonexistent/ca.pem: cannot read"),
            "{e}"
        );
        let dir = std::env::temp_dir().join(format!("profiler-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("empty.pem");
        std::fs::write(&file, "no certificate here\n").unwrap();
        let e = client_config(Some(&file)).unwrap_err();
        assert!(e.contains("no `BEGIN CERTIFICATE`"), "{e}");
        assert!(!e.contains('\n'));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
