//! `tbot proxy ssh`: the `ProxyCommand` of the generated `ssh_config`. It opens a relay to a
//! node through the cluster's SSH proxy with the destination's certificate and joins it to
//! the given reader and writer (stdin and stdout under ssh).

use std::path::Path;

use machine_id_client::{ClientIdentity, dial_proxy_ssh};
use machine_id_destination::{Destination as _, DirectoryDestination, SymlinkPolicy};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};

/// The relay's buffer per direction.
const RELAY_BUFFER: usize = 256 * 1024;

use crate::{BotError, Result};

/// `user@host:port` → `host:port` (ssh passes `%r@%h:%p`; the proxy needs no user).
pub fn ssh_target(target: &str) -> &str {
    target.rsplit_once('@').map_or(target, |(_, host)| host)
}

/// The client identity in the destination directory `dir`, read as one whole set through
/// the destination (generation marker checked, `symlinks` applied), never file by file.
fn destination_identity(dir: &Path, symlinks: SymlinkPolicy) -> Result<ClientIdentity> {
    let unusable = |e: &dyn std::fmt::Display| {
        BotError::Config(format!(
            "cannot use the destination {}: {e}; is tbot writing this destination (tbot start --destination-dir={})?",
            dir.display(),
            dir.display()
        ))
    };
    let set = DirectoryDestination::new(dir)
        .with_symlinks(symlinks)
        .read()
        .map_err(|e| unusable(&e))?
        .ok_or_else(|| unusable(&"it holds no certificates yet"))?;
    ClientIdentity::from_artifacts(&set, dir).map_err(|e| unusable(&e))
}

/// Relays `input` to the node `target` (`[user@]node[.cluster]:port`) through the proxy at
/// `proxy_addr`, and the node's bytes to `output`, with the identity in `destination_dir`
/// (its `key`, `tlscert`, `tlscacerts`, read as one set under the `symlinks` policy the
/// destination is written with). Returns when the node closes the connection; an end of
/// `input` is passed on as a half-close.
///
/// # Errors
///
/// The destination cannot be read, the proxy refuses (its reason is in the message), or it
/// cannot be reached.
pub async fn proxy_ssh<R, W>(
    destination_dir: &Path,
    symlinks: SymlinkPolicy,
    proxy_addr: &str,
    target: &str,
    mut input: R,
    mut output: W,
) -> Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let dir = destination_dir.to_path_buf();
    let identity = tokio::task::spawn_blocking(move || destination_identity(&dir, symlinks))
        .await
        .map_err(|e| BotError::Internal(format!("reading the destination: {e}")))??;
    let target = ssh_target(target);
    let stream = dial_proxy_ssh(proxy_addr, &identity, target).await?;
    tracing::debug!(proxy = proxy_addr, target, "proxy: relaying");
    let (from_node, mut to_node) = tokio::io::split(stream);
    let upstream = tokio::spawn(async move {
        // Large reads: each read of a tokio stdin is a hop to a blocking thread, and each
        // write to the TLS stream at least one record; 8 KiB chunks (tokio::io::copy's) cost
        // more than half the throughput of a bulk transfer.
        let mut input = BufReader::with_capacity(RELAY_BUFFER, &mut input);
        let copied = tokio::io::copy_buf(&mut input, &mut to_node).await;
        // End of input: half-close, so the node sees EOF and can still answer.
        let _ = to_node.shutdown().await;
        copied
    });
    let mut from_node = BufReader::with_capacity(RELAY_BUFFER, from_node);
    let down = tokio::io::copy_buf(&mut from_node, &mut output).await;
    let _ = output.flush().await;
    upstream.abort();
    match down {
        Ok(_) => Ok(()),
        Err(e) => Err(BotError::Internal(format!(
            "the relay to {target} through {proxy_addr} broke: {e}"
        ))),
    }
}

/// The pipe size asked for on the ProxyCommand's stdin and stdout.
const PIPE_SIZE: usize = 1 << 20;

/// Enlarges the process's stdin and stdout when they are pipes (as under ssh's ProxyCommand)
/// from the kernel's 64 KiB to 1 MiB, so bulk transfers wake `ssh` and this process a sixteenth
/// as often. Best effort: not a pipe, or over `/proc/sys/fs/pipe-max-size`, leaves it as is.
pub fn enlarge_stdio_pipes() {
    use std::os::fd::AsFd as _;
    for (name, result) in [
        (
            "stdin",
            rustix::pipe::fcntl_setpipe_size(std::io::stdin().as_fd(), PIPE_SIZE),
        ),
        (
            "stdout",
            rustix::pipe::fcntl_setpipe_size(std::io::stdout().as_fd(), PIPE_SIZE),
        ),
    ] {
        match result {
            Ok(size) => tracing::debug!(fd = name, size, "pipe enlarged"),
            Err(e) => tracing::debug!(fd = name, error = %e, "pipe size left as is"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_is_dropped() {
        assert_eq!(
            ssh_target("root@node.example.com:3022"),
            "node.example.com:3022"
        );
        assert_eq!(ssh_target("node:22"), "node:22");
        assert_eq!(ssh_target("a@b@node:22"), "node:22");
    }
}
