//! Several auth servers on one PostgreSQL database (a real server the tests start): the
//! cluster is created once, every server answers for every bot, a lock or a renewal made
//! through one is in force on the other, and `backend clone` moves a cluster with its bots.
//! The end-to-end suite `ha` does the same with real processes, tbot, kill -9 and a database
//! restart.

use std::time::{Duration, Instant};

use machine_id_auth::offline::{StoreTarget, clone_cluster};
use machine_id_auth::{AuthError, StorageConfig};
use machine_id_proto::v1;
use machine_id_store::pg_test::TempPostgres;
use tonic::Code;

use crate::support::*;

/// The storage of a fresh database on the test binary's PostgreSQL server; `None` when
/// PostgreSQL is missing and skipping is allowed.
fn fresh_database() -> Option<StorageConfig> {
    let pg = TempPostgres::shared()?;
    Some(StorageConfig::Postgres {
        conn_string: pg.create_fresh_database().parse().unwrap(),
    })
}

async fn pair(storage: &StorageConfig) -> (TestServer, TestServer) {
    let a = TestServer::start_on(storage.clone()).await;
    let b = TestServer::start_on(storage.clone()).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_starting_at_once_create_the_cluster_exactly_once() {
    let Some(storage) = fresh_database() else {
        return;
    };
    let (a, b) = tokio::join!(
        TestServer::start_on(storage.clone()),
        TestServer::start_on(storage.clone())
    );
    let created = [a.server().first_start(), b.server().first_start()];
    assert_eq!(
        created.iter().filter(|c| **c).count(),
        1,
        "exactly one start creates the cluster: {created:?}"
    );
    assert_eq!(a.server().ca_pins(), b.server().ca_pins());
    // Each server's admin identity works on the other.
    let roles = b
        .admin()
        .await
        .list_roles(v1::ListRequest {})
        .await
        .unwrap();
    assert!(!roles.into_inner().roles.is_empty());
    assert!(a.server().feed_health().is_up() && b.server().feed_health().is_up());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_on_one_server_then_a_replay_on_the_other_locks_the_bot() {
    let Some(storage) = fresh_database() else {
        return;
    };
    let (a, b) = pair(&storage).await;
    let token = a.add_bot("robot", &["access"], &[]).await;
    let gen1 = b.join(&token).await.unwrap();
    // Renewals alternate between the servers: each sees the other's generation.
    let gen2 = generate(&mut a.client(&gen1).await, &[], 0).await.unwrap();
    let gen3 = generate(&mut b.client(&gen2).await, &[], 0).await.unwrap();
    assert_eq!(gen3.identity().generation, 3);
    let msg = assert_code(
        generate(&mut b.client(&gen2).await, &[], 0).await,
        Code::PermissionDenied,
        "stolen",
    );
    assert!(msg.contains("locked"), "{msg}");
    // One event, in the shared log, seen from either server.
    assert_eq!(
        events(&mut a.admin().await, "cert.generation_mismatch")
            .await
            .len(),
        1
    );
    assert_eq!(
        events(&mut b.admin().await, "cert.generation_mismatch")
            .await
            .len(),
        1
    );
    // The lock reaches A through the change feed within a second (docs/ha.md); polled with a
    // call that changes nothing, so that a renewal cannot slip through before it arrives.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let r = a.client(&gen3).await.list_nodes(v1::ListRequest {}).await;
        match r {
            Err(e) if e.code() == Code::PermissionDenied => break,
            _ if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => panic!("A did not refuse the locked bot within 1 s: {other:?}"),
        }
    }
    // The lock holds on both servers, for the newest certificate too.
    for ts in [&a, &b] {
        assert_code(
            generate(&mut ts.client(&gen3).await, &[], 0).await,
            Code::PermissionDenied,
            "locked",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_made_on_one_server_refuses_the_bot_on_the_other_within_a_second() {
    let Some(storage) = fresh_database() else {
        return;
    };
    let (a, b) = pair(&storage).await;
    let token = a.add_bot("robot", &["access"], &[]).await;
    let id = a.join(&token).await.unwrap();
    let mut on_b = b.client(&id).await;
    on_b.list_nodes(v1::ListRequest {}).await.unwrap();

    lock(&a, "stop-robot", Some("bot-robot"), None, "compromised").await;
    let locked_at = Instant::now();
    loop {
        match on_b.list_nodes(v1::ListRequest {}).await {
            Err(e) if e.code() == Code::PermissionDenied => {
                assert!(e.message().contains("stop-robot"), "{e:?}");
                break;
            }
            r => {
                assert!(
                    locked_at.elapsed() < Duration::from_secs(1),
                    "server B still answers the locked bot 1 s after the lock was made on A: {r:?}"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    // And its removal on B lets the bot in on A.
    b.admin()
        .await
        .delete_lock(v1::GetByNameRequest {
            name: "stop-robot".into(),
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut on_a = a.client(&id).await;
    while on_a.list_nodes(v1::ListRequest {}).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "A still refuses after the unlock on B"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_joins_with_one_token_over_both_servers_admit_exactly_one_bot() {
    let Some(storage) = fresh_database() else {
        return;
    };
    let (a, b) = pair(&storage).await;
    let token = a.add_bot("robot", &["access"], &[]).await;
    let mut joins = tokio::task::JoinSet::new();
    for i in 0..40 {
        let (_, mut join) = if i % 2 == 0 {
            a.anonymous().await
        } else {
            b.anonymous().await
        };
        let token = token.clone();
        joins.spawn(async move { join_with(&mut join, &token).await.is_ok() });
    }
    let admitted = joins.join_all().await.into_iter().filter(|ok| *ok).count();
    assert_eq!(
        admitted, 1,
        "a single-use token admits one join across servers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_another_cluster_or_out_of_reach_stops_startup_with_one_line() {
    let Some(storage) = fresh_database() else {
        return;
    };
    let _a = TestServer::start_on(storage.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(machine_id_types::FakeClock::new(
        time::OffsetDateTime::now_utc(),
    ));
    let Err(e) = start_with(dir.path(), clock.clone(), "other.example.com", storage).await else {
        panic!("another cluster's database is refused");
    };
    assert!(matches!(e, AuthError::ClusterNameMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("PostgreSQL database") && msg.contains(CLUSTER),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");

    let unreachable = StorageConfig::Postgres {
        conn_string: "postgresql://machine_id:s3cret@127.0.0.1:1/machine_id"
            .parse()
            .unwrap(),
    };
    let Err(e) = start_with(dir.path(), clock, CLUSTER, unreachable).await else {
        panic!("an unreachable database is refused");
    };
    let msg = e.to_string();
    assert!(matches!(e, AuthError::StorageOpen { .. }), "{msg}");
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(!msg.contains("s3cret"), "the password never shows: {msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_clone_moves_a_cluster_from_sqlite_to_postgresql_and_bots_keep_renewing() {
    let Some(pg) = fresh_database() else {
        return;
    };
    let mut old = TestServer::start().await;
    let token = old.add_bot("robot", &["access"], &[]).await;
    let gen1 = old.join(&token).await.unwrap();
    let gen2 = generate(&mut old.client(&gen1).await, &[], 0)
        .await
        .unwrap();
    let pins = old.server().ca_pins().to_vec();
    let from = StoreTarget {
        data_dir: old.data_dir(),
        storage: StorageConfig::Sqlite,
    };
    let new_dir = tempfile::tempdir().unwrap();
    let to = StoreTarget {
        data_dir: new_dir.path().join("data"),
        storage: pg.clone(),
    };
    // Refused while the server runs on the source.
    let e = clone_cluster(&from, &to).await.unwrap_err();
    assert!(matches!(e, AuthError::DataDirInUse { .. }), "{e}");
    old.stop().await;
    let report = clone_cluster(&from, &to).await.unwrap();
    assert_eq!(report.cluster_name, CLUSTER);
    assert_eq!(report.keys.get("users"), Some(&1));
    assert!(report.events >= 3, "{report:?}");
    // Into a store that is not empty: refused, nothing changed.
    let e = clone_cluster(&from, &to).await.unwrap_err();
    assert!(e.to_string().contains("not empty"), "{e}");

    let new = TestServer::start_on(pg).await;
    assert!(!new.server().first_start());
    assert_eq!(new.server().ca_pins(), &pins[..]);
    let gen3 = generate(&mut new.client(&gen2).await, &[], 0)
        .await
        .unwrap();
    assert_eq!(gen3.identity().generation, 3);
    // The audit log came along: the join and the renewals of the old server are there.
    let creates = events(&mut new.admin().await, "cert.create").await;
    assert_eq!(creates.len(), 2, "{creates:?}");
}
