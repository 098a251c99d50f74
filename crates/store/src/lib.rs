//! Storage for the auth server: a small key-value [`Backend`] with revisions for
//! compare-and-swap, range reads by prefix, atomic multi-key writes and a watch stream.
//!
//! # Overview
//!
//! - [`Backend`]: the trait the auth server codes against, and the API boundary for other
//!   backends (one for several auth servers sharing a cluster state, say, is a new
//!   implementation of it that passes the conformance suite); values are opaque bytes (JSON
//!   or protobuf), each stored with the [`Revision`] of the write that produced it.
//! - [`SqliteBackend`]: one SQLite file (WAL mode) in the data dir, the embedded default.
//! - [`PostgresBackend`]: one PostgreSQL database shared by several auth servers (high
//!   availability), watched through `LISTEN`/`NOTIFY`.
//! - `conformance` (cargo feature `conformance`): the suite every backend passes, written
//!   once against the trait, plus the `conformance_tests!` macro that turns it into one test
//!   per case; `pg_test` (same feature): a throwaway PostgreSQL server for tests.
//! - [`Item`], [`Op`], [`WatchEvent`], [`StoreError`]: the values going in and out.
//! - [`StoredEvent`], [`EventQuery`], [`EventPosition`]: the audit event log, kept beside the
//!   items (its own table, so audit writes never reach the watch feed), searched through
//!   indexes a page at a time and trimmed with [`Backend::delete_events_before`].
//!
//! # Copying a store
//!
//! [`Backend::range`] with the empty prefix returns every item (so `range("")` is the dump,
//! and an empty result means the store holds no items); writing them to another, empty
//! backend with [`Backend::put`] or one [`Backend::atomic_write`] keeps keys and values (the
//! target hands out its own revisions). Events are read with [`Backend::search_events`]
//! (paging with [`EventQuery::after`]) and written with [`Backend::append_event`], which is
//! idempotent.
//!
//! # Keys
//!
//! Keys are paths `/<kind>/<name>`, e.g. `/bots/robot`, `/tokens/<name>`, `/roles/<name>`,
//! with further segments for things owned by one object (`/bots/robot/generation`). Listing a
//! kind is [`Backend::range`] with the prefix **including the trailing slash**, `"/bots/"`:
//! a prefix is a plain string (no wildcards), so `"/bots"` would also match `/bots2/x`.
//! Keys order bytewise (UTF-8 code point order). The backend does not interpret keys; names
//! that may contain `/` must be escaped by the caller.
//!
//! # Consistency
//!
//! - Every write commits durably before its method returns `Ok`.
//! - Revisions increase strictly across all keys of a backend: each write (each whole
//!   [`Backend::atomic_write`]) takes a revision higher than every earlier one, and every item
//!   it writes carries that revision. Revisions are never reused, not even after a delete.
//! - Within one backend (one SQLite file, whichever processes use it; for a database
//!   server, one database), writes are linearizable: [`Backend::compare_and_swap`],
//!   [`Backend::compare_and_delete`] and [`Backend::create`] succeed for exactly one of any
//!   number of concurrent callers, which is what single-use token consumption and the bot
//!   generation counter rely on. A read sees every write that returned before it started.
//! - [`Backend::atomic_write`] applies all its ops or none.
//! - A watcher gets the changes under its prefix committed after [`Backend::watch`] returned,
//!   in commit order. A watcher that stops reading is eventually closed rather than slowing
//!   writers; when its stream ends, watch again and re-read with [`Backend::range`]. A
//!   backend whose feed is lost (a database connection dropped) ends every stream the same
//!   way, and [`Backend::watch`] fails with [`StoreError::Unavailable`] until it is back.
//! - Commit order and revision order agree per key, not necessarily across keys: a
//!   database server hands out revisions when a write starts and commits writes in the
//!   order they finish, so a watcher may see `/b` at revision 8 before `/a` at revision 7
//!   when the two writes overlapped. (SQLite serialises writers, so there they agree.)
//!   Consumers compare revisions of one key, never of two.
//! - A write that fails with [`StoreError::Unavailable`] may or may not have committed (the
//!   connection can drop after the commit was sent): read the key again before retrying a
//!   conditional write. Backends never retry such a write themselves; they do retry
//!   transactions the database rolled back for certain (serialization failures).
//!
//! # Example
//!
//! ```
//! use machine_id_store::{Backend, Op, SqliteBackend, StoreError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = SqliteBackend::open(&dir.path().join("state.db"))?;
//!
//! let rev = store.create("/bots/robot", br#"{"generation":1}"#.to_vec()).await?;
//! // Compare-and-swap: only succeeds if nobody wrote the key since we read `rev`.
//! let rev2 = store.compare_and_swap("/bots/robot", rev, br#"{"generation":2}"#.to_vec()).await?;
//! assert!(rev2 > rev);
//! let stale = store.compare_and_swap("/bots/robot", rev, b"{}".to_vec()).await;
//! assert!(matches!(stale, Err(StoreError::Conflict { .. })));
//!
//! // Consume a single-use token and record the bot in one transaction.
//! let token = store.create("/tokens/abc", b"{}".to_vec()).await?;
//! store
//!     .atomic_write(vec![
//!         Op::CompareAndDelete { key: "/tokens/abc".into(), revision: token },
//!         Op::Put { key: "/bots/robot2".into(), value: b"{}".to_vec() },
//!     ])
//!     .await?;
//!
//! let bots = store.range("/bots/").await?;
//! assert_eq!(bots.len(), 2);
//! assert_eq!(bots[0].key, "/bots/robot");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

use async_trait::async_trait;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod pg_test;
mod postgres;
mod sqlite;

pub use postgres::{PostgresBackend, PostgresOptions};
pub use sqlite::SqliteBackend;

/// A stored value's revision: increases on every write to any key of the backend.
pub type Revision = i64;

/// A stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The key, a path like `/bots/robot`.
    pub key: String,
    /// The value bytes (JSON, usually).
    pub value: Vec<u8>,
    /// The revision of the write that produced this value.
    pub revision: Revision,
}

/// One operation of an [`Backend::atomic_write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create `key`; fails with [`StoreError::AlreadyExists`] if it exists.
    Create {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Create or overwrite `key`.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Overwrite `key` only if its revision is `revision`; else [`StoreError::Conflict`].
    CompareAndSwap {
        /// The key.
        key: String,
        /// The revision it must have.
        revision: Revision,
        /// The new value.
        value: Vec<u8>,
    },
    /// Delete `key`; fails with [`StoreError::NotFound`] if missing.
    Delete {
        /// The key.
        key: String,
    },
    /// Delete `key` only if its revision is `revision`; else [`StoreError::Conflict`].
    CompareAndDelete {
        /// The key.
        key: String,
        /// The revision it must have.
        revision: Revision,
    },
}

impl Op {
    /// The key this op writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Create { key, .. }
            | Op::Put { key, .. }
            | Op::CompareAndSwap { key, .. }
            | Op::Delete { key }
            | Op::CompareAndDelete { key, .. } => key,
        }
    }
}

/// What a watcher sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or overwritten.
    Put(Item),
    /// A key was deleted, at this revision.
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        revision: Revision,
    },
}

impl WatchEvent {
    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            WatchEvent::Put(item) => &item.key,
            WatchEvent::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> Revision {
        match self {
            WatchEvent::Put(item) => item.revision,
            WatchEvent::Delete { revision, .. } => *revision,
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The key does not exist.
    #[error("{key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// The key exists already.
    #[error("{key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// The key changed since it was read; read it again and retry.
    #[error("{key} was changed concurrently; retry")]
    Conflict {
        /// The key.
        key: String,
    },
    /// The backend cannot be reached: the database is down, the connection was lost, or no
    /// connection came free in time. Worth retrying later (an auth server answers
    /// `UNAVAILABLE`); a write that failed this way may have committed, so read before
    /// retrying a conditional one.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// The backend failed (I/O, corruption, a refused schema, a query error).
    #[error("storage backend failed: {0}")]
    Backend(String),
}

/// One entry of the audit event log, as the store keeps it: the store orders and filters
/// by `time_nanos`, `id` and `event_type` and does not look inside `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// When it happened, in nanoseconds since the Unix epoch.
    pub time_nanos: i64,
    /// A unique id (a UUID, say); appending an event whose id is stored already does nothing.
    pub id: String,
    /// The event type, e.g. `bot.join`, for filtering.
    pub event_type: String,
    /// The encoded event (JSON, usually).
    pub data: Vec<u8>,
}

impl StoredEvent {
    /// Where this event stands in the log's order, for [`EventQuery::after`].
    pub fn position(&self) -> EventPosition {
        EventPosition {
            time_nanos: self.time_nanos,
            id: self.id.clone(),
        }
    }
}

/// A place in the event log: the log is ordered by `time_nanos`, then by `id` (bytewise),
/// so this pair names one event's place even when several share a time. A page of a
/// search ends at the position of its last event, and [`EventQuery::after`] starts the next
/// page just past it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventPosition {
    /// The event's time, in Unix nanoseconds.
    pub time_nanos: i64,
    /// The event's id.
    pub id: String,
}

/// Which events [`Backend::search_events`] returns: those with `since_nanos <= time_nanos <
/// until_nanos` (either bound optional) whose type is one of `event_types` (empty: any),
/// past `after` in the query's order (when given), ordered by time then id (ascending, or
/// descending when `descending`), at most `limit` of them (0 gives none).
///
/// # Paging
///
/// Every backend serves a query from an index, reading about `limit` rows however large
/// the log is: `(time_nanos, id)` without a type, `(event_type, time_nanos, id)` with one
/// (several types are one indexed query each, merged). To read everything a query selects
/// in pages, repeat it with `after` set to the [`StoredEvent::position`] of the previous
/// page's last event until a page comes back shorter than `limit`: every event is returned
/// exactly once, in order, ties in `time_nanos` included.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventQuery {
    /// The earliest time included, in Unix nanoseconds.
    pub since_nanos: Option<i64>,
    /// The first time excluded, in Unix nanoseconds.
    pub until_nanos: Option<i64>,
    /// The event types wanted; empty for all.
    pub event_types: Vec<String>,
    /// The most events returned.
    pub limit: usize,
    /// Newest first (so `limit` keeps the newest) instead of oldest first.
    pub descending: bool,
    /// Only events strictly past this position in the query's order: older than it when
    /// `descending`, newer otherwise. The cursor of a paged read.
    pub after: Option<EventPosition>,
}

/// A stream of changes under a prefix, in commit order.
pub type Watcher = tokio::sync::mpsc::Receiver<WatchEvent>;

/// A key-value store with revisions. Every method commits durably before it returns.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The value at `key`, if any.
    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError>;
    /// Creates `key`; [`StoreError::AlreadyExists`] if present.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError>;
    /// Creates or overwrites `key`.
    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError>;
    /// Overwrites `key` if its revision is `expected`; [`StoreError::Conflict`] if it is not,
    /// [`StoreError::NotFound`] if the key is missing.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        value: Vec<u8>,
    ) -> Result<Revision, StoreError>;
    /// Deletes `key`; [`StoreError::NotFound`] if missing.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Deletes `key` if its revision is `expected`.
    async fn compare_and_delete(&self, key: &str, expected: Revision) -> Result<(), StoreError>;
    /// Every item whose key starts with `prefix`, ordered by key; `range("")` returns every
    /// item of the store.
    async fn range(&self, prefix: &str) -> Result<Vec<Item>, StoreError>;
    /// Applies every op or none; the error names the first op's key that failed.
    async fn atomic_write(&self, ops: Vec<Op>) -> Result<Revision, StoreError>;
    /// Changes under `prefix` committed after this call returns.
    async fn watch(&self, prefix: &str) -> Result<Watcher, StoreError>;
    /// One cheap round trip to the storage (for readiness checks): `Ok` when it answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// What this backend is, for logs and errors, without secrets: e.g.
    /// `sqlite /var/lib/machine-id/backend.db` or
    /// `postgresql machine_id@127.0.0.1:5432/machine_id`.
    fn describe(&self) -> String;
    /// Appends `event` to the event log, durably before returning; does nothing if an event
    /// with its id is stored already.
    async fn append_event(&self, event: StoredEvent) -> Result<(), StoreError>;
    /// The events `query` selects, in its order.
    async fn search_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;
    /// Applies every op of `ops` and appends every event of `events` in one transaction:
    /// either all of it is durable when this returns `Ok`, or none of it is. An empty `ops`
    /// changes no item and returns the current revision (at least that of every write that
    /// returned before; the events take no revision of their own); an event whose id is
    /// stored already is skipped, as by [`Backend::append_event`]. A request's state change
    /// and its audit event commit together this way, in one durable commit instead of two.
    async fn write_with_events(
        &self,
        ops: Vec<Op>,
        events: Vec<StoredEvent>,
    ) -> Result<Revision, StoreError>;
    /// How many durable commits (each one fsync of the log) this handle has made since it
    /// was opened, when the backend counts them: the SQLite store does (its writer commits
    /// concurrent writes together, so this grows slower than the writes); `None` where the
    /// database server does the commits (PostgreSQL).
    fn durable_commits(&self) -> Option<u64> {
        None
    }
    /// Deletes the oldest events whose `time_nanos` is strictly below `before_nanos` (an
    /// event at exactly `before_nanos` stays), at most `max` of them (0 deletes none), in
    /// one short transaction; returns how many it deleted. Retention calls it in a loop
    /// while a batch comes back full, so no single call holds the store's writer long.
    ///
    /// Idempotent and safe to run from several servers at once on one database: an event
    /// is deleted once, and the calls together delete exactly the events below the bound.
    async fn delete_events_before(&self, before_nanos: i64, max: usize) -> Result<u64, StoreError>;
}

/// Merges the answers of one query per event type (each in the query's order, each at most
/// `limit` long) into the query's answer: one order, cut at `limit`.
pub(crate) fn merge_event_pages(
    pages: Vec<Vec<StoredEvent>>,
    descending: bool,
    limit: usize,
) -> Vec<StoredEvent> {
    let mut all: Vec<StoredEvent> = pages.into_iter().flatten().collect();
    all.sort_by(|a, b| {
        let order = (a.time_nanos, &a.id).cmp(&(b.time_nanos, &b.id));
        if descending { order.reverse() } else { order }
    });
    all.truncate(limit);
    all
}

/// The distinct types of `query`, in their first order: each is one indexed query.
pub(crate) fn distinct_types(query: &EventQuery) -> Vec<&str> {
    let mut types: Vec<&str> = Vec::new();
    for t in &query.event_types {
        if !types.contains(&t.as_str()) {
            types.push(t);
        }
    }
    types
}

/// The smallest string greater than every string starting with `prefix`, if any. Both
/// backends compare keys bytewise (SQLite's `BINARY`, PostgreSQL's `"C"` collation), and UTF-8
/// byte order is code point order, so bumping the last code point that can be bumped gives the bound.
pub(crate) fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}
