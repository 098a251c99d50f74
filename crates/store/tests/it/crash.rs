//! Kill -9 durability: a child process (this test binary, re-executed with an environment
//! variable) writes keys in a loop and prints each one after its write returned; the parent
//! SIGKILLs it mid-burst, reopens the file and finds every printed key.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use machine_id_store::{Backend, Op, SqliteBackend};

/// Set in the child to the database path.
const CHILD_ENV: &str = "MACHINE_ID_STORE_CRASH_CHILD";

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
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
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
        // A line cut short by the kill has no newline: its write is not acknowledged.
        if let Some(key) = line
            .strip_prefix("committed ")
            .and_then(|l| l.strip_suffix('\n'))
        {
            committed.push(key.to_owned());
        }
        if !killed && committed.len() >= LINES_BEFORE_KILL {
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
