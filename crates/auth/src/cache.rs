//! The auth server's in-memory cache of the store, fed by the store's watch: a [`Backend`]
//! that wraps the real one and answers reads of the cached kinds (roles, users and bots,
//! nodes, locks, the CAs and the cluster record) from memory, so that a call does not need a
//! database round trip to read them, while every write goes to the store.
//!
//! How it stays true to the store, with several auth servers writing to one database:
//!
//! - **Load**: the cache opens a watch on the whole key space first, then reads every cached
//!   prefix, then applies whatever the watch delivered meanwhile. Only then is it *ready*.
//! - **Follow**: every change any server commits reaches the cache through the watch. An
//!   entry keeps the revision it was written at, and a change applies only when its revision
//!   is higher (a delete leaves a tombstone with its revision), so changes that arrive late
//!   or twice, and this server's own writes (applied on return, before their echo from the
//!   watch), never move an entry back.
//! - **Lost feed**: when the watch stream ends (the database restarted, the connection
//!   dropped, the watcher fell behind), the cache stops being ready at once, and every read
//!   goes to the store until a new watch is open and the cache is loaded again: it is never
//!   served stale silently. [`FeedHealth`] says whether the feed is up, for `/readyz`.
//!
//! A read-modify-write decision (the generation counter) reads from the cache and writes with
//! compare-and-swap: a stale entry makes the swap fail, never succeed wrongly; the callers
//! that must decide from the store's latest value read the store itself (`State::get_fresh`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use machine_id_store::{
    Backend, EventQuery, Item, Op, Revision, StoreError, StoredEvent, WatchEvent, Watcher,
};

use crate::state;

/// The prefixes the auth server reads from memory.
pub(crate) const CACHED_PREFIXES: &[&str] = &[
    state::ROLES,
    state::USERS,
    state::NODES,
    state::LOCKS,
    state::CAS,
    "/cluster/",
];

/// How long the feed waits before watching again after the store refused a watch.
const REWATCH_MIN: Duration = Duration::from_millis(200);
const REWATCH_MAX: Duration = Duration::from_secs(5);
/// How many of this server's own writes are remembered to measure the feed's lag.
const LAG_PROBES: usize = 256;

/// Whether the store's change feed is up, and how far it lags: shared with the diagnostics
/// endpoint.
#[derive(Debug, Default)]
pub struct FeedHealth {
    up: AtomicBool,
    /// Microseconds from this server's last measured write returning to its change arriving
    /// through the feed.
    lag_micros: AtomicU64,
    /// How many times a loaded feed was lost since start.
    losses: AtomicU64,
}

impl FeedHealth {
    /// Whether the feed is up and the cache loaded.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The last measured feed lag: from one of this server's writes returning to its change
    /// arriving through the store's watch (for PostgreSQL, the same path other servers'
    /// writes take).
    pub fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_micros.load(Ordering::Relaxed))
    }

    /// How many times the feed was lost (and the cache reloaded) since start.
    pub fn losses(&self) -> u64 {
        self.losses.load(Ordering::Relaxed)
    }
}

/// One cached key: its value, or a tombstone, with the revision that made it so.
#[derive(Debug, Clone)]
enum Entry {
    Live(Item),
    Gone(Revision),
}

impl Entry {
    fn revision(&self) -> Revision {
        match self {
            Entry::Live(item) => item.revision,
            Entry::Gone(r) => *r,
        }
    }
}

#[derive(Debug, Default)]
struct Cache {
    ready: bool,
    entries: BTreeMap<String, Entry>,
}

impl Cache {
    /// Sets `key` to `entry` unless the cache holds a newer revision of it.
    fn apply(&mut self, key: &str, entry: Entry) {
        match self.entries.get_mut(key) {
            Some(old) if old.revision() >= entry.revision() => {}
            Some(old) => *old = entry,
            None => {
                self.entries.insert(key.to_string(), entry);
            }
        }
    }

    fn apply_event(&mut self, event: WatchEvent) {
        match event {
            WatchEvent::Put(item) if is_cached(&item.key) => {
                let key = item.key.clone();
                self.apply(&key, Entry::Live(item));
            }
            WatchEvent::Delete { key, revision } if is_cached(&key) => {
                self.apply(&key, Entry::Gone(revision));
            }
            _ => {}
        }
    }
}

/// Whether `key` is under a cached prefix.
fn is_cached(key: &str) -> bool {
    CACHED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// Whether every key under `prefix` is under a cached prefix.
fn covers(prefix: &str) -> bool {
    CACHED_PREFIXES.iter().any(|p| prefix.starts_with(p))
}

/// This server's recent writes and recent changes from the feed, matched by revision to
/// measure the feed's lag (a write's change may arrive before the write returns).
#[derive(Debug, Default)]
struct Probes {
    /// Revision of a write of this server → when the write began.
    sent: HashMap<Revision, Instant>,
    /// The feed's last changes not matched to a write yet: revision, arrival.
    arrived: VecDeque<(Revision, Instant)>,
}

impl Probes {
    fn lag(&mut self, revision: Revision, started: Instant) -> Option<Duration> {
        if let Some(i) = self.arrived.iter().position(|(r, _)| *r == revision) {
            let (_, at) = self.arrived.remove(i)?;
            return Some(at.saturating_duration_since(started));
        }
        if self.sent.len() >= LAG_PROBES {
            self.sent.clear();
        }
        self.sent.insert(revision, started);
        None
    }

    fn arrived(&mut self, revision: Revision) -> Option<Duration> {
        if let Some(started) = self.sent.remove(&revision) {
            return Some(started.elapsed());
        }
        if self.arrived.len() >= LAG_PROBES {
            self.arrived.pop_front();
        }
        self.arrived.push_back((revision, Instant::now()));
        None
    }
}

struct Shared {
    cache: RwLock<Cache>,
    health: Arc<FeedHealth>,
    probes: Mutex<Probes>,
    /// Moved after every applied change under `/locks/` and every load or loss of the feed.
    locks_changed: tokio::sync::watch::Sender<u64>,
    /// Moved after every applied change under `/cas/` and every load or loss of the feed.
    cas_changed: tokio::sync::watch::Sender<u64>,
    /// Dropped with the cache, which stops the feed task.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Shared {
    /// Moves the feeds of the prefixes `key` is under.
    fn notify(&self, key: &str) {
        if key.starts_with(state::LOCKS) {
            crate::revocation::bump(&self.locks_changed);
        }
        if key.starts_with(state::CAS) {
            crate::revocation::bump(&self.cas_changed);
        }
    }

    /// Moves every feed (the cache was loaded or lost).
    fn notify_all(&self) {
        crate::revocation::bump(&self.locks_changed);
        crate::revocation::bump(&self.cas_changed);
    }

    fn read(&self) -> RwLockReadGuard<'_, Cache> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Cache> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    fn probes(&self) -> std::sync::MutexGuard<'_, Probes> {
        self.probes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record_lag(&self, lag: Option<Duration>) {
        if let Some(lag) = lag {
            let micros = u64::try_from(lag.as_micros()).unwrap_or(u64::MAX);
            self.health.lag_micros.store(micros, Ordering::Relaxed);
        }
    }

    /// Applies this server's own write, begun at `started` and committed at `revision`
    /// (when the cache is ready; a cache being loaded reads it from the store or the watch).
    fn own_write(
        &self,
        started: Instant,
        revision: Revision,
        changes: impl IntoIterator<Item = (String, Entry)>,
    ) {
        let mut applied = Vec::new();
        {
            let mut cache = self.write();
            if cache.ready {
                for (key, entry) in changes {
                    if is_cached(&key) {
                        cache.apply(&key, entry);
                        applied.push(key);
                    }
                }
            }
        }
        for key in &applied {
            self.notify(key);
        }
        let lag = self.probes().lag(revision, started);
        self.record_lag(lag);
    }

    fn observe_lag(&self, revision: Revision) {
        let lag = self.probes().arrived(revision);
        self.record_lag(lag);
    }

    fn set_down(&self) {
        let mut cache = self.write();
        cache.ready = false;
        cache.entries.clear();
        self.health.up.store(false, Ordering::Release);
        *self.probes() = Probes::default();
        self.notify_all();
    }
}

/// A [`Backend`] that answers reads of the cached prefixes from memory kept current by the
/// inner backend's watch; see the module documentation.
#[derive(Clone)]
pub(crate) struct CachedBackend {
    inner: Arc<dyn Backend>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for CachedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedBackend")
            .field("inner", &self.inner)
            .field("feed_up", &self.shared.health.is_up())
            .finish_non_exhaustive()
    }
}

impl CachedBackend {
    /// Wraps `inner`, loads the cache (waiting up to `load_timeout` for the first load; the
    /// cache keeps trying in the background when that fails, reads going to the store
    /// meanwhile) and follows the store's watch until every clone is dropped.
    pub(crate) async fn start(inner: Arc<dyn Backend>, load_timeout: Duration) -> Self {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let shared = Arc::new(Shared {
            cache: RwLock::new(Cache::default()),
            health: Arc::new(FeedHealth::default()),
            probes: Mutex::new(Probes::default()),
            locks_changed: tokio::sync::watch::channel(0).0,
            cas_changed: tokio::sync::watch::channel(0).0,
            _stop: stop_tx,
        });
        let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel();
        let feed = follow(inner.clone(), Arc::downgrade(&shared), loaded_tx);
        tokio::spawn(async move {
            tokio::select! {
                () = feed => {}
                // Every clone of the cache is gone: let go of the store.
                _ = stop_rx => {}
            }
        });
        if tokio::time::timeout(load_timeout, loaded_rx).await.is_err() {
            tracing::warn!(store = ?inner, "the cache could not be loaded yet; reading from the store until it is");
        }
        Self { inner, shared }
    }

    /// A feed that moves after every change to the locks this cache applied (from any
    /// server), and whenever the store's feed was lost or the cache reloaded.
    pub(crate) fn lock_feed(&self) -> crate::revocation::LockFeed {
        crate::revocation::LockFeed::new(self.shared.locks_changed.subscribe())
    }

    /// A receiver that moves after every change to the CAs this cache applied (from any
    /// server: a rotation phase), and whenever the store's feed was lost or the cache
    /// reloaded.
    pub(crate) fn ca_feed(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.cas_changed.subscribe()
    }

    /// The feed's health, for the diagnostics endpoint.
    pub(crate) fn health(&self) -> Arc<FeedHealth> {
        self.shared.health.clone()
    }
}

/// The feed task: watch, load, follow; on a lost feed, reset and start again. Runs until the
/// cache is dropped.
async fn follow(
    inner: Arc<dyn Backend>,
    shared: std::sync::Weak<Shared>,
    loaded: tokio::sync::oneshot::Sender<()>,
) {
    let mut loaded = Some(loaded);
    let mut backoff = REWATCH_MIN;
    let mut first = true;
    loop {
        let Some(s) = shared.upgrade() else { return };
        s.set_down();
        drop(s);
        match load(&inner, &shared).await {
            Ok(Some(mut watcher)) => {
                if !first {
                    tracing::info!("the store's change feed is back; caches reloaded");
                }
                first = false;
                backoff = REWATCH_MIN;
                if let Some(tx) = loaded.take() {
                    let _ = tx.send(());
                }
                loop {
                    let event = watcher.recv().await;
                    let Some(s) = shared.upgrade() else { return };
                    let Some(event) = event else {
                        s.health.losses.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(store = ?inner, "the store's change feed was lost; caches reset, reads go to the store until it is back");
                        break;
                    };
                    let revision = event.revision();
                    let key = event.key().to_string();
                    s.write().apply_event(event);
                    s.notify(&key);
                    s.observe_lag(revision);
                }
            }
            Ok(None) => return,
            Err(e) => {
                first = false;
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot load the cache from the store; reads go to the store meanwhile");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(REWATCH_MAX);
            }
        }
    }
}

/// Opens a watch, reads every cached prefix, applies what the watch delivered meanwhile and
/// marks the cache ready. `None` when the cache is gone.
async fn load(
    inner: &Arc<dyn Backend>,
    shared: &std::sync::Weak<Shared>,
) -> Result<Option<Watcher>, StoreError> {
    let mut watcher = inner.watch("/").await?;
    let mut entries = BTreeMap::new();
    for prefix in CACHED_PREFIXES {
        for item in inner.range(prefix).await? {
            entries.insert(item.key.clone(), Entry::Live(item));
        }
    }
    let Some(s) = shared.upgrade() else {
        return Ok(None);
    };
    let mut cache = s.write();
    cache.entries = entries;
    loop {
        match watcher.try_recv() {
            Ok(event) => cache.apply_event(event),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                return Err(StoreError::Backend(
                    "the store's change feed ended while the cache was loading".into(),
                ));
            }
        }
    }
    cache.ready = true;
    drop(cache);
    s.health.up.store(true, Ordering::Release);
    s.notify_all();
    tracing::debug!("cache loaded");
    Ok(Some(watcher))
}

/// The entries `ops` (committed at `revision`) leave.
fn changes(ops: &[Op], revision: Revision) -> Vec<(String, Entry)> {
    ops.iter()
        .map(|op| match op {
            Op::Create { key, value }
            | Op::Put { key, value }
            | Op::CompareAndSwap { key, value, .. } => (
                key.clone(),
                Entry::Live(Item {
                    key: key.clone(),
                    value: value.clone(),
                    revision,
                }),
            ),
            Op::Delete { key } | Op::CompareAndDelete { key, .. } => {
                (key.clone(), Entry::Gone(revision))
            }
        })
        .collect()
}

impl CachedBackend {
    fn live(&self, started: Instant, key: &str, value: &[u8], revision: Revision) {
        self.shared.own_write(
            started,
            revision,
            [(
                key.to_string(),
                Entry::Live(Item {
                    key: key.to_string(),
                    value: value.to_vec(),
                    revision,
                }),
            )],
        );
    }

    /// A local delete returns no revision: the tombstone takes the revision of the entry it
    /// removes, which hides late echoes of that entry and lets any later write through.
    fn gone(&self, key: &str) {
        if !is_cached(key) {
            return;
        }
        let mut cache = self.shared.write();
        if !cache.ready {
            return;
        }
        if let Some(Entry::Live(item)) = cache.entries.get(key) {
            let revision = item.revision;
            cache.entries.insert(key.to_string(), Entry::Gone(revision));
        }
        drop(cache);
        self.shared.notify(key);
    }
}

impl CachedBackend {
    /// `atomic_write` (`events` `None`) or `write_with_events` on the store, then this
    /// server's own change applied to the cache at once.
    async fn write_through(
        &self,
        ops: Vec<Op>,
        events: Option<Vec<StoredEvent>>,
    ) -> Result<Revision, StoreError> {
        let touches_cache = ops.iter().any(|op| is_cached(op.key()));
        let kept = touches_cache.then(|| ops.clone());
        let started = Instant::now();
        let revision = match events {
            None => self.inner.atomic_write(ops).await?,
            Some(events) => self.inner.write_with_events(ops, events).await?,
        };
        if let Some(ops) = kept {
            self.shared
                .own_write(started, revision, changes(&ops, revision));
        }
        Ok(revision)
    }
}

#[async_trait]
impl Backend for CachedBackend {
    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        if is_cached(key) {
            let cache = self.shared.read();
            if cache.ready {
                return Ok(match cache.entries.get(key) {
                    Some(Entry::Live(item)) => Some(item.clone()),
                    _ => None,
                });
            }
        }
        self.inner.get(key).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let cached = is_cached(key).then(|| value.clone());
        let started = Instant::now();
        let revision = self.inner.create(key, value).await?;
        if let Some(v) = cached {
            self.live(started, key, &v, revision);
        }
        Ok(revision)
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let cached = is_cached(key).then(|| value.clone());
        let started = Instant::now();
        let revision = self.inner.put(key, value).await?;
        if let Some(v) = cached {
            self.live(started, key, &v, revision);
        }
        Ok(revision)
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        value: Vec<u8>,
    ) -> Result<Revision, StoreError> {
        let cached = is_cached(key).then(|| value.clone());
        let started = Instant::now();
        let revision = self.inner.compare_and_swap(key, expected, value).await?;
        if let Some(v) = cached {
            self.live(started, key, &v, revision);
        }
        Ok(revision)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await?;
        self.gone(key);
        Ok(())
    }

    async fn compare_and_delete(&self, key: &str, expected: Revision) -> Result<(), StoreError> {
        self.inner.compare_and_delete(key, expected).await?;
        self.gone(key);
        Ok(())
    }

    async fn range(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        if covers(prefix) {
            let cache = self.shared.read();
            if cache.ready {
                return Ok(cache
                    .entries
                    .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .filter_map(|(_, e)| match e {
                        Entry::Live(item) => Some(item.clone()),
                        Entry::Gone(_) => None,
                    })
                    .collect());
            }
        }
        self.inner.range(prefix).await
    }

    async fn atomic_write(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        self.write_through(ops, None).await
    }

    async fn write_with_events(
        &self,
        ops: Vec<Op>,
        events: Vec<StoredEvent>,
    ) -> Result<Revision, StoreError> {
        self.write_through(ops, Some(events)).await
    }

    fn durable_commits(&self) -> Option<u64> {
        self.inner.durable_commits()
    }

    async fn watch(&self, prefix: &str) -> Result<Watcher, StoreError> {
        self.inner.watch(prefix).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn append_event(&self, event: StoredEvent) -> Result<(), StoreError> {
        self.inner.append_event(event).await
    }

    async fn search_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self.inner.search_events(query).await
    }

    async fn delete_events_before(&self, before_nanos: i64, max: usize) -> Result<u64, StoreError> {
        self.inner.delete_events_before(before_nanos, max).await
    }
}

#[cfg(test)]
mod tests;
