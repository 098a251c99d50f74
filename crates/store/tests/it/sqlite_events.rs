//! The SQLite event log at scale and across schema versions: a million events searched
//! through the indexes (checked with `EXPLAIN QUERY PLAN`), and a file of schema version 2
//! (before the type index) migrated at open.

use std::time::Instant;

use machine_id_store::{Backend, EventPosition, EventQuery, SqliteBackend, StoredEvent};

const EVENTS: i64 = 1_000_000;
/// Every this many events is of the rare type.
const RARE_EVERY: i64 = 1_000;
const BASE: i64 = 1_700_000_000_000_000_000;

/// Event `i` of the big log: two events share each time, and the second of each pair has
/// the smaller id, so the tie-break by id matters (ids are otherwise ascending, which keeps
/// the bulk insert an append to the primary key); every [`RARE_EVERY`]th is `bot.lock`, the
/// rest cycle over four common types.
fn big_event(i: i64) -> StoredEvent {
    let event_type = if i % RARE_EVERY == 0 {
        "bot.lock"
    } else {
        ["cert.renew", "bot.join", "cert.create", "resource.put"][(i % 4) as usize]
    };
    StoredEvent {
        time_nanos: BASE + (i / 2) * 1_000,
        id: format!("{:07}", i ^ 1),
        event_type: event_type.to_owned(),
        data: format!(
            "{{\"id\":\"{i}\",\"event\":\"{event_type}\",\"user\":\"bot-robot-{}\",\"success\":true}}",
            i % 500
        )
        .into_bytes(),
    }
}

/// The log's order (time, then id) of the indices `i` of [`big_event`] that `filter`
/// keeps: by time pairs, and within a pair the odd index first (its id is smaller).
fn ordered_indices(filter: impl Fn(i64) -> bool) -> Vec<i64> {
    (0..EVENTS / 2)
        .flat_map(|k| [2 * k + 1, 2 * k])
        .filter(|i| filter(*i))
        .collect()
}

fn assert_indexed(plan: &[String], index: &str, what: &str) {
    assert!(!plan.is_empty(), "{what}: no plan");
    for line in plan {
        assert!(
            line.contains(&format!("USING INDEX {index}"))
                || line.contains(&format!("USING COVERING INDEX {index}")),
            "{what}: a step without the index {index}: {plan:?}"
        );
        assert!(!line.contains("TEMP B-TREE"), "{what}: a sort: {plan:?}");
    }
}

/// A million events (appended in batches through the bulk path, each one transaction):
/// the newest 100, a page deep in the middle, the newest 100 of a rare type and a page of
/// it behind a cursor all come back exactly, from plans that walk an index in order (no
/// table scan, no sort) and seek to the cursor (`SEARCH`, not `SCAN`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_events_are_searched_through_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteBackend::open(&dir.path().join("state.db")).unwrap();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(100_000);
    for i in 0..EVENTS {
        batch.push(big_event(i));
        if batch.len() == 100_000 {
            let n = store
                .append_events(std::mem::take(&mut batch))
                .await
                .unwrap();
            assert_eq!(n, 100_000);
        }
    }
    eprintln!("appended {EVENTS} events in {:?}", started.elapsed());
    let started = Instant::now();

    let order = ordered_indices(|_| true);
    let newest = EventQuery {
        limit: 100,
        descending: true,
        ..EventQuery::default()
    };
    let got = store.search_events(&newest).await.unwrap();
    let expected: Vec<StoredEvent> = order
        .iter()
        .rev()
        .take(100)
        .map(|i| big_event(*i))
        .collect();
    assert_eq!(got, expected, "the newest 100");
    assert_indexed(
        &store.search_plan(&newest).await.unwrap(),
        "events_by_time",
        "newest",
    );

    // The page after the 500,000th newest: the next 100 older ones.
    let cursor = big_event(order[order.len() - 500_000]).position();
    let deep = EventQuery {
        after: Some(cursor.clone()),
        ..newest.clone()
    };
    let got = store.search_events(&deep).await.unwrap();
    let expected: Vec<StoredEvent> = order[order.len() - 500_100..order.len() - 500_000]
        .iter()
        .rev()
        .map(|i| big_event(*i))
        .collect();
    assert_eq!(got, expected, "a page in the middle");
    let plan = store.search_plan(&deep).await.unwrap();
    assert_indexed(&plan, "events_by_time", "deep page");
    assert!(
        plan.iter().all(|l| l.starts_with("SEARCH")),
        "the cursor is a seek into the index: {plan:?}"
    );

    // The same in ascending order, with a time window.
    let window = EventQuery {
        since_nanos: Some(BASE + 100_000 * 1_000),
        until_nanos: Some(BASE + 400_000 * 1_000),
        limit: 100,
        descending: false,
        after: Some(cursor),
        ..EventQuery::default()
    };
    let got = store.search_events(&window).await.unwrap();
    let expected: Vec<StoredEvent> = order[order.len() - 499_999..order.len() - 499_899]
        .iter()
        .map(|i| big_event(*i))
        .collect();
    assert_eq!(got, expected, "an ascending page in a window");
    assert_indexed(
        &store.search_plan(&window).await.unwrap(),
        "events_by_time",
        "window",
    );

    // A rare type: 1,000 of the million, found through the type index.
    let rare_order = ordered_indices(|i| i % RARE_EVERY == 0);
    assert_eq!(rare_order.len(), 1_000);
    let rare = EventQuery {
        event_types: vec!["bot.lock".into()],
        limit: 100,
        descending: true,
        ..EventQuery::default()
    };
    let got = store.search_events(&rare).await.unwrap();
    let expected: Vec<StoredEvent> = rare_order
        .iter()
        .rev()
        .take(100)
        .map(|i| big_event(*i))
        .collect();
    assert_eq!(got, expected, "the newest 100 of a rare type");
    assert_indexed(
        &store.search_plan(&rare).await.unwrap(),
        "events_by_type",
        "by type",
    );
    let rare_deep = EventQuery {
        after: Some(big_event(rare_order[500]).position()),
        ..rare.clone()
    };
    let got = store.search_events(&rare_deep).await.unwrap();
    let expected: Vec<StoredEvent> = rare_order[400..500]
        .iter()
        .rev()
        .map(|i| big_event(*i))
        .collect();
    assert_eq!(got, expected, "a page of a rare type behind a cursor");
    let plan = store.search_plan(&rare_deep).await.unwrap();
    assert_indexed(&plan, "events_by_type", "by type, deep");
    assert!(plan.iter().all(|l| l.starts_with("SEARCH")), "{plan:?}");

    // Two types: one indexed query each, merged.
    let two = EventQuery {
        event_types: vec!["bot.lock".into(), "cert.renew".into()],
        ..rare.clone()
    };
    // Every rare event's index is a multiple of 4, like every `cert.renew` one.
    let two_order = ordered_indices(|i| i % 4 == 0);
    let got = store.search_events(&two).await.unwrap();
    let expected: Vec<StoredEvent> = two_order
        .iter()
        .rev()
        .take(100)
        .map(|i| big_event(*i))
        .collect();
    assert_eq!(got, expected, "two types merged");
    let plan = store.search_plan(&two).await.unwrap();
    assert_eq!(plan.len(), 2, "one step per type: {plan:?}");
    assert_indexed(&plan, "events_by_type", "two types");
    eprintln!("searched and checked in {:?}", started.elapsed());

    // Trimming the oldest quarter in bounded batches leaves exactly the rest.
    let cutoff = BASE + 125_000 * 1_000;
    let mut deleted = 0;
    loop {
        let n = store.delete_events_before(cutoff, 50_000).await.unwrap();
        assert!(n <= 50_000);
        deleted += n;
        if n < 50_000 {
            break;
        }
    }
    assert_eq!(deleted, 250_000, "two events per time below the cutoff");
    let oldest = store
        .search_events(&EventQuery {
            limit: 1,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(oldest[0].time_nanos, cutoff);
}

/// A file of schema version 2 (events, but no type index) opens as version 3 with its
/// events, gains the type index, and searches by type through it.
#[tokio::test]
async fn version_2_file_gains_the_type_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL,
             revision INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL)
             WITHOUT ROWID;
         INSERT INTO meta (name, value) VALUES ('revision', 3);
         INSERT INTO kv (key, value, revision) VALUES ('/bots/old', x'6f6c64', 3);
         CREATE TABLE events (id TEXT PRIMARY KEY NOT NULL, time_nanos INTEGER NOT NULL,
             event_type TEXT NOT NULL, data BLOB NOT NULL) WITHOUT ROWID;
         CREATE INDEX events_by_time ON events (time_nanos, id);
         INSERT INTO events VALUES ('e1', 10, 'bot.join', x'7b7d');
         INSERT INTO events VALUES ('e2', 20, 'cert.renew', x'7b7d');
         INSERT INTO events VALUES ('e3', 30, 'bot.join', x'7b7d');
         PRAGMA application_id = 1296647251;
         PRAGMA user_version = 2;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteBackend::open(&path).unwrap();
    assert_eq!(store.get("/bots/old").await.unwrap().unwrap().revision, 3);
    let joins = EventQuery {
        event_types: vec!["bot.join".into()],
        limit: 10,
        descending: true,
        ..EventQuery::default()
    };
    let got: Vec<String> = store
        .search_events(&joins)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(got, ["e3", "e1"]);
    assert_indexed(
        &store.search_plan(&joins).await.unwrap(),
        "events_by_type",
        "migrated",
    );
    let after = EventQuery {
        after: Some(EventPosition {
            time_nanos: 30,
            id: "e3".into(),
        }),
        ..joins
    };
    assert_eq!(store.search_events(&after).await.unwrap()[0].id, "e1");
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
}
