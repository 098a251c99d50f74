//! How the client reports what a CA rotation does to it.

use crate::TestServer;
use machine_id_client::{Client, ClientError, ClientIdentity};

/// An identity of cluster A presented to server B, which trusts only its own CA: the server
/// rejects the certificate in the handshake. That is permanent, never "unreachable".
#[tokio::test]
async fn a_certificate_the_server_does_not_trust_is_rejected_not_unavailable() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let a_id = a.admin_identity();
    let b_cas = b.admin_identity().ca_certs().to_vec();
    let mixed =
        ClientIdentity::from_parts(a_id.key_pem(), a_id.cert_der().to_vec(), b_cas).unwrap();
    let r = Client::connect(&b.addr, &mixed).await;
    let e = match r {
        Ok(c) => c.ping().await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        matches!(e, ClientError::CertificateRejected { .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("rotated") && msg.contains("tctl bots add"),
        "{msg}"
    );
    assert!(!e.is_retryable());
}
