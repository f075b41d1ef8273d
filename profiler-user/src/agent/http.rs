//! Just enough HTTP/1.1 to POST a body and read the status: one request per connection
//! (`Connection: close`), so the response ends where the connection does and no chunked or
//! keep-alive handling is needed. Written here rather than taken from a crate: the pushes are
//! a few requests a minute, and hyper's client (with hyper-util and http-body-util) or ureq
//! (blocking, with its own TLS and URL stacks) would each add more code than this whole file
//! for nothing the agent uses. https is the same exchange inside a rustls stream (`tls`).
use std::time::Duration;

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// Where pushes go: `http://HOST[:PORT][/PATH]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// The URL's path without a trailing `/` (empty for none).
    pub base_path: String,
}

impl Endpoint {
    /// Whether requests stay on this machine (`localhost` or a loopback address).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Parses the part after the scheme; `scheme` is only for messages.
    pub fn parse(url: &str, rest: &str, default_port: u16) -> Result<Self, String> {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(format!(
                "{url}: expected http://HOST:PORT (no user or password)"
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            // An IPv6 address in brackets has colons of its own.
            Some((h, p)) if !p.contains(']') => {
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| format!("{url}: the port must be 1 to 65535"))?;
                (h, port)
            }
            _ => (authority, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{url}: no host"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
            base_path: path.trim_end_matches('/').to_string(),
        })
    }
}

/// Why a push did not go through; the request is retried later either way.
#[derive(Debug)]
pub enum PushError {
    /// Connecting, writing or reading failed, or took too long.
    Io(String),
    /// The server answered with this status.
    Status(u16, String),
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => f.write_str(e),
            Self::Status(code, body) if body.is_empty() => write!(f, "HTTP {code}"),
            Self::Status(code, body) => write!(f, "HTTP {code}: {body}"),
        }
    }
}

/// Responses are read up to this size: only the status and a short reason are used.
const MAX_RESPONSE: usize = 64 << 10;

/// What one request carries.
pub struct Payload<'a> {
    /// Extra header lines, each ending in CRLF (credentials, tenant).
    pub headers: &'a str,
    pub content_type: &'a str,
    pub body: &'a [u8],
}

/// POSTs `payload` to `target` (path and query) and succeeds on a 2xx answer; over TLS when
/// `tls` is given.
pub async fn post(
    ep: &Endpoint,
    tls: Option<&TlsConnector>,
    target: &str,
    payload: &Payload<'_>,
    timeout: Duration,
) -> Result<(), PushError> {
    match tokio::time::timeout(timeout, exchange(ep, tls, target, payload)).await {
        Ok(r) => r,
        Err(_) => Err(PushError::Io(format!(
            "no answer within {} s",
            timeout.as_secs()
        ))),
    }
}

fn io(what: &str, e: std::io::Error) -> PushError {
    PushError::Io(format!("{what}: {e}"))
}

async fn exchange(
    ep: &Endpoint,
    tls: Option<&TlsConnector>,
    target: &str,
    payload: &Payload<'_>,
) -> Result<(), PushError> {
    let stream = TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(|e| io(&format!("connecting to {}:{}", ep.host, ep.port), e))?;
    let Some(tls) = tls else {
        return talk(stream, ep, target, payload).await;
    };
    // The name the certificate must hold, sent as SNI too; an IP address is checked against
    // the certificate's IP addresses.
    let name = rustls::pki_types::ServerName::try_from(ep.host.clone()).map_err(|_| {
        PushError::Io(format!(
            "{} is not a host name TLS can check a certificate against",
            ep.host
        ))
    })?;
    let stream = tls.connect(name, stream).await.map_err(|e| {
        PushError::Io(
            super::tls::explain(&e, &ep.host)
                .unwrap_or_else(|| format!("TLS handshake with {}:{}: {e}", ep.host, ep.port)),
        )
    })?;
    talk(stream, ep, target, payload).await
}

/// The request and its answer on a connected stream, plain or TLS.
async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    ep: &Endpoint,
    target: &str,
    payload: &Payload<'_>,
) -> Result<(), PushError> {
    let Payload {
        headers,
        content_type,
        body,
    } = payload;
    let host = if ep.host.contains(':') {
        format!("[{}]:{}", ep.host, ep.port)
    } else {
        format!("{}:{}", ep.host, ep.port)
    };
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: profiler/{}\r\n{headers}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| io("sending", e))?;
    stream.write_all(body).await.map_err(|e| io("sending", e))?;
    stream.flush().await.map_err(|e| io("sending", e))?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(n) => n,
            // A TLS server that closes without close_notify after its answer: the answer
            // (its status is all that is used) is in.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => 0,
            Err(e) => return Err(io("reading the answer", e)),
        };
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        // A server that keeps the connection open despite `Connection: close` has still
        // answered once its Content-Length bytes are in.
        if response.len() >= MAX_RESPONSE || complete(&response) {
            break;
        }
    }
    let status = parse_status(&response)
        .ok_or_else(|| PushError::Io("the server's answer is not HTTP".into()))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(PushError::Status(status, reason_body(&response)))
    }
}

/// Whether `response` holds its head and as many body bytes as its Content-Length says.
fn complete(response: &[u8]) -> bool {
    let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| response.len() >= end.saturating_add(4).saturating_add(len))
}

/// The status code of `HTTP/1.x CODE REASON`.
fn parse_status(response: &[u8]) -> Option<u16> {
    let line = response.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// The start of the answer's body, on one line: servers put the reason of a refusal there.
fn reason_body(response: &[u8]) -> String {
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .and_then(|i| response.get(i + 4..))
        .unwrap_or(&[]);
    String::from_utf8_lossy(body)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect()
}

/// `%`-encodes everything but unreserved characters, for query values.
pub fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_and_without_port_and_path() {
        let e = Endpoint::parse("u", "localhost:4040", 80).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.base_path.as_str()),
            ("localhost", 4040, "")
        );
        let e = Endpoint::parse("u", "[::1]:4318/prefix/", 80).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.base_path.as_str()),
            ("::1", 4318, "/prefix")
        );
        let e = Endpoint::parse("u", "example.org", 80).unwrap();
        assert_eq!(e.port, 80);
        assert!(Endpoint::parse("u", "h:0", 80).is_err());
        assert!(Endpoint::parse("u", "h:99999", 80).is_err());
        assert!(Endpoint::parse("u", "user:pw@h:1", 80).is_err());
        assert!(Endpoint::parse("u", "", 80).is_err());
    }

    #[test]
    fn statuses_and_reasons_are_read_from_the_answer() {
        let r = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 9\r\n\r\nbad\n name";
        assert_eq!(parse_status(r), Some(400));
        assert_eq!(reason_body(r), "bad name");
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b""), None);
        assert!(complete(r));
        assert!(!complete(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc"
        ));
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n"));
        // Without a length the answer ends with the connection.
        assert!(!complete(b"HTTP/1.1 200 OK\r\n\r\n"));
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(encode_query("app{a=b,c=d}"), "app%7Ba%3Db%2Cc%3Dd%7D");
    }
}
