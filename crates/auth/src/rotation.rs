//! The auth server's background work for CA rotation: installing the CAs whenever the store's
//! copy changes (a phase made by any server, seen through the cache's change feed), and
//! advancing automatic rotations when their schedule is due.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::core::Core;

/// How long to wait before reading the CAs again after a failed reload.
const RELOAD_RETRY: Duration = Duration::from_secs(1);

/// Installs the stored CAs every time the cache's CA feed moves, until shutdown.
pub(crate) async fn follow_store(
    core: Arc<Core>,
    mut feed: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|v| *v) => return,
            r = feed.changed() => if r.is_err() { return },
        }
        // A failed read (the store is down) is tried again until it works or the feed moves.
        loop {
            match core.reload_cas().await {
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?RELOAD_RETRY, "cannot reload the certificate authorities");
                    tokio::select! {
                        _ = shutdown.wait_for(|v| *v) => return,
                        () = tokio::time::sleep(RELOAD_RETRY) => {}
                    }
                }
            }
        }
    }
}

/// Every `interval`, makes the automatic rotation moves that are due, until shutdown.
pub(crate) async fn auto_rotate(
    core: Arc<Core>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|v| *v) => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = core.advance_due_rotations().await {
            tracing::warn!(error = %e, "checking automatic CA rotations failed");
        }
    }
}
