//! The generic resource calls (any `ResourceKind`) and finding a node by host name.

use crate::TestServer;
use machine_id_client::ClientError;
use machine_id_types::{Metadata, Node, NodeSpec, Resource, ResourceKind, Role, User, UserSpec};
use std::time::Duration;

fn node(id: &str, hostname: &str) -> Node {
    Node {
        metadata: Metadata::named(id),
        spec: NodeSpec {
            addr: "127.0.0.1:22".into(),
            hostname: hostname.into(),
        },
    }
}

#[tokio::test]
async fn generic_calls_round_trip_a_role() {
    let t = TestServer::start().await;
    let admin = t.admin().await;
    let mut role: Role = admin.get_role("access").await.unwrap();
    role.metadata.name = "dev".into();
    assert!(
        !admin
            .resource_exists(ResourceKind::Role, "dev")
            .await
            .unwrap()
    );
    let stored = admin
        .upsert_resource(Resource::Role(role.clone()), true)
        .await
        .unwrap();
    assert_eq!(stored, Resource::Role(role.clone()));
    let e = admin
        .upsert_resource(Resource::Role(role.clone()), true)
        .await
        .unwrap_err();
    assert!(e.is_already_exists(), "{e:?}");
    assert_eq!(
        admin.get_resource(ResourceKind::Role, "dev").await.unwrap(),
        Resource::Role(role.clone())
    );
    let listed = admin.list_resources(ResourceKind::Role).await.unwrap();
    assert!(listed.contains(&Resource::Role(role)), "{listed:?}");
    assert!(listed.iter().all(|r| r.kind() == ResourceKind::Role));
    assert!(
        admin
            .resource_exists(ResourceKind::Role, "dev")
            .await
            .unwrap()
    );
    admin
        .delete_resource(ResourceKind::Role, "dev")
        .await
        .unwrap();
    assert!(
        !admin
            .resource_exists(ResourceKind::Role, "dev")
            .await
            .unwrap()
    );
    let e = admin
        .get_resource(ResourceKind::Role, "dev")
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
}

#[tokio::test]
async fn generic_calls_cover_tokens_users_nodes_and_locks() {
    let t = TestServer::start().await;
    let admin = t.admin().await;
    let created = admin
        .create_bot("robot", &["access".into()], &[], None, Duration::ZERO)
        .await
        .unwrap();
    let tokens = admin.list_resources(ResourceKind::Token).await.unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    let token = admin
        .get_resource(ResourceKind::Token, created.token.expose())
        .await
        .unwrap();
    assert_eq!(token, tokens[0]);
    let user = admin
        .get_resource(ResourceKind::User, "bot-robot")
        .await
        .unwrap();
    assert_eq!(user.name(), "bot-robot");
    assert!(
        admin
            .list_resources(ResourceKind::User)
            .await
            .unwrap()
            .contains(&user)
    );

    admin
        .upsert_resource(Resource::Node(node("n1", "web")), true)
        .await
        .unwrap();
    assert_eq!(
        admin.get_resource(ResourceKind::Node, "n1").await.unwrap(),
        Resource::Node(node("n1", "web"))
    );
    assert_eq!(
        admin.list_resources(ResourceKind::Node).await.unwrap(),
        vec![Resource::Node(node("n1", "web"))]
    );
    admin
        .delete_resource(ResourceKind::Node, "n1")
        .await
        .unwrap();
    assert!(admin.list_nodes().await.unwrap().is_empty());

    // The server has no call for one lock: it is found in the list.
    let lock = admin.lock_bot("robot", "test", None).await.unwrap();
    let id = lock.metadata.name.clone();
    assert_eq!(
        admin.get_resource(ResourceKind::Lock, &id).await.unwrap(),
        Resource::Lock(lock)
    );
    assert!(
        admin
            .resource_exists(ResourceKind::Lock, &id)
            .await
            .unwrap()
    );
    let e = admin
        .get_resource(ResourceKind::Lock, "nope")
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert_eq!(e.to_string(), "lock \"nope\" not found");
    admin
        .delete_resource(ResourceKind::Lock, &id)
        .await
        .unwrap();
    assert!(
        !admin
            .resource_exists(ResourceKind::Lock, &id)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn users_are_not_written_through_the_generic_calls() {
    let t = TestServer::start().await;
    let admin = t.admin().await;
    let user = User {
        metadata: Metadata::named("mallory"),
        spec: UserSpec {
            roles: vec!["editor".into()],
            ..UserSpec::default()
        },
    };
    let e = admin
        .upsert_resource(Resource::User(user), false)
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::InvalidArgument(_)), "{e:?}");
    assert!(e.to_string().contains("managed by the auth server"), "{e}");
    let e = admin
        .delete_resource(ResourceKind::User, "admin")
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::InvalidArgument(_)), "{e:?}");
    assert!(
        !admin
            .resource_exists(ResourceKind::User, "mallory")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn nodes_are_found_by_id_or_by_a_host_name_only_one_has() {
    let t = TestServer::start().await;
    let admin = t.admin().await;
    for (id, name) in [("id-1", "web"), ("id-2", "db"), ("id-3", "db")] {
        admin.upsert_node(node(id, name), true).await.unwrap();
    }
    assert_eq!(admin.find_node("id-2").await.unwrap(), node("id-2", "db"));
    assert_eq!(admin.find_node("web").await.unwrap(), node("id-1", "web"));
    let e = admin.find_node("db").await.unwrap_err();
    assert!(matches!(e, ClientError::InvalidArgument(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "2 nodes are named \"db\"; use the node's id (tctl get nodes --format=yaml shows it)"
    );
    let e = admin.find_node("mail").await.unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert_eq!(e.to_string(), "node \"mail\" not found (by id or name)");
}
