//! Renewal, the generation counter, locks and impersonation.

use std::time::Duration;

use machine_id_proto::v1;
use tonic::Code;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_increments_the_generation() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let gen1 = ts.join(&token).await.unwrap();
    let gen2 = generate(&mut ts.client(&gen1).await, &[], 0).await.unwrap();
    let id2 = gen2.identity();
    assert_eq!(id2.generation, 2);
    assert!(id2.renewable);
    assert_eq!(id2.username, "bot-robot");
    let gen3 = generate(&mut ts.client(&gen2).await, &[], 0).await.unwrap();
    assert_eq!(gen3.identity().generation, 3);

    // TTL: at most 24h for renewable certificates.
    let long = generate(&mut ts.client(&gen3).await, &[], 48 * 3600)
        .await
        .unwrap();
    let ttl = (long.identity().expires - ts.clock.now()).whole_seconds();
    assert!(ttl <= 24 * 3600 && ttl > 24 * 3600 - 2, "{ttl}");

    let mut admin = ts.admin().await;
    let user = admin
        .get_user(v1::GetByNameRequest {
            name: "bot-robot".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.metadata.unwrap().labels["generation"], "4");
    assert_eq!(events(&mut admin, "cert.create").await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_generation_locks_the_bot() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let gen1 = ts.join(&token).await.unwrap();
    let mut old = ts.client(&gen1).await;
    let gen2 = generate(&mut old, &[], 0).await.unwrap();

    // Replaying the generation-1 certificate.
    let msg = assert_code(
        generate(&mut old, &[], 0).await,
        Code::PermissionDenied,
        "stolen",
    );
    assert!(msg.contains("locked"), "{msg}");

    let mut admin = ts.admin().await;
    let ev = events(&mut admin, "cert.generation_mismatch").await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].user.as_deref(), Some("bot-robot"));
    assert!(!ev[0].success);
    let locks = admin
        .list_locks(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .locks;
    assert_eq!(locks.len(), 1);
    assert_eq!(locks[0].target_user.as_deref(), Some("bot-robot"));
    assert!(locks[0].message.contains("stolen"), "{}", locks[0].message);

    // The legitimate current certificate is locked out too.
    let mut current = ts.client(&gen2).await;
    assert_code(
        generate(&mut current, &[], 0).await,
        Code::PermissionDenied,
        "is locked",
    );
    assert_code(
        current
            .export_ca(v1::ExportCaRequest {
                ca_type: "user".into(),
            })
            .await,
        Code::PermissionDenied,
        "is locked",
    );
    let bots = admin
        .list_bots(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .bots;
    assert!(bots[0].locked);

    // Removing the lock lets the current generation renew again.
    let name = locks[0].metadata.as_ref().unwrap().name.clone();
    admin
        .delete_lock(v1::GetByNameRequest { name })
        .await
        .unwrap();
    assert_eq!(
        generate(&mut current, &[], 0)
            .await
            .unwrap()
            .identity()
            .generation,
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_bot_is_refused_everywhere() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let bot = ts.join(&token).await.unwrap();
    let mut admin = ts.admin().await;
    let lock = admin
        .lock_bot(v1::LockBotRequest {
            name: "robot".into(),
            message: "decommissioned host".into(),
            ttl_seconds: 3600,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lock.target_user.as_deref(), Some("bot-robot"));
    let mut client = ts.client(&bot).await;
    assert_code(
        generate(&mut client, &[], 0).await,
        Code::PermissionDenied,
        "decommissioned host",
    );
    assert_code(
        generate(&mut client, &["access"], 0).await,
        Code::PermissionDenied,
        "is locked",
    );

    // A new token does not get around the lock.
    let t2 = admin
        .upsert_token(v1::UpsertTokenRequest {
            token: Some(v1::Token {
                metadata: Some(v1::Metadata {
                    name: "0123456789abcdef0123456789abcdef".into(),
                    // token-method tokens must expire (within auth_service.max_token_ttl).
                    expires: Some(machine_id_proto::timestamp_from(
                        ts.clock.now() + std::time::Duration::from_secs(2 * 3600),
                    )),
                    ..Default::default()
                }),
                roles: vec!["Bot".into()],
                join_method: "token".into(),
                bot_name: Some("robot".into()),
                allow: vec![],
            }),
            create_only: true,
        })
        .await
        .unwrap()
        .into_inner();
    let name = t2.metadata.unwrap().name;
    assert_code(ts.join(&name).await, Code::PermissionDenied, "is locked");

    // The lock expires with the clock.
    ts.clock.advance(Duration::from_secs(3601));
    let bot = ts.join(&name).await.unwrap();
    assert_eq!(bot.identity().generation, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impersonation_gives_the_allowed_roles_only() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &["root", "ci"]).await;
    let bot = ts.join(&token).await.unwrap();
    let bot_id = bot.identity();
    let mut client = ts.client(&bot).await;

    let out = generate(&mut client, &["access"], 0).await.unwrap();
    let id = out.identity();
    assert_eq!(id.roles, vec!["access".to_string()]);
    assert_eq!(id.username, "bot-robot");
    assert_eq!(id.impersonator.as_deref(), Some("bot-robot"));
    assert!(id.disallow_reissue);
    assert!(!id.renewable);
    assert_eq!(id.generation, 0);
    assert_eq!(id.logins, vec!["root".to_string(), "ci".to_string()]);
    assert!(id.expires <= bot_id.expires);

    // Never past the bot's own certificate.
    let long = generate(&mut client, &["access"], 10 * 3600).await.unwrap();
    assert!(long.identity().expires <= bot_id.expires);

    // Roles the bot was not given, and the admin role, are refused.
    assert_code(
        generate(&mut client, &["editor"], 0).await,
        Code::PermissionDenied,
        "editor",
    );
    assert_code(
        generate(&mut client, &["access", "auditor"], 0).await,
        Code::PermissionDenied,
        "auditor",
    );
    assert_code(
        generate(&mut client, &["@admin"], 0).await,
        Code::PermissionDenied,
        "@admin",
    );

    // Impersonation does not consume the generation.
    let renewed = generate(&mut client, &[], 0).await.unwrap();
    assert_eq!(renewed.identity().generation, 2);

    // Output certificates cannot be used to get more certificates.
    let mut out_client = ts.client(&out).await;
    assert_code(
        generate(&mut out_client, &[], 0).await,
        Code::PermissionDenied,
        "disallow-reissue",
    );
    assert_code(
        generate(&mut out_client, &["access"], 0).await,
        Code::PermissionDenied,
        "disallow-reissue",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_may_not_administer() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let bot = ts.join(&token).await.unwrap();
    let mut client = ts.client(&bot).await;
    let msg = assert_code(
        client.list_tokens(v1::ListRequest {}).await,
        Code::PermissionDenied,
        "list tokens",
    );
    assert!(msg.contains("bot-robot"), "{msg}");
    assert_code(
        client
            .create_bot(v1::CreateBotRequest {
                name: "evil".into(),
                ..Default::default()
            })
            .await,
        Code::PermissionDenied,
        "create bots",
    );
    assert_code(
        client.list_roles(v1::ListRequest {}).await,
        Code::PermissionDenied,
        "list roles",
    );
    // Its own role it may read (that is how it learns what it may impersonate); no other.
    let own = client
        .get_role(v1::GetByNameRequest {
            name: "bot-robot".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(own.metadata.unwrap().name, "bot-robot");
    assert_code(
        client
            .get_role(v1::GetByNameRequest {
                name: "editor".into(),
            })
            .await,
        Code::PermissionDenied,
        "may not read roles",
    );
    // Reading the CAs is allowed.
    let ca = client
        .export_ca(v1::ExportCaRequest {
            ca_type: "user".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ca.ssh_public_keys.len(), 1);
    let mut admin = ts.admin().await;
    assert!(!events(&mut admin, "access.denied").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_certificates_are_unauthenticated() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let bot = ts.join(&token).await.unwrap();
    ts.clock.advance(Duration::from_secs(2 * 3600));
    let mut client = ts.client(&bot).await;
    let msg = assert_code(
        generate(&mut client, &[], 0).await,
        Code::Unauthenticated,
        "expired",
    );
    assert!(msg.contains("join again"), "{msg}");
}

/// Bot `bot`'s certificate re-signed by `signer` for `cluster`, and its key.
async fn forged_identity(
    ts: &TestServer,
    signer: &machine_id_mint::CaSigner,
    bot: &str,
    cluster: &str,
) -> BotIdentity {
    let key = new_key();
    let mut id = ts
        .join(&ts.add_bot(bot, &["access"], &[]).await)
        .await
        .unwrap()
        .identity();
    id.cluster = cluster.into();
    let tls_cert = signer
        .sign_user_tls_cert(&key.public_key(), &id, ts.clock.now())
        .unwrap();
    BotIdentity {
        key,
        certs: v1::Certs {
            tls_cert,
            ..Default::default()
        },
    }
}

/// A renewal over a connection presenting `id`: `Err(None)` if the connection fails, else the
/// call's result.
async fn renew_as(ts: &TestServer, id: &BotIdentity) -> Result<BotIdentity, Option<tonic::Status>> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read_to_string(ts.server().admin_identity_dir().join("tlscacerts")).unwrap(),
        ))
        .domain_name(machine_id_types::AUTH_SERVER_NAME)
        .identity(tonic::transport::Identity::from_pem(
            machine_id_mint::cert_der_to_pem(&id.certs.tls_cert),
            id.key.to_pem(),
        ));
    let ch =
        tonic::transport::Endpoint::from_shared(format!("https://{}", ts.server().local_addr()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|_| None)?;
    let mut client = v1::auth_service_client::AuthServiceClient::new(ch);
    generate(&mut client, &[], 0).await.map_err(Some)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clusters_certificate_is_refused() {
    let ts = TestServer::start().await;
    // A certificate minted by a different CA fails the TLS verification outright: either the
    // handshake or (TLS 1.3 checks the client's certificate after the client finishes) the
    // first call fails in the transport; no service answers it with a gRPC status.
    let other =
        machine_id_mint::CaKeys::generate("other", machine_id_mint::Suite::Default, ts.clock.now())
            .unwrap()
            .signer()
            .unwrap();
    let forged = forged_identity(&ts, &other, "robot", "other").await;
    match renew_as(&ts, &forged).await {
        Ok(_) => panic!("a certificate of another CA renewed"),
        Err(None) => {}
        Err(Some(status)) => {
            assert!(
                status.metadata().get("content-type").is_none()
                    && std::error::Error::source(&status).is_some(),
                "refused by the transport, not answered by a service: {status:?}"
            );
        }
    }
    // The control: the same call with a certificate of this cluster works.
    let bot = ts
        .join(&ts.add_bot("robot2", &["access"], &[]).await)
        .await
        .unwrap();
    assert_eq!(renew_as(&ts, &bot).await.unwrap().identity().generation, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_of_this_ca_naming_another_cluster_fails_the_cluster_check() {
    let ts = TestServer::start().await;
    // This cluster's own CA key (a second cluster sharing a CA, or a CA key reused by
    // mistake): TLS accepts the certificate, and the server's cluster check must refuse it.
    let ca = {
        use machine_id_store::Backend as _;
        let store = machine_id_store::SqliteBackend::open(
            &ts.data_dir().join(machine_id_auth::BACKEND_FILE),
        )
        .unwrap();
        let item = store
            .get(machine_id_auth::keys::CA_KEY)
            .await
            .unwrap()
            .expect("the CA keys are in the store");
        machine_id_mint::CaKeys::from_bytes(&item.value).unwrap()
    };
    assert_eq!(ca.cluster_name(), CLUSTER);
    let signer = ca.signer().unwrap();
    let forged = forged_identity(&ts, &signer, "robot", "other").await;
    assert_eq!(forged.identity().cluster, "other");
    let mut client = ts.client(&forged).await;
    let msg = assert_code(
        client.list_bots(v1::ListRequest {}).await,
        Code::Unauthenticated,
        "issued for cluster \"other\"",
    );
    assert!(
        msg.contains(&format!("this is cluster \"{CLUSTER}\"")),
        "{msg}"
    );
    // Renewal is refused the same way, and the same certificate for this cluster is accepted.
    assert_code(
        generate(&mut client, &[], 0).await,
        Code::Unauthenticated,
        "issued for cluster \"other\"",
    );
    let genuine = forged_identity(&ts, &signer, "robot2", CLUSTER).await;
    let renewed = generate(&mut ts.client(&genuine).await, &[], 0)
        .await
        .unwrap();
    assert_eq!(renewed.identity().cluster, CLUSTER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_expired_in_real_time_gets_a_message_not_a_tls_alert() {
    let ts = TestServer::start().await;
    let real_now = ts.clock.now();
    ts.clock.set(real_now - Duration::from_secs(3 * 3600));
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let bot = ts.join(&token).await.unwrap();
    assert!(bot.identity().expires < real_now);
    ts.clock.set(real_now);
    let mut client = ts.client(&bot).await;
    assert_code(
        generate(&mut client, &[], 0).await,
        Code::Unauthenticated,
        "expired at",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_renewal_is_answered_again_without_moving_the_generation() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let gen1 = ts.join(&token).await.unwrap();
    let mut client = ts.client(&gen1).await;
    let key = new_key();
    // The first answer is "lost": the bot asks again with the same certificate and key.
    let first = generate_for(&mut client, &key, &[], 0).await.unwrap();
    assert_eq!(first.identity().generation, 2);
    for _ in 0..3 {
        let again = generate_for(&mut ts.client(&gen1).await, &key, &[], 0)
            .await
            .unwrap();
        assert_eq!(again.identity().generation, 2);
        assert_ne!(
            again.certs.tls_cert, first.certs.tls_cert,
            "a fresh certificate"
        );
    }
    let mut admin = ts.admin().await;
    assert!(
        events(&mut admin, "cert.generation_mismatch")
            .await
            .is_empty()
    );
    let retries = events(&mut admin, "cert.create").await;
    assert_eq!(retries.len(), 4);
    assert_eq!(
        retries
            .iter()
            .filter(|e| e.fields_json.contains("\"retry\":true"))
            .count(),
        3,
        "{retries:?}"
    );

    // The re-issued certificate renews on normally, and then the old request is a replay.
    let again = generate_for(&mut ts.client(&gen1).await, &key, &[], 0)
        .await
        .unwrap();
    let gen3 = generate(&mut ts.client(&again).await, &[], 0)
        .await
        .unwrap();
    assert_eq!(gen3.identity().generation, 3);
    assert_code(
        generate_for(&mut ts.client(&gen1).await, &key, &[], 0).await,
        Code::PermissionDenied,
        "stolen",
    );
    assert_eq!(
        events(&mut admin, "cert.generation_mismatch").await.len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_with_another_key_or_certificate_is_still_caught() {
    // Same parent certificate, another key: a thief holding a copy of the old identity.
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let gen1 = ts.join(&token).await.unwrap();
    let key = new_key();
    generate_for(&mut ts.client(&gen1).await, &key, &[], 0)
        .await
        .unwrap();
    assert_code(
        generate_for(&mut ts.client(&gen1).await, &new_key(), &[], 0).await,
        Code::PermissionDenied,
        "stolen",
    );

    // Same key, another certificate of the same generation: not the recorded request either.
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let gen1 = ts.join(&token).await.unwrap();
    let key = new_key();
    let gen2 = generate_for(&mut ts.client(&gen1).await, &key, &[], 0)
        .await
        .unwrap();
    let gen3 = generate(&mut ts.client(&gen2).await, &[], 0).await.unwrap();
    assert_eq!(gen3.identity().generation, 3);
    assert_code(
        generate_for(&mut ts.client(&gen1).await, &key, &[], 0).await,
        Code::PermissionDenied,
        "stolen",
    );

    // A renewal for the certificate's own key is never a retry: every copy holds that key.
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let gen1 = ts.join(&token).await.unwrap();
    generate_for(&mut ts.client(&gen1).await, &gen1.key, &[], 0)
        .await
        .unwrap();
    assert_code(
        generate_for(&mut ts.client(&gen1).await, &gen1.key, &[], 0).await,
        Code::PermissionDenied,
        "stolen",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_survives_a_restart_of_the_server() {
    let mut ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let gen1 = ts.join(&token).await.unwrap();
    let key = new_key();
    generate_for(&mut ts.client(&gen1).await, &key, &[], 0)
        .await
        .unwrap();
    ts.restart().await;
    let again = generate_for(&mut ts.client(&gen1).await, &key, &[], 0)
        .await
        .unwrap();
    assert_eq!(again.identity().generation, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_on_the_admin_are_refused_and_ignored() {
    let ts = TestServer::start().await;
    let mut admin = ts.admin().await;
    for (user, role) in [(Some("admin"), None), (None, Some("@admin"))] {
        let msg = assert_code(
            admin
                .upsert_lock(v1::UpsertLockRequest {
                    lock: Some(v1::Lock {
                        metadata: Some(v1::Metadata {
                            name: "lockout".into(),
                            ..Default::default()
                        }),
                        target_user: user.map(str::to_string),
                        target_role: role.map(str::to_string),
                        message: "oops".into(),
                        created: None,
                        issued_before: None,
                    }),
                    create_only: true,
                })
                .await,
            Code::InvalidArgument,
            "targets the admin identity",
        );
        assert!(msg.contains("lock the bot, user or role"), "{msg}");
    }
    assert!(
        admin
            .list_locks(v1::ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .locks
            .is_empty()
    );

    // A lock on the admin that reached the store anyway (an older version wrote it) is
    // ignored by the admin, who can remove it; it still holds everyone else with the role.
    let mut ts = ts;
    ts.stop().await;
    {
        use machine_id_store::Backend as _;
        let store = machine_id_store::SqliteBackend::open(
            &ts.data_dir().join(machine_id_auth::BACKEND_FILE),
        )
        .unwrap();
        for (name, user, role) in [
            ("old-user-lock", Some("admin"), None),
            ("old-role-lock", None, Some("@admin")),
        ] {
            let lock = machine_id_types::Lock {
                metadata: machine_id_types::Metadata::named(name),
                spec: machine_id_types::LockSpec {
                    target: machine_id_types::LockTarget {
                        user: user.map(str::to_string),
                        role: role.map(str::to_string),
                    },
                    message: "old".into(),
                    created: None,
                    issued_before: None,
                },
            };
            store
                .create(
                    &format!("/locks/{name}"),
                    serde_json::to_vec(&lock).unwrap(),
                )
                .await
                .unwrap();
        }
    }
    ts.restart().await;
    let mut admin = ts.admin().await;
    let locks = admin
        .list_locks(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .locks;
    assert_eq!(locks.len(), 2, "the planted locks are there: {locks:?}");
    for name in ["old-user-lock", "old-role-lock"] {
        admin
            .delete_lock(v1::GetByNameRequest { name: name.into() })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_bot_revokes_its_unexpired_certificates_but_not_a_new_bot_of_that_name() {
    let ts = TestServer::start().await;
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let bot = ts.join(&token).await.unwrap();
    let output = generate(&mut ts.client(&bot).await, &["access"], 0)
        .await
        .unwrap();
    // Both still work before the deletion.
    ts.client(&output)
        .await
        .get_role(v1::GetByNameRequest {
            name: "access".into(),
        })
        .await
        .unwrap();
    let mut admin = ts.admin().await;
    admin
        .delete_bot(v1::GetByNameRequest {
            name: "robot".into(),
        })
        .await
        .unwrap();
    for id in [&bot, &output] {
        let msg = assert_code(
            ts.client(id)
                .await
                .get_role(v1::GetByNameRequest {
                    name: "access".into(),
                })
                .await,
            Code::PermissionDenied,
            "was deleted",
        );
        assert!(msg.contains("tctl locks rm"), "{msg}");
    }
    assert_code(
        generate(&mut ts.client(&bot).await, &["access"], 0).await,
        Code::PermissionDenied,
        "was deleted",
    );
    let locks = admin
        .list_locks(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .locks;
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert_eq!(locks[0].target_user.as_deref(), Some("bot-robot"));
    assert!(locks[0].issued_before.is_some());
    assert!(locks[0].metadata.as_ref().unwrap().expires.is_some());

    // A bot created again under that name (once the clock has left the second of the
    // deletion) joins and works; the old certificates stay revoked.
    ts.clock.advance(Duration::from_secs(1));
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let new = ts.join(&token).await.unwrap();
    let renewed = generate(&mut ts.client(&new).await, &[], 0).await.unwrap();
    assert_eq!(renewed.identity().generation, 2);
    assert_code(
        ts.client(&output)
            .await
            .get_role(v1::GetByNameRequest {
                name: "access".into(),
            })
            .await,
        Code::PermissionDenied,
        "was deleted",
    );
    // The lock ends when the longest certificate the old bot could hold has expired.
    ts.clock.advance(Duration::from_secs(24 * 3600 + 121));
    let bots = admin
        .list_bots(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .bots;
    assert_eq!(bots.len(), 1);
    assert!(!bots[0].locked);
}
