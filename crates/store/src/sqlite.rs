//! The SQLite backend: one database file in WAL mode, every write an `IMMEDIATE` transaction
//! committed with `synchronous=FULL`.
//!
//! Layout of the file (schema version 1, kept in `PRAGMA user_version`):
//!
//! - `kv(key TEXT PRIMARY KEY, value BLOB, revision INTEGER) WITHOUT ROWID`: the items;
//! - `meta(name TEXT PRIMARY KEY, value INTEGER)`: the row `revision` holds the last revision
//!   handed out; every write transaction increments it, so revisions never repeat, not even for
//!   a key deleted and created again.
//!
//! `PRAGMA application_id` marks the file as a Machine ID store so that pointing the server at
//! some other SQLite database fails instead of adding tables to it.
//!
//! Threads: SQLite calls block, so every [`Backend`] method runs on tokio's blocking pool
//! ([`tokio::task::spawn_blocking`]). Writes go through one connection behind a mutex, which
//! serialises the writers of this process; writers of other processes are serialised by
//! SQLite's own lock (`BEGIN IMMEDIATE` with a busy timeout). Reads use a small pool of
//! read-only connections that, thanks to WAL, never wait for a writer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior,
};
use tokio::sync::mpsc;

use crate::{Backend, Item, Op, Revision, StoreError, WatchEvent, Watcher};

/// The schema version this code writes; `MIGRATIONS[i]` upgrades version `i` to `i + 1`.
const SCHEMA_VERSION: i64 = 1;

/// Marks the file as ours (`PRAGMA application_id`): "MIDS".
const APPLICATION_ID: i64 = 0x4d49_4453;

/// Schema migrations, applied in order inside one transaction at open.
const MIGRATIONS: &[&str] = &["
    CREATE TABLE kv (
        key TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL,
        revision INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE meta (
        name TEXT PRIMARY KEY NOT NULL,
        value INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO meta (name, value) VALUES ('revision', 0);
"];

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
/// and the machine losing power. A write whose future is dropped before it completes may
/// still commit (the work runs on the blocking pool); read the key again to find out.
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
}

struct Inner {
    /// The path, or `:memory:`, for messages.
    location: String,
    writer: Mutex<Connection>,
    /// Empty for an in-memory store, which reads through the writer.
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    watchers: Mutex<Vec<WatchSlot>>,
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
        Ok(Self::from_parts(location, writer, readers))
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
        Ok(Self::from_parts(location, writer, Vec::new()))
    }

    fn from_parts(location: String, writer: Connection, readers: Vec<Mutex<Connection>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                location,
                writer: Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
                watchers: Mutex::new(Vec::new()),
            }),
        }
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

/// Creates the file with mode 0600, or tightens the mode of an existing one.
fn prepare_file(path: &Path, location: &str) -> Result<(), StoreError> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        return Err(StoreError::Backend(format!(
            "sqlite store {location}: the directory {} does not exist: create it (mode 0700) \
             or point the data dir somewhere else",
            parent.display()
        )));
    }
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let opened = match options.open(path) {
        Ok(file) => {
            sync_parent(path);
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path),
        Err(e) => Err(e),
    };
    let file = opened.map_err(|e| {
        StoreError::Backend(format!(
            "sqlite store {location}: cannot open: {e}: check that it is a file this user can \
             read and write"
        ))
    })?;
    #[cfg(unix)]
    {
        let meta = file.metadata().map_err(|e| {
            StoreError::Backend(format!("sqlite store {location}: cannot stat: {e}"))
        })?;
        tighten_mode(path, &meta);
    }
    drop(file);
    Ok(())
}

/// Makes a new file's directory entry durable (SQLite syncs the file, not its directory).
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Err(error) = std::fs::File::open(parent).and_then(|dir| dir.sync_all()) {
            tracing::warn!(path = %parent.display(), %error, "cannot sync the store's directory");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Removes group and other permissions from a file that has them.
#[cfg(unix)]
fn tighten_mode(path: &Path, meta: &std::fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "store file was readable by others; setting mode 0600"
        );
        if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), %error, "cannot set mode 0600 on store file");
        }
    }
}

/// The `-wal` and `-shm` files take the main file's mode when SQLite creates them; this
/// fixes ones left by an older, looser file.
fn tighten_sidecars(path: &Path) {
    #[cfg(unix)]
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let sidecar = PathBuf::from(name);
        if let Ok(meta) = std::fs::metadata(&sidecar) {
            tighten_mode(&sidecar, &meta);
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Read-write, no URI interpretation (a path is a path, even one starting with `file:`); the
/// file exists already ([`prepare_file`]). Each connection is used by one thread at a time.
fn open_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

fn configure_writer(conn: &Connection, location: &str) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_err(location, "cannot configure", e))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(|e| sql_err(location, "cannot switch to WAL mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "sqlite store {location}: cannot switch to WAL mode (still {mode}): put the data dir \
             on a local filesystem"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| sql_err(location, "cannot configure", e))?;
    Ok(())
}

fn open_reader(path: &Path, location: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, open_flags())
        .map_err(|e| sql_err(location, "cannot open", e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_err(location, "cannot configure", e))?;
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| sql_err(location, "cannot configure", e))?;
    Ok(conn)
}

/// Checks the file is ours and brings its schema to [`SCHEMA_VERSION`].
fn migrate(conn: &mut Connection, location: &str) -> Result<(), StoreError> {
    let err = |e| sql_err(location, "cannot read the schema of", e);
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err)?;
    let application_id: i64 = tx
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .map_err(err)?;
    let version: i64 = tx
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(err)?;
    if application_id != APPLICATION_ID {
        let tables: i64 = tx
            .query_row("SELECT count(*) FROM sqlite_master", [], |row| row.get(0))
            .map_err(err)?;
        if application_id != 0 || version != 0 || tables != 0 {
            return Err(StoreError::Backend(format!(
                "sqlite store {location}: the file is an SQLite database of another program: \
                 point the data dir at a Machine ID store or at an empty directory"
            )));
        }
    }
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "sqlite store {location}: schema version {version} was written by a newer version \
             (this one knows up to {SCHEMA_VERSION}): upgrade, or restore a backup taken before \
             the upgrade"
        )));
    }
    if version < SCHEMA_VERSION {
        let err = |e| sql_err(location, "cannot migrate the schema of", e);
        let from = usize::try_from(version).unwrap_or_default();
        for migration in MIGRATIONS.iter().skip(from) {
            tx.execute_batch(migration).map_err(err)?;
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .map_err(err)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(err)?;
        tx.commit().map_err(err)?;
        tracing::info!(path = %location, from = version, to = SCHEMA_VERSION, "migrated sqlite store schema");
    }
    Ok(())
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

/// The smallest string greater than every string starting with `prefix`, if any. SQLite
/// compares `TEXT` bytewise (`BINARY` collation), and UTF-8 byte order is code point order, so
/// bumping the last code point that can be bumped gives the bound.
fn prefix_successor(prefix: &str) -> Option<String> {
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

fn event_key(event: &WatchEvent) -> &str {
    match event {
        WatchEvent::Put(item) => &item.key,
        WatchEvent::Delete { key, .. } => key,
    }
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

    /// Applies `ops` in one `IMMEDIATE` transaction at a fresh revision, then tells the
    /// watchers. An empty batch changes nothing and returns the current revision.
    fn write(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        let mut conn = lock(&self.writer);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(self.err("cannot begin a write"))?;
        let current: Revision = tx
            .prepare_cached("SELECT value FROM meta WHERE name = 'revision'")
            .and_then(|mut s| s.query_row([], |row| row.get(0)))
            .map_err(self.err("cannot read the revision"))?;
        if ops.is_empty() {
            return Ok(current);
        }
        let revision = current.checked_add(1).ok_or_else(|| {
            StoreError::Backend(format!("sqlite store {}: revision overflow", self.location))
        })?;
        let mut events = Vec::with_capacity(ops.len());
        for op in ops {
            events.push(self.apply(&tx, op, revision)?);
        }
        tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")
            .and_then(|mut s| s.execute([revision]))
            .map_err(self.err("cannot write"))?;
        tx.commit().map_err(self.err("cannot commit"))?;
        tracing::trace!(revision, ops = events.len(), "sqlite store committed");
        // Still holding the writer: events reach watchers in commit order.
        self.notify(&events);
        drop(conn);
        Ok(revision)
    }

    /// Applies one op; the error names its key.
    fn apply(
        &self,
        tx: &Transaction<'_>,
        op: Op,
        revision: Revision,
    ) -> Result<WatchEvent, StoreError> {
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
    fn missing_or_conflict(&self, tx: &Transaction<'_>, key: String) -> StoreError {
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
            for event in events
                .iter()
                .filter(|e| event_key(e).starts_with(&slot.prefix))
            {
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
        self.blocking(move |inner| inner.write(vec![op])).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let op = Op::Put {
            key: key.to_owned(),
            value,
        };
        self.blocking(move |inner| inner.write(vec![op])).await
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
        self.blocking(move |inner| inner.write(vec![op])).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let op = Op::Delete {
            key: key.to_owned(),
        };
        self.blocking(move |inner| inner.write(vec![op]))
            .await
            .map(drop)
    }

    async fn compare_and_delete(&self, key: &str, expected: Revision) -> Result<(), StoreError> {
        let op = Op::CompareAndDelete {
            key: key.to_owned(),
            revision: expected,
        };
        self.blocking(move |inner| inner.write(vec![op]))
            .await
            .map(drop)
    }

    async fn range(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |inner| inner.range(&prefix)).await
    }

    async fn atomic_write(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        self.blocking(move |inner| inner.write(ops)).await
    }

    async fn watch(&self, prefix: &str) -> Result<Watcher, StoreError> {
        Ok(self.inner.watch(prefix))
    }
}

#[cfg(test)]
mod tests;
