//! What a CA rotation does to a client: CA-pin bootstrap with one pin or both during each
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

fn needs_both(r: Result<usize, ClientError>, old: &CaPin, new: &CaPin) {
    let e = r.unwrap_err();
    assert!(
        matches!(e, ClientError::RotationNeedsBothPins { .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    // Both pins, in the server's order (the active CA first).
    assert!(
        (msg.contains(&format!("--ca-pin={old},{new}"))
            || msg.contains(&format!("--ca-pin={new},{old}")))
            && msg.contains("tctl status"),
        "{msg}"
    );
}

/// A bot given only one pin joins during a rotation while the server presents a certificate
/// of the pinned CA, and is told to pass both pins when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn either_pin_works_while_the_server_presents_its_ca() {
    let t = TestServer::start().await;
    let old = t.server.ca_pins()[0].clone();
    assert_eq!(bootstrap(&t, &[&old]).await.unwrap(), 1);

    rotate(&t, RotationPhase::Init).await;
    let cas = t.admin().await.get_cluster_ca_certs().await.unwrap();
    let pins = ca_pins(&cas).unwrap();
    assert_eq!(pins.len(), 2);
    assert_eq!(pins[0], old, "the old CA is still the active one");
    let new = pins[1].clone();
    // init and update_clients: the server still presents the old CA's certificate.
    for phase in ["init", "update_clients"] {
        assert_eq!(bootstrap(&t, &[&old]).await.unwrap(), 2, "{phase}: old pin");
        assert_eq!(
            bootstrap(&t, &[&old, &new]).await.unwrap(),
            2,
            "{phase}: both"
        );
        needs_both(bootstrap(&t, &[&new]).await, &old, &new);
        if phase == "init" {
            rotate(&t, RotationPhase::UpdateClients).await;
        }
    }

    // update_servers: the server presents the new CA's certificate.
    rotate(&t, RotationPhase::UpdateServers).await;
    assert_eq!(bootstrap(&t, &[&new]).await.unwrap(), 2, "new pin");
    assert_eq!(bootstrap(&t, &[&new, &old]).await.unwrap(), 2, "both");
    let e = bootstrap(&t, &[&old]).await.unwrap_err();
    assert!(
        matches!(e, ClientError::RotationNeedsBothPins { .. }),
        "{e:?}"
    );

    // standby: only the new CA is left.
    rotate(&t, RotationPhase::Standby).await;
    assert_eq!(bootstrap(&t, &[&new]).await.unwrap(), 1);
    let e = bootstrap(&t, &[&old]).await.unwrap_err();
    assert!(matches!(e, ClientError::PinMismatch { .. }), "{e:?}");
}
