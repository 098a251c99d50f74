//! The statements of the PostgreSQL backend: reads, single-statement conditional writes
//! (autocommit, row locks decide races), `atomic_write` as one `SERIALIZABLE` transaction,
//! retries of transactions the database rolled back for certain, and appends to the event
//! log (searching and trimming it is `events`).

use std::time::Duration;

use deadpool_postgres::GenericClient;
use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{Shared, jitter};
use crate::{Item, Op, Revision, StoreError, StoredEvent, prefix_successor};

/// Attempts of a write the database keeps rolling back (serialization failure, deadlock).
const MAX_ATTEMPTS: u32 = 10;

/// How one attempt of a write failed.
enum Failed {
    /// A statement failed; [`write`] decides whether it is safe to run again.
    Db(tokio_postgres::Error),
    /// Final: the write's condition did not hold.
    Fail(StoreError),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Db(e)
    }
}

/// Whether the database rolled the statement's transaction back for certain, so running it
/// again cannot apply it twice.
fn rolled_back(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
    })
}

const CREATE: &str = "INSERT INTO kv (key, value, revision) VALUES ($1, $2, $3) \
                      ON CONFLICT (key) DO NOTHING";
const CREATE_ONE: &str = "INSERT INTO kv (key, value, revision) \
                          VALUES ($1, $2, nextval('kv_revision')) \
                          ON CONFLICT (key) DO NOTHING RETURNING revision";
const PUT: &str = "INSERT INTO kv (key, value, revision) VALUES ($1, $2, $3) \
                   ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                   revision = excluded.revision";
/// The overwrite takes its revision only once it holds the row's lock (a revision taken in
/// `VALUES`, before waiting for a concurrent writer of the key, could be lower than the one
/// that writer commits, and the key would move back to an older revision).
const PUT_ONE: &str = "INSERT INTO kv (key, value, revision) \
                       VALUES ($1, $2, nextval('kv_revision')) \
                       ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                       revision = nextval('kv_revision') RETURNING revision";
const CAS: &str = "UPDATE kv SET value = $2, revision = $3 WHERE key = $1 AND revision = $4";
/// One round trip: the new revision if the swap happened, and whether the key exists (as of
/// the statement's start) to tell a conflict from a missing key.
const CAS_ONE: &str = "WITH swapped AS (\
                           UPDATE kv SET value = $2, revision = nextval('kv_revision') \
                           WHERE key = $1 AND revision = $3 RETURNING revision) \
                       SELECT (SELECT revision FROM swapped), \
                              EXISTS (SELECT 1 FROM kv WHERE key = $1)";
const DELETE: &str = "DELETE FROM kv WHERE key = $1";
const DELETE_ONE: &str = "WITH deleted AS (DELETE FROM kv WHERE key = $1 RETURNING 1) \
                          SELECT EXISTS (SELECT 1 FROM deleted)";
const CAD: &str = "DELETE FROM kv WHERE key = $1 AND revision = $2";
const CAD_ONE: &str = "WITH deleted AS (\
                           DELETE FROM kv WHERE key = $1 AND revision = $2 RETURNING 1) \
                       SELECT EXISTS (SELECT 1 FROM deleted), \
                              EXISTS (SELECT 1 FROM kv WHERE key = $1)";
const EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM kv WHERE key = $1)";
/// Takes the transaction's revision and leaves it where the delete trigger finds it.
const TAKE_REVISION: &str =
    "SELECT set_config('machine_id.revision', nextval('kv_revision')::text, true)::bigint";
const CURRENT_REVISION: &str =
    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM kv_revision";

pub(super) async fn get(shared: &Shared, key: &str) -> Result<Option<Item>, StoreError> {
    let client = shared.client().await?;
    let row = async {
        let stmt = client
            .prepare_cached("SELECT key, value, revision FROM kv WHERE key = $1")
            .await?;
        client.query_opt(&stmt, &[&key]).await
    }
    .await
    .map_err(|e| shared.query_error("cannot read", &e))?;
    Ok(row.map(|row| read_item(&row)))
}

pub(super) async fn range(shared: &Shared, prefix: &str) -> Result<Vec<Item>, StoreError> {
    let client = shared.client().await?;
    let end = prefix_successor(prefix);
    let rows = async {
        match &end {
            Some(end) => {
                let stmt = client
                    .prepare_cached(
                        "SELECT key, value, revision FROM kv WHERE key >= $1 AND key < $2 \
                         ORDER BY key",
                    )
                    .await?;
                client.query(&stmt, &[&prefix, end]).await
            }
            None => {
                let stmt = client
                    .prepare_cached(
                        "SELECT key, value, revision FROM kv WHERE key >= $1 ORDER BY key",
                    )
                    .await?;
                client.query(&stmt, &[&prefix]).await
            }
        }
    }
    .await
    .map_err(|e| shared.query_error("cannot read", &e))?;
    Ok(rows.iter().map(read_item).collect())
}

fn read_item(row: &tokio_postgres::Row) -> Item {
    Item {
        key: row.get(0),
        value: row.get(1),
        revision: row.get(2),
    }
}

/// [`write`] for the calls that return a revision.
pub(super) async fn write_revision(
    shared: &Shared,
    ops: &[Op],
    events: &[StoredEvent],
    mode: Mode,
) -> Result<Revision, StoreError> {
    write(shared, ops, events, mode).await?.ok_or_else(|| {
        StoreError::Backend("a delete has no revision to return (internal error)".to_owned())
    })
}

/// How [`write`] applies its ops.
#[derive(Clone, Copy)]
pub(super) enum Mode {
    /// One op as one autocommitted statement (a lone delete returns no revision).
    Statement,
    /// Any number of ops (and events) in one transaction at one revision.
    Transaction,
}

/// Applies `ops` and appends `events` (all or nothing), retrying what the database rolled
/// back for certain; the revision, if the write produced one the caller can see.
pub(super) async fn write(
    shared: &Shared,
    ops: &[Op],
    events: &[StoredEvent],
    mode: Mode,
) -> Result<Option<Revision>, StoreError> {
    let mut attempt = 1;
    loop {
        let mut client = shared.client().await?;
        let result = match (mode, ops, events) {
            (Mode::Statement, [op], []) => write_one(&client, op).await,
            _ => write_transaction(&mut client, ops, events).await.map(Some),
        };
        match result {
            Ok(revision) => return Ok(revision),
            Err(Failed::Fail(e)) => return Err(e),
            Err(Failed::Db(e)) if !rolled_back(&e) => {
                return Err(shared.query_error("cannot write", &e));
            }
            Err(Failed::Db(e)) if attempt >= MAX_ATTEMPTS => {
                return Err(StoreError::Backend(format!(
                    "postgresql {}: the write was rolled back {MAX_ATTEMPTS} times by \
                     concurrent writes ({e}); retry later",
                    shared.settings.described
                )));
            }
            Err(Failed::Db(e)) => {
                tracing::debug!(attempt, error = %e, "store write rolled back by the database; retrying");
                drop(client);
                let base = Duration::from_millis(2).saturating_mul(1 << attempt.min(7));
                tokio::time::sleep(jitter(base)).await;
                attempt += 1;
            }
        }
    }
}

/// One op as one autocommitted statement that takes its own revision.
async fn write_one(
    client: &deadpool_postgres::Client,
    op: &Op,
) -> Result<Option<Revision>, Failed> {
    let (sql, params): (&str, Vec<&(dyn ToSql + Sync)>) = match op {
        Op::Create { key, value } => (CREATE_ONE, vec![key, value]),
        Op::Put { key, value } => (PUT_ONE, vec![key, value]),
        Op::CompareAndSwap {
            key,
            revision,
            value,
        } => (CAS_ONE, vec![key, value, revision]),
        Op::Delete { key } => (DELETE_ONE, vec![key]),
        Op::CompareAndDelete { key, revision } => (CAD_ONE, vec![key, revision]),
    };
    let stmt = client.prepare_cached(sql).await?;
    let rows = client.query(&stmt, &params).await?;
    let key = op.key().to_owned();
    let first = rows.first();
    match op {
        Op::Create { .. } => match first {
            Some(row) => Ok(Some(row.get(0))),
            None => Err(Failed::Fail(StoreError::AlreadyExists { key })),
        },
        Op::Put { .. } => Ok(first.map(|row| row.get(0))),
        Op::CompareAndSwap { .. } => {
            let (revision, exists): (Option<Revision>, bool) =
                first.map_or((None, false), |row| (row.get(0), row.get(1)));
            match (revision, exists) {
                (Some(revision), _) => Ok(Some(revision)),
                (None, true) => Err(Failed::Fail(StoreError::Conflict { key })),
                (None, false) => Err(Failed::Fail(StoreError::NotFound { key })),
            }
        }
        Op::Delete { .. } => match first.is_some_and(|row| row.get::<_, bool>(0)) {
            true => Ok(None),
            false => Err(Failed::Fail(StoreError::NotFound { key })),
        },
        Op::CompareAndDelete { .. } => {
            let (deleted, exists): (bool, bool) =
                first.map_or((false, false), |row| (row.get(0), row.get(1)));
            match (deleted, exists) {
                (true, _) => Ok(None),
                (false, true) => Err(Failed::Fail(StoreError::Conflict { key })),
                (false, false) => Err(Failed::Fail(StoreError::NotFound { key })),
            }
        }
    }
}

/// `ops` and `events` in one `SERIALIZABLE` transaction, the ops at one revision.
async fn write_transaction(
    client: &mut deadpool_postgres::Client,
    ops: &[Op],
    events: &[StoredEvent],
) -> Result<Revision, Failed> {
    if ops.is_empty() && events.is_empty() {
        let stmt = client.prepare_cached(CURRENT_REVISION).await?;
        return Ok(client.query_one(&stmt, &[]).await?.get(0));
    }
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .start()
        .await?;
    let revision: Revision = if ops.is_empty() {
        let stmt = tx.prepare_cached(CURRENT_REVISION).await?;
        tx.query_one(&stmt, &[]).await?.get(0)
    } else {
        let stmt = tx.prepare_cached(TAKE_REVISION).await?;
        tx.query_one(&stmt, &[]).await?.get(0)
    };
    for op in ops {
        let (sql, params): (&str, Vec<&(dyn ToSql + Sync)>) = match op {
            Op::Create { key, value } => (CREATE, vec![key, value, &revision]),
            Op::Put { key, value } => (PUT, vec![key, value, &revision]),
            Op::CompareAndSwap {
                key,
                revision: expected,
                value,
            } => (CAS, vec![key, value, &revision, expected]),
            Op::Delete { key } => (DELETE, vec![key]),
            Op::CompareAndDelete {
                key,
                revision: expected,
            } => (CAD, vec![key, expected]),
        };
        let stmt = tx.prepare_cached(sql).await?;
        let n = tx.execute(&stmt, &params).await?;
        if n == 0 {
            let key = op.key().to_owned();
            return Err(Failed::Fail(match op {
                Op::Create { .. } => StoreError::AlreadyExists { key },
                Op::Delete { .. } => StoreError::NotFound { key },
                _ => {
                    let stmt = tx.prepare_cached(EXISTS).await?;
                    let exists: bool = tx.query_one(&stmt, &[&key]).await?.get(0);
                    if exists {
                        StoreError::Conflict { key }
                    } else {
                        StoreError::NotFound { key }
                    }
                }
            }));
        }
    }
    if !events.is_empty() {
        let stmt = tx.prepare_cached(APPEND_EVENT).await?;
        for event in events {
            tx.execute(
                &stmt,
                &[&event.id, &event.time_nanos, &event.event_type, &event.data],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(revision)
}

const APPEND_EVENT: &str = "INSERT INTO events (id, time_nanos, event_type, data) \
                            VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING";

pub(super) async fn append_event(shared: &Shared, event: &StoredEvent) -> Result<(), StoreError> {
    let client = shared.client().await?;
    async {
        let stmt = client.prepare_cached(APPEND_EVENT).await?;
        client
            .execute(
                &stmt,
                &[&event.id, &event.time_nanos, &event.event_type, &event.data],
            )
            .await
    }
    .await
    .map_err(|e| shared.query_error("cannot append an event", &e))?;
    Ok(())
}
