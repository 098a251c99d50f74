//! Typed calls with the admin identity, a bot's join, and identity checks.

use crate::{TestServer, clock_in_past};
use machine_id_client::{
    Client, ClientError, ClientIdentity, OutputRequest, bootstrap_ca_certs, parse_pins,
};
use machine_id_mint::{PrivateKey, Suite};
use std::time::Duration;

#[tokio::test]
async fn admin_lists_default_roles_and_round_trips_a_role() {
    let t = TestServer::start().await;
    let admin = t.admin().await;
    let names: Vec<String> = admin
        .list_roles()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.metadata.name)
        .collect();
    for r in ["access", "editor", "auditor"] {
        assert!(names.contains(&r.to_string()), "{names:?}");
    }
    let mut access = admin.get_role("access").await.unwrap();
    let e = admin.upsert_role(access.clone(), true).await.unwrap_err();
    assert!(e.is_already_exists(), "{e:?}");
    access.spec.allow.logins.push("root".into());
    admin.upsert_role(access.clone(), false).await.unwrap();
    assert_eq!(admin.get_role("access").await.unwrap(), access);
    let e = admin.get_role("nope").await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[tokio::test]
async fn bot_joins_once_with_its_token_and_renews() {
    let t = TestServer::start().await;
    let admin = t.admin().await;
    let created = admin
        .create_bot(
            "robot",
            &["access".into()],
            &["root".into()],
            None,
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(created.bot.user_name, "bot-robot");
    assert_eq!(created.token.expose().len(), 32);
    assert!(!format!("{created:?}").contains(created.token.expose()));

    let pins = parse_pins(&[t.server.ca_pins()[0].to_string()]).unwrap();
    let cas = bootstrap_ca_certs(&t.addr, &pins).await.unwrap();
    let joiner = Client::connect_with_cas(&t.addr, &cas).await.unwrap();
    let key = PrivateKey::generate(Suite::Default).unwrap();
    let spki = key.public_key().to_spki_der();
    let certs = joiner
        .register_using_token(&created.token, &spki, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(certs.ssh_cert.contains("-cert-v01@openssh.com "));
    assert!(!certs.tls_ca_certs.is_empty());
    // Single use.
    let e = joiner
        .register_using_token(&created.token, &spki, Duration::ZERO)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("token"), "{e}");

    let identity =
        ClientIdentity::from_parts(&key.to_pem(), certs.tls_cert, certs.tls_ca_certs).unwrap();
    assert_eq!(identity.username(), "bot-robot");
    assert!(!format!("{identity:?}").contains("PRIVATE KEY"));
    let bot = Client::connect(&t.addr, &identity).await.unwrap();
    let renewed = bot
        .generate_user_certs(&spki, Duration::from_secs(600), &[])
        .await
        .unwrap();
    assert!(!renewed.tls_cert.is_empty());
    // A bot may not administer the cluster.
    let e = bot.list_roles().await.unwrap_err();
    assert!(matches!(e, ClientError::PermissionDenied(_)), "{e:?}");
}

#[tokio::test]
async fn expired_identity_is_refused_before_dialing() {
    // The server's clock is two years back, so the admin identity it writes (one year) has
    // already expired in real time.
    let t = TestServer::start_with(|c| {
        c.clock = clock_in_past(Duration::from_secs(2 * 365 * 24 * 3600));
    })
    .await;
    let identity = t.admin_identity();
    let e = Client::connect(&t.addr, &identity).await.unwrap_err();
    assert!(matches!(e, ClientError::IdentityExpired { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("tlscert"), "{msg}");
    assert!(msg.contains("restart auth-server"), "{msg}");
}

#[test]
fn missing_identity_dir_names_the_file() {
    let e = ClientIdentity::load("/nonexistent/identity").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/identity/key"), "{e}");
}

#[tokio::test]
async fn identity_of_another_cluster_does_not_trust_this_server() {
    let a = TestServer::start().await;
    let b = TestServer::start().await;
    let e = Client::connect(&a.addr, &b.admin_identity())
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::UntrustedServer { .. }), "{e:?}");
    assert!(e.to_string().contains("not signed by a CA"), "{e}");
}

#[tokio::test]
async fn typed_crud_of_nodes_tokens_locks_and_events() {
    let t = TestServer::start().await;
    let admin = t.admin().await;
    let node = machine_id_types::Node {
        metadata: machine_id_types::Metadata::named("n1"),
        spec: machine_id_types::NodeSpec {
            addr: "127.0.0.1:22".into(),
            hostname: "node-1".into(),
        },
    };
    admin.upsert_node(node.clone(), true).await.unwrap();
    assert_eq!(admin.list_nodes().await.unwrap(), vec![node]);
    admin.delete_node("n1").await.unwrap();
    assert!(admin.list_nodes().await.unwrap().is_empty());

    admin
        .create_bot("robot", &["access".into()], &[], None, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(admin.list_tokens().await.unwrap().len(), 1);
    let lock = admin.lock_bot("robot", "test", None).await.unwrap();
    assert_eq!(admin.list_locks().await.unwrap().len(), 1);
    admin.delete_lock(&lock.metadata.name).await.unwrap();
    let events = admin
        .search_events(Some("bot.create"), 0, None)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let ping = admin.ping().await.unwrap();
    assert_eq!(ping.cluster_name, "example.com");
    let user_ca = admin.export_ca("user").await.unwrap();
    assert_eq!(user_ca.ssh_public_keys.len(), 1);
}

/// A `Client` renews its identity once: a second renewal for another key through the same
/// client (its certificate's generation is stale now) is refused before anything is sent,
/// where the server would have taken it for a replay and locked the bot; the same request
/// again (a retry) is still answered; a new client with the renewed identity renews on.
#[tokio::test]
async fn a_client_refuses_a_second_renewal_from_its_stale_identity() {
    let t = TestServer::start().await;
    let admin = t.admin().await;
    let created = admin
        .create_bot("robot", &["access".into()], &[], None, Duration::ZERO)
        .await
        .unwrap();
    let cas = t.admin_identity().ca_certs().to_vec();
    let joiner = Client::connect_with_cas(&t.addr, &cas).await.unwrap();
    let key = PrivateKey::generate(Suite::Default).unwrap();
    let certs = joiner
        .register_using_token(
            &created.token,
            &key.public_key().to_spki_der(),
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let identity =
        ClientIdentity::from_parts(&key.to_pem(), certs.tls_cert, certs.tls_ca_certs).unwrap();
    let client = Client::connect(&t.addr, &identity).await.unwrap();

    let k2 = PrivateKey::generate(Suite::Default).unwrap();
    let spki2 = k2.public_key().to_spki_der();
    let renewed = client
        .generate_user_certs(&spki2, Duration::from_secs(600), &[])
        .await
        .unwrap();
    let k3 = PrivateKey::generate(Suite::Default).unwrap();
    let e = client
        .generate_user_certs(
            &k3.public_key().to_spki_der(),
            Duration::from_secs(600),
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::IdentityRenewed), "{e:?}");
    assert!(e.to_string().contains("connect a new client"), "{e}");
    // The one-call cycle renews too, so the same rule holds for it.
    let e = client
        .generate_bot_certs(
            Some((&k3.public_key().to_spki_der(), Duration::from_secs(600))),
            &[],
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::IdentityRenewed), "{e:?}");
    // The retry of the renewal that succeeded is sent, and answered again, by either call;
    // an output asked for with the retry is issued under the renewed identity.
    client
        .generate_user_certs(&spki2, Duration::from_secs(600), &[])
        .await
        .unwrap();
    let again = client
        .generate_bot_certs(
            Some((&spki2, Duration::from_secs(600))),
            &[OutputRequest {
                public_key_der: k3.public_key().to_spki_der(),
                ttl: Duration::ZERO,
                roles: vec![],
            }],
        )
        .await
        .unwrap();
    assert!(!again.identity.as_ref().unwrap().tls_cert.is_empty());
    let out = again.outputs[0].as_ref().unwrap();
    assert_eq!(out.roles, ["access"]);
    // Outputs alone are no renewal: they go through from the old certificate.
    let alone = client
        .generate_bot_certs(
            None,
            &[
                OutputRequest {
                    public_key_der: k3.public_key().to_spki_der(),
                    ttl: Duration::ZERO,
                    roles: vec!["access".into()],
                },
                OutputRequest {
                    public_key_der: k3.public_key().to_spki_der(),
                    ttl: Duration::ZERO,
                    roles: vec!["editor".into()],
                },
            ],
        )
        .await
        .unwrap();
    assert!(alone.identity.is_none());
    assert!(alone.outputs[0].is_ok());
    let refused = alone.outputs[1].as_ref().unwrap_err();
    assert!(
        matches!(refused, ClientError::PermissionDenied(m) if m.contains("editor")),
        "{refused:?}"
    );
    // Impersonation from the old certificate is not a renewal: it goes through.
    client
        .generate_user_certs(
            &k3.public_key().to_spki_der(),
            Duration::from_secs(600),
            &["access".into()],
        )
        .await
        .unwrap();

    assert!(
        admin.list_locks().await.unwrap().is_empty(),
        "nothing locked the bot"
    );
    let renewed_identity =
        ClientIdentity::from_parts(&k2.to_pem(), renewed.tls_cert, renewed.tls_ca_certs).unwrap();
    let next = Client::connect(&t.addr, &renewed_identity).await.unwrap();
    next.generate_user_certs(
        &k3.public_key().to_spki_der(),
        Duration::from_secs(600),
        &[],
    )
    .await
    .unwrap();
}

/// `search_events_page` walks back through the log a page at a time, each event once, and
/// `until` leaves out the events from that time on.
#[tokio::test]
async fn search_events_page_walks_back_with_until() {
    let t = TestServer::start().await;
    let admin = t.admin().await;
    for i in 0..5 {
        let role = machine_id_types::Role::new(format!("r{i}"), Default::default());
        admin.upsert_role(role, true).await.unwrap();
    }
    let mut search = machine_id_client::EventSearch {
        event_type: Some("resource.put".into()),
        limit: 2,
        ..Default::default()
    };
    let mut pages = Vec::new();
    loop {
        let page = admin.search_events_page(&search).await.unwrap();
        pages.push(
            page.events
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>(),
        );
        match page.next_page {
            Some(next) => search.page = Some(next),
            None => break,
        }
    }
    let created = |i: u32| format!("role r{i} created");
    assert_eq!(
        pages,
        [
            vec![created(3), created(4)],
            vec![created(1), created(2)],
            vec![created(0)]
        ]
    );

    let all = admin
        .search_events(Some("resource.put"), 0, None)
        .await
        .unwrap();
    assert_eq!(all.len(), 5);
    let before_fourth = admin
        .search_events_page(&machine_id_client::EventSearch {
            event_type: Some("resource.put".into()),
            until: Some(all[3].time),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(before_fourth.events, all[..3]);
    assert_eq!(before_fourth.next_page, None);
}
