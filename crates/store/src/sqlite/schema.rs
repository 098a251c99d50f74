//! The SQLite store's schema: its migrations, the marks that tell our files from other
//! SQLite databases, and the check that refuses a file written by a newer version.

use rusqlite::{Connection, TransactionBehavior};

use super::sql_err;
use crate::StoreError;

/// The schema version this code writes; `MIGRATIONS[i]` upgrades version `i` to `i + 1`.
pub(super) const SCHEMA_VERSION: i64 = 3;

/// Marks the file as ours (`PRAGMA application_id`): "MIDS".
const APPLICATION_ID: i64 = 0x4d49_4453;

/// Schema migrations, applied in order inside one transaction at open.
const MIGRATIONS: &[&str] = &[
    "
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
",
    "
    CREATE TABLE events (
        id TEXT PRIMARY KEY NOT NULL,
        time_nanos INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        data BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX events_by_time ON events (time_nanos, id);
",
    // Version 3: a search by type walks this index instead of filtering the time index.
    "
    CREATE INDEX events_by_type ON events (event_type, time_nanos, id);
",
];

/// Checks the file is ours and brings its schema to [`SCHEMA_VERSION`].
pub(super) fn migrate(conn: &mut Connection, location: &str) -> Result<(), StoreError> {
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
