//! The client half of the SSH proxy route: dial the proxy with mutual TLS and ALPN
//! [`PROXY_SSH_ALPN`], name the target, and hand back the stream once the proxy said `OK`.

use std::sync::Arc;
use std::time::Duration;

use machine_id_types::{AUTH_SERVER_NAME, PROXY_SSH_ALPN};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::addrs::AuthAddrs;
use crate::error::{ClientError, Result};
use crate::failover::{self, Failed, Retry};
use crate::identity::ClientIdentity;

/// A relay to a node's sshd through the proxy: read and write it as the TCP connection to
/// the node. Bytes the proxy sent after its `OK` line are kept in the buffer.
pub type ProxyStream = BufReader<tokio_rustls::client::TlsStream<TcpStream>>;

/// How long dialing, the handshake and the proxy's answer may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(20);
/// The longest answer line the proxy sends.
const MAX_ANSWER: u64 = 4096;

/// Opens a relay to `target` (`node[.cluster]:port`) through the proxy at `proxy_addrs` (one
/// address, a comma-separated list, or an [`AuthAddrs`]), presenting `identity` and
/// verifying the proxy against the identity's CAs.
///
/// The proxies are tried in turn (from the one that answered last) while they cannot be
/// reached, with the same jittered backoff as the auth calls; nothing has been relayed
/// before the proxy's `OK`, so opening again is safe. A refusal ends the attempt at once.
///
/// # Errors
///
/// [`ClientError::ProxyRefused`] with the proxy's reason (unknown node, access denied by
/// labels, expired or foreign certificate, node down); [`ClientError::Unavailable`] when the
/// proxy cannot be reached ([`ClientError::AllUnavailable`] naming each, for a list);
/// [`ClientError::UntrustedServer`] when it is not the cluster's.
pub async fn dial_proxy_ssh(
    proxy_addrs: impl Into<AuthAddrs>,
    identity: &ClientIdentity,
    target: &str,
) -> Result<ProxyStream> {
    let addrs = proxy_addrs.into();
    if target.contains(['\n', '\r']) {
        return Err(ClientError::ProxyRefused {
            addr: addrs.to_string(),
            message: format!("bad target {target:?}: it holds a line break"),
        });
    }
    let start = addrs.preferred_index();
    failover::run(&addrs, start, Retry::Always, "proxy", |i, _| {
        let addr = addrs.as_slice().get(i).cloned().unwrap_or_default();
        async move {
            match dial_one(&addr, identity, target).await {
                Ok(s) => Ok(s),
                Err(e @ ClientError::Unavailable { .. }) => Err(Failed::Ambiguous(e)),
                Err(e) => Err(Failed::Final(e)),
            }
        }
    })
    .await
}

/// [`open`] on one proxy address, bounded by [`OPEN_TIMEOUT`].
async fn dial_one(
    proxy_addr: &str,
    identity: &ClientIdentity,
    target: &str,
) -> Result<ProxyStream> {
    match tokio::time::timeout(OPEN_TIMEOUT, open(proxy_addr, identity, target)).await {
        Ok(r) => r,
        Err(_) => Err(ClientError::Unavailable {
            addr: proxy_addr.to_string(),
            message: format!(
                "the proxy did not answer within {}s",
                OPEN_TIMEOUT.as_secs()
            ),
        }),
    }
}

async fn open(proxy_addr: &str, identity: &ClientIdentity, target: &str) -> Result<ProxyStream> {
    let unavailable = |message: String| ClientError::Unavailable {
        addr: proxy_addr.to_string(),
        message,
    };
    let mut config = (*crate::tls::identity_config(identity)?).clone();
    config.alpn_protocols = vec![PROXY_SSH_ALPN.as_bytes().to_vec()];
    let tcp = TcpStream::connect(proxy_addr)
        .await
        .map_err(|e| unavailable(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(AUTH_SERVER_NAME)
        .map_err(|e| ClientError::TlsConfig(e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| handshake_error(proxy_addr, &e))?;
    if tls.get_ref().1.alpn_protocol() != Some(PROXY_SSH_ALPN.as_bytes()) {
        return Err(not_a_proxy(proxy_addr));
    }
    let mut stream = BufReader::new(tls);
    stream
        .get_mut()
        .write_all(format!("{target}\n").as_bytes())
        .await
        .map_err(|e| unavailable(format!("sending the target: {e}")))?;
    stream
        .get_mut()
        .flush()
        .await
        .map_err(|e| unavailable(format!("sending the target: {e}")))?;
    let mut line = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER)
        .read_until(b'\n', &mut line)
        .await
        // Under TLS 1.3 the server judges the client certificate after the client's side of
        // the handshake is done, so its refusal arrives here, as an alert.
        .map_err(|e| match handshake_error(proxy_addr, &e) {
            refused @ ClientError::ProxyRefused { .. } => refused,
            _ => unavailable(format!("reading the proxy's answer: {e}")),
        })?;
    let text = String::from_utf8_lossy(&line);
    let text = text.trim_end();
    if text == "OK" {
        return Ok(stream);
    }
    let message = match text.strip_prefix("ERR ") {
        Some(m) => m.to_string(),
        None if text.is_empty() => "the proxy closed the connection without an answer".into(),
        None => format!("unexpected answer {text:?}"),
    };
    Err(ClientError::ProxyRefused {
        addr: proxy_addr.to_string(),
        message,
    })
}

fn not_a_proxy(addr: &str) -> ClientError {
    ClientError::ProxyRefused {
        addr: addr.to_string(),
        message: "this server does not run the SSH proxy (started with --no-proxy, or proxy_service.enabled: false)".into(),
    }
}

fn handshake_error(addr: &str, e: &std::io::Error) -> ClientError {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)) => {
            not_a_proxy(addr)
        }
        Some(rustls::Error::AlertReceived(
            alert @ (rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::CertificateUnknown
            | rustls::AlertDescription::CertificateExpired),
        )) => ClientError::ProxyRefused {
            addr: addr.to_string(),
            message: format!(
                "it did not accept this identity's certificate (TLS alert {alert:?}): it is not issued by this cluster's CA; use the destination of a tbot of this cluster"
            ),
        },
        Some(rustls::Error::InvalidCertificate(_)) => ClientError::UntrustedServer {
            addr: addr.to_string(),
            message: "its certificate is not signed by this identity's cluster CA".into(),
        },
        _ => ClientError::Unavailable {
            addr: addr.to_string(),
            message: format!("TLS handshake failed: {e}"),
        },
    }
}
