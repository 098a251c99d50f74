//! The SQLite store's audit event log: appends inside the writer's transactions (durable, no
//! revision, no watch event) and searches by time and type on the read connections.

use rusqlite::types::Value;

use super::Inner;
use crate::{EventQuery, StoreError, StoredEvent};

impl Inner {
    /// Inserts `event` unless its id is stored already, inside the writer's open transaction
    /// (`conn`): durable when that commits.
    pub(super) fn insert_event(
        &self,
        conn: &rusqlite::Connection,
        event: &StoredEvent,
    ) -> Result<(), StoreError> {
        conn.prepare_cached(
            "INSERT INTO events (id, time_nanos, event_type, data) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (id) DO NOTHING",
        )
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

    /// The events `query` selects, served by the `(time_nanos, id)` index.
    pub(super) fn search_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        let mut sql = String::from("SELECT time_nanos, id, event_type, data FROM events WHERE 1");
        let mut params: Vec<Value> = Vec::new();
        if let Some(since) = query.since_nanos {
            params.push(Value::Integer(since));
            sql.push_str(&format!(" AND time_nanos >= ?{}", params.len()));
        }
        if let Some(until) = query.until_nanos {
            params.push(Value::Integer(until));
            sql.push_str(&format!(" AND time_nanos < ?{}", params.len()));
        }
        if !query.event_types.is_empty() {
            let mut placeholders = Vec::new();
            for event_type in &query.event_types {
                params.push(Value::Text(event_type.clone()));
                placeholders.push(format!("?{}", params.len()));
            }
            sql.push_str(&format!(" AND event_type IN ({})", placeholders.join(", ")));
        }
        let order = if query.descending { "DESC" } else { "ASC" };
        params.push(Value::Integer(
            i64::try_from(query.limit).unwrap_or(i64::MAX),
        ));
        sql.push_str(&format!(
            " ORDER BY time_nanos {order}, id {order} LIMIT ?{}",
            params.len()
        ));
        self.read(|conn| {
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
        })
    }
}
