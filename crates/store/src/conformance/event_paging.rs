//! Conformance cases for reading the event log in pages (a cursor past a position, ties in
//! time included, several types merged) and for trimming it with
//! `delete_events_before` (exact counts, an exclusive bound, bounded batches, concurrent
//! trims).

use std::sync::Arc;

use super::ok;
use crate::{Backend, EventPosition, EventQuery, StoredEvent};

/// 40 events over 14 distinct times (most times shared by three events), types cycling
/// over `a`, `b`, `c`; appended in a scrambled order so the store cannot rely on it.
fn log() -> Vec<StoredEvent> {
    let mut events: Vec<StoredEvent> = (0..40i64)
        .map(|i| StoredEvent {
            time_nanos: 1_000 + i / 3,
            // Ids out of time order within a time, so the tie-break is really by id.
            id: format!("e{:02}", (i * 7) % 40),
            event_type: ["a", "b", "c"][(i % 3) as usize].to_owned(),
            data: format!("{{\"n\":{i}}}").into_bytes(),
        })
        .collect();
    events.sort_by_key(|e| (e.time_nanos * 31 + i64::from(e.id.as_bytes()[2])) % 17);
    events
}

/// `events` in the log's order: by time, then id.
fn ordered(mut events: Vec<StoredEvent>, descending: bool) -> Vec<StoredEvent> {
    events.sort_by(|a, b| (a.time_nanos, &a.id).cmp(&(b.time_nanos, &b.id)));
    if descending {
        events.reverse();
    }
    events
}

/// Reads everything `query` selects in pages of `query.limit`, each starting past the
/// previous page's last event; returns the events and the number of pages.
async fn read_pages(b: &dyn Backend, mut query: EventQuery) -> (Vec<StoredEvent>, usize) {
    let mut all = Vec::new();
    let mut pages = 0;
    loop {
        let page = ok(b.search_events(&query).await, "search_events page");
        pages += 1;
        assert!(page.len() <= query.limit, "a page longer than its limit");
        let full = page.len() == query.limit;
        query.after = page.last().map(StoredEvent::position);
        all.extend(page);
        if !full {
            return (all, pages);
        }
        assert!(pages < 100, "paging does not end");
    }
}

/// Pages of 4 return every selected event exactly once, in order, in both directions, with
/// and without type filters (one type, two types) and time bounds, though most times are
/// shared by three events and a page boundary falls inside such a tie.
pub async fn events_page_through_ties_in_order(b: Arc<dyn Backend>) {
    let events = log();
    for e in &events {
        ok(b.append_event(e.clone()).await, "append_event");
    }
    let cases: Vec<(Vec<&str>, Option<i64>, Option<i64>)> = vec![
        (vec![], None, None),
        (vec!["a"], None, None),
        (vec!["b", "c"], None, None),
        (vec![], Some(1_002), Some(1_011)),
        (vec!["c", "a", "c"], Some(1_003), None),
    ];
    for (types, since, until) in cases {
        for descending in [false, true] {
            let expected = ordered(
                events
                    .iter()
                    .filter(|e| types.is_empty() || types.contains(&e.event_type.as_str()))
                    .filter(|e| since.is_none_or(|s| e.time_nanos >= s))
                    .filter(|e| until.is_none_or(|u| e.time_nanos < u))
                    .cloned()
                    .collect(),
                descending,
            );
            let query = EventQuery {
                since_nanos: since,
                until_nanos: until,
                event_types: types.iter().map(|t| (*t).to_owned()).collect(),
                limit: 4,
                descending,
                after: None,
            };
            let (got, pages) = read_pages(&*b, query.clone()).await;
            let what = format!(
                "types {types:?}, since {since:?}, until {until:?}, descending {descending}"
            );
            assert_eq!(got, expected, "pages of 4: {what}");
            assert_eq!(pages, expected.len() / 4 + 1, "{what}");
            let whole = ok(
                b.search_events(&EventQuery {
                    limit: 100,
                    ..query
                })
                .await,
                "search_events",
            );
            assert_eq!(whole, expected, "one page: {what}");
        }
    }
    // A cursor inside a tie: after the middle event of time 1001, the next is the third.
    let at_1001 = ordered(
        events
            .iter()
            .filter(|e| e.time_nanos == 1_001)
            .cloned()
            .collect(),
        false,
    );
    let next = ok(
        b.search_events(&EventQuery {
            limit: 1,
            after: Some(at_1001[1].position()),
            ..EventQuery::default()
        })
        .await,
        "search_events",
    );
    assert_eq!(next, [at_1001[2].clone()]);
    let before = ok(
        b.search_events(&EventQuery {
            limit: 1,
            descending: true,
            after: Some(at_1001[1].position()),
            ..EventQuery::default()
        })
        .await,
        "search_events",
    );
    assert_eq!(before, [at_1001[0].clone()]);
    // A cursor need not name a stored event.
    let past_all = EventPosition {
        time_nanos: 1_013,
        id: "zz".into(),
    };
    assert!(
        ok(
            b.search_events(&EventQuery {
                limit: 10,
                after: Some(past_all),
                ..EventQuery::default()
            })
            .await,
            "search_events",
        )
        .is_empty()
    );
}

fn at(time_nanos: i64, id: &str) -> StoredEvent {
    StoredEvent {
        time_nanos,
        id: id.to_owned(),
        event_type: "t".to_owned(),
        data: b"{}".to_vec(),
    }
}

fn ids(b: Vec<StoredEvent>) -> Vec<String> {
    b.into_iter().map(|e| e.id).collect()
}

/// `delete_events_before(t, max)` deletes the oldest events strictly below `t`, at most
/// `max`, and says exactly how many; an event at `t` stays; repeating it deletes nothing.
pub async fn delete_events_before_is_exact_and_bounded(b: Arc<dyn Backend>) {
    for e in [
        at(100, "a"),
        at(200, "c"),
        at(200, "b"),
        at(300, "d"),
        at(300, "e"),
        at(400, "f"),
    ] {
        ok(b.append_event(e).await, "append_event");
    }
    let all = || async {
        ids(ok(
            b.search_events(&EventQuery {
                limit: 100,
                ..EventQuery::default()
            })
            .await,
            "search_events",
        ))
    };
    assert_eq!(ok(b.delete_events_before(100, 10).await, "delete"), 0);
    assert_eq!(
        ok(b.delete_events_before(200, 10).await, "delete"),
        1,
        "only the event below 200: the bound is exclusive"
    );
    assert_eq!(all().await, ["b", "c", "d", "e", "f"]);
    assert_eq!(ok(b.delete_events_before(1_000, 0).await, "delete"), 0);
    assert_eq!(all().await.len(), 5, "max 0 deletes nothing");
    assert_eq!(
        ok(b.delete_events_before(1_000, 3).await, "delete"),
        3,
        "a batch of at most 3"
    );
    assert_eq!(all().await, ["e", "f"], "the oldest go first, ties by id");
    assert_eq!(ok(b.delete_events_before(400, 3).await, "delete"), 1);
    assert_eq!(ok(b.delete_events_before(400, 3).await, "delete"), 0);
    assert_eq!(all().await, ["f"]);
    // A deleted id may be appended again (a trimmed log is not a tombstone list).
    ok(b.append_event(at(500, "a")).await, "append_event");
    assert_eq!(all().await, ["f", "a"]);
}

/// Trims racing on one backend (as several servers' retention tasks would) delete every
/// event below the bound exactly once: their counts add up to it.
pub async fn concurrent_trims_delete_each_event_once(b: Arc<dyn Backend>) {
    for i in 0..300i64 {
        ok(
            b.append_event(at(i, &format!("e{i:03}"))).await,
            "append_event",
        );
    }
    let mut trims = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let b = Arc::clone(&b);
        trims.spawn(async move {
            let mut deleted = 0;
            loop {
                let n = ok(b.delete_events_before(250, 20).await, "delete");
                deleted += n;
                if n < 20 {
                    return deleted;
                }
            }
        });
    }
    let total: u64 = trims.join_all().await.into_iter().sum();
    assert_eq!(total, 250, "every event below 250 deleted once");
    let left = ok(
        b.search_events(&EventQuery {
            limit: 1_000,
            ..EventQuery::default()
        })
        .await,
        "search_events",
    );
    assert_eq!(left.len(), 50);
    assert_eq!(left[0].time_nanos, 250);
}
