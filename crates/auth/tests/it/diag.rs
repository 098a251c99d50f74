//! The diagnostics listener over real HTTP: `/healthz`, `/readyz`, and `/metrics` counting
//! exactly the calls made, in text a strict Prometheus parser accepts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use machine_id_auth::{AuthConfig, AuthServer};
use machine_id_diag::prometheus::{Scrape, parse};
use machine_id_proto::v1;
use machine_id_types::FakeClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::support::*;

/// `GET path` over a fresh connection: the status and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: diag\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    parse(&body).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{body}"))
}

/// Every sample of `family` as `labels -> value`.
fn samples(s: &Scrape, family: &str) -> BTreeMap<Vec<(String, String)>, f64> {
    s.family(family)
        .unwrap_or_else(|| panic!("no family {family}"))
        .samples
        .iter()
        .map(|x| {
            let mut l = x.labels.clone();
            l.sort();
            (l, x.value)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut l: Vec<_> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    l
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_the_calls_made() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuthConfig::new(
        dir.path().join("data"),
        CLUSTER,
        "127.0.0.1:0".parse().unwrap(),
    );
    let clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
    config.clock = clock.clone();
    config.diag_addr = Some("127.0.0.1:0".into());
    let ts = TestServer {
        server: Some(AuthServer::start(config).await.unwrap()),
        dir,
        clock,
    };
    let diag = ts.server().diag_addr().expect("a diag address");

    assert_eq!(http_get(diag, "/healthz").await, (200, "ok\n".into()));
    assert_eq!(http_get(diag, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(http_get(diag, "/nope").await.0, 404);
    let before = scrape(diag).await;
    assert!(
        samples(&before, "auth_server_grpc_requests_total").is_empty(),
        "no call was made yet"
    );
    assert_eq!(before.value("auth_server_feed_up", &[]), Some(1.0));

    // A join, a renewal, a refused join, an anonymous call, and a locked bot's renewal.
    let token = ts.add_bot("robot", &["access"], &[]).await; // connection 1
    let bot = ts.join(&token).await.unwrap(); // 2
    let mut client = ts.client(&bot).await; // 3
    let renewed = generate(&mut client, &[], 0).await.unwrap();
    assert_eq!(renewed.identity().generation, 2);
    assert_code(ts.join(&token).await, Code::PermissionDenied, ""); // 4: used up
    let (mut anonymous, _) = ts.anonymous().await; // 5
    assert_code(
        anonymous.list_roles(v1::ListRequest {}).await,
        Code::Unauthenticated,
        "client certificate",
    );
    ts.admin() // 6
        .await
        .lock_bot(v1::LockBotRequest {
            name: "robot".into(),
            message: "testing metrics".into(),
            ttl_seconds: 3600,
        })
        .await
        .unwrap();
    let mut current = ts.client(&renewed).await; // 7
    assert_code(
        generate(&mut current, &[], 0).await,
        Code::PermissionDenied,
        "testing metrics",
    );

    let after = scrape(diag).await;
    let expected: BTreeMap<_, _> = [
        ("AuthService", "CreateBot", "OK"),
        ("JoinService", "RegisterUsingToken", "OK"),
        ("AuthService", "GenerateUserCerts", "OK"),
        ("JoinService", "RegisterUsingToken", "PermissionDenied"),
        ("AuthService", "ListRoles", "Unauthenticated"),
        ("AuthService", "LockBot", "OK"),
        ("AuthService", "GenerateUserCerts", "PermissionDenied"),
    ]
    .into_iter()
    .map(|(s, m, c)| (labels(&[("service", s), ("method", m), ("code", c)]), 1.0))
    .collect();
    assert_eq!(samples(&after, "auth_server_grpc_requests_total"), expected);

    let joins = samples(&after, "auth_server_joins_total");
    assert_eq!(
        joins[&labels(&[("method", "token"), ("result", "ok")])],
        1.0
    );
    assert_eq!(
        joins[&labels(&[("method", "token"), ("result", "denied")])],
        1.0
    );
    assert_eq!(joins.values().sum::<f64>(), 2.0, "{joins:?}");
    let renewals = samples(&after, "auth_server_renewals_total");
    assert_eq!(renewals[&labels(&[("result", "ok")])], 1.0);
    assert_eq!(renewals[&labels(&[("result", "denied")])], 1.0);
    assert_eq!(renewals.values().sum::<f64>(), 2.0, "{renewals:?}");
    let refusals = samples(&after, "auth_server_refusals_total");
    assert_eq!(refusals[&labels(&[("reason", "locked")])], 1.0);
    assert_eq!(refusals[&labels(&[("reason", "permission_denied")])], 1.0);
    assert_eq!(refusals[&labels(&[("reason", "unauthenticated")])], 1.0);
    assert_eq!(
        after.value("auth_server_connections_accepted_total", &[]),
        Some(7.0)
    );

    // The store was timed: more gets than before (the renewal read the bot's user), and the
    // renewal's one write (its compare-and-swap and its audit event together); the buckets
    // add up (the parser checked them).
    let count = |s: &Scrape, op: &str| {
        s.value(
            "auth_server_store_operation_duration_seconds_count",
            &[("op", op)],
        )
        .unwrap()
    };
    assert!(count(&after, "get") > count(&before, "get"));
    assert!(count(&after, "write_with_events") > count(&before, "write_with_events"));
    assert!(
        after
            .value(
                "auth_server_store_operation_duration_seconds_bucket",
                &[("op", "get"), ("le", "+Inf")]
            )
            .unwrap()
            > 0.0
    );
    assert_eq!(
        after.value("process_start_time_seconds", &[]),
        before.value("process_start_time_seconds", &[])
    );

    // The listener goes with the server.
    let mut ts = ts;
    ts.stop().await;
    assert!(tokio::net::TcpStream::connect(diag).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_taken_diag_address_stops_startup_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuthConfig::new(
        dir.path().join("data"),
        CLUSTER,
        "127.0.0.1:0".parse().unwrap(),
    );
    config.diag_addr = Some("localhost".into());
    let e = AuthServer::start(config.clone())
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "configuration: auth_service.diag_addr: \"localhost\" is not host:port; use e.g. 127.0.0.1:3000"
    );

    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    config.diag_addr = Some(taken.clone());
    let e = AuthServer::start(config.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "diagnostics listener (--diag-addr): cannot listen on {taken}: "
        )),
        "{e}"
    );
    // Nothing was left holding the data directory.
    config.diag_addr = None;
    AuthServer::start(config)
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
}

/// Polls `/readyz` until `f` holds for its answer; panics after `HANG`.
async fn readyz_until(diag: SocketAddr, what: &str, f: impl Fn(u16, &str) -> bool) -> String {
    const HANG: std::time::Duration = std::time::Duration::from_secs(120);
    let start = std::time::Instant::now();
    loop {
        let (status, body) = http_get(diag, "/readyz").await;
        if f(status, &body) {
            return body;
        }
        assert!(
            start.elapsed() < HANG,
            "timed out waiting for {what}; last: {status} {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_a_postgresql_store_and_its_feed_down_and_up() {
    // A server of its own, stopped and started by this test.
    let Some(pg) = machine_id_store::pg_test::TempPostgres::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = AuthConfig::new(
        dir.path().join("data"),
        CLUSTER,
        "127.0.0.1:0".parse().unwrap(),
    );
    config.storage = machine_id_auth::StorageConfig::Postgres {
        conn_string: pg.create_fresh_database().parse().unwrap(),
    };
    config.diag_addr = Some("127.0.0.1:0".into());
    let server = AuthServer::start(config).await.unwrap();
    let diag = server.diag_addr().unwrap();
    readyz_until(diag, "ready after start", |s, _| s == 200).await;
    assert_eq!(
        scrape(diag).await.value("auth_server_feed_up", &[]),
        Some(1.0)
    );

    pg.stop();
    let body = readyz_until(diag, "the feed to go down", |s, b| {
        s == 503 && b.contains("feed: down")
    })
    .await;
    assert!(body.starts_with("not ready: store: "), "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    assert_eq!(http_get(diag, "/healthz").await.0, 200);
    let down = scrape(diag).await;
    assert_eq!(down.value("auth_server_feed_up", &[]), Some(0.0));
    assert!(down.value("auth_server_feed_losses_total", &[]).unwrap() >= 1.0);

    pg.start_again();
    readyz_until(diag, "ready again", |s, _| s == 200).await;
    assert_eq!(
        scrape(diag).await.value("auth_server_feed_up", &[]),
        Some(1.0)
    );
    server.shutdown().await.unwrap();
}
