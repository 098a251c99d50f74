//! PostgreSQL faults: the server stopped and started again under a live backend, a schema
//! newer than this code, a wrong password, an unreachable port; and the password kept out
//! of everything the backend shows.

use std::time::{Duration, Instant};

use machine_id_store::pg_test::{TEST_PASSWORD, TempPostgres};
use machine_id_store::{Backend, PostgresBackend, PostgresOptions, StoreError, WatchEvent};

use crate::postgres::{fresh, next};

/// Polls `f` until it returns `Some`, failing after 60 s.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what} within 60s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unavailable<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Unavailable(message)) => message,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn backend_error<T: std::fmt::Debug>(result: Result<T, StoreError>) -> String {
    match result {
        Err(StoreError::Backend(message)) => message,
        other => panic!("expected a backend error, got {other:?}"),
    }
}

/// While the server is down calls fail fast with `Unavailable` and watch streams end; once
/// it is back the same backend object works again and a new watch sees new writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_restart_under_a_live_backend() {
    // Its own server: stopping the shared one would break the other tests.
    let Some(pg) = tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .unwrap()
    else {
        return;
    };
    let conn = pg.create_database("restart");
    let mut options = PostgresOptions::default();
    options.keepalive = Duration::from_millis(500);
    let store = PostgresBackend::connect_with(&conn, options).await.unwrap();
    let before = store.put("/bots/a", b"1".to_vec()).await.unwrap();
    let mut w = store.watch("/bots/").await.unwrap();

    let stopping = std::sync::Arc::new(pg);
    let pg = std::sync::Arc::clone(&stopping);
    tokio::task::spawn_blocking(move || stopping.stop())
        .await
        .unwrap();

    assert_eq!(
        next(&mut w).await,
        None,
        "the watch stream ends when the feed is lost"
    );
    let started = Instant::now();
    let message = unavailable(store.get("/bots/a").await);
    assert!(message.contains("127.0.0.1"), "{message}");
    unavailable(store.put("/bots/b", vec![]).await);
    unavailable(store.ping().await);
    unavailable(store.watch("/bots/").await);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "calls fail rather than hang while the server is down"
    );

    let restarting = std::sync::Arc::clone(&pg);
    tokio::task::spawn_blocking(move || restarting.start_again())
        .await
        .unwrap();
    eventually("ping after the restart", || async {
        store.ping().await.ok()
    })
    .await;
    assert_eq!(
        store.get("/bots/a").await.unwrap().map(|i| i.revision),
        Some(before),
        "committed data survived"
    );
    let mut w = eventually("a watch after the restart", || async {
        store.watch("/bots/").await.ok()
    })
    .await;
    let after = store.put("/bots/c", b"3".to_vec()).await.unwrap();
    assert!(after > before);
    match next(&mut w).await {
        Some(WatchEvent::Put(item)) => {
            assert_eq!((item.key.as_str(), item.revision), ("/bots/c", after))
        }
        other => panic!("expected the new put, got {other:?}"),
    }

    // A crash (kill -9 of the postmaster) and recovery: the same again.
    let crashing = std::sync::Arc::clone(&pg);
    tokio::task::spawn_blocking(move || crashing.kill9())
        .await
        .unwrap();
    assert_eq!(
        next(&mut w).await,
        None,
        "the watch stream ends on a crash too"
    );
    // A clone: dropping the last handle would stop the server.
    let recovering = std::sync::Arc::clone(&pg);
    tokio::task::spawn_blocking(move || recovering.start_again())
        .await
        .unwrap();
    let mut w = eventually("a watch after crash recovery", || async {
        store.watch("/bots/").await.ok()
    })
    .await;
    let recovered = store.put("/bots/d", vec![]).await.unwrap();
    assert!(recovered > after);
    assert_eq!(store.range("/bots/").await.unwrap().len(), 3, "a, c, d");
    match next(&mut w).await {
        Some(WatchEvent::Put(item)) => assert_eq!(item.revision, recovered),
        other => panic!("expected the put after recovery, got {other:?}"),
    }
}

/// A database whose schema is newer than this code knows is refused with one line naming
/// both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn newer_schema_is_refused() {
    let Some((store, conn)) = fresh().await else {
        return;
    };
    drop(store);
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .execute("INSERT INTO machine_id_schema (version) VALUES (99)", &[])
        .await
        .unwrap();
    let message = backend_error(PostgresBackend::connect(&conn).await);
    assert!(message.contains("schema version 99"), "{message}");
    assert!(message.contains("up to version 2"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
}

/// A wrong password is refused with one line saying where, as whom and what to check, and
/// neither password appears in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_password_is_one_clear_line() {
    let Some(pg) = TempPostgres::shared() else {
        return;
    };
    let conn = pg
        .create_fresh_database()
        .replace(TEST_PASSWORD, "not-the-secret");
    let message = backend_error(PostgresBackend::connect(&conn).await);
    let port = pg.port();
    for part in [
        format!("cannot connect to PostgreSQL at 127.0.0.1:{port}"),
        "user machine_id".to_owned(),
        "password authentication failed".to_owned(),
        "check the user and password".to_owned(),
    ] {
        assert!(message.contains(&part), "{part:?} missing from: {message}");
    }
    assert!(!message.contains("not-the-secret") && !message.contains(TEST_PASSWORD));
}

/// Nothing listening on the port: `Unavailable`, one line, with what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_server_is_one_clear_line() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conn = format!(
        "host=127.0.0.1 port={port} user=machine_id password='s3cret pass' dbname=machine_id \
         sslmode=disable"
    );
    let message = unavailable(PostgresBackend::connect(&conn).await);
    assert_eq!(
        message,
        format!(
            "cannot connect to PostgreSQL at 127.0.0.1:{port} (database machine_id, user \
             machine_id): connection refused; check storage.conn_string and that the server is up"
        )
    );
}

/// `Debug`, `describe` and a bad connection string never show the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_never_shown() {
    let Some((store, conn)) = fresh().await else {
        return;
    };
    assert!(conn.contains(TEST_PASSWORD), "the test uses a password");
    let shown = format!("{store:?} {}", store.describe());
    assert!(!shown.contains(TEST_PASSWORD), "{shown}");
    assert!(
        shown.contains("postgresql machine_id@127.0.0.1:"),
        "{shown}"
    );
    let bad = conn.replace("sslmode=disable", "sslmode=bogus");
    let message = backend_error(PostgresBackend::connect(&bad).await);
    assert!(message.contains("sslmode=bogus"), "{message}");
    assert!(!message.contains(TEST_PASSWORD), "{message}");
}
