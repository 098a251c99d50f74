//! Revocation that reaches open connections: a feed of lock changes that long-lived
//! connections (proxied SSH sessions) wait on to check their caller against the locks again.
//!
//! The feed is a counter in a `tokio::sync::watch` channel, moved by the cache
//! ([`crate::cache`]) *after* it applied a change under `/locks/` (made by any auth server
//! sharing the store), and whenever the store's change feed was lost or the cache reloaded,
//! so a re-check always reads locks at least as new as the change that woke it, and a lost
//! feed makes every waiter re-check rather than miss a lock.

use tokio::sync::watch;

/// A counter that moves whenever a lock may have been created, changed or removed.
#[derive(Debug, Clone)]
pub(crate) struct LockFeed {
    rx: watch::Receiver<u64>,
}

impl LockFeed {
    /// The feed behind `rx`, whose sender moves the counter.
    pub(crate) fn new(rx: watch::Receiver<u64>) -> Self {
        Self { rx }
    }

    /// A receiver that sees the next change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        rx
    }
}

/// Moves the counter.
pub(crate) fn bump(tx: &watch::Sender<u64>) {
    tx.send_modify(|n| *n = n.wrapping_add(1));
}
