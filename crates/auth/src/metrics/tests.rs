#![allow(clippy::unwrap_used)] // tests

use machine_id_diag::prometheus::parse;
use machine_id_store::{SqliteBackend, StoreError};
use tonic::Code;

use super::*;
use crate::cache::FeedHealth;

fn index(method: &str) -> usize {
    grpc::METHODS
        .iter()
        .position(|(_, m)| *m == method)
        .unwrap()
}

#[test]
fn calls_count_into_requests_joins_renewals_and_refusals() {
    let m = Metrics::new();
    let join = index("RegisterUsingToken");
    let renew = index("GenerateUserCerts");
    m.record_call(join, Code::Ok, 0);
    m.record_call(join, Code::PermissionDenied, 0);
    m.record_call(index("RegisterUsingIAMMethod"), Code::Unavailable, 0);
    m.record_call(renew, Code::Ok, Flag::Renewal as u8);
    m.record_call(
        renew,
        Code::PermissionDenied,
        Flag::Renewal as u8 | Flag::Locked as u8,
    );
    // Impersonation: not a renewal.
    m.record_call(renew, Code::Ok, 0);
    m.record_call(index("ListRoles"), Code::Unauthenticated, 0);
    m.record_call(grpc::METHODS.len(), Code::Unimplemented, 0);

    let s = parse(&m.render(&FeedHealth::default(), Some(7))).unwrap();
    let v = |name: &str, labels: &[(&str, &str)]| s.value(name, labels).unwrap_or(-1.0);
    let req = |service: &str, method: &str, code: &str| {
        v(
            "auth_server_grpc_requests_total",
            &[("service", service), ("method", method), ("code", code)],
        )
    };
    assert_eq!(v("auth_server_store_commits_total", &[]), 7.0);
    assert!(
        parse(&m.render(&FeedHealth::default(), None))
            .unwrap()
            .family("auth_server_store_commits_total")
            .is_none(),
        "a store that does not count commits shows none"
    );
    assert_eq!(req("JoinService", "RegisterUsingToken", "OK"), 1.0);
    assert_eq!(
        req("JoinService", "RegisterUsingToken", "PermissionDenied"),
        1.0
    );
    assert_eq!(req("AuthService", "GenerateUserCerts", "OK"), 2.0);
    assert_eq!(req("unknown", "unknown", "Unimplemented"), 1.0);
    assert_eq!(
        s.family("auth_server_grpc_requests_total")
            .unwrap()
            .samples
            .len(),
        7,
        "only pairs seen are listed"
    );
    let joins = |method: &str, result: &str| {
        v(
            "auth_server_joins_total",
            &[("method", method), ("result", result)],
        )
    };
    assert_eq!(joins("token", "ok"), 1.0);
    assert_eq!(joins("token", "denied"), 1.0);
    assert_eq!(joins("token", "failed"), 0.0);
    assert_eq!(joins("iam", "failed"), 1.0);
    assert_eq!(v("auth_server_renewals_total", &[("result", "ok")]), 1.0);
    assert_eq!(
        v("auth_server_renewals_total", &[("result", "denied")]),
        1.0
    );
    let refusals = |reason: &str| v("auth_server_refusals_total", &[("reason", reason)]);
    assert_eq!(refusals("locked"), 1.0);
    assert_eq!(refusals("permission_denied"), 1.0);
    assert_eq!(refusals("unauthenticated"), 1.0);
    assert!(v("process_start_time_seconds", &[]) > 1.7e9);
}

#[tokio::test]
async fn the_instrumented_backend_times_every_call_and_counts_failures() {
    let m = Metrics::new();
    let store = InstrumentedBackend::wrap(
        Arc::new(SqliteBackend::open_in_memory().unwrap()),
        m.clone(),
    );
    let rev = store.create("/a/1", b"x".to_vec()).await.unwrap();
    assert!(store.get("/a/1").await.unwrap().is_some());
    assert!(store.get("/a/2").await.unwrap().is_none());
    // A conflict is an outcome, not a failure.
    assert!(matches!(
        store
            .compare_and_swap("/a/1", rev + 10, b"y".to_vec())
            .await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(store.range("/a/").await.unwrap().len(), 1);

    let s = parse(&m.render(&FeedHealth::default(), Some(7))).unwrap();
    let count = |op: &str| {
        s.value(
            "auth_server_store_operation_duration_seconds_count",
            &[("op", op)],
        )
        .unwrap()
    };
    assert_eq!(count("get"), 2.0);
    assert_eq!(count("create"), 1.0);
    assert_eq!(count("compare_and_swap"), 1.0);
    assert_eq!(count("range"), 1.0);
    assert_eq!(count("put"), 0.0);
    assert_eq!(
        s.value(
            "auth_server_store_failures_total",
            &[("op", "compare_and_swap")]
        ),
        Some(0.0)
    );
    assert!(format!("{store:?}").contains("SqliteBackend"));
}
