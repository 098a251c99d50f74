//! CA rotation through the real gRPC server: every phase by hand, what each phase signs and
//! trusts (judged by rustls: a client that trusts only one CA, a certificate of one CA), the
//! refusals, rollback, the automatic mode on the server's clock, the watch stream, a restart
//! mid-rotation, and two servers on one PostgreSQL database.

use std::time::{Duration, Instant};

use machine_id_mint::{CaPin, cert_der_to_pem};
use machine_id_proto::v1;
use machine_id_store::pg_test::TempPostgres;
use machine_id_types::AUTH_SERVER_NAME;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::support::*;

async fn rotate(
    ts: &TestServer,
    ca_type: &str,
    phase: &str,
) -> Result<Vec<v1::CertAuthority>, tonic::Status> {
    ts.admin()
        .await
        .rotate_ca(v1::RotateCaRequest {
            ca_type: ca_type.into(),
            phase: phase.into(),
            manual: true,
            grace_period_seconds: None,
        })
        .await
        .map(|r| r.into_inner().cert_authorities)
}

async fn cas(ts: &TestServer) -> Vec<v1::CertAuthority> {
    ts.admin()
        .await
        .get_cert_authorities(v1::GetCertAuthoritiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .cert_authorities
}

fn phase_of(cas: &[v1::CertAuthority], ca_type: &str) -> String {
    cas.iter()
        .find(|c| c.ca_type == ca_type)
        .and_then(|c| c.rotation.as_ref())
        .map(|r| r.phase.clone())
        .unwrap()
}

async fn cluster_cas(ts: &TestServer) -> Vec<Vec<u8>> {
    let (mut anon, _) = ts.anonymous().await;
    anon.get_cluster_ca_certs(v1::GetClusterCaCertsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tls_ca_certs
}

async fn export(ts: &TestServer, ca_type: &str) -> v1::ExportCaResponse {
    ts.admin()
        .await
        .export_ca(v1::ExportCaRequest {
            ca_type: ca_type.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Whether the server's leaf certificate was issued by `ca` (DER): its authority key id is
/// the CA's subject key id. Read from a TLS connection that trusts every trusted CA.
async fn server_presents(ts: &TestServer, ca: &[u8]) -> bool {
    let chain = served_chain(ts).await;
    authority_key_id(&chain[0]) == subject_key_id(ca)
}

fn subject_key_id(der: &[u8]) -> Vec<u8> {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
        .unwrap()
}

fn authority_key_id(der: &[u8]) -> Vec<u8> {
    let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
    c.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(k) => {
                k.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        })
        .unwrap()
}

/// The certificates the server presents (leaf first), over TLS trusting every trusted CA.
async fn served_chain(ts: &TestServer) -> Vec<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for der in cluster_cas(ts).await {
        roots.add(CertificateDer::from(der)).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(ts.server().local_addr())
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from(AUTH_SERVER_NAME).unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref()
        .1
        .peer_certificates()
        .unwrap()
        .iter()
        .map(|c| c.to_vec())
        .collect()
}

/// Whether a TLS connection that trusts only `ca` (DER) verifies the server and gets an
/// answer (a client given one CA pin).
async fn verifies_with_only(ts: &TestServer, ca: &[u8]) -> bool {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(cert_der_to_pem(ca)))
        .domain_name(AUTH_SERVER_NAME);
    let Ok(endpoint) = Endpoint::from_shared(format!("https://{}", ts.server().local_addr()))
        .unwrap()
        .tls_config(tls)
    else {
        return false;
    };
    match endpoint.connect().await {
        Ok(ch) => v1::auth_service_client::AuthServiceClient::new(ch)
            .ping(v1::PingRequest {})
            .await
            .is_ok(),
        Err(_) => false,
    }
}

/// Whether `id` can still make an authenticated call (its certificate's CA is trusted).
async fn accepted(ts: &TestServer, id: &BotIdentity) -> bool {
    ts.client(id)
        .await
        .get_cert_authorities(v1::GetCertAuthoritiesRequest {})
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_rotation_signs_then_serves_with_the_new_keys_and_drops_the_old() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &["ci"]).await;
    let mut bot = ts.join(&token).await.unwrap();
    let old_tls = cluster_cas(&ts).await;
    assert_eq!(old_tls.len(), 1);
    let old_user = export(&ts, "user").await.ssh_public_keys;
    let old_pin = ts.server().ca_pins()[0].clone();

    // init: new keys trusted everywhere, the old ones still sign and serve.
    let moved = rotate(&ts, "all", "init").await.unwrap();
    assert_eq!(moved.len(), 3);
    let both = cluster_cas(&ts).await;
    assert_eq!(both.len(), 2, "GetClusterCACerts returns both TLS CAs");
    assert_eq!(
        both[0], old_tls[0],
        "the old TLS CA is still the active one"
    );
    let new_tls = both[1].clone();
    assert_eq!(export(&ts, "user").await.ssh_public_keys.len(), 2);
    assert_eq!(export(&ts, "host").await.ssh_public_keys.len(), 2);
    assert_eq!(export(&ts, "tls").await.tls_certs.len(), 2);
    assert_eq!(ts.server().ca_pins().len(), 2);
    assert_eq!(ts.server().ca_pins()[0], old_pin);
    bot = generate(&mut ts.client(&bot).await, &[], 0).await.unwrap();
    assert_eq!(bot.certs.tls_ca_certs.len(), 2);
    assert_eq!(
        bot.certs.ssh_ca_keys.len(),
        4,
        "two user and two host CA keys"
    );
    assert!(server_presents(&ts, &old_tls[0]).await);
    assert!(!server_presents(&ts, &new_tls).await);
    // A client that trusts either CA alone (one CA pin) verifies the server: the new CA
    // cross-certifies the old one in the chain.
    assert_eq!(served_chain(&ts).await.len(), 2);
    assert!(verifies_with_only(&ts, &old_tls[0]).await);
    assert!(verifies_with_only(&ts, &new_tls).await);

    // update_clients: the new keys sign; servers still present the old CA.
    rotate(&ts, "all", "update_clients").await.unwrap();
    let before = BotIdentity {
        key: machine_id_mint::PrivateKey::from_pem(&bot.key.to_pem()).unwrap(),
        certs: bot.certs.clone(),
    };
    bot = generate(&mut ts.client(&bot).await, &[], 0).await.unwrap();
    assert_eq!(
        bot.certs.tls_ca_certs[0], new_tls,
        "the new TLS CA is active"
    );
    assert_ne!(export(&ts, "user").await.ssh_public_keys[0], old_user[0]);
    assert!(
        accepted(&ts, &bot).await,
        "a certificate of the new CA is accepted"
    );
    assert!(
        server_presents(&ts, &old_tls[0]).await,
        "servers move only at update_servers"
    );
    assert!(!server_presents(&ts, &new_tls).await);
    assert!(verifies_with_only(&ts, &old_tls[0]).await && verifies_with_only(&ts, &new_tls).await);

    // update_servers: servers present the new CA; the old one is still trusted.
    rotate(&ts, "all", "update_servers").await.unwrap();
    assert!(server_presents(&ts, &new_tls).await);
    assert!(!server_presents(&ts, &old_tls[0]).await);
    assert!(verifies_with_only(&ts, &old_tls[0]).await && verifies_with_only(&ts, &new_tls).await);
    assert!(
        accepted(&ts, &before).await,
        "a certificate of the old CA is still accepted"
    );

    // standby: only the new keys remain.
    let done = rotate(&ts, "all", "standby").await.unwrap();
    assert!(
        done.iter()
            .all(|c| c.trusted_ssh.is_empty() && c.trusted_tls.is_empty())
    );
    assert!(
        done.iter()
            .all(|c| c.rotation.as_ref().unwrap().last_rotated.is_some())
    );
    assert_eq!(cluster_cas(&ts).await, vec![new_tls.clone()]);
    assert_eq!(export(&ts, "user").await.ssh_public_keys.len(), 1);
    assert_eq!(
        ts.server().ca_pins(),
        vec![CaPin::from_cert_der(&new_tls).unwrap()]
    );
    assert!(
        !accepted(&ts, &before).await,
        "the old CA is no longer trusted"
    );
    assert!(accepted(&ts, &bot).await);
    let bot = generate(&mut ts.client(&bot).await, &[], 0).await.unwrap();
    assert_eq!(bot.certs.tls_ca_certs, vec![new_tls]);
    assert_eq!(bot.certs.ssh_ca_keys.len(), 2);

    // One audit event per CA type and phase, naming who asked.
    let events = events(&mut ts.admin().await, "ca.rotate").await;
    assert_eq!(events.len(), 12, "3 CA types x 4 phases");
    let first: serde_json::Value = serde_json::from_str(&events[0].fields_json).unwrap();
    assert_eq!(first["from_phase"], "standby");
    assert_eq!(first["to_phase"], "init");
    assert_eq!(events[0].user.as_deref(), Some("admin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn illegal_transitions_are_refused_with_the_allowed_phases_and_change_nothing() {
    let ts = TestServer::start().await;
    let start = cas(&ts).await;
    let m = assert_code(
        rotate(&ts, "user", "standby").await,
        Code::FailedPrecondition,
        "standby",
    );
    assert!(m.contains("init"), "{m}");
    assert_code(
        rotate(&ts, "tls", "update_servers").await,
        Code::FailedPrecondition,
        "init",
    );
    assert_code(
        rotate(&ts, "db", "init").await,
        Code::InvalidArgument,
        "user, host, tls or all",
    );
    assert_code(
        rotate(&ts, "user", "finish").await,
        Code::InvalidArgument,
        "update_clients",
    );
    let no_phase = ts
        .admin()
        .await
        .rotate_ca(v1::RotateCaRequest {
            ca_type: "user".into(),
            phase: String::new(),
            manual: true,
            grace_period_seconds: None,
        })
        .await;
    assert_code(no_phase, Code::InvalidArgument, "--phase");
    assert_eq!(cas(&ts).await, start, "nothing changed");

    rotate(&ts, "user", "init").await.unwrap();
    let mid = cas(&ts).await;
    let m = assert_code(
        rotate(&ts, "user", "init").await,
        Code::FailedPrecondition,
        "already in progress",
    );
    assert!(
        m.contains("update_clients") && m.contains("rollback"),
        "{m}"
    );
    let m = assert_code(
        rotate(&ts, "user", "standby").await,
        Code::FailedPrecondition,
        "from init",
    );
    assert!(m.contains("update_clients, rollback"), "{m}");
    assert_code(
        rotate(&ts, "user", "update_servers").await,
        Code::FailedPrecondition,
        "init",
    );
    // `all` is refused as a whole when one type cannot move: host and tls are in standby.
    assert_code(
        rotate(&ts, "all", "update_clients").await,
        Code::FailedPrecondition,
        "host CA",
    );
    assert_eq!(cas(&ts).await, mid, "nothing changed");

    rotate(&ts, "user", "update_clients").await.unwrap();
    let m = assert_code(
        rotate(&ts, "user", "standby").await,
        Code::FailedPrecondition,
        "update_clients",
    );
    assert!(m.contains("update_servers"), "{m}");
    // A bot cannot rotate.
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let bot = ts.join(&token).await.unwrap();
    let denied = ts
        .client(&bot)
        .await
        .rotate_ca(v1::RotateCaRequest {
            ca_type: "user".into(),
            phase: "update_servers".into(),
            manual: true,
            grace_period_seconds: None,
        })
        .await;
    assert_code(denied, Code::PermissionDenied, "cert authorities");
    assert_eq!(phase_of(&cas(&ts).await, "user"), "update_clients");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_from_update_servers_signs_with_the_old_keys_again() {
    let ts = TestServer::start().await;
    let old_tls = cluster_cas(&ts).await[0].clone();
    let old_user = export(&ts, "user").await.ssh_public_keys[0].clone();
    let token = ts.add_bot("robot", &["access"], &["ci"]).await;
    let mut bot = ts.join(&token).await.unwrap();
    for phase in ["init", "update_clients", "update_servers"] {
        rotate(&ts, "all", phase).await.unwrap();
        bot = generate(&mut ts.client(&bot).await, &[], 0).await.unwrap();
    }
    let new_tls = bot.certs.tls_ca_certs[0].clone();
    assert_ne!(new_tls, old_tls);
    let rb = rotate(&ts, "all", "rollback").await.unwrap();
    assert!(
        rb.iter()
            .all(|c| c.rotation.as_ref().unwrap().mode == "manual")
    );
    assert!(
        server_presents(&ts, &old_tls).await,
        "servers present the old CA again"
    );
    bot = generate(&mut ts.client(&bot).await, &[], 0).await.unwrap();
    assert_eq!(
        bot.certs.tls_ca_certs[0], old_tls,
        "the old TLS CA signs again"
    );
    assert_eq!(export(&ts, "user").await.ssh_public_keys[0], old_user);
    assert_eq!(
        bot.certs.tls_ca_certs.len(),
        2,
        "the new CA stays trusted until standby"
    );
    rotate(&ts, "all", "standby").await.unwrap();
    assert_eq!(cluster_cas(&ts).await, vec![old_tls.clone()]);
    assert_eq!(export(&ts, "user").await.ssh_public_keys, vec![old_user]);
    let after = cas(&ts).await;
    assert!(
        after
            .iter()
            .all(|c| c.rotation.as_ref().unwrap().last_rotated.is_none()),
        "a rolled-back rotation did not rotate"
    );
    assert!(accepted(&ts, &bot).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automatic_rotation_walks_every_phase_on_the_servers_clock() {
    let ts = TestServer::start().await;
    // The rotation starts three hours ago by the server's clock, which then walks up to the
    // present: the certificates the server mints on the way are valid for the real clock of
    // this test's TLS clients.
    ts.clock.set(
        time::OffsetDateTime::now_utc() - time::Duration::hours(3) - time::Duration::seconds(5),
    );
    let started = ts
        .admin()
        .await
        .rotate_ca(v1::RotateCaRequest {
            ca_type: "tls".into(),
            phase: String::new(),
            manual: false,
            grace_period_seconds: Some(3 * 3600),
        })
        .await
        .unwrap()
        .into_inner()
        .cert_authorities;
    let r = started[0].rotation.clone().unwrap();
    assert_eq!((r.phase.as_str(), r.mode.as_str()), ("init", "auto"));
    assert!(r.schedule_update_clients.is_some() && r.schedule_standby.is_some());
    for (hours, phase) in [(1, "update_clients"), (2, "update_servers"), (3, "standby")] {
        assert_eq!(phase_of(&cas(&ts).await, "tls"), {
            let prev = match phase {
                "update_clients" => "init",
                "update_servers" => "update_clients",
                _ => "update_servers",
            };
            prev.to_string()
        });
        ts.clock.set(
            time::OffsetDateTime::from_unix_timestamp(
                r.started.as_ref().unwrap().seconds + hours * 3600 + 1,
            )
            .unwrap(),
        );
        wait_for_phase(&ts, "tls", phase).await;
    }
    let after = cas(&ts).await;
    assert_eq!(after[2].trusted_tls.len(), 0);
    let events = events(&mut ts.admin().await, "ca.rotate").await;
    assert_eq!(events.len(), 4, "init and three automatic moves, each once");
    assert_eq!(
        events[1].user.as_deref(),
        Some("auth-server (automatic rotation)")
    );
}

async fn wait_for_phase(ts: &TestServer, ca_type: &str, phase: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if phase_of(&cas(ts).await, ca_type) == phase {
            return;
        }
        assert!(Instant::now() < deadline, "{ca_type} never reached {phase}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_sends_the_cas_at_once_and_after_every_phase() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let bot = ts.join(&token).await.unwrap();
    let mut watch = ts
        .client(&bot)
        .await
        .watch_cert_authorities(v1::GetCertAuthoritiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap().cert_authorities;
    assert_eq!(phase_of(&first, "host"), "standby");
    for phase in ["init", "update_clients"] {
        let t0 = Instant::now();
        rotate(&ts, "host", phase).await.unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), watch.message())
            .await
            .expect("a message within 5 s")
            .unwrap()
            .unwrap()
            .cert_authorities;
        assert_eq!(phase_of(&next, "host"), phase);
        assert_eq!(next[1].active_ssh.len() + next[1].trusted_ssh.len(), 2);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_rotation_keeps_the_phase_and_both_cas() {
    let mut ts = TestServer::start().await;
    rotate(&ts, "all", "init").await.unwrap();
    rotate(&ts, "all", "update_clients").await.unwrap();
    let before = cas(&ts).await;
    ts.restart().await;
    assert_eq!(cas(&ts).await, before);
    assert_eq!(cluster_cas(&ts).await.len(), 2);
    let old = before[2].trusted_tls[0].clone();
    let old_der = machine_id_mint::certs_from_pem(&old).unwrap().remove(0);
    assert!(
        server_presents(&ts, &old_der).await,
        "update_clients: still the old CA"
    );
    rotate(&ts, "all", "update_servers").await.unwrap();
}

/// The storage of a fresh database on the test binary's PostgreSQL server; `None` when
/// PostgreSQL is missing and skipping is allowed.
fn fresh_database() -> Option<machine_id_auth::StorageConfig> {
    let pg = TempPostgres::shared()?;
    Some(machine_id_auth::StorageConfig::Postgres {
        conn_string: pg.create_fresh_database().parse().unwrap(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phase_made_on_one_server_is_in_force_on_the_other_within_a_second() {
    let Some(storage) = fresh_database() else {
        return;
    };
    let a = TestServer::start_on(storage.clone()).await;
    let b = TestServer::start_on(storage).await;
    // B's view, as its clients see it: a watch on B opened before the rotation.
    let mut watch_b = b
        .admin()
        .await
        .watch_cert_authorities(v1::GetCertAuthoritiesRequest {})
        .await
        .unwrap()
        .into_inner();
    watch_b.message().await.unwrap().unwrap();
    for phase in ["init", "update_clients", "update_servers"] {
        let t0 = Instant::now();
        let moved = rotate(&a, "all", phase).await.unwrap();
        let seen = loop {
            let left = Duration::from_secs(1).saturating_sub(t0.elapsed());
            let next = tokio::time::timeout(left, watch_b.message())
                .await
                .unwrap_or_else(|_| panic!("B did not see {phase} within 1 s of the call"))
                .unwrap()
                .unwrap()
                .cert_authorities;
            if phase_of(&next, "tls") == phase {
                break next;
            }
        };
        assert_eq!(seen, moved, "B installed exactly what A wrote");
        assert_eq!(cas(&b).await, moved);
    }
    // B presents the new CA too, and a bot renewed on A is accepted by B.
    let new_tls = cluster_cas(&a).await[0].clone();
    assert!(server_presents(&b, &new_tls).await);
    let token = a.add_bot("robot", &["access"], &[]).await;
    let bot = a.join(&token).await.unwrap();
    assert!(accepted(&b, &bot).await);
    rotate(&b, "all", "standby").await.unwrap();
    // A installs standby from the change feed, within a second of the call.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while cluster_cas(&a).await.len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "A did not drop the old TLS CA within 1 s of standby on B"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_advance_an_automatic_rotation_exactly_once_per_phase() {
    let Some(storage) = fresh_database() else {
        return;
    };
    let a = TestServer::start_on(storage.clone()).await;
    let b = TestServer::start_on(storage).await;
    // As in the one-server test: the rotation starts three hours ago by the servers' clocks.
    let past =
        time::OffsetDateTime::now_utc() - time::Duration::hours(3) - time::Duration::seconds(5);
    a.clock.set(past);
    b.clock.set(past);
    let started = a
        .admin()
        .await
        .rotate_ca(v1::RotateCaRequest {
            ca_type: "all".into(),
            phase: String::new(),
            manual: false,
            grace_period_seconds: Some(3 * 3600),
        })
        .await
        .unwrap()
        .into_inner()
        .cert_authorities;
    let t0 = started[0]
        .rotation
        .as_ref()
        .unwrap()
        .started
        .unwrap()
        .seconds;
    for (hours, phase) in [(1, "update_clients"), (2, "update_servers"), (3, "standby")] {
        let at = time::OffsetDateTime::from_unix_timestamp(t0 + hours * 3600 + 1).unwrap();
        // Both servers' clocks pass the schedule at once; both race to make the move.
        a.clock.set(at);
        b.clock.set(at);
        for ca in ["user", "host", "tls"] {
            wait_for_phase(&a, ca, phase).await;
            wait_for_phase(&b, ca, phase).await;
        }
    }
    let events = events(&mut a.admin().await, "ca.rotate").await;
    assert_eq!(
        events.len(),
        12,
        "3 CA types x (init + 3 automatic moves), each exactly once"
    );
    for ca in ["user", "host", "tls"] {
        for to in ["update_clients", "update_servers", "standby"] {
            let n = events
                .iter()
                .filter(|e| {
                    let f: serde_json::Value = serde_json::from_str(&e.fields_json).unwrap();
                    f["ca_type"] == ca && f["to_phase"] == to
                })
                .count();
            assert_eq!(n, 1, "{ca} -> {to} happened {n} times");
        }
    }
}
