//! Audit log retention: a task that deletes events older than
//! [`crate::AuthConfig::audit_retention`], at start and then every
//! [`crate::AuthConfig::audit_retention_interval`].
//!
//! A pass deletes in batches of [`BATCH`] events (each one short store transaction, so the
//! writer is never held for long and renewals keep committing between batches), pausing
//! [`BATCH_PAUSE`] after every full batch and stopping at the first short one. Every auth
//! server of a cluster runs it: deletes are idempotent (and PostgreSQL's skip rows another
//! server is deleting), so servers trimming at once only share the work.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::watch;

use crate::core::Core;

/// The most events one store call deletes. Deleting is ~50-80 µs an event on SQLite with
/// random (UUID) ids, each touching its own page, so 250 hold the writer ~12 ms (2,000 held
/// it ~175 ms, long enough to stall renewals): docs/PERFORMANCE.md.
pub(crate) const BATCH: usize = 250;
/// The pause after a full batch, for other writers.
const BATCH_PAUSE: Duration = Duration::from_millis(20);

/// What retention keeps and how often it runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    /// Events older than this are deleted.
    pub keep: Duration,
    /// How long between passes.
    pub interval: Duration,
}

/// Deletes events older than `retention.keep` now, then every `retention.interval`, until
/// shutdown. Failures are logged and the pass is tried again at the next interval.
pub(crate) async fn run(
    core: Arc<Core>,
    retention: Retention,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(retention.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|v| *v) => return,
            _ = tick.tick() => {}
        }
        if trim(&core, retention.keep, &mut shutdown).await.is_none() {
            return;
        }
    }
}

/// One pass: batches until a short one. Returns how many events it deleted, `None` when
/// the server stopped during it.
async fn trim(core: &Core, keep: Duration, shutdown: &mut watch::Receiver<bool>) -> Option<u64> {
    let cutoff = cutoff(core.clock.now(), keep);
    let before_nanos = i64::try_from(cutoff.unix_timestamp_nanos().max(0)).unwrap_or(i64::MAX);
    let mut deleted = 0u64;
    let result = loop {
        match core
            .state
            .backend
            .delete_events_before(before_nanos, BATCH)
            .await
        {
            Ok(n) => {
                deleted += n;
                if n < BATCH as u64 {
                    break Ok(());
                }
            }
            Err(e) => break Err(e),
        }
        tokio::select! {
            _ = shutdown.wait_for(|v| *v) => return None,
            () = tokio::time::sleep(BATCH_PAUSE) => {}
        }
    };
    let before = cutoff
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| cutoff.to_string());
    match result {
        Ok(()) if deleted > 0 => {
            tracing::info!(deleted, before = %before, retention = %machine_id_types::duration::format(keep), "trimmed the audit log");
        }
        Ok(()) => {
            tracing::debug!(before = %before, "audit log retention: nothing to trim");
        }
        Err(e) => {
            tracing::warn!(error = %e, deleted, before = %before, "trimming the audit log failed; trying again at the next pass");
        }
    }
    Some(deleted)
}

/// `now - keep`, or the epoch when that is before it.
fn cutoff(now: OffsetDateTime, keep: Duration) -> OffsetDateTime {
    time::Duration::try_from(keep)
        .ok()
        .and_then(|keep| now.checked_sub(keep))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .max(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoff_is_now_minus_keep_not_before_the_epoch() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(100);
        assert_eq!(
            cutoff(now, Duration::from_secs(90 * 86_400)),
            OffsetDateTime::UNIX_EPOCH + time::Duration::days(10)
        );
        assert_eq!(
            cutoff(now, Duration::from_secs(200 * 86_400)),
            OffsetDateTime::UNIX_EPOCH
        );
        assert_eq!(cutoff(now, Duration::MAX), OffsetDateTime::UNIX_EPOCH);
    }
}
