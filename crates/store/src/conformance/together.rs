//! Conformance cases for [`Backend::write_with_events`]: a state change and its audit events
//! commit together or not at all, alone and with many concurrent writers (which the SQLite
//! store commits in groups: a failing member of a group must not leak its events, nor take
//! the others down).

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::ok;
use crate::{Backend, EventQuery, Op, StoreError, StoredEvent, WatchEvent};

fn event(time_nanos: i64, id: &str) -> StoredEvent {
    StoredEvent {
        time_nanos,
        id: id.to_owned(),
        event_type: "test.together".to_owned(),
        data: format!("{{\"id\":\"{id}\"}}").into_bytes(),
    }
}

async fn event_ids(b: &Arc<dyn Backend>) -> Vec<String> {
    let all = ok(
        b.search_events(&EventQuery {
            limit: 10_000,
            ..EventQuery::default()
        })
        .await,
        "search_events",
    );
    all.into_iter().map(|e| e.id).collect()
}

/// The ops and the events of one call land together; a failed condition writes neither; an
/// empty op list appends the events at the current revision; a duplicate event id is
/// skipped; watchers see the ops, never the events.
pub async fn write_with_events_commits_both_or_neither(b: Arc<dyn Backend>) {
    let r1 = ok(b.create("/together/a", b"v1".to_vec()).await, "create");
    let mut watcher = ok(b.watch("/together/").await, "watch");

    let r2 = ok(
        b.write_with_events(
            vec![Op::CompareAndSwap {
                key: "/together/a".into(),
                revision: r1,
                value: b"v2".to_vec(),
            }],
            vec![event(10, "e1")],
        )
        .await,
        "write_with_events",
    );
    assert!(r2 > r1, "the swap takes a new revision ({r2} after {r1})");
    let item = ok(b.get("/together/a").await, "get").expect("present");
    assert_eq!((item.value.as_slice(), item.revision), (&b"v2"[..], r2));
    assert_eq!(event_ids(&b).await, ["e1"]);

    // A stale revision: the swap fails, and its event is not written either.
    let stale = b
        .write_with_events(
            vec![Op::CompareAndSwap {
                key: "/together/a".into(),
                revision: r1,
                value: b"v3".to_vec(),
            }],
            vec![event(20, "e2")],
        )
        .await;
    assert!(
        matches!(&stale, Err(StoreError::Conflict { key }) if key == "/together/a"),
        "{stale:?}"
    );
    let item = ok(b.get("/together/a").await, "get").expect("present");
    assert_eq!(item.value, b"v2", "the failed write changed nothing");
    assert_eq!(
        event_ids(&b).await,
        ["e1"],
        "the failed write's event is not in the log"
    );

    // Events alone: no revision is taken.
    let r3 = ok(
        b.write_with_events(vec![], vec![event(30, "e3"), event(31, "e4")])
            .await,
        "events only",
    );
    // (A database server's current revision may be past r2: the failed swap above took a
    // revision it never used.)
    assert!(
        r3 >= r2,
        "events alone return the current revision ({r3} < {r2})"
    );
    let item = ok(b.get("/together/a").await, "get").expect("present");
    assert_eq!(item.revision, r2, "events alone change no item");
    assert_eq!(event_ids(&b).await, ["e1", "e3", "e4"]);

    // A duplicate event id is skipped, the op still applies.
    let r4 = ok(
        b.write_with_events(
            vec![Op::Put {
                key: "/together/b".into(),
                value: b"b".to_vec(),
            }],
            vec![event(40, "e1")],
        )
        .await,
        "duplicate event id",
    );
    assert!(r4 > r3);
    assert_eq!(event_ids(&b).await, ["e1", "e3", "e4"]);

    // The watcher saw the two item changes, in order, and nothing else.
    for (key, revision) in [("/together/a", r2), ("/together/b", r4)] {
        match watcher.recv().await {
            Some(WatchEvent::Put(item)) => {
                assert_eq!((item.key.as_str(), item.revision), (key, revision));
            }
            other => panic!("expected the put of {key}, got {other:?}"),
        }
    }
    assert!(
        watcher.try_recv().is_err(),
        "events and failed writes reach no watcher"
    );
}

/// Writers that start together (the SQLite store commits them in groups): every write that
/// returned `Ok` is stored with its events at its own revision; of the racers creating one
/// key exactly one wins and only the winner's event is in the log.
pub async fn concurrent_writes_with_events_land_whole(b: Arc<dyn Backend>) {
    const OWN: usize = 48;
    const RACERS: usize = 16;
    let barrier = Arc::new(Barrier::new(OWN + RACERS));
    let mut tasks = JoinSet::new();
    for i in 0..OWN + RACERS {
        let b = Arc::clone(&b);
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            barrier.wait().await;
            let (key, id) = if i < OWN {
                (format!("/together/own-{i:02}"), format!("own-{i:02}"))
            } else {
                ("/together/contested".to_owned(), format!("racer-{i:02}"))
            };
            let result = b
                .write_with_events(
                    vec![Op::Create {
                        key: key.clone(),
                        value: id.clone().into_bytes(),
                    }],
                    vec![event(i64::try_from(i).unwrap_or(0), &id)],
                )
                .await;
            (i, key, id, result)
        });
    }
    let mut revisions = BTreeSet::new();
    let mut winners = Vec::new();
    for (i, key, id, result) in tasks.join_all().await {
        match result {
            Ok(revision) => {
                assert!(
                    revisions.insert(revision),
                    "revision {revision} handed out twice"
                );
                if i >= OWN {
                    winners.push(id.clone());
                }
                let item = ok(b.get(&key).await, "get").expect("an acknowledged create is stored");
                if i < OWN {
                    assert_eq!(item.revision, revision, "{key}");
                    assert_eq!(item.value, id.as_bytes(), "{key}");
                }
            }
            Err(StoreError::AlreadyExists { key: k }) if i >= OWN => {
                assert_eq!(k, "/together/contested");
            }
            Err(e) => panic!("write {i} ({key}) failed: {e}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one racer creates the key: {winners:?}"
    );
    let contested = ok(b.get("/together/contested").await, "get").expect("created");
    assert_eq!(contested.value, winners[0].as_bytes());

    let logged: BTreeSet<String> = event_ids(&b).await.into_iter().collect();
    let mut expected: BTreeSet<String> = (0..OWN).map(|i| format!("own-{i:02}")).collect();
    expected.insert(winners[0].clone());
    assert_eq!(
        logged, expected,
        "every acknowledged write's event and no loser's"
    );
}
