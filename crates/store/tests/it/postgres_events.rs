//! The PostgreSQL event log beyond the conformance suite: a database of schema version 1
//! (before the type index) migrated at connect, its plans, and two backends (two auth
//! servers) trimming one log at once.

use std::sync::Arc;

use machine_id_store::{Backend, EventQuery, PostgresBackend, StoredEvent};

use crate::postgres::fresh;

fn event(i: i64, event_type: &str) -> StoredEvent {
    StoredEvent {
        time_nanos: 1_000 + i,
        id: format!("e{i:04}"),
        event_type: event_type.to_owned(),
        data: b"{}".to_vec(),
    }
}

async fn raw(conn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// The plan of a typed, paged search with sequential scans and explicit sorts made
/// expensive, so it shows whether an index can serve the query in its order.
async fn plan(client: &tokio_postgres::Client) -> String {
    client
        .batch_execute("SET enable_seqscan = off; SET enable_sort = off")
        .await
        .unwrap();
    let rows = client
        .query(
            "EXPLAIN SELECT time_nanos, id, event_type, data FROM events \
             WHERE event_type = 'bot.join' AND (time_nanos, id) < (1050, 'e0050') \
             ORDER BY time_nanos DESC, id DESC LIMIT 10",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A database of schema version 1 (this version's schema without `events_by_type`, as the
/// previous release left it) is migrated to version 2 at connect: the index is built, the
/// events are kept, and a typed search is served from the index in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn version_1_database_gains_the_type_index() {
    let Some((store, conn)) = fresh().await else {
        return;
    };
    drop(store);
    let client = raw(&conn).await;
    client
        .batch_execute(
            "DROP INDEX events_by_type; DELETE FROM machine_id_schema WHERE version = 2;",
        )
        .await
        .unwrap();
    for i in 0..100 {
        let t = if i % 2 == 0 { "bot.join" } else { "cert.renew" };
        let e = event(i, t);
        client
            .execute(
                "INSERT INTO events (id, time_nanos, event_type, data) VALUES ($1, $2, $3, $4)",
                &[&e.id, &e.time_nanos, &e.event_type, &e.data],
            )
            .await
            .unwrap();
    }
    assert!(
        !plan(&client).await.contains("events_by_type"),
        "version 1 has no type index"
    );

    let store = PostgresBackend::connect(&conn).await.unwrap();
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM machine_id_schema ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2]);
    let plan = plan(&client).await;
    assert!(plan.contains("events_by_type"), "{plan}");
    assert!(!plan.contains("Sort"), "the index gives the order: {plan}");
    let got: Vec<String> = store
        .search_events(&EventQuery {
            event_types: vec!["bot.join".into()],
            limit: 3,
            descending: true,
            after: Some(event(50, "bot.join").position()),
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(got, ["e0048", "e0046", "e0044"]);
}

/// Two backends on one database trimming the same log at once (two auth servers' retention
/// tasks) delete each old event once between them, and nothing newer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_trim_one_log_exactly_once() {
    let Some((a, conn)) = fresh().await else {
        return;
    };
    let b = PostgresBackend::connect(&conn).await.unwrap();
    for i in 0..2_000 {
        a.append_event(event(i, "t")).await.unwrap();
    }
    let backends: [Arc<dyn Backend>; 2] = [Arc::new(a), Arc::new(b)];
    let mut trims = tokio::task::JoinSet::new();
    for k in 0..6 {
        let store = Arc::clone(&backends[k % 2]);
        trims.spawn(async move {
            let mut deleted = 0;
            loop {
                let n = store
                    .delete_events_before(1_000 + 1_500, 100)
                    .await
                    .unwrap();
                deleted += n;
                if n < 100 {
                    return deleted;
                }
            }
        });
    }
    let total: u64 = trims.join_all().await.into_iter().sum();
    assert_eq!(total, 1_500);
    let left = backends[1]
        .search_events(&EventQuery {
            limit: 10_000,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(left.len(), 500);
    assert_eq!(left[0].id, "e1500");
}
