//! Conformance cases for `atomic_write`: all ops or none, at one revision.

use std::sync::Arc;

use super::{item, ok};
use crate::{Backend, Op};

/// Every op of a successful `atomic_write` applies, at the one revision it returns.
pub async fn atomic_write_applies_all_at_one_revision(b: Arc<dyn Backend>) {
    let ra = ok(b.create("/w/a", b"a0".to_vec()).await, "create");
    ok(b.create("/w/d", b"d".to_vec()).await, "create");
    let re = ok(b.create("/w/e", b"e".to_vec()).await, "create");
    let r = ok(
        b.atomic_write(vec![
            Op::Create {
                key: "/w/b".into(),
                value: b"b".to_vec(),
            },
            Op::Put {
                key: "/w/c".into(),
                value: b"c".to_vec(),
            },
            Op::CompareAndSwap {
                key: "/w/a".into(),
                revision: ra,
                value: b"a1".to_vec(),
            },
            Op::Delete { key: "/w/d".into() },
            Op::CompareAndDelete {
                key: "/w/e".into(),
                revision: re,
            },
        ])
        .await,
        "atomic_write",
    );
    assert!(r > re);
    assert_eq!(
        ok(b.range("/w/").await, "range"),
        [
            item("/w/a", b"a1", r),
            item("/w/b", b"b", r),
            item("/w/c", b"c", r)
        ]
    );
}

/// A failing op in the middle of an `atomic_write` leaves nothing applied, including earlier
/// ops on the same key, and the error names the failing op's key.
pub async fn atomic_write_all_or_nothing(b: Arc<dyn Backend>) {
    let r = ok(b.create("/x/exists", b"kept".to_vec()).await, "create");
    let batch = |failing: Op| {
        vec![
            Op::Put {
                key: "/x/1".into(),
                value: b"1".to_vec(),
            },
            Op::Put {
                key: "/x/exists".into(),
                value: b"clobbered".to_vec(),
            },
            Op::Delete {
                key: "/x/exists".into(),
            },
            Op::Create {
                key: "/x/exists".into(),
                value: b"recreated".to_vec(),
            },
            failing,
            Op::Put {
                key: "/x/2".into(),
                value: b"2".to_vec(),
            },
        ]
    };
    let key = |k: &str| k.to_owned();
    assert_store_err!(
        b.atomic_write(batch(Op::Create {
            key: key("/x/exists"),
            value: vec![]
        }))
        .await,
        AlreadyExists,
        "/x/exists"
    );
    assert_store_err!(
        b.atomic_write(batch(Op::CompareAndSwap {
            key: key("/x/exists"),
            revision: r,
            value: vec![]
        }))
        .await,
        Conflict,
        "/x/exists"
    );
    assert_store_err!(
        b.atomic_write(batch(Op::CompareAndSwap {
            key: key("/x/gone"),
            revision: r,
            value: vec![]
        }))
        .await,
        NotFound,
        "/x/gone"
    );
    assert_store_err!(
        b.atomic_write(batch(Op::Delete {
            key: key("/x/gone")
        }))
        .await,
        NotFound,
        "/x/gone"
    );
    assert_store_err!(
        b.atomic_write(batch(Op::CompareAndDelete {
            key: key("/x/gone"),
            revision: r
        }))
        .await,
        NotFound,
        "/x/gone"
    );
    assert_store_err!(
        b.atomic_write(batch(Op::CompareAndDelete {
            key: key("/x/exists"),
            revision: r
        }))
        .await,
        Conflict,
        "/x/exists"
    );
    assert_eq!(
        ok(b.range("/x/").await, "range"),
        [item("/x/exists", b"kept", r)]
    );
    // The store still works after the rollbacks.
    let r2 = ok(
        b.compare_and_swap("/x/exists", r, b"next".to_vec()).await,
        "cas",
    );
    assert!(r2 > r);
}

/// An empty `atomic_write` succeeds and changes nothing.
pub async fn atomic_write_empty(b: Arc<dyn Backend>) {
    let r = ok(b.put("/k", b"v".to_vec()).await, "put");
    ok(b.atomic_write(Vec::new()).await, "empty atomic_write");
    assert_eq!(ok(b.range("").await, "range"), [item("/k", b"v", r)]);
}
