//! Audit events: the record every join, renewal, refusal and change leaves, and their codes.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Event types the auth server writes.
pub mod event_types {
    /// A bot joined with a token (or failed to).
    pub const BOT_JOIN: &str = "bot.join";
    /// A join was refused.
    pub const JOIN_FAILED: &str = "bot.join.failed";
    /// Certificates were issued (renewal or impersonation).
    pub const CERT_CREATE: &str = "cert.create";
    /// A renewal presented a stale generation; the bot was locked.
    pub const GENERATION_MISMATCH: &str = "cert.generation_mismatch";
    /// A bot was created.
    pub const BOT_CREATE: &str = "bot.create";
    /// A bot was deleted.
    pub const BOT_DELETE: &str = "bot.delete";
    /// A lock was created.
    pub const LOCK_CREATE: &str = "lock.create";
    /// A lock was deleted.
    pub const LOCK_DELETE: &str = "lock.delete";
    /// A resource was created or updated.
    pub const RESOURCE_PUT: &str = "resource.put";
    /// A resource was deleted.
    pub const RESOURCE_DELETE: &str = "resource.delete";
    /// An authenticated call was refused (access denied, locked).
    pub const ACCESS_DENIED: &str = "access.denied";
    /// A host certificate was signed.
    pub const HOST_CERT: &str = "cert.host";
    /// A CA moved to another rotation phase (fields: CA type, old and new phase, mode).
    pub const CA_ROTATE: &str = "ca.rotate";
    /// The proxy relayed an SSH connection to a node.
    pub const PROXY_CONNECT: &str = "proxy.connect";
    /// The proxy refused an SSH connection (unknown node, labels, identity, node down).
    pub const PROXY_DENIED: &str = "proxy.denied";
    /// The proxy ended an open SSH connection because a lock now applies to its caller.
    pub const PROXY_TERMINATED: &str = "proxy.terminated";
    /// Audit events of unauthenticated callers from one address were dropped by the
    /// per-address rate limit; the event says how many and from where.
    pub const AUDIT_DROPPED: &str = "audit.dropped";
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique id.
    pub id: String,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// The event type, one of [`event_types`].
    #[serde(rename = "event")]
    pub event_type: String,
    /// The user who acted (or was acted on), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether the action succeeded.
    pub success: bool,
    /// A message for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Further fields.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, serde_json::Value>,
}
