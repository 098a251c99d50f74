//! Conformance cases for concurrent callers: exactly one winner of every conditional race
//! (single-use token consumption included), distinct revisions, no lost updates.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::Barrier;
use tokio::task::JoinSet;

use super::{item, keys, ok};
use crate::{Backend, Op, Revision, StoreError, WatchEvent};

/// Tasks racing in the concurrency cases.
const RACERS: usize = 50;

/// Runs `RACERS` tasks that start together; returns their results in task order.
async fn race<T, F, Fut>(b: &Arc<dyn Backend>, op: F) -> Vec<Result<T, StoreError>>
where
    T: Send + Debug + 'static,
    F: Fn(Arc<dyn Backend>, usize) -> Fut,
    Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = JoinSet::new();
    for i in 0..RACERS {
        let barrier = Arc::clone(&barrier);
        let fut = op(Arc::clone(b), i);
        tasks.spawn(async move {
            barrier.wait().await;
            (i, fut.await)
        });
    }
    let mut results: Vec<_> = tasks.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The index of the only `Ok`, asserting every other result is one of `losers` on `key`.
#[track_caller]
fn single_winner<T: Debug>(results: &[Result<T, StoreError>], key: &str, losers: &[&str]) -> usize {
    let winners: Vec<usize> = (0..results.len()).filter(|&i| results[i].is_ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one of {RACERS} racers must win: {results:?}"
    );
    for r in results {
        match r {
            Ok(_) => {}
            Err(StoreError::Conflict { key: k }) if losers.contains(&"Conflict") && k == key => {}
            Err(StoreError::NotFound { key: k }) if losers.contains(&"NotFound") && k == key => {}
            Err(StoreError::AlreadyExists { key: k })
                if losers.contains(&"AlreadyExists") && k == key => {}
            Err(e) => panic!("a losing racer must fail with one of {losers:?} on {key}, got {e:?}"),
        }
    }
    winners[0]
}

/// `RACERS` tasks `compare_and_swap` one key from the same revision: exactly one wins, the
/// rest get `Conflict`, and the winner's value is stored.
pub async fn race_compare_and_swap(b: Arc<dyn Backend>) {
    let r0 = ok(b.create("/race/cas", b"start".to_vec()).await, "create");
    let results = race(&b, |b, i| async move {
        b.compare_and_swap("/race/cas", r0, format!("{i}").into_bytes())
            .await
    })
    .await;
    let winner = single_winner(&results, "/race/cas", &["Conflict"]);
    let Ok(r) = results[winner] else {
        unreachable!("single_winner returns an Ok")
    };
    assert_eq!(
        ok(b.get("/race/cas").await, "get"),
        Some(item("/race/cas", format!("{winner}").as_bytes(), r))
    );
}

/// `RACERS` tasks `compare_and_delete` one key from the same revision: exactly one wins.
pub async fn race_compare_and_delete(b: Arc<dyn Backend>) {
    let r0 = ok(b.create("/race/cad", b"x".to_vec()).await, "create");
    let results = race(&b, |b, _| async move {
        b.compare_and_delete("/race/cad", r0).await
    })
    .await;
    single_winner(&results, "/race/cad", &["NotFound", "Conflict"]);
    assert_eq!(ok(b.get("/race/cad").await, "get"), None);
}

/// `RACERS` tasks `create` one key: exactly one wins, the rest get `AlreadyExists`.
pub async fn race_create(b: Arc<dyn Backend>) {
    let results = race(&b, |b, i| async move {
        b.create("/race/create", format!("{i}").into_bytes()).await
    })
    .await;
    let winner = single_winner(&results, "/race/create", &["AlreadyExists"]);
    assert_eq!(
        ok(b.get("/race/create").await, "get").map(|i| i.value),
        Some(format!("{winner}").into_bytes())
    );
}

/// Single-use token consumption: `RACERS` tasks each try to delete the token (at the revision
/// they read) and create their own bot in one `atomic_write`; exactly one bot exists after.
pub async fn race_single_use_consumption(b: Arc<dyn Backend>) {
    let r0 = ok(b.create("/tokens/once", b"token".to_vec()).await, "create");
    let results = race(&b, |b, i| async move {
        b.atomic_write(vec![
            Op::CompareAndDelete {
                key: "/tokens/once".into(),
                revision: r0,
            },
            Op::Create {
                key: format!("/bots/bot-{i:02}"),
                value: vec![],
            },
        ])
        .await
    })
    .await;
    let winner = single_winner(&results, "/tokens/once", &["NotFound", "Conflict"]);
    assert_eq!(
        keys(&ok(b.range("/bots/").await, "range")),
        [format!("/bots/bot-{winner:02}")]
    );
    assert_eq!(ok(b.get("/tokens/once").await, "get"), None);
}

/// Concurrent writes to different keys all succeed with distinct revisions.
pub async fn concurrent_writes_get_distinct_revisions(b: Arc<dyn Backend>) {
    let results = race(&b, |b, i| async move {
        b.put(&format!("/many/{i:02}"), vec![]).await
    })
    .await;
    let mut revs: Vec<Revision> = results
        .into_iter()
        .map(|r| ok(r, "concurrent put"))
        .collect();
    let items = ok(b.range("/many/").await, "range");
    assert_eq!(items.len(), RACERS);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(
            item.revision, revs[i],
            "{} has the revision its put returned",
            item.key
        );
    }
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), RACERS, "revisions must be distinct");
}

/// Racing puts and atomic writes to ONE key: the key ends with the highest revision any of
/// them returned (per key, a later commit never carries a lower revision, which caches that
/// keep the newest revision of each key rely on), and a watcher's last event for it agrees.
pub async fn racing_puts_to_one_key_leave_the_highest_revision(b: Arc<dyn Backend>) {
    let mut watcher = ok(b.watch("/one/").await, "watch");
    let mut tasks = JoinSet::new();
    for t in 0..8 {
        let b = b.clone();
        tasks.spawn(async move {
            let mut revs = Vec::new();
            for i in 0..15 {
                let value = format!("{t}-{i}").into_bytes();
                let r = if i % 3 == 0 {
                    b.atomic_write(vec![Op::Put {
                        key: "/one/k".into(),
                        value,
                    }])
                    .await
                } else {
                    b.put("/one/k", value).await
                };
                revs.push(ok(r, "racing put"));
            }
            revs
        });
    }
    let highest = tasks
        .join_all()
        .await
        .into_iter()
        .flatten()
        .max()
        .unwrap_or_default();
    let item = ok(b.get("/one/k").await, "get").unwrap_or_else(|| panic!("/one/k is missing"));
    assert_eq!(
        item.revision, highest,
        "the key holds the highest revision a write to it returned"
    );
    let mut last = None;
    while let Ok(Some(event)) =
        tokio::time::timeout(std::time::Duration::from_secs(2), watcher.recv()).await
    {
        if let WatchEvent::Put(i) = event {
            last = Some(i.revision);
            if i.revision == highest {
                break;
            }
        }
    }
    assert_eq!(
        last,
        Some(highest),
        "the watcher's last event is the newest write"
    );
}

/// 20 tasks each increment a counter 10 times with read / compare-and-swap / retry loops; the
/// counter ends at exactly 200 (no lost updates).
pub async fn counter_with_retry_loops(b: Arc<dyn Backend>) {
    const TASKS: usize = 20;
    const INCREMENTS: usize = 10;
    ok(b.create("/counter", b"0".to_vec()).await, "create");
    let mut tasks = JoinSet::new();
    for _ in 0..TASKS {
        let b = Arc::clone(&b);
        tasks.spawn(async move {
            let mut revisions = Vec::new();
            for _ in 0..INCREMENTS {
                loop {
                    let current = ok(b.get("/counter").await, "get").expect("the counter exists");
                    let n: usize = std::str::from_utf8(&current.value)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .expect("the counter holds a number");
                    let next = (n + 1).to_string().into_bytes();
                    match b.compare_and_swap("/counter", current.revision, next).await {
                        Ok(r) => {
                            revisions.push(r);
                            break;
                        }
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("cas: {e}"),
                    }
                }
            }
            revisions
        });
    }
    let mut revisions: Vec<Revision> = tasks.join_all().await.into_iter().flatten().collect();
    let counter = ok(b.get("/counter").await, "get").expect("the counter exists");
    assert_eq!(counter.value, (TASKS * INCREMENTS).to_string().into_bytes());
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(
        revisions.len(),
        TASKS * INCREMENTS,
        "every increment has its own revision"
    );
    assert_eq!(revisions.last(), Some(&counter.revision));
}
