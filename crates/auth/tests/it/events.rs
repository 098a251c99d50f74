//! The audit log over the wire: SearchEvents pages back in time with `until`, a type and
//! `next_page`; retention trims events older than `audit_retention` on the server's clock
//! and keeps the rest.

use std::time::{Duration, Instant};

use machine_id_proto::v1;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::*;

fn role(name: &str) -> v1::Role {
    machine_id_types::Role::new(name, machine_id_types::RoleSpec::default()).into()
}

async fn put_role(admin: &mut v1::auth_service_client::AuthServiceClient<Channel>, name: &str) {
    admin
        .upsert_role(v1::UpsertRoleRequest {
            role: Some(role(name)),
            create_only: true,
        })
        .await
        .unwrap();
}

fn timestamp(t: time::OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap(),
    }
}

/// Reads every page of `request`; returns the messages of all events in the order the
/// pages came (newest page first, each oldest first) and the number of pages.
async fn all_pages(
    admin: &mut v1::auth_service_client::AuthServiceClient<Channel>,
    mut request: v1::SearchEventsRequest,
) -> (Vec<String>, usize) {
    let mut pages: Vec<Vec<String>> = Vec::new();
    loop {
        let r = admin
            .search_events(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(r.events.len() <= request.limit as usize);
        pages.push(r.events.into_iter().map(|e| e.message).collect());
        if r.next_page.is_empty() {
            break;
        }
        request.page = r.next_page;
        assert!(pages.len() < 100, "paging does not end");
    }
    let n = pages.len();
    (pages.into_iter().flatten().collect(), n)
}

/// 25 role writes: pages of 10 walk back in time and return each event once, the last page
/// without a `next_page`; a type filter and an `until`/`since` window page the same way;
/// a page cursor the server did not write is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_events_pages_back_in_time() {
    let ts = TestServer::start().await;
    let mut admin = ts.admin().await;
    let start = ts.clock.now();
    for i in 0..25 {
        ts.clock.advance(Duration::from_secs(60));
        put_role(&mut admin, &format!("r{i:02}")).await;
    }
    let puts = v1::SearchEventsRequest {
        event_type: "resource.put".into(),
        limit: 10,
        ..Default::default()
    };
    let (messages, pages) = all_pages(&mut admin, puts.clone()).await;
    assert_eq!(pages, 3);
    // Newest page first: r15..r24, then r05..r14, then r00..r04; each oldest first.
    let expected: Vec<String> = [15..25, 5..15, 0..5]
        .into_iter()
        .flat_map(|range| range.map(|i| format!("r{i:02}")))
        .collect();
    assert_eq!(messages.len(), 25, "{messages:?}");
    for (m, want) in messages.iter().zip(&expected) {
        assert!(m.contains(want.as_str()), "{m:?} should name {want}");
    }
    // Exactly one page: no cursor.
    let one = admin
        .search_events(v1::SearchEventsRequest {
            limit: 25,
            ..puts.clone()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(one.events.len(), 25);
    assert!(one.next_page.is_empty(), "nothing older matches");

    // A window: the writes at minutes 6..=15 after the start (r05..r14).
    let window = v1::SearchEventsRequest {
        since: Some(timestamp(start + Duration::from_secs(6 * 60))),
        until: Some(timestamp(start + Duration::from_secs(16 * 60))),
        limit: 4,
        ..puts.clone()
    };
    let (messages, pages) = all_pages(&mut admin, window).await;
    let expected: Vec<String> = [11..15, 7..11, 5..7]
        .into_iter()
        .flat_map(|range| range.map(|i| format!("role r{i:02} created")))
        .collect();
    assert_eq!((messages, pages), (expected, 3));

    // Without a type: the same 25, in pages of 7.
    let (everything, pages) = all_pages(
        &mut admin,
        v1::SearchEventsRequest {
            limit: 7,
            ..Default::default()
        },
    )
    .await;
    assert_eq!((everything.len(), pages), (25, 4), "{everything:?}");

    let bad = admin
        .search_events(v1::SearchEventsRequest {
            page: "not-a-cursor".into(),
            ..puts
        })
        .await;
    assert_code(bad, Code::InvalidArgument, "search again without it");
}

/// With the default retention (90 days) and the clock moved 91 days, the server deletes
/// every event from before (ten role writes) and keeps the
/// one written at day 89 and the ten written after the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_trims_events_older_than_90_days() {
    let ts = TestServer::start().await;
    let mut admin = ts.admin().await;
    for i in 0..10 {
        put_role(&mut admin, &format!("old{i}")).await;
    }
    assert_eq!(events(&mut admin, "").await.len(), 10);

    // 89 days on: this one is recent at every later pass.
    ts.clock.advance(Duration::from_secs(89 * 24 * 3600));
    put_role(&mut admin, "marker").await;

    ts.clock.advance(Duration::from_secs(2 * 24 * 3600));
    for i in 0..10 {
        put_role(&mut admin, &format!("new{i}")).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let left = loop {
        let left = events(&mut admin, "").await;
        if left.iter().all(|e| !e.message.contains("old")) {
            break left;
        }
        assert!(
            Instant::now() < deadline,
            "old events still there after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let messages: Vec<&str> = left.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        left.len(),
        11,
        "the marker and the ten new writes: {messages:?}"
    );
    assert!(messages[0].contains("marker"), "{messages:?}");
    for (i, m) in messages[1..].iter().enumerate() {
        assert!(m.contains(&format!("new{i}")), "{messages:?}");
    }
}
