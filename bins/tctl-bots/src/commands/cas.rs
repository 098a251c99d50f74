//! How the cluster's certificate authorities print: one row per key (authority, rotation,
//! protocol, active or trusted, fingerprint) for `tctl status` and `tctl get
//! cert_authorities`, the pins of every trusted TLS CA, and the resources themselves as
//! YAML or JSON (public parts only: the resource never holds a private key).

use crate::Format;
use crate::output::{print, print_serialized, render};
use anyhow::{Context, Result};
use machine_id_mint::{CaPin, cert_fingerprint, certs_from_pem, ssh_fingerprint};
use machine_id_types::{CaType, CertAuthority};
use serde_json::json;

/// One key of one CA, as a row of the CA table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct KeyRow {
    /// `user`, `host` or `tls`.
    pub authority: CaType,
    /// `Rotation::describe` of the CA.
    pub rotation: String,
    /// `SSH` or `TLS`.
    pub protocol: &'static str,
    /// `active` (signs) or `trusted` (trusted besides, during a rotation).
    pub status: &'static str,
    /// `SHA256:...` of the SSH key or of the certificate's DER.
    pub fingerprint: String,
    /// The CA pin (`sha256:...`), for a TLS CA.
    pub pin: Option<String>,
}

/// `Rotation::describe` of `ca`, with times in whole seconds.
pub(super) fn describe(ca: &CertAuthority) -> String {
    let mut r = ca.spec.rotation.clone();
    r.last_rotated = r.last_rotated.map(|t| t.replace_nanosecond(0).unwrap_or(t));
    r.describe()
}

/// The CAs in listing order (user, host, tls), whatever order the server sent.
pub(super) fn sorted(mut cas: Vec<CertAuthority>) -> Vec<CertAuthority> {
    cas.sort_by_key(|ca| ca.spec.ca_type);
    cas
}

/// The rows of every key of `cas`, each CA's active keys first.
pub(super) fn key_rows(cas: &[CertAuthority]) -> Result<Vec<KeyRow>> {
    let mut rows = Vec::new();
    for ca in cas {
        let spec = &ca.spec;
        let rotation = describe(ca);
        for (status, keys) in [
            ("active", &spec.active_keys),
            ("trusted", &spec.additional_trusted_keys),
        ] {
            for line in &keys.ssh {
                let fingerprint = ssh_fingerprint(line).with_context(|| {
                    format!("the {} CA's SSH key from the server", spec.ca_type)
                })?;
                rows.push(KeyRow {
                    authority: spec.ca_type,
                    rotation: rotation.clone(),
                    protocol: "SSH",
                    status,
                    fingerprint,
                    pin: None,
                });
            }
            for pem in &keys.tls {
                let ders = certs_from_pem(pem).with_context(|| {
                    format!("the {} CA's certificate from the server", spec.ca_type)
                })?;
                for der in ders {
                    let pin = CaPin::from_cert_der(&der).with_context(|| {
                        format!("the {} CA's certificate from the server", spec.ca_type)
                    })?;
                    rows.push(KeyRow {
                        authority: spec.ca_type,
                        rotation: rotation.clone(),
                        protocol: "TLS",
                        status,
                        fingerprint: cert_fingerprint(&der),
                        pin: Some(pin.to_string()),
                    });
                }
            }
        }
    }
    Ok(rows)
}

/// The table `tctl status` and `tctl get cert_authorities` print.
pub(super) fn table(rows: &[KeyRow]) -> String {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.authority.to_string(),
                r.rotation.clone(),
                r.protocol.to_string(),
                r.status.to_string(),
                r.fingerprint.clone(),
            ]
        })
        .collect();
    render(
        ["Authority", "Rotation", "Protocol", "Status", "Fingerprint"],
        &cells,
    )
}

/// The JSON of the CA table: one object per CA with its rotation and keys.
pub(super) fn summary_json(cas: &[CertAuthority], rows: &[KeyRow]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = cas
        .iter()
        .map(|ca| {
            let r = &ca.spec.rotation;
            let keys: Vec<serde_json::Value> = rows
                .iter()
                .filter(|k| k.authority == ca.spec.ca_type)
                .map(|k| {
                    let mut v = json!({
                        "protocol": k.protocol,
                        "status": k.status,
                        "fingerprint": k.fingerprint,
                    });
                    if let Some(pin) = &k.pin {
                        v["pin"] = json!(pin);
                    }
                    v
                })
                .collect();
            json!({
                "authority": ca.spec.ca_type,
                "rotation": describe(ca),
                "state": r.state.as_str(),
                "phase": r.phase.as_str(),
                "mode": r.mode.as_str(),
                "rotation_status": r,
                "keys": keys,
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

/// Prints CA resources in `format` (text: the key table); `single` prints one object rather
/// than a list.
pub(super) fn print_cas(cas: &[CertAuthority], format: Format, single: bool) -> Result<()> {
    match format {
        Format::Text => print(&table(&key_rows(cas)?)),
        Format::Json => print_serialized(cas, false, single),
        Format::Yaml => print_serialized(cas, true, single),
    }
}

#[cfg(test)]
mod tests;
