//! The SSH proxy route: a TLS connection that chose ALPN
//! [`PROXY_SSH_ALPN`](machine_id_types::PROXY_SSH_ALPN) names a node,
//! and, once the caller's certificate, locks and roles allow it, is joined byte for byte to
//! the node's sshd. The SSH session itself stays end to end between `ssh` and `sshd`; the
//! proxy only decides who may reach which node and relays.
//!
//! Wire format after the handshake: the client sends `TARGET\n` (at most
//! [`MAX_TARGET_LINE`] bytes; `TARGET` is `node[.cluster]:port`, `node` a node's name or id);
//! the proxy answers `OK\n` and relays, or `ERR message\n` and closes. Nothing reaches the
//! node before every check has passed, and every connection, allowed or refused, leaves an
//! audit event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use machine_id_types::{Node, event_types};
use serde_json::json;
use tokio::io::{
    AsyncBufReadExt as _, AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, BufReader,
};
use tokio::net::TcpStream;

use crate::core::{Caller, Core};
use crate::rbac;
use crate::state;

/// The longest target line a client may send.
pub const MAX_TARGET_LINE: usize = 1024;
/// How long a client has to send its target line.
const TARGET_TIMEOUT: Duration = Duration::from_secs(10);
/// How long dialing a node may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Relay buffer per direction.
const RELAY_BUFFER: usize = 64 * 1024;

/// Why a proxy connection was refused: the message goes to the client and the audit log.
struct Refusal {
    user: Option<String>,
    node: Option<String>,
    message: String,
}

impl Refusal {
    fn anonymous(message: String) -> Self {
        Self {
            user: None,
            node: None,
            message,
        }
    }
}

/// Serves one proxy connection: `stream` is the TLS stream (already handshaken), `peer_certs`
/// the client's verified chain, `remote` the client's address (for the log).
pub(crate) async fn serve<S>(
    core: Arc<Core>,
    stream: S,
    peer_certs: Option<Vec<rustls_pki_types::CertificateDer<'static>>>,
    remote: SocketAddr,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut stream = BufReader::new(stream);
    match open(&core, &mut stream, peer_certs.as_deref()).await {
        Ok((caller, node, mut upstream)) => {
            let user = caller.identity.username.clone();
            core.audit(
                event_types::PROXY_CONNECT,
                Some(&user),
                true,
                format!(
                    "{user} connected to node {} ({})",
                    node.spec.hostname, node.spec.addr
                ),
                json!({
                    "node": node.id(),
                    "hostname": node.spec.hostname,
                    "addr": node.spec.addr,
                    "remote": remote.to_string(),
                    "roles": caller.identity.roles,
                }),
            )
            .await;
            if stream.write_all(b"OK\n").await.is_err() || stream.flush().await.is_err() {
                return;
            }
            tracing::info!(user = %user, node = %node.spec.hostname, remote = %remote, "proxy: relaying");
            // Bytes the client sent after its target line (ssh speaks first only after OK,
            // but a client may pipeline) are still in the BufReader; copy_bidirectional reads
            // through it.
            let relay = tokio::io::copy_bidirectional_with_sizes(
                &mut stream,
                &mut upstream,
                RELAY_BUFFER,
                RELAY_BUFFER,
            );
            tokio::select! {
                r = relay => match r {
                    Ok((up, down)) => {
                        tracing::info!(user = %user, node = %node.spec.hostname, bytes_to_node = up, bytes_from_node = down, "proxy: session ended");
                    }
                    Err(e) => {
                        tracing::debug!(user = %user, node = %node.spec.hostname, error = %e, "proxy: relay ended with an error");
                    }
                },
                message = until_locked(&core, &caller) => {
                    // Dropping the relay closes both ends: the client's TLS stream and the
                    // node's TCP connection.
                    tracing::warn!(user = %user, node = %node.spec.hostname, reason = %message, "proxy: session ended by a lock");
                    core.audit(
                        event_types::PROXY_TERMINATED,
                        Some(&user),
                        false,
                        message,
                        json!({ "node": node.id(), "hostname": node.spec.hostname, "remote": remote.to_string() }),
                    )
                    .await;
                }
            }
        }
        Err(refusal) => {
            tracing::info!(user = ?refusal.user, node = ?refusal.node, remote = %remote, reason = %refusal.message, "proxy: refused");
            core.audit(
                event_types::PROXY_DENIED,
                refusal.user.as_deref(),
                false,
                refusal.message.clone(),
                json!({ "node": refusal.node, "remote": remote.to_string() }),
            )
            .await;
            let line = format!("ERR {}\n", one_line(&refusal.message));
            let _ = stream.write_all(line.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

/// Returns (with the lock's message) once a lock applies to `caller`; checks again at every
/// change of the locks in the store. Never returns while none applies.
async fn until_locked(core: &Core, caller: &Caller) -> String {
    let id = &caller.identity;
    let mut changes = core.lock_feed.subscribe();
    loop {
        if changes.changed().await.is_err() {
            // The feed is gone (the server is stopping): nothing more to check.
            return std::future::pending().await;
        }
        if id.is_admin() {
            continue;
        }
        let now = core.clock.now();
        match core
            .lock_for(&id.username, &id.roles, caller.issued, now)
            .await
        {
            Ok(Some(lock)) => return crate::core::lock_message(&id.username, &lock),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(user = %id.username, error = %e, "proxy: cannot read the locks for an open session");
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Reads the target, authenticates, resolves, authorizes and dials.
async fn open<S>(
    core: &Core,
    stream: &mut BufReader<S>,
    peer_certs: Option<&[rustls_pki_types::CertificateDer<'static>]>,
) -> Result<(Caller, Node, TcpStream), Refusal>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = read_target(stream).await.map_err(Refusal::anonymous)?;
    let caller = core
        .authenticate(peer_certs, "ProxySSH")
        .await
        .map_err(|e| Refusal::anonymous(e.to_string()))?;
    let user = caller.identity.username.clone();
    let refuse = |node: Option<String>, message: String| Refusal {
        user: Some(user.clone()),
        node,
        message,
    };
    let (host, _port) = split_target(&target).map_err(|m| refuse(None, m))?;
    let name = strip_cluster(host, &core.cluster_name);
    let node = resolve(core, name)
        .await
        .map_err(|m| refuse(Some(name.to_string()), m))?;
    if !rbac::node_allowed(
        caller.identity.is_admin(),
        &caller.roles,
        &node.metadata.labels,
    ) {
        let labels: Vec<String> = node
            .metadata
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        return Err(refuse(
            Some(node.spec.hostname.clone()),
            format!(
                "access denied: user {user:?} with roles [{}] may not reach node {:?} (labels {}); an administrator can allow it with node_labels in one of these roles",
                caller.identity.roles.join(", "),
                node.spec.hostname,
                if labels.is_empty() {
                    "none".to_string()
                } else {
                    labels.join(",")
                }
            ),
        ));
    }
    let upstream =
        match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&node.spec.addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                return Err(refuse(
                    Some(node.spec.hostname.clone()),
                    format!(
                        "node {:?} at {} is unreachable: {e}; is its sshd running?",
                        node.spec.hostname, node.spec.addr
                    ),
                ));
            }
            Err(_) => {
                return Err(refuse(
                    Some(node.spec.hostname.clone()),
                    format!(
                        "node {:?} at {} did not answer within {}s",
                        node.spec.hostname,
                        node.spec.addr,
                        DIAL_TIMEOUT.as_secs()
                    ),
                ));
            }
        };
    let _ = upstream.set_nodelay(true);
    Ok((caller, node, upstream))
}

/// Reads the `TARGET\n` line, bounded in size and time.
async fn read_target<S: AsyncRead + Unpin>(stream: &mut BufReader<S>) -> Result<String, String> {
    let mut line = Vec::with_capacity(128);
    let read = async {
        let mut limited = (&mut *stream).take(MAX_TARGET_LINE as u64 + 1);
        limited.read_until(b'\n', &mut line).await
    };
    match tokio::time::timeout(TARGET_TIMEOUT, read).await {
        Err(_) => return Err("no target sent within 10s".into()),
        Ok(Err(e)) => return Err(format!("reading the target: {e}")),
        Ok(Ok(_)) => {}
    }
    if line.last() != Some(&b'\n') {
        return Err(format!(
            "the target line is missing or longer than {MAX_TARGET_LINE} bytes; send node[.cluster]:port and a newline"
        ));
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| "the target is not UTF-8".to_string())
}

/// `host:port` (or `[v6]:port`) → (`host`, `port`).
fn split_target(target: &str) -> Result<(&str, u16), String> {
    let bad = || format!("bad target {target:?}: expected node[.cluster]:port");
    let (host, port) = if let Some(rest) = target.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        target.rsplit_once(':').ok_or_else(bad)?
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = port.parse().map_err(|_| bad())?;
    Ok((host, port))
}

/// `node.cluster` → `node` (only the cluster's own suffix is stripped).
fn strip_cluster<'a>(host: &'a str, cluster: &str) -> &'a str {
    host.strip_suffix(cluster)
        .and_then(|h| h.strip_suffix('.'))
        .filter(|h| !h.is_empty())
        .unwrap_or(host)
}

/// The node called `name`: its id, else its hostname (which must name one node only).
async fn resolve(core: &Core, name: &str) -> Result<Node, String> {
    let nodes = core
        .state
        .list::<Node>(state::NODES)
        .await
        .map_err(|e| format!("cannot read the node inventory: {e}"))?;
    if let Some((n, _)) = nodes.iter().find(|(n, _)| n.id() == name) {
        return Ok(n.clone());
    }
    let matches: Vec<&Node> = nodes
        .iter()
        .map(|(n, _)| n)
        .filter(|n| n.spec.hostname == name)
        .collect();
    match matches.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(format!(
            "unknown node {name:?} in cluster {:?}; `tsh ls` lists the nodes you may reach, `tctl nodes add` registers one",
            core.cluster_name
        )),
        many => Err(format!(
            "node name {name:?} is ambiguous: {} nodes carry it (ids {}); connect by id instead",
            many.len(),
            many.iter().map(|n| n.id()).collect::<Vec<_>>().join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn targets_split_and_lose_the_cluster_suffix() {
        assert_eq!(
            split_target("node-name.example.com:3022").unwrap(),
            ("node-name.example.com", 3022)
        );
        assert_eq!(split_target("[::1]:22").unwrap(), ("::1", 22));
        assert!(split_target("node").is_err());
        assert!(split_target(":22").is_err());
        assert!(split_target("node:port").is_err());
        assert_eq!(
            strip_cluster("node-name.example.com", "example.com"),
            "node-name"
        );
        assert_eq!(strip_cluster("node-name", "example.com"), "node-name");
        assert_eq!(strip_cluster("example.com", "example.com"), "example.com");
        assert_eq!(strip_cluster("a.other.com", "example.com"), "a.other.com");
    }

    #[tokio::test]
    async fn target_lines_are_bounded() {
        let mut ok = BufReader::new(&b"node:22\r\nrest"[..]);
        assert_eq!(read_target(&mut ok).await.unwrap(), "node:22");
        let long = vec![b'a'; MAX_TARGET_LINE + 10];
        let e = read_target(&mut BufReader::new(&long[..]))
            .await
            .unwrap_err();
        assert!(e.contains("longer than"), "{e}");
        let e = read_target(&mut BufReader::new(&b"node:22"[..]))
            .await
            .unwrap_err();
        assert!(e.contains("missing"), "{e}");
    }
}
