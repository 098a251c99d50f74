//! Revocation that reaches open connections: a feed of lock changes, fed by the store's
//! watch on the locks prefix (so a lock written by any auth server sharing the store reaches
//! this one), that long-lived connections (proxied SSH sessions) wait on to check their
//! caller against the locks again.
//!
//! The feed is a counter in a `tokio::sync::watch` channel: it moves on every change under
//! `/locks/`, and also whenever the store's watch stream ends (it is then opened again), so a
//! lost feed makes every waiter re-check rather than miss a lock. Its [`FeedHealth`] is down
//! from the moment a watch stream ends until a new watch is open (`/readyz` reads it).

use std::sync::Arc;
use std::time::Duration;

use machine_id_store::Backend;
use tokio::sync::watch;

use crate::diag::FeedHealth;
use crate::state;

/// How long the feed waits before watching again after the store refused a watch.
const REWATCH_DELAY: Duration = Duration::from_millis(500);

/// A counter that moves whenever a lock may have been created, changed or removed.
#[derive(Debug, Clone)]
pub(crate) struct LockFeed {
    rx: watch::Receiver<u64>,
}

impl LockFeed {
    /// Starts watching `/locks/` on `backend`, keeping `health` up while a watch is open;
    /// the task ends (and lets go of the store) when every feed is dropped.
    pub(crate) async fn start(backend: Arc<dyn Backend>, health: FeedHealth) -> Self {
        let (tx, rx) = watch::channel(0u64);
        // The first watch is opened before returning, so no lock written after start is missed.
        let first = backend.watch(state::LOCKS).await;
        tokio::spawn(async move {
            let mut watcher = first;
            loop {
                health.set_up(watcher.is_ok());
                match watcher {
                    Ok(mut w) => loop {
                        tokio::select! {
                            event = w.recv() => {
                                if event.is_none() {
                                    health.set_up(false);
                                    tracing::debug!("the lock watch ended; watching again");
                                    break;
                                }
                                if bump(&tx) {
                                    return;
                                }
                            }
                            // The server is gone: let go of the store.
                            () = tx.closed() => return,
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch locks; retrying");
                        tokio::time::sleep(REWATCH_DELAY).await;
                    }
                }
                // Whatever happened while no watch was open is re-checked by every waiter.
                if bump(&tx) {
                    return;
                }
                watcher = backend.watch(state::LOCKS).await;
            }
        });
        Self { rx }
    }

    /// A receiver that sees the next change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        rx
    }
}

/// Moves the counter; `true` when nobody listens any more (the server is gone).
fn bump(tx: &watch::Sender<u64>) -> bool {
    tx.send_modify(|n| *n = n.wrapping_add(1));
    tx.is_closed()
}
