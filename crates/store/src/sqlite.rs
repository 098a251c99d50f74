//! The SQLite backend: one database file in WAL mode, every write an `IMMEDIATE` transaction
//! committed with `synchronous=FULL`.
//!
//! Layout of the file (schema version 3, kept in `PRAGMA user_version`; `schema` migrates
//! older files at open):
//!
//! - `kv(key TEXT PRIMARY KEY, value BLOB, revision INTEGER) WITHOUT ROWID`: the items;
//! - `meta(name TEXT PRIMARY KEY, value INTEGER)`: the row `revision` holds the last revision
//!   handed out; every write transaction increments it, so revisions never repeat, not even for
//!   a key deleted and created again;
//! - `events(id TEXT PRIMARY KEY, time_nanos INTEGER, event_type TEXT, data BLOB)` with an
//!   indexes `events_by_time (time_nanos, id)` (version 2) and `events_by_type (event_type,
//!   time_nanos, id)` (version 3): the audit event log, each search walking one index in
//!   order.
//!
//! `PRAGMA application_id` marks the file as a Machine ID store so that pointing the server at
//! some other SQLite database fails instead of adding tables to it.
//!
//! Threads: SQLite calls block. Writes go to one writer thread that owns the write
//! connection and commits the writes queued while it was busy together, one transaction and
//! one fsync for the lot (group commit; see `writer`), which serialises the writers of this
//! process; writers of other processes are serialised by SQLite's own lock (`BEGIN
//! IMMEDIATE` with a busy timeout). Reads run on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]) on a small pool of read-only connections that, thanks to
//! WAL, never wait for a writer.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, ErrorCode, OptionalExtension};
use tokio::sync::mpsc;

use crate::{
    Backend, EventQuery, Item, Op, Revision, StoreError, StoredEvent, WatchEvent, Watcher,
    prefix_successor,
};

mod events;
mod file;
mod schema;
mod writer;

use file::{configure_writer, open_flags, open_reader, prepare_file, tighten_sidecars};
use schema::{SCHEMA_VERSION, migrate};

/// How long a write waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Read connections of a file-backed store.
const READERS: usize = 2;

/// A [`Backend`] on an SQLite database file.
///
/// Cheap to clone: clones share the connections and the watchers.
///
/// # Durability
///
/// The database runs in WAL mode with `synchronous=FULL`: when a write method returns `Ok`,
/// the write is in the WAL and the WAL is fsynced, so it survives the process being killed
/// and the machine losing power. Writes that arrive while the writer is committing are
/// committed together by its next transaction (one fsync for all of them, each still at its
/// own revision and answered only once that transaction is durable): see
/// [`Backend::durable_commits`]. A write whose future is dropped before it completes may
/// still commit (the writer thread goes on with it); read the key again to find out.
///
/// # Consistency
///
/// All writes of one process go through one connection in `BEGIN IMMEDIATE` transactions,
/// and other processes on the same file take the same SQLite write lock, so compare-and-swap
/// is linearizable even with several processes on one file. Reads see every write that
/// returned before the read began.
///
/// # Watchers
///
/// [`Backend::watch`] sees the writes made through this handle and its clones, not those
/// made by another process or through another [`SqliteBackend::open`] of the same file. Events are sent after the commit, in
/// commit order, into a channel of [`SqliteBackend::WATCH_BUFFER`] events. Writers never
/// wait for watchers: a watcher whose channel is full is closed (its receiver yields the
/// buffered events, then `None`), and it should watch again and re-read with
/// [`Backend::range`] to catch up.
#[derive(Clone)]
pub struct SqliteBackend {
    inner: Arc<Inner>,
    /// The writer thread's queue; the thread stops when the last clone is dropped.
    queue: Arc<writer::Queue>,
}

struct Inner {
    /// The path, or `:memory:`, for messages.
    location: String,
    writer: Mutex<Connection>,
    /// Empty for an in-memory store, which reads through the writer.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    watchers: Mutex<Vec<WatchSlot>>,
    /// Transactions committed by the writer thread.
    commits: AtomicU64,
}

struct WatchSlot {
    prefix: String,
    tx: mpsc::Sender<WatchEvent>,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

impl SqliteBackend {
    /// How many events a watcher may have unread before it is closed.
    pub const WATCH_BUFFER: usize = 1024;

    /// Opens the store in the database file at `path`, creating the file (mode `0600`: it
    /// holds CA private keys) and the schema if needed. The parent directory must exist.
    ///
    /// This blocks on file I/O; call it at startup or from a blocking task.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] naming the path and what to do when the directory is
    /// missing, the file is not a Machine ID store, is corrupt, was written by a newer
    /// version, or cannot be written.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let location = path.display().to_string();
        prepare_file(path, &location)?;
        let mut writer = Connection::open_with_flags(path, open_flags())
            .map_err(|e| sql_err(&location, "cannot open", e))?;
        configure_writer(&writer, &location)?;
        migrate(&mut writer, &location)?;
        tighten_sidecars(path);
        let readers = (0..READERS)
            .map(|_| open_reader(path, &location).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(path = %location, schema_version = SCHEMA_VERSION, "opened sqlite store");
        Self::from_parts(location, writer, readers)
    }

    /// Opens an empty store in memory, for tests: nothing is written to disk.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if SQLite cannot allocate the database.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let location = ":memory:".to_owned();
        let mut writer =
            Connection::open_in_memory().map_err(|e| sql_err(&location, "cannot open", e))?;
        migrate(&mut writer, &location)?;
        Self::from_parts(location, writer, Vec::new())
    }

    fn from_parts(
        location: String,
        writer: Connection,
        readers: Vec<Mutex<Connection>>,
    ) -> Result<Self, StoreError> {
        let inner = Arc::new(Inner {
            location,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            watchers: Mutex::new(Vec::new()),
            commits: AtomicU64::new(0),
        });
        let queue = Arc::new(writer::Queue::start(Arc::clone(&inner))?);
        Ok(Self { inner, queue })
    }

    /// Queues one write for the writer thread and waits until it is durable.
    async fn write(&self, ops: Vec<Op>, events: Vec<StoredEvent>) -> Result<Revision, StoreError> {
        self.queue.write(&self.inner.location, ops, events).await
    }

    /// Runs `f` on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| {
                StoreError::Backend(format!(
                    "sqlite store {}: the storage task failed: {e}",
                    self.inner.location
                ))
            })?
    }
}

/// Locks `m`, ignoring poisoning: a panic mid-transaction rolls the transaction back when the
/// `Transaction` is dropped, so the connection is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A [`StoreError::Backend`] naming the file and, where a person can act, what to do.
fn sql_err(location: &str, what: &str, e: rusqlite::Error) -> StoreError {
    let hint = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            ": the file is not a valid store database or is corrupt; restore it from a backup \
             (it holds the CA keys), or move it aside to start with an empty store"
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            ": another process held the database lock too long; check what else uses this file"
        }
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            ": check that the file and its directory exist and are writable by this user"
        }
        Some(ErrorCode::DiskFull) => ": the disk is full; free some space",
        _ => "",
    };
    StoreError::Backend(format!("sqlite store {location}: {what}: {e}{hint}"))
}

fn read_item(row: &rusqlite::Row<'_>) -> rusqlite::Result<Item> {
    Ok(Item {
        key: row.get(0)?,
        value: row.get(1)?,
        revision: row.get(2)?,
    })
}

impl Inner {
    fn err<'a>(&'a self, what: &'a str) -> impl FnOnce(rusqlite::Error) -> StoreError + 'a {
        move |e| sql_err(&self.location, what, e)
    }

    /// Runs `f` on a free read connection (or the writer, in memory).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let result = if self.readers.is_empty() {
            f(&lock(&self.writer))
        } else {
            let n = self.readers.len();
            let start = self.next_reader.fetch_add(1, Ordering::Relaxed) % n;
            let free = (0..n).find_map(|i| match self.readers[(start + i) % n].try_lock() {
                Ok(guard) => Some(guard),
                Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(TryLockError::WouldBlock) => None,
            });
            match free {
                Some(conn) => f(&conn),
                None => f(&lock(&self.readers[start])),
            }
        };
        result.map_err(self.err("cannot read"))
    }

    fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT key, value, revision FROM kv WHERE key = ?1")?
                .query_row([key], read_item)
                .optional()
        })
    }

    fn range(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        self.read(|conn| match prefix_successor(prefix) {
            Some(end) => conn
                .prepare_cached(
                    "SELECT key, value, revision FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key",
                )?
                .query_map([prefix, end.as_str()], read_item)?
                .collect(),
            None => conn
                .prepare_cached("SELECT key, value, revision FROM kv WHERE key >= ?1 ORDER BY key")?
                .query_map([prefix], read_item)?
                .collect(),
        })
    }

    /// Applies one op; the error names its key.
    fn apply(&self, tx: &Connection, op: Op, revision: Revision) -> Result<WatchEvent, StoreError> {
        let err = self.err("cannot write");
        let put = |key: String, value: Vec<u8>| {
            WatchEvent::Put(Item {
                key,
                value,
                revision,
            })
        };
        match op {
            Op::Create { key, value } => {
                let n = tx
                    .prepare_cached(
                        "INSERT INTO kv (key, value, revision) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (key) DO NOTHING",
                    )
                    .and_then(|mut s| s.execute(rusqlite::params![key, value, revision]))
                    .map_err(err)?;
                if n == 0 {
                    return Err(StoreError::AlreadyExists { key });
                }
                Ok(put(key, value))
            }
            Op::Put { key, value } => {
                tx.prepare_cached(
                    "INSERT INTO kv (key, value, revision) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                     revision = excluded.revision",
                )
                .and_then(|mut s| s.execute(rusqlite::params![key, value, revision]))
                .map_err(err)?;
                Ok(put(key, value))
            }
            Op::CompareAndSwap {
                key,
                revision: expected,
                value,
            } => {
                let n = tx
                    .prepare_cached(
                        "UPDATE kv SET value = ?2, revision = ?3 WHERE key = ?1 AND revision = ?4",
                    )
                    .and_then(|mut s| s.execute(rusqlite::params![key, value, revision, expected]))
                    .map_err(err)?;
                if n == 0 {
                    return Err(self.missing_or_conflict(tx, key));
                }
                Ok(put(key, value))
            }
            Op::Delete { key } => {
                let n = tx
                    .prepare_cached("DELETE FROM kv WHERE key = ?1")
                    .and_then(|mut s| s.execute([&key]))
                    .map_err(err)?;
                if n == 0 {
                    return Err(StoreError::NotFound { key });
                }
                Ok(WatchEvent::Delete { key, revision })
            }
            Op::CompareAndDelete {
                key,
                revision: expected,
            } => {
                let n = tx
                    .prepare_cached("DELETE FROM kv WHERE key = ?1 AND revision = ?2")
                    .and_then(|mut s| s.execute(rusqlite::params![key, expected]))
                    .map_err(err)?;
                if n == 0 {
                    return Err(self.missing_or_conflict(tx, key));
                }
                Ok(WatchEvent::Delete { key, revision })
            }
        }
    }

    /// After a conditional write matched no row: [`StoreError::NotFound`] or
    /// [`StoreError::Conflict`].
    fn missing_or_conflict(&self, tx: &Connection, key: String) -> StoreError {
        let exists = tx
            .prepare_cached("SELECT 1 FROM kv WHERE key = ?1")
            .and_then(|mut s| s.exists([&key]));
        match exists {
            Ok(true) => StoreError::Conflict { key },
            Ok(false) => StoreError::NotFound { key },
            Err(e) => sql_err(&self.location, "cannot read", e),
        }
    }

    /// Sends `events` to the watchers whose prefix they match; closes watchers that are gone
    /// or full.
    fn notify(&self, events: &[WatchEvent]) {
        let mut watchers = lock(&self.watchers);
        watchers.retain(|slot| {
            for event in events.iter().filter(|e| e.key().starts_with(&slot.prefix)) {
                match slot.tx.try_send(event.clone()) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(
                            prefix = %slot.prefix,
                            buffer = SqliteBackend::WATCH_BUFFER,
                            "store watcher fell behind; closing it"
                        );
                        return false;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
    }

    fn watch(&self, prefix: &str) -> Watcher {
        let (tx, rx) = mpsc::channel(SqliteBackend::WATCH_BUFFER);
        let mut watchers = lock(&self.watchers);
        watchers.retain(|slot| !slot.tx.is_closed());
        watchers.push(WatchSlot {
            prefix: prefix.to_owned(),
            tx,
        });
        rx
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |inner| inner.get(&key)).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let op = Op::Create {
            key: key.to_owned(),
            value,
        };
        self.write(vec![op], Vec::new()).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let op = Op::Put {
            key: key.to_owned(),
            value,
        };
        self.write(vec![op], Vec::new()).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        value: Vec<u8>,
    ) -> Result<Revision, StoreError> {
        let op = Op::CompareAndSwap {
            key: key.to_owned(),
            revision: expected,
            value,
        };
        self.write(vec![op], Vec::new()).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let op = Op::Delete {
            key: key.to_owned(),
        };
        self.write(vec![op], Vec::new()).await.map(drop)
    }

    async fn compare_and_delete(&self, key: &str, expected: Revision) -> Result<(), StoreError> {
        let op = Op::CompareAndDelete {
            key: key.to_owned(),
            revision: expected,
        };
        self.write(vec![op], Vec::new()).await.map(drop)
    }

    async fn range(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| inner.range(&prefix)).await
    }

    async fn atomic_write(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        self.write(ops, Vec::new()).await
    }

    async fn watch(&self, prefix: &str) -> Result<Watcher, StoreError> {
        Ok(self.inner.watch(prefix))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|inner| inner.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(()))))
            .await
    }

    fn describe(&self) -> String {
        format!("sqlite {}", self.inner.location)
    }

    async fn append_event(&self, event: StoredEvent) -> Result<(), StoreError> {
        self.write(Vec::new(), vec![event]).await.map(drop)
    }

    async fn search_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let query = query.clone();
        self.blocking(move |inner| inner.search_events(&query))
            .await
    }

    async fn write_with_events(
        &self,
        ops: Vec<Op>,
        events: Vec<StoredEvent>,
    ) -> Result<Revision, StoreError> {
        self.write(ops, events).await
    }

    fn durable_commits(&self) -> Option<u64> {
        Some(self.inner.commits.load(Ordering::Relaxed))
    }

    async fn delete_events_before(&self, before_nanos: i64, max: usize) -> Result<u64, StoreError> {
        self.blocking(move |inner| inner.delete_events_before(before_nanos, max))
            .await
    }
}

#[cfg(test)]
mod tests;
