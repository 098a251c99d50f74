//! `tctl auth`: export a CA (`export`: every trusted key, so during a rotation both), have
//! the host CA sign a host key made here (`sign`, written atomically through
//! `machine_id_destination::write_private_file`), and rotate CAs (`rotate`, in
//! [`super::rotate`]).

use super::parse_ttl;
use crate::AuthCommand;
use crate::output::print;
use anyhow::{Context, Result, bail};
use machine_id_client::Client;
use machine_id_types::ca_kind;
use std::path::Path;
use std::time::Duration;

/// The longest host certificate the auth server signs (one year); a longer `--ttl` would be
/// cut silently, so it is refused here.
const MAX_HOST_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Runs one `tctl auth` command.
pub(super) async fn run(client: &Client, cmd: AuthCommand) -> Result<()> {
    match cmd {
        AuthCommand::Export { kind } => export(client, &kind).await,
        AuthCommand::Sign {
            host,
            format,
            out,
            ttl,
        } => sign(client, &host, &format, &out, &ttl).await,
        AuthCommand::Rotate(args) => {
            let plan = super::rotate::check(&args).map_err(|e| anyhow::anyhow!(e.message))?;
            super::rotate::rotate(client, plan).await
        }
    }
}

async fn export(client: &Client, kind: &str) -> Result<()> {
    match kind {
        ca_kind::USER => {
            let ca = client.export_ca(ca_kind::USER).await?;
            let mut out = String::new();
            for line in &ca.ssh_public_keys {
                out.push_str(line.trim());
                out.push('\n');
            }
            print(&out)
        }
        ca_kind::HOST => {
            let cluster = client.ping().await?.cluster_name;
            let ca = client.export_ca(ca_kind::HOST).await?;
            let mut out = String::new();
            for line in &ca.ssh_public_keys {
                out.push_str(&format!(
                    "@cert-authority *.{cluster},{cluster} {} type=host\n",
                    line.trim()
                ));
            }
            print(&out)
        }
        ca_kind::TLS => {
            let ca = client.export_ca(ca_kind::TLS).await?;
            let out: String = ca
                .tls_certs
                .iter()
                .map(|d| machine_id_mint::cert_der_to_pem(d))
                .collect();
            print(&out)
        }
        other => {
            bail!("unknown CA type {other:?}; expected --type=user, --type=host or --type=tls")
        }
    }
}

/// Writes `contents` to `path` atomically (the old file stays whole if anything fails), then
/// gives it `mode`; a private file is never readable by others, not even for a moment.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    machine_id_destination::write_private_file(path, contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    if mode != 0o600 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    Ok(())
}

fn with_suffix(prefix: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    s.into()
}

async fn sign(
    client: &Client,
    hosts: &[String],
    format: &str,
    out: &Path,
    ttl: &str,
) -> Result<()> {
    if format != "openssh" {
        bail!("unsupported format {format:?}; only --format=openssh is supported");
    }
    let hosts: Vec<String> = hosts.iter().filter(|h| !h.is_empty()).cloned().collect();
    if hosts.is_empty() {
        bail!("--host needs at least one host name");
    }
    for h in &hosts {
        if let Some(c) = h
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || *c == ',')
        {
            bail!(
                "--host: invalid host name {h:?}: {c:?} is not allowed; host names (the certificate's principals) have no spaces, commas or control characters"
            );
        }
    }
    let ttl = parse_ttl(ttl)?;
    if ttl.is_zero() || ttl > MAX_HOST_CERT_TTL {
        bail!(
            "--ttl: {} is out of bounds for a host certificate; use a value from 1s to {} (one year)",
            machine_id_types::duration::format(ttl),
            machine_id_types::duration::format(MAX_HOST_CERT_TTL)
        );
    }
    // The key is made here and never leaves this machine; only its public half is sent.
    let key = machine_id_mint::PrivateKey::generate(machine_id_mint::Suite::Default)?;
    let public = key.public_key().to_openssh();
    let signed = client.sign_host_cert(&public, &hosts, ttl).await?;
    let pub_path = with_suffix(out, ".pub");
    let cert_path = with_suffix(out, "-cert.pub");
    write_file(out, &key.to_pem(), 0o600)?;
    write_file(&pub_path, &format!("{public}\n"), 0o644)?;
    write_file(&cert_path, &format!("{}\n", signed.ssh_cert.trim()), 0o644)?;
    print(&format!(
        "The credentials have been written to {}, {}, {}\n",
        out.display(),
        pub_path.display(),
        cert_path.display()
    ))
}
