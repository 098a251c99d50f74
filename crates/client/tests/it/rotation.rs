//! What a CA rotation does to a client: CA-pin bootstrap with either pin or both during each
//! phase, and a certificate the server no longer trusts.

use crate::TestServer;
use machine_id_client::{
    CaPin, Client, ClientError, ClientIdentity, RotateRequest, bootstrap_ca_certs, ca_pins,
};
use machine_id_types::RotationPhase;

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

async fn rotate(t: &TestServer, phase: RotationPhase) {
    t.admin()
        .await
        .rotate_ca(&RotateRequest {
            ca_type: "all".into(),
            phase: Some(phase),
            manual: true,
            grace_period: None,
        })
        .await
        .unwrap();
}

/// Bootstraps with `pins` and, when trusted, checks the CAs verify the server.
async fn bootstrap(t: &TestServer, pins: &[&CaPin]) -> Result<usize, ClientError> {
    let pins: Vec<CaPin> = pins.iter().map(|p| (*p).clone()).collect();
    let cas = bootstrap_ca_certs(&t.addr, &pins).await?;
    let client = Client::connect_with_cas(&t.addr, &cas).await.unwrap();
    client.ping().await.unwrap();
    Ok(cas.len())
}

/// A bot given only one pin joins in every phase of a rotation: the server's chain carries a
/// cross-certificate between the old and the new TLS CA, so either CA verifies it, and the
/// CA list it then trusts is the whole one the server sent over that verified connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_pin_alone_works_in_every_phase() {
    let t = TestServer::start().await;
    let old = t.server.ca_pins()[0].clone();
    assert_eq!(bootstrap(&t, &[&old]).await.unwrap(), 1);

    rotate(&t, RotationPhase::Init).await;
    let cas = t.admin().await.get_cluster_ca_certs().await.unwrap();
    let pins = ca_pins(&cas).unwrap();
    assert_eq!(pins.len(), 2);
    assert_eq!(pins[0], old, "the old CA is still the active one");
    let new = pins[1].clone();
    for phase in [
        RotationPhase::Init,
        RotationPhase::UpdateClients,
        RotationPhase::UpdateServers,
    ] {
        if phase != RotationPhase::Init {
            rotate(&t, phase).await;
        }
        for (what, given) in [
            ("old pin", vec![&old]),
            ("new pin", vec![&new]),
            ("both", vec![&old, &new]),
            ("both, new first", vec![&new, &old]),
        ] {
            let n = bootstrap(&t, &given)
                .await
                .unwrap_or_else(|e| panic!("{phase:?}, {what}: {e}"));
            assert_eq!(n, 2, "{phase:?}, {what}: both CAs are trusted");
        }
    }

    // standby: only the new CA is left; the old pin no longer matches anything.
    rotate(&t, RotationPhase::Standby).await;
    assert_eq!(bootstrap(&t, &[&new]).await.unwrap(), 1);
    let e = bootstrap(&t, &[&old]).await.unwrap_err();
    assert!(matches!(e, ClientError::PinMismatch { .. }), "{e:?}");
}
