//! The conformance suite against [`PostgresBackend`] on the binary's shared PostgreSQL server
//! (a fresh database per case), then what one SQLite file cannot show: two backends on one
//! database, as two auth servers would be.

use std::sync::Arc;
use std::time::Duration;

use machine_id_store::pg_test::TempPostgres;
use machine_id_store::{
    Backend, PostgresBackend, PostgresOptions, StoreError, WatchEvent, Watcher,
};

/// A backend on a fresh database of the shared server; `None` when PostgreSQL is missing
/// and skipping is allowed.
pub async fn fresh() -> Option<(PostgresBackend, String)> {
    let pg = TempPostgres::shared()?;
    let conn = pg.create_fresh_database();
    let backend = PostgresBackend::connect(&conn).await.unwrap();
    Some((backend, conn))
}

async fn setup() -> Option<(Arc<dyn Backend>, ())> {
    let (backend, _) = fresh().await?;
    Some((Arc::new(backend), ()))
}

mod conformance {
    machine_id_store::conformance_tests!(optional: super::setup);
}

/// The next event, failing after 30 s (no sleep: returns as soon as it arrives).
pub async fn next(w: &mut Watcher) -> Option<WatchEvent> {
    tokio::time::timeout(Duration::from_secs(30), w.recv())
        .await
        .expect("a watch event (or the end of the stream) within 30s")
}

fn put_key(event: Option<WatchEvent>) -> (String, Vec<u8>, i64) {
    match event {
        Some(WatchEvent::Put(item)) => (item.key, item.value, item.revision),
        other => panic!("expected a put, got {other:?}"),
    }
}

/// A write through one backend reaches the other's watcher, deletes included, and each reads
/// the other's writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_backends_see_each_others_writes() {
    let Some((a, conn)) = fresh().await else {
        return;
    };
    let b = PostgresBackend::connect(&conn).await.unwrap();
    let mut wa = a.watch("/locks/").await.unwrap();
    let mut wb = b.watch("/locks/").await.unwrap();
    let r1 = b.put("/locks/robot", b"locked".to_vec()).await.unwrap();
    assert_eq!(
        put_key(next(&mut wa).await),
        ("/locks/robot".to_owned(), b"locked".to_vec(), r1)
    );
    assert_eq!(
        put_key(next(&mut wb).await).2,
        r1,
        "the writer's own watcher too"
    );
    a.delete("/locks/robot").await.unwrap();
    match next(&mut wb).await {
        Some(WatchEvent::Delete { key, revision }) => {
            assert_eq!(key, "/locks/robot");
            assert!(revision > r1);
        }
        other => panic!("expected the delete, got {other:?}"),
    }
    let r2 = a.put("/bots/x", vec![1]).await.unwrap();
    assert_eq!(
        b.get("/bots/x").await.unwrap().map(|i| i.revision),
        Some(r2)
    );
}

/// Racing creates, compare-and-swaps and single-use consumptions spread over two backends
/// admit exactly one winner each.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_across_two_backends_admit_one() {
    let Some((a, conn)) = fresh().await else {
        return;
    };
    let b = PostgresBackend::connect(&conn).await.unwrap();
    let backends: [Arc<dyn Backend>; 2] = [Arc::new(a), Arc::new(b)];
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..40u8 {
        let store = Arc::clone(&backends[usize::from(i % 2)]);
        creates.spawn(async move { store.create("/tokens/once", vec![i]).await });
    }
    let results = creates.join_all().await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(results.iter().all(|r| r.is_ok()
        || matches!(r, Err(StoreError::AlreadyExists { key }) if key == "/tokens/once")));

    let r0 = backends[0].create("/gen", b"0".to_vec()).await.unwrap();
    let mut swaps = tokio::task::JoinSet::new();
    for i in 0..40u8 {
        let store = Arc::clone(&backends[usize::from(i % 2)]);
        swaps.spawn(async move {
            store
                .atomic_write(vec![
                    machine_id_store::Op::CompareAndSwap {
                        key: "/gen".into(),
                        revision: r0,
                        value: vec![i],
                    },
                    machine_id_store::Op::Put {
                        key: format!("/winners/{i}"),
                        value: vec![],
                    },
                ])
                .await
        });
    }
    let results = swaps.join_all().await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(StoreError::Conflict { key }) if key == "/gen"))
    );
    assert_eq!(backends[1].range("/winners/").await.unwrap().len(), 1);
}

/// Values too big for a notification are read back by the listener; a watcher gets them
/// whole, in order with small ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn big_values_reach_watchers() {
    let Some((a, conn)) = fresh().await else {
        return;
    };
    let b = PostgresBackend::connect(&conn).await.unwrap();
    let mut w = a.watch("/ca/").await.unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let r1 = b.put("/ca/user", big.clone()).await.unwrap();
    let r2 = b.put("/ca/host", b"small".to_vec()).await.unwrap();
    assert_eq!(
        put_key(next(&mut w).await),
        ("/ca/user".to_owned(), big, r1)
    );
    assert_eq!(
        put_key(next(&mut w).await),
        ("/ca/host".to_owned(), b"small".to_vec(), r2)
    );
}

/// Two backends connecting to a new database at the same moment both migrate it safely.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_first_connects_share_one_schema() {
    let Some(pg) = TempPostgres::shared() else {
        return;
    };
    let conn = pg.create_fresh_database();
    let (a, b, c) = tokio::join!(
        PostgresBackend::connect(&conn),
        PostgresBackend::connect(&conn),
        PostgresBackend::connect(&conn)
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let r = a.put("/x", vec![]).await.unwrap();
    assert!(b.put("/y", vec![]).await.unwrap() > r);
    assert_eq!(c.range("").await.unwrap().len(), 2);
}

/// A watcher that stops reading is closed after its buffer fills; the others, and writers,
/// carry on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_watcher_is_closed_without_blocking_others() {
    let Some(pg) = TempPostgres::shared() else {
        return;
    };
    let conn = pg.create_fresh_database();
    let mut options = PostgresOptions::default();
    options.watch_buffer = 8;
    let store = PostgresBackend::connect_with(&conn, options).await.unwrap();
    let mut slow = store.watch("/a/").await.unwrap();
    let mut other = store.watch("/b/").await.unwrap();
    for i in 0..20 {
        store.put(&format!("/a/{i:02}"), vec![]).await.unwrap();
    }
    store.put("/b/x", vec![2]).await.unwrap();
    assert_eq!(put_key(next(&mut other).await).0, "/b/x");
    let mut seen = Vec::new();
    while let Some(event) = next(&mut slow).await {
        seen.push(put_key(Some(event)).0);
    }
    let expected: Vec<String> = (0..8).map(|i| format!("/a/{i:02}")).collect();
    assert_eq!(seen, expected, "the buffered events, then closed");
}
