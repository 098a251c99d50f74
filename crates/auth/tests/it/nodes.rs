//! ListNodes: every node by rule (admin, `node:list`), otherwise only the nodes the caller's
//! roles reach by `node_labels` (what `tsh ls` shows a bot's output certificate).

use std::collections::BTreeMap;

use machine_id_proto::v1;
use machine_id_types::{LabelValues, Role, RoleConditions, RoleSpec};

use crate::support::*;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, LabelValues> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), LabelValues::One(v.to_string())))
        .collect()
}

fn node(id: &str, hostname: &str, env: &str) -> v1::Node {
    machine_id_types::Node {
        metadata: machine_id_types::Metadata {
            labels: [("env".to_string(), env.to_string())].into(),
            ..machine_id_types::Metadata::named(id)
        },
        spec: machine_id_types::NodeSpec {
            addr: "127.0.0.1:22".into(),
            hostname: hostname.into(),
        },
    }
    .into()
}

async fn upsert_role(ts: &TestServer, name: &str, allow: RoleConditions, deny: RoleConditions) {
    let role: v1::Role = Role::new(
        name,
        RoleSpec {
            allow,
            deny,
            ..Default::default()
        },
    )
    .into();
    ts.admin()
        .await
        .upsert_role(v1::UpsertRoleRequest {
            role: Some(role),
            create_only: true,
        })
        .await
        .unwrap();
}

/// The hostnames `client` lists, sorted.
async fn hostnames(
    client: &mut v1::auth_service_client::AuthServiceClient<tonic::transport::Channel>,
) -> Vec<String> {
    let mut names: Vec<String> = client
        .list_nodes(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes
        .into_iter()
        .map(|n| n.hostname)
        .collect();
    names.sort();
    names
}

/// A client with bot `name`'s output certificate impersonating `role`.
async fn output_client(
    ts: &TestServer,
    name: &str,
    role: &str,
) -> v1::auth_service_client::AuthServiceClient<tonic::transport::Channel> {
    let token = ts.add_bot(name, &[role], &["root"]).await;
    let bot = ts.join(&token).await.unwrap();
    let out = generate(&mut ts.client(&bot).await, &[role], 0)
        .await
        .unwrap();
    assert_eq!(out.identity().roles, [role]);
    ts.client(&out).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_nodes_filters_by_the_callers_node_labels() {
    let ts = TestServer::start().await;
    let mut admin = ts.admin().await;
    for n in [
        node("id-a", "node-a", "dev"),
        node("id-b", "node-b", "prod"),
    ] {
        admin
            .upsert_node(v1::UpsertNodeRequest {
                node: Some(n),
                create_only: true,
            })
            .await
            .unwrap();
    }
    upsert_role(
        &ts,
        "dev-only",
        RoleConditions {
            logins: vec!["root".into()],
            node_labels: labels(&[("env", "dev")]),
            ..Default::default()
        },
        RoleConditions::default(),
    )
    .await;
    upsert_role(
        &ts,
        "all-but-prod",
        RoleConditions {
            node_labels: labels(&[("*", "*")]),
            ..Default::default()
        },
        RoleConditions {
            node_labels: labels(&[("env", "prod")]),
            ..Default::default()
        },
    )
    .await;
    upsert_role(
        &ts,
        "no-nodes",
        RoleConditions {
            logins: vec!["root".into()],
            ..Default::default()
        },
        RoleConditions::default(),
    )
    .await;

    let both = ["node-a", "node-b"];
    // By rule: the admin and `editor` (node:list) see every node.
    assert_eq!(hostnames(&mut admin).await, both);
    assert_eq!(
        hostnames(&mut output_client(&ts, "ed", "editor").await).await,
        both
    );
    // By labels: `access` has `'*': '*'`.
    assert_eq!(
        hostnames(&mut output_client(&ts, "robot", "access").await).await,
        both
    );
    assert_eq!(
        hostnames(&mut output_client(&ts, "devbot", "dev-only").await).await,
        ["node-a"]
    );
    // A deny on the labels wins over `'*': '*'`.
    assert_eq!(
        hostnames(&mut output_client(&ts, "nprod", "all-but-prod").await).await,
        ["node-a"]
    );
    // No node_labels: an empty list, not an error.
    assert!(
        hostnames(&mut output_client(&ts, "none", "no-nodes").await)
            .await
            .is_empty()
    );
    // The bot's own identity (role bot-robot: no node_labels, no node rule) too.
    let token = ts.add_bot("own", &["access"], &[]).await;
    let own = ts.join(&token).await.unwrap();
    assert!(hostnames(&mut ts.client(&own).await).await.is_empty());

    // None of these was a denial.
    assert!(
        events(&mut admin, machine_id_types::event_types::ACCESS_DENIED)
            .await
            .is_empty(),
        "listing nodes by labels is not a denied call"
    );
}
