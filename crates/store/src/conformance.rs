//! The conformance suite every [`Backend`] must pass (feature `conformance`).
//!
//! Each case is a `pub async fn` taking a fresh, empty backend and panicking on a violation.
//! A backend's tests run them with [`conformance_tests!`](crate::conformance_tests), which
//! writes one `#[tokio::test]` per case (so a failure names its case), or with [`run_all`]:
//!
//! ```
//! // In tests/it/main.rs of a backend crate, which has tokio (macros, rt-multi-thread) and
//! // machine-id-store with the `conformance` feature as dev-dependencies:
//! use std::sync::Arc;
//! use machine_id_store::{Backend, SqliteBackend};
//!
//! /// A fresh, empty backend and a guard kept alive until the case ends.
//! async fn setup() -> (Arc<dyn Backend>, tempfile::TempDir) {
//!     let dir = tempfile::tempdir().expect("temporary directory");
//!     let store = SqliteBackend::open(&dir.path().join("state.db")).expect("open");
//!     (Arc::new(store), dir)
//! }
//!
//! machine_id_store::conformance_tests!(setup);
//! # fn main() {}
//! ```
//!
//! `setup` returns the backend and a guard (a temporary directory, a throwaway database…)
//! kept alive until the case ends. The cases use only the [`Backend`] trait, so they hold
//! for SQLite, PostgreSQL and any later backend alike; what they pin down beyond the trait
//! docs:
//!
//! - revisions strictly increase across all keys, and every op of one
//!   [`Backend::atomic_write`] gets the revision it returns;
//! - keys order bytewise (UTF-8 code point order; PostgreSQL needs `COLLATE "C"`), and a
//!   range prefix is a literal string, never a `LIKE` pattern;
//! - a losing [`Backend::compare_and_delete`] of a deleted key is `NotFound` or `Conflict`;
//! - an empty [`Backend::atomic_write`] succeeds and changes nothing;
//! - a watcher gets every change under its prefix committed after `watch` returned, in
//!   commit order, and nothing from a failed write.
//!
//! The feature keeps assertion code out of production builds; the crate enables it for its
//! own tests through a dev-dependency on itself.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Barrier;
use tokio::task::JoinSet;

use crate::{Backend, Item, Op, Revision, StoreError, WatchEvent, Watcher};

/// One case: takes a fresh, empty backend; panics on a violation.
pub type Case = fn(Arc<dyn Backend>) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// Every case, by name, in the order [`run_all`] runs them.
pub const CASES: &[(&str, Case)] = &[
    ("get_missing", |b| Box::pin(get_missing(b))),
    ("create_then_already_exists", |b| {
        Box::pin(create_then_already_exists(b))
    }),
    ("put_overwrite_bumps_revision", |b| {
        Box::pin(put_overwrite_bumps_revision(b))
    }),
    ("revisions_increase_across_keys", |b| {
        Box::pin(revisions_increase_across_keys(b))
    }),
    ("compare_and_swap_semantics", |b| {
        Box::pin(compare_and_swap_semantics(b))
    }),
    ("delete_semantics", |b| Box::pin(delete_semantics(b))),
    ("compare_and_delete_semantics", |b| {
        Box::pin(compare_and_delete_semantics(b))
    }),
    ("values_round_trip", |b| Box::pin(values_round_trip(b))),
    ("range_by_prefix", |b| Box::pin(range_by_prefix(b))),
    ("range_treats_wildcards_literally", |b| {
        Box::pin(range_treats_wildcards_literally(b))
    }),
    ("range_orders_unicode_bytewise", |b| {
        Box::pin(range_orders_unicode_bytewise(b))
    }),
    ("atomic_write_applies_all_at_one_revision", |b| {
        Box::pin(atomic_write_applies_all_at_one_revision(b))
    }),
    ("atomic_write_all_or_nothing", |b| {
        Box::pin(atomic_write_all_or_nothing(b))
    }),
    ("atomic_write_empty", |b| Box::pin(atomic_write_empty(b))),
    ("watch_sees_changes_under_prefix_in_order", |b| {
        Box::pin(watch_sees_changes_under_prefix_in_order(b))
    }),
    ("watchers_are_independent", |b| {
        Box::pin(watchers_are_independent(b))
    }),
    ("race_compare_and_swap", |b| {
        Box::pin(race_compare_and_swap(b))
    }),
    ("race_compare_and_delete", |b| {
        Box::pin(race_compare_and_delete(b))
    }),
    ("race_create", |b| Box::pin(race_create(b))),
    ("race_single_use_consumption", |b| {
        Box::pin(race_single_use_consumption(b))
    }),
    ("concurrent_writes_get_distinct_revisions", |b| {
        Box::pin(concurrent_writes_get_distinct_revisions(b))
    }),
    ("counter_with_retry_loops", |b| {
        Box::pin(counter_with_retry_loops(b))
    }),
];

/// Runs every case in [`CASES`], each on a fresh backend from `setup`, whose second value
/// (a guard: temporary directory, throwaway database) is dropped after its case.
pub async fn run_all<F, Fut, G>(setup: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (Arc<dyn Backend>, G)>,
{
    for (name, case) in CASES {
        let (backend, guard) = setup().await;
        tracing::info!(case = name, "store conformance case");
        case(backend).await;
        drop(guard);
    }
}

/// Writes one `#[tokio::test]` (multi-threaded runtime) per conformance case, plus one that
/// checks the list is complete. `$setup` is an async fn returning
/// `(Arc<dyn Backend>, guard)`; the caller needs tokio with `macros` and `rt-multi-thread`.
#[macro_export]
macro_rules! conformance_tests {
    ($setup:path) => {
        $crate::conformance_tests!(@cases $setup;
            get_missing,
            create_then_already_exists,
            put_overwrite_bumps_revision,
            revisions_increase_across_keys,
            compare_and_swap_semantics,
            delete_semantics,
            compare_and_delete_semantics,
            values_round_trip,
            range_by_prefix,
            range_treats_wildcards_literally,
            range_orders_unicode_bytewise,
            atomic_write_applies_all_at_one_revision,
            atomic_write_all_or_nothing,
            atomic_write_empty,
            watch_sees_changes_under_prefix_in_order,
            watchers_are_independent,
            race_compare_and_swap,
            race_compare_and_delete,
            race_create,
            race_single_use_consumption,
            concurrent_writes_get_distinct_revisions,
            counter_with_retry_loops,
        );
    };
    (@cases $setup:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (backend, _guard) = $setup().await;
                $crate::conformance::$case(backend).await;
            }
        )*

        #[test]
        fn conformance_case_list_is_complete() {
            let generated: &[&str] = &[$(stringify!($case)),*];
            let all: Vec<&str> = $crate::conformance::CASES.iter().map(|(name, _)| *name).collect();
            assert_eq!(generated, all.as_slice(), "conformance_tests! and CASES disagree");
        }
    };
}

/// How long a watcher may take to deliver an event before a case fails (not a sleep: the
/// wait ends as soon as the event arrives).
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Tasks racing in the concurrency cases.
const RACERS: usize = 50;

/// Asserts `$result` is `Err(StoreError::$variant { key })` with `key == $key`.
macro_rules! assert_store_err {
    ($result:expr, $variant:ident, $key:expr) => {
        match $result {
            Err(StoreError::$variant { key }) => assert_eq!(
                key, $key,
                concat!(stringify!($variant), " names the wrong key")
            ),
            other => panic!(
                "expected {} on {}, got {other:?}",
                stringify!($variant),
                $key
            ),
        }
    };
}

#[track_caller]
fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{what}: {e}"),
    }
}

fn item(key: &str, value: &[u8], revision: Revision) -> Item {
    Item {
        key: key.to_owned(),
        value: value.to_vec(),
        revision,
    }
}

fn keys(items: &[Item]) -> Vec<&str> {
    items.iter().map(|i| i.key.as_str()).collect()
}

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

fn assert_increasing(revisions: &[Revision]) {
    for pair in revisions.windows(2) {
        assert!(
            pair[0] < pair[1],
            "revisions must strictly increase: {revisions:?}"
        );
    }
}

/// A missing key reads as `None`; an empty store has an empty range.
pub async fn get_missing(b: Arc<dyn Backend>) {
    assert_eq!(ok(b.get("/bots/nobody").await, "get"), None);
    assert!(ok(b.range("/bots/").await, "range").is_empty());
    assert!(ok(b.range("").await, "range").is_empty());
}

/// `create` stores the value at the returned revision, and a second `create` fails with
/// `AlreadyExists` leaving the first value.
pub async fn create_then_already_exists(b: Arc<dyn Backend>) {
    let r = ok(b.create("/bots/a", b"one".to_vec()).await, "create");
    assert_eq!(
        ok(b.get("/bots/a").await, "get"),
        Some(item("/bots/a", b"one", r))
    );
    assert_store_err!(
        b.create("/bots/a", b"two".to_vec()).await,
        AlreadyExists,
        "/bots/a"
    );
    assert_eq!(
        ok(b.get("/bots/a").await, "get"),
        Some(item("/bots/a", b"one", r))
    );
}

/// `put` creates, then overwrites at a higher revision.
pub async fn put_overwrite_bumps_revision(b: Arc<dyn Backend>) {
    let r1 = ok(b.put("/roles/r", b"1".to_vec()).await, "put");
    assert_eq!(
        ok(b.get("/roles/r").await, "get"),
        Some(item("/roles/r", b"1", r1))
    );
    let r2 = ok(b.put("/roles/r", b"2".to_vec()).await, "put");
    assert!(r2 > r1, "overwrite must bump the revision: {r1} then {r2}");
    assert_eq!(
        ok(b.get("/roles/r").await, "get"),
        Some(item("/roles/r", b"2", r2))
    );
}

/// Every kind of write, on any key, returns a revision above all earlier ones, and a key
/// deleted and created again does not get an old revision back.
pub async fn revisions_increase_across_keys(b: Arc<dyn Backend>) {
    let mut revs = vec![
        ok(b.put("/a", b"x".to_vec()).await, "put"),
        ok(b.create("/b", b"x".to_vec()).await, "create"),
        ok(b.put("/c", b"x".to_vec()).await, "put"),
    ];
    revs.push(ok(
        b.compare_and_swap("/a", revs[0], b"y".to_vec()).await,
        "cas",
    ));
    ok(b.delete("/b").await, "delete");
    revs.push(ok(b.create("/b", b"again".to_vec()).await, "create"));
    let c = ok(b.get("/c").await, "get").expect("/c exists");
    ok(
        b.compare_and_delete("/c", c.revision).await,
        "compare_and_delete",
    );
    revs.push(ok(b.put("/d", b"x".to_vec()).await, "put"));
    revs.push(ok(
        b.atomic_write(vec![Op::Put {
            key: "/e".into(),
            value: vec![],
        }])
        .await,
        "atomic_write",
    ));
    assert_increasing(&revs);
    assert_eq!(
        ok(b.get("/a").await, "get").map(|i| i.revision),
        Some(revs[3])
    );
    assert_eq!(
        ok(b.get("/b").await, "get").map(|i| i.revision),
        Some(revs[4])
    );
}

/// `compare_and_swap` succeeds at the current revision only: `Conflict` when stale (value
/// left alone), `NotFound` when missing.
pub async fn compare_and_swap_semantics(b: Arc<dyn Backend>) {
    let r1 = ok(b.create("/gen/bot", b"1".to_vec()).await, "create");
    let r2 = ok(
        b.compare_and_swap("/gen/bot", r1, b"2".to_vec()).await,
        "cas",
    );
    assert!(r2 > r1);
    assert_eq!(
        ok(b.get("/gen/bot").await, "get"),
        Some(item("/gen/bot", b"2", r2))
    );
    assert_store_err!(
        b.compare_and_swap("/gen/bot", r1, b"3".to_vec()).await,
        Conflict,
        "/gen/bot"
    );
    assert_store_err!(
        b.compare_and_swap("/gen/bot", r2 + 1000, b"3".to_vec())
            .await,
        Conflict,
        "/gen/bot"
    );
    assert_eq!(
        ok(b.get("/gen/bot").await, "get"),
        Some(item("/gen/bot", b"2", r2))
    );
    assert_store_err!(
        b.compare_and_swap("/gen/none", r2, b"x".to_vec()).await,
        NotFound,
        "/gen/none"
    );
    assert_eq!(ok(b.get("/gen/none").await, "get"), None);
}

/// `delete` removes a key; `NotFound` when missing; the key can be created again.
pub async fn delete_semantics(b: Arc<dyn Backend>) {
    assert_store_err!(b.delete("/tokens/t").await, NotFound, "/tokens/t");
    ok(b.create("/tokens/t", b"x".to_vec()).await, "create");
    ok(b.create("/tokens/u", b"y".to_vec()).await, "create");
    ok(b.delete("/tokens/t").await, "delete");
    assert_eq!(ok(b.get("/tokens/t").await, "get"), None);
    assert_eq!(keys(&ok(b.range("/tokens/").await, "range")), ["/tokens/u"]);
    assert_store_err!(b.delete("/tokens/t").await, NotFound, "/tokens/t");
    ok(
        b.create("/tokens/t", b"z".to_vec()).await,
        "create after delete",
    );
    assert_eq!(
        ok(b.get("/tokens/t").await, "get").map(|i| i.value),
        Some(b"z".to_vec())
    );
}

/// `compare_and_delete` deletes at the current revision only: `Conflict` when stale (key
/// kept), `NotFound` when missing.
pub async fn compare_and_delete_semantics(b: Arc<dyn Backend>) {
    let r1 = ok(b.create("/tokens/t", b"1".to_vec()).await, "create");
    let r2 = ok(b.put("/tokens/t", b"2".to_vec()).await, "put");
    assert_store_err!(
        b.compare_and_delete("/tokens/t", r1).await,
        Conflict,
        "/tokens/t"
    );
    assert_eq!(
        ok(b.get("/tokens/t").await, "get"),
        Some(item("/tokens/t", b"2", r2))
    );
    ok(
        b.compare_and_delete("/tokens/t", r2).await,
        "compare_and_delete",
    );
    assert_eq!(ok(b.get("/tokens/t").await, "get"), None);
    assert_store_err!(
        b.compare_and_delete("/tokens/t", r2).await,
        NotFound,
        "/tokens/t"
    );
}

/// Values are bytes: empty, every byte value, and a megabyte come back as written.
pub async fn values_round_trip(b: Arc<dyn Backend>) {
    let all_bytes: Vec<u8> = (0..=255).collect();
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    for (key, value) in [
        ("/v/empty", Vec::new()),
        ("/v/bytes", all_bytes),
        ("/v/big", big),
    ] {
        let r = ok(b.put(key, value.clone()).await, "put");
        assert_eq!(
            ok(b.get(key).await, "get"),
            Some(item(key, &value, r)),
            "{key}"
        );
    }
}

/// `range` returns exactly the keys starting with the prefix, ordered by key, with values
/// and revisions; siblings sharing a shorter prefix (`/bots2`) stay out.
pub async fn range_by_prefix(b: Arc<dyn Backend>) {
    let mut written = Vec::new();
    for key in [
        "/bots/b",
        "/roles/a",
        "/bots/a/x",
        "/bots2/a",
        "/bot",
        "/bots/a",
        "/bots/",
        "/bots",
    ] {
        let r = ok(b.put(key, key.as_bytes().to_vec()).await, "put");
        written.push(item(key, key.as_bytes(), r));
    }
    let got = ok(b.range("/bots/").await, "range");
    assert_eq!(keys(&got), ["/bots/", "/bots/a", "/bots/a/x", "/bots/b"]);
    for i in &got {
        assert!(
            written.contains(i),
            "range returned {i:?}, not what was written"
        );
    }
    assert_eq!(
        keys(&ok(b.range("/bots").await, "range")),
        [
            "/bots",
            "/bots/",
            "/bots/a",
            "/bots/a/x",
            "/bots/b",
            "/bots2/a"
        ]
    );
    assert_eq!(
        keys(&ok(b.range("/bots/a").await, "range")),
        ["/bots/a", "/bots/a/x"]
    );
    assert_eq!(
        keys(&ok(b.range("/bots/a/x").await, "range")),
        ["/bots/a/x"]
    );
    assert!(ok(b.range("/nothing/").await, "range").is_empty());
    assert!(ok(b.range("/bots/c").await, "range").is_empty());
    written.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(ok(b.range("").await, "range"), written);
}

/// `%`, `_` and `\` in a prefix are plain characters, and case matters.
pub async fn range_treats_wildcards_literally(b: Arc<dyn Backend>) {
    for key in [
        "/t/a%b", "/t/axb", "/t/a_c", "/t/ayc", "/t/a\\d", "/t/A%", "/t/abc", "/t/%",
    ] {
        ok(b.put(key, vec![1]).await, "put");
    }
    assert_eq!(keys(&ok(b.range("/t/a%").await, "range")), ["/t/a%b"]);
    assert_eq!(keys(&ok(b.range("/t/a_").await, "range")), ["/t/a_c"]);
    assert_eq!(keys(&ok(b.range("/t/a\\").await, "range")), ["/t/a\\d"]);
    assert_eq!(keys(&ok(b.range("/t/%").await, "range")), ["/t/%"]);
    assert_eq!(keys(&ok(b.range("/t/A").await, "range")), ["/t/A%"]);
    assert!(ok(b.range("/t/_").await, "range").is_empty());
    assert!(ok(b.range("%").await, "range").is_empty());
}

/// Keys order by UTF-8 bytes (code points), and prefixes ending in any code point work.
pub async fn range_orders_unicode_bytewise(b: Arc<dyn Backend>) {
    let mut all = vec![
        "/u/e1",
        "/u/é1",
        "/u/ê1",
        "/u/Z",
        "/u/z",
        "/u/\u{D7FF}",
        "/u/\u{E000}",
        "/u/\u{10FFFF}x",
        "/u/\u{10FFFF}",
        "/u/日本",
    ];
    for key in &all {
        ok(b.put(key, vec![]).await, "put");
    }
    all.sort_unstable();
    assert_eq!(keys(&ok(b.range("/u/").await, "range")), all);
    assert_eq!(keys(&ok(b.range("/u/é").await, "range")), ["/u/é1"]);
    assert_eq!(
        keys(&ok(b.range("/u/\u{D7FF}").await, "range")),
        ["/u/\u{D7FF}"]
    );
    assert_eq!(
        keys(&ok(b.range("/u/\u{10FFFF}").await, "range")),
        ["/u/\u{10FFFF}", "/u/\u{10FFFF}x"]
    );
    assert_eq!(keys(&ok(b.range("/u/日").await, "range")), ["/u/日本"]);
}

/// Every op of a successful `atomic_write` applies, at the one revision it returns.
pub async fn atomic_write_applies_all_at_one_revision(b: Arc<dyn Backend>) {
    let ra = ok(b.create("/w/a", b"a0".to_vec()).await, "create");
    ok(b.create("/w/d", b"d".to_vec()).await, "create");
    let re = ok(b.create("/w/e", b"e".to_vec()).await, "create");
    let r = ok(
        b.atomic_write(vec![
            Op::Create {
                key: "/w/b".into(),
                value: b"b".to_vec(),
            },
            Op::Put {
                key: "/w/c".into(),
                value: b"c".to_vec(),
            },
            Op::CompareAndSwap {
                key: "/w/a".into(),
                revision: ra,
                value: b"a1".to_vec(),
            },
            Op::Delete { key: "/w/d".into() },
            Op::CompareAndDelete {
                key: "/w/e".into(),
                revision: re,
            },
        ])
        .await,
        "atomic_write",
    );
    assert!(r > re);
    assert_eq!(
        ok(b.range("/w/").await, "range"),
        [
            item("/w/a", b"a1", r),
            item("/w/b", b"b", r),
            item("/w/c", b"c", r)
        ]
    );
}

/// A failing op in the middle of an `atomic_write` leaves nothing applied, including earlier
/// ops on the same key, and the error names the failing op's key.
pub async fn atomic_write_all_or_nothing(b: Arc<dyn Backend>) {
    let r = ok(b.create("/x/exists", b"kept".to_vec()).await, "create");
    let batch = |failing: Op| {
        vec![
            Op::Put {
                key: "/x/1".into(),
                value: b"1".to_vec(),
            },
            Op::Put {
                key: "/x/exists".into(),
                value: b"clobbered".to_vec(),
            },
            Op::Delete {
                key: "/x/exists".into(),
            },
            Op::Create {
                key: "/x/exists".into(),
                value: b"recreated".to_vec(),
            },
            failing,
            Op::Put {
                key: "/x/2".into(),
                value: b"2".to_vec(),
            },
        ]
    };
    let key = |k: &str| k.to_owned();
    assert_store_err!(
        b.atomic_write(batch(Op::Create {
            key: key("/x/exists"),
            value: vec![]
        }))
        .await,
        AlreadyExists,
        "/x/exists"
    );
    assert_store_err!(
        b.atomic_write(batch(Op::CompareAndSwap {
            key: key("/x/exists"),
            revision: r,
            value: vec![]
        }))
        .await,
        Conflict,
        "/x/exists"
    );
    assert_store_err!(
        b.atomic_write(batch(Op::CompareAndSwap {
            key: key("/x/gone"),
            revision: r,
            value: vec![]
        }))
        .await,
        NotFound,
        "/x/gone"
    );
    assert_store_err!(
        b.atomic_write(batch(Op::Delete {
            key: key("/x/gone")
        }))
        .await,
        NotFound,
        "/x/gone"
    );
    assert_store_err!(
        b.atomic_write(batch(Op::CompareAndDelete {
            key: key("/x/gone"),
            revision: r
        }))
        .await,
        NotFound,
        "/x/gone"
    );
    assert_store_err!(
        b.atomic_write(batch(Op::CompareAndDelete {
            key: key("/x/exists"),
            revision: r
        }))
        .await,
        Conflict,
        "/x/exists"
    );
    assert_eq!(
        ok(b.range("/x/").await, "range"),
        [item("/x/exists", b"kept", r)]
    );
    // The store still works after the rollbacks.
    let r2 = ok(
        b.compare_and_swap("/x/exists", r, b"next".to_vec()).await,
        "cas",
    );
    assert!(r2 > r);
}

/// An empty `atomic_write` succeeds and changes nothing.
pub async fn atomic_write_empty(b: Arc<dyn Backend>) {
    let r = ok(b.put("/k", b"v".to_vec()).await, "put");
    ok(b.atomic_write(Vec::new()).await, "empty atomic_write");
    assert_eq!(ok(b.range("").await, "range"), [item("/k", b"v", r)]);
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

/// Runs `RACERS` tasks that start together; returns their results in task order.
async fn race<T, F, Fut>(b: &Arc<dyn Backend>, op: F) -> Vec<Result<T, StoreError>>
where
    T: Send + Debug + 'static,
    F: Fn(Arc<dyn Backend>, usize) -> Fut,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = JoinSet::new();
    for i in 0..RACERS {
        let barrier = Arc::clone(&barrier);
        let fut = op(Arc::clone(b), i);
        tasks.spawn(async move {
            barrier.wait().await;
            (i, fut.await)
        });
    }
    let mut results: Vec<_> = tasks.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The index of the only `Ok`, asserting every other result is one of `losers` on `key`.
#[track_caller]
fn single_winner<T: Debug>(results: &[Result<T, StoreError>], key: &str, losers: &[&str]) -> usize {
    let winners: Vec<usize> = (0..results.len()).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {RACERS} racers must win: {results:?}"
    );
    for r in results {
        match r {
            Ok(_) => {}
            Err(StoreError::Conflict { key: k }) if losers.contains(&"Conflict") && k == key => {}
            Err(StoreError::NotFound { key: k }) if losers.contains(&"NotFound") && k == key => {}
            Err(StoreError::AlreadyExists { key: k })
                if losers.contains(&"AlreadyExists") && k == key => {}
            Err(e) => panic!("a losing racer must fail with one of {losers:?} on {key}, got {e:?}"),
        }
    }
    winners[0]
}

/// `RACERS` tasks `compare_and_swap` one key from the same revision: exactly one wins, the
/// rest get `Conflict`, and the winner's value is stored.
pub async fn race_compare_and_swap(b: Arc<dyn Backend>) {
    let r0 = ok(b.create("/race/cas", b"start".to_vec()).await, "create");
    let results = race(&b, |b, i| async move {
        b.compare_and_swap("/race/cas", r0, format!("{i}").into_bytes())
            .await
    })
    .await;
    let winner = single_winner(&results, "/race/cas", &["Conflict"]);
    let Ok(r) = results[winner] else {
        unreachable!("single_winner returns an Ok")
    };
    assert_eq!(
        ok(b.get("/race/cas").await, "get"),
        Some(item("/race/cas", format!("{winner}").as_bytes(), r))
    );
}

/// `RACERS` tasks `compare_and_delete` one key from the same revision: exactly one wins.
pub async fn race_compare_and_delete(b: Arc<dyn Backend>) {
    let r0 = ok(b.create("/race/cad", b"x".to_vec()).await, "create");
    let results = race(&b, |b, _| async move {
        b.compare_and_delete("/race/cad", r0).await
    })
    .await;
    single_winner(&results, "/race/cad", &["NotFound", "Conflict"]);
    assert_eq!(ok(b.get("/race/cad").await, "get"), None);
}

/// `RACERS` tasks `create` one key: exactly one wins, the rest get `AlreadyExists`.
pub async fn race_create(b: Arc<dyn Backend>) {
    let results = race(&b, |b, i| async move {
        b.create("/race/create", format!("{i}").into_bytes()).await
    })
    .await;
    let winner = single_winner(&results, "/race/create", &["AlreadyExists"]);
    assert_eq!(
        ok(b.get("/race/create").await, "get").map(|i| i.value),
        Some(format!("{winner}").into_bytes())
    );
}

/// Single-use token consumption: `RACERS` tasks each try to delete the token (at the revision
/// they read) and create their own bot in one `atomic_write`; exactly one bot exists after.
pub async fn race_single_use_consumption(b: Arc<dyn Backend>) {
    let r0 = ok(b.create("/tokens/once", b"token".to_vec()).await, "create");
    let results = race(&b, |b, i| async move {
        b.atomic_write(vec![
            Op::CompareAndDelete {
                key: "/tokens/once".into(),
                revision: r0,
            },
            Op::Create {
                key: format!("/bots/bot-{i:02}"),
                value: vec![],
            },
        ])
        .await
    })
    .await;
    let winner = single_winner(&results, "/tokens/once", &["NotFound", "Conflict"]);
    assert_eq!(
        keys(&ok(b.range("/bots/").await, "range")),
        [format!("/bots/bot-{winner:02}")]
    );
    assert_eq!(ok(b.get("/tokens/once").await, "get"), None);
}

/// Concurrent writes to different keys all succeed with distinct revisions.
pub async fn concurrent_writes_get_distinct_revisions(b: Arc<dyn Backend>) {
    let results = race(&b, |b, i| async move {
        b.put(&format!("/many/{i:02}"), vec![]).await
    })
    .await;
    let mut revs: Vec<Revision> = results
        .into_iter()
        .map(|r| ok(r, "concurrent put"))
        .collect();
    let items = ok(b.range("/many/").await, "range");
    assert_eq!(items.len(), RACERS);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(
            item.revision, revs[i],
            "{} has the revision its put returned",
            item.key
        );
    }
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), RACERS, "revisions must be distinct");
}

/// 20 tasks each increment a counter 10 times with read / compare-and-swap / retry loops; the
/// counter ends at exactly 200 (no lost updates).
pub async fn counter_with_retry_loops(b: Arc<dyn Backend>) {
    const TASKS: usize = 20;
    const INCREMENTS: usize = 10;
    ok(b.create("/counter", b"0".to_vec()).await, "create");
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let b = Arc::clone(&b);
        tasks.spawn(async move {
            let mut revisions = Vec::new();
            for _ in 0..INCREMENTS {
                loop {
                    let current = ok(b.get("/counter").await, "get").expect("the counter exists");
                    let n: usize = std::str::from_utf8(&current.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .expect("the counter holds a number");
                    let next = (n + 1).to_string().into_bytes();
                    match b.compare_and_swap("/counter", current.revision, next).await {
                        Ok(r) => {
                            revisions.push(r);
                            break;
                        }
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("cas: {e}"),
                    }
                }
            }
            revisions
        });
    }
    let mut revisions: Vec<Revision> = tasks.join_all().await.into_iter().flatten().collect();
    let counter = ok(b.get("/counter").await, "get").expect("the counter exists");
    assert_eq!(counter.value, (TASKS * INCREMENTS).to_string().into_bytes());
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        TASKS * INCREMENTS,
        "every increment has its own revision"
    );
    assert_eq!(revisions.last(), Some(&counter.revision));
}
