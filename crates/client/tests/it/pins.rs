//! CA-pin bootstrap against a real TLS server.

use crate::TestServer;
use crate::fake_server::{FakeServer, new_ca};
use machine_id_client::{Client, ClientError, bootstrap_ca_certs, ca_pins, parse_pins};

#[tokio::test]
async fn good_pin_bootstraps_and_verifies() {
    let t = TestServer::start().await;
    let pins = parse_pins(&[t.server.ca_pins()[0].to_string()]).unwrap();
    let cas = bootstrap_ca_certs(&t.addr, &pins).await.unwrap();
    assert!(!cas.is_empty());
    assert_eq!(ca_pins(&cas).unwrap().len(), cas.len());
    // The CAs verify the server from then on.
    let client = Client::connect_with_cas(&t.addr, &cas).await.unwrap();
    assert_eq!(client.ping().await.unwrap().cluster_name, "example.com");
}

#[tokio::test]
async fn one_of_several_pins_is_enough() {
    let t = TestServer::start().await;
    let other = format!("sha256:{}", "0".repeat(64));
    let pins = parse_pins(&[other, t.server.ca_pins()[0].to_string()]).unwrap();
    bootstrap_ca_certs(&t.addr, &pins).await.unwrap();
}

#[tokio::test]
async fn wrong_pin_is_refused_and_says_why() {
    let t = TestServer::start().await;
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let pins = parse_pins(&[wrong]).unwrap();
    let e = bootstrap_ca_certs(&t.addr, &pins).await.unwrap_err();
    assert!(matches!(e, ClientError::PinMismatch { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("rotated"), "{msg}");
    assert!(msg.contains("tctl status"), "{msg}");
    assert!(msg.contains(&t.server.ca_pins()[0].to_string()), "{msg}");
}

#[tokio::test]
async fn pin_of_another_cluster_is_refused() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let pins = parse_pins(&[b.server.ca_pins()[0].to_string()]).unwrap();
    let e = bootstrap_ca_certs(&a.addr, &pins).await.unwrap_err();
    assert!(matches!(e, ClientError::PinMismatch { .. }), "{e:?}");
}

#[test]
fn malformed_pins_are_refused() {
    for bad in ["abcdef", "md5:abcd", "sha256:xyz", "sha256:abcd"] {
        let e = parse_pins(&[bad]).unwrap_err();
        assert!(matches!(e, ClientError::InvalidPin { .. }), "{bad}: {e:?}");
    }
    let e = parse_pins(&["abcdef"]).unwrap_err();
    assert!(e.to_string().contains("expected algorithm:pin"), "{e}");
}

#[tokio::test]
async fn no_pins_is_refused() {
    let e = bootstrap_ca_certs("127.0.0.1:1", &[]).await.unwrap_err();
    assert!(matches!(e, ClientError::NoPins), "{e:?}");
}

#[tokio::test]
async fn cas_of_another_cluster_do_not_verify_the_server() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let b_cas = b.admin_identity().ca_certs().to_vec();
    let e = Client::connect_with_cas(&a.addr, &b_cas).await.unwrap_err();
    assert!(matches!(e, ClientError::UntrustedServer { .. }), "{e:?}");
}

#[tokio::test]
async fn unreachable_server_says_so() {
    // Bind and drop to find a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let pins = parse_pins(&[format!("sha256:{}", "ab".repeat(32))]).unwrap();
    let e = bootstrap_ca_certs(&addr, &pins).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("cannot reach the auth server at"), "{msg}");
    assert!(msg.contains("is it running?"), "{msg}");
}

/// A machine in the middle presents its own certificate and answers with the pinned CA plus
/// its own: the pinned CA matching is not enough, the second connection (verified by the
/// pinned CA alone) fails, and the attacker's CA is never trusted.
#[tokio::test]
async fn an_unpinned_ca_from_an_unauthenticated_answer_is_never_trusted() {
    let pinned = new_ca();
    let attacker = new_ca();
    let pinned_der = pinned.tls_ca_cert_der().to_vec();
    let attacker_der = attacker.tls_ca_cert_der().to_vec();
    let fake = FakeServer::start(
        &attacker,
        vec![vec![pinned_der.clone(), attacker_der.clone()]],
    )
    .await;
    let pins = ca_pins(&[pinned_der]).unwrap();
    let e = bootstrap_ca_certs(&fake.addr, &pins).await.unwrap_err();
    assert!(
        matches!(e, ClientError::RotationNeedsBothPins { .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    let attacker_pin = ca_pins(&[attacker_der]).unwrap()[0].to_string();
    assert!(msg.contains("rotating its TLS CA"), "{msg}");
    assert!(msg.contains("tctl status"), "{msg}");
    assert!(msg.contains(&attacker_pin), "{msg}");
    assert!(msg.contains(&pins[0].to_string()), "{msg}");
    assert_eq!(
        fake.calls(),
        1,
        "nothing was asked over the unverified second connection"
    );
}

/// A server that presents a certificate from the pinned CA and trusts a second CA: the list
/// fetched again over the connection the pinned CA verified is what is trusted, whole.
#[tokio::test]
async fn the_list_from_the_verified_connection_is_trusted() {
    let pinned = new_ca();
    let other = new_ca();
    let later = new_ca();
    let pinned_der = pinned.tls_ca_cert_der().to_vec();
    let first = vec![pinned_der.clone(), other.tls_ca_cert_der().to_vec()];
    let second = vec![pinned_der.clone(), later.tls_ca_cert_der().to_vec()];
    let fake = FakeServer::start(&pinned, vec![first, second.clone()]).await;
    let pins = ca_pins(&[pinned_der]).unwrap();
    let cas = bootstrap_ca_certs(&fake.addr, &pins).await.unwrap();
    assert_eq!(cas, second, "the verified answer, not the first one");
    assert_eq!(fake.calls(), 2);
}

/// Every CA pinned: one unauthenticated call is enough (as before rotations existed).
#[tokio::test]
async fn every_ca_pinned_needs_one_call() {
    let a = new_ca();
    let b = new_ca();
    let list = vec![a.tls_ca_cert_der().to_vec(), b.tls_ca_cert_der().to_vec()];
    let fake = FakeServer::start(&b, vec![list.clone()]).await;
    let pins = ca_pins(&list).unwrap();
    assert_eq!(bootstrap_ca_certs(&fake.addr, &pins).await.unwrap(), list);
    assert_eq!(fake.calls(), 1);
}

/// A verified answer that no longer holds a pinned CA is refused.
#[tokio::test]
async fn a_verified_answer_without_a_pinned_ca_is_refused() {
    let pinned = new_ca();
    let other = new_ca();
    let pinned_der = pinned.tls_ca_cert_der().to_vec();
    let other_der = other.tls_ca_cert_der().to_vec();
    let fake = FakeServer::start(
        &pinned,
        vec![vec![pinned_der.clone(), other_der.clone()], vec![other_der]],
    )
    .await;
    let pins = ca_pins(&[pinned_der]).unwrap();
    let e = bootstrap_ca_certs(&fake.addr, &pins).await.unwrap_err();
    assert!(matches!(e, ClientError::PinMismatch { .. }), "{e:?}");
}
