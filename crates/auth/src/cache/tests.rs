//! The cache against a real SQLite store: reads from memory, own writes visible at once,
//! other writers' changes through the watch, and no entry ever moved back by a late change.

use super::*;
use machine_id_store::SqliteBackend;

const LOAD: Duration = Duration::from_secs(10);

/// Polls `f` until it holds, for at most 5 s.
async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn value(item: Option<Item>) -> Option<Vec<u8>> {
    item.map(|i| i.value)
}

#[tokio::test]
async fn loads_serves_from_memory_and_follows_the_watch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteBackend::open(&path).unwrap();
    store.put("/roles/a", b"1".to_vec()).await.unwrap();
    store.put("/tokens/t", b"secret".to_vec()).await.unwrap();
    let cache = CachedBackend::start(Arc::new(store.clone()), LOAD).await;
    assert!(cache.health().is_up());
    assert_eq!(
        value(cache.get("/roles/a").await.unwrap()),
        Some(b"1".to_vec())
    );

    // A write the watch cannot report (another handle on the file, as another process would
    // be): cached keys are answered from memory, uncached ones from the store.
    let other = SqliteBackend::open(&path).unwrap();
    other.put("/roles/a", b"2".to_vec()).await.unwrap();
    other.put("/tokens/t", b"consumed".to_vec()).await.unwrap();
    assert_eq!(
        value(cache.get("/roles/a").await.unwrap()),
        Some(b"1".to_vec())
    );
    assert_eq!(
        value(store.get("/roles/a").await.unwrap()),
        Some(b"2".to_vec())
    );
    assert_eq!(
        value(cache.get("/tokens/t").await.unwrap()),
        Some(b"consumed".to_vec())
    );

    // A write the watch reports (through the watched handle, bypassing the cache) arrives.
    store.put("/locks/l", b"lock".to_vec()).await.unwrap();
    eventually("the lock is in the cache", async || {
        cache.range("/locks/").await.unwrap().len() == 1
    })
    .await;
    store.delete("/locks/l").await.unwrap();
    eventually("the lock is gone from the cache", async || {
        cache.get("/locks/l").await.unwrap().is_none()
    })
    .await;
}

#[tokio::test]
async fn own_writes_are_visible_at_once_and_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteBackend::open(&dir.path().join("state.db")).unwrap();
    let cache = CachedBackend::start(Arc::new(store.clone()), LOAD).await;

    let r1 = cache.create("/users/u", b"1".to_vec()).await.unwrap();
    let r2 = cache
        .compare_and_swap("/users/u", r1, b"2".to_vec())
        .await
        .unwrap();
    let got = cache.get("/users/u").await.unwrap().unwrap();
    assert_eq!((got.value.as_slice(), got.revision), (&b"2"[..], r2));
    assert_eq!(
        value(store.get("/users/u").await.unwrap()),
        Some(b"2".to_vec())
    );
    // A swap against the revision the cache no longer holds fails in the store.
    assert!(matches!(
        cache.compare_and_swap("/users/u", r1, b"x".to_vec()).await,
        Err(StoreError::Conflict { .. })
    ));
    cache
        .atomic_write(vec![
            Op::Delete {
                key: "/users/u".into(),
            },
            Op::Create {
                key: "/nodes/n".into(),
                value: b"n".to_vec(),
            },
        ])
        .await
        .unwrap();
    assert!(cache.get("/users/u").await.unwrap().is_none());
    assert_eq!(cache.range("/nodes/").await.unwrap().len(), 1);
    cache.delete("/nodes/n").await.unwrap();
    assert!(cache.range("/nodes/").await.unwrap().is_empty());
    // The echoes of all that arrive later and change nothing.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(cache.get("/users/u").await.unwrap().is_none());
    assert!(cache.range("/nodes/").await.unwrap().is_empty());
    assert!(
        cache.health().lag() > Duration::ZERO,
        "the feed lag is measured from own writes"
    );
}

#[test]
fn a_late_change_never_moves_an_entry_back() {
    let item = |v: &[u8], revision| Item {
        key: "/roles/r".into(),
        value: v.to_vec(),
        revision,
    };
    let mut cache = Cache::default();
    cache.apply_event(WatchEvent::Put(item(b"new", 5)));
    cache.apply_event(WatchEvent::Put(item(b"old", 3)));
    assert!(matches!(cache.entries.get("/roles/r"), Some(Entry::Live(i)) if i.value == b"new"));
    cache.apply_event(WatchEvent::Delete {
        key: "/roles/r".into(),
        revision: 6,
    });
    cache.apply_event(WatchEvent::Put(item(b"new", 5)));
    assert!(matches!(
        cache.entries.get("/roles/r"),
        Some(Entry::Gone(6))
    ));
    cache.apply_event(WatchEvent::Put(item(b"again", 7)));
    assert!(matches!(cache.entries.get("/roles/r"), Some(Entry::Live(i)) if i.value == b"again"));
    // Keys outside the cached prefixes are not kept.
    cache.apply_event(WatchEvent::Put(Item {
        key: "/tokens/t".into(),
        value: vec![],
        revision: 8,
    }));
    assert!(!cache.entries.contains_key("/tokens/t"));
}
