//! The auth server's README flags end to end: `--config FILE` alone, `--proxy-public-addr`
//! reaching Ping (`tctl status`) and the `ssh_config`/`known_hosts` tbot writes, and
//! `--no-proxy` turning the proxy off on the auth port.

use std::path::{Path, PathBuf};
use std::process::Child;

use crate::limits::{auth_server, run, spawn_ready};
use machine_id_e2e::guide::{BotJoin, add_bot, free_port, tbot_start_args};
use machine_id_e2e::{AuthServer, Output, run_tbot, run_tctl};

/// `tbot start --oneshot` for `join`; returns the destination directory.
fn oneshot(auth: &AuthServer, join: &BotJoin) -> PathBuf {
    let scratch = auth.scratch();
    let (data, dest) = (scratch.join("bot-data"), scratch.join("dest"));
    let mut args = tbot_start_args(auth, join, &data, &dest);
    args.push("--oneshot".into());
    run_tbot(&args, &[]).success();
    dest
}

/// What `ssh`'s ProxyCommand runs: `tbot proxy ssh` to `target` through `proxy`.
fn proxy_ssh(dest: &Path, proxy: &str, target: &str) -> Output {
    run_tbot(
        &[
            "proxy",
            &format!("--destination-dir={}", dest.display()),
            &format!("--proxy={proxy}"),
            "ssh",
            "--cluster=example.com",
            target,
        ],
        &[],
    )
}

fn status_json(auth: &AuthServer) -> serde_json::Value {
    serde_json::from_str(&auth.tctl(&["status", "--format=json"]).success()).unwrap()
}

/// A node registered at a port nothing listens on.
fn add_dead_node(auth: &AuthServer) {
    auth.tctl(&[
        "nodes",
        "add",
        "--name=node-name",
        &format!("--addr=127.0.0.1:{}", free_port()),
    ])
    .success();
}

#[test]
fn proxy_public_addr_reaches_ping_and_the_ssh_config_tbot_writes() {
    let auth = AuthServer::start_with_args(
        "example.com",
        &["--proxy-public-addr", "proxy.example.com:3080"],
    );
    let status = auth.tctl(&["status"]).success();
    assert!(
        status.contains("Proxy:           proxy.example.com:3080\n"),
        "{status}"
    );
    assert_eq!(
        status_json(&auth)["proxy_public_addr"],
        "proxy.example.com:3080"
    );

    let dest = oneshot(&auth, &add_bot(&auth, "robot", "access"));
    let config = std::fs::read_to_string(dest.join("ssh_config")).unwrap();
    assert!(
        config.contains("Host *.example.com !proxy.example.com\n"),
        "{config}"
    );
    assert!(
        config.contains(" --proxy=proxy.example.com:3080 ssh --cluster=example.com %r@%h:%p"),
        "{config}"
    );
    assert!(!config.contains(&auth.addr), "{config}");
    let known_hosts = std::fs::read_to_string(dest.join("known_hosts")).unwrap();
    assert!(
        known_hosts.starts_with("@cert-authority proxy.example.com,example.com,*.example.com "),
        "{known_hosts}"
    );

    // Without the flag, Ping names the auth address (the proxy shares its port).
    let plain = AuthServer::start();
    assert_eq!(
        status_json(&plain)["proxy_public_addr"],
        plain.addr.as_str()
    );
    let dest = oneshot(&plain, &add_bot(&plain, "robot", "access"));
    let config = std::fs::read_to_string(dest.join("ssh_config")).unwrap();
    assert!(
        config.contains(&format!(" --proxy={} ssh ", plain.addr)),
        "{config}"
    );
}

#[test]
fn no_proxy_turns_the_proxy_off() {
    // With the proxy (the default), `tbot proxy ssh` on the auth port reaches the proxy,
    // which resolves the node and finds it down.
    let with = AuthServer::start();
    add_dead_node(&with);
    let dest = oneshot(&with, &add_bot(&with, "robot", "access"));
    let out = proxy_ssh(&dest, &with.addr, "root@node-name.example.com:22");
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("unreachable"), "{out:?}");

    let without = AuthServer::start_with_args("example.com", &["--no-proxy"]);
    let status = without.tctl(&["status"]).success();
    assert!(!status.contains("Proxy:"), "{status}");
    assert!(status_json(&without)["proxy_public_addr"].is_null());
    assert!(
        !without.log().contains("SSH proxy listening"),
        "{}",
        without.log()
    );
    add_dead_node(&without);
    let dest = oneshot(&without, &add_bot(&without, "robot", "access"));
    let out = proxy_ssh(&dest, &without.addr, "root@node-name.example.com:22");
    assert_ne!(out.code, 0, "{out:?}");
    // Nothing resolved the node: the connection was refused before any proxy.
    assert!(!out.stderr.contains("unreachable"), "{out:?}");
    assert!(
        without
            .tctl(&["events", "ls", "--type=proxy.denied", "--format=json"])
            .success()
            .trim()
            == "[]",
        "no proxy ran to refuse anything"
    );
    // The auth service itself works as before.
    without.tctl(&["bots", "ls"]).success();
}

#[test]
fn no_proxy_conflicts_with_the_proxy_flags() {
    for flag in [
        "--proxy-public-addr=proxy.example.com:3080",
        "--proxy-listen=127.0.0.1:0",
    ] {
        let out = run(auth_server(&["start", "--no-proxy", flag]));
        assert_eq!(out.code, 2, "{out:?}");
        assert!(out.stderr.contains("--no-proxy"), "{out:?}");
    }
}

/// An `auth-server start --config FILE` process, killed when dropped.
struct ConfigServer(Child);

impl Drop for ConfigServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn auth_server_runs_from_a_config_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let cfg = dir.path().join("auth.yaml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir: {}\nauth_service:\n  cluster_name: cfg.example.com\n  listen_addr: {listen}\n  ca_suite: legacy\nproxy_service:\n  public_addr: proxy.cfg.example.com:3080\n",
            data.display()
        ),
    )
    .unwrap();
    let mut server = ConfigServer(spawn_ready(auth_server(&[
        "start",
        "--config",
        cfg.to_str().unwrap(),
    ])));

    // Everything came from the file: data dir, cluster name, listen address (tctl reaches
    // it there), CA suite, proxy public address.
    assert!(data.join("backend.db").is_file());
    let identity = data.join("admin");
    let tctl = |args: &[&str]| {
        let mut full = vec![
            "--auth-server",
            &listen,
            "--identity",
            identity.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        run_tctl(&full)
    };
    let status: serde_json::Value =
        serde_json::from_str(&tctl(&["status", "--format=json"]).success()).unwrap();
    assert_eq!(status["cluster_name"], "cfg.example.com");
    assert_eq!(status["proxy_public_addr"], "proxy.cfg.example.com:3080");
    let user_ca = tctl(&["auth", "export", "--type=user"]).success();
    assert!(user_ca.starts_with("ssh-rsa "), "legacy suite: {user_ca}");

    // SIGTERM stops it cleanly.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(server.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(server.0.wait().unwrap().success());
}
