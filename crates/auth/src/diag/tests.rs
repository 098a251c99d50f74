#![allow(clippy::unwrap_used)] // tests

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use machine_id_store::{
    EventQuery, Item, Op, Revision, SqliteBackend, StoreError, StoredEvent, Watcher,
};

use super::*;
use crate::cache::CachedBackend;

/// A backend whose `get` answers as told (or never); nothing else is used.
#[derive(Debug, Default)]
struct Scripted {
    fail: std::sync::Mutex<Option<String>>,
    hang: AtomicBool,
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
        match &*self.fail.lock().unwrap() {
            None => Ok(Some(Item {
                key: key.into(),
                value: b"{}".to_vec(),
                revision: 1,
            })),
            Some(e) => Err(StoreError::Backend(e.clone())),
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
        unused()
    }
    async fn ping(&self) -> Result<(), StoreError> {
        unused()
    }
    fn describe(&self) -> String {
        "scripted".into()
    }
    async fn append_event(&self, _: StoredEvent) -> Result<(), StoreError> {
        unused()
    }
    async fn search_events(&self, _: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        unused()
    }
    async fn delete_events_before(&self, _: i64, _: usize) -> Result<u64, StoreError> {
        unused()
    }
    async fn write_with_events(
        &self,
        _: Vec<Op>,
        _: Vec<StoredEvent>,
    ) -> Result<Revision, StoreError> {
        unused()
    }
}

/// The feed of a real cache over an in-memory store: up once loaded.
async fn live_feed() -> (CachedBackend, Arc<FeedHealth>) {
    let cache = CachedBackend::start(
        Arc::new(SqliteBackend::open_in_memory().unwrap()),
        Duration::from_secs(60),
    )
    .await;
    let health = cache.health();
    (cache, health)
}

#[tokio::test(start_paused = true)]
async fn readiness_names_the_store_when_it_fails_or_hangs() {
    let store = Arc::new(Scripted::default());
    let (_cache, feed) = live_feed().await;
    assert!(feed.is_up());
    let d = Diag {
        metrics: Metrics::new(),
        feed,
        store: store.clone(),
    };
    assert_eq!(d.respond("/healthz").await, Reply::text(200, "ok\n"));
    assert_eq!(d.respond("/readyz").await, Reply::text(200, "ready\n"));

    *store.fail.lock().unwrap() = Some("disk I/O error".into());
    assert_eq!(
        d.respond("/readyz").await,
        Reply::text(
            503,
            "not ready: store: storage backend failed: disk I/O error\n"
        )
    );
    // Paused time: the 2 s timeout passes without real waiting.
    store.hang.store(true, Ordering::Relaxed);
    assert_eq!(
        d.respond("/readyz").await.body,
        "not ready: store: no answer within 2s\n"
    );
    store.hang.store(false, Ordering::Relaxed);
    *store.fail.lock().unwrap() = None;
    assert_eq!(d.respond("/readyz").await.status, 200);
    assert_eq!(d.respond("/nope").await.status, 404);
}

#[tokio::test]
async fn a_feed_that_is_down_is_named_with_the_store() {
    let store = Arc::new(Scripted::default());
    *store.fail.lock().unwrap() = Some("connection refused".into());
    // A feed that never came up (no watch open, caches not loaded).
    let d = Diag {
        metrics: Metrics::new(),
        feed: Arc::new(FeedHealth::default()),
        store,
    };
    assert_eq!(
        d.respond("/readyz").await,
        Reply::text(
            503,
            "not ready: store: storage backend failed: connection refused; feed: down (the store's change feed was lost and the caches are not reloaded yet)\n"
        )
    );
    let text = d.respond("/metrics").await.body;
    let scrape = machine_id_diag::prometheus::parse(&text).unwrap();
    assert_eq!(scrape.value("auth_server_feed_up", &[]), Some(0.0));
    assert_eq!(
        scrape.value("auth_server_feed_losses_total", &[]),
        Some(0.0)
    );
}
