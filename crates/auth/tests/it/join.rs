//! Token joins.

use std::time::Duration;

use machine_id_proto::v1;
use tonic::Code;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_succeeds_once_then_the_token_is_gone() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &["root"]).await;
    assert_eq!(token.len(), 32);

    let bot = ts.join(&token).await.unwrap();
    let id = bot.identity();
    assert_eq!(id.username, "bot-robot");
    assert_eq!(id.roles, vec!["bot-robot".to_string()]);
    assert!(id.renewable);
    assert!(!id.disallow_reissue);
    assert_eq!(id.generation, 1);
    assert_eq!(id.cluster, CLUSTER);
    let ttl = id.expires - ts.clock.now();
    assert!(
        ttl <= time::Duration::hours(1) && ttl > time::Duration::minutes(59),
        "{ttl}"
    );
    assert!(bot.certs.ssh_cert.contains("-cert-v01@openssh.com "));
    assert_eq!(bot.certs.tls_ca_certs.len(), 1);
    assert_eq!(bot.certs.ssh_ca_keys.len(), 2);

    let again = ts.join(&token).await;
    assert_code(again, Code::PermissionDenied, "not valid");

    let mut admin = ts.admin().await;
    let ok = events(&mut admin, "bot.join").await;
    assert_eq!(ok.len(), 1);
    assert_eq!(ok[0].user.as_deref(), Some("bot-robot"));
    let failed = events(&mut admin, "bot.join.failed").await;
    assert_eq!(failed.len(), 1);
    let all = events(&mut admin, "").await;
    for e in &all {
        let text = format!("{e:?}");
        assert!(!text.contains(&token), "event leaks the token: {text}");
    }
    let tokens = admin
        .list_tokens(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert!(tokens.is_empty(), "the used token is deleted");
    let user = admin
        .get_user(v1::GetByNameRequest {
            name: "bot-robot".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        user.metadata
            .unwrap()
            .labels
            .get("generation")
            .map(String::as_str),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_joins_with_one_token_give_one_success() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let (_, join) = ts.anonymous().await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut join = join.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(
            async move { join_with(&mut join, &token).await },
        ));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
                assert!(e.message().contains("not valid"), "{e:?}");
            }
        }
    }
    assert_eq!(ok, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_joins_are_refused_with_reasons() {
    let ts = TestServer::start().await;
    let (_, mut join) = ts.anonymous().await;
    assert_code(
        join_with(&mut join, "nope").await,
        Code::PermissionDenied,
        "not valid",
    );
    assert_code(
        join_with(&mut join, "").await,
        Code::InvalidArgument,
        "token is required",
    );

    let token = ts.add_bot("robot", &["access"], &[]).await;
    // A bad key does not consume the token.
    let r = join
        .register_using_token(v1::RegisterUsingTokenRequest {
            token: token.clone(),
            public_key: b"garbage".to_vec(),
            ttl_seconds: 0,
        })
        .await;
    assert_code(r, Code::InvalidArgument, "public_key");

    // Expired after the clock moves past the token's hour.
    ts.clock.advance(Duration::from_secs(3601));
    assert_code(
        join_with(&mut join, &token).await,
        Code::PermissionDenied,
        "expired",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_ttl_is_capped_and_may_be_shorter() {
    let ts = TestServer::start().await;
    let (_, mut join) = ts.anonymous().await;
    for (asked, want) in [(600u64, 600i64), (7 * 24 * 3600, 24 * 3600)] {
        let token = ts.add_bot(&format!("b{asked}"), &["access"], &[]).await;
        let key = new_key();
        let certs = join
            .register_using_token(v1::RegisterUsingTokenRequest {
                token,
                public_key: key.public_key().to_spki_der(),
                ttl_seconds: asked,
            })
            .await
            .unwrap()
            .into_inner();
        let id = machine_id_mint::parse_tls_identity(&certs.tls_cert).unwrap();
        let ttl = (id.expires - ts.clock.now()).whole_seconds();
        assert!((want - 1..=want).contains(&ttl), "asked {asked}, got {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_ca_need_no_certificate_and_the_pin_matches() {
    let ts = TestServer::start().await;
    let (mut anon, _) = ts.anonymous().await;
    let ping = anon.ping(v1::PingRequest {}).await.unwrap().into_inner();
    assert_eq!(ping.cluster_name, CLUSTER);
    assert!(!ping.server_version.is_empty());
    let cas = anon
        .get_cluster_ca_certs(v1::GetClusterCaCertsRequest {})
        .await
        .unwrap()
        .into_inner()
        .tls_ca_certs;
    assert_eq!(cas.len(), 1);
    let pin = machine_id_mint::CaPin::from_cert_der(&cas[0]).unwrap();
    assert!(ts.server().ca_pins()[0].matches(&pin));
    assert!(pin.to_string().starts_with("sha256:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_certificate_are_unauthenticated() {
    let ts = TestServer::start().await;
    let (mut anon, _) = ts.anonymous().await;
    let msg = assert_code(
        anon.list_roles(v1::ListRequest {}).await,
        Code::Unauthenticated,
        "client certificate",
    );
    assert!(msg.contains("--identity"), "{msg}");
    assert_code(
        anon.list_tokens(v1::ListRequest {}).await,
        Code::Unauthenticated,
        "client certificate",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_handshake_does_not_stop_the_server() {
    use tokio::io::AsyncWriteExt;
    let ts = TestServer::start().await;
    let addr = ts.server().local_addr();
    // Garbage instead of a ClientHello, and a connection that never says anything.
    let mut bad = tokio::net::TcpStream::connect(addr).await.unwrap();
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let _silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut anon, _) = ts.anonymous().await;
    anon.ping(v1::PingRequest {}).await.unwrap();
}
