//! `tctl status`: the cluster name, version, CA pins (one per trusted TLS CA, so two during
//! a rotation), CA fingerprints, and the table of every CA key with its rotation state.

use super::cas::{key_rows, sorted, summary_json, table};
use super::pins;
use crate::Format;
use crate::output::{json, print};
use anyhow::{Result, bail};
use machine_id_client::Client;
use machine_id_mint::{cert_fingerprint, ssh_fingerprint};
use machine_id_types::ca_kind;
use serde_json::json;

fn ssh_fingerprints(lines: &[String]) -> Result<Vec<String>> {
    lines
        .iter()
        .map(|l| ssh_fingerprint(l).map_err(anyhow::Error::from))
        .collect()
}

/// `tctl status`.
pub(super) async fn status(client: &Client, format: Format) -> Result<()> {
    if format == Format::Yaml {
        bail!("tctl status prints text or json; use --format=text or --format=json");
    }
    let ping = client.ping().await?;
    let pins = pins(client).await?;
    let user = ssh_fingerprints(&client.export_ca(ca_kind::USER).await?.ssh_public_keys)?;
    let host = ssh_fingerprints(&client.export_ca(ca_kind::HOST).await?.ssh_public_keys)?;
    let tls: Vec<String> = client
        .export_ca(ca_kind::TLS)
        .await?
        .tls_certs
        .iter()
        .map(|d| cert_fingerprint(d))
        .collect();
    let pins: Vec<String> = pins.iter().map(ToString::to_string).collect();
    let cas = sorted(client.get_cert_authorities().await?);
    let rows = key_rows(&cas)?;
    if format == Format::Json {
        return print(&json(&json!({
            "cluster_name": ping.cluster_name,
            "server_version": ping.server_version,
            "proxy_public_addr": ping.proxy_public_addr,
            "auth_server": client.addr(),
            "ca_pins": pins,
            "ca_fingerprints": {"user": user, "host": host, "tls": tls},
            "cert_authorities": summary_json(&cas, &rows),
        })));
    }
    let mut out = format!(
        "Cluster:         {}\nVersion:         {}\nAuth server:     {}\n",
        ping.cluster_name,
        ping.server_version,
        client.addr()
    );
    if let Some(p) = &ping.proxy_public_addr {
        out.push_str(&format!("Proxy:           {p}\n"));
    }
    for p in &pins {
        out.push_str(&format!("CA pin:          {p}\n"));
    }
    out.push_str("CA fingerprints:\n");
    for f in &user {
        out.push_str(&format!("  user (SSH):    {f}\n"));
    }
    for f in &host {
        out.push_str(&format!("  host (SSH):    {f}\n"));
    }
    for f in &tls {
        out.push_str(&format!("  tls (X.509):   {f}\n"));
    }
    out.push('\n');
    out.push_str(&table(&rows));
    print(&out)
}
