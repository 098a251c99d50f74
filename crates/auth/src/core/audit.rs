//! The audit log: appending events (best effort, after the effect is committed, or in the
//! same store transaction as the effect: [`Core::audit_record`]), the `access.denied` event
//! of a refusal, and the per-address rate limit on events that unauthenticated callers cause.

use machine_id_store::StoredEvent;
use machine_id_types::{AuditEvent, event_types};
use serde_json::json;

use super::Core;
use crate::state;

impl Core {
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
        let Some(event) = self.audit_record(event_type, user, success, message, fields) else {
            return;
        };
        if let Err(e) = self.state.backend.append_event(event).await {
            tracing::error!(error = %e, event = event_type, "cannot write audit event");
        }
    }

    /// Appends `events` (from [`Self::audit_record`]) in one write. Best effort, as
    /// [`Self::audit`].
    pub(super) async fn audit_events(&self, events: Vec<StoredEvent>) {
        if events.is_empty() {
            return;
        }
        if let Err(e) = self.state.backend.write_with_events(vec![], events).await {
            tracing::error!(error = %e, "cannot write audit events");
        }
    }

    /// The stored form of an audit event happening now, for a write that commits it together
    /// with its effect ([`machine_id_store::Backend::write_with_events`]); `None` (logged) if
    /// it cannot be encoded.
    pub(super) fn audit_record(
        &self,
        event_type: &str,
        user: Option<&str>,
        success: bool,
        message: String,
        fields: serde_json::Value,
    ) -> Option<StoredEvent> {
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
        match state::stored_event(nanos, &event) {
            Ok(stored) => Some(stored),
            Err(e) => {
                tracing::error!(error = %e, event = event_type, "cannot encode audit event");
                None
            }
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
}
