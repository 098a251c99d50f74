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
        let event_key = state::event_key(now.unix_timestamp_nanos(), &id);
        if let Err(e) = self
            .state
            .create(&event_key, &event, || {
                AuthError::Internal("event id collision".into())
            })
            .await
        {
            tracing::error!(error = %e, "cannot write the audit event of the offline lock removal");
        }
        Ok(lock)
    }
}
