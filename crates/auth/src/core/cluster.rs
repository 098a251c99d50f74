//! The cluster as a whole: its CAs' public halves (ExportCA), host certificates for nodes
//! (SignHostCert) and the search of the audit log (SearchEvents).

use std::time::Duration;

use machine_id_mint::PublicKey;
use machine_id_store::{EventPosition, StoredEvent};
use machine_id_types::{AuditEvent, ca_kind, event_types};
use serde_json::json;
use time::OffsetDateTime;

use super::{Caller, Core, add, rfc3339};
use crate::error::{AuthError, Result};
use crate::rbac::{Verb, kind};
use crate::state;

/// The longest host certificate SignHostCert issues.
const MAX_HOST_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The most events one SearchEvents returns.
const MAX_EVENTS: usize = 10_000;
/// The events SearchEvents returns when the caller names no limit.
const DEFAULT_EVENTS: usize = 1000;

/// The public half of one of the cluster's CAs, as ExportCA answers it: every trusted key,
/// the active one first (both sets during a rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CaExport {
    /// SSH CA public keys, OpenSSH lines (the user or host CA).
    pub ssh_public_keys: Vec<String>,
    /// TLS CA certificates, DER (the TLS CA).
    pub tls_certs: Vec<Vec<u8>>,
}

/// A SignHostCert request.
#[derive(Debug, Clone)]
pub(crate) struct HostCertRequest {
    /// The host's public key, one OpenSSH line.
    pub public_key: String,
    /// The host names the certificate is for.
    pub hostnames: Vec<String>,
    /// The certificate's requested lifetime; `None` for the configured default.
    pub ttl: Option<Duration>,
}

/// A signed host certificate and the CA key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedHostCert {
    /// The SSH host certificate, one OpenSSH line.
    pub ssh_cert: String,
    /// The host CA's public key, one OpenSSH line.
    pub host_ca_key: String,
}

/// Which audit events SearchEvents returns.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventQuery {
    /// Only events of this type; `None` for every type.
    pub event_type: Option<String>,
    /// Only events at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only events before this time.
    pub until: Option<OffsetDateTime>,
    /// At most this many (the newest), capped at the server's maximum; `None` for the
    /// default.
    pub limit: Option<usize>,
    /// Only events older than this place in the log: the `next_page` of an earlier answer.
    pub page: Option<EventPosition>,
}

/// One answer of SearchEvents.
#[derive(Debug, Clone, Default)]
pub(crate) struct EventPage {
    /// The events, oldest first.
    pub events: Vec<AuditEvent>,
    /// Where the next (older) page starts, when more events match than this page holds.
    pub next_page: Option<EventPosition>,
}

impl Core {
    /// ExportCA.
    pub async fn export_ca(&self, caller: &Caller, ca_type: &str) -> Result<CaExport> {
        self.authorize(caller, "ExportCA", kind::CERT_AUTHORITY, Verb::Read)
            .await?;
        let signer = self.cas.signer();
        Ok(match ca_type {
            ca_kind::USER => CaExport {
                ssh_public_keys: signer.trusted_user_cas().to_vec(),
                tls_certs: vec![],
            },
            ca_kind::HOST => CaExport {
                ssh_public_keys: signer.trusted_host_cas().to_vec(),
                tls_certs: vec![],
            },
            ca_kind::TLS => CaExport {
                ssh_public_keys: vec![],
                tls_certs: self.tls_ca_certs(),
            },
            other => {
                return Err(AuthError::InvalidArgument(format!(
                    "unknown CA type {other:?}; expected user, host or tls"
                )));
            }
        })
    }

    /// SignHostCert: principals are each host name and `<name>.<cluster>`; the key id is the
    /// first.
    pub async fn sign_host_cert(
        &self,
        caller: &Caller,
        req: HostCertRequest,
    ) -> Result<SignedHostCert> {
        self.authorize(caller, "SignHostCert", kind::HOST_CERT, Verb::Create)
            .await?;
        if req.hostnames.is_empty() {
            return Err(AuthError::InvalidArgument(
                "at least one host name is required (--host=NAME)".into(),
            ));
        }
        let suffix = format!(".{}", self.cluster_name);
        let mut principals: Vec<String> = Vec::new();
        for h in &req.hostnames {
            let h = h.trim();
            if h.is_empty()
                || h.len() > 253
                || h.chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == ',')
            {
                return Err(AuthError::InvalidArgument(format!(
                    "invalid host name {h:?}: no spaces or commas"
                )));
            }
            for p in [h.to_string(), format!("{h}{suffix}")] {
                if h.ends_with(&suffix) && p != h {
                    continue;
                }
                if !principals.contains(&p) {
                    principals.push(p);
                }
            }
        }
        let subject = PublicKey::from_openssh(req.public_key.trim()).map_err(|e| {
            AuthError::InvalidArgument(format!("public_key is not an OpenSSH public key line: {e}"))
        })?;
        let now = self.clock.now();
        let ttl = match req.ttl {
            None => self.limits.default_host_cert_ttl,
            Some(ttl) => ttl.min(MAX_HOST_CERT_TTL),
        };
        let not_after = add(now, ttl);
        let signer = self.cas.signer();
        let ssh_cert = signer.sign_host_ssh_cert(&subject, &principals, now, not_after)?;
        tracing::info!(user = %caller.identity.username, principals = %principals.join(","), "host certificate signed");
        self.audit(
            event_types::HOST_CERT,
            Some(&caller.identity.username),
            true,
            format!("host certificate for {}", principals.join(", ")),
            json!({ "principals": principals, "expires": rfc3339(not_after) }),
        )
        .await;
        Ok(SignedHostCert {
            ssh_cert,
            host_ca_key: signer.host_ca_openssh(),
        })
    }

    /// SearchEvents: the newest `limit` of those matching (older than `page` when given),
    /// oldest first, and where the next page starts when more match. One indexed store
    /// query of `limit + 1` rows, however large the log.
    pub async fn search_events(&self, caller: &Caller, query: EventQuery) -> Result<EventPage> {
        self.authorize(caller, "SearchEvents", kind::EVENT, Verb::List)
            .await?;
        let EventQuery {
            event_type,
            since,
            until,
            limit,
            page,
        } = query;
        let limit = limit.map_or(DEFAULT_EVENTS, |n| n.min(MAX_EVENTS));
        let nanos =
            |t: OffsetDateTime| i64::try_from(t.unix_timestamp_nanos().max(0)).unwrap_or(i64::MAX);
        let query = machine_id_store::EventQuery {
            since_nanos: since.map(nanos),
            until_nanos: until.map(nanos),
            event_types: event_type.into_iter().collect(),
            // One more than asked, to learn whether another page follows.
            limit: limit + 1,
            descending: true,
            after: page,
        };
        let mut stored = self.state.backend.search_events(&query).await?;
        let more = stored.len() > limit;
        stored.truncate(limit);
        let next_page = if more {
            stored.last().map(StoredEvent::position)
        } else {
            None
        };
        // The newest `limit`, turned oldest first.
        let mut events = stored
            .iter()
            .map(|e| state::decode::<AuditEvent>("the event log", &e.data))
            .collect::<Result<Vec<_>>>()?;
        events.reverse();
        Ok(EventPage { events, next_page })
    }
}
