//! Conformance cases for single keys: reads, `create`, `put`, `delete`, revisions and
//! values.

use std::sync::Arc;

use super::{assert_increasing, item, keys, ok};
use crate::{Backend, Op};

/// A missing key reads as `None`; an empty store has an empty range.
pub async fn get_missing(b: Arc<dyn Backend>) {
    assert_eq!(ok(b.get("/bots/nobody").await, "get"), None);
    assert!(ok(b.range("/bots/").await, "range").is_empty());
    assert!(ok(b.range("").await, "range").is_empty());
}

/// `create` stores the value at the returned revision, and a second `create` fails with
/// `AlreadyExists` leaving the first value.
pub async fn create_then_already_exists(b: Arc<dyn Backend>) {
    let r = ok(b.create("/bots/a", b"one".to_vec()).await, "create");
    assert_eq!(
        ok(b.get("/bots/a").await, "get"),
        Some(item("/bots/a", b"one", r))
    );
    assert_store_err!(
        b.create("/bots/a", b"two".to_vec()).await,
        AlreadyExists,
        "/bots/a"
    );
    assert_eq!(
        ok(b.get("/bots/a").await, "get"),
        Some(item("/bots/a", b"one", r))
    );
}

/// `put` creates, then overwrites at a higher revision.
pub async fn put_overwrite_bumps_revision(b: Arc<dyn Backend>) {
    let r1 = ok(b.put("/roles/r", b"1".to_vec()).await, "put");
    assert_eq!(
        ok(b.get("/roles/r").await, "get"),
        Some(item("/roles/r", b"1", r1))
    );
    let r2 = ok(b.put("/roles/r", b"2".to_vec()).await, "put");
    assert!(r2 > r1, "overwrite must bump the revision: {r1} then {r2}");
    assert_eq!(
        ok(b.get("/roles/r").await, "get"),
        Some(item("/roles/r", b"2", r2))
    );
}

/// Every kind of write, on any key, returns a revision above all earlier ones, and a key
/// deleted and created again does not get an old revision back.
pub async fn revisions_increase_across_keys(b: Arc<dyn Backend>) {
    let mut revs = vec![
        ok(b.put("/a", b"x".to_vec()).await, "put"),
        ok(b.create("/b", b"x".to_vec()).await, "create"),
        ok(b.put("/c", b"x".to_vec()).await, "put"),
    ];
    revs.push(ok(
        b.compare_and_swap("/a", revs[0], b"y".to_vec()).await,
        "cas",
    ));
    ok(b.delete("/b").await, "delete");
    revs.push(ok(b.create("/b", b"again".to_vec()).await, "create"));
    let c = ok(b.get("/c").await, "get").expect("/c exists");
    ok(
        b.compare_and_delete("/c", c.revision).await,
        "compare_and_delete",
    );
    revs.push(ok(b.put("/d", b"x".to_vec()).await, "put"));
    revs.push(ok(
        b.atomic_write(vec![Op::Put {
            key: "/e".into(),
            value: vec![],
        }])
        .await,
        "atomic_write",
    ));
    assert_increasing(&revs);
    assert_eq!(
        ok(b.get("/a").await, "get").map(|i| i.revision),
        Some(revs[3])
    );
    assert_eq!(
        ok(b.get("/b").await, "get").map(|i| i.revision),
        Some(revs[4])
    );
}

/// `delete` removes a key; `NotFound` when missing; the key can be created again.
pub async fn delete_semantics(b: Arc<dyn Backend>) {
    assert_store_err!(b.delete("/tokens/t").await, NotFound, "/tokens/t");
    ok(b.create("/tokens/t", b"x".to_vec()).await, "create");
    ok(b.create("/tokens/u", b"y".to_vec()).await, "create");
    ok(b.delete("/tokens/t").await, "delete");
    assert_eq!(ok(b.get("/tokens/t").await, "get"), None);
    assert_eq!(keys(&ok(b.range("/tokens/").await, "range")), ["/tokens/u"]);
    assert_store_err!(b.delete("/tokens/t").await, NotFound, "/tokens/t");
    ok(
        b.create("/tokens/t", b"z".to_vec()).await,
        "create after delete",
    );
    assert_eq!(
        ok(b.get("/tokens/t").await, "get").map(|i| i.value),
        Some(b"z".to_vec())
    );
}

/// Values are bytes: empty, every byte value, and a megabyte come back as written.
pub async fn values_round_trip(b: Arc<dyn Backend>) {
    let all_bytes: Vec<u8> = (0..=255).collect();
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    for (key, value) in [
        ("/v/empty", Vec::new()),
        ("/v/bytes", all_bytes),
        ("/v/big", big),
    ] {
        let r = ok(b.put(key, value.clone()).await, "put");
        assert_eq!(
            ok(b.get(key).await, "get"),
            Some(item(key, &value, r)),
            "{key}"
        );
    }
}
