//! The engine against a real auth server started in-process on `127.0.0.1:0`, with the
//! bot's clock under the test's control.
#![allow(clippy::unwrap_used, missing_docs)] // tests

mod failover;
mod rotation;

use std::sync::Arc;
use std::time::Duration;

use machine_id_auth::{AuthConfig, AuthServer, RunningAuthServer};
use machine_id_bot::{Bot, BotBuilder, BotError, MemoryDestination};
use machine_id_client::{Client, ClientIdentity, ca_pins};
use machine_id_types::FakeClock;

struct TestServer {
    server: RunningAuthServer,
    addr: String,
    admin: Client,
    pin: String,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> Self {
        Self::start_with_clock(Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()))).await
    }

    /// A server whose clock the test moves.
    async fn start_with_clock(clock: Arc<FakeClock>) -> Self {
        Self::start_in("example.com", clock).await
    }

    /// A server of another cluster.
    async fn start_with_cluster(cluster: &str) -> Self {
        Self::start_in(
            cluster,
            Arc::new(FakeClock::new(time::OffsetDateTime::now_utc())),
        )
        .await
    }

    async fn start_in(cluster: &str, clock: Arc<FakeClock>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AuthConfig::new(
            dir.path().join("data"),
            cluster,
            "127.0.0.1:0".parse().unwrap(),
        );
        config.clock = clock;
        config.diag_addr = Some("127.0.0.1:0".into());
        let server = AuthServer::start(config).await.unwrap();
        let addr = server.local_addr().to_string();
        let admin_id = ClientIdentity::load(server.admin_identity_dir()).unwrap();
        let admin = Client::connect(&addr, &admin_id).await.unwrap();
        let pin = ca_pins(&admin.get_cluster_ca_certs().await.unwrap()).unwrap()[0].to_string();
        Self {
            server,
            addr,
            admin,
            pin,
            _dir: dir,
        }
    }

    /// A new bot's token.
    async fn bot(&self, name: &str, roles: &[&str]) -> String {
        let roles: Vec<String> = roles.iter().map(|r| r.to_string()).collect();
        let created = self
            .admin
            .create_bot(name, &roles, &[], None, Duration::ZERO)
            .await
            .unwrap();
        created.token.expose().to_string()
    }

    fn builder(&self, token: &str) -> BotBuilder {
        Bot::builder()
            .auth_server(&self.addr)
            .token(token)
            .ca_pins(vec![self.pin.clone()])
    }
}

#[tokio::test]
async fn memory_bot_joins_renews_and_serves_its_identity() {
    let s = TestServer::start().await;
    let token = s.bot("robot", &["access", "editor"]).await;
    let dest = MemoryDestination::new();
    let bot = s
        .builder(&token)
        .destination(dest.clone(), vec![])
        .memory_destination(vec!["access".into()])
        .build()
        .unwrap();
    assert!(bot.current_identity().is_none());
    assert!(bot.rustls_client_config().is_err());

    bot.renew().await.unwrap();
    assert_eq!(bot.bot_identity().unwrap().generation, 1);
    let first = bot.current_identity().unwrap();
    let mut roles = first.roles.clone();
    roles.sort();
    assert_eq!(
        roles,
        ["access", "editor"],
        "default: every impersonable role"
    );
    assert_eq!(first.impersonator.as_deref(), Some("bot-robot"));
    assert!(!first.renewable);
    let written = dest.snapshot().unwrap();
    assert!(written.key.starts_with(b"-----BEGIN"));
    assert!(written.known_hosts.starts_with(b"@cert-authority "));
    assert!(
        written.ssh_config.is_empty(),
        "no ssh_config without a directory"
    );
    let second = bot.current_artifacts(1).unwrap();
    assert_ne!(second.key, written.key, "each output has its own key");
    bot.rustls_client_config().unwrap();

    bot.renew().await.unwrap();
    assert_eq!(bot.bot_identity().unwrap().generation, 2);
    let renewed = dest.snapshot().unwrap();
    assert_ne!(renewed.tls_cert, written.tls_cert);
    assert_ne!(renewed.ssh_cert, written.ssh_cert);
    // The output keeps its key, so a certificate of either renewal matches the key file
    // (ssh reads them at different moments).
    assert_eq!(
        renewed.key, written.key,
        "an output keeps its key across renewals"
    );
    let st = bot.status();
    assert_eq!((st.renewals, st.failures), (2, 0));
    assert!(st.ready && st.last_ok);
}

#[tokio::test]
async fn run_renews_every_interval_until_stopped() {
    let s = TestServer::start().await;
    let token = s.bot("robot", &["access"]).await;
    let bot = s
        .builder(&token)
        .renewal_interval(Duration::from_millis(200))
        .memory_destination(vec![])
        .build()
        .unwrap();
    let task = tokio::spawn({
        let bot = bot.clone();
        async move { bot.run().await }
    });
    tokio::time::timeout(Duration::from_secs(30), async {
        while bot.bot_identity().map_or(0, |i| i.generation) < 3 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap();
    bot.stop();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn expired_identity_with_a_used_token_ends_with_a_clear_error() {
    let s = TestServer::start().await;
    let token = s.bot("robot", &["access"]).await;
    let clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
    let bot = s
        .builder(&token)
        .clock(clock.clone())
        .memory_destination(vec![])
        .build()
        .unwrap();
    bot.renew().await.unwrap();
    clock.advance(Duration::from_secs(2 * 3600));
    let e = bot.renew().await.unwrap_err();
    assert!(matches!(e, BotError::IdentityExpired { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("join again with a fresh token"), "{msg}");
    assert!(!e.is_transient());
}

#[tokio::test]
async fn an_expired_token_is_refused_and_not_retried() {
    let server_clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
    let s = TestServer::start_with_clock(server_clock.clone()).await;
    let token = s.bot("robot", &["access"]).await;
    server_clock.advance(Duration::from_secs(3600 + 60));
    let bot = s
        .builder(&token)
        .oneshot(true)
        .memory_destination(vec![])
        .build()
        .unwrap();
    let e = bot.run().await.unwrap_err();
    assert!(matches!(e, BotError::JoinRefused(_)), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("expired"), "{msg}");
    assert!(!e.is_transient());
    assert_eq!(bot.status().failures, 1, "a refusal is not retried");
}

#[tokio::test]
async fn deleted_or_locked_bots_are_refused_not_retried() {
    let s = TestServer::start().await;
    let token = s.bot("robot", &["access"]).await;
    let bot = s
        .builder(&token)
        .memory_destination(vec![])
        .build()
        .unwrap();
    bot.renew().await.unwrap();
    s.admin
        .lock_bot("robot", "compromised host", None)
        .await
        .unwrap();
    let e = bot.run().await.unwrap_err();
    assert!(matches!(e, BotError::Refused(_)), "{e}");
    assert!(e.to_string().contains("locked"), "{e}");

    let token = s.bot("robot2", &["access"]).await;
    let bot = s
        .builder(&token)
        .memory_destination(vec![])
        .build()
        .unwrap();
    bot.renew().await.unwrap();
    s.admin.delete_bot("robot2").await.unwrap();
    let e = bot.renew().await.unwrap_err();
    assert!(matches!(e, BotError::Refused(_)), "{e}");
}

#[tokio::test]
async fn data_dir_is_reused_and_a_new_token_means_a_fresh_join() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = s.bot("robot", &["access"]).await;
    {
        let bot = s
            .builder(&token)
            .data_dir(&data)
            .unwrap()
            .memory_destination(vec![])
            .build()
            .unwrap();
        bot.renew().await.unwrap();
        // Two bots never share a data dir.
        let e = s.builder(&token).data_dir(&data).unwrap_err();
        assert!(matches!(e, BotError::DataDirLocked { .. }), "{e}");
    }
    // Same token: the stored identity is renewed (the token is spent).
    let bot = s
        .builder(&token)
        .data_dir(&data)
        .unwrap()
        .memory_destination(vec![])
        .build()
        .unwrap();
    bot.renew().await.unwrap();
    assert_eq!(bot.bot_identity().unwrap().generation, 2);
    drop(bot);
    // Another token: a fresh join, as another bot.
    let token2 = s.bot("robot2", &["access"]).await;
    let bot = s
        .builder(&token2)
        .data_dir(&data)
        .unwrap()
        .memory_destination(vec![])
        .build()
        .unwrap();
    bot.renew().await.unwrap();
    let id = bot.bot_identity().unwrap();
    assert_eq!((id.username.as_str(), id.generation), ("bot-robot2", 1));
}

#[tokio::test]
async fn insecure_join_without_pins_trusts_the_presented_ca() {
    let s = TestServer::start().await;
    let token = s.bot("robot", &["access"]).await;
    let bot = Bot::builder()
        .auth_server(&s.addr)
        .token(&token)
        .insecure(true)
        .memory_destination(vec![])
        .build()
        .unwrap();
    bot.renew().await.unwrap();
    assert_eq!(bot.current_identity().unwrap().roles, ["access"]);
}

/// The client identity in a written set of artifacts.
fn identity_of(a: &machine_id_destination::Artifacts) -> ClientIdentity {
    let key = String::from_utf8(a.key.clone()).unwrap();
    let cert = machine_id_mint::certs_from_pem(std::str::from_utf8(&a.tls_cert).unwrap()).unwrap();
    let cas =
        machine_id_mint::certs_from_pem(std::str::from_utf8(&a.tls_ca_certs).unwrap()).unwrap();
    ClientIdentity::from_parts(&key, cert[0].clone(), cas).unwrap()
}

/// A stand-in sshd: accepts connections and greets with an SSH banner.
async fn banner_node() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            use tokio::io::AsyncWriteExt as _;
            let _ = s.write_all(b"SSH-2.0-banner\r\n").await;
        }
    });
    addr
}

#[tokio::test]
async fn the_proxy_relays_for_a_valid_certificate_and_refuses_an_expired_or_foreign_one() {
    use tokio::io::AsyncBufReadExt as _;
    let server_clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
    let s = TestServer::start_with_clock(server_clock.clone()).await;
    let node_addr = banner_node().await;
    let mut node = machine_id_types::Node {
        metadata: machine_id_types::Metadata::named("n1"),
        spec: machine_id_types::NodeSpec {
            addr: node_addr,
            hostname: "node-name".into(),
        },
    };
    node.metadata.labels.insert("env".into(), "dev".into());
    s.admin.upsert_node(node, true).await.unwrap();
    let token = s.bot("robot", &["access"]).await;
    let dest = MemoryDestination::new();
    let bot = s
        .builder(&token)
        .destination(dest.clone(), vec![])
        .build()
        .unwrap();
    bot.renew().await.unwrap();
    let id = identity_of(&dest.snapshot().unwrap());

    // Valid: the relay reaches the node, by name with the cluster suffix and by id.
    for target in ["node-name.example.com:3022", "n1:22"] {
        let mut relay = machine_id_client::dial_proxy_ssh(&s.addr, &id, target)
            .await
            .unwrap();
        let mut banner = String::new();
        relay.read_line(&mut banner).await.unwrap();
        assert_eq!(banner, "SSH-2.0-banner\r\n", "{target}");
    }

    // The server's clock passes the certificate's expiry: refused, with what to do.
    server_clock.advance(Duration::from_secs(2 * 3600));
    let e = machine_id_client::dial_proxy_ssh(&s.addr, &id, "node-name:22")
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, machine_id_client::ClientError::ProxyRefused { .. })
            && msg.contains("expired")
            && msg.contains("tbot renews"),
        "{msg}"
    );

    // A certificate of another cluster is refused at the handshake.
    let other = TestServer::start_with_cluster("other.example.com").await;
    let token = other.bot("robot", &["access"]).await;
    let foreign_dest = MemoryDestination::new();
    let foreign = other
        .builder(&token)
        .destination(foreign_dest.clone(), vec![])
        .build()
        .unwrap();
    foreign.renew().await.unwrap();
    let mut foreign_id = identity_of(&foreign_dest.snapshot().unwrap());
    // It trusts our cluster's CA, so only the proxy's judgement of its certificate counts.
    foreign_id = ClientIdentity::from_parts(
        std::str::from_utf8(&foreign_dest.snapshot().unwrap().key).unwrap(),
        foreign_id.cert_der().to_vec(),
        id.ca_certs().to_vec(),
    )
    .unwrap();
    let e = machine_id_client::dial_proxy_ssh(&s.addr, &foreign_id, "node-name:22")
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, machine_id_client::ClientError::ProxyRefused { .. })
            && msg.contains("not issued by this cluster"),
        "{msg}"
    );
}

#[tokio::test]
async fn a_stuck_proxy_client_stalls_nobody() {
    use tokio::io::AsyncBufReadExt as _;
    let s = TestServer::start().await;
    let node_addr = banner_node().await;
    let node = machine_id_types::Node {
        metadata: machine_id_types::Metadata::named("n1"),
        spec: machine_id_types::NodeSpec {
            addr: node_addr,
            hostname: "node-name".into(),
        },
    };
    s.admin.upsert_node(node, true).await.unwrap();
    let token = s.bot("robot", &["access"]).await;
    let dest = MemoryDestination::new();
    let bot = s
        .builder(&token)
        .destination(dest.clone(), vec![])
        .build()
        .unwrap();
    bot.renew().await.unwrap();
    let id = identity_of(&dest.snapshot().unwrap());

    // Ten clients that open TCP connections and never finish a handshake, and ten that
    // finish it but never name a target.
    let mut stuck = Vec::new();
    for _ in 0..10 {
        stuck.push(tokio::net::TcpStream::connect(&s.addr).await.unwrap());
    }
    let mut config = bot.rustls_client_config().unwrap();
    config.alpn_protocols = vec![machine_id_types::PROXY_SSH_ALPN.as_bytes().to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut silent = Vec::new();
    for _ in 0..10 {
        let tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
        let name =
            rustls_pki_types::ServerName::try_from(machine_id_bot::AUTH_SERVER_NAME).unwrap();
        silent.push(connector.connect(name, tcp).await.unwrap());
    }

    // Meanwhile a well-behaved client gets through at once, and the API still answers.
    let mut relay = tokio::time::timeout(
        Duration::from_secs(5),
        machine_id_client::dial_proxy_ssh(&s.addr, &id, "node-name:22"),
    )
    .await
    .expect("the proxy stalled behind stuck clients")
    .unwrap();
    let mut banner = String::new();
    relay.read_line(&mut banner).await.unwrap();
    assert_eq!(banner, "SSH-2.0-banner\r\n");
    tokio::time::timeout(Duration::from_secs(5), s.admin.ping())
        .await
        .expect("the API stalled behind stuck clients")
        .unwrap();
    drop((stuck, silent));
}

fn stored_cert_sha256(data: &std::path::Path) -> String {
    use sha2::Digest as _;
    let pem = std::fs::read_to_string(data.join("current/tlscert")).unwrap();
    let der = machine_id_mint::certs_from_pem(&pem).unwrap().remove(0);
    hex::encode(sha2::Sha256::digest(&der))
}

/// A crash after the pending key was written: the next renewal presents that key, and the
/// key is gone once the new identity is saved. A pending key bound to another certificate
/// is never used.
#[tokio::test]
async fn a_pending_key_is_reused_and_removed_after_the_save() {
    use machine_id_mint::{PrivateKey, Suite};
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = s.bot("robot", &["access"]).await;
    let build = || {
        s.builder(&token)
            .data_dir(&data)
            .unwrap()
            .memory_destination(vec![])
            .build()
            .unwrap()
    };
    build().renew().await.unwrap();
    assert!(!data.join("pending").exists(), "no pending key at rest");
    let first_cert = stored_cert_sha256(&data);

    let key = PrivateKey::generate(Suite::Default).unwrap();
    std::fs::write(
        data.join("pending"),
        format!("parent-sha256 {first_cert}\n{}", key.to_pem()),
    )
    .unwrap();
    let bot = build();
    bot.renew().await.unwrap();
    assert_eq!(bot.bot_identity().unwrap().generation, 2);
    let stored_pub = std::fs::read_to_string(data.join("current/key.pub")).unwrap();
    assert_eq!(stored_pub.trim(), key.public_key().to_openssh().trim());
    assert!(!data.join("pending").exists(), "removed after the save");
    drop(bot);

    // Bound to the first certificate, no longer the stored one: ignored and removed.
    let stale = PrivateKey::generate(Suite::Default).unwrap();
    std::fs::write(
        data.join("pending"),
        format!("parent-sha256 {first_cert}\n{}", stale.to_pem()),
    )
    .unwrap();
    let bot = build();
    bot.renew().await.unwrap();
    assert_eq!(bot.bot_identity().unwrap().generation, 3);
    let stored_pub = std::fs::read_to_string(data.join("current/key.pub")).unwrap();
    assert_ne!(stored_pub.trim(), stale.public_key().to_openssh().trim());
    assert!(!data.join("pending").exists());
}

#[tokio::test]
async fn a_destination_overlapping_the_data_dir_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let e = Bot::builder()
        .auth_server("127.0.0.1:1")
        .data_dir(&data)
        .unwrap()
        .directory_destination(data.join("out"), Default::default(), vec![])
        .build()
        .unwrap_err();
    assert!(matches!(e, BotError::Overlap { .. }), "{e}");
    assert!(!data.join("out").exists());

    // From the config (as tbot start builds it): refused before the data dir is created.
    let other = tmp.path().join("other");
    let mut config = machine_id_bot::BotConfig::default();
    config.apply(machine_id_bot::Overrides {
        auth_server: Some("127.0.0.1:1".into()),
        data_dir: Some(other.clone()),
        destination_dir: Some(other.clone()),
        ..Default::default()
    });
    let e = BotBuilder::from_config(&config).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "destination {0} is the data directory {0}: tbot replaces the destination's files and keeps its own identity in the data directory, so the two must not overlap; choose a --destination-dir outside --data-dir and the data directory outside every destination (e.g. --data-dir=/var/lib/teleport/bot --destination-dir=/opt/machine-id)",
            other.display()
        )
    );
    assert!(!other.exists(), "nothing created");
}

/// `GET path` on the diagnostics listener: the status code and the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Serves the diagnostics of `bot` on a free port until the handle is aborted.
async fn diag(bot: &Bot) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let (addr, serve) = machine_id_bot::serve_diag(bot.clone(), "127.0.0.1:0")
        .await
        .unwrap();
    (addr, tokio::spawn(serve))
}

/// The auth server's connections accepted and calls answered so far, from its metrics.
async fn server_traffic(s: &TestServer) -> (f64, Vec<(String, f64)>) {
    let (code, text) = http_get(s.server.diag_addr().unwrap(), "/metrics").await;
    assert_eq!(code, 200);
    let mut connections = 0.0;
    let mut calls = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap();
        if name == "auth_server_connections_accepted_total" {
            connections = value;
        } else if let Some(labels) = name.strip_prefix("auth_server_grpc_requests_total{") {
            let method = labels
                .split(',')
                .find_map(|l| l.strip_prefix("method=\""))
                .unwrap()
                .trim_end_matches(['"', '}']);
            calls.push((method.to_string(), value));
        }
    }
    (connections, calls)
}

/// A renewal of a joined bot with two outputs is one connection and one call.
#[tokio::test]
async fn a_renewal_is_one_connection_and_one_call_for_every_output() {
    let s = TestServer::start().await;
    let token = s.bot("robot", &["access", "editor"]).await;
    let bot = s
        .builder(&token)
        .destination(MemoryDestination::new(), vec![])
        .memory_destination(vec!["access".into()])
        .build()
        .unwrap();
    bot.renew().await.unwrap();
    let (connections, calls) = server_traffic(&s).await;
    let before: f64 = calls.iter().map(|(_, n)| n).sum();
    let cycles = |calls: &[(String, f64)]| {
        calls
            .iter()
            .filter(|(m, _)| m == "GenerateBotCerts")
            .map(|(_, n)| n)
            .sum::<f64>()
    };
    let cycles_before = cycles(&calls);

    bot.renew().await.unwrap();
    assert_eq!(bot.bot_identity().unwrap().generation, 2);
    assert_eq!(bot.current_identity().unwrap().roles, ["access", "editor"]);
    assert_eq!(
        bot.current_artifacts(1).map(|a| {
            let pem = std::str::from_utf8(&a.tls_cert).unwrap();
            let der = machine_id_mint::certs_from_pem(pem).unwrap().remove(0);
            machine_id_mint::parse_tls_identity(&der).unwrap().roles
        }),
        Some(vec!["access".to_string()])
    );
    let (connections_after, calls_after) = server_traffic(&s).await;
    let after: f64 = calls_after.iter().map(|(_, n)| n).sum();
    assert_eq!(connections_after - connections, 1.0, "{calls_after:?}");
    assert_eq!(after - before, 1.0, "{calls_after:?}");
    assert_eq!(cycles(&calls_after) - cycles_before, 1.0, "{calls_after:?}");
}

/// The rule between "renewed" and "nothing yet": after a failed renewal the bot stays ready
/// while its certificates have more than half their TTL left, and not after; expired is never
/// ready. The bot's clock moves, no time passes.
#[tokio::test]
async fn readyz_after_a_failed_renewal_follows_the_half_life_rule() {
    let s = TestServer::start().await;
    let token = s.bot("robot", &["access"]).await;
    let clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
    let bot = s
        .builder(&token)
        .clock(clock.clone())
        .certificate_ttl(Duration::from_secs(3600))
        .memory_destination(vec![])
        .build()
        .unwrap();
    let (addr, _serve) = diag(&bot).await;
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no valid certificates"), "{body}");

    bot.renew().await.unwrap();
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));
    // Renewed: past half its life is still fine while the last renewal succeeded.
    clock.advance(Duration::from_secs(35 * 60));
    assert!(bot.status().ready, "{:?}", bot.status());

    // A renewal that fails (the bot was deleted) with most of the TTL left: still ready.
    let clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
    let token = s.bot("robot2", &["access"]).await;
    let bot = s
        .builder(&token)
        .clock(clock.clone())
        .certificate_ttl(Duration::from_secs(3600))
        .memory_destination(vec![])
        .build()
        .unwrap();
    let (addr, _serve) = diag(&bot).await;
    bot.renew().await.unwrap();
    s.admin.delete_bot("robot2").await.unwrap();
    clock.advance(Duration::from_secs(10 * 60));
    bot.renew().await.unwrap_err();
    let st = bot.status();
    assert!(!st.last_ok && st.failures == 1, "{st:?}");
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!(code, 200, "50 of 60 minutes left after a failure: {body}");

    // Past half its life (25 of 60 minutes left): not ready, and /readyz says why.
    clock.advance(Duration::from_secs(25 * 60));
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("the last renewal failed") && body.contains("half their TTL"),
        "{body}"
    );
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(metrics.contains("tbot_ready 0\n"), "{metrics}");

    // Past expiry: not ready.
    clock.advance(Duration::from_secs(30 * 60));
    assert!(bot.status().seconds_until_expiry.unwrap() <= 0);
    let (code, body) = http_get(addr, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("expired"), "{body}");
}

/// A restarted bot whose destination holds valid certificates is ready before its first
/// renewal (here the auth server cannot be reached at all), judged by the same rule: fine
/// with most of the TTL left, not ready past half of it.
#[tokio::test]
async fn readyz_at_start_judges_the_certificates_the_destination_holds() {
    let s = TestServer::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let (data, dest) = (tmp.path().join("data"), tmp.path().join("dest"));
    let token = s.bot("robot", &["access"]).await;
    s.builder(&token)
        .data_dir(&data)
        .unwrap()
        .directory_destination(&dest, Default::default(), vec![])
        .certificate_ttl(Duration::from_secs(3600))
        .oneshot(true)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();

    for (minutes_later, ready) in [(5, true), (40, false)] {
        let clock = Arc::new(FakeClock::new(
            time::OffsetDateTime::now_utc() + Duration::from_secs(minutes_later * 60),
        ));
        // Nothing listens on port 1: every renewal fails and is retried.
        let bot = Bot::builder()
            .auth_server("127.0.0.1:1")
            .token(&token)
            .ca_pins(vec![s.pin.clone()])
            .clock(clock)
            .certificate_ttl(Duration::from_secs(3600))
            .data_dir(&data)
            .unwrap()
            .directory_destination(&dest, Default::default(), vec![])
            .build()
            .unwrap();
        let (addr, serve) = diag(&bot).await;
        let task = tokio::spawn({
            let bot = bot.clone();
            async move { bot.run().await }
        });
        tokio::time::timeout(Duration::from_secs(60), async {
            while bot.status().seconds_until_expiry.is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the bot never looked at the destination");
        let st = bot.status();
        assert_eq!(st.renewals, 0, "{st:?}");
        let (code, body) = http_get(addr, "/readyz").await;
        if ready {
            assert_eq!((code, body.as_str()), (200, "ready\n"), "{st:?}");
        } else {
            assert_eq!(code, 503, "{body}");
            assert!(body.contains("near expiry"), "{body}");
        }
        bot.stop();
        task.await.unwrap().unwrap();
        // Let go of the data directory for the next round.
        serve.abort();
        let _ = serve.await;
        drop(bot);
    }
}
