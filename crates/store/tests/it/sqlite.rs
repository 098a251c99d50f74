//! SQLite-specific behaviour: durability across reopen, file modes, errors on bad files,
//! several handles on one file.

use std::path::Path;
use std::sync::Arc;

use machine_id_store::{Backend, Item, Op, SqliteBackend, StoreError};

fn backend_error(result: Result<SqliteBackend, StoreError>) -> String {
    match result {
        Err(StoreError::Backend(message)) => message,
        other => panic!("expected a backend error, got {other:?}"),
    }
}

#[tokio::test]
async fn reopen_sees_all_committed_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteBackend::open(&path).unwrap();
    let r1 = store.create("/bots/a", b"a".to_vec()).await.unwrap();
    let r2 = store.put("/bots/b", b"b".to_vec()).await.unwrap();
    let r3 = store
        .compare_and_swap("/bots/a", r1, b"a2".to_vec())
        .await
        .unwrap();
    store.put("/tokens/t", b"t".to_vec()).await.unwrap();
    store.delete("/tokens/t").await.unwrap();
    let r4 = store
        .atomic_write(vec![
            Op::Create {
                key: "/roles/r".into(),
                value: b"r".to_vec(),
            },
            Op::Put {
                key: "/ca/user".into(),
                value: vec![0, 1, 2],
            },
        ])
        .await
        .unwrap();
    let before = store.range("").await.unwrap();
    drop(store);

    let store = SqliteBackend::open(&path).unwrap();
    let after = store.range("").await.unwrap();
    assert_eq!(after, before);
    assert_eq!(
        after,
        [
            Item {
                key: "/bots/a".into(),
                value: b"a2".to_vec(),
                revision: r3
            },
            Item {
                key: "/bots/b".into(),
                value: b"b".to_vec(),
                revision: r2
            },
            Item {
                key: "/ca/user".into(),
                value: vec![0, 1, 2],
                revision: r4
            },
            Item {
                key: "/roles/r".into(),
                value: b"r".to_vec(),
                revision: r4
            },
        ]
    );
    // The revision counter survives too: no revision is handed out twice.
    let r5 = store.put("/tokens/t", vec![]).await.unwrap();
    assert!(r5 > r4, "{r5} after {r4}");
}

#[cfg(unix)]
#[tokio::test]
async fn files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteBackend::open(&path).unwrap();
    store.put("/ca/key", b"secret".to_vec()).await.unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let file = dir.path().join(format!("state.db{suffix}"));
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    drop(store);

    // An existing file readable by others is tightened on open.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let store = SqliteBackend::open(&path).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert!(store.get("/ca/key").await.unwrap().is_some());
}

#[test]
fn missing_directory_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("state.db");
    let message = backend_error(SqliteBackend::open(&path));
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn corrupt_file_is_a_backend_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![b'x'; 8192]).unwrap();
    let message = backend_error(SqliteBackend::open(&path));
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("restore it from a backup"), "{message}");
}

#[test]
fn directory_instead_of_file_is_a_backend_error() {
    let dir = tempfile::tempdir().unwrap();
    let message = backend_error(SqliteBackend::open(dir.path()));
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
}

#[test]
fn other_sqlite_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("CREATE TABLE notes (body TEXT)")
        .unwrap();
    drop(conn);
    let message = backend_error(SqliteBackend::open(&path));
    assert!(message.contains("another program"), "{message}");
    // And it was left alone.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 1);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteBackend::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let message = backend_error(SqliteBackend::open(&path));
    assert!(message.contains("schema version 99"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[tokio::test]
async fn schema_is_versioned_and_marked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(SqliteBackend::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
    assert_eq!(mode, "wal");
}

/// A file written by the previous version (schema 1, no event log) opens with its items and
/// revisions intact and gains the event log (and every later migration).
#[tokio::test]
async fn version_1_file_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(
        "CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL,
             revision INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL)
             WITHOUT ROWID;
         INSERT INTO meta (name, value) VALUES ('revision', 7);
         INSERT INTO kv (key, value, revision) VALUES ('/bots/old', x'6f6c64', 7);
         PRAGMA application_id = 1296647251;
         PRAGMA user_version = 1;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteBackend::open(&path).unwrap();
    assert_eq!(
        store.range("").await.unwrap(),
        [Item {
            key: "/bots/old".into(),
            value: b"old".to_vec(),
            revision: 7
        }]
    );
    assert!(store.put("/bots/new", vec![]).await.unwrap() > 7);
    let event = machine_id_store::StoredEvent {
        time_nanos: 1,
        id: "e".into(),
        event_type: "t".into(),
        data: vec![],
    };
    store.append_event(event.clone()).await.unwrap();
    let query = machine_id_store::EventQuery {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.search_events(&query).await.unwrap(), [event]);
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3);
}

/// Two handles on one file (as two processes would be) still let exactly one
/// compare-and-swap win: the lock is SQLite's, not only the in-process mutex.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_file_race_safely() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let a: Arc<dyn Backend> = Arc::new(SqliteBackend::open(&path).unwrap());
    let b: Arc<dyn Backend> = Arc::new(SqliteBackend::open(&path).unwrap());
    let r0 = a.create("/gen", b"0".to_vec()).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = Arc::clone(if i % 2 == 0 { &a } else { &b });
        tasks.spawn(async move { store.compare_and_swap("/gen", r0, vec![i]).await });
    }
    let results = tasks.join_all().await;
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
    // Each handle reads the other's writes.
    let r1 = b.put("/from-b", vec![]).await.unwrap();
    assert_eq!(
        a.get("/from-b").await.unwrap().map(|i| i.revision),
        Some(r1)
    );
    let r2 = a.put("/from-a", vec![]).await.unwrap();
    assert!(r2 > r1);
    assert_eq!(
        b.get("/from-a").await.unwrap().map(|i| i.revision),
        Some(r2)
    );
}

/// One writer at a time: every write is its own durable commit (nothing waits for company).
/// Writers that arrive together: the writer thread commits them in groups, so there are
/// fewer commits (fsyncs) than writes, and every write is still there after reopening.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_commits_and_a_lone_write_commits_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteBackend::open(&path).unwrap();
    let commits = || {
        store
            .durable_commits()
            .expect("the sqlite store counts its commits")
    };

    let before = commits();
    for i in 0..20 {
        store.put(&format!("/seq/{i:02}"), vec![i]).await.unwrap();
    }
    assert_eq!(commits() - before, 20, "a lone write is one commit");

    const WRITERS: usize = 64;
    const EACH: usize = 20;
    let before = commits();
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            barrier.wait().await;
            for i in 0..EACH {
                store
                    .put(&format!("/group/{w:02}/{i:02}"), vec![1])
                    .await
                    .unwrap();
            }
        });
    }
    tasks.join_all().await;
    let group_commits = commits() - before;
    let writes = u64::try_from(WRITERS * EACH).unwrap();
    eprintln!("{writes} concurrent writes in {group_commits} commits");
    assert!(
        group_commits < writes,
        "{writes} concurrent writes took {group_commits} commits: none were grouped"
    );
    drop(store);

    let reopened = SqliteBackend::open(&path).unwrap();
    assert_eq!(
        reopened.range("/group/").await.unwrap().len(),
        WRITERS * EACH
    );
    assert_eq!(reopened.range("/seq/").await.unwrap().len(), 20);
}

/// Dropping the last handle closes the connections (the writer thread is waited for), so
/// SQLite checkpoints the WAL into the database file and removes it: after a clean stop the
/// file alone is the whole store, and a copy of it (a backup) holds every write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_store_leaves_the_whole_state_in_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = SqliteBackend::open(&path).unwrap();
    for i in 0..50u8 {
        store.put(&format!("/kept/{i:02}"), vec![i]).await.unwrap();
    }
    let clone = store.clone();
    drop(store);
    clone.put("/kept/last", vec![1]).await.unwrap();
    drop(clone);
    assert!(
        !dir.path().join("state.db-wal").exists(),
        "the WAL was checkpointed and removed when the store was dropped"
    );
    let backup = tempfile::tempdir().unwrap();
    std::fs::copy(&path, backup.path().join("state.db")).unwrap();
    let copy = SqliteBackend::open(&backup.path().join("state.db")).unwrap();
    assert_eq!(copy.range("/kept/").await.unwrap().len(), 51);
}
