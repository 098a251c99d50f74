//! GenerateUserCerts for an authenticated caller: renewal of its own renewable identity
//! (the generation counter moves by compare-and-swap; a replayed generation locks the bot)
//! and role impersonation (short-lived, non-renewable output certificates); and
//! GenerateBotCerts, both in one call: a tbot cycle's renewal and every output's
//! certificates, committed with their audit events in one write.

use std::time::Duration;

use machine_id_mint::PublicKey;
use machine_id_store::{Op, StoreError, StoredEvent};
use machine_id_types::{
    Identity, LastRenewal, Lock, LockSpec, LockTarget, Metadata, Role, User, event_types,
};
use serde_json::json;
use time::OffsetDateTime;

use super::{Caller, Core, IssuedCerts, add, dedup, expanded_logins, rfc3339, sha256_hex};
use crate::error::{AuthError, Result};
use crate::rbac;
use crate::state;

/// A user's traits, as [`User`] holds them.
type Traits = std::collections::BTreeMap<String, Vec<String>>;

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

/// The most outputs one GenerateBotCerts call may ask for, so one call cannot hold the
/// server's signing for long.
pub(crate) const MAX_OUTPUTS_PER_CALL: usize = 64;

/// A GenerateBotCerts request: one tbot cycle.
#[derive(Debug, Clone)]
pub(crate) struct BotCertsRequest {
    /// The DER SubjectPublicKeyInfo of the renewed identity's key; `None`: no renewal, only
    /// the outputs.
    pub identity_public_key: Option<Vec<u8>>,
    /// The renewed identity's requested lifetime; `None` for the default.
    pub identity_ttl: Option<Duration>,
    /// The outputs, answered in this order.
    pub outputs: Vec<OutputRequest>,
}

/// One output of a [`BotCertsRequest`].
#[derive(Debug, Clone)]
pub(crate) struct OutputRequest {
    /// The DER SubjectPublicKeyInfo of the output's key.
    pub public_key: Vec<u8>,
    /// The requested lifetime; `None` for the default.
    pub ttl: Option<Duration>,
    /// The roles to impersonate; empty for every role the caller may impersonate.
    pub role_requests: Vec<String>,
}

/// The answer to a [`BotCertsRequest`].
#[derive(Debug)]
pub(crate) struct BotCerts {
    /// The renewed identity's certificates, when a renewal was asked for.
    pub identity: Option<IssuedCerts>,
    /// Per output, in the request's order: its certificates and roles, or why it was refused.
    pub outputs: Vec<Result<IssuedOutput>>,
    pub cluster_name: String,
    pub proxy_public_addr: Option<String>,
    /// Every trusted host CA key, OpenSSH lines, active first.
    pub host_ca_keys: Vec<String>,
}

/// An output's certificates and the roles they carry.
#[derive(Debug)]
pub(crate) struct IssuedOutput {
    pub certs: IssuedCerts,
    pub roles: Vec<String>,
}

/// An output that passed its checks, waiting to be signed once its ceiling (the expiry of
/// the identity it belongs to) is known.
struct PlannedOutput {
    subject: PublicKey,
    ttl: Option<Duration>,
    names: Vec<String>,
    roles: Vec<Role>,
}

impl Core {
    /// GenerateUserCerts: renewal of the caller's own renewable identity (no role requests)
    /// or role impersonation (role requests set).
    pub async fn generate_user_certs(
        &self,
        caller: &Caller,
        req: CertsRequest,
    ) -> Result<IssuedCerts> {
        self.refuse_reissue(caller, "GenerateUserCerts").await?;
        let subject = Self::subject_key(&req.public_key)?;
        if req.role_requests.is_empty() {
            let (certs, _) = self
                .renew(caller, &subject, &req.public_key, req.ttl, &[])
                .await?;
            Ok(certs)
        } else {
            let planned = self
                .plan_output(
                    "GenerateUserCerts",
                    caller,
                    subject,
                    req.ttl,
                    &req.role_requests,
                )
                .await?;
            let traits = self.caller_traits(caller).await?;
            let (issued, event) =
                self.sign_output(caller, &traits, &planned, caller.identity.expires)?;
            tracing::info!(user = %caller.identity.username, roles = %issued.roles.join(","), "issued impersonated certificates");
            self.audit_events(event.into_iter().collect()).await;
            Ok(issued.certs)
        }
    }

    /// GenerateBotCerts: the caller's renewal (when asked for) and its outputs' certificates,
    /// signed for the renewed identity. A refused output is answered with its error; the
    /// renewal and the other outputs go on.
    pub async fn generate_bot_certs(
        &self,
        caller: &Caller,
        req: BotCertsRequest,
    ) -> Result<BotCerts> {
        self.refuse_reissue(caller, "GenerateBotCerts").await?;
        if req.outputs.len() > MAX_OUTPUTS_PER_CALL {
            return Err(AuthError::InvalidArgument(format!(
                "{} outputs asked for in one call; at most {MAX_OUTPUTS_PER_CALL} are answered: split the outputs over several calls",
                req.outputs.len()
            )));
        }
        let renewal = match &req.identity_public_key {
            Some(spki) => Some((Self::subject_key(spki)?, spki)),
            None => None,
        };
        // Each output is checked first; the ones that pass are signed with the renewal, a
        // refused one keeps its place in the answer with its error.
        let mut outputs: Vec<Option<Result<IssuedOutput>>> = Vec::with_capacity(req.outputs.len());
        let mut positions = Vec::with_capacity(req.outputs.len());
        let mut ready = Vec::with_capacity(req.outputs.len());
        for (i, out) in req.outputs.iter().enumerate() {
            let plan = match Self::subject_key(&out.public_key) {
                Ok(subject) => {
                    self.plan_output(
                        "GenerateBotCerts",
                        caller,
                        subject,
                        out.ttl,
                        &out.role_requests,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            match plan {
                Ok(p) => {
                    positions.push(i);
                    ready.push(p);
                    outputs.push(None);
                }
                Err(e) => outputs.push(Some(Err(e))),
            }
        }
        let (identity, issued) = match renewal {
            Some((subject, spki)) => {
                let (certs, issued) = self
                    .renew(caller, &subject, spki, req.identity_ttl, &ready)
                    .await?;
                (Some(certs), issued)
            }
            None => {
                let traits = self.caller_traits(caller).await?;
                let (issued, events) =
                    self.sign_outputs(caller, &traits, &ready, caller.identity.expires)?;
                self.audit_events(events).await;
                (None, issued)
            }
        };
        for (i, out) in positions.into_iter().zip(issued) {
            outputs[i] = Some(Ok(out));
        }
        let signer = self.cas.signer();
        Ok(BotCerts {
            identity,
            outputs: outputs
                .into_iter()
                .map(|o| {
                    o.unwrap_or_else(|| {
                        Err(AuthError::Internal("an output was left unanswered".into()))
                    })
                })
                .collect(),
            cluster_name: self.cluster_name.clone(),
            proxy_public_addr: self.proxy_public_addr.clone(),
            host_ca_keys: signer.trusted_host_cas().to_vec(),
        })
    }

    /// Refuses (and audits) a caller whose certificate is an impersonated output's.
    async fn refuse_reissue(&self, caller: &Caller, method: &str) -> Result<()> {
        let id = &caller.identity;
        if !id.disallow_reissue {
            return Ok(());
        }
        let msg = format!(
            "the certificate of {:?} was issued with disallow-reissue (an impersonated output certificate) and cannot be used to get more certificates; use the bot's own identity",
            id.username
        );
        self.audit_denied(&id.username, method, &msg).await;
        Err(AuthError::AccessDenied(msg))
    }

    /// Renews the caller's own renewable identity: generation `G` (the stored one) becomes
    /// `G + 1`, recorded with the parent certificate and the new key in one compare-and-swap.
    /// A renewal that presents `G` again after the server moved to `G + 1` is answered again
    /// (same generation, nothing written) when it is exactly the recorded request, and is a
    /// generation mismatch (the bot is locked) otherwise; see ARCHITECTURE's invariants.
    ///
    /// `outputs` are signed for the renewed identity (capped at its expiry) and their events
    /// commit with the renewal's.
    async fn renew(
        &self,
        caller: &Caller,
        subject: &PublicKey,
        subject_spki: &[u8],
        ttl: Option<Duration>,
        outputs: &[PlannedOutput],
    ) -> Result<(IssuedCerts, Vec<IssuedOutput>)> {
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
                let (issued, mut events) =
                    self.sign_outputs(caller, &user.spec.traits, outputs, identity.expires)?;
                tracing::info!(user = %id.username, generation = stored, "answered a retried renewal again");
                events.extend(self.audit_record(
                    event_types::CERT_CREATE,
                    Some(&id.username),
                    true,
                    format!("re-issued the certificates of a retried renewal of {}", id.username),
                    json!({ "kind": "renewal", "retry": true, "generation": stored, "expires": rfc3339(identity.expires) }),
                ));
                self.audit_events(events).await;
                return Ok((certs, issued));
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
            let (issued, mut events) =
                self.sign_outputs(caller, &user.spec.traits, outputs, identity.expires)?;
            events.extend(self.audit_record(
                event_types::CERT_CREATE,
                Some(&id.username),
                true,
                format!("renewed the certificates of {}", id.username),
                json!({ "kind": "renewal", "generation": generation, "expires": rfc3339(identity.expires) }),
            ));
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
                .write_with_events(vec![swap], events)
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
            tracing::info!(user = %id.username, generation, outputs = issued.len(), "renewed certificates");
            return Ok((certs, issued));
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

    /// Checks that `caller` may impersonate `requested` (empty: every role its roles may
    /// impersonate) and reads those roles; a refusal is audited.
    async fn plan_output(
        &self,
        method: &str,
        caller: &Caller,
        subject: PublicKey,
        ttl: Option<Duration>,
        requested: &[String],
    ) -> Result<PlannedOutput> {
        let id = &caller.identity;
        let impersonable = || {
            dedup(
                &caller
                    .roles
                    .iter()
                    .filter_map(|r| r.spec.allow.impersonate.as_ref())
                    .flat_map(|i| i.roles.iter().cloned())
                    .collect::<Vec<_>>(),
            )
        };
        let names = if requested.is_empty() {
            let all = impersonable();
            if all.is_empty() {
                let msg = format!(
                    "{:?} may impersonate no role; add the bot again with tctl bots add --roles=...",
                    id.username
                );
                self.audit_denied(&id.username, method, &msg).await;
                return Err(AuthError::AccessDenied(msg));
            }
            all
        } else {
            dedup(requested)
        };
        if let Err(role) = rbac::check_impersonation(id.is_admin(), &caller.roles, &names) {
            let msg = format!(
                "{:?} may not impersonate role {role:?}; it may impersonate [{}] (the roles given to tctl bots add --roles)",
                id.username,
                impersonable().join(", ")
            );
            self.audit_denied(&id.username, method, &msg).await;
            return Err(AuthError::AccessDenied(msg));
        }
        let mut roles = Vec::with_capacity(names.len());
        for r in &names {
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
        Ok(PlannedOutput {
            subject,
            ttl,
            names,
            roles,
        })
    }

    /// The caller's traits: its stored user's, or its certificate's when it has none.
    async fn caller_traits(&self, caller: &Caller) -> Result<Traits> {
        let id = &caller.identity;
        Ok(
            match self
                .state
                .get::<User>(&state::user_key(&id.username))
                .await?
            {
                Some((u, _)) => u.spec.traits,
                None => id.traits.clone(),
            },
        )
    }

    /// Signs each of `outputs`; see [`Self::sign_output`].
    fn sign_outputs(
        &self,
        caller: &Caller,
        traits: &Traits,
        outputs: &[PlannedOutput],
        ceiling: OffsetDateTime,
    ) -> Result<(Vec<IssuedOutput>, Vec<StoredEvent>)> {
        let mut issued = Vec::with_capacity(outputs.len());
        let mut events = Vec::with_capacity(outputs.len() + 1);
        for p in outputs {
            let (out, event) = self.sign_output(caller, traits, p, ceiling)?;
            issued.push(out);
            events.extend(event);
        }
        Ok((issued, events))
    }

    /// Signs an output's impersonated certificates (not renewable, not reissuable), expiring
    /// no later than `ceiling` (the identity they are issued under), and returns them with
    /// their `cert.create` event, for the caller to commit.
    fn sign_output(
        &self,
        caller: &Caller,
        traits: &Traits,
        planned: &PlannedOutput,
        ceiling: OffsetDateTime,
    ) -> Result<(IssuedOutput, Option<StoredEvent>)> {
        let id = &caller.identity;
        let logins_trait = traits.get("logins").cloned().unwrap_or_default();
        let now = self.clock.now();
        let mut max = self.limits.max_renewable_ttl;
        for r in &planned.roles {
            if let Some(m) = r.spec.options.max_session_ttl {
                max = max.min(m);
            }
        }
        let expires = add(now, self.ttl(planned.ttl, max)).min(ceiling);
        let identity = Identity {
            username: id.username.clone(),
            roles: planned.names.clone(),
            logins: expanded_logins(&planned.roles, &logins_trait),
            traits: traits.clone(),
            renewable: false,
            generation: 0,
            impersonator: Some(id.username.clone()),
            disallow_reissue: true,
            cluster: self.cluster_name.clone(),
            expires,
        };
        let certs = self.issue(&planned.subject, &identity)?;
        let event = self.audit_record(
            event_types::CERT_CREATE,
            Some(&id.username),
            true,
            format!(
                "issued certificates for roles [{}] to {}",
                planned.names.join(", "),
                id.username
            ),
            json!({ "kind": "impersonation", "roles": planned.names, "logins": identity.logins, "expires": rfc3339(expires) }),
        );
        Ok((
            IssuedOutput {
                certs,
                roles: planned.names.clone(),
            },
            event,
        ))
    }
}
