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
//! for the SQLite backend and any later one (a PostgreSQL backend, say) alike; what they
//! pin down beyond the trait docs:
//!
//! - revisions strictly increase across all keys, and every op of one
//!   [`Backend::atomic_write`] gets the revision it returns;
//! - keys order bytewise (UTF-8 code point order; on PostgreSQL that takes
//!   `COLLATE "C"`), and a range prefix is a literal string, never a `LIKE` pattern;
//! - a losing [`Backend::compare_and_delete`] of a deleted key is `NotFound` or `Conflict`;
//! - an empty [`Backend::atomic_write`] succeeds and changes nothing;
//! - a watcher gets every change under its prefix committed after `watch` returned, in
//!   commit order, and nothing from a failed write (the cases write one at a time, so
//!   commit order is revision order there; with overlapping writers only per-key order is
//!   promised, and no case asserts more);
//! - the event log is ordered by time then id, idempotent per id, and apart from the items;
//!   paging with [`EventQuery::after`](crate::EventQuery::after) returns every event once, in
//!   order, across ties in time; [`Backend::delete_events_before`] deletes exactly the
//!   events strictly below its bound, at most `max` per call, each once under racing calls.
//! - [`Backend::write_with_events`] commits its ops and events together or neither, also
//!   among concurrent writers.
//!
//! The feature keeps assertion code out of production builds; the crate enables it for its
//! own tests through a dev-dependency on itself.
//!
//! The cases live in private modules by concern: `kv` (single keys), `cas` (conditional
//! writes on one key), `range`, `atomic` (`atomic_write`), `watch`, `concurrency`
//! (races), `events` and `event_paging` (the event log); all are re-exported here, so
//! `conformance::get_missing` names a case wherever it lives.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::{Backend, Item, Revision, StoreError};

/// Asserts `$result` is `Err(StoreError::$variant { key })` with `key == $key`.
macro_rules! assert_store_err {
    ($result:expr, $variant:ident, $key:expr) => {
        match $result {
            Err($crate::StoreError::$variant { key }) => assert_eq!(
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

mod atomic;
mod cas;
mod concurrency;
mod event_paging;
mod events;
mod kv;
mod range;
mod together;
mod watch;

pub use atomic::{
    atomic_write_all_or_nothing, atomic_write_applies_all_at_one_revision, atomic_write_empty,
};
pub use cas::{compare_and_delete_semantics, compare_and_swap_semantics};
pub use concurrency::{
    concurrent_writes_get_distinct_revisions, counter_with_retry_loops, race_compare_and_delete,
    race_compare_and_swap, race_create, race_single_use_consumption,
    racing_puts_to_one_key_leave_the_highest_revision,
};
pub use event_paging::{
    concurrent_trims_delete_each_event_once, delete_events_before_is_exact_and_bounded,
    events_page_through_ties_in_order,
};
pub use events::{events_append_and_search, events_are_not_items, ping_and_describe};
pub use kv::{
    create_then_already_exists, delete_semantics, get_missing, put_overwrite_bumps_revision,
    revisions_increase_across_keys, values_round_trip,
};
pub use range::{range_by_prefix, range_orders_unicode_bytewise, range_treats_wildcards_literally};
pub use together::{
    concurrent_writes_with_events_land_whole, write_with_events_commits_both_or_neither,
};
pub use watch::{
    watch_sees_changes_under_prefix_in_order, watch_sees_every_op_of_one_write,
    watchers_are_independent,
};

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
    ("watch_sees_every_op_of_one_write", |b| {
        Box::pin(watch_sees_every_op_of_one_write(b))
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
    ("racing_puts_to_one_key_leave_the_highest_revision", |b| {
        Box::pin(racing_puts_to_one_key_leave_the_highest_revision(b))
    }),
    ("counter_with_retry_loops", |b| {
        Box::pin(counter_with_retry_loops(b))
    }),
    ("events_append_and_search", |b| {
        Box::pin(events_append_and_search(b))
    }),
    ("events_are_not_items", |b| {
        Box::pin(events_are_not_items(b))
    }),
    ("events_page_through_ties_in_order", |b| {
        Box::pin(events_page_through_ties_in_order(b))
    }),
    ("delete_events_before_is_exact_and_bounded", |b| {
        Box::pin(delete_events_before_is_exact_and_bounded(b))
    }),
    ("concurrent_trims_delete_each_event_once", |b| {
        Box::pin(concurrent_trims_delete_each_event_once(b))
    }),
    ("ping_and_describe", |b| Box::pin(ping_and_describe(b))),
    ("write_with_events_commits_both_or_neither", |b| {
        Box::pin(write_with_events_commits_both_or_neither(b))
    }),
    ("concurrent_writes_with_events_land_whole", |b| {
        Box::pin(concurrent_writes_with_events_land_whole(b))
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
///
/// `conformance_tests!(optional: setup)` takes a setup returning
/// `Option<(Arc<dyn Backend>, guard)>`; `None` (a server that is not installed, skipping
/// allowed) ends the case early.
#[macro_export]
macro_rules! conformance_tests {
    (@list $setup:tt) => {
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
            watch_sees_every_op_of_one_write,
            race_compare_and_swap,
            race_compare_and_delete,
            race_create,
            race_single_use_consumption,
            concurrent_writes_get_distinct_revisions,
            racing_puts_to_one_key_leave_the_highest_revision,
            counter_with_retry_loops,
            events_append_and_search,
            events_are_not_items,
            events_page_through_ties_in_order,
            delete_events_before_is_exact_and_bounded,
            concurrent_trims_delete_each_event_once,
            ping_and_describe,
            write_with_events_commits_both_or_neither,
            concurrent_writes_with_events_land_whole,
        );
    };
    (@cases (optional: $setup:path); $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                // `None`: the backend is not available here and the setup said why.
                let Some((backend, _guard)) = $setup().await else {
                    return;
                };
                $crate::conformance::$case(backend).await;
            }
        )*
        $crate::conformance_tests!(@complete $($case),*);
    };
    (@cases ($setup:path); $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (backend, _guard) = $setup().await;
                $crate::conformance::$case(backend).await;
            }
        )*
        $crate::conformance_tests!(@complete $($case),*);
    };
    (@complete $($case:ident),*) => {

        #[test]
        fn conformance_case_list_is_complete() {
            let generated: &[&str] = &[$(stringify!($case)),*];
            let all: Vec<&str> = $crate::conformance::CASES.iter().map(|(name, _)| *name).collect();
            assert_eq!(generated, all.as_slice(), "conformance_tests! and CASES disagree");
        }
    };
    (optional: $setup:path) => {
        $crate::conformance_tests!(@list (optional: $setup));
    };
    ($setup:path) => {
        $crate::conformance_tests!(@list ($setup));
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

fn assert_increasing(revisions: &[Revision]) {
    for pair in revisions.windows(2) {
        assert!(
            pair[0] < pair[1],
            "revisions must strictly increase: {revisions:?}"
        );
    }
}
