//! Administration: CRUD, bots, CAs, host certificates, events.

use machine_id_proto::v1;
use tonic::Code;

use crate::support::*;

fn role(name: &str, logins: &[&str]) -> v1::Role {
    let r = machine_id_types::Role::new(
        name,
        machine_id_types::RoleSpec {
            allow: machine_id_types::RoleConditions {
                logins: logins.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    r.into()
}

fn by(name: &str) -> v1::GetByNameRequest {
    v1::GetByNameRequest { name: name.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_roles_exist() {
    let ts = TestServer::start().await;
    let mut admin = ts.admin().await;
    let roles = admin
        .list_roles(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .roles;
    let names: Vec<String> = roles
        .into_iter()
        .map(|r| r.metadata.unwrap().name)
        .collect();
    assert_eq!(names, ["access", "auditor", "editor"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_crud_on_roles_tokens_nodes_locks() {
    let ts = TestServer::start().await;
    let mut admin = ts.admin().await;

    // Roles: create, create again without force, overwrite, read, delete, delete again.
    admin
        .upsert_role(v1::UpsertRoleRequest {
            role: Some(role("dev", &["ubuntu"])),
            create_only: true,
        })
        .await
        .unwrap();
    let msg = assert_code(
        admin
            .upsert_role(v1::UpsertRoleRequest {
                role: Some(role("dev", &["root"])),
                create_only: true,
            })
            .await,
        Code::AlreadyExists,
        "dev",
    );
    assert!(msg.contains("-f"), "{msg}");
    admin
        .upsert_role(v1::UpsertRoleRequest {
            role: Some(role("dev", &["root"])),
            create_only: false,
        })
        .await
        .unwrap();
    let got = admin.get_role(by("dev")).await.unwrap().into_inner();
    assert_eq!(got.allow.unwrap().logins, ["root"]);
    admin.delete_role(by("dev")).await.unwrap();
    assert_code(admin.delete_role(by("dev")).await, Code::NotFound, "dev");
    assert_code(admin.get_role(by("dev")).await, Code::NotFound, "dev");
    // Invalid resources are refused with the field.
    assert_code(
        admin
            .upsert_role(v1::UpsertRoleRequest {
                role: Some(role("@bad", &[])),
                create_only: true,
            })
            .await,
        Code::InvalidArgument,
        "metadata.name",
    );
    assert_code(
        admin.get_role(by("a/b")).await,
        Code::InvalidArgument,
        "invalid role name",
    );

    // Tokens.
    let token = v1::Token {
        metadata: Some(v1::Metadata {
            name: "iam-token".into(),
            ..Default::default()
        }),
        roles: vec!["Bot".into()],
        join_method: "iam".into(),
        bot_name: Some("robot".into()),
        allow: vec![v1::TokenRule {
            aws_account: Some("111111111111".into()),
            aws_arn: None,
        }],
    };
    admin
        .upsert_token(v1::UpsertTokenRequest {
            token: Some(token.clone()),
            create_only: true,
        })
        .await
        .unwrap();
    assert_code(
        admin
            .upsert_token(v1::UpsertTokenRequest {
                token: Some(token),
                create_only: true,
            })
            .await,
        Code::AlreadyExists,
        "-f",
    );
    let got = admin.get_token(by("iam-token")).await.unwrap().into_inner();
    assert_eq!(got.join_method, "iam");
    assert_eq!(
        admin
            .list_tokens(v1::ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .tokens
            .len(),
        1
    );
    admin.delete_token(by("iam-token")).await.unwrap();
    assert_code(
        admin.delete_token(by("iam-token")).await,
        Code::NotFound,
        "token",
    );

    // Nodes.
    let node: v1::Node = machine_id_types::Node {
        metadata: machine_id_types::Metadata {
            labels: [("env".to_string(), "prod".to_string())].into(),
            ..machine_id_types::Metadata::named("6f0c")
        },
        spec: machine_id_types::NodeSpec {
            addr: "127.0.0.1:22".into(),
            hostname: "node-1".into(),
        },
    }
    .into();
    admin
        .upsert_node(v1::UpsertNodeRequest {
            node: Some(node.clone()),
            create_only: true,
        })
        .await
        .unwrap();
    assert_code(
        admin
            .upsert_node(v1::UpsertNodeRequest {
                node: Some(node),
                create_only: true,
            })
            .await,
        Code::AlreadyExists,
        "6f0c",
    );
    let nodes = admin
        .list_nodes(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].hostname, "node-1");
    assert_eq!(
        admin.get_node(by("6f0c")).await.unwrap().into_inner().addr,
        "127.0.0.1:22"
    );
    admin.delete_node(by("6f0c")).await.unwrap();
    assert_code(
        admin.delete_node(by("6f0c")).await,
        Code::NotFound,
        "node \"6f0c\" not found",
    );

    // Locks.
    let lock = v1::Lock {
        metadata: Some(v1::Metadata {
            name: "l1".into(),
            ..Default::default()
        }),
        target_role: Some("editor".into()),
        message: "maintenance".into(),
        ..Default::default()
    };
    let made = admin
        .upsert_lock(v1::UpsertLockRequest {
            lock: Some(lock),
            create_only: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(made.created.is_some());
    assert_eq!(
        admin
            .list_locks(v1::ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .locks
            .len(),
        1
    );
    admin.delete_lock(by("l1")).await.unwrap();
    assert_code(admin.delete_lock(by("l1")).await, Code::NotFound, "l1");

    // Every write is in the audit log.
    assert!(events(&mut admin, "resource.put").await.len() >= 4);
    assert!(events(&mut admin, "resource.delete").await.len() >= 3);
    assert_eq!(events(&mut admin, "lock.create").await.len(), 1);
    assert_eq!(events(&mut admin, "lock.delete").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_add_ls_rm() {
    let ts = TestServer::start().await;
    let mut admin = ts.admin().await;
    let resp = admin
        .create_bot(v1::CreateBotRequest {
            name: "robot".into(),
            roles: vec!["access".into()],
            logins: vec!["root".into()],
            token_ttl_seconds: 600,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.join_method, "token");
    let expires = machine_id_proto::timestamp_to(&resp.token_expires.unwrap()).unwrap();
    assert_eq!((expires - ts.clock.now()).whole_seconds(), 599);
    let bot = resp.bot.unwrap();
    assert_eq!(
        (bot.name.as_str(), bot.user_name.as_str()),
        ("robot", "bot-robot")
    );

    // The user, role and token the facts file describes.
    let user = admin.get_user(by("bot-robot")).await.unwrap().into_inner();
    assert_eq!(user.roles, ["bot-robot"]);
    let labels = user.metadata.unwrap().labels;
    assert_eq!(labels["generation"], "0");
    assert_eq!(labels["teleport.internal/bot"], "robot");
    assert_eq!(user.traits["logins"].values, ["root"]);
    let role = admin.get_role(by("bot-robot")).await.unwrap().into_inner();
    assert_eq!(
        role.allow.unwrap().impersonate_roles.unwrap().values,
        ["access"]
    );
    let tokens = admin
        .list_tokens(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .tokens;
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].bot_name.as_deref(), Some("robot"));
    // The secret is answered once; the store, and so the listing, holds only its hash.
    assert_eq!(
        tokens[0].metadata.as_ref().unwrap().name,
        format!(
            "sha256:{}",
            &machine_id_join::token_hash(&resp.token_name)[..12]
        )
    );

    // Twice is an error.
    assert_code(
        admin
            .create_bot(v1::CreateBotRequest {
                name: "robot".into(),
                roles: vec!["access".into()],
                ..Default::default()
            })
            .await,
        Code::AlreadyExists,
        "bots rm robot",
    );

    let bots = admin
        .list_bots(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .bots;
    assert_eq!(bots.len(), 1);
    assert_eq!(bots[0].roles, ["access"]);
    assert!(!bots[0].locked);
    assert_eq!(
        admin
            .get_bot(by("robot"))
            .await
            .unwrap()
            .into_inner()
            .user_name,
        "bot-robot"
    );

    // A role in use by a bot cannot be deleted.
    assert_code(
        admin.delete_role(by("access")).await,
        Code::FailedPrecondition,
        "bots rm robot",
    );
    assert_code(
        admin.delete_role(by("bot-robot")).await,
        Code::FailedPrecondition,
        "bots rm robot",
    );

    admin.delete_bot(by("robot")).await.unwrap();
    assert!(
        admin
            .list_bots(v1::ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .bots
            .is_empty()
    );
    assert!(
        admin
            .list_tokens(v1::ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .tokens
            .is_empty()
    );
    assert_code(
        admin.get_role(by("bot-robot")).await,
        Code::NotFound,
        "bot-robot",
    );
    assert_code(
        admin.get_user(by("bot-robot")).await,
        Code::NotFound,
        "bot-robot",
    );
    assert_code(admin.delete_bot(by("robot")).await, Code::NotFound, "robot");
    assert_code(
        ts.join(&resp.token_name).await,
        Code::PermissionDenied,
        "not valid",
    );
    assert_eq!(events(&mut admin, "bot.create").await.len(), 1);
    assert_eq!(events(&mut admin, "bot.delete").await.len(), 1);
    // Now the role can go.
    admin.delete_role(by("access")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_role_in_bots_add_creates_nothing() {
    let ts = TestServer::start().await;
    let mut admin = ts.admin().await;
    let msg = assert_code(
        admin
            .create_bot(v1::CreateBotRequest {
                name: "robot".into(),
                roles: vec!["access".into(), "nosuch".into()],
                ..Default::default()
            })
            .await,
        Code::NotFound,
        "nosuch",
    );
    assert!(msg.contains("not created"), "{msg}");
    assert!(
        admin
            .list_bots(v1::ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .bots
            .is_empty()
    );
    assert!(
        admin
            .list_users(v1::ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .users
            .is_empty()
    );
    assert!(
        admin
            .list_tokens(v1::ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .tokens
            .is_empty()
    );
    assert_code(
        admin.get_role(by("bot-robot")).await,
        Code::NotFound,
        "bot-robot",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_add_with_an_existing_token() {
    let ts = TestServer::start().await;
    let mut admin = ts.admin().await;
    let token = |bot: &str, roles: Vec<String>| v1::Token {
        metadata: Some(v1::Metadata {
            name: format!("iam-{bot}"),
            ..Default::default()
        }),
        roles,
        join_method: "iam".into(),
        bot_name: Some(bot.into()),
        allow: vec![v1::TokenRule {
            aws_account: Some("111111111111".into()),
            aws_arn: None,
        }],
    };
    admin
        .upsert_token(v1::UpsertTokenRequest {
            token: Some(token("robot", vec!["Bot".into()])),
            create_only: true,
        })
        .await
        .unwrap();
    admin
        .upsert_token(v1::UpsertTokenRequest {
            token: Some(token("other", vec!["Bot".into()])),
            create_only: true,
        })
        .await
        .unwrap();
    let add = |name: &str, token: &str| v1::CreateBotRequest {
        name: name.into(),
        roles: vec!["access".into()],
        token_name: token.into(),
        ..Default::default()
    };
    assert_code(
        admin.create_bot(add("robot", "missing")).await,
        Code::NotFound,
        "missing",
    );
    assert_code(
        admin.create_bot(add("robot", "iam-other")).await,
        Code::InvalidArgument,
        "bot_name",
    );
    let resp = admin
        .create_bot(add("robot", "iam-robot"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.join_method, "iam");
    assert_eq!(resp.token_name, "iam-robot");
    // The named token is not touched when the bot goes away.
    admin.delete_bot(by("robot")).await.unwrap();
    assert_eq!(
        admin
            .list_tokens(v1::ListRequest {})
            .await
            .unwrap()
            .into_inner()
            .tokens
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_ca_and_sign_host_cert() {
    let ts = TestServer::start().await;
    let mut admin = ts.admin().await;
    let user = admin
        .export_ca(v1::ExportCaRequest {
            ca_type: "user".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        user.ssh_public_keys[0].starts_with("ssh-ed25519 "),
        "{:?}",
        user.ssh_public_keys
    );
    let host = admin
        .export_ca(v1::ExportCaRequest {
            ca_type: "host".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(host.ssh_public_keys, user.ssh_public_keys);
    let tls = admin
        .export_ca(v1::ExportCaRequest {
            ca_type: "tls".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(tls.tls_certs.len(), 1);
    assert_code(
        admin
            .export_ca(v1::ExportCaRequest {
                ca_type: "db".into(),
            })
            .await,
        Code::InvalidArgument,
        "user, host or tls",
    );

    let key = new_key();
    let resp = admin
        .sign_host_cert(v1::SignHostCertRequest {
            public_key: key.public_key().to_openssh(),
            hostnames: vec!["node-1".into()],
            ttl_seconds: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resp.ssh_cert.contains("-cert-v01@openssh.com "));
    assert_eq!(resp.host_ca_key, host.ssh_public_keys[0]);
    let ev = events(&mut admin, "cert.host").await;
    assert_eq!(ev.len(), 1);
    assert!(
        ev[0].fields_json.contains("node-1.example.com"),
        "{}",
        ev[0].fields_json
    );
    assert_code(
        admin
            .sign_host_cert(v1::SignHostCertRequest {
                public_key: "nonsense".into(),
                hostnames: vec!["n".into()],
                ttl_seconds: 0,
            })
            .await,
        Code::InvalidArgument,
        "public_key",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_filter_and_limit_newest_last() {
    let ts = TestServer::start().await;
    let mut admin = ts.admin().await;
    for i in 0..5 {
        admin
            .upsert_role(v1::UpsertRoleRequest {
                role: Some(role(&format!("r{i}"), &[])),
                create_only: true,
            })
            .await
            .unwrap();
    }
    let ev = admin
        .search_events(v1::SearchEventsRequest {
            event_type: "resource.put".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(ev.len(), 2);
    assert!(ev[0].message.contains("r3"), "{:?}", ev[0].message);
    assert!(ev[1].message.contains("r4"), "{:?}", ev[1].message);
}
