//! Conformance cases for `range`: prefixes are literal strings and keys order bytewise.

use std::sync::Arc;

use super::{item, keys, ok};
use crate::Backend;

/// `range` returns exactly the keys starting with the prefix, ordered by key, with values
/// and revisions; siblings sharing a shorter prefix (`/bots2`) stay out.
pub async fn range_by_prefix(b: Arc<dyn Backend>) {
    let mut written = Vec::new();
    for key in [
        "/bots/b",
        "/roles/a",
        "/bots/a/x",
        "/bots2/a",
        "/bot",
        "/bots/a",
        "/bots/",
        "/bots",
    ] {
        let r = ok(b.put(key, key.as_bytes().to_vec()).await, "put");
        written.push(item(key, key.as_bytes(), r));
    }
    let got = ok(b.range("/bots/").await, "range");
    assert_eq!(keys(&got), ["/bots/", "/bots/a", "/bots/a/x", "/bots/b"]);
    for i in &got {
        assert!(
            written.contains(i),
            "range returned {i:?}, not what was written"
        );
    }
    assert_eq!(
        keys(&ok(b.range("/bots").await, "range")),
        [
            "/bots",
            "/bots/",
            "/bots/a",
            "/bots/a/x",
            "/bots/b",
            "/bots2/a"
        ]
    );
    assert_eq!(
        keys(&ok(b.range("/bots/a").await, "range")),
        ["/bots/a", "/bots/a/x"]
    );
    assert_eq!(
        keys(&ok(b.range("/bots/a/x").await, "range")),
        ["/bots/a/x"]
    );
    assert!(ok(b.range("/nothing/").await, "range").is_empty());
    assert!(ok(b.range("/bots/c").await, "range").is_empty());
    written.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(ok(b.range("").await, "range"), written);
}

/// `%`, `_` and `\` in a prefix are plain characters, and case matters.
pub async fn range_treats_wildcards_literally(b: Arc<dyn Backend>) {
    for key in [
        "/t/a%b", "/t/axb", "/t/a_c", "/t/ayc", "/t/a\\d", "/t/A%", "/t/abc", "/t/%",
    ] {
        ok(b.put(key, vec![1]).await, "put");
    }
    assert_eq!(keys(&ok(b.range("/t/a%").await, "range")), ["/t/a%b"]);
    assert_eq!(keys(&ok(b.range("/t/a_").await, "range")), ["/t/a_c"]);
    assert_eq!(keys(&ok(b.range("/t/a\\").await, "range")), ["/t/a\\d"]);
    assert_eq!(keys(&ok(b.range("/t/%").await, "range")), ["/t/%"]);
    assert_eq!(keys(&ok(b.range("/t/A").await, "range")), ["/t/A%"]);
    assert!(ok(b.range("/t/_").await, "range").is_empty());
    assert!(ok(b.range("%").await, "range").is_empty());
}

/// Keys order by UTF-8 bytes (code points), and prefixes ending in any code point work.
pub async fn range_orders_unicode_bytewise(b: Arc<dyn Backend>) {
    let mut all = vec![
        "/u/e1",
        "/u/é1",
        "/u/ê1",
        "/u/Z",
        "/u/z",
        "/u/\u{D7FF}",
        "/u/\u{E000}",
        "/u/\u{10FFFF}x",
        "/u/\u{10FFFF}",
        "/u/日本",
    ];
    for key in &all {
        ok(b.put(key, vec![]).await, "put");
    }
    all.sort_unstable();
    assert_eq!(keys(&ok(b.range("/u/").await, "range")), all);
    assert_eq!(keys(&ok(b.range("/u/é").await, "range")), ["/u/é1"]);
    assert_eq!(
        keys(&ok(b.range("/u/\u{D7FF}").await, "range")),
        ["/u/\u{D7FF}"]
    );
    assert_eq!(
        keys(&ok(b.range("/u/\u{10FFFF}").await, "range")),
        ["/u/\u{10FFFF}", "/u/\u{10FFFF}x"]
    );
    assert_eq!(keys(&ok(b.range("/u/日").await, "range")), ["/u/日本"]);
}
