//! Storage for the auth server: a small key-value [`Backend`] with revisions for
//! compare-and-swap, range reads by prefix, atomic multi-key writes and a watch stream.
//!
//! # Overview
//!
//! - [`Backend`]: the trait the auth server codes against, and the API boundary for other
//!   backends (one for several auth servers sharing a cluster state, say, is a new
//!   implementation of it that passes the conformance suite); values are opaque bytes (JSON
//!   or protobuf), each stored with the [`Revision`] of the write that produced it.
//! - [`SqliteBackend`]: the one implementation today, one SQLite file (WAL mode) in the
//!   data dir.
//! - `conformance` (cargo feature `conformance`): the suite every backend passes, written
//!   once against the trait, plus the `conformance_tests!` macro that turns it into one test
//!   per case.
//! - [`Item`], [`Op`], [`WatchEvent`], [`StoreError`]: the values going in and out.
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
//!   writers; when its stream ends, watch again and re-read with [`Backend::range`].
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
mod sqlite;

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
    /// The backend failed (I/O, corruption, connection).
    #[error("storage backend failed: {0}")]
    Backend(String),
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
    /// Every item whose key starts with `prefix`, ordered by key.
    async fn range(&self, prefix: &str) -> Result<Vec<Item>, StoreError>;
    /// Applies every op or none; the error names the first op's key that failed.
    async fn atomic_write(&self, ops: Vec<Op>) -> Result<Revision, StoreError>;
    /// Changes under `prefix` committed after this call returns.
    async fn watch(&self, prefix: &str) -> Result<Watcher, StoreError>;
}
