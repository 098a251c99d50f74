//! GenerateBotCerts: a tbot cycle in one call (renewal and every output's certificates).

use machine_id_mint::{PrivateKey, parse_tls_identity};
use machine_id_proto::v1;
use tonic::Code;
use v1::auth_service_client as tonic_client;
use v1::output_certs_result::Result as Outcome;

use crate::support::*;

fn output(key: &PrivateKey, roles: &[&str], ttl_seconds: u64) -> v1::OutputCertsRequest {
    v1::OutputCertsRequest {
        public_key: key.public_key().to_spki_der(),
        ttl_seconds,
        role_requests: roles.iter().map(|s| s.to_string()).collect(),
    }
}

fn certs(r: &v1::OutputCertsResult) -> &v1::Certs {
    match &r.result {
        Some(Outcome::Certs(c)) => c,
        other => panic!("expected certificates, got {other:?}"),
    }
}

/// The generation the store holds for `user`, as GetUser shows it.
async fn stored_generation(
    admin: &mut tonic_client::AuthServiceClient<tonic::transport::Channel>,
    user: &str,
) -> String {
    let user = admin
        .get_user(v1::GetByNameRequest { name: user.into() })
        .await
        .unwrap()
        .into_inner();
    user.metadata.unwrap().labels["generation"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_renews_and_issues_every_output_under_the_renewed_identity() {
    let ts = TestServer::start().await;
    let token = ts
        .add_bot("robot", &["access", "editor"], &["root", "ci"])
        .await;
    let gen1 = ts.join(&token).await.unwrap();
    let mut client = ts.client(&gen1).await;
    let (next, out_a, out_b, out_c) = (new_key(), new_key(), new_key(), new_key());
    let answer = client
        .generate_bot_certs(v1::GenerateBotCertsRequest {
            identity_public_key: next.public_key().to_spki_der(),
            identity_ttl_seconds: 600,
            outputs: vec![
                output(&out_a, &[], 0),
                output(&out_b, &["access", "auditor"], 0),
                output(&out_c, &["access"], 48 * 3600),
            ],
        })
        .await
        .unwrap()
        .into_inner();

    // The identity moved to generation 2 and certifies the new key.
    let identity = BotIdentity {
        key: next,
        certs: answer.identity.clone().unwrap(),
    };
    let renewed = identity.identity();
    assert_eq!(renewed.generation, 2);
    assert!(renewed.renewable);
    let ttl = (renewed.expires - ts.clock.now()).whole_seconds();
    assert!((598..=600).contains(&ttl), "{ttl}");

    // Output a asked for no roles: every role the bot may impersonate.
    assert_eq!(answer.outputs.len(), 3);
    assert_eq!(answer.outputs[0].roles, ["access", "editor"]);
    let a = parse_tls_identity(&certs(&answer.outputs[0]).tls_cert).unwrap();
    assert_eq!(a.roles, ["access", "editor"]);
    assert_eq!(a.impersonator.as_deref(), Some("bot-robot"));
    assert!(a.disallow_reissue && !a.renewable);
    assert_eq!(a.logins, ["root", "ci"]);
    assert!(
        certs(&answer.outputs[0])
            .ssh_cert
            .starts_with("ecdsa-sha2-nistp256-cert-v01@openssh.com ")
    );

    // Output b asked for a role the bot was not given: refused alone, with the reason.
    match &answer.outputs[1].result {
        Some(Outcome::Error(e)) => {
            assert_eq!(e.code, Code::PermissionDenied as i32);
            assert!(e.message.contains("auditor"), "{}", e.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(answer.outputs[1].roles.is_empty());

    // Output c asked for 48 h: capped at the renewed identity's expiry (10 min), not at the
    // expiry of the certificate the call came with (1 h).
    let c = parse_tls_identity(&certs(&answer.outputs[2]).tls_cert).unwrap();
    assert_eq!(c.roles, ["access"]);
    assert_eq!(c.expires, renewed.expires);
    assert!(c.expires < gen1.identity().expires);

    // What the outputs' files need, in the same answer.
    let mut admin = ts.admin().await;
    let ping = admin.ping(v1::PingRequest {}).await.unwrap().into_inner();
    assert_eq!(answer.cluster_name, ping.cluster_name);
    assert_eq!(answer.proxy_public_addr, ping.proxy_public_addr);
    let host = admin
        .export_ca(v1::ExportCaRequest {
            ca_type: "host".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.host_ca_keys, host.ssh_public_keys);
    assert!(!answer.host_ca_keys.is_empty());

    // One renewal event, one per issued output, one refusal; the generation is stored.
    let created = events(&mut admin, "cert.create").await;
    let kinds: Vec<String> = created
        .iter()
        .map(|e| {
            let f: serde_json::Value = serde_json::from_str(&e.fields_json).unwrap();
            f["kind"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "renewal").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "impersonation").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(events(&mut admin, "access.denied").await.len(), 1);
    assert_eq!(stored_generation(&mut admin, "bot-robot").await, "2");

    // The renewed identity goes on; the one the call came with is now a replay.
    let mut renewed_client = ts.client(&identity).await;
    assert_eq!(
        generate(&mut renewed_client, &[], 0)
            .await
            .unwrap()
            .identity()
            .generation,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_cycle_is_answered_again_with_its_outputs_and_moves_nothing() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &["root"]).await;
    let gen1 = ts.join(&token).await.unwrap();
    let mut client = ts.client(&gen1).await;
    let (next, out) = (new_key(), new_key());
    let request = v1::GenerateBotCertsRequest {
        identity_public_key: next.public_key().to_spki_der(),
        identity_ttl_seconds: 0,
        outputs: vec![output(&out, &[], 0)],
    };
    let first = client
        .generate_bot_certs(request.clone())
        .await
        .unwrap()
        .into_inner();
    // The answer was lost: the same request from the same certificate.
    let again = client
        .generate_bot_certs(request)
        .await
        .unwrap()
        .into_inner();
    for answer in [&first, &again] {
        let id = parse_tls_identity(&answer.identity.as_ref().unwrap().tls_cert).unwrap();
        assert_eq!(id.generation, 2);
        assert_eq!(
            parse_tls_identity(&certs(&answer.outputs[0]).tls_cert)
                .unwrap()
                .roles,
            ["access"]
        );
    }
    let mut admin = ts.admin().await;
    assert_eq!(stored_generation(&mut admin, "bot-robot").await, "2");
    assert!(
        admin
            .list_locks(v1::ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .locks
            .is_empty()
    );
    // The same call for another key from the old certificate is a replay: the bot is locked.
    let mut replay = ts.client(&gen1).await;
    let status = replay
        .generate_bot_certs(v1::GenerateBotCertsRequest {
            identity_public_key: new_key().public_key().to_spki_der(),
            identity_ttl_seconds: 0,
            outputs: vec![output(&out, &[], 0)],
        })
        .await;
    assert_code(status, Code::PermissionDenied, "locked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_alone_move_no_generation_and_output_certificates_get_nothing() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &["root"]).await;
    let gen1 = ts.join(&token).await.unwrap();
    let mut client = ts.client(&gen1).await;
    let out = new_key();
    let out_key = PrivateKey::from_pem(&out.to_pem()).unwrap();
    let answer = client
        .generate_bot_certs(v1::GenerateBotCertsRequest {
            identity_public_key: vec![],
            identity_ttl_seconds: 0,
            outputs: vec![output(&out, &["access"], 0)],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(answer.identity.is_none());
    let issued = BotIdentity {
        key: out,
        certs: certs(&answer.outputs[0]).clone(),
    };
    assert!(issued.identity().expires <= gen1.identity().expires);
    // No renewal happened: the first identity renews from generation 1 as usual.
    let gen2 = generate(&mut client, &[], 0).await.unwrap();
    assert_eq!(gen2.identity().generation, 2);
    let mut client = ts.client(&gen2).await;

    // An output's certificate may not renew or get outputs through the one call either.
    let mut out_client = ts.client(&issued).await;
    let status = out_client
        .generate_bot_certs(v1::GenerateBotCertsRequest {
            identity_public_key: new_key().public_key().to_spki_der(),
            identity_ttl_seconds: 0,
            outputs: vec![],
        })
        .await;
    assert_code(status, Code::PermissionDenied, "disallow-reissue");

    // A key that is not one is refused before anything moves.
    let status = client
        .generate_bot_certs(v1::GenerateBotCertsRequest {
            identity_public_key: b"not a key".to_vec(),
            identity_ttl_seconds: 0,
            outputs: vec![],
        })
        .await;
    assert_code(status, Code::InvalidArgument, "public_key");

    // At most 64 outputs per call, refused before anything is signed or moved.
    let status = client
        .generate_bot_certs(v1::GenerateBotCertsRequest {
            identity_public_key: new_key().public_key().to_spki_der(),
            identity_ttl_seconds: 0,
            outputs: (0..65).map(|_| output(&out_key, &[], 0)).collect(),
        })
        .await;
    assert_code(status, Code::InvalidArgument, "at most 64");
    assert_eq!(
        generate(&mut client, &[], 0)
            .await
            .unwrap()
            .identity()
            .generation,
        3
    );
}
