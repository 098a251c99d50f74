//! The PostgreSQL backend: one database shared by several auth servers. Items live in one
//! `kv` table whose revisions come from one sequence; conditional writes are single
//! statements (or a `SERIALIZABLE` transaction for [`Backend::atomic_write`]); the watch
//! feed is `LISTEN`/`NOTIFY` fed by a trigger on `kv`.
//!
//! Modules: `conn` (the connection string, descriptions and connection errors), `tls`
//! (rustls per `sslmode`), `schema` (tables and migrations), `ops` (the statements),
//! `events` (event log searches and trimming), `watch` (the listener and its watchers).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio::sync::oneshot;
use tokio_postgres::error::SqlState;

use ops::Mode::{Statement, Transaction};

use crate::{Backend, EventQuery, Item, Op, Revision, StoreError, StoredEvent, Watcher};

mod conn;
mod events;
mod ops;
mod schema;
mod tls;
mod watch;

pub(crate) use schema::SCHEMA_VERSION;

/// Settings of a [`PostgresBackend`] beyond its connection string.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Most connections in the pool (besides the one listener connection).
    pub pool_size: usize,
    /// How long a call waits for a connection (a free one, or a new one to be made) before
    /// failing with [`StoreError::Unavailable`]; also the connect timeout unless the
    /// connection string sets `connect_timeout`.
    pub connect_timeout: Duration,
    /// How often the listener connection is checked with a query; a check that fails or
    /// takes longer than this ends every watcher.
    pub keepalive: Duration,
    /// Events a watcher may have unread before it is closed.
    pub watch_buffer: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            keepalive: Duration::from_secs(3),
            watch_buffer: PostgresBackend::WATCH_BUFFER,
        }
    }
}

/// A [`Backend`] on a PostgreSQL database, shared by every server pointed at it.
///
/// Cheap to clone: clones share the pool, the listener and the watchers. Dropping the last
/// clone stops the listener.
///
/// # Consistency
///
/// Create, put, compare-and-swap and compare-and-delete are single statements whose row
/// locks make exactly one of any number of concurrent conditional writers win, across every
/// server on the database; [`Backend::atomic_write`] is one `SERIALIZABLE` transaction.
/// Writes the database rolled back for certain (serialization failure, deadlock) are retried
/// a few times with jitter; a write whose connection failed is never retried (it may have
/// committed) and fails with [`StoreError::Unavailable`].
///
/// # Watchers
///
/// [`Backend::watch`] sees the writes of every server on the database (see the `watch`
/// module): in commit order, which for different keys may differ from revision order. When
/// the listener connection is lost every stream ends; [`Backend::watch`] fails with
/// [`StoreError::Unavailable`] until it is back, which happens by itself. Keys must stay
/// under about 7 KB (a notification carries the key).
///
/// # Secrets
///
/// The connection string's password is kept only inside the driver's configuration, whose
/// `Debug` hides it; this type's `Debug`, [`Backend::describe`] and every error show
/// `user@host:port/database`.
#[derive(Clone)]
pub struct PostgresBackend {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// What the calls and the listener share.
struct Shared {
    pool: Pool,
    settings: conn::Settings,
    hub: watch::Hub,
    connect_timeout: Duration,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("database", &self.inner.shared.settings.described)
            .finish_non_exhaustive()
    }
}

impl PostgresBackend {
    /// The default of [`PostgresOptions::watch_buffer`].
    pub const WATCH_BUFFER: usize = 1024;

    /// Connects to the database `conn_string` names (a libpq URI
    /// `postgresql://user:password@host:port/dbname?sslmode=verify-full&sslrootcert=ca.pem`
    /// or `key=value` pairs), creates or migrates the schema, and starts the change feed.
    ///
    /// # Errors
    ///
    /// One line naming the server, database and user (never the password) and what to
    /// check: [`StoreError::Backend`] for a bad connection string, a refused login, a TLS
    /// failure or a schema newer than this code; [`StoreError::Unavailable`] when the
    /// server cannot be reached.
    pub async fn connect(conn_string: &str) -> Result<Self, StoreError> {
        Self::connect_with(conn_string, PostgresOptions::default()).await
    }

    /// [`PostgresBackend::connect`] with options.
    ///
    /// # Errors
    ///
    /// As [`PostgresBackend::connect`].
    pub async fn connect_with(
        conn_string: &str,
        options: PostgresOptions,
    ) -> Result<Self, StoreError> {
        let settings = conn::parse(conn_string, options.connect_timeout)?;
        let tls = tls::connector(&settings)?;
        let (mut client, connection) = settings
            .config
            .connect(tls.clone())
            .await
            .map_err(|e| conn::connect_error(&settings, &e))?;
        let driver = tokio::spawn(connection);
        let migrated = schema::migrate(&mut client, &settings.described).await;
        drop(client);
        let _ = driver.await;
        migrated?;
        let manager = Manager::from_config(
            settings.config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .wait_timeout(Some(options.connect_timeout))
            .create_timeout(Some(options.connect_timeout))
            .recycle_timeout(Some(options.connect_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        let described = settings.described.clone();
        let shared = Arc::new(Shared {
            pool,
            settings,
            hub: watch::Hub::new(options.watch_buffer.max(1)),
            connect_timeout: options.connect_timeout,
        });
        let (first_tx, first_rx) = oneshot::channel();
        let listener = tokio::spawn(watch::run_listener(
            Arc::clone(&shared),
            tls,
            options.keepalive,
            first_tx,
        ));
        let inner = Arc::new(Inner { shared, listener });
        match first_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(StoreError::Backend(
                    "the store's listener task stopped at start".to_owned(),
                ));
            }
        }
        tracing::info!(database = %described, schema_version = SCHEMA_VERSION, "connected to postgresql store");
        Ok(Self { inner })
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }
}

impl Shared {
    /// A pooled connection, or [`StoreError::Unavailable`].
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => conn::connect_error(&self.settings, &e),
            PoolError::Timeout(_) => StoreError::Unavailable(format!(
                "postgresql {}: no database connection within {:?}; check that the server is up \
                 and not overloaded",
                self.settings.described, self.connect_timeout
            )),
            other => StoreError::Backend(format!(
                "postgresql {}: connection pool: {other}",
                self.settings.described
            )),
        })
    }

    /// Maps a failed statement: lost connections and shutting-down servers are
    /// [`StoreError::Unavailable`], the rest [`StoreError::Backend`].
    fn query_error(&self, what: &str, e: &tokio_postgres::Error) -> StoreError {
        let described = &self.settings.described;
        match e.as_db_error() {
            Some(db) if !is_unavailable_code(db.code()) => {
                StoreError::Backend(format!("postgresql {described}: {what}: {}", db.message()))
            }
            Some(db) => {
                StoreError::Unavailable(format!("postgresql {described}: {what}: {}", db.message()))
            }
            None if e.is_closed() || has_io_source(e) => StoreError::Unavailable(format!(
                "postgresql {described}: {what}: the connection was lost ({e})"
            )),
            None => StoreError::Backend(format!("postgresql {described}: {what}: {e}")),
        }
    }
}

/// Connection exceptions (class 08), operator intervention (57P0x: shutdown, crash,
/// cannot connect now) and too many connections.
fn is_unavailable_code(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08") || code.starts_with("57P") || code == "53300"
}

fn has_io_source(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// A random duration between half of `base` and `base`.
fn jitter(base: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let half = base / 2;
    let nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_nanos(random % nanos)
}

#[async_trait]
impl Backend for PostgresBackend {
    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        ops::get(self.shared(), key).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let op = Op::Create {
            key: key.to_owned(),
            value,
        };
        ops::write_revision(self.shared(), &[op], &[], Statement).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        let op = Op::Put {
            key: key.to_owned(),
            value,
        };
        ops::write_revision(self.shared(), &[op], &[], Statement).await
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
        ops::write_revision(self.shared(), &[op], &[], Statement).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let op = Op::Delete {
            key: key.to_owned(),
        };
        ops::write(self.shared(), &[op], &[], Statement)
            .await
            .map(drop)
    }

    async fn compare_and_delete(&self, key: &str, expected: Revision) -> Result<(), StoreError> {
        let op = Op::CompareAndDelete {
            key: key.to_owned(),
            revision: expected,
        };
        ops::write(self.shared(), &[op], &[], Statement)
            .await
            .map(drop)
    }

    async fn range(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        ops::range(self.shared(), prefix).await
    }

    async fn atomic_write(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        ops::write_revision(self.shared(), &ops, &[], Transaction).await
    }

    async fn watch(&self, prefix: &str) -> Result<Watcher, StoreError> {
        self.shared().hub.watch(self.shared(), prefix).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let shared = self.shared();
        let client = shared.client().await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| shared.query_error("ping failed", &e))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("postgresql {}", self.shared().settings.described)
    }

    async fn append_event(&self, event: StoredEvent) -> Result<(), StoreError> {
        ops::append_event(self.shared(), &event).await
    }

    async fn search_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        events::search_events(self.shared(), query).await
    }

    async fn delete_events_before(&self, before_nanos: i64, max: usize) -> Result<u64, StoreError> {
        events::delete_events_before(self.shared(), before_nanos, max).await
    }

    async fn write_with_events(
        &self,
        ops: Vec<Op>,
        events: Vec<StoredEvent>,
    ) -> Result<Revision, StoreError> {
        ops::write_revision(self.shared(), &ops, &events, Transaction).await
    }
}
