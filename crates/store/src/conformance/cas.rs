//! Conformance cases for the conditional writes on one key: `compare_and_swap` and
//! `compare_and_delete`.

use std::sync::Arc;

use super::{item, ok};
use crate::Backend;

/// `compare_and_swap` succeeds at the current revision only: `Conflict` when stale (value
/// left alone), `NotFound` when missing.
pub async fn compare_and_swap_semantics(b: Arc<dyn Backend>) {
    let r1 = ok(b.create("/gen/bot", b"1".to_vec()).await, "create");
    let r2 = ok(
        b.compare_and_swap("/gen/bot", r1, b"2".to_vec()).await,
        "cas",
    );
    assert!(r2 > r1);
    assert_eq!(
        ok(b.get("/gen/bot").await, "get"),
        Some(item("/gen/bot", b"2", r2))
    );
    assert_store_err!(
        b.compare_and_swap("/gen/bot", r1, b"3".to_vec()).await,
        Conflict,
        "/gen/bot"
    );
    assert_store_err!(
        b.compare_and_swap("/gen/bot", r2 + 1000, b"3".to_vec())
            .await,
        Conflict,
        "/gen/bot"
    );
    assert_eq!(
        ok(b.get("/gen/bot").await, "get"),
        Some(item("/gen/bot", b"2", r2))
    );
    assert_store_err!(
        b.compare_and_swap("/gen/none", r2, b"x".to_vec()).await,
        NotFound,
        "/gen/none"
    );
    assert_eq!(ok(b.get("/gen/none").await, "get"), None);
}

/// `compare_and_delete` deletes at the current revision only: `Conflict` when stale (key
/// kept), `NotFound` when missing.
pub async fn compare_and_delete_semantics(b: Arc<dyn Backend>) {
    let r1 = ok(b.create("/tokens/t", b"1".to_vec()).await, "create");
    let r2 = ok(b.put("/tokens/t", b"2".to_vec()).await, "put");
    assert_store_err!(
        b.compare_and_delete("/tokens/t", r1).await,
        Conflict,
        "/tokens/t"
    );
    assert_eq!(
        ok(b.get("/tokens/t").await, "get"),
        Some(item("/tokens/t", b"2", r2))
    );
    ok(
        b.compare_and_delete("/tokens/t", r2).await,
        "compare_and_delete",
    );
    assert_eq!(ok(b.get("/tokens/t").await, "get"), None);
    assert_store_err!(
        b.compare_and_delete("/tokens/t", r2).await,
        NotFound,
        "/tokens/t"
    );
}
