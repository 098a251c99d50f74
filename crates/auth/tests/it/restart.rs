//! Restarts keep everything.

use machine_id_proto::v1;
use tonic::Code;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_cas_roles_bots_tokens_and_generation() {
    let mut ts = TestServer::start().await;
    assert!(ts.server().first_start());
    let pin = ts.server().ca_pins()[0].to_string();
    let token = ts.add_bot("robot", &["access"], &["root"]).await;
    let gen1 = ts.join(&token).await.unwrap();
    let gen2 = generate(&mut ts.client(&gen1).await, &[], 0).await.unwrap();
    let spare = ts.add_bot("spare", &["access"], &[]).await;
    let mut admin = ts.admin().await;
    admin
        .delete_role(v1::GetByNameRequest {
            name: "auditor".into(),
        })
        .await
        .unwrap();
    drop(admin);

    ts.restart().await;
    assert!(!ts.server().first_start());
    assert_eq!(ts.server().ca_pins()[0].to_string(), pin);
    let mut admin = ts.admin().await;
    let roles: Vec<String> = admin
        .list_roles(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .roles
        .into_iter()
        .map(|r| r.metadata.unwrap().name)
        .collect();
    assert_eq!(
        roles,
        ["access", "bot-robot", "bot-spare", "editor"],
        "a deleted default role stays deleted"
    );
    let bots = admin
        .list_bots(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .bots;
    assert_eq!(bots.len(), 2);

    // The certificate from before the restart still renews, with the stored generation.
    let gen3 = generate(&mut ts.client(&gen2).await, &[], 0).await.unwrap();
    assert_eq!(gen3.identity().generation, 3);
    // And the replay protection survived too.
    assert_code(
        generate(&mut ts.client(&gen1).await, &[], 0).await,
        Code::PermissionDenied,
        "stolen",
    );
    // The unused token still works, once.
    ts.join(&spare).await.unwrap();
    assert_code(ts.join(&spare).await, Code::PermissionDenied, "not valid");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_cluster_name_is_refused_naming_both() {
    let mut ts = TestServer::start().await;
    ts.stop().await;
    let err = start_in(ts.dir.path(), ts.clock.clone(), "other.example.com")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("other.example.com") && err.contains("\"example.com\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_identity_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut ts = TestServer::start().await;
    let dir = ts.server().admin_identity_dir().to_path_buf();
    let key_before = std::fs::read_to_string(dir.join("key")).unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&ts.data_dir()), 0o700);
    for f in ["key", "tlscert", "tlscacerts"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    let cert =
        machine_id_mint::certs_from_pem(&std::fs::read_to_string(dir.join("tlscert")).unwrap())
            .unwrap();
    let id = machine_id_mint::parse_tls_identity(&cert[0]).unwrap();
    assert_eq!(id.username, "admin");
    assert_eq!(id.roles, ["@admin"]);
    assert!(id.expires - ts.clock.now() > time::Duration::days(300));
    ts.restart().await;
    assert_eq!(
        std::fs::read_to_string(dir.join("key")).unwrap(),
        key_before,
        "the key is kept"
    );
    ts.admin()
        .await
        .list_roles(v1::ListRequest {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_completes_with_clients_connected() {
    let mut ts = TestServer::start().await;
    let mut admin = ts.admin().await;
    admin.list_roles(v1::ListRequest {}).await.unwrap();
    // A generous bound that only catches a hang: a shutdown that waited for the idle client
    // would wait for its 5-minute idle timeout (or forever).
    tokio::time::timeout(std::time::Duration::from_secs(120), ts.stop())
        .await
        .expect("shutdown does not wait for idle clients");
    assert!(admin.list_roles(v1::ListRequest {}).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_suite_serves_joins_and_renewals() {
    let dir = tempfile::tempdir().unwrap();
    let clock = std::sync::Arc::new(machine_id_types::FakeClock::new(
        time::OffsetDateTime::now_utc(),
    ));
    let mut config = machine_id_auth::AuthConfig::new(
        dir.path().join("data"),
        CLUSTER,
        "127.0.0.1:0".parse().unwrap(),
    );
    config.clock = clock.clone();
    config.suite = machine_id_mint::Suite::Legacy;
    let server = machine_id_auth::AuthServer::start(config).await.unwrap();
    let mut ts = TestServer {
        server: Some(server),
        dir,
        clock,
    };
    let user_ca = ts
        .admin()
        .await
        .export_ca(v1::ExportCaRequest {
            ca_type: "user".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        user_ca.ssh_public_keys[0].starts_with("ssh-rsa "),
        "{:?}",
        user_ca.ssh_public_keys
    );
    let token = ts.add_bot("robot", &["access"], &[]).await;
    let bot = ts.join(&token).await.unwrap();
    let renewed = generate(&mut ts.client(&bot).await, &[], 0).await.unwrap();
    assert_eq!(renewed.identity().generation, 2);
    ts.stop().await;
}
