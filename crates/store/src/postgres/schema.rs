//! The PostgreSQL schema and its migrations, applied by the backend itself at connect, in
//! one transaction under `pg_advisory_xact_lock` so that servers starting together do not
//! race; a database whose schema is newer than this code knows is refused.
//!
//! Version 1:
//!
//! - `machine_id_schema(version int primary key, applied timestamptz)`: one row per applied
//!   migration;
//! - `kv(key text COLLATE "C" primary key, value bytea, revision bigint)`: the items; keys
//!   compare bytewise (`"C"`), as on SQLite;
//! - `kv_revision`: the sequence every write takes its revision from (one per whole
//!   `atomic_write`), so revisions increase across all keys and are never reused;
//! - `events(id text primary key, time_nanos bigint, event_type text, data bytea)` with the
//!   index `events_by_time (time_nanos, id)`: the audit event log;
//! - `kv_notify()`, an `AFTER INSERT OR UPDATE OR DELETE` row trigger on `kv` that sends
//!   `NOTIFY machine_id_kv` with `{"n", "op", "key", "revision", "value"}` (`n` numbers
//!   the transaction's notifications so none is dropped as a duplicate; the value base64,
//!   left out when the payload would pass PostgreSQL's 8000-byte limit). A delete's
//!   revision is the transaction's (`machine_id.revision`, set by `atomic_write`) or a fresh
//!   one from the sequence.
//!
//! Version 2: the index `events_by_type (event_type, time_nanos, id)`, so a search by type
//! reads only the rows it returns.

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::StoreError;

/// The schema version this code writes; `MIGRATIONS[i]` upgrades version `i` to `i + 1`.
pub(crate) const SCHEMA_VERSION: i32 = 2;

/// The `NOTIFY` channel of the change feed.
pub(super) const CHANNEL: &str = "machine_id_kv";

/// The advisory lock migrations hold: "MIDS" and a 1.
const MIGRATION_LOCK: i64 = 0x4d49_4453_0000_0001;

/// Migrations, applied in order inside the locked transaction.
const MIGRATIONS: &[&str] = &[
    r#"
    CREATE SEQUENCE kv_revision AS bigint;
    CREATE TABLE kv (
        key text COLLATE "C" PRIMARY KEY,
        value bytea NOT NULL,
        revision bigint NOT NULL
    );
    CREATE TABLE events (
        id text COLLATE "C" PRIMARY KEY,
        time_nanos bigint NOT NULL,
        event_type text NOT NULL,
        data bytea NOT NULL
    );
    CREATE INDEX events_by_time ON events (time_nanos, id);
    CREATE FUNCTION kv_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        payload text;
        n int;
    BEGIN
        -- Numbers the transaction's notifications: PostgreSQL drops a notification whose
        -- payload repeats an earlier one of the same transaction, and a write may repeat an
        -- op (put, delete, the same put again).
        n := COALESCE(NULLIF(current_setting('machine_id.notify_seq', true), ''), '0')::int + 1;
        PERFORM set_config('machine_id.notify_seq', n::text, true);
        IF TG_OP = 'DELETE' THEN
            payload := json_build_object(
                'n', n,
                'op', 'delete',
                'key', OLD.key,
                'revision', COALESCE(
                    NULLIF(current_setting('machine_id.revision', true), '')::bigint,
                    nextval('kv_revision'))
            )::text;
        ELSE
            payload := json_build_object(
                'n', n,
                'op', 'put',
                'key', NEW.key,
                'revision', NEW.revision,
                'value', translate(encode(NEW.value, 'base64'), E'\n', '')
            )::text;
            IF octet_length(payload) > 7900 THEN
                payload := json_build_object(
                    'n', n, 'op', 'put', 'key', NEW.key, 'revision', NEW.revision)::text;
            END IF;
        END IF;
        PERFORM pg_notify('machine_id_kv', payload);
        RETURN NULL;
    END;
    $$;
    CREATE TRIGGER kv_notify AFTER INSERT OR UPDATE OR DELETE ON kv
        FOR EACH ROW EXECUTE FUNCTION kv_notify();
"#,
    // Version 2: a search by type walks this index instead of filtering the time index.
    // Built inside the migration transaction (CONCURRENTLY cannot run in one), so writes
    // to `events` wait for it: about a second per million events, once.
    r#"
    CREATE INDEX events_by_type ON events (event_type, time_nanos, id);
"#,
];

/// Brings the database's schema to [`SCHEMA_VERSION`], or refuses a newer one.
pub(super) async fn migrate(client: &mut Client, described: &str) -> Result<(), StoreError> {
    let err = |what: &'static str| {
        move |e: tokio_postgres::Error| {
            let hint = if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                "; the user needs to own the database (or hold CREATE on its public schema)"
            } else {
                ""
            };
            let message = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |db| db.message().to_owned());
            StoreError::Backend(format!("postgresql {described}: {what}: {message}{hint}"))
        }
    };
    let tx = client
        .transaction()
        .await
        .map_err(err("cannot read the schema"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err("cannot take the migration lock"))?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS machine_id_schema (
             version int PRIMARY KEY,
             applied timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(err("cannot create the schema table"))?;
    let version: i32 = tx
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM machine_id_schema",
            &[],
        )
        .await
        .map_err(err("cannot read the schema version"))?
        .get(0);
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "postgresql {described}: the database has schema version {version}, written by a \
             newer machine-id; this one knows up to version {SCHEMA_VERSION}: upgrade this \
             server, or point it at another database"
        )));
    }
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    let from = usize::try_from(version).unwrap_or_default();
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(from) {
        tx.batch_execute(migration)
            .await
            .map_err(err("cannot migrate the schema"))?;
        let to = i32::try_from(i + 1).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO machine_id_schema (version) VALUES ($1)",
            &[&to],
        )
        .await
        .map_err(err("cannot record the schema version"))?;
    }
    tx.commit()
        .await
        .map_err(err("cannot commit the schema migration"))?;
    tracing::info!(database = %described, from = version, to = SCHEMA_VERSION, "migrated postgresql store schema");
    Ok(())
}
