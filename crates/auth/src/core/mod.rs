//! The auth server's logic, independent of the wire: [`Core`] holds the cluster's state and
//! every call's rules; it takes and returns `machine_id_types` values and the small domain
//! structs its modules define. The gRPC layer ([`crate::service`]) converts the generated
//! messages into these and back; nothing in `core` names a generated type.
//!
//! The modules come in two layers:
//!
//! - **The base**, which every concern uses: this file (the state, limits and small shared
//!   helpers), [`access`] (who is calling: authentication, authorization, locks in force),
//!   [`audit`] (the audit log) and [`issue`] (minting a bot's certificates for a subject key).
//! - **The concerns**, one call family each, which use the base and never each other:
//!   [`join_token`] (RegisterUsingToken), [`join_iam`] (RegisterUsingIAMMethod), [`certs`]
//!   (GenerateUserCerts: renewal and impersonation; GenerateBotCerts: both in one call), [`resources`] (roles, tokens, users,
//!   nodes and locks CRUD), [`bots`] (create, get, list, delete and lock bots) and
//!   [`cluster`] (CA export, host certificates, audit search) and [`rotation`] (CA rotation
//!   phases, the CAs' public view).
//!
//! A rule needed by two concerns moves down into the base; `tests/tests/invariants.rs`
//! checks that no concern calls into another.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use machine_id_join::{iam, token_hash};
use machine_id_types::{Clock, Lock, Role};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{AuthError, Result};
use crate::state::State;

mod access;
mod audit;
mod bots;
mod certs;
mod cluster;
mod issue;
mod join_iam;
mod join_token;
mod resources;
mod rotation;

pub(crate) use access::Caller;
pub(crate) use bots::{CreateBot, CreatedBot, LockBot};
pub(crate) use certs::{BotCerts, BotCertsRequest, CertsRequest, OutputRequest};
pub(crate) use cluster::{CaExport, EventPage, EventQuery, HostCertRequest, SignedHostCert};
pub(crate) use issue::IssuedCerts;
pub(crate) use join_iam::IamJoinRequest;
pub(crate) use join_token::TokenJoinRequest;
pub(crate) use rotation::RotateCa;

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
    /// The grace period of an automatic rotation that names none.
    pub default_rotation_grace_period: Duration,
}

/// The shared state of a running auth server.
pub(crate) struct Core {
    pub state: State,
    /// The CAs in use, replaced on every rotation phase.
    pub cas: Arc<crate::authorities::Authorities>,
    pub cluster_name: String,
    pub clock: Arc<dyn Clock>,
    pub limits: Limits,
    pub proxy_public_addr: Option<String>,
    /// The iam join method's allow-list, STS client and challenges.
    pub iam: IamJoin,
    /// The last event key timestamp handed out, so events of one process sort in the order
    /// they were written even when the clock stands still (tests) or steps back.
    pub last_event_nanos: Mutex<i128>,
    /// Moves whenever a lock changes in the store, for connections that outlive a call.
    pub lock_feed: crate::revocation::LockFeed,
    /// The locks indexed by target, current with the lock feed.
    pub lock_index: crate::revocation::LockIndex,
    /// Turns `true` when the server is stopping, for calls that would otherwise stream on.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
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

/// The IAM join's server state: the STS allow-list, the STS client and the challenges. The
/// rules that use it are [`join_iam`]'s.
#[derive(Debug)]
pub(crate) struct IamJoin {
    pub allow: iam::StsAllowList,
    pub sts: iam::StsClient,
    pub challenges: iam::ChallengeLedger,
}

/// SHA-256 of `bytes`, lowercase hex.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
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

impl Core {
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
}

/// The refusal of a call by `user` under `lock`, saying how to lift it.
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

#[cfg(test)]
mod tests {
    use super::*;
    use machine_id_types::INTERNAL_LOGINS;

    #[test]
    fn logins_are_a_union_with_trait_expansion() {
        let mut roles = machine_id_types::default_roles();
        roles[1].spec.allow.logins = vec!["root".into(), INTERNAL_LOGINS.into()];
        let l = expanded_logins(&roles, &["ci".to_string()]);
        assert_eq!(l, vec!["ci".to_string(), "root".to_string()]);
    }
}
