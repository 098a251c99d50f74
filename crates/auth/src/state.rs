//! The auth server's view of the store: where each resource lives and typed reads and writes.
//!
//! Key layout (values are JSON unless said otherwise):
//!
//! | key | value |
//! |---|---|
//! | `/cluster/name` | [`ClusterInfo`]: the cluster name, written once on first start |
//! | `/cas/cluster` | the CA key material, `machine_id_mint::CaKeys::to_bytes` |
//! | `/roles/<name>` | a `Role` |
//! | `/tokens/<sha256 hex of the token name>` | a `ProvisionToken`; for a `token`-method token the name (the secret) is **not** stored: `metadata.name` holds `sha256:` and the first 12 hex characters of the key's hash, what `tctl tokens ls` shows; `iam` token names are not secret and are kept |
//! | `/users/<name>` | a `User` (bots: `bot-<name>`, with the generation label) |
//! | `/nodes/<name>` | a `Node` |
//! | `/locks/<name>` | a `Lock` |
//!
//! Audit events are not keys: they go to the store's event log (its own table, ordered by
//! time), so that they never flood the change feed. Versions before the event log kept them
//! under `/events/<unix nanos, 20 digits>-<uuid>`; [`migrate_events_to_log`] moves those.
//!
//! Tokens are keyed by the hash of their name so that a join looks its token up by the hash
//! of the presented secret, never comparing secrets in variable time; the store holds no
//! secret a reader of `backend.db` could join with. Records written before hashing (whose
//! name still hashes to their key) are rewritten at startup by
//! [`migrate_plaintext_tokens`] with compare-and-swap, and are never shown with their
//! secret meanwhile ([`public_token`]).

use std::sync::Arc;

use machine_id_store::{Backend, Item, Op, Revision, StoreError, StoredEvent};
use machine_id_types::{AuditEvent, JoinMethod, ProvisionToken};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{AuthError, Result};

/// Key of the cluster's identity record.
pub const CLUSTER_NAME_KEY: &str = "/cluster/name";
/// Prefix of the CA key material.
pub const CAS: &str = "/cas/";
/// Key of the CA key material (every CA type with its rotation status, one record so that
/// a phase change of several types is one compare-and-swap).
pub const CA_KEY: &str = "/cas/cluster";
/// Prefix of roles.
pub const ROLES: &str = "/roles/";
/// Prefix of tokens.
pub const TOKENS: &str = "/tokens/";
/// Prefix of users.
pub const USERS: &str = "/users/";
/// Prefix of nodes.
pub const NODES: &str = "/nodes/";
/// Prefix of locks.
pub const LOCKS: &str = "/locks/";
/// Prefix of audit events.
pub const EVENTS: &str = "/events/";

/// What `/cluster/name` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The cluster name.
    pub cluster_name: String,
    /// When the cluster was created (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub created: time::OffsetDateTime,
}

/// Checks a name used to build a key: non-empty, at most 253 bytes, no `/` or control
/// characters (so a name can never reach another key or prefix).
pub(crate) fn check_key_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(AuthError::InvalidArgument(format!(
            "a {kind} name is required"
        )));
    }
    if name.len() > 253 || name.chars().any(|c| c == '/' || c.is_control()) {
        return Err(AuthError::InvalidArgument(format!(
            "invalid {kind} name {:?}: at most 253 characters, no '/' or control characters",
            name.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

/// The key of role `name`.
pub fn role_key(name: &str) -> String {
    format!("{ROLES}{name}")
}
/// The key of the token named `name` (the hash of the name).
pub fn token_key(name: &str) -> String {
    format!("{TOKENS}{}", machine_id_join::token_hash(name))
}
/// How many hex characters of a secret token's hash name it in listings, logs and events.
pub(crate) const TOKEN_DISPLAY_HEX: usize = 12;
/// The prefix of the names secret tokens are shown under.
pub(crate) const TOKEN_DISPLAY_PREFIX: &str = "sha256:";

/// The name a `token`-method token with hash `hash` (64 hex) is stored and shown under:
/// `sha256:` and its first 12 hex characters.
pub(crate) fn token_display_name(hash: &str) -> String {
    let short = hash.get(..TOKEN_DISPLAY_HEX).unwrap_or(hash);
    format!("{TOKEN_DISPLAY_PREFIX}{short}")
}

/// The hash part of a token key.
fn key_hash(key: &str) -> &str {
    key.strip_prefix(TOKENS).unwrap_or(key)
}

/// What is stored at `token_key(&token.metadata.name)` for `token`: a `token`-method token
/// loses its name (the secret) for [`token_display_name`]; others are kept as they are.
pub(crate) fn token_record(token: &ProvisionToken) -> ProvisionToken {
    let mut stored = token.clone();
    if token.spec.join_method == JoinMethod::Token {
        stored.metadata.name =
            token_display_name(&machine_id_join::token_hash(&token.metadata.name));
    }
    stored
}

/// Whether the record at `key` still holds its secret: a `token`-method token written before
/// tokens were stored hashed (its name hashes to its key).
pub(crate) fn holds_secret(key: &str, token: &ProvisionToken) -> bool {
    token.spec.join_method == JoinMethod::Token
        && machine_id_join::token_hash(&token.metadata.name) == key_hash(key)
}

/// The record at `key` as clients see it: a `token`-method token always under its display
/// name, even a record not yet migrated.
pub(crate) fn public_token(key: &str, mut token: ProvisionToken) -> ProvisionToken {
    if token.spec.join_method == JoinMethod::Token {
        token.metadata.name = token_display_name(key_hash(key));
    }
    token
}

/// Whether `key` is the token key a display name (`sha256:` and at least 8 hex characters,
/// as `tctl tokens ls` shows it) refers to.
pub(crate) fn token_key_matches_display(key: &str, display: &str) -> bool {
    match display.strip_prefix(TOKEN_DISPLAY_PREFIX) {
        Some(hex) if hex.len() >= 8 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            key_hash(key).starts_with(&hex.to_ascii_lowercase())
        }
        _ => false,
    }
}

/// Rewrites every `token`-method record that still holds its secret (written before tokens
/// were stored hashed) with compare-and-swap, so a record consumed or changed meanwhile is
/// left to whoever changed it. Returns how many were rewritten.
pub(crate) async fn migrate_plaintext_tokens(state: &State) -> Result<usize> {
    let mut migrated = 0;
    for item in state.backend.range(TOKENS).await? {
        let token: ProvisionToken = decode(&item.key, &item.value)?;
        if !holds_secret(&item.key, &token) {
            continue;
        }
        let record = token_record(&token);
        match state
            .backend
            .compare_and_swap(&item.key, item.revision, encode(&record)?)
            .await
        {
            Ok(_) => migrated += 1,
            // Consumed by a join or rewritten by another server meanwhile: nothing to do.
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if migrated > 0 {
        tracing::info!(
            tokens = migrated,
            "join tokens stored in plaintext were rewritten to keep only the hash of their secret"
        );
    }
    Ok(migrated)
}

/// The key of user `name`.
pub fn user_key(name: &str) -> String {
    format!("{USERS}{name}")
}
/// The key of node `name`.
pub fn node_key(name: &str) -> String {
    format!("{NODES}{name}")
}
/// The key of lock `name`.
pub fn lock_key(name: &str) -> String {
    format!("{LOCKS}{name}")
}
/// The key of an event at `unix_nanos` with `id`.
pub fn event_key(unix_nanos: i128, id: &str) -> String {
    format!("{EVENTS}{:020}-{id}", unix_nanos.max(0))
}

/// Appends `event`, which happened at `unix_nanos` (the key its order in the log follows),
/// to the store's event log.
pub(crate) async fn append_event(
    backend: &dyn Backend,
    unix_nanos: i128,
    event: &AuditEvent,
) -> Result<()> {
    backend
        .append_event(stored_event(unix_nanos, event)?)
        .await?;
    Ok(())
}

/// `event`, which happened at `unix_nanos`, as the store's event log keeps it.
pub(crate) fn stored_event(unix_nanos: i128, event: &AuditEvent) -> Result<StoredEvent> {
    Ok(StoredEvent {
        time_nanos: i64::try_from(unix_nanos.max(0)).unwrap_or(i64::MAX),
        id: event.id.clone(),
        event_type: event.event_type.clone(),
        data: encode(event)?,
    })
}

/// How many old-style events [`migrate_events_to_log`] moves per transaction.
const EVENT_MIGRATION_BATCH: usize = 500;

/// Moves audit events kept as `/events/` keys (by versions before the event log) into the
/// store's event log, keeping their order, and deletes the keys. Safe to interrupt and to run
/// on several servers at once: appending is idempotent by event id, and a key another server
/// deleted meanwhile is skipped. Returns how many were moved.
pub(crate) async fn migrate_events_to_log(state: &State) -> Result<usize> {
    let items = state.uncached.range(EVENTS).await?;
    if items.is_empty() {
        return Ok(0);
    }
    let total = items.len();
    for chunk in items.chunks(EVENT_MIGRATION_BATCH) {
        for item in chunk {
            let event: AuditEvent = decode(&item.key, &item.value)?;
            // The key's time part (20 digits of Unix nanoseconds) keeps the old order.
            let nanos = item
                .key
                .strip_prefix(EVENTS)
                .and_then(|k| k.get(..20))
                .and_then(|n| n.parse::<i128>().ok())
                .unwrap_or_else(|| event.time.unix_timestamp_nanos());
            append_event(&*state.uncached, nanos, &event).await?;
        }
        let ops = chunk
            .iter()
            .map(|i| Op::CompareAndDelete {
                key: i.key.clone(),
                revision: i.revision,
            })
            .collect();
        if let Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) =
            state.uncached.atomic_write(ops).await
        {
            // Another server is migrating too: delete what is still ours one by one.
            for i in chunk {
                match state.uncached.compare_and_delete(&i.key, i.revision).await {
                    Ok(()) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    tracing::info!(
        events = total,
        "audit events stored as keys by an older version were moved into the event log"
    );
    Ok(total)
}

/// JSON bytes of `v`.
pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| AuthError::Internal(format!("cannot encode value: {e}")))
}

/// `v` from JSON bytes stored at `key`.
pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|e| AuthError::Internal(format!("stored value at {key} cannot be read: {e}")))
}

/// The value at `key` in `backend` and its revision.
async fn get_from<T: DeserializeOwned>(
    backend: &dyn Backend,
    key: &str,
) -> Result<Option<(T, Revision)>> {
    match backend.get(key).await? {
        None => Ok(None),
        Some(Item {
            value, revision, ..
        }) => Ok(Some((decode(key, &value)?, revision))),
    }
}

/// Typed access to the backend.
#[derive(Debug, Clone)]
pub(crate) struct State {
    /// The store as the server reads it: through the cache, for a running server.
    pub(crate) backend: Arc<dyn Backend>,
    /// The store itself, for reads that must see its latest value (the same as `backend`
    /// where nothing is cached).
    pub(crate) uncached: Arc<dyn Backend>,
}

impl State {
    /// A state with no cache in front of `backend`.
    pub(crate) fn uncached(backend: Arc<dyn Backend>) -> Self {
        Self {
            uncached: backend.clone(),
            backend,
        }
    }

    /// The value at `key` and its revision, read from the store itself (not the cache).
    pub(crate) async fn get_fresh<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, Revision)>> {
        get_from(&*self.uncached, key).await
    }

    /// The value at `key` and its revision.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, Revision)>> {
        get_from(&*self.backend, key).await
    }

    /// Every value under `prefix`, in key order.
    pub(crate) async fn list<T: DeserializeOwned>(
        &self,
        prefix: &str,
    ) -> Result<Vec<(T, Revision)>> {
        self.backend
            .range(prefix)
            .await?
            .into_iter()
            .map(|it| Ok((decode(&it.key, &it.value)?, it.revision)))
            .collect()
    }

    /// Creates `key`; `exists` builds the error when it is there already.
    pub(crate) async fn create<T: Serialize>(
        &self,
        key: &str,
        v: &T,
        exists: impl FnOnce() -> AuthError,
    ) -> Result<Revision> {
        match self.backend.create(key, encode(v)?).await {
            Ok(r) => Ok(r),
            Err(StoreError::AlreadyExists { .. }) => Err(exists()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates or overwrites `key`.
    pub(crate) async fn put<T: Serialize>(&self, key: &str, v: &T) -> Result<Revision> {
        Ok(self.backend.put(key, encode(v)?).await?)
    }

    /// Deletes `key`; `missing` builds the error when it is not there.
    pub(crate) async fn delete(
        &self,
        key: &str,
        missing: impl FnOnce() -> AuthError,
    ) -> Result<()> {
        match self.backend.delete(key).await {
            Ok(()) => Ok(()),
            Err(StoreError::NotFound { .. }) => Err(missing()),
            Err(e) => Err(e.into()),
        }
    }
}
