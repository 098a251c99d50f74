//! The small HTTP/1.1 client both halves need: the server forwards to STS, the bot asks the
//! container credentials endpoint and the EC2 instance metadata service. One connection per
//! request, a connect timeout, a timeout on the whole exchange and a bounded body; TLS with
//! rustls (ring provider only) and the web PKI roots.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::iam::Scheme;

/// An absolute `http(s)://host[:port][/path][?query]` URL, split the way the clients need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub(crate) scheme: Scheme,
    /// The host as written, lowercase; IPv6 addresses keep their brackets.
    pub(crate) host: String,
    /// The port if the URL names one.
    pub(crate) port: Option<u16>,
    /// Path and query (`/` when empty).
    pub(crate) path: String,
}

impl Url {
    /// Parses an absolute URL. Refuses user info, fragments and anything that is not plain
    /// `http`/`https`; the error says what is wrong (without repeating the URL).
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        if url.chars().any(|c| c.is_control() || c == ' ') {
            return Err("it contains spaces or control characters".into());
        }
        let (scheme, rest) = match url.split_once("://") {
            Some((s, rest)) if s.eq_ignore_ascii_case("https") => (Scheme::Https, rest),
            Some((s, rest)) if s.eq_ignore_ascii_case("http") => (Scheme::Http, rest),
            Some((s, _)) => return Err(format!("scheme {s:?} is not http or https")),
            None => return Err("it does not start with http:// or https://".into()),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if path.contains('#') {
            return Err("it has a fragment (#...)".into());
        }
        if authority.contains('@') {
            return Err("it has user info (user@host)".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some((addr, after)) = v6.split_once(']') else {
                return Err("its IPv6 address has no closing ]".into());
            };
            if addr.is_empty()
                || !addr
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            {
                return Err(format!("{addr:?} is not an IPv6 address"));
            }
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or("junk after the IPv6 address")?),
            };
            (format!("[{}]", addr.to_ascii_lowercase()), port)
        } else {
            let (h, p) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if h.is_empty() {
                return Err("it has no host".into());
            }
            if !h
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
            {
                return Err(format!("host {h:?} has characters a host name cannot have"));
            }
            (h.to_ascii_lowercase(), p)
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return Err(format!("port {p:?} is not a number from 1 to 65535")),
            },
        };
        let path = if path.is_empty() {
            "/".to_string()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_string()
        };
        Ok(Self {
            scheme,
            host,
            port,
            path,
        })
    }

    /// The port to connect to.
    pub(crate) fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(default_port(self.scheme))
    }

    /// `host[:port]`, the port only when it is not the scheme's default: the `Host` header.
    pub(crate) fn authority(&self) -> String {
        match self.port {
            Some(p) if p != default_port(self.scheme) => format!("{}:{p}", self.host),
            _ => self.host.clone(),
        }
    }

    /// The host to connect to and to name in TLS (no IPv6 brackets).
    pub(crate) fn connect_host(&self) -> &str {
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&self.host)
    }

    /// Whether the host is a loopback address or `localhost`.
    pub(crate) fn is_loopback(&self) -> bool {
        let h = self.connect_host();
        h == "localhost"
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

fn default_port(scheme: Scheme) -> u16 {
    match scheme {
        Scheme::Http => 80,
        Scheme::Https => 443,
    }
}

/// Time and size bounds of one exchange.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// For the TCP connection (and TLS handshake).
    pub(crate) connect: Duration,
    /// For everything, connection included.
    pub(crate) total: Duration,
    /// The largest response body read.
    pub(crate) max_body: usize,
}

/// One request: where, what, and the headers exactly as they go on the wire.
#[derive(Debug)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    pub(crate) url: &'a Url,
    pub(crate) headers: &'a [(String, String)],
    pub(crate) body: Vec<u8>,
}

/// A response whose body was read whole (within the limit).
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// Why an exchange failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HttpError {
    /// Nothing complete within `Limits::total`.
    Timeout,
    /// No connection (refused, DNS, connect timeout, TLS handshake).
    Connect(String),
    /// The body is larger than `Limits::max_body`; the rest was not read.
    TooLarge,
    /// The peer broke HTTP (closed early, malformed response) or the request was unsendable.
    Protocol(String),
}

/// Sends `req` on a new connection and reads the response within `limits`.
pub(crate) async fn send(req: Request<'_>, limits: Limits) -> Result<Response, HttpError> {
    match tokio::time::timeout(limits.total, exchange(req, limits)).await {
        Ok(r) => r,
        Err(_) => Err(HttpError::Timeout),
    }
}

async fn exchange(req: Request<'_>, limits: Limits) -> Result<Response, HttpError> {
    let host = req.url.connect_host();
    let port = req.url.port_or_default();
    let tcp = match tokio::time::timeout(limits.connect, TcpStream::connect((host, port))).await {
        Err(_) => {
            return Err(HttpError::Connect(format!(
                "no connection within {:?}",
                limits.connect
            )));
        }
        Ok(Err(e)) => return Err(HttpError::Connect(e.to_string())),
        Ok(Ok(s)) => s,
    };
    // Small request, small answer: do not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    match req.url.scheme {
        Scheme::Http => over(TokioIo::new(tcp), req, limits).await,
        Scheme::Https => {
            let config = tls_config().map_err(HttpError::Connect)?;
            let name = ServerName::try_from(host.to_string()).map_err(|e| {
                HttpError::Connect(format!("{host:?} is not a TLS server name: {e}"))
            })?;
            let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
            let tls = match tokio::time::timeout(limits.connect, handshake).await {
                Err(_) => {
                    return Err(HttpError::Connect(format!(
                        "no TLS handshake within {:?}",
                        limits.connect
                    )));
                }
                Ok(Err(e)) => return Err(HttpError::Connect(format!("TLS handshake failed: {e}"))),
                Ok(Ok(s)) => s,
            };
            over(TokioIo::new(tls), req, limits).await
        }
    }
}

async fn over<IO>(io: TokioIo<IO>, req: Request<'_>, limits: Limits) -> Result<Response, HttpError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Full<Bytes>>(io)
        .await
        .map_err(|e| HttpError::Protocol(e.to_string()))?;
    let mut builder = http::Request::builder()
        .method(req.method)
        .uri(req.url.path.as_str());
    for (name, value) in req.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::from(req.body)))
        .map_err(|e| HttpError::Protocol(format!("the request cannot be sent: {e}")))?;
    let max = limits.max_body;
    let exchange = async move {
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| HttpError::Protocol(e.to_string()))?;
        let status = resp.status().as_u16();
        let declared = resp
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(HttpError::TooLarge);
        }
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| HttpError::Protocol(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > max {
                    return Err(HttpError::TooLarge);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(Response { status, body: buf })
    };
    // Drive the connection and the exchange together, without a spawned task that could
    // outlive the timeout: dropping both closes the socket.
    tokio::pin!(exchange);
    tokio::pin!(conn);
    let mut conn_done = false;
    loop {
        tokio::select! {
            r = &mut exchange => return r,
            c = &mut conn, if !conn_done => {
                conn_done = true;
                if let Err(e) = c {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
            }
        }
    }
}

/// The client TLS configuration: ring only, web PKI roots. Built once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            rustls::ClientConfig::builder_with_provider(
                rustls::crypto::ring::default_provider().into(),
            )
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
            .map_err(|e| format!("cannot build the TLS client configuration: {e}"))
        })
        .clone()
}

/// `s` without control characters, at most `max` characters (`...` marks a cut): safe to put
/// in an error message or a log line whatever a peer sent.
pub(crate) fn sanitize(s: &str, max: usize) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push_str("...");
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("HTTPS://STS.Amazonaws.com").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.path.as_str()),
            (Scheme::Https, "sts.amazonaws.com", None, "/")
        );
        assert_eq!(u.authority(), "sts.amazonaws.com");
        let u = Url::parse("http://127.0.0.1:5000/a/b?x=1").unwrap();
        assert_eq!(
            (u.authority().as_str(), u.path.as_str()),
            ("127.0.0.1:5000", "/a/b?x=1")
        );
        assert!(u.is_loopback());
        let u = Url::parse("http://[::1]:80/x").unwrap();
        assert_eq!((u.authority().as_str(), u.connect_host()), ("[::1]", "::1"));
        assert!(u.is_loopback());
        assert_eq!(Url::parse("https://h:443").unwrap().authority(), "h");
        for bad in [
            "sts.amazonaws.com",
            "ftp://h",
            "https://",
            "https://u:p@h",
            "https://h/#f",
            "https://h:0",
            "https://h:99999",
            "https://h:+1",
            "https://h x",
            "https://[::1",
            "https://[zz]",
            "https://h\n",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sanitize_cuts_and_cleans() {
        assert_eq!(sanitize("a\nb", 10), "a b");
        assert_eq!(sanitize("abcdef", 3), "abc...");
        assert_eq!(sanitize("ééé", 2), "éé...");
    }
}
