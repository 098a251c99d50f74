//! The auth server's logic, independent of the wire: authentication of callers, the
//! certificate rules (join, renewal, impersonation), resource CRUD and the audit log. The
//! gRPC layer ([`crate::service`]) converts messages and calls into this.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use machine_id_join::{JoinError, token_hash};
use machine_id_mint::{CaSigner, PublicKey, TlsCertInfo, parse_tls_cert};
use machine_id_proto::v1;
use machine_id_store::{Op, StoreError};
use machine_id_types::{
    ADMIN_ROLE, ADMIN_USER, AuditEvent, BOT_LABEL, Bot, Clock, GENERATION_LABEL, Identity,
    ImpersonateConditions, JoinMethod, LastRenewal, Lock, LockSpec, LockTarget, Metadata, Node,
    ProvisionToken, Role, RoleConditions, RoleSpec, Rule, User, UserSpec, bot_role_name,
    bot_user_name, event_types,
};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{AuthError, Result};
use crate::rbac::{self, Verb, kind};
use crate::state::{self, State};

/// Server-side limits and defaults taken from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub default_cert_ttl: Duration,
    pub max_renewable_ttl: Duration,
    pub default_token_ttl: Duration,
    pub default_host_cert_ttl: Duration,
    /// The longest lifetime of a `token`-method join token.
    pub max_token_ttl: Duration,
    /// How long a connection may move no byte before it relays (the proxy's target line).
    pub idle_timeout: Duration,
}

/// The longest host certificate SignHostCert issues.
const MAX_HOST_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The most events one SearchEvents returns.
const MAX_EVENTS: usize = 10_000;
/// The events SearchEvents returns when the caller names no limit.
const DEFAULT_EVENTS: usize = 1000;
/// How many times a join retries a lost compare-and-swap on the bot's user.
const JOIN_CAS_ATTEMPTS: usize = 5;

/// The shared state of a running auth server.
pub(crate) struct Core {
    pub state: State,
    pub signer: Arc<CaSigner>,
    pub cluster_name: String,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    pub proxy_public_addr: Option<String>,
    /// The iam join method's allow-list, STS client and challenges.
    pub iam: crate::join_iam::IamJoin,
    /// The last event key timestamp handed out, so events of one process sort in the order
    /// they were written even when the clock stands still (tests) or steps back.
    pub last_event_nanos: Mutex<i128>,
    /// Moves whenever a lock changes in the store, for connections that outlive a call.
    pub lock_feed: crate::revocation::LockFeed,
    /// The per-address rate limit on audit events of unauthenticated callers.
    pub audit_limiter: crate::limits::AuditLimiter,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("cluster_name", &self.cluster_name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

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

/// SHA-256 of `bytes`, lowercase hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Caller {
    /// Checks that the caller may use `verb` on `resource`.
    pub fn check(&self, resource: &str, verb: Verb) -> Result<()> {
        rbac::check(&self.identity, &self.roles, resource, verb)
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// `now + d` in whole seconds (certificates hold no fractions), saturating far in the future
/// instead of overflowing.
fn add(now: OffsetDateTime, d: Duration) -> OffsetDateTime {
    let t = now
        .checked_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
        .unwrap_or(OffsetDateTime::new_utc(
            time::Date::MAX,
            time::Time::MIDNIGHT,
        ));
    t.replace_nanosecond(0).unwrap_or(t)
}

/// The first 12 hex characters of a token's hash: what logs and audit events show.
fn token_ref(name: &str) -> String {
    token_hash(name)[..12].to_string()
}

/// How a token is named in messages and events: IAM token names are not secret; the names of
/// `token`-method tokens are, so they are shown as `sha256:` and the hash prefix, the name
/// their stored record carries.
fn token_display(t: &ProvisionToken) -> String {
    match t.spec.join_method {
        JoinMethod::Token => state::token_display_name(&token_hash(&t.metadata.name)),
        _ => t.metadata.name.clone(),
    }
}

/// How long a token expiring at `expires` lives from `now`, or `None` for never.
fn token_lifetime(now: OffsetDateTime, expires: Option<OffsetDateTime>) -> Option<Duration> {
    expires.map(|e| Duration::try_from(e - now).unwrap_or(Duration::ZERO))
}

/// Slack for the clock of the `tctl` that computed a token's expiry.
const TOKEN_TTL_SLACK: Duration = Duration::from_secs(60);

fn dedup(v: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(v.len());
    for s in v {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}

/// The logins `roles` allow for a user with `logins_trait`, in role order, without repeats.
pub(crate) fn expanded_logins(roles: &[Role], logins_trait: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for r in roles {
        for l in r.expanded_logins(logins_trait) {
            if !out.contains(&l) {
                out.push(l);
            }
        }
    }
    out
}

/// The role of bot `name`, impersonating `roles` and reading cert authorities.
pub(crate) fn bot_role(name: &str, roles: &[String]) -> Role {
    let mut metadata = Metadata::named(bot_role_name(name));
    metadata.description = Some(format!("Role of bot {name}"));
    metadata.labels.insert(BOT_LABEL.into(), name.into());
    Role {
        metadata,
        spec: RoleSpec {
            allow: RoleConditions {
                rules: vec![Rule::new(&[kind::CERT_AUTHORITY], &["read"])],
                impersonate: Some(ImpersonateConditions {
                    roles: roles.to_vec(),
                    users: vec![],
                }),
                ..RoleConditions::default()
            },
            ..RoleSpec::default()
        },
    }
}

/// The user of bot `name`: roles `[bot-<name>]`, labels bot and generation 0, traits logins.
pub(crate) fn bot_user(name: &str, logins: &[String]) -> User {
    let mut metadata = Metadata::named(bot_user_name(name));
    metadata.labels.insert(BOT_LABEL.into(), name.into());
    metadata.labels.insert(GENERATION_LABEL.into(), "0".into());
    User {
        metadata,
        spec: UserSpec {
            roles: vec![bot_role_name(name)],
            traits: BTreeMap::from([("logins".to_string(), logins.to_vec())]),
            last_renewal: None,
        },
    }
}

impl Core {
    // ---------------------------------------------------------------- authentication

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
    async fn stored_roles(&self, names: &[String]) -> Result<Vec<Role>> {
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
        let locks = self.state.list::<Lock>(state::LOCKS).await?;
        Ok(locks
            .into_iter()
            .map(|(l, _)| l)
            .find(|l| l.applies_to(user, roles, issued, now)))
    }

    /// Writes an `access.denied` event.
    pub async fn audit_denied(&self, user: &str, method: &str, message: &str) {
        self.audit(
            event_types::ACCESS_DENIED,
            Some(user),
            false,
            message.to_string(),
            json!({ "method": method }),
        )
        .await;
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

    // ---------------------------------------------------------------- audit

    /// Appends an event to the audit log. Best effort: a failure is logged, not returned, so
    /// the audit log never makes a call fail after its effect is committed.
    pub async fn audit(
        &self,
        event_type: &str,
        user: Option<&str>,
        success: bool,
        message: String,
        fields: serde_json::Value,
    ) {
        let now = self.clock.now();
        let nanos = {
            let mut last = self
                .last_event_nanos
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = now.unix_timestamp_nanos().max(*last + 1);
            *last = n;
            n
        };
        let id = uuid::Uuid::new_v4().to_string();
        let event = AuditEvent {
            id: id.clone(),
            time: now,
            event_type: event_type.to_string(),
            user: user.map(str::to_string),
            success,
            message,
            fields: match fields {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
        };
        let key = state::event_key(nanos, &id);
        if let Err(e) = self
            .state
            .create(&key, &event, || {
                AuthError::Internal("event id collision".into())
            })
            .await
        {
            tracing::error!(error = %e, event = event_type, "cannot write audit event");
        }
    }

    /// Appends an event caused by an unauthenticated caller from `remote` (a failed join, an
    /// anonymous proxy refusal), within the per-address rate limit. An event over the limit
    /// is counted, not written; the count is written as one `audit.dropped` event before the
    /// address's next admitted event, or by [`Self::flush_dropped_audit`].
    pub async fn audit_unauthenticated(
        &self,
        remote: Option<std::net::IpAddr>,
        event_type: &str,
        user: Option<&str>,
        message: String,
        fields: serde_json::Value,
    ) {
        let Some(ip) = remote else {
            return self.audit(event_type, user, false, message, fields).await;
        };
        match self.audit_limiter.admit(ip, self.clock.now()) {
            crate::limits::Admit::Yes { dropped_before } => {
                if dropped_before > 0 {
                    self.audit_dropped(ip, dropped_before).await;
                }
                self.audit(event_type, user, false, message, fields).await;
            }
            crate::limits::Admit::No { first } => {
                if first {
                    tracing::warn!(remote = %ip, event = event_type, "audit rate limit reached: events of unauthenticated calls from this address are counted, not written, until its bucket refills; an audit.dropped event will say how many");
                }
            }
        }
    }

    /// Writes one `audit.dropped` event for every address with events dropped by the rate
    /// limit and not yet summarized.
    pub async fn flush_dropped_audit(&self) {
        for (ip, n) in self.audit_limiter.take_dropped() {
            self.audit_dropped(ip, n).await;
        }
    }

    async fn audit_dropped(&self, ip: std::net::IpAddr, dropped: u64) {
        let from = if ip.is_unspecified() {
            "addresses beyond the tracked ones".to_string()
        } else {
            ip.to_string()
        };
        tracing::warn!(remote = %from, dropped, "audit events of unauthenticated calls were dropped by the rate limit");
        self.audit(
            event_types::AUDIT_DROPPED,
            None,
            false,
            format!(
                "{dropped} audit event(s) of unauthenticated calls from {from} were dropped by the per-address rate limit (limits.audit_events_per_minute_per_ip)"
            ),
            json!({ "remote_addr": from, "dropped": dropped }),
        )
        .await;
    }

    // ---------------------------------------------------------------- certificates

    fn ttl(&self, requested_secs: u64, max: Duration) -> Duration {
        let d = if requested_secs == 0 {
            self.limits.default_cert_ttl
        } else {
            Duration::from_secs(requested_secs)
        };
        d.min(max)
    }

    pub(crate) fn subject_key(der: &[u8]) -> Result<PublicKey> {
        if der.is_empty() {
            return Err(AuthError::InvalidArgument(
                "public_key is empty; send the DER SubjectPublicKeyInfo of the key to certify"
                    .into(),
            ));
        }
        PublicKey::from_spki_der(der).map_err(|e| {
            AuthError::InvalidArgument(format!(
                "public_key is not a supported DER SubjectPublicKeyInfo: {e}"
            ))
        })
    }

    /// Mints the SSH and X.509 certificates of `identity` for `subject`.
    fn issue(&self, subject: &PublicKey, identity: &Identity) -> Result<v1::Certs> {
        let now = self.clock.now();
        let ssh_cert = self.signer.sign_user_ssh_cert(subject, identity, now)?;
        let tls_cert = self.signer.sign_user_tls_cert(subject, identity, now)?;
        Ok(v1::Certs {
            ssh_cert,
            tls_cert,
            tls_ca_certs: self.tls_ca_certs(),
            ssh_ca_keys: vec![self.signer.user_ca_openssh(), self.signer.host_ca_openssh()],
        })
    }

    /// Issues a bot's own certificates (not an output's) for `subject`: the user's roles, the
    /// logins they allow with its `logins` trait, its traits, a TTL of `ttl_seconds` (0: the
    /// default) capped at the renewable maximum. `Some(generation)` makes them renewable with
    /// that generation (token joins and renewals); `None` makes them neither (IAM joins).
    pub(crate) async fn issue_bot_certs(
        &self,
        subject: &PublicKey,
        user: &User,
        generation: Option<u64>,
        ttl_seconds: u64,
        now: OffsetDateTime,
    ) -> Result<(v1::Certs, Identity)> {
        let roles = self.stored_roles(&user.spec.roles).await?;
        let ttl = self.ttl(ttl_seconds, self.limits.max_renewable_ttl);
        let identity = Identity {
            username: user.metadata.name.clone(),
            roles: user.spec.roles.clone(),
            logins: expanded_logins(&roles, user.logins()),
            traits: user.spec.traits.clone(),
            renewable: generation.is_some(),
            generation: generation.unwrap_or(0),
            impersonator: None,
            disallow_reissue: false,
            cluster: self.cluster_name.clone(),
            expires: add(now, ttl),
        };
        let certs = self.issue(subject, &identity)?;
        Ok((certs, identity))
    }

    /// The TLS CA certificates, DER.
    pub fn tls_ca_certs(&self) -> Vec<Vec<u8>> {
        vec![self.signer.tls_ca_cert_der().to_vec()]
    }

    /// RegisterUsingToken: exchanges a single-use bot token for the bot's first renewable
    /// identity (generation 1).
    pub async fn register_using_token(
        &self,
        req: v1::RegisterUsingTokenRequest,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<v1::Certs> {
        let token_ref = token_ref(&req.token);
        let remote_ip = remote.map(|a| a.ip());
        let remote = remote.map(|a| a.to_string()).unwrap_or_default();
        match self.join_with_token(&req).await {
            Ok((certs, user, generation)) => {
                tracing::info!(user = %user, token = %token_ref, remote = %remote, "bot joined");
                self.audit(
                    event_types::BOT_JOIN,
                    Some(&user),
                    true,
                    format!("{user} joined with a token"),
                    json!({ "method": "token", "token": token_ref, "generation": generation, "remote_addr": remote }),
                )
                .await;
                Ok(certs)
            }
            Err((e, user)) => {
                tracing::info!(token = %token_ref, remote = %remote, error = %e, "join refused");
                self.audit_unauthenticated(
                    remote_ip,
                    event_types::JOIN_FAILED,
                    user.as_deref(),
                    e.to_string(),
                    json!({ "method": "token", "token": token_ref, "remote_addr": remote }),
                )
                .await;
                Err(e)
            }
        }
    }

    async fn join_with_token(
        &self,
        req: &v1::RegisterUsingTokenRequest,
    ) -> std::result::Result<(v1::Certs, String, u64), (AuthError, Option<String>)> {
        let no_user = |e: AuthError| (e, None);
        if req.token.is_empty() {
            return Err(no_user(AuthError::InvalidArgument(
                "a join token is required; pass the one tctl bots add printed (--token)".into(),
            )));
        }
        if req.token.len() > 1024 {
            return Err(no_user(AuthError::AccessDenied(
                JoinError::TokenNotFound.to_string(),
            )));
        }
        let subject = Self::subject_key(&req.public_key).map_err(no_user)?;
        let token_key = state::token_key(&req.token);
        let now = self.clock.now();
        let (token, mut token_rev) = self
            .state
            .get::<ProvisionToken>(&token_key)
            .await
            .map_err(no_user)?
            .ok_or_else(|| {
                no_user(AuthError::AccessDenied(
                    JoinError::TokenNotFound.to_string(),
                ))
            })?;
        let bot = self
            .verify_token(&token_key, token, &req.token, now)
            .map_err(no_user)?;
        let user_name = bot_user_name(&bot);
        let with_user = |e: AuthError| (e, Some(user_name.clone()));
        let user_key = state::user_key(&user_name);
        let missing_bot = || {
            AuthError::AccessDenied(format!(
                "the join token names bot {bot:?}, which does not exist (deleted?); create it with tctl bots add {bot} --roles=..."
            ))
        };
        let (mut user, mut user_rev) = self
            .state
            .get::<User>(&user_key)
            .await
            .map_err(with_user)?
            .ok_or_else(|| with_user(missing_bot()))?;
        if user.bot_name() != Some(bot.as_str()) {
            return Err(with_user(missing_bot()));
        }
        if let Some(lock) = self
            .lock_for(&user_name, &user.spec.roles, now, now)
            .await
            .map_err(with_user)?
        {
            return Err(with_user(AuthError::AccessDenied(lock_message(
                &user_name, &lock,
            ))));
        }
        // Consume the token and reset the generation counter in one transaction: exactly one
        // of any number of concurrent joins with one token commits.
        let mut committed = false;
        for _ in 0..JOIN_CAS_ATTEMPTS {
            user.set_generation(1);
            user.spec.last_renewal = None;
            let ops = vec![
                Op::CompareAndDelete {
                    key: token_key.clone(),
                    revision: token_rev,
                },
                Op::CompareAndSwap {
                    key: user_key.clone(),
                    revision: user_rev,
                    value: state::encode(&user).map_err(with_user)?,
                },
            ];
            match self.state.backend.atomic_write(ops).await {
                Ok(_) => {
                    committed = true;
                    break;
                }
                Err(StoreError::NotFound { key }) if key == token_key => {
                    return Err(with_user(AuthError::AccessDenied(
                        JoinError::TokenNotFound.to_string(),
                    )));
                }
                // The record changed without being consumed (the startup migration rewrote
                // it hashed, or an admin updated it): check it again at its new revision. A
                // consumed token is gone, so this never admits a second join.
                Err(StoreError::Conflict { key }) if key == token_key => {
                    let (t, r) = self
                        .state
                        .get::<ProvisionToken>(&token_key)
                        .await
                        .map_err(with_user)?
                        .ok_or_else(|| {
                            with_user(AuthError::AccessDenied(
                                JoinError::TokenNotFound.to_string(),
                            ))
                        })?;
                    if self
                        .verify_token(&token_key, t, &req.token, now)
                        .map_err(with_user)?
                        != bot
                    {
                        return Err(with_user(AuthError::AccessDenied(
                            JoinError::TokenNotFound.to_string(),
                        )));
                    }
                    token_rev = r;
                }
                Err(StoreError::Conflict { key }) if key == user_key => {
                    let (u, r) = self
                        .state
                        .get::<User>(&user_key)
                        .await
                        .map_err(with_user)?
                        .ok_or_else(|| with_user(missing_bot()))?;
                    user = u;
                    user_rev = r;
                }
                Err(StoreError::NotFound { key }) if key == user_key => {
                    return Err(with_user(missing_bot()));
                }
                Err(e) => return Err(with_user(e.into())),
            }
        }
        if !committed {
            return Err(with_user(AuthError::Retryable(
                "the bot's user kept changing concurrently; retry the join".into(),
            )));
        }
        let (certs, _) = self
            .issue_bot_certs(&subject, &user, Some(1), req.ttl_seconds, now)
            .await
            .map_err(with_user)?;
        Ok((certs, user_name, 1))
    }

    /// Checks the record stored at `key` (the hash of `presented`) against the presented
    /// secret: expiry, method, role Bot and bot name (`machine_id_join::token::verify`). A
    /// hashed record holds no secret to compare: finding it under the hash of `presented` is
    /// the proof, so the check runs on the record with the presented secret as its name.
    fn verify_token(
        &self,
        key: &str,
        mut token: ProvisionToken,
        presented: &str,
        now: OffsetDateTime,
    ) -> Result<String> {
        if token.spec.join_method == JoinMethod::Token && !state::holds_secret(key, &token) {
            token.metadata.name = presented.to_string();
        }
        machine_id_join::token::verify(&token, presented, now)
            .map_err(|e| AuthError::AccessDenied(e.to_string()))
    }

    /// GenerateUserCerts: renewal of the caller's own renewable identity (no role requests)
    /// or role impersonation (role requests set).
    pub async fn generate_user_certs(
        &self,
        caller: &Caller,
        req: v1::GenerateUserCertsRequest,
    ) -> Result<v1::Certs> {
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
            self.renew(caller, &subject, &req.public_key, req.ttl_seconds)
                .await
        } else {
            self.impersonate(caller, &subject, &req.role_requests, req.ttl_seconds)
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
        ttl_seconds: u64,
    ) -> Result<v1::Certs> {
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
        let (mut user, rev) = self.state.get::<User>(&user_key).await?.ok_or_else(|| {
            AuthError::AccessDenied(format!(
                "user {:?} no longer exists (was the bot deleted?); create the bot again and join with a new token",
                id.username
            ))
        })?;
        let now = self.clock.now();
        let stored = user.generation();
        let request = LastRenewal {
            parent: caller.cert_sha256.clone(),
            public_key: sha256_hex(subject_spki),
            generation: stored,
        };
        if id.generation.checked_add(1) == Some(stored)
            && user.spec.last_renewal.as_ref() == Some(&request)
        {
            // The answer to this very renewal was lost (the server or the connection died
            // after the commit): answer it again. Nothing moves, so any number of retries
            // leave the bot at `stored`, and the next renewal from the certificate issued
            // here proceeds normally.
            let (certs, identity) = self
                .issue_bot_certs(subject, &user, Some(stored), ttl_seconds, now)
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
        // A renewal for the key the certificate already certifies is not retriable: a copy
        // of the identity holds that key, so its replay must stay a mismatch.
        user.spec.last_renewal = (request.public_key != caller.key_sha256).then_some(LastRenewal {
            generation,
            ..request
        });
        match self
            .state
            .backend
            .compare_and_swap(&user_key, rev, state::encode(&user)?)
            .await
        {
            Ok(_) => {}
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
        let (certs, identity) = self
            .issue_bot_certs(subject, &user, Some(generation), ttl_seconds, now)
            .await?;
        tracing::info!(user = %id.username, generation, "renewed certificates");
        self.audit(
            event_types::CERT_CREATE,
            Some(&id.username),
            true,
            format!("renewed the certificates of {}", id.username),
            json!({ "kind": "renewal", "generation": generation, "expires": rfc3339(identity.expires) }),
        )
        .await;
        Ok(certs)
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
        ttl_seconds: u64,
    ) -> Result<v1::Certs> {
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
        let expires = add(now, self.ttl(ttl_seconds, max)).min(id.expires);
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

    // ---------------------------------------------------------------- roles

    /// GetRole. Every caller may read the roles its own certificate holds (a bot reads its
    /// `bot-NAME` role to learn which roles it may impersonate); other roles need the rule.
    pub async fn get_role(&self, caller: &Caller, name: &str) -> Result<Role> {
        if !caller.identity.roles.iter().any(|r| r == name) {
            self.authorize(caller, "GetRole", kind::ROLE, Verb::Read)
                .await?;
        }
        state::check_key_name("role", name)?;
        self.state
            .get::<Role>(&state::role_key(name))
            .await?
            .map(|(r, _)| r)
            .ok_or_else(|| not_found("role", name, "tctl get roles"))
    }

    /// ListRoles.
    pub async fn list_roles(&self, caller: &Caller) -> Result<Vec<Role>> {
        self.authorize(caller, "ListRoles", kind::ROLE, Verb::List)
            .await?;
        Ok(self
            .state
            .list::<Role>(state::ROLES)
            .await?
            .into_iter()
            .map(|(r, _)| r)
            .collect())
    }

    /// UpsertRole.
    pub async fn upsert_role(
        &self,
        caller: &Caller,
        role: Role,
        create_only: bool,
    ) -> Result<Role> {
        let name = role.metadata.name.clone();
        state::check_key_name("role", &name)?;
        let key = state::role_key(&name);
        self.upsert(
            caller,
            "UpsertRole",
            kind::ROLE,
            &key,
            &name,
            &role,
            create_only,
        )
        .await?;
        Ok(role)
    }

    /// Creates or overwrites `value` at `key` with the RBAC and audit every kind shares.
    #[allow(clippy::too_many_arguments)] // one shared helper for five resource kinds
    async fn upsert<T: serde::Serialize>(
        &self,
        caller: &Caller,
        method: &str,
        resource: &str,
        key: &str,
        shown: &str,
        value: &T,
        create_only: bool,
    ) -> Result<()> {
        let exists = self.state.backend.get(key).await?.is_some();
        let verb = if exists && !create_only {
            Verb::Update
        } else {
            Verb::Create
        };
        self.authorize(caller, method, resource, verb).await?;
        let already = || {
            AuthError::AlreadyExists(format!(
                "{resource} {shown} already exists; use -f/--force to overwrite it"
            ))
        };
        if create_only {
            if exists {
                return Err(already());
            }
            self.state.create(key, value, already).await?;
        } else {
            self.state.put(key, value).await?;
        }
        tracing::info!(user = %caller.identity.username, kind = resource, name = %shown, "resource written");
        let event = if resource == kind::LOCK {
            event_types::LOCK_CREATE
        } else {
            event_types::RESOURCE_PUT
        };
        self.audit(
            event,
            Some(&caller.identity.username),
            true,
            format!(
                "{resource} {shown} {}",
                if exists { "updated" } else { "created" }
            ),
            json!({ "kind": resource, "name": shown }),
        )
        .await;
        Ok(())
    }

    /// Deletes `key` with the RBAC and audit every kind shares.
    async fn delete(
        &self,
        caller: &Caller,
        method: &str,
        resource: &str,
        key: &str,
        shown: &str,
        hint: &str,
    ) -> Result<()> {
        self.authorize(caller, method, resource, Verb::Delete)
            .await?;
        self.state
            .delete(key, || not_found(resource, shown, hint))
            .await?;
        tracing::info!(user = %caller.identity.username, kind = resource, name = %shown, "resource deleted");
        let event = if resource == kind::LOCK {
            event_types::LOCK_DELETE
        } else {
            event_types::RESOURCE_DELETE
        };
        self.audit(
            event,
            Some(&caller.identity.username),
            true,
            format!("{resource} {shown} deleted"),
            json!({ "kind": resource, "name": shown }),
        )
        .await;
        Ok(())
    }

    /// DeleteRole. Refused while a user holds the role or a bot may impersonate it.
    pub async fn delete_role(&self, caller: &Caller, name: &str) -> Result<()> {
        self.authorize(caller, "DeleteRole", kind::ROLE, Verb::Delete)
            .await?;
        state::check_key_name("role", name)?;
        let key = state::role_key(name);
        if self.state.backend.get(&key).await?.is_none() {
            return Err(not_found("role", name, "tctl get roles"));
        }
        for (u, _) in self.state.list::<User>(state::USERS).await? {
            if u.spec.roles.iter().any(|r| r == name) {
                let hint = match u.bot_name() {
                    Some(bot) => format!("delete the bot first (tctl bots rm {bot})"),
                    None => "remove the role from the user first".to_string(),
                };
                return Err(AuthError::FailedPrecondition(format!(
                    "role {name:?} is in use by user {:?}; {hint}",
                    u.metadata.name
                )));
            }
        }
        for (r, _) in self.state.list::<Role>(state::ROLES).await? {
            let Some(bot) = r.metadata.labels.get(BOT_LABEL) else {
                continue;
            };
            if r.spec
                .allow
                .impersonate
                .as_ref()
                .is_some_and(|i| i.roles.iter().any(|x| x == name))
            {
                return Err(AuthError::FailedPrecondition(format!(
                    "role {name:?} is in use by bot {bot:?}, which may impersonate it; delete the bot first (tctl bots rm {bot}) or add it again without this role"
                )));
            }
        }
        self.delete(
            caller,
            "DeleteRole",
            kind::ROLE,
            &key,
            name,
            "tctl get roles",
        )
        .await
    }

    // ---------------------------------------------------------------- tokens

    /// The stored token `name` refers to: the token named so (for a `token`-method token, the
    /// secret), else the secret token whose display name (`sha256:<hex prefix>`, as `tctl
    /// tokens ls` shows it) `name` is. Returns its key, its public view and its revision.
    async fn find_token(
        &self,
        name: &str,
    ) -> Result<Option<(String, ProvisionToken, machine_id_store::Revision)>> {
        state::check_key_name("token", name)?;
        let key = state::token_key(name);
        if let Some((t, rev)) = self.state.get::<ProvisionToken>(&key).await? {
            let public = state::public_token(&key, t);
            return Ok(Some((key, public, rev)));
        }
        if !name.starts_with(state::TOKEN_DISPLAY_PREFIX) {
            return Ok(None);
        }
        let mut found = Vec::new();
        for item in self.state.backend.range(state::TOKENS).await? {
            if !state::token_key_matches_display(&item.key, name) {
                continue;
            }
            let t: ProvisionToken = state::decode(&item.key, &item.value)?;
            if t.spec.join_method == JoinMethod::Token {
                found.push((
                    item.key.clone(),
                    state::public_token(&item.key, t),
                    item.revision,
                ));
            }
        }
        match found.len() {
            0 | 1 => Ok(found.pop()),
            n => Err(AuthError::InvalidArgument(format!(
                "{n} tokens start with {name:?}; give more hex characters of the hash"
            ))),
        }
    }

    /// GetToken: by name, or by the display name of a secret token. The secret of a
    /// `token`-method token is never returned: the store does not hold it.
    pub async fn get_token(&self, caller: &Caller, name: &str) -> Result<ProvisionToken> {
        self.authorize(caller, "GetToken", kind::TOKEN, Verb::Read)
            .await?;
        self.find_token(name)
            .await?
            .map(|(_, t, _)| t)
            .ok_or_else(token_not_found)
    }

    /// ListTokens: `token`-method tokens under their display names.
    pub async fn list_tokens(&self, caller: &Caller) -> Result<Vec<ProvisionToken>> {
        self.authorize(caller, "ListTokens", kind::TOKEN, Verb::List)
            .await?;
        let mut v = Vec::new();
        for item in self.state.backend.range(state::TOKENS).await? {
            let t: ProvisionToken = state::decode(&item.key, &item.value)?;
            v.push(state::public_token(&item.key, t));
        }
        v.sort_by(|a, b| {
            (a.metadata.expires, &a.metadata.name).cmp(&(b.metadata.expires, &b.metadata.name))
        });
        Ok(v)
    }

    /// Refuses a `token`-method token that would live longer than the configured maximum
    /// (or forever). `what` says where the lifetime came from, for the message.
    fn check_token_ttl(&self, lifetime: Option<Duration>, what: &str) -> Result<()> {
        let max = self.limits.max_token_ttl;
        let max_text = machine_id_types::duration::format(max);
        match lifetime {
            None => Err(AuthError::InvalidArgument(format!(
                "{what}: a token-method join token must expire, within {max_text}; set metadata.expires (or use tctl tokens add --ttl)"
            ))),
            Some(d) if d > max + TOKEN_TTL_SLACK => Err(AuthError::InvalidArgument(format!(
                "{what}: the token would live {}, longer than this cluster's maximum of {max_text} for token-method join tokens (auth_service.max_token_ttl in the auth server's config); ask for a shorter --ttl",
                machine_id_types::duration::format(Duration::from_secs(d.as_secs()))
            ))),
            Some(_) => Ok(()),
        }
    }

    /// UpsertToken. A `token`-method token is stored without its secret (see
    /// [`state::token_record`]) and may live at most the configured maximum; the token is
    /// returned as given, so its creator sees its secret this once.
    pub async fn upsert_token(
        &self,
        caller: &Caller,
        token: ProvisionToken,
        create_only: bool,
    ) -> Result<ProvisionToken> {
        state::check_key_name("token", &token.metadata.name)?;
        if token.spec.join_method == JoinMethod::Token {
            if token.metadata.name.starts_with(state::TOKEN_DISPLAY_PREFIX) {
                return Err(AuthError::InvalidArgument(format!(
                    "a token-method token's name is its secret, and names starting with {:?} are how stored tokens are shown (tctl get tokens), so it would be a secret everyone can read; choose another name, or use tctl tokens add",
                    state::TOKEN_DISPLAY_PREFIX
                )));
            }
            self.check_token_ttl(
                token_lifetime(self.clock.now(), token.metadata.expires),
                "metadata.expires",
            )?;
        }
        let key = state::token_key(&token.metadata.name);
        let shown = token_display(&token);
        let record = state::token_record(&token);
        self.upsert(
            caller,
            "UpsertToken",
            kind::TOKEN,
            &key,
            &shown,
            &record,
            create_only,
        )
        .await?;
        Ok(token)
    }

    /// DeleteToken: by name (the secret) or by the display name of a secret token.
    pub async fn delete_token(&self, caller: &Caller, name: &str) -> Result<()> {
        self.authorize(caller, "DeleteToken", kind::TOKEN, Verb::Delete)
            .await?;
        let (key, shown, rev) = match self.find_token(name).await? {
            Some((key, t, rev)) => (key, t.metadata.name, rev),
            None => return Err(token_not_found()),
        };
        match self.state.backend.compare_and_delete(&key, rev).await {
            Ok(()) => {}
            Err(StoreError::NotFound { .. }) => return Err(token_not_found()),
            Err(StoreError::Conflict { .. }) => {
                return Err(AuthError::Retryable(format!(
                    "token {shown} changed while it was being deleted; retry"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(user = %caller.identity.username, token = %shown, "token deleted");
        self.audit(
            event_types::RESOURCE_DELETE,
            Some(&caller.identity.username),
            true,
            format!("token {shown} deleted"),
            json!({ "kind": kind::TOKEN, "name": shown }),
        )
        .await;
        Ok(())
    }

    // ---------------------------------------------------------------- users

    /// GetUser.
    pub async fn get_user(&self, caller: &Caller, name: &str) -> Result<User> {
        self.authorize(caller, "GetUser", kind::USER, Verb::Read)
            .await?;
        state::check_key_name("user", name)?;
        self.state
            .get::<User>(&state::user_key(name))
            .await?
            .map(|(u, _)| u)
            .ok_or_else(|| not_found("user", name, "tctl get users"))
    }

    /// ListUsers.
    pub async fn list_users(&self, caller: &Caller) -> Result<Vec<User>> {
        self.authorize(caller, "ListUsers", kind::USER, Verb::List)
            .await?;
        Ok(self
            .state
            .list::<User>(state::USERS)
            .await?
            .into_iter()
            .map(|(u, _)| u)
            .collect())
    }

    // ---------------------------------------------------------------- nodes

    /// GetNode.
    pub async fn get_node(&self, caller: &Caller, name: &str) -> Result<Node> {
        self.authorize(caller, "GetNode", kind::NODE, Verb::Read)
            .await?;
        state::check_key_name("node", name)?;
        self.state
            .get::<Node>(&state::node_key(name))
            .await?
            .map(|(n, _)| n)
            .ok_or_else(|| not_found("node", name, "tctl nodes ls"))
    }

    /// ListNodes: every node for the admin and for callers whose roles allow `node:list` by
    /// rule (`tctl nodes ls`); for every other authenticated caller (a bot's output
    /// certificate under `tsh ls`) only the nodes its roles reach by `node_labels`, which may
    /// be none. Never an access error: a caller learns of no node it may not reach.
    pub async fn list_nodes(&self, caller: &Caller) -> Result<Vec<Node>> {
        let is_admin = caller.identity.is_admin();
        let by_rule = rbac::allowed(is_admin, &caller.roles, kind::NODE, Verb::List);
        Ok(self
            .state
            .list::<Node>(state::NODES)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| by_rule || rbac::node_allowed(is_admin, &caller.roles, &n.metadata.labels))
            .collect())
    }

    /// UpsertNode.
    pub async fn upsert_node(
        &self,
        caller: &Caller,
        node: Node,
        create_only: bool,
    ) -> Result<Node> {
        let name = node.metadata.name.clone();
        state::check_key_name("node", &name)?;
        let key = state::node_key(&name);
        self.upsert(
            caller,
            "UpsertNode",
            kind::NODE,
            &key,
            &name,
            &node,
            create_only,
        )
        .await?;
        Ok(node)
    }

    /// DeleteNode.
    pub async fn delete_node(&self, caller: &Caller, name: &str) -> Result<()> {
        state::check_key_name("node", name)?;
        self.delete(
            caller,
            "DeleteNode",
            kind::NODE,
            &state::node_key(name),
            name,
            "tctl nodes ls",
        )
        .await
    }

    // ---------------------------------------------------------------- locks

    /// ListLocks.
    pub async fn list_locks(&self, caller: &Caller) -> Result<Vec<Lock>> {
        self.authorize(caller, "ListLocks", kind::LOCK, Verb::List)
            .await?;
        let mut v: Vec<Lock> = self
            .state
            .list::<Lock>(state::LOCKS)
            .await?
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        v.sort_by(|a, b| {
            (a.spec.created, &a.metadata.name).cmp(&(b.spec.created, &b.metadata.name))
        });
        Ok(v)
    }

    /// UpsertLock.
    pub async fn upsert_lock(
        &self,
        caller: &Caller,
        mut lock: Lock,
        create_only: bool,
    ) -> Result<Lock> {
        let name = lock.metadata.name.clone();
        state::check_key_name("lock", &name)?;
        let target = &lock.spec.target;
        if target.user.as_deref() == Some(ADMIN_USER) || target.role.as_deref() == Some(ADMIN_ROLE)
        {
            let msg = format!(
                "lock {name:?} targets the admin identity (user {ADMIN_USER:?}, role {ADMIN_ROLE:?}), which is refused: it would shut every administrator out, even from removing the lock; lock the bot, user or role that misbehaves instead"
            );
            self.audit_denied(&caller.identity.username, "UpsertLock", &msg)
                .await;
            return Err(AuthError::InvalidArgument(msg));
        }
        if lock.spec.created.is_none() {
            lock.spec.created = Some(self.clock.now());
        }
        let key = state::lock_key(&name);
        self.upsert(
            caller,
            "UpsertLock",
            kind::LOCK,
            &key,
            &name,
            &lock,
            create_only,
        )
        .await?;
        Ok(lock)
    }

    /// DeleteLock.
    pub async fn delete_lock(&self, caller: &Caller, name: &str) -> Result<()> {
        state::check_key_name("lock", name)?;
        self.delete(
            caller,
            "DeleteLock",
            kind::LOCK,
            &state::lock_key(name),
            name,
            "tctl locks ls",
        )
        .await
    }

    // ---------------------------------------------------------------- bots

    /// CreateBot: checks the roles first, then creates the bot's role, user and (unless an
    /// existing token is named) a fresh single-use token in one transaction.
    pub async fn create_bot(
        &self,
        caller: &Caller,
        req: v1::CreateBotRequest,
    ) -> Result<v1::CreateBotResponse> {
        self.authorize(caller, "CreateBot", kind::BOT, Verb::Create)
            .await?;
        let name = req.name.trim().to_string();
        if name.is_empty() {
            return Err(AuthError::InvalidArgument(
                "a bot name is required (tctl bots add NAME --roles=...)".into(),
            ));
        }
        state::check_key_name("bot", &name)?;
        let roles = dedup(&req.roles);
        // Every role must exist before anything is written.
        for r in &roles {
            state::check_key_name("role", r)
                .map_err(|_| AuthError::InvalidArgument(format!("invalid role name {r:?}")))?;
            if r.starts_with('@') || self.state.backend.get(&state::role_key(r)).await?.is_none() {
                let known: Vec<String> = self
                    .state
                    .list::<Role>(state::ROLES)
                    .await?
                    .into_iter()
                    .map(|(r, _)| r.metadata.name)
                    .filter(|n| !n.starts_with("bot-"))
                    .collect();
                return Err(AuthError::NotFound(format!(
                    "role {r:?} does not exist, so bot {name:?} was not created; create the role first (tctl create -f role.yaml) or use one of: {}",
                    known.join(", ")
                )));
            }
        }
        self.wait_out_deletion_locks(&bot_user_name(&name)).await?;
        let role = bot_role(&name, &roles);
        let user = bot_user(&name, &req.logins);
        role.validate()
            .map_err(|e| AuthError::InvalidArgument(e.to_string()))?;
        user.validate()
            .map_err(|e| AuthError::InvalidArgument(e.to_string()))?;
        let now = self.clock.now();
        let role_key = state::role_key(&role.metadata.name);
        let user_key = state::user_key(&user.metadata.name);
        let mut ops = vec![
            Op::Create {
                key: role_key.clone(),
                value: state::encode(&role)?,
            },
            Op::Create {
                key: user_key.clone(),
                value: state::encode(&user)?,
            },
        ];
        let (token_name, token_expires, join_method) = if req.token_name.is_empty() {
            let secret = machine_id_join::token::generate();
            let ttl = if req.token_ttl_seconds == 0 {
                self.limits.default_token_ttl
            } else {
                Duration::from_secs(req.token_ttl_seconds)
            };
            self.check_token_ttl(Some(ttl), "token_ttl")?;
            let expires = add(now, ttl);
            let token = ProvisionToken::bot_join(secret.expose(), &name, expires);
            // The secret is answered once, below, and never stored.
            ops.push(Op::Create {
                key: state::token_key(secret.expose()),
                value: state::encode(&state::token_record(&token))?,
            });
            (
                secret.expose().to_string(),
                Some(expires),
                JoinMethod::Token,
            )
        } else {
            let tname = req.token_name.as_str();
            state::check_key_name("token", tname)?;
            let (tok, _) = self
                .state
                .get::<ProvisionToken>(&state::token_key(tname))
                .await?
                .ok_or_else(|| {
                    AuthError::NotFound(format!(
                        "token {tname:?} not found, so bot {name:?} was not created; create it first (tctl create -f token.yaml)"
                    ))
                })?;
            if !tok.allows_bot() {
                return Err(AuthError::InvalidArgument(format!(
                    "token {tname:?} does not include role Bot; set spec.roles: [Bot] in the token"
                )));
            }
            if tok.spec.bot_name.as_deref() != Some(name.as_str()) {
                return Err(AuthError::InvalidArgument(format!(
                    "token {tname:?} is for bot {:?}, not {name:?}; set spec.bot_name: {name} in the token",
                    tok.spec.bot_name.as_deref().unwrap_or("")
                )));
            }
            if tok.metadata.is_expired(now) {
                return Err(AuthError::InvalidArgument(format!(
                    "token {tname:?} expired at {}; create a new one",
                    tok.metadata.expires.map(rfc3339).unwrap_or_default()
                )));
            }
            (
                tname.to_string(),
                tok.metadata.expires,
                tok.spec.join_method,
            )
        };
        match self.state.backend.atomic_write(ops).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists { key }) if key == role_key || key == user_key => {
                return Err(AuthError::AlreadyExists(format!(
                    "bot {name:?} already exists (its user or role bot-{name} exists); remove it first with tctl bots rm {name}"
                )));
            }
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(AuthError::Retryable("token collision; retry".into()));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(user = %caller.identity.username, bot = %name, roles = %roles.join(","), join_method = %join_method, "bot created");
        self.audit(
            event_types::BOT_CREATE,
            Some(&caller.identity.username),
            true,
            format!("bot {name} created with roles [{}]", roles.join(", ")),
            json!({ "bot": name, "roles": roles, "join_method": join_method.as_str(), "token": token_ref(&token_name) }),
        )
        .await;
        Ok(v1::CreateBotResponse {
            bot: Some(
                Bot {
                    name: name.clone(),
                    user_name: bot_user_name(&name),
                    roles,
                    locked: false,
                }
                .into(),
            ),
            token_name,
            token_expires: token_expires.map(machine_id_proto::timestamp_from),
            join_method: join_method.as_str().to_string(),
        })
    }

    /// The bot view of a bot user.
    async fn bot_of(
        &self,
        user: &User,
        locks: &[Lock],
        now: OffsetDateTime,
    ) -> Result<Option<Bot>> {
        let Some(name) = user.bot_name() else {
            return Ok(None);
        };
        let roles = match self
            .state
            .get::<Role>(&state::role_key(&bot_role_name(name)))
            .await?
        {
            Some((r, _)) => r
                .spec
                .allow
                .impersonate
                .map(|i| i.roles)
                .unwrap_or_default(),
            None => vec![],
        };
        Ok(Some(Bot {
            name: name.to_string(),
            user_name: user.metadata.name.clone(),
            roles,
            locked: locks
                .iter()
                .any(|l| l.applies_to(&user.metadata.name, &user.spec.roles, now, now)),
        }))
    }

    /// GetBot.
    pub async fn get_bot(&self, caller: &Caller, name: &str) -> Result<Bot> {
        self.authorize(caller, "GetBot", kind::BOT, Verb::Read)
            .await?;
        state::check_key_name("bot", name)?;
        let locks: Vec<Lock> = self
            .state
            .list::<Lock>(state::LOCKS)
            .await?
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        let user = self
            .state
            .get::<User>(&state::user_key(&bot_user_name(name)))
            .await?
            .map(|(u, _)| u);
        match user {
            Some(u) if u.bot_name() == Some(name) => self
                .bot_of(&u, &locks, self.clock.now())
                .await?
                .ok_or_else(|| not_found("bot", name, "tctl bots ls")),
            _ => Err(not_found("bot", name, "tctl bots ls")),
        }
    }

    /// ListBots.
    pub async fn list_bots(&self, caller: &Caller) -> Result<Vec<Bot>> {
        self.authorize(caller, "ListBots", kind::BOT, Verb::List)
            .await?;
        let locks: Vec<Lock> = self
            .state
            .list::<Lock>(state::LOCKS)
            .await?
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        let now = self.clock.now();
        let mut out = Vec::new();
        for (u, _) in self.state.list::<User>(state::USERS).await? {
            if let Some(b) = self.bot_of(&u, &locks, now).await? {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// A bot created again under a deleted bot's name must not fall under the lock that
    /// revoked the old bot's certificates: those locks hold certificates issued before the
    /// second the bot was deleted ended, so creation waits out that second (at most one).
    async fn wait_out_deletion_locks(&self, user: &str) -> Result<()> {
        let now = self.clock.now();
        let until = self
            .state
            .list::<Lock>(state::LOCKS)
            .await?
            .into_iter()
            .filter(|(l, _)| l.spec.target.user.as_deref() == Some(user))
            .filter_map(|(l, _)| l.spec.issued_before)
            .filter(|t| *t > now)
            .max();
        if let Some(t) = until {
            let wait = Duration::try_from(t - now)
                .unwrap_or_default()
                .min(Duration::from_secs(1));
            tracing::debug!(
                user,
                ?wait,
                "waiting out the second a bot of this name was deleted in"
            );
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// DeleteBot: the bot's user, role and `token`-method tokens, and a lock on every
    /// certificate issued to the bot so far (its user until its longest-lived certificate has
    /// expired, for certificates issued up to now), in one transaction. Other locks on the
    /// bot's user are kept (they are a record of an incident; remove them with DeleteLock).
    pub async fn delete_bot(&self, caller: &Caller, name: &str) -> Result<()> {
        self.authorize(caller, "DeleteBot", kind::BOT, Verb::Delete)
            .await?;
        state::check_key_name("bot", name)?;
        let user_name = bot_user_name(name);
        let user_key = state::user_key(&user_name);
        let (user, user_rev) = match self.state.get::<User>(&user_key).await? {
            Some((u, r)) if u.bot_name() == Some(name) => (u, r),
            _ => return Err(not_found("bot", name, "tctl bots ls")),
        };
        let now = self.clock.now();
        // Bot names are at most 249 characters; lock names 253.
        let short: String = name.chars().take(200).collect();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let lock_name = format!("bot-deleted-{short}-{}", &id[..8]);
        // Certificates carry whole seconds: everything issued up to now was issued before the
        // next whole second. None outlives the longest renewable TTL (outputs never outlive
        // the bot's own certificate).
        let issued_before = now.replace_nanosecond(0).unwrap_or(now) + time::Duration::SECOND;
        let lock = Lock {
            metadata: Metadata {
                expires: Some(add(
                    now,
                    self.limits.max_renewable_ttl + Duration::from_secs(120),
                )),
                ..Metadata::named(&lock_name)
            },
            spec: LockSpec {
                target: LockTarget {
                    user: Some(user_name.clone()),
                    role: None,
                },
                message: format!(
                    "bot {name:?} was deleted by {}: its certificates issued until then are revoked",
                    caller.identity.username
                ),
                created: Some(now),
                issued_before: Some(issued_before),
            },
        };
        let mut ops = vec![
            Op::CompareAndDelete {
                key: user_key,
                revision: user_rev,
            },
            Op::Create {
                key: state::lock_key(&lock_name),
                value: state::encode(&lock)?,
            },
        ];
        let role_key = state::role_key(&bot_role_name(name));
        if let Some((role, rev)) = self.state.get::<Role>(&role_key).await?
            && role.metadata.labels.get(BOT_LABEL).map(String::as_str) == Some(name)
        {
            ops.push(Op::CompareAndDelete {
                key: role_key,
                revision: rev,
            });
        }
        let mut tokens = 0;
        for item in self.state.backend.range(state::TOKENS).await? {
            let t: ProvisionToken = state::decode(&item.key, &item.value)?;
            if t.spec.join_method == JoinMethod::Token && t.spec.bot_name.as_deref() == Some(name) {
                tokens += 1;
                ops.push(Op::CompareAndDelete {
                    key: item.key,
                    revision: item.revision,
                });
            }
        }
        match self.state.backend.atomic_write(ops).await {
            Ok(_) => {}
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {
                return Err(AuthError::Retryable(format!(
                    "bot {name:?} changed while it was being deleted (a join or renewal?); retry"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(user = %caller.identity.username, bot = %name, tokens, "bot deleted");
        self.audit(
            event_types::BOT_DELETE,
            Some(&caller.identity.username),
            true,
            format!("bot {name} deleted"),
            json!({ "bot": name, "user": user.metadata.name, "tokens_deleted": tokens, "lock": lock_name }),
        )
        .await;
        Ok(())
    }

    /// LockBot: locks the bot's user.
    pub async fn lock_bot(&self, caller: &Caller, req: v1::LockBotRequest) -> Result<Lock> {
        self.authorize(caller, "LockBot", kind::LOCK, Verb::Create)
            .await?;
        let name = req.name.as_str();
        state::check_key_name("bot", name)?;
        let user_name = bot_user_name(name);
        match self.state.get::<User>(&state::user_key(&user_name)).await? {
            Some((u, _)) if u.bot_name() == Some(name) => {}
            _ => return Err(not_found("bot", name, "tctl bots ls")),
        }
        let now = self.clock.now();
        let lock_name = uuid::Uuid::new_v4().to_string();
        let lock = Lock {
            metadata: Metadata {
                expires: (req.ttl_seconds > 0)
                    .then(|| add(now, Duration::from_secs(req.ttl_seconds))),
                ..Metadata::named(&lock_name)
            },
            spec: LockSpec {
                target: LockTarget {
                    user: Some(user_name.clone()),
                    role: None,
                },
                message: if req.message.is_empty() {
                    format!("locked by {}", caller.identity.username)
                } else {
                    req.message.clone()
                },
                created: Some(now),
                issued_before: None,
            },
        };
        self.state
            .create(&state::lock_key(&lock_name), &lock, || {
                AuthError::Retryable("lock id collision; retry".into())
            })
            .await?;
        tracing::info!(user = %caller.identity.username, bot = %name, lock = %lock_name, "bot locked");
        self.audit(
            event_types::LOCK_CREATE,
            Some(&caller.identity.username),
            true,
            format!("bot {name} locked: {}", lock.spec.message),
            json!({ "kind": kind::LOCK, "name": lock_name, "target": lock.target_text() }),
        )
        .await;
        Ok(lock)
    }

    // ---------------------------------------------------------------- CAs, host certs, events

    /// ExportCA.
    pub async fn export_ca(&self, caller: &Caller, ca_type: &str) -> Result<v1::ExportCaResponse> {
        self.authorize(caller, "ExportCA", kind::CERT_AUTHORITY, Verb::Read)
            .await?;
        use machine_id_types::ca_kind;
        Ok(match ca_type {
            ca_kind::USER => v1::ExportCaResponse {
                ssh_public_keys: vec![self.signer.user_ca_openssh()],
                tls_certs: vec![],
            },
            ca_kind::HOST => v1::ExportCaResponse {
                ssh_public_keys: vec![self.signer.host_ca_openssh()],
                tls_certs: vec![],
            },
            ca_kind::TLS => v1::ExportCaResponse {
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
        req: v1::SignHostCertRequest,
    ) -> Result<v1::SignHostCertResponse> {
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
        let ttl = if req.ttl_seconds == 0 {
            self.limits.default_host_cert_ttl
        } else {
            Duration::from_secs(req.ttl_seconds).min(MAX_HOST_CERT_TTL)
        };
        let not_after = add(now, ttl);
        let ssh_cert = self
            .signer
            .sign_host_ssh_cert(&subject, &principals, now, not_after)?;
        tracing::info!(user = %caller.identity.username, principals = %principals.join(","), "host certificate signed");
        self.audit(
            event_types::HOST_CERT,
            Some(&caller.identity.username),
            true,
            format!("host certificate for {}", principals.join(", ")),
            json!({ "principals": principals, "expires": rfc3339(not_after) }),
        )
        .await;
        Ok(v1::SignHostCertResponse {
            ssh_cert,
            host_ca_key: self.signer.host_ca_openssh(),
        })
    }

    /// SearchEvents: oldest first, the newest `limit` of those matching.
    pub async fn search_events(
        &self,
        caller: &Caller,
        req: v1::SearchEventsRequest,
    ) -> Result<Vec<AuditEvent>> {
        self.authorize(caller, "SearchEvents", kind::EVENT, Verb::List)
            .await?;
        let since = req
            .since
            .as_ref()
            .map(machine_id_proto::timestamp_to)
            .transpose()
            .map_err(|e| AuthError::InvalidArgument(e.to_string()))?;
        let limit = match req.limit {
            0 => DEFAULT_EVENTS,
            n => (n as usize).min(MAX_EVENTS),
        };
        let mut events: Vec<AuditEvent> = self
            .state
            .list::<AuditEvent>(state::EVENTS)
            .await?
            .into_iter()
            .map(|(e, _)| e)
            .filter(|e| req.event_type.is_empty() || e.event_type == req.event_type)
            .filter(|e| since.is_none_or(|s| e.time >= s))
            .collect();
        if events.len() > limit {
            events.drain(..events.len() - limit);
        }
        Ok(events)
    }
}

pub(crate) fn lock_message(user: &str, lock: &Lock) -> String {
    let why = if lock.spec.message.is_empty() {
        "no reason given".to_string()
    } else {
        lock.spec.message.clone()
    };
    format!(
        "{user:?} is locked: {why} (lock {}); an administrator can remove the lock with tctl locks rm {}",
        lock.metadata.name, lock.metadata.name
    )
}

fn not_found(resource: &str, name: &str, hint: &str) -> AuthError {
    AuthError::NotFound(format!("{resource} {name:?} not found; see {hint}"))
}

fn token_not_found() -> AuthError {
    AuthError::NotFound(
        "token not found: it does not exist, was already used, or was deleted; see tctl tokens ls"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use machine_id_types::INTERNAL_LOGINS;

    #[test]
    fn bot_role_and_user_follow_the_facts() {
        let r = bot_role("robot", &["access".into()]);
        assert_eq!(r.metadata.name, "bot-robot");
        assert!(r.validate().is_ok());
        assert_eq!(
            r.spec.allow.impersonate.as_ref().map(|i| i.roles.clone()),
            Some(vec!["access".to_string()])
        );
        assert!(rbac::allowed(
            false,
            std::slice::from_ref(&r),
            kind::CERT_AUTHORITY,
            Verb::Read
        ));
        assert!(!rbac::allowed(
            false,
            std::slice::from_ref(&r),
            kind::TOKEN,
            Verb::List
        ));
        let u = bot_user("robot", &["root".into()]);
        assert_eq!(u.metadata.name, "bot-robot");
        assert_eq!(u.spec.roles, vec!["bot-robot".to_string()]);
        assert_eq!(u.generation(), 0);
        assert_eq!(u.bot_name(), Some("robot"));
        assert_eq!(u.logins(), ["root".to_string()]);
        assert!(u.validate().is_ok());
    }

    #[test]
    fn logins_are_a_union_with_trait_expansion() {
        let mut roles = machine_id_types::default_roles();
        roles[1].spec.allow.logins = vec!["root".into(), INTERNAL_LOGINS.into()];
        let l = expanded_logins(&roles, &["ci".to_string()]);
        assert_eq!(l, vec!["ci".to_string(), "root".to_string()]);
    }

    #[test]
    fn token_display_hides_secrets() {
        let t = ProvisionToken {
            metadata: Metadata::named("0123456789abcdef0123456789abcdef"),
            spec: machine_id_types::TokenSpec::default(),
        };
        assert!(!token_display(&t).contains("0123456789abcdef0123"));
    }
}
