//! The engine against a real auth server started in-process on `127.0.0.1:0`, with the
//! bot's clock under the test's control.
#![allow(clippy::unwrap_used, missing_docs)] // tests

use std::sync::Arc;
use std::time::Duration;

use machine_id_auth::{AuthConfig, AuthServer, RunningAuthServer};
use machine_id_bot::{Bot, BotBuilder, BotError, MemoryDestination};
use machine_id_client::{Client, ClientIdentity, ca_pins};
use machine_id_types::FakeClock;

struct TestServer {
    _server: RunningAuthServer,
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
        let dir = tempfile::tempdir().unwrap();
        let mut config = AuthConfig::new(
            dir.path().join("data"),
            "example.com",
            "127.0.0.1:0".parse().unwrap(),
        );
        config.clock = clock;
        let server = AuthServer::start(config).await.unwrap();
        let addr = server.local_addr().to_string();
        let admin_id = ClientIdentity::load(server.admin_identity_dir()).unwrap();
        let admin = Client::connect(&addr, &admin_id).await.unwrap();
        let pin = ca_pins(&admin.get_cluster_ca_certs().await.unwrap()).unwrap()[0].to_string();
        Self {
            _server: server,
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
    assert_ne!(dest.snapshot().unwrap().tls_cert, written.tls_cert);
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
