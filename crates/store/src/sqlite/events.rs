//! The SQLite store's audit event log: appends inside the writer's transactions (durable, no
//! revision, no watch event); searches by time and type on the read connections, each
//! served by an index in its order (`events_by_time (time_nanos, id)`, `events_by_type
//! (event_type, time_nanos, id)`); a bulk append and trimming in bounded batches, each its
//! own short transaction on the write connection (taken between the writer thread's batches).

use rusqlite::types::Value;
use rusqlite::{Connection, TransactionBehavior};

use super::{Inner, SqliteBackend};
use crate::{EventQuery, StoreError, StoredEvent, distinct_types, merge_event_pages};

const INSERT: &str = "INSERT INTO events (id, time_nanos, event_type, data) VALUES (?1, ?2, ?3, ?4) \
                      ON CONFLICT (id) DO NOTHING";

impl SqliteBackend {
    /// Appends every event of `events` that is not stored yet (by id, as
    /// [`crate::Backend::append_event`]) in **one** transaction, and returns how many were new.
    ///
    /// This is the bulk path for imports, benchmarks and tests that need a large log
    /// quickly: one commit (one fsync) for the whole batch instead of one per event, which is
    /// what makes a million events take seconds rather than minutes. It holds the store's
    /// writer for the whole batch, so a serving auth server should not be handed huge
    /// batches; split them (tens of thousands of events take well under a second).
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the write fails; then none of the batch is stored.
    pub async fn append_events(&self, events: Vec<StoredEvent>) -> Result<u64, StoreError> {
        self.blocking(move |inner| inner.append_events(&events))
            .await
    }

    /// The plan SQLite chooses for [`crate::Backend::search_events`] with `query`, one line
    /// per step as `EXPLAIN QUERY PLAN` prints it (`SEARCH events USING INDEX events_by_time
    /// (time_nanos<?)`, say); one block per type when the query names several. For tests and
    /// for diagnosing a slow search: a plan that mentions no index, or `USE TEMP B-TREE`,
    /// reads or sorts more rows than it returns.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when SQLite cannot prepare the query.
    pub async fn search_plan(&self, query: &EventQuery) -> Result<Vec<String>, StoreError> {
        let query = query.clone();
        self.blocking(move |inner| {
            let types = distinct_types(&query);
            let types: Vec<Option<&str>> = if types.is_empty() {
                vec![None]
            } else {
                types.into_iter().map(Some).collect()
            };
            let mut lines = Vec::new();
            for t in types {
                let (sql, params) = search_sql(&query, t);
                lines.extend(inner.read(|conn| {
                    conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?
                        .query_map(rusqlite::params_from_iter(params), |row| {
                            row.get::<_, String>(3)
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()
                })?);
            }
            Ok(lines)
        })
        .await
    }
}

impl Inner {
    /// Inserts `event` unless its id is stored already, inside the writer's open transaction
    /// (`conn`): durable when that commits.
    pub(super) fn insert_event(
        &self,
        conn: &rusqlite::Connection,
        event: &StoredEvent,
    ) -> Result<(), StoreError> {
        conn.prepare_cached(INSERT)
            .and_then(|mut s| {
                s.execute(rusqlite::params![
                    event.id,
                    event.time_nanos,
                    event.event_type,
                    event.data
                ])
            })
            .map_err(self.err("cannot append an event to"))?;
        Ok(())
    }

    /// Inserts the events not stored yet in one `IMMEDIATE` transaction.
    fn append_events(&self, events: &[StoredEvent]) -> Result<u64, StoreError> {
        let mut conn = super::lock(&self.writer);
        let err = |e| super::sql_err(&self.location, "cannot append events to", e);
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let mut added = 0u64;
        {
            let mut insert = tx.prepare_cached(INSERT).map_err(&err)?;
            for event in events {
                let n = insert
                    .execute(rusqlite::params![
                        event.id,
                        event.time_nanos,
                        event.event_type,
                        event.data
                    ])
                    .map_err(&err)?;
                added += n as u64;
            }
        }
        tx.commit().map_err(err)?;
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(added)
    }

    /// Deletes up to `max` of the oldest events with `time_nanos < before_nanos`, walking the
    /// `(time_nanos, id)` index from its start: one short write transaction.
    pub(super) fn delete_events_before(
        &self,
        before_nanos: i64,
        max: usize,
    ) -> Result<u64, StoreError> {
        if max == 0 {
            return Ok(0);
        }
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let conn = super::lock(&self.writer);
        let n = conn
            .prepare_cached(
                "DELETE FROM events WHERE id IN (SELECT id FROM events \
                 WHERE time_nanos < ?1 ORDER BY time_nanos, id LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(rusqlite::params![before_nanos, max]))
            .map_err(self.err("cannot delete old events from"))?;
        self.commits
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(n as u64)
    }

    /// The events `query` selects: one indexed query, or one per type merged.
    pub(super) fn search_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        match distinct_types(query).as_slice() {
            [] => self.read(|conn| search_one(conn, query, None)),
            [one] => self.read(|conn| search_one(conn, query, Some(one))),
            types => {
                let pages = types
                    .iter()
                    .map(|t| self.read(|conn| search_one(conn, query, Some(t))))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(merge_event_pages(pages, query.descending, query.limit))
            }
        }
    }
}

/// The SQL and parameters of `query` restricted to `event_type` (all types when `None`),
/// ordered as the query asks and cut at its limit. Its plan walks `events_by_type` (with a
/// type) or `events_by_time` (without) in order: no sort, no full scan.
fn search_sql(query: &EventQuery, event_type: Option<&str>) -> (String, Vec<Value>) {
    let mut sql = String::from("SELECT time_nanos, id, event_type, data FROM events WHERE 1");
    let mut params: Vec<Value> = Vec::new();
    let bind = |params: &mut Vec<Value>, v: Value| {
        params.push(v);
        format!("?{}", params.len())
    };
    if let Some(t) = event_type {
        let p = bind(&mut params, Value::Text(t.to_owned()));
        sql.push_str(&format!(" AND event_type = {p}"));
    }
    if let Some(since) = query.since_nanos {
        let p = bind(&mut params, Value::Integer(since));
        sql.push_str(&format!(" AND time_nanos >= {p}"));
    }
    if let Some(until) = query.until_nanos {
        let p = bind(&mut params, Value::Integer(until));
        sql.push_str(&format!(" AND time_nanos < {p}"));
    }
    if let Some(after) = &query.after {
        let t = bind(&mut params, Value::Integer(after.time_nanos));
        let id = bind(&mut params, Value::Text(after.id.clone()));
        // A row value: SQLite turns it into a range on the index's (time_nanos, id).
        let cmp = if query.descending { "<" } else { ">" };
        sql.push_str(&format!(" AND (time_nanos, id) {cmp} ({t}, {id})"));
    }
    let order = if query.descending { "DESC" } else { "ASC" };
    let limit = bind(
        &mut params,
        Value::Integer(i64::try_from(query.limit).unwrap_or(i64::MAX)),
    );
    sql.push_str(&format!(
        " ORDER BY time_nanos {order}, id {order} LIMIT {limit}"
    ));
    (sql, params)
}

fn search_one(
    conn: &Connection,
    query: &EventQuery,
    event_type: Option<&str>,
) -> rusqlite::Result<Vec<StoredEvent>> {
    let (sql, params) = search_sql(query, event_type);
    conn.prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(params), |row| {
            Ok(StoredEvent {
                time_nanos: row.get(0)?,
                id: row.get(1)?,
                event_type: row.get(2)?,
                data: row.get(3)?,
            })
        })?
        .collect()
}
