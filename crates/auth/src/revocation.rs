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

/// The locks, decoded once and indexed by target, so that checking a caller costs a hash
/// lookup per user and role however many locks stand (generation-mismatch locks never
/// expire, so a cluster can hold thousands).
///
/// The index is rebuilt from the cache when the lock feed has moved since it was built. It is
/// used only while the store's change feed is up: while it is down, other servers' lock
/// changes would not move the feed, so the callers read the locks from the store instead.
/// The counter is read *before* the locks are listed, so a change that lands during a rebuild
/// leaves the index one version behind and the next call rebuilds it again.
pub(crate) struct LockIndex {
    feed: watch::Receiver<u64>,
    health: std::sync::Arc<crate::cache::FeedHealth>,
    current: std::sync::RwLock<Option<std::sync::Arc<IndexedLocks>>>,
    /// One rebuild at a time: the callers that find the index stale wait for it.
    rebuild: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for LockIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockIndex")
            .field("version", &*self.feed.borrow())
            .finish_non_exhaustive()
    }
}

/// Locks by the user and by the role they target.
#[derive(Debug, Default)]
pub(crate) struct IndexedLocks {
    version: u64,
    by_user: std::collections::HashMap<String, Vec<machine_id_types::Lock>>,
    by_role: std::collections::HashMap<String, Vec<machine_id_types::Lock>>,
}

impl IndexedLocks {
    /// The lock named first (by name) among those in force at `now` on `user` or one of
    /// `roles` for a certificate issued at `issued`.
    pub(crate) fn find(
        &self,
        user: &str,
        roles: &[String],
        issued: time::OffsetDateTime,
        now: time::OffsetDateTime,
    ) -> Option<machine_id_types::Lock> {
        let by_roles = roles.iter().filter_map(|r| self.by_role.get(r));
        self.by_user
            .get(user)
            .into_iter()
            .chain(by_roles)
            .flatten()
            .filter(|l| l.applies_to(user, roles, issued, now))
            .min_by(|a, b| a.metadata.name.cmp(&b.metadata.name))
            .cloned()
    }

    /// How many locks are indexed.
    pub(crate) fn len(&self) -> usize {
        self.by_user
            .values()
            .chain(self.by_role.values())
            .map(Vec::len)
            .sum()
    }
}

impl LockIndex {
    /// An empty index over the cache's lock `feed` and feed `health`.
    pub(crate) fn new(feed: &LockFeed, health: std::sync::Arc<crate::cache::FeedHealth>) -> Self {
        Self {
            feed: feed.rx.clone(),
            health,
            current: std::sync::RwLock::new(None),
            rebuild: tokio::sync::Mutex::new(()),
        }
    }

    /// The index if it is usable and current; `Err(version)` (the feed's counter now) when it
    /// must be rebuilt; `Ok(None)` when the change feed is down and the locks must be read
    /// from the store.
    fn current(&self) -> Result<Option<std::sync::Arc<IndexedLocks>>, u64> {
        if !self.health.is_up() {
            return Ok(None);
        }
        let version = *self.feed.borrow();
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        match current.as_ref() {
            Some(index) if index.version == version => Ok(Some(index.clone())),
            _ => Err(version),
        }
    }

    /// The current index, rebuilt with `list` (every stored lock, read from the cache) when
    /// the feed moved; `None` while the change feed is down.
    pub(crate) async fn get<F, Fut, E>(
        &self,
        list: F,
    ) -> Result<Option<std::sync::Arc<IndexedLocks>>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<machine_id_types::Lock>, E>>,
    {
        if let Ok(found) = self.current() {
            return Ok(found);
        }
        let _one = self.rebuild.lock().await;
        let version = match self.current() {
            Ok(found) => return Ok(found),
            Err(version) => version,
        };
        let mut index = IndexedLocks {
            version,
            ..IndexedLocks::default()
        };
        for lock in list().await? {
            let target = &lock.spec.target;
            if let Some(user) = &target.user {
                index
                    .by_user
                    .entry(user.clone())
                    .or_default()
                    .push(lock.clone());
            }
            if let Some(role) = &target.role {
                index.by_role.entry(role.clone()).or_default().push(lock);
            }
        }
        tracing::debug!(version, locks = index.len(), "lock index rebuilt");
        let index = std::sync::Arc::new(index);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(index.clone());
        Ok(Some(index))
    }
}
