//! GenerateUserCerts for an authenticated caller: renewal of its own renewable identity
//! (the generation counter moves by compare-and-swap; a replayed generation locks the bot)
//! and role impersonation (short-lived, non-renewable output certificates).

use std::time::Duration;

use machine_id_mint::PublicKey;
use machine_id_store::{Op, StoreError};
use machine_id_types::{
    Identity, LastRenewal, Lock, LockSpec, LockTarget, Metadata, Role, User, event_types,
};
use serde_json::json;
use time::OffsetDateTime;

use super::{Caller, Core, IssuedCerts, add, dedup, expanded_logins, rfc3339, sha256_hex};
use crate::error::{AuthError, Result};
use crate::rbac;
use crate::state;

/// A GenerateUserCerts request.
#[derive(Debug, Clone)]
pub(crate) struct CertsRequest {
    /// The DER SubjectPublicKeyInfo of the key to certify.
    pub public_key: Vec<u8>,
    /// The certificates' requested lifetime; `None` for the default.
    pub ttl: Option<Duration>,
    /// The roles to impersonate; none for a renewal of the caller's own identity.
    pub role_requests: Vec<String>,
}

impl Core {
    /// GenerateUserCerts: renewal of the caller's own renewable identity (no role requests)
    /// or role impersonation (role requests set).
    pub async fn generate_user_certs(
        &self,
        caller: &Caller,
        req: CertsRequest,
    ) -> Result<IssuedCerts> {
        let id = &caller.identity;
        if id.disallow_reissue {
            let msg = format!(
                "the certificate of {:?} was issued with disallow-reissue (an impersonated output certificate) and cannot be used to get more certificates; use the bot's own identity",
                id.username
            );
            self.audit_denied(&id.username, "GenerateUserCerts", &msg)
                .await;
            return Err(AuthError::AccessDenied(msg));
        }
        let subject = Self::subject_key(&req.public_key)?;
        if req.role_requests.is_empty() {
            self.renew(caller, &subject, &req.public_key, req.ttl).await
        } else {
            self.impersonate(caller, &subject, &req.role_requests, req.ttl)
                .await
        }
    }

    /// Renews the caller's own renewable identity: generation `G` (the stored one) becomes
    /// `G + 1`, recorded with the parent certificate and the new key in one compare-and-swap.
    /// A renewal that presents `G` again after the server moved to `G + 1` is answered again
    /// (same generation, nothing written) when it is exactly the recorded request, and is a
    /// generation mismatch (the bot is locked) otherwise; see ARCHITECTURE's invariants.
    async fn renew(
        &self,
        caller: &Caller,
        subject: &PublicKey,
        subject_spki: &[u8],
        ttl: Option<Duration>,
    ) -> Result<IssuedCerts> {
        let id = &caller.identity;
        if !id.renewable {
            let msg = format!(
                "the certificate of {:?} is not renewable; join again to get a renewable identity",
                id.username
            );
            self.audit_denied(&id.username, "GenerateUserCerts", &msg)
                .await;
            return Err(AuthError::AccessDenied(msg));
        }
        let user_key = state::user_key(&id.username);
        let now = self.clock.now();
        // The usual renewal decides from the cache and commits by compare-and-swap, so a
        // stale entry can only make the swap fail. Every other outcome (a retry, a mismatch
        // that locks the bot, a missing user, a lost swap) is decided again from the store.
        let mut fresh = false;
        loop {
            let read = if fresh {
                self.state.get_fresh::<User>(&user_key).await?
            } else {
                self.state.get::<User>(&user_key).await?
            };
            let Some((mut user, rev)) = read else {
                if !fresh {
                    fresh = true;
                    continue;
                }
                return Err(AuthError::AccessDenied(format!(
                    "user {:?} no longer exists (was the bot deleted?); create the bot again and join with a new token",
                    id.username
                )));
            };
            let stored = user.generation();
            let request = LastRenewal {
                parent: caller.cert_sha256.clone(),
                public_key: sha256_hex(subject_spki),
                generation: stored,
            };
            let retried = id.generation.checked_add(1) == Some(stored)
                && user.spec.last_renewal.as_ref() == Some(&request);
            if !fresh && (retried || id.generation != stored) {
                fresh = true;
                continue;
            }
            if retried {
                // The answer to this very renewal was lost (the server or the connection died
                // after the commit): answer it again. Nothing moves, so any number of retries
                // leave the bot at `stored`, and the next renewal from the certificate issued
                // here proceeds normally.
                let (certs, identity) = self
                    .issue_bot_certs(subject, &user, Some(stored), ttl, now)
                    .await?;
                tracing::info!(user = %id.username, generation = stored, "answered a retried renewal again");
                self.audit(
                event_types::CERT_CREATE,
                Some(&id.username),
                true,
                format!("re-issued the certificates of a retried renewal of {}", id.username),
                json!({ "kind": "renewal", "retry": true, "generation": stored, "expires": rfc3339(identity.expires) }),
            )
            .await;
                return Ok(certs);
            }
            if id.generation != stored {
                return Err(self
                    .generation_mismatch(&id.username, id.generation, stored, now)
                    .await);
            }
            let generation = stored + 1;
            user.set_generation(generation);
            // Signed before the commit, so that the generation and the audit event of this
            // renewal commit in one write (one fsync, shared with concurrent renewals); the
            // certificates are returned only once that write is durable.
            let (certs, identity) = self
                .issue_bot_certs(subject, &user, Some(generation), ttl, now)
                .await?;
            let event = self.audit_record(
                event_types::CERT_CREATE,
                Some(&id.username),
                true,
                format!("renewed the certificates of {}", id.username),
                json!({ "kind": "renewal", "generation": generation, "expires": rfc3339(identity.expires) }),
            );
            // A renewal for the key the certificate already certifies is not retriable: a copy
            // of the identity holds that key, so its replay must stay a mismatch.
            user.spec.last_renewal =
                (request.public_key != caller.key_sha256).then_some(LastRenewal {
                    generation,
                    ..request
                });
            let swap = Op::CompareAndSwap {
                key: user_key.clone(),
                revision: rev,
                value: state::encode(&user)?,
            };
            match self
                .state
                .backend
                .write_with_events(vec![swap], event.into_iter().collect())
                .await
            {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) if !fresh => {
                    fresh = true;
                    continue;
                }
                Err(StoreError::Conflict { .. }) => {
                    return Err(AuthError::Retryable(format!(
                        "the certificate generation of {:?} changed concurrently; retry the renewal",
                        id.username
                    )));
                }
                Err(StoreError::NotFound { .. }) => {
                    return Err(AuthError::AccessDenied(format!(
                        "user {:?} no longer exists (was the bot deleted?)",
                        id.username
                    )));
                }
                Err(e) => return Err(e.into()),
            }
            tracing::info!(user = %id.username, generation, "renewed certificates");
            return Ok(certs);
        }
    }

    /// Locks `user` after a stale generation, writes the audit event, and returns the error
    /// to refuse the call with.
    async fn generation_mismatch(
        &self,
        user: &str,
        presented: u64,
        stored: u64,
        now: OffsetDateTime,
    ) -> AuthError {
        let lock_name = format!("generation-mismatch-{}", uuid::Uuid::new_v4());
        let lock = Lock {
            metadata: Metadata::named(&lock_name),
            spec: LockSpec {
                target: LockTarget {
                    user: Some(user.to_string()),
                    role: None,
                },
                message: format!(
                    "renewal with certificate generation {presented} while the current generation is {stored}: the bot's certificate may have been stolen and replayed (or its data directory restored from an old copy)"
                ),
                created: Some(now),
                issued_before: None,
            },
        };
        if let Err(e) = self
            .state
            .create(&state::lock_key(&lock_name), &lock, || {
                AuthError::Internal("lock id collision".into())
            })
            .await
        {
            tracing::error!(error = %e, user, "cannot write the lock after a generation mismatch");
        }
        tracing::warn!(user, presented, stored, lock = %lock_name, "certificate generation mismatch: user locked");
        self.audit(
            event_types::GENERATION_MISMATCH,
            Some(user),
            false,
            lock.spec.message.clone(),
            json!({ "presented_generation": presented, "stored_generation": stored, "lock": lock_name }),
        )
        .await;
        AuthError::AccessDenied(format!(
            "renewal refused: the certificate has generation {presented} but the current generation of {user:?} is {stored}; the certificate may have been stolen and replayed, so {user:?} is now locked (lock {lock_name}); an administrator must investigate, remove the lock (tctl locks rm {lock_name}) and join the bot again with a new token"
        ))
    }

    async fn impersonate(
        &self,
        caller: &Caller,
        subject: &PublicKey,
        requested: &[String],
        ttl: Option<Duration>,
    ) -> Result<IssuedCerts> {
        let id = &caller.identity;
        let requested = dedup(requested);
        if let Err(role) = rbac::check_impersonation(id.is_admin(), &caller.roles, &requested) {
            let allowed: Vec<String> = caller
                .roles
                .iter()
                .filter_map(|r| r.spec.allow.impersonate.as_ref())
                .flat_map(|i| i.roles.iter().cloned())
                .collect();
            let msg = format!(
                "{:?} may not impersonate role {role:?}; it may impersonate [{}] (the roles given to tctl bots add --roles)",
                id.username,
                allowed.join(", ")
            );
            self.audit_denied(&id.username, "GenerateUserCerts", &msg)
                .await;
            return Err(AuthError::AccessDenied(msg));
        }
        let mut roles = Vec::with_capacity(requested.len());
        for r in &requested {
            state::check_key_name("role", r)?;
            let (role, _) = self
                .state
                .get::<Role>(&state::role_key(r))
                .await?
                .ok_or_else(|| {
                    AuthError::NotFound(format!(
                        "role {r:?} does not exist (deleted?); ask an administrator to create it or change the bot's roles"
                    ))
                })?;
            roles.push(role);
        }
        let traits = match self
            .state
            .get::<User>(&state::user_key(&id.username))
            .await?
        {
            Some((u, _)) => u.spec.traits,
            None => id.traits.clone(),
        };
        let logins_trait = traits.get("logins").cloned().unwrap_or_default();
        let now = self.clock.now();
        let mut max = self.limits.max_renewable_ttl;
        for r in &roles {
            if let Some(m) = r.spec.options.max_session_ttl {
                max = max.min(m);
            }
        }
        let expires = add(now, self.ttl(ttl, max)).min(id.expires);
        let identity = Identity {
            username: id.username.clone(),
            roles: requested.clone(),
            logins: expanded_logins(&roles, &logins_trait),
            traits,
            renewable: false,
            generation: 0,
            impersonator: Some(id.username.clone()),
            disallow_reissue: true,
            cluster: self.cluster_name.clone(),
            expires,
        };
        let certs = self.issue(subject, &identity)?;
        tracing::info!(user = %id.username, roles = %requested.join(","), "issued impersonated certificates");
        self.audit(
            event_types::CERT_CREATE,
            Some(&id.username),
            true,
            format!("issued certificates for roles [{}] to {}", requested.join(", "), id.username),
            json!({ "kind": "impersonation", "roles": requested, "logins": identity.logins, "expires": rfc3339(expires) }),
        )
        .await;
        Ok(certs)
    }
}
