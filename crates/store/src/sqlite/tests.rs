//! Unit tests of the SQLite backend's internals (the conformance suite covers its
//! behaviour through the trait).

// Tests fail loudly on unexpected errors.
#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn successor_bumps_the_last_char() {
    assert_eq!(prefix_successor("/bots/").as_deref(), Some("/bots0"));
    assert_eq!(prefix_successor("a%").as_deref(), Some("a&"));
    assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
    assert_eq!(prefix_successor("a\u{10FFFF}").as_deref(), Some("b"));
    assert_eq!(prefix_successor("\u{10FFFF}\u{10FFFF}"), None);
    assert_eq!(prefix_successor(""), None);
}

#[tokio::test]
async fn slow_watcher_is_closed_without_blocking_writers() {
    let store = SqliteBackend::open_in_memory().unwrap();
    let mut slow = store.watch("/a/").await.unwrap();
    let mut other = store.watch("/b/").await.unwrap();
    for i in 0..SqliteBackend::WATCH_BUFFER + 10 {
        store.put(&format!("/a/{i}"), vec![1]).await.unwrap();
    }
    store.put("/b/x", vec![2]).await.unwrap();
    let mut seen = 0;
    while let Some(event) = slow.recv().await {
        assert!(matches!(event, WatchEvent::Put(ref item) if item.key == format!("/a/{seen}")));
        seen += 1;
    }
    assert_eq!(
        seen,
        SqliteBackend::WATCH_BUFFER,
        "the buffered events, then closed"
    );
    // The other watcher is unaffected.
    let event = other.recv().await.unwrap();
    assert!(matches!(event, WatchEvent::Put(item) if item.key == "/b/x"));
    assert_eq!(lock(&store.inner.watchers).len(), 1);
}

#[test]
fn writer_is_wal_and_synchronous_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteBackend::open(&dir.path().join("state.db")).unwrap();
    let writer = lock(&store.inner.writer);
    let sync: i64 = writer
        .pragma_query_value(None, "synchronous", |r| r.get(0))
        .unwrap();
    let mode: String = writer
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!((sync, mode.as_str()), (2, "wal"), "2 is FULL");
    assert_eq!(store.inner.readers.len(), READERS);
}

#[tokio::test]
async fn dropped_watchers_are_forgotten() {
    let store = SqliteBackend::open_in_memory().unwrap();
    for _ in 0..10 {
        drop(store.watch("/a/").await.unwrap());
    }
    let _live = store.watch("/a/").await.unwrap();
    assert_eq!(lock(&store.inner.watchers).len(), 1);
    store.put("/a/x", vec![]).await.unwrap();
    assert_eq!(lock(&store.inner.watchers).len(), 1);
}
