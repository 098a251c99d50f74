//! A wrong or expired identity, an unreachable server: clear messages, exit code 1.

use machine_id_e2e::{AuthServer, run_tctl};
use machine_id_mint::{CaKeys, PrivateKey, Suite};
use machine_id_types::Identity;
use time::{Duration, OffsetDateTime};

#[test]
fn wrong_identity_dir_is_named() {
    let auth = AuthServer::start();
    let dir = auth.scratch().join("no-such-identity");
    let err = run_tctl(&[
        "--auth-server",
        &auth.addr,
        "--identity",
        dir.to_str().unwrap(),
        "get",
        "roles",
    ])
    .failure();
    assert!(err.contains(dir.to_str().unwrap()), "{err}");
    assert!(err.contains("--identity"), "{err}");
}

#[test]
fn identity_of_another_cluster_is_refused() {
    let a = AuthServer::start();
    let b = AuthServer::start_cluster("other.example.com");
    let err = run_tctl(&[
        "--auth-server",
        &a.addr,
        "--identity",
        b.identity_dir().to_str().unwrap(),
        "get",
        "roles",
    ])
    .failure();
    assert!(err.contains("not signed by a CA"), "{err}");
    assert!(err.contains("for this cluster"), "{err}");
}

/// Writes an admin-like identity whose certificate expired a day ago.
fn expired_identity(dir: &std::path::Path) {
    let now = OffsetDateTime::now_utc();
    let then = now - Duration::days(30);
    let ca = CaKeys::generate("example.com", Suite::Default, then)
        .unwrap()
        .signer()
        .unwrap();
    let key = PrivateKey::generate(Suite::Default).unwrap();
    let identity = Identity {
        username: "admin".into(),
        roles: vec!["@admin".into()],
        logins: vec![],
        traits: Default::default(),
        renewable: false,
        generation: 0,
        impersonator: None,
        disallow_reissue: false,
        cluster: "example.com".into(),
        expires: (now - Duration::days(1)).replace_nanosecond(0).unwrap(),
    };
    let cert = ca
        .sign_user_tls_cert(&key.public_key(), &identity, then)
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("key"), key.to_pem()).unwrap();
    std::fs::write(dir.join("tlscert"), machine_id_mint::cert_der_to_pem(&cert)).unwrap();
    std::fs::write(
        dir.join("tlscacerts"),
        machine_id_mint::cert_der_to_pem(ca.tls_ca_cert_der()),
    )
    .unwrap();
}

#[test]
fn expired_identity_says_so_and_what_to_do() {
    let auth = AuthServer::start();
    let dir = auth.scratch().join("expired");
    expired_identity(&dir);
    let err = run_tctl(&[
        "--auth-server",
        &auth.addr,
        "--identity",
        dir.to_str().unwrap(),
        "get",
        "roles",
    ])
    .failure();
    assert!(err.contains("expired"), "{err}");
    assert!(err.contains(dir.join("tlscert").to_str().unwrap()), "{err}");
    assert!(err.contains("restart auth-server"), "{err}");
}

#[test]
fn unreachable_server_says_so() {
    let auth = AuthServer::start();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let err = run_tctl(&[
        "--auth-server",
        &addr,
        "--identity",
        auth.identity_dir().to_str().unwrap(),
        "status",
    ])
    .failure();
    assert!(
        err.contains(&format!("cannot reach the auth server at {addr}")),
        "{err}"
    );
    assert!(err.contains("is it running?"), "{err}");
}

#[test]
fn env_vars_select_server_and_identity() {
    let auth = AuthServer::start();
    let out = std::process::Command::new(&machine_id_e2e::binaries().tctl)
        .args(["get", "roles"])
        .env("TELEPORT_AUTH_SERVER", &auth.addr)
        .env("TCTL_IDENTITY", auth.identity_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Role "));
}

#[test]
fn usage_errors_exit_2() {
    let out = run_tctl(&["get"]);
    assert_eq!(out.code, 2, "{out:?}");
    let out = run_tctl(&["frobnicate"]);
    assert_eq!(out.code, 2, "{out:?}");
}
