//! Offline administration of a **stopped** auth server's data directory: the recovery path
//! for when no administrator can reach the running server (for example a lock that refuses
//! the admin identity, whatever the server does to prevent one).
//!
//! [`OfflineDataDir::open`] takes the same exclusive `flock` on `DATA_DIR/auth-server.lock`
//! that [`crate::AuthServer::start`] holds for the life of the server, so it refuses while a
//! server runs on the directory (and a server refuses to start while an offline command
//! holds it). It never creates a store: a directory without a cluster is refused.
//!
//! ```no_run
//! # async fn run() -> Result<(), machine_id_auth::AuthError> {
//! let dir = machine_id_auth::offline::OfflineDataDir::open("/var/lib/machine-id".as_ref()).await?;
//! for lock in dir.list_locks().await? {
//!     println!("{} {}", lock.metadata.name, lock.target_text());
//! }
//! dir.remove_lock("lock-on-admin").await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use machine_id_types::{AuditEvent, Lock, event_types};
use serde_json::json;

use crate::error::{AuthError, Result};
use crate::files;
use crate::server::{BACKEND_FILE, open_store};
use crate::state::{self, CLUSTER_NAME_KEY, ClusterInfo, State};
use crate::storage::StorageConfig;
use machine_id_store::{Backend, EventQuery, Op};

/// The user offline changes are recorded under in the audit log.
pub const OFFLINE_USER: &str = "auth-server (offline)";

/// A stopped auth server's data directory, held exclusively while this value lives.
#[derive(Debug)]
pub struct OfflineDataDir {
    state: State,
    data_dir: PathBuf,
    cluster_name: String,
    _lock: std::fs::File,
}

impl OfflineDataDir {
    /// Opens the store in `data_dir` for offline changes.
    ///
    /// # Errors
    ///
    /// [`AuthError::DataDirInUse`] while an auth server runs on it;
    /// [`AuthError::FailedPrecondition`] when it holds no store or an empty one; file and
    /// store errors.
    pub async fn open(data_dir: &Path) -> Result<Self> {
        if !data_dir.is_dir() {
            return Err(AuthError::FailedPrecondition(format!(
                "{} is not a directory; pass the auth server's data directory (--data-dir, or data_dir in --config)",
                data_dir.display()
            )));
        }
        let lock = files::lock_data_dir(
            data_dir,
            "an auth server is running on it; stop it first, or, while it runs, use tctl locks ls and tctl locks rm",
        )?;
        let db = data_dir.join(BACKEND_FILE);
        if !db.exists() {
            return Err(AuthError::FailedPrecondition(format!(
                "{} holds no store ({BACKEND_FILE}); is it the auth server's data directory?",
                data_dir.display()
            )));
        }
        files::ensure_private_file(&db, "store (it holds the cluster's CA keys)")?;
        let state = State::uncached(open_store(&db).await?);
        let Some((info, _)) = state.get::<ClusterInfo>(CLUSTER_NAME_KEY).await? else {
            return Err(AuthError::FailedPrecondition(format!(
                "the store {} holds no cluster; is it the auth server's data directory?",
                db.display()
            )));
        };
        Ok(Self {
            state,
            data_dir: data_dir.to_path_buf(),
            cluster_name: info.cluster_name,
            _lock: lock,
        })
    }

    /// The cluster the directory holds.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// Every lock, in name order (expired ones included: they are still stored).
    pub async fn list_locks(&self) -> Result<Vec<Lock>> {
        Ok(self
            .state
            .list::<Lock>(state::LOCKS)
            .await?
            .into_iter()
            .map(|(l, _)| l)
            .collect())
    }

    /// Deletes lock `name` and records a `lock.delete` audit event by [`OFFLINE_USER`].
    /// Returns the lock removed.
    ///
    /// # Errors
    ///
    /// [`AuthError::NotFound`] when there is no such lock.
    pub async fn remove_lock(&self, name: &str) -> Result<Lock> {
        state::check_key_name("lock", name)?;
        let key = state::lock_key(name);
        let Some((lock, rev)) = self.state.get::<Lock>(&key).await? else {
            let known: Vec<String> = self
                .list_locks()
                .await?
                .into_iter()
                .map(|l| l.metadata.name)
                .collect();
            return Err(AuthError::NotFound(format!(
                "lock {name:?} not found in {}; the locks are: {}",
                self.data_dir.display(),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        };
        self.state.backend.compare_and_delete(&key, rev).await?;
        tracing::info!(lock = %name, target = %lock.target_text(), data_dir = %self.data_dir.display(), "lock removed offline");
        let now = time::OffsetDateTime::now_utc();
        let id = uuid::Uuid::new_v4().to_string();
        let event = AuditEvent {
            id: id.clone(),
            time: now,
            event_type: event_types::LOCK_DELETE.to_string(),
            user: Some(OFFLINE_USER.to_string()),
            success: true,
            message: format!(
                "lock {name} ({}) removed offline with auth-server locks rm",
                lock.target_text()
            ),
            fields: match json!({ "kind": "lock", "name": name, "offline": true }) {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
        };
        if let Err(e) =
            state::append_event(&*self.state.backend, now.unix_timestamp_nanos(), &event).await
        {
            tracing::error!(error = %e, "cannot write the audit event of the offline lock removal");
        }
        Ok(lock)
    }
}

/// One side of [`clone_cluster`]: a data directory and the storage its configuration names.
#[derive(Debug, Clone)]
pub struct StoreTarget {
    /// The data directory (SQLite's store lives in it; it is locked during the copy).
    pub data_dir: PathBuf,
    /// The storage.
    pub storage: StorageConfig,
}

impl StoreTarget {
    fn describe(&self) -> String {
        match &self.storage {
            StorageConfig::Sqlite => self.data_dir.join(BACKEND_FILE).display().to_string(),
            StorageConfig::Postgres { conn_string } => format!("PostgreSQL {conn_string}"),
        }
    }
}

/// What [`clone_cluster`] copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloneReport {
    /// The cluster's name.
    pub cluster_name: String,
    /// Keys copied, by kind (the first path segment: `bots`, `roles`, `users`, ...).
    pub keys: std::collections::BTreeMap<String, usize>,
    /// Audit events copied.
    pub events: usize,
}

/// Copies a whole cluster (CAs, roles, users and bots with their generation counters,
/// tokens, nodes, locks, and the audit log) from `from` to `to`, as `auth-server backend
/// clone` (Teleport's `teleport backend clone`): from SQLite to PostgreSQL or back. Bots keep
/// renewing against the copy with no new join, provided no server wrote to the source after
/// the copy (stop every auth server of the source first).
///
/// The state is written in one transaction, so a failed copy leaves the target empty.
///
/// # Errors
///
/// [`AuthError::DataDirInUse`] while an auth server runs on a SQLite side's data directory;
/// [`AuthError::FailedPrecondition`] when the source holds no cluster or the target is not
/// empty; store errors.
pub async fn clone_cluster(from: &StoreTarget, to: &StoreTarget) -> Result<CloneReport> {
    let hint = "an auth server is running on it; stop every auth server of the cluster before backend clone, or bots that renew after the copy would find their generation stale on the new store";
    let _from_lock = match from.storage {
        StorageConfig::Sqlite => {
            let db = from.data_dir.join(BACKEND_FILE);
            if !db.exists() {
                return Err(AuthError::FailedPrecondition(format!(
                    "the source {} does not exist; pass the config of the auth server whose cluster to copy",
                    db.display()
                )));
            }
            Some(files::lock_data_dir(&from.data_dir, hint)?)
        }
        StorageConfig::Postgres { .. } => None,
    };
    let _to_lock = match to.storage {
        StorageConfig::Sqlite => {
            files::ensure_private_dir(&to.data_dir, false)?;
            Some(files::lock_data_dir(&to.data_dir, hint)?)
        }
        StorageConfig::Postgres { .. } => None,
    };
    if from.describe() == to.describe() {
        return Err(AuthError::InvalidArgument(format!(
            "the source and the target are the same store ({}); pass two different configs",
            from.describe()
        )));
    }
    let source = crate::storage::open(&from.storage, &from.data_dir).await?;
    let target = crate::storage::open(&to.storage, &to.data_dir).await?;
    let Some(info) = source.get(CLUSTER_NAME_KEY).await? else {
        return Err(AuthError::FailedPrecondition(format!(
            "the source {} holds no cluster; pass the config of the auth server whose cluster to copy",
            from.describe()
        )));
    };
    let info: ClusterInfo = state::decode(CLUSTER_NAME_KEY, &info.value)?;
    let existing = target.range("/").await?;
    if !existing.is_empty() {
        return Err(AuthError::FailedPrecondition(format!(
            "the target {} is not empty ({} keys{}); backend clone only copies into an empty store",
            to.describe(),
            existing.len(),
            if existing.iter().any(|i| i.key == CLUSTER_NAME_KEY) {
                ", a cluster already"
            } else {
                ""
            }
        )));
    }
    let items = source.range("/").await?;
    let mut report = CloneReport {
        cluster_name: info.cluster_name,
        ..CloneReport::default()
    };
    let mut ops = Vec::with_capacity(items.len());
    for item in items {
        let kind = item.key.split('/').nth(1).unwrap_or("").to_string();
        *report.keys.entry(kind).or_default() += 1;
        ops.push(Op::Create {
            key: item.key,
            value: item.value,
        });
    }
    if !ops.is_empty() {
        target.atomic_write(ops).await?;
    }
    report.events = copy_events(&*source, &*target).await?;
    tracing::info!(from = %from.describe(), to = %to.describe(), cluster = %report.cluster_name, keys = ?report.keys, events = report.events, "cluster copied");
    Ok(report)
}

/// How many events one page of [`copy_events`] reads.
const EVENT_PAGE: usize = 5000;

/// Copies the whole event log of `source` into `target`, oldest first, a page at a time
/// (each page starts just past the previous one's last event, so events sharing a time are
/// copied once each, however many there are).
async fn copy_events(source: &dyn Backend, target: &dyn Backend) -> Result<usize> {
    let mut copied = 0;
    let mut query = EventQuery {
        limit: EVENT_PAGE,
        ..EventQuery::default()
    };
    loop {
        let page = source.search_events(&query).await?;
        let full = page.len() == EVENT_PAGE;
        query.after = page.last().map(machine_id_store::StoredEvent::position);
        for event in page {
            target.append_event(event).await?;
            copied += 1;
        }
        if !full {
            return Ok(copied);
        }
    }
}
