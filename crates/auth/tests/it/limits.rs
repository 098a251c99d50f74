//! Resource limits and hashed tokens (issue 9, items 5 and 6): token records hold no secret
//! and old plaintext ones are migrated; audit writes of unauthenticated callers are rate
//! limited per address and summarized; idle connections are closed; unauthenticated
//! connections per address are capped.

use std::sync::Arc;
use std::time::Duration;

use machine_id_auth::{AuthConfig, AuthServer};
use machine_id_proto::v1;
use machine_id_store::{Backend, SqliteBackend};
use machine_id_types::{
    AUTH_SERVER_NAME, FakeClock, JoinMethod, Metadata, PROXY_SSH_ALPN, ProvisionToken,
    SYSTEM_ROLE_BOT, TokenSpec, event_types,
};
use tokio::io::AsyncReadExt;
use tonic::Code;

use crate::support::{CLUSTER, Clock, TestServer, assert_code, events, join_with};

/// A bound that only catches hangs.
const HANG: Duration = Duration::from_secs(60);

fn config(dir: &std::path::Path, clock: Arc<FakeClock>) -> AuthConfig {
    let mut config = AuthConfig::new(dir.join("data"), CLUSTER, "127.0.0.1:0".parse().unwrap());
    config.clock = clock;
    config
}

/// `TestServer` with `tune` applied to its configuration.
async fn start_with(tune: impl Fn(&mut AuthConfig)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
    let mut c = config(dir.path(), clock.clone());
    tune(&mut c);
    let server = AuthServer::start(c).await.unwrap();
    TestServer {
        server: Some(server),
        dir,
        clock,
    }
}

fn sha256_hex(s: &str) -> String {
    machine_id_join::token_hash(s)
}

/// Every value stored under `/tokens/` in the stopped server's store.
fn stored_token_values(ts: &TestServer) -> Vec<(String, String)> {
    let db = ts.data_dir().join(machine_id_auth::BACKEND_FILE);
    let backend = SqliteBackend::open(&db).unwrap();
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        rt.block_on(backend.range(machine_id_auth::keys::TOKENS))
            .unwrap()
            .into_iter()
            .map(|it| (it.key, String::from_utf8(it.value).unwrap()))
            .collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_stored_without_their_secret_and_shown_by_hash_prefix() {
    let mut ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let shown = format!("sha256:{}", &sha256_hex(&token)[..12]);

    let mut admin = ts.admin().await;
    let tokens = admin
        .list_tokens(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    let names: Vec<String> = tokens
        .iter()
        .map(|t| t.metadata.as_ref().unwrap().name.clone())
        .collect();
    assert_eq!(names, vec![shown.clone()]);
    // GetToken finds it by the secret and by what the listing shows, and shows no secret.
    for name in [token.as_str(), shown.as_str()] {
        let t = admin
            .get_token(v1::GetByNameRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(t.metadata.unwrap().name, shown);
    }

    ts.stop().await;
    let stored = stored_token_values(&ts);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].0,
        format!("{}{}", machine_id_auth::keys::TOKENS, sha256_hex(&token))
    );
    assert!(
        !stored[0].1.contains(&token),
        "the store holds the secret: {}",
        stored[0].1
    );
    assert!(stored[0].1.contains(&shown), "{}", stored[0].1);

    // The hashed record still admits exactly one join.
    ts.restart().await;
    ts.join(&token).await.unwrap();
    assert_code(ts.join(&token).await, Code::PermissionDenied, "not valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_token_is_deleted_by_the_prefix_tokens_ls_shows() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let shown = format!("sha256:{}", &sha256_hex(&token)[..12]);
    let mut admin = ts.admin().await;
    admin
        .delete_token(v1::GetByNameRequest { name: shown })
        .await
        .unwrap();
    assert_code(ts.join(&token).await, Code::PermissionDenied, "not valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_token_records_are_rewritten_hashed_at_startup() {
    let mut ts = TestServer::start().await;
    ts.add_bot("robot", &["access"], &[]).await;
    ts.stop().await;
    // A record as older versions wrote it: the secret as the name.
    let secret = "0123456789abcdef0123456789abcdef";
    let old = ProvisionToken {
        metadata: Metadata {
            expires: Some(ts.clock.now() + Duration::from_secs(3600)),
            ..Metadata::named(secret)
        },
        spec: TokenSpec {
            roles: vec![SYSTEM_ROLE_BOT.into()],
            join_method: JoinMethod::Token,
            bot_name: Some("robot".into()),
            allow: vec![],
        },
    };
    {
        let db = ts.data_dir().join(machine_id_auth::BACKEND_FILE);
        let backend = SqliteBackend::open(&db).unwrap();
        backend
            .put(
                &machine_id_auth::keys::token_key(secret),
                serde_json::to_vec(&old).unwrap(),
            )
            .await
            .unwrap();
    }
    assert!(
        stored_token_values(&ts)
            .iter()
            .any(|(_, v)| v.contains(secret))
    );

    ts.restart().await;
    ts.stop().await;
    for (key, value) in stored_token_values(&ts) {
        assert!(
            !value.contains(secret),
            "{key} still holds the secret: {value}"
        );
    }
    ts.restart().await;
    ts.join(secret).await.unwrap();
    assert_code(ts.join(secret).await, Code::PermissionDenied, "not valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_lifetimes_beyond_the_maximum_are_refused() {
    let ts = start_with(|c| c.max_token_ttl = Duration::from_secs(2 * 3600)).await;
    let mut admin = ts.admin().await;
    let r = admin
        .create_bot(v1::CreateBotRequest {
            name: "robot".into(),
            roles: vec!["access".into()],
            token_ttl_seconds: 3 * 3600,
            ..Default::default()
        })
        .await;
    let msg = assert_code(r, Code::InvalidArgument, "maximum of 2h0m0s");
    assert!(msg.contains("3h0m0s") && msg.contains("--ttl"), "{msg}");

    ts.add_bot("robot", &["access"], &[]).await;
    let token = |expires: Option<time::OffsetDateTime>| v1::UpsertTokenRequest {
        token: Some(
            ProvisionToken {
                metadata: Metadata {
                    expires,
                    ..Metadata::named("a-chosen-secret")
                },
                spec: TokenSpec {
                    roles: vec![SYSTEM_ROLE_BOT.into()],
                    join_method: JoinMethod::Token,
                    bot_name: Some("robot".into()),
                    allow: vec![],
                },
            }
            .into(),
        ),
        create_only: true,
    };
    let far = ts.clock.now() + Duration::from_secs(30 * 24 * 3600);
    assert_code(
        admin.upsert_token(token(Some(far))).await,
        Code::InvalidArgument,
        "longer than this cluster's maximum of 2h0m0s",
    );
    assert_code(
        admin.upsert_token(token(None)).await,
        Code::InvalidArgument,
        "must expire",
    );
    admin
        .upsert_token(token(Some(ts.clock.now() + Duration::from_secs(3600))))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_joins_are_audited_within_a_per_address_rate_and_the_rest_summarized() {
    let mut ts = start_with(|c| {
        c.audit_burst_per_ip = 3;
        c.audit_events_per_minute_per_ip = 60;
    })
    .await;
    let (_, mut join) = ts.anonymous().await;
    for _ in 0..10 {
        assert_code(
            join_with(&mut join, "no-such-token").await,
            Code::PermissionDenied,
            "not valid",
        );
    }
    let mut admin = ts.admin().await;
    assert_eq!(events(&mut admin, event_types::JOIN_FAILED).await.len(), 3);
    assert!(
        events(&mut admin, event_types::AUDIT_DROPPED)
            .await
            .is_empty()
    );

    // One second later the bucket holds one event again: the summary comes first.
    ts.clock.advance(Duration::from_secs(1));
    assert_code(
        join_with(&mut join, "no-such-token").await,
        Code::PermissionDenied,
        "not valid",
    );
    assert_eq!(events(&mut admin, event_types::JOIN_FAILED).await.len(), 4);
    let dropped = events(&mut admin, event_types::AUDIT_DROPPED).await;
    assert_eq!(dropped.len(), 1, "{dropped:#?}");
    assert_eq!(
        dropped[0].message,
        "7 audit event(s) of unauthenticated calls from 127.0.0.1 were dropped by the per-address rate limit (limits.audit_events_per_minute_per_ip)"
    );

    // Drops not followed by an admitted event are summarized at shutdown at the latest.
    for _ in 0..2 {
        assert_code(
            join_with(&mut join, "no-such-token").await,
            Code::PermissionDenied,
            "not valid",
        );
    }
    ts.restart().await;
    let mut admin = ts.admin().await;
    let dropped = events(&mut admin, event_types::AUDIT_DROPPED).await;
    assert_eq!(dropped.len(), 2, "{dropped:#?}");
    assert!(
        dropped[1].message.starts_with("2 audit event(s)"),
        "{dropped:#?}"
    );
}

/// A TLS client trusting the cluster, offering `alpn`, presenting no certificate.
fn tls_connector(ts: &TestServer, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(ts.server().admin_identity_dir().join("tlscacerts")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    ts: &TestServer,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(ts.server().local_addr())
        .await
        .unwrap();
    tls_connector(ts, alpn)
        .connect(AUTH_SERVER_NAME.try_into().unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_on_both_routes() {
    let ts = start_with(|c| c.idle_timeout = Duration::from_millis(300)).await;

    // gRPC: a handshaken connection that sends nothing is closed by the server.
    let mut conn = tls_connect(&ts, b"h2").await;
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(HANG, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the idle gRPC connection was not closed");

    // Proxy: a connection that never names its target is told so and closed.
    let mut conn = tls_connect(&ts, PROXY_SSH_ALPN.as_bytes()).await;
    let mut answer = String::new();
    tokio::time::timeout(HANG, conn.read_to_string(&mut answer))
        .await
        .expect("the idle proxy connection was not closed")
        .ok();
    assert_eq!(answer, "ERR no target sent within 300ms\n");

    // The server still serves.
    let (mut auth, _) = ts.anonymous().await;
    auth.ping(v1::PingRequest {}).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_per_address_are_capped() {
    let ts = start_with(|c| {
        c.max_unauthenticated_connections_per_ip = 2;
        c.handshake_timeout = Duration::from_secs(120);
    })
    .await;
    let addr = ts.server().local_addr();
    // Two connections sit in their handshake (they never send a ClientHello).
    let first = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A third from the same address is closed at once.
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(HANG, third.read(&mut buf))
        .await
        .expect("the connection over the cap was not closed");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");

    // Freeing a place lets the next one in (once the server saw the close).
    drop(first);
    let pinged = tokio::time::timeout(HANG, async {
        loop {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            // A refused connection fails its handshake; one let in completes it.
            let tls = tls_connector(&ts, b"h2")
                .connect(AUTH_SERVER_NAME.try_into().unwrap(), tcp)
                .await;
            if tls.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(pinged.is_ok(), "no connection was let in after one closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifetimes_and_limits_out_of_bounds_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
    let mut c = config(dir.path(), clock.clone());
    c.default_cert_ttl = Duration::from_secs(48 * 3600);
    let e = AuthServer::start(c).await.unwrap_err().to_string();
    assert_eq!(
        e,
        "configuration: default_cert_ttl: 48h0m0s is out of bounds; use a value from 1m0s to 24h0m0s"
    );
    let mut c = config(dir.path(), clock.clone());
    c.max_token_ttl = Duration::from_secs(90 * 24 * 3600);
    let e = AuthServer::start(c).await.unwrap_err().to_string();
    assert!(
        e.starts_with("configuration: auth_service.max_token_ttl: 2160h0m0s is out of bounds"),
        "{e}"
    );
    let mut c = config(dir.path(), clock);
    c.max_unauthenticated_connections_per_ip = 0;
    let e = AuthServer::start(c).await.unwrap_err().to_string();
    assert!(
        e.contains("limits.max_unauthenticated_connections_per_ip"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_or_an_offline_command_cannot_share_the_data_dir() {
    let ts = TestServer::start().await;
    let clock = ts.clock.clone();
    let e = AuthServer::start(config(ts.dir.path(), clock))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("is in use by another process"), "{e}");
    assert!(e.contains("an auth server is already running on it"), "{e}");
    let e = machine_id_auth::offline::OfflineDataDir::open(&ts.data_dir())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("stop it first"), "{e}");
    assert!(e.contains("tctl locks rm"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_with_spaces_or_control_characters_are_refused_with_field_and_value() {
    let ts = TestServer::start().await;
    let mut admin = ts.admin().await;
    let r = admin
        .create_bot(v1::CreateBotRequest {
            name: "robot".into(),
            roles: vec!["access".into()],
            logins: vec!["root".into(), "bad\u{1b}login".into()],
            ..Default::default()
        })
        .await;
    assert_code(
        r,
        Code::InvalidArgument,
        "invalid user \"bot-robot\": field spec.traits.logins: invalid login \"bad\\u{1b}login\": '\\u{1b}' is not allowed",
    );
}

/// The auth listener queues a burst of thousands of connections (a herd of bots after an
/// outage) instead of tokio's default 128, past which the kernel drops SYNs and each client
/// waits a one-second retransmission. `ss` reads the listen queue's size from the kernel.
#[tokio::test]
async fn the_listener_queues_a_burst_of_connections() {
    let ts = TestServer::start().await;
    let port = ts.server().local_addr().port();
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let backlog: u32 = text
        .split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no listening socket on port {port} in ss output {text:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(
        backlog,
        machine_id_auth::LISTEN_BACKLOG.min(somaxconn),
        "listen queue of the auth port"
    );
    assert!(backlog > 128, "the kernel caps it at {somaxconn}");
}
