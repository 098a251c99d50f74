//! A running bot follows a CA rotation on its own: the cluster's CAs move phase by phase
//! through `Client::rotate_ca`, and only the CA watch can explain the renewals (the renewal
//! interval is ten minutes). Also: the rustls configuration of an embedded bot keeps working
//! through the rotation, and a bot that slept through a whole rotation stops with a clear
//! error instead of retrying forever.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use machine_id_bot::{Bot, BotError, MemoryDestination};
use machine_id_client::{Client, ClientIdentity, RotateRequest, ca_pins};
use machine_id_mint::certs_from_pem;
use machine_id_types::{AUTH_SERVER_NAME, CaType, CertAuthority, RotationPhase};

use crate::TestServer;

/// Keys as `algorithm base64`, TLS CAs as their pins: what a destination holds, or should.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    tls: BTreeSet<String>,
    ssh: BTreeSet<String>,
    known_hosts: BTreeSet<String>,
}

fn key_id<'a>(mut fields: impl Iterator<Item = &'a str>) -> Option<String> {
    Some(format!("{} {}", fields.next()?, fields.next()?))
}

fn pins(ders: &[Vec<u8>]) -> BTreeSet<String> {
    ca_pins(ders)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// What the cluster trusts now, from the admin's `GetCertAuthorities`.
fn expected(cas: &[CertAuthority]) -> Held {
    let mut held = Held {
        tls: BTreeSet::new(),
        ssh: BTreeSet::new(),
        known_hosts: BTreeSet::new(),
    };
    for ca in cas {
        for set in [&ca.spec.active_keys, &ca.spec.additional_trusted_keys] {
            for pem in &set.tls {
                held.tls.extend(pins(&certs_from_pem(pem).unwrap()));
            }
            for line in &set.ssh {
                let id = key_id(line.split_whitespace()).unwrap();
                if ca.sub_kind == CaType::Host {
                    held.known_hosts.insert(id.clone());
                }
                held.ssh.insert(id);
            }
        }
    }
    held
}

/// What a destination holds.
fn held(dest: &MemoryDestination) -> Option<Held> {
    let a = dest.snapshot()?;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    Some(Held {
        tls: pins(&certs_from_pem(&text(&a.tls_ca_certs)).unwrap()),
        ssh: text(&a.ssh_ca_certs)
            .lines()
            .filter_map(|l| key_id(l.split_whitespace()))
            .collect(),
        // `@cert-authority <hosts> <algorithm> <base64> ...`
        known_hosts: text(&a.known_hosts)
            .lines()
            .filter(|l| l.starts_with("@cert-authority"))
            .filter_map(|l| key_id(l.split_whitespace().skip(2)))
            .collect(),
    })
}

/// A fresh admin connection (the server rewrites the admin identity as the CAs move).
async fn admin(s: &TestServer) -> Client {
    let id = ClientIdentity::load(s.server.admin_identity_dir()).unwrap();
    Client::connect(&s.addr, &id).await.unwrap()
}

async fn rotate(s: &TestServer, phase: RotationPhase) -> Vec<CertAuthority> {
    admin(s)
        .await
        .rotate_ca(&RotateRequest {
            ca_type: "all".into(),
            phase: Some(phase),
            manual: true,
            grace_period: None,
        })
        .await
        .unwrap()
}

/// Polls until the destination holds what the cluster trusts now (both sets during a
/// rotation, one after it); returns what it holds.
async fn until_follows(s: &TestServer, dest: &MemoryDestination, what: &str) -> Held {
    let want = expected(&admin(s).await.get_cert_authorities().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let got = held(dest);
        if got.as_ref() == Some(&want) {
            return want;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the destination does not follow the CAs\nwant {want:?}\ngot {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The active TLS CA (DER).
async fn active_tls(s: &TestServer) -> Vec<u8> {
    let cas = admin(s).await.get_cert_authorities().await.unwrap();
    let tls = cas.iter().find(|c| c.sub_kind == CaType::Tls).unwrap();
    certs_from_pem(&tls.spec.active_keys.tls[0])
        .unwrap()
        .remove(0)
}

/// Whether `cert` (a client certificate, DER) verifies against `ca` (DER) alone, as webpki
/// judges it for a server.
fn signed_by(cert: &[u8], ca: &[u8]) -> bool {
    use rustls::pki_types::{CertificateDer, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.to_vec())).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    verifier
        .verify_client_cert(&CertificateDer::from(cert.to_vec()), &[], UnixTime::now())
        .is_ok()
}

/// The output certificate the bot holds now (DER).
fn output_cert(dest: &MemoryDestination) -> Vec<u8> {
    let a = dest.snapshot().unwrap();
    certs_from_pem(std::str::from_utf8(&a.tls_cert).unwrap())
        .unwrap()
        .remove(0)
}

/// Polls until the output certificate is signed by `ca`.
async fn until_signed_by(dest: &MemoryDestination, ca: &[u8], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !signed_by(&output_cert(dest), ca) {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TLS handshake with the auth server through the embedded bot's rustls configuration.
async fn handshake(s: &TestServer, config: &Arc<rustls::ClientConfig>) -> std::io::Result<()> {
    let tcp = tokio::net::TcpStream::connect(&s.addr).await?;
    let name = rustls::pki_types::ServerName::try_from(AUTH_SERVER_NAME).unwrap();
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map(drop)
}

/// A running bot with a long renewal interval, a one-second debounce and a memory
/// destination.
async fn running_bot(s: &TestServer, name: &str) -> (Bot, MemoryDestination) {
    let token = s.bot(name, &["access"]).await;
    let dest = MemoryDestination::new();
    let bot = s
        .builder(&token)
        .renewal_interval(Duration::from_secs(600))
        .certificate_ttl(Duration::from_secs(1200))
        .ca_rotation_debounce(Duration::from_secs(1))
        .destination(dest.clone(), vec![])
        .build()
        .unwrap();
    tokio::spawn({
        let bot = bot.clone();
        async move { bot.run().await }
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    while bot.status().renewals == 0 || bot.status().ca_watch_up != Some(true) {
        assert!(
            Instant::now() < deadline,
            "the bot did not start: {:?}",
            bot.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (bot, dest)
}

/// Nothing failed and nothing was locked.
async fn healthy(s: &TestServer, bot: &Bot) {
    let st = bot.status();
    assert_eq!(st.failures, 0, "{st:?}");
    assert!(st.ready, "{st:?}");
    assert!(admin(s).await.list_locks().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_bot_follows_every_phase_and_its_rustls_config_too() {
    let s = TestServer::start().await;
    let (bot, dest) = running_bot(&s, "follower").await;
    let mut config = bot.rustls_client_config().unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let config = Arc::new(config);
    handshake(&s, &config).await.unwrap();
    let old = until_follows(&s, &dest, "before").await;
    let old_ca = active_tls(&s).await;
    assert_eq!(old.tls.len(), 1);
    let started = bot.status().renewals;

    // init: the new keys are trusted (the outputs hold both), not yet signing.
    rotate(&s, RotationPhase::Init).await;
    let both = until_follows(&s, &dest, "init").await;
    assert_eq!(
        (both.tls.len(), both.ssh.len(), both.known_hosts.len()),
        (2, 4, 2)
    );
    assert!(old.tls.is_subset(&both.tls) && old.ssh.is_subset(&both.ssh));

    // update_clients: the new keys sign; the bot's certificates come from the new CA.
    rotate(&s, RotationPhase::UpdateClients).await;
    let new_ca = active_tls(&s).await;
    assert_ne!(new_ca, old_ca);
    until_signed_by(
        &dest,
        &new_ca,
        "update_clients: the output is signed by the new CA",
    )
    .await;
    assert_eq!(until_follows(&s, &dest, "update_clients").await, both);

    // update_servers: the server presents the new CA's certificate; the embedded config,
    // built before the rotation, verifies it.
    rotate(&s, RotationPhase::UpdateServers).await;
    assert_eq!(until_follows(&s, &dest, "update_servers").await, both);
    handshake(&s, &config).await.unwrap();

    // standby: only the new keys.
    rotate(&s, RotationPhase::Standby).await;
    let new = until_follows(&s, &dest, "standby").await;
    assert_eq!(
        (new.tls.len(), new.ssh.len(), new.known_hosts.len()),
        (1, 2, 1)
    );
    assert!(new.tls.is_disjoint(&old.tls) && new.ssh.is_disjoint(&old.ssh));
    assert!(signed_by(&output_cert(&dest), &new_ca));
    assert_eq!(bot.current_ca_certs(), vec![new_ca]);
    handshake(&s, &config).await.unwrap();

    healthy(&s, &bot).await;
    let st = bot.status();
    assert!(
        st.ca_rotation_renewals >= 3,
        "init, update_clients, standby: {st:?}"
    );
    assert!(st.renewals > started, "{st:?}");
    assert_eq!(st.ca_watch_up, Some(true), "{st:?}");
    bot.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_from_update_servers_brings_back_the_old_ca() {
    let s = TestServer::start().await;
    let (bot, dest) = running_bot(&s, "roller").await;
    let old = until_follows(&s, &dest, "before").await;
    let old_ca = active_tls(&s).await;

    rotate(&s, RotationPhase::Init).await;
    rotate(&s, RotationPhase::UpdateClients).await;
    let new_ca = active_tls(&s).await;
    until_signed_by(&dest, &new_ca, "update_clients").await;
    rotate(&s, RotationPhase::UpdateServers).await;
    until_follows(&s, &dest, "update_servers").await;

    // rollback: the old keys sign again, both stay trusted.
    rotate(&s, RotationPhase::Rollback).await;
    until_signed_by(
        &dest,
        &old_ca,
        "rollback: the output is signed by the old CA again",
    )
    .await;
    assert_eq!(until_follows(&s, &dest, "rollback").await.tls.len(), 2);
    assert!(signed_by(
        &bot.current_identity().map(|_| output_cert(&dest)).unwrap(),
        &old_ca
    ));

    // standby: only the old keys, as before the rotation.
    rotate(&s, RotationPhase::Standby).await;
    assert_eq!(
        until_follows(&s, &dest, "standby after rollback").await,
        old
    );
    healthy(&s, &bot).await;
    bot.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_offline_for_the_whole_rotation_is_told_to_join_again() {
    let s = TestServer::start().await;
    let token = s.bot("sleeper", &["access"]).await;
    let data = tempfile::tempdir().unwrap();
    let build = || {
        s.builder(&token)
            .data_dir(data.path().join("bot"))
            .unwrap()
            .memory_destination(vec![])
            .build()
            .unwrap()
    };
    let bot = build();
    bot.renew().await.unwrap();
    drop(bot);

    for phase in [
        RotationPhase::Init,
        RotationPhase::UpdateClients,
        RotationPhase::UpdateServers,
        RotationPhase::Standby,
    ] {
        rotate(&s, phase).await;
    }

    let bot = build();
    let started = Instant::now();
    let e = bot.run().await.unwrap_err();
    assert!(matches!(e, BotError::CaRotatedWhileOffline { .. }), "{e:?}");
    assert!(!e.is_transient());
    let msg = e.to_string();
    assert!(
        msg.contains("rotated while this bot was offline")
            && msg.contains("no longer trusts")
            && msg.contains("tctl tokens add --type=bot --bot=sleeper"),
        "{msg}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "no retries");
}
