//! Conformance cases for the event log (append, idempotence, search by time, type, order and
//! limit, kept apart from the items and the watch feed) and for `ping` and `describe`.

use std::sync::Arc;
use std::time::Duration;

use super::ok;
use crate::{Backend, EventQuery, StoredEvent, WatchEvent};

fn event(time_nanos: i64, id: &str, event_type: &str) -> StoredEvent {
    StoredEvent {
        time_nanos,
        id: id.to_owned(),
        event_type: event_type.to_owned(),
        data: format!("{{\"id\":\"{id}\"}}").into_bytes(),
    }
}

fn ids(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|e| e.id.as_str()).collect()
}

fn query(limit: usize) -> EventQuery {
    EventQuery {
        limit,
        ..EventQuery::default()
    }
}

/// Events come back whole, ordered by time then id (ascending or descending), filtered by
/// `[since, until)` and type, cut at `limit`; appending an id twice keeps the first.
pub async fn events_append_and_search(b: Arc<dyn Backend>) {
    assert!(
        ok(b.search_events(&query(10)).await, "search").is_empty(),
        "a new store has no events"
    );
    // Appended out of order; two share a time (ordered by id then).
    for e in [
        event(300, "c", "bot.join"),
        event(100, "a", "bot.join"),
        event(200, "b2", "cert.renew"),
        event(200, "b1", "bot.join"),
        event(400, "d", "lock.create"),
    ] {
        ok(b.append_event(e).await, "append_event");
    }
    let all = ok(b.search_events(&query(100)).await, "search");
    assert_eq!(ids(&all), ["a", "b1", "b2", "c", "d"]);
    assert_eq!(all[0], event(100, "a", "bot.join"), "stored whole");

    let newest_first = EventQuery {
        descending: true,
        limit: 2,
        ..EventQuery::default()
    };
    assert_eq!(
        ids(&ok(b.search_events(&newest_first).await, "search")),
        ["d", "c"]
    );
    assert_eq!(
        ids(&ok(b.search_events(&query(2)).await, "search")),
        ["a", "b1"]
    );
    assert!(ok(b.search_events(&query(0)).await, "search").is_empty());

    let window = EventQuery {
        since_nanos: Some(200),
        until_nanos: Some(400),
        limit: 100,
        ..EventQuery::default()
    };
    assert_eq!(
        ids(&ok(b.search_events(&window).await, "search")),
        ["b1", "b2", "c"],
        "since is inclusive, until exclusive"
    );
    let typed = EventQuery {
        event_types: vec!["bot.join".into(), "lock.create".into()],
        since_nanos: Some(150),
        limit: 100,
        ..EventQuery::default()
    };
    assert_eq!(
        ids(&ok(b.search_events(&typed).await, "search")),
        ["b1", "c", "d"]
    );
    let none = EventQuery {
        event_types: vec!["no.such".into()],
        limit: 100,
        ..EventQuery::default()
    };
    assert!(ok(b.search_events(&none).await, "search").is_empty());

    // The same id again (a retried append) changes nothing.
    ok(
        b.append_event(StoredEvent {
            data: b"retry".to_vec(),
            ..event(999, "c", "other")
        })
        .await,
        "append_event again",
    );
    let again = ok(b.search_events(&query(100)).await, "search");
    assert_eq!(again, all, "an existing id is kept as first appended");
}

/// Events are not items: `range` and watchers never see them, and items written around an
/// event keep increasing revisions.
pub async fn events_are_not_items(b: Arc<dyn Backend>) {
    let mut w = ok(b.watch("").await, "watch");
    let r1 = ok(b.put("/k", b"1".to_vec()).await, "put");
    ok(b.append_event(event(1, "e1", "t")).await, "append_event");
    let r2 = ok(b.put("/end", vec![]).await, "put");
    assert!(r2 > r1);
    assert_eq!(
        ok(b.range("").await, "range").len(),
        2,
        "only the two items"
    );
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(30), w.recv())
            .await
            .expect("a watch event within 30s")
            .expect("the watcher stays open");
        match event {
            WatchEvent::Put(item) if item.key == "/end" => break,
            WatchEvent::Put(item) => seen.push(item.key),
            WatchEvent::Delete { key, .. } => seen.push(key),
        }
    }
    assert_eq!(seen, ["/k"], "the event log is not on the watch feed");
}

/// `ping` answers on a working store, and `describe` names the kind of backend without
/// secrets.
pub async fn ping_and_describe(b: Arc<dyn Backend>) {
    ok(b.ping().await, "ping");
    let described = b.describe();
    assert!(
        described.starts_with("sqlite ") || described.starts_with("postgresql "),
        "describe names the backend kind: {described}"
    );
    assert!(
        !described.contains("password"),
        "describe shows no password: {described}"
    );
}
