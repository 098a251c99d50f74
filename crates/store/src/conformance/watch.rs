//! Conformance cases for `watch`: the changes under a prefix, in commit order.

use std::sync::Arc;
use std::time::Duration;

use super::{item, ok};
use crate::{Backend, Op, WatchEvent, Watcher};

/// How long a watcher may take to deliver an event before a case fails (not a sleep: the
/// wait ends as soon as the event arrives).
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

async fn next_event(watcher: &mut Watcher) -> WatchEvent {
    match tokio::time::timeout(EVENT_TIMEOUT, watcher.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the watcher closed"),
        Err(_) => panic!("no watch event within {EVENT_TIMEOUT:?}"),
    }
}

/// Reads events until the put of `marker`, returning those before it.
async fn events_until(watcher: &mut Watcher, marker: &str) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    loop {
        match next_event(watcher).await {
            WatchEvent::Put(item) if item.key == marker => return events,
            event => events.push(event),
        }
    }
}

/// A watcher gets, in commit order and with their revisions, the puts and deletes under its
/// prefix made after `watch` returned, and nothing else: not other prefixes, not siblings
/// like `/bots2`, not failed writes.
pub async fn watch_sees_changes_under_prefix_in_order(b: Arc<dyn Backend>) {
    ok(b.put("/bots/before", b"old".to_vec()).await, "put");
    let mut w = ok(b.watch("/bots/").await, "watch");
    let r1 = ok(b.put("/bots/a", b"a1".to_vec()).await, "put");
    ok(b.put("/roles/r", b"r".to_vec()).await, "put");
    ok(b.put("/bots2/x", b"x".to_vec()).await, "put");
    let r2 = ok(b.create("/bots/b", b"b".to_vec()).await, "create");
    let r3 = ok(
        b.compare_and_swap("/bots/a", r1, b"a2".to_vec()).await,
        "cas",
    );
    ok(b.delete("/bots/b").await, "delete");
    assert_store_err!(
        b.compare_and_swap("/bots/a", r1, b"stale".to_vec()).await,
        Conflict,
        "/bots/a"
    );
    let failed = b
        .atomic_write(vec![
            Op::Put {
                key: "/bots/c".into(),
                value: b"never".to_vec(),
            },
            Op::Create {
                key: "/bots/a".into(),
                value: vec![],
            },
        ])
        .await;
    assert_store_err!(failed, AlreadyExists, "/bots/a");
    let r5 = ok(
        b.atomic_write(vec![
            Op::Put {
                key: "/bots/c".into(),
                value: b"c".to_vec(),
            },
            Op::Put {
                key: "/roles/q".into(),
                value: b"q".to_vec(),
            },
            Op::Delete {
                key: "/bots/a".into(),
            },
        ])
        .await,
        "atomic_write",
    );
    ok(
        b.compare_and_delete("/bots/c", r5).await,
        "compare_and_delete",
    );
    ok(b.put("/bots/zz-end", vec![]).await, "put marker");
    let events = events_until(&mut w, "/bots/zz-end").await;
    let [
        WatchEvent::Put(a1),
        WatchEvent::Put(b1),
        WatchEvent::Put(a2),
        WatchEvent::Delete {
            key: b_del,
            revision: rb,
        },
        WatchEvent::Put(c1),
        WatchEvent::Delete {
            key: a_del,
            revision: ra,
        },
        WatchEvent::Delete {
            key: c_del,
            revision: rc,
        },
    ] = events.as_slice()
    else {
        panic!("unexpected watch events: {events:?}");
    };
    assert_eq!(a1, &item("/bots/a", b"a1", r1));
    assert_eq!(b1, &item("/bots/b", b"b", r2));
    assert_eq!(a2, &item("/bots/a", b"a2", r3));
    assert_eq!((b_del.as_str(), *rb > r3), ("/bots/b", true));
    assert_eq!(c1, &item("/bots/c", b"c", r5));
    assert_eq!((a_del.as_str(), *ra), ("/bots/a", r5));
    assert_eq!((c_del.as_str(), *rc > r5), ("/bots/c", true));
}

/// Watchers on different prefixes each get their own changes; the empty prefix gets all;
/// dropping a watcher disturbs neither writers nor other watchers.
pub async fn watchers_are_independent(b: Arc<dyn Backend>) {
    let mut wa = ok(b.watch("/a/").await, "watch");
    let mut wb = ok(b.watch("/b/").await, "watch");
    let mut all = ok(b.watch("").await, "watch");
    let ra = ok(b.put("/a/1", b"1".to_vec()).await, "put");
    let rb = ok(b.put("/b/1", b"1".to_vec()).await, "put");
    ok(b.put("/a/end", vec![]).await, "put");
    ok(b.put("/b/end", vec![]).await, "put");
    assert_eq!(
        events_until(&mut wa, "/a/end").await,
        [WatchEvent::Put(item("/a/1", b"1", ra))]
    );
    assert_eq!(
        events_until(&mut wb, "/b/end").await,
        [WatchEvent::Put(item("/b/1", b"1", rb))]
    );
    drop(wa);
    let r2 = ok(
        b.put("/a/2", b"2".to_vec()).await,
        "put after a watcher was dropped",
    );
    ok(b.put("/end", vec![]).await, "put");
    let seen: Vec<String> = events_until(&mut all, "/end")
        .await
        .into_iter()
        .map(|e| match e {
            WatchEvent::Put(i) => i.key,
            WatchEvent::Delete { key, .. } => format!("-{key}"),
        })
        .collect();
    assert_eq!(seen, ["/a/1", "/b/1", "/a/end", "/b/end", "/a/2"]);
    assert!(r2 > rb);
}

/// A watcher gets every op of one `atomic_write`, even ops that repeat an earlier one of the
/// same write exactly (put, delete, the same put again), all at its revision; an
/// `atomic_write` of one delete returns a revision too.
pub async fn watch_sees_every_op_of_one_write(b: Arc<dyn Backend>) {
    let mut w = ok(b.watch("/r/").await, "watch");
    let put = || Op::Put {
        key: "/r/k".into(),
        value: b"same".to_vec(),
    };
    let r1 = ok(
        b.atomic_write(vec![put(), Op::Delete { key: "/r/k".into() }, put()])
            .await,
        "atomic_write",
    );
    let r2 = ok(
        b.atomic_write(vec![Op::Delete { key: "/r/k".into() }])
            .await,
        "atomic_write of one delete",
    );
    assert!(r2 > r1, "{r2} after {r1}");
    assert_eq!(ok(b.get("/r/k").await, "get"), None);
    ok(b.put("/r/zz-end", vec![]).await, "put marker");
    let events = events_until(&mut w, "/r/zz-end").await;
    let deleted = |revision| WatchEvent::Delete {
        key: "/r/k".into(),
        revision,
    };
    let put_at = |revision| WatchEvent::Put(item("/r/k", b"same", revision));
    assert_eq!(
        events,
        [put_at(r1), deleted(r1), put_at(r1), deleted(r2)],
        "every op, in order"
    );
}
