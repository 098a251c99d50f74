//! Kill -9 durability: a child process (this test binary, re-executed with an environment
//! variable) writes keys in a loop and prints each one after its write returned; the parent
//! SIGKILLs it mid-burst, reopens the file and finds every printed key. The second pair does
//! the same with many concurrent writers, each write an item and its audit event together
//! ([`Backend::write_with_events`]), which the store commits in groups: a write that returned
//! from a group is on disk, item and event, the moment it returns.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use machine_id_store::{Backend, EventQuery, Op, SqliteBackend, StoredEvent};

/// Set in the child to the database path.
const CHILD_ENV: &str = "MACHINE_ID_STORE_CRASH_CHILD";
/// Set in the concurrent child to the database path.
const GROUP_CHILD_ENV: &str = "MACHINE_ID_STORE_GROUP_CRASH_CHILD";

/// Lines the parent waits for before killing the child.
const LINES_BEFORE_KILL: usize = 200;

/// The child's side: does nothing in a normal test run.
#[tokio::test]
async fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = SqliteBackend::open(path.as_ref()).unwrap();
    // Writing to `std::io::stdout()` directly bypasses the test harness's output capture.
    let mut out = std::io::stdout();
    for i in 0..1_000_000u32 {
        let keys = match i % 3 {
            0 => {
                let key = format!("/crash/put-{i:07}");
                store.put(&key, key.clone().into_bytes()).await.unwrap();
                vec![key]
            }
            1 => {
                let key = format!("/crash/create-{i:07}");
                store.create(&key, key.clone().into_bytes()).await.unwrap();
                vec![key]
            }
            _ => {
                let keys = vec![
                    format!("/crash/batch-{i:07}-a"),
                    format!("/crash/batch-{i:07}-b"),
                ];
                let ops = keys
                    .iter()
                    .map(|k| Op::Put {
                        key: k.clone(),
                        value: k.clone().into_bytes(),
                    })
                    .collect();
                store.atomic_write(ops).await.unwrap();
                keys
            }
        };
        for key in keys {
            writeln!(out, "committed {key}").unwrap();
        }
        out.flush().unwrap();
    }
}

#[tokio::test]
async fn every_acknowledged_write_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let committed =
        run_child_until_killed("crash::crash_child", CHILD_ENV, &path, LINES_BEFORE_KILL);
    eprintln!(
        "{} keys acknowledged before the kill took effect",
        committed.len()
    );

    let store = SqliteBackend::open(&path).unwrap();
    for key in &committed {
        let item = store.get(key).await.unwrap();
        assert_eq!(
            item.map(|i| i.value),
            Some(key.clone().into_bytes()),
            "{key} was acknowledged before the kill but is missing"
        );
    }
    // The store still works after recovery.
    store.put("/crash/after", vec![]).await.unwrap();
    let total = store.range("/crash/").await.unwrap().len();
    assert!(
        total > committed.len(),
        "{total} items, {} acknowledged",
        committed.len()
    );
}

/// Concurrent writers in the child.
const GROUP_WRITERS: usize = 32;

/// The concurrent child: `GROUP_WRITERS` tasks each write an item and its event together, and
/// print the key once the write returned.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_crash_child() {
    let Some(path) = std::env::var_os(GROUP_CHILD_ENV) else {
        return;
    };
    let store = SqliteBackend::open(path.as_ref()).unwrap();
    let out = std::sync::Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..GROUP_WRITERS {
        let store = store.clone();
        let out = std::sync::Arc::clone(&out);
        tasks.spawn(async move {
            for i in 0..1_000_000u32 {
                let key = format!("/group/{w:02}-{i:07}");
                store
                    .write_with_events(
                        vec![Op::Create {
                            key: key.clone(),
                            value: key.clone().into_bytes(),
                        }],
                        vec![StoredEvent {
                            time_nanos: i64::from(i),
                            id: key.clone(),
                            event_type: "crash.group".into(),
                            data: key.clone().into_bytes(),
                        }],
                    )
                    .await
                    .unwrap();
                let mut out = out.lock().unwrap();
                writeln!(out, "committed {key}").unwrap();
                out.flush().unwrap();
            }
        });
    }
    tasks.join_all().await;
}

#[tokio::test]
async fn writes_committed_in_one_group_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // SIGKILL with the other writers mid-group.
    let committed = run_child_until_killed(
        "crash::group_crash_child",
        GROUP_CHILD_ENV,
        &path,
        10 * LINES_BEFORE_KILL,
    );

    let store = SqliteBackend::open(&path).unwrap();
    let commits_needed = store.durable_commits();
    let events: std::collections::HashSet<String> = store
        .search_events(&EventQuery {
            limit: usize::MAX,
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    for key in &committed {
        let item = store.get(key).await.unwrap();
        assert_eq!(
            item.map(|i| i.value),
            Some(key.clone().into_bytes()),
            "{key} was acknowledged before the kill but is missing"
        );
        assert!(
            events.contains(key),
            "the event of {key} was acknowledged with it but is missing"
        );
    }
    // Item and event are one write: none is stored without the other.
    let items = store.range("/group/").await.unwrap();
    assert_eq!(items.len(), events.len(), "items and events in step");
    eprintln!(
        "{} writes acknowledged before the kill, {} stored ({commits_needed:?} commits since reopen)",
        committed.len(),
        items.len()
    );
}

/// Runs this binary's test `test` as a child with `env` set to `path`, reads the keys it
/// prints after each acknowledged write, SIGKILLs it once `kill_after` were read, and returns
/// every key acknowledged before the kill took effect (a line cut short by the kill has no
/// newline: its write is not acknowledged).
fn run_child_until_killed(
    test: &str,
    env: &str,
    path: &std::path::Path,
    kill_after: usize,
) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(env, path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut committed = Vec::new();
    let mut line = String::new();
    let mut killed = false;
    loop {
        line.clear();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(key) = line
            .strip_prefix("committed ")
            .and_then(|l| l.strip_suffix('\n'))
        {
            committed.push(key.to_owned());
        }
        if !killed && committed.len() >= kill_after {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "the child exited ({status}) after only {} writes",
        committed.len()
    );
    committed
}
