//! The PostgreSQL store's event log searches and trimming. A search is one statement per
//! event type (or one without a type) whose plan walks `events_by_type (event_type,
//! time_nanos, id)` or `events_by_time (time_nanos, id)` in the query's order, the page
//! cursor a row comparison on the same columns; trimming deletes a bounded batch, skipping
//! rows another server is deleting at that moment.

use tokio_postgres::types::ToSql;

use super::Shared;
use crate::{EventQuery, StoreError, StoredEvent, distinct_types, merge_event_pages};

/// The events `query` selects: one indexed statement, or one per type merged.
pub(super) async fn search_events(
    shared: &Shared,
    query: &EventQuery,
) -> Result<Vec<StoredEvent>, StoreError> {
    if query.limit == 0 {
        return Ok(Vec::new());
    }
    match distinct_types(query).as_slice() {
        [] => search_one(shared, query, None).await,
        [one] => search_one(shared, query, Some(one)).await,
        types => {
            let mut pages = Vec::with_capacity(types.len());
            for t in types {
                pages.push(search_one(shared, query, Some(t)).await?);
            }
            Ok(merge_event_pages(pages, query.descending, query.limit))
        }
    }
}

/// The SQL of `query` restricted to one type (when `typed`), with parameters numbered in
/// the order [`search_one`] binds them: type, since, until, cursor time, cursor id, limit.
pub(super) fn search_sql(query: &EventQuery, typed: bool) -> String {
    let mut sql = String::from("SELECT time_nanos, id, event_type, data FROM events WHERE true");
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("${n}")
    };
    if typed {
        sql.push_str(&format!(" AND event_type = {}", next()));
    }
    if query.since_nanos.is_some() {
        sql.push_str(&format!(" AND time_nanos >= {}", next()));
    }
    if query.until_nanos.is_some() {
        sql.push_str(&format!(" AND time_nanos < {}", next()));
    }
    if query.after.is_some() {
        let cmp = if query.descending { "<" } else { ">" };
        let (t, id) = (next(), next());
        sql.push_str(&format!(" AND (time_nanos, id) {cmp} ({t}, {id})"));
    }
    let order = if query.descending { "DESC" } else { "ASC" };
    sql.push_str(&format!(
        " ORDER BY time_nanos {order}, id {order} LIMIT {}",
        next()
    ));
    sql
}

async fn search_one(
    shared: &Shared,
    query: &EventQuery,
    event_type: Option<&str>,
) -> Result<Vec<StoredEvent>, StoreError> {
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let sql = search_sql(query, event_type.is_some());
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::new();
    if let Some(t) = &event_type {
        params.push(t);
    }
    if let Some(since) = &query.since_nanos {
        params.push(since);
    }
    if let Some(until) = &query.until_nanos {
        params.push(until);
    }
    if let Some(after) = &query.after {
        params.push(&after.time_nanos);
        params.push(&after.id);
    }
    params.push(&limit);
    let client = shared.client().await?;
    let rows = async {
        let stmt = client.prepare_cached(&sql).await?;
        client.query(&stmt, &params).await
    }
    .await
    .map_err(|e| shared.query_error("cannot search events", &e))?;
    Ok(rows
        .iter()
        .map(|row| StoredEvent {
            time_nanos: row.get(0),
            id: row.get(1),
            event_type: row.get(2),
            data: row.get(3),
        })
        .collect())
}

/// Deletes up to `max` of the oldest events below `before_nanos` in one statement. Rows
/// another server's trim holds are skipped (`SKIP LOCKED`), so two servers trimming at once
/// split the work instead of waiting on each other, and each row is deleted once.
pub(super) async fn delete_events_before(
    shared: &Shared,
    before_nanos: i64,
    max: usize,
) -> Result<u64, StoreError> {
    if max == 0 {
        return Ok(0);
    }
    let max = i64::try_from(max).unwrap_or(i64::MAX);
    let client = shared.client().await?;
    async {
        let stmt = client
            .prepare_cached(
                "DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time_nanos < $1 \
                 ORDER BY time_nanos, id LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .await?;
        client.execute(&stmt, &[&before_nanos, &max]).await
    }
    .await
    .map_err(|e| shared.query_error("cannot delete old events", &e))
}
