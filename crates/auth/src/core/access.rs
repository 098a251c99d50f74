//! Who is calling: a caller authenticated from its verified client certificate, its stored
//! roles, the locks in force on it, and the RBAC check of each call (a refusal is audited).

use machine_id_mint::{TlsCertInfo, parse_tls_cert};
use machine_id_types::{Identity, Lock, Role};
use time::OffsetDateTime;

use super::{Core, lock_message, rfc3339, sha256_hex};
use crate::error::{AuthError, Result};
use crate::rbac::{self, Verb};
use crate::state;

/// An authenticated caller: the identity read from its verified certificate and the stored
/// roles it names (role names that name no stored role are left out: they grant nothing).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub identity: Identity,
    pub roles: Vec<Role>,
    /// When its certificate was issued (whole seconds), for locks that hold only
    /// certificates issued before a moment.
    pub issued: OffsetDateTime,
    /// SHA-256 (hex) of the DER certificate the caller authenticated with: what a renewal
    /// records as its parent, so that a retry of it can be told from a replay.
    pub cert_sha256: String,
    /// SHA-256 (hex) of the DER SubjectPublicKeyInfo that certificate certifies.
    pub key_sha256: String,
}

impl Caller {
    /// Checks that the caller may use `verb` on `resource`.
    pub fn check(&self, resource: &str, verb: Verb) -> Result<()> {
        rbac::check(&self.identity, &self.roles, resource, verb)
    }
}

impl Core {
    /// Authenticates the caller of `method` from the peer certificates of its connection
    /// (already verified against the TLS CA by the TLS layer) and checks locks.
    pub async fn authenticate(
        &self,
        peer_certs: Option<&[rustls_pki_types::CertificateDer<'static>]>,
        method: &str,
    ) -> Result<Caller> {
        let leaf = peer_certs.and_then(|c| c.first()).ok_or_else(|| {
            AuthError::Unauthenticated(format!(
                "{method} needs a client certificate of cluster {:?}, and none was presented; use tctl with --identity (the admin identity in the auth server's data directory under admin/) or a bot's identity",
                self.cluster_name
            ))
        })?;
        let TlsCertInfo {
            identity: id,
            issued,
            public_key_der,
        } = parse_tls_cert(leaf.as_ref()).map_err(|e| {
            AuthError::Unauthenticated(format!(
                "the client certificate does not carry a Machine ID identity ({e}); use a certificate this cluster issued"
            ))
        })?;
        if id.cluster != self.cluster_name {
            return Err(AuthError::Unauthenticated(format!(
                "the client certificate was issued for cluster {:?}, but this is cluster {:?}; use an identity of this cluster",
                id.cluster, self.cluster_name
            )));
        }
        let now = self.clock.now();
        if id.expires <= now {
            let hint = if id.is_admin() {
                "restart the auth server to re-issue the admin identity, or point --identity at the current one"
            } else if id.renewable {
                "the bot must join again with a new token (tctl bots add, or tctl tokens add --type=bot)"
            } else {
                "get a new certificate (tbot renews its outputs on its own when it is running)"
            };
            return Err(AuthError::Unauthenticated(format!(
                "the client certificate of {:?} expired at {}; {hint}",
                id.username,
                rfc3339(id.expires)
            )));
        }
        // The admin identity ignores locks (and none can be made on it): a lock must never
        // shut the cluster's owner out of removing it.
        if !id.is_admin()
            && let Some(lock) = self.lock_for(&id.username, &id.roles, issued, now).await?
        {
            let message = lock_message(&id.username, &lock);
            self.audit_denied(&id.username, method, &message).await;
            return Err(AuthError::AccessDenied(message));
        }
        let roles = self.stored_roles(&id.roles).await?;
        tracing::debug!(user = %id.username, method, "authenticated call");
        Ok(Caller {
            identity: id,
            roles,
            issued,
            cert_sha256: sha256_hex(leaf.as_ref()),
            key_sha256: sha256_hex(&public_key_der),
        })
    }

    /// The stored roles among `names`; unknown names are skipped.
    pub(super) async fn stored_roles(&self, names: &[String]) -> Result<Vec<Role>> {
        let mut out = Vec::with_capacity(names.len());
        for n in names {
            if n.starts_with('@') || state::check_key_name("role", n).is_err() {
                continue;
            }
            if let Some((r, _)) = self.state.get::<Role>(&state::role_key(n)).await? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// The first lock in force at `now` on `user` or one of `roles` for a certificate
    /// issued at `issued` (`now` for one about to be issued).
    pub(crate) async fn lock_for(
        &self,
        user: &str,
        roles: &[String],
        issued: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<Option<Lock>> {
        let list = || async {
            Ok::<_, AuthError>(
                self.state
                    .list::<Lock>(state::LOCKS)
                    .await?
                    .into_iter()
                    .map(|(l, _)| l)
                    .collect(),
            )
        };
        if let Some(index) = self.lock_index.get(list).await? {
            return Ok(index.find(user, roles, issued, now));
        }
        // The change feed is down: the locks as the store has them now.
        let mut locks = list().await?;
        locks.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(locks
            .into_iter()
            .find(|l| l.applies_to(user, roles, issued, now)))
    }

    /// Checks `verb` on `resource` for `caller`, auditing a refusal.
    pub async fn authorize(
        &self,
        caller: &Caller,
        method: &str,
        resource: &str,
        verb: Verb,
    ) -> Result<()> {
        match caller.check(resource, verb) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::info!(user = %caller.identity.username, method, resource, verb = verb.as_str(), "access denied");
                self.audit_denied(&caller.identity.username, method, &e.to_string())
                    .await;
                Err(e)
            }
        }
    }
}
