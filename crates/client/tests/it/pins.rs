//! CA-pin bootstrap against a real TLS server.

use crate::TestServer;
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
