#![allow(clippy::unwrap_used)] // tests

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use machine_id_store::{Item, Op, Revision, StoreError, WatchEvent, Watcher};
use tokio::sync::{Mutex as AsyncMutex, mpsc};

use super::*;
use crate::revocation::LockFeed;

/// A backend whose `get` answers as told and whose `watch` returns the next scripted answer
/// (waiting for one).
#[derive(Debug)]
struct Scripted {
    get: std::sync::Mutex<Result<bool, String>>,
    hang: AtomicBool,
    watches: AsyncMutex<mpsc::Receiver<Result<Watcher, StoreError>>>,
    watch_calls: AtomicU64,
}

impl Scripted {
    fn new() -> (Arc<Self>, mpsc::Sender<Result<Watcher, StoreError>>) {
        let (tx, rx) = mpsc::channel(8);
        let s = Arc::new(Self {
            get: std::sync::Mutex::new(Ok(true)),
            hang: AtomicBool::new(false),
            watches: AsyncMutex::new(rx),
            watch_calls: AtomicU64::new(0),
        });
        (s, tx)
    }
}

fn unused<T>() -> Result<T, StoreError> {
    Err(StoreError::Backend("not used by this test".into()))
}

#[async_trait]
impl Backend for Scripted {
    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        if self.hang.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        match &*self.get.lock().unwrap() {
            Ok(true) => Ok(Some(Item {
                key: key.into(),
                value: b"{}".to_vec(),
                revision: 1,
            })),
            Ok(false) => Ok(None),
            Err(e) => Err(StoreError::Backend(e.clone())),
        }
    }
    async fn create(&self, _: &str, _: Vec<u8>) -> Result<Revision, StoreError> {
        unused()
    }
    async fn put(&self, _: &str, _: Vec<u8>) -> Result<Revision, StoreError> {
        unused()
    }
    async fn compare_and_swap(
        &self,
        _: &str,
        _: Revision,
        _: Vec<u8>,
    ) -> Result<Revision, StoreError> {
        unused()
    }
    async fn delete(&self, _: &str) -> Result<(), StoreError> {
        unused()
    }
    async fn compare_and_delete(&self, _: &str, _: Revision) -> Result<(), StoreError> {
        unused()
    }
    async fn range(&self, _: &str) -> Result<Vec<Item>, StoreError> {
        unused()
    }
    async fn atomic_write(&self, _: Vec<Op>) -> Result<Revision, StoreError> {
        unused()
    }
    async fn watch(&self, _: &str) -> Result<Watcher, StoreError> {
        self.watch_calls.fetch_add(1, Ordering::Relaxed);
        match self.watches.lock().await.recv().await {
            Some(answer) => answer,
            None => std::future::pending().await,
        }
    }
}

/// Waits (virtual time, no real sleeping) until `f` holds; fails after a minute of it.
async fn until(what: &str, f: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

fn diag(store: Arc<Scripted>, feeds: &Feeds) -> Diag {
    Diag {
        metrics: Metrics::new(),
        feeds: feeds.clone(),
        store,
    }
}

#[tokio::test(start_paused = true)]
async fn the_lock_feed_is_down_from_the_end_of_its_watch_until_a_new_one_opens() {
    let (store, script) = Scripted::new();
    let feeds = Feeds::default();
    let d = diag(store.clone(), &feeds);
    let (tx1, rx1) = mpsc::channel::<WatchEvent>(4);
    script.send(Ok(rx1)).await.unwrap();
    let health = feeds.register("locks");
    let feed = LockFeed::start(store.clone(), health.clone()).await;
    let mut changes = feed.subscribe();
    until("the feed up", || health.is_up()).await;
    assert_eq!(d.respond("/readyz").await, Reply::text(200, "ready\n"));

    // The watch stream ends: down at once, and waiters re-check.
    drop(tx1);
    until("the feed down", || !health.is_up()).await;
    changes.changed().await.unwrap();
    let reply = d.respond("/readyz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.body,
        "not ready: feed locks: down (its store watch ended and no new one is open yet)\n"
    );
    let metrics = d.respond("/metrics").await.body;
    assert!(
        metrics.contains("\nauth_server_feed_up{feed=\"locks\"} 0\n"),
        "{metrics}"
    );

    // The store refuses the next watch: still down, and it tries again.
    script
        .send(Err(StoreError::Backend("connection refused".into())))
        .await
        .unwrap();
    until("a third watch", || {
        store.watch_calls.load(Ordering::Relaxed) >= 3
    })
    .await;
    assert!(!health.is_up());

    // A new watch opens: up again.
    let (_tx2, rx2) = mpsc::channel::<WatchEvent>(4);
    script.send(Ok(rx2)).await.unwrap();
    until("the feed up again", || health.is_up()).await;
    assert_eq!(d.respond("/readyz").await.status, 200);
    drop(feed);
}

#[tokio::test(start_paused = true)]
async fn readiness_names_the_store_when_it_fails_or_hangs() {
    let (store, _script) = Scripted::new();
    let feeds = Feeds::default();
    let d = diag(store.clone(), &feeds);
    let up = feeds.register("locks");
    up.set_up(true);
    assert_eq!(d.respond("/healthz").await, Reply::text(200, "ok\n"));
    assert_eq!(d.respond("/readyz").await.status, 200);

    *store.get.lock().unwrap() = Err("disk I/O error".into());
    assert_eq!(
        d.respond("/readyz").await,
        Reply::text(
            503,
            "not ready: store: storage backend failed: disk I/O error\n"
        )
    );
    *store.get.lock().unwrap() = Ok(false);
    assert_eq!(
        d.respond("/readyz").await.body,
        format!("not ready: store: the cluster record {CLUSTER_NAME_KEY} is missing\n")
    );

    // A store that does not answer, and a feed down too: both named on one line.
    store.hang.store(true, Ordering::Relaxed);
    let cache = feeds.register("cache");
    let reply = d.respond("/readyz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.body,
        "not ready: store: no answer within 2s; feed cache: down (its store watch ended and no new one is open yet)\n"
    );
    cache.set_up(true);
    store.hang.store(false, Ordering::Relaxed);
    *store.get.lock().unwrap() = Ok(true);
    assert_eq!(d.respond("/readyz").await.status, 200);
    assert_eq!(d.respond("/nope").await.status, 404);
}

#[test]
fn feed_lag_is_shown_once_measured() {
    let feeds = Feeds::default();
    let f = feeds.register("cache");
    assert_eq!(
        feeds.snapshot(),
        vec![FeedStatus {
            name: "cache",
            up: false,
            lag: None
        }]
    );
    f.set_up(true);
    f.set_lag(Duration::from_millis(250));
    assert_eq!(
        feeds.snapshot(),
        vec![FeedStatus {
            name: "cache",
            up: true,
            lag: Some(Duration::from_millis(250))
        }]
    );
    let text = Metrics::new().render(&feeds.snapshot());
    let scrape = machine_id_diag::prometheus::parse(&text).unwrap();
    assert_eq!(
        scrape.value("auth_server_feed_lag_seconds", &[("feed", "cache")]),
        Some(0.25)
    );
    assert_eq!(
        scrape.value("auth_server_feed_up", &[("feed", "cache")]),
        Some(1.0)
    );
}
