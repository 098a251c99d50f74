//! End-to-end suite of SSH access (the guide's steps 2–7): the real `auth-server` with its
//! proxy on the auth port, the real `tctl` and `tbot`, a real OpenSSH `sshd` node, and the
//! real `ssh` client going through `tbot proxy ssh` as the generated `ssh_config` says. sshd
//! and ssh are the judges; the server's audit log is read back with `tctl events ls`.
#![allow(clippy::unwrap_used, missing_docs)] // tests

use std::path::Path;
use std::time::Duration;

use machine_id_e2e::guide::{BotJoin, Sshd, add_bot, free_port, ssh, tbot_start_args, wait_until};
use machine_id_e2e::{AuthServer, run_tbot, spawn_tbot};

fn oneshot(auth: &AuthServer, join: &BotJoin, data: &Path, dest: &Path) {
    let mut args = tbot_start_args(auth, join, data, dest);
    args.push("--oneshot".into());
    run_tbot(&args, &[]).success();
}

fn principals(dest: &Path) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(dest.join("sshcert"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("Principals:")
        .nth(1)
        .and_then(|r| r.split("Critical Options:").next())
        .unwrap_or_default()
        .to_string()
}

fn events(auth: &AuthServer, kind: &str) -> Vec<serde_json::Value> {
    let out = auth
        .tctl(&["events", "ls", &format!("--type={kind}"), "--format=json"])
        .success();
    serde_json::from_str(&out).unwrap()
}

#[test]
fn the_guide_ssh_login_is_refused_without_root_then_works_after_the_role_edit() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let node = Sshd::start(&auth, "node-name", &scratch.join("node"));
    add_node(&auth, &node, "node-name", "env=dev");

    // Step 2-4: the bot, then tbot once.
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("machine-id"));
    oneshot(&auth, &join, &data, &dest);
    let config = dest.join("ssh_config");

    // Step 7 as typed: `access` allows {{internal.logins}} and the bot has none, so sshd
    // refuses the certificate.
    let out = ssh(&config, "root@node-name.example.com", &["echo", "hello"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("Permission denied (publickey)"),
        "{}\nsshd:\n{}",
        out.stderr,
        node.log()
    );
    // The proxy let it through (labels allow), so the refusal was sshd's.
    assert!(!events(&auth, "proxy.connect").is_empty());

    // Now a long-running tbot; then the fix of the guide: add root to the role's logins.
    let log = scratch.join("tbot.log");
    // A one-hour renewal interval (and certificate TTL above it) rules out a scheduled
    // renewal during this test: only the SIGHUP below can bring the new certificate.
    let mut args = tbot_start_args(&auth, &join, &data, &dest);
    args.extend(["--renewal-interval", "1h", "--certificate-ttl", "2h"].map(String::from));
    let mut tbot = spawn_tbot(&args, &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(machine_id_e2e::guide::HANG, "the first renewal", || {
        read_log().contains("wrote the output certificates")
    });
    let yaml = auth.tctl(&["get", "roles/access"]).success();
    assert!(yaml.contains("{{internal.logins}}"), "{yaml}");
    // As a person edits it: one more item under `logins`, indented like the first.
    let mut edited = String::new();
    for line in yaml.lines() {
        edited.push_str(line);
        edited.push('\n');
        if line.contains("{{internal.logins}}") && line.trim_start().starts_with("- ") {
            let indent = &line[..line.len() - line.trim_start().len()];
            edited.push_str(&format!("{indent}- root\n"));
        }
    }
    assert!(edited.contains("- root"), "could not add root to:\n{yaml}");
    let file = scratch.join("access.yaml");
    std::fs::write(&file, edited).unwrap();
    let e = auth.tctl(&["create", file.to_str().unwrap()]).failure();
    assert!(e.contains("-f"), "{e}");
    auth.tctl(&["create", "-f", file.to_str().unwrap()])
        .success();

    // SIGHUP renews now; the new certificate has root among its principals.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(tbot.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    wait_until(
        machine_id_e2e::guide::HANG,
        "a certificate with root",
        || principals(&dest).lines().any(|l| l.trim() == "root"),
    );
    let out = ssh(
        &config,
        "root@node-name.example.com",
        &["echo", "hello from $(hostname)", "as", "$(whoami)"],
    );
    assert_eq!(
        out.code,
        0,
        "{out:?}\nsshd:\n{}\ntbot:\n{}",
        node.log(),
        read_log()
    );
    let host = std::process::Command::new("hostname").output().unwrap();
    let host = String::from_utf8_lossy(&host.stdout).trim().to_string();
    assert_eq!(out.stdout.trim(), format!("hello from {host} as root"));
    // sshd logged the certificate: key id bot-robot, signed by the user CA.
    assert!(node.log().contains("ID bot-robot"), "{}", node.log());

    // Half-close and bulk data both ways: what goes in comes back whole.
    let payload: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
    let mut child = std::process::Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .args(["root@node-name.example.com", "sha256sum"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let want = {
        use std::io::Write as _;
        let mut c = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(payload.as_bytes())
            .unwrap();
        String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()
    };
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(tbot.wait().unwrap().success());
}

#[test]
fn the_proxy_refuses_unknown_nodes_labels_and_dead_nodes_and_audits_it() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let node = Sshd::start(&auth, "prod-node", &scratch.join("node"));
    add_node(&auth, &node, "prod-node", "env=prod");
    add_node_at(
        &auth,
        &format!("127.0.0.1:{}", free_port()),
        "dead-node",
        "env=dev",
    );
    let role = scratch.join("dev-only.yaml");
    std::fs::write(
        &role,
        "kind: role\nversion: v5\nmetadata:\n  name: dev-only\nspec:\n  allow:\n    logins: [root]\n    node_labels:\n      env: dev\n",
    )
    .unwrap();
    auth.tctl(&["create", role.to_str().unwrap()]).success();
    let join = add_bot(&auth, "devbot", "dev-only");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    oneshot(&auth, &join, &data, &dest);
    let config = dest.join("ssh_config");
    let before = connections(&node);

    // Labels: env=prod is not env=dev. The proxy refuses before sshd sees anything.
    let out = ssh(&config, "root@prod-node.example.com", &["true"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("access denied")
            && out.stderr.contains("prod-node")
            && out.stderr.contains("env=prod"),
        "{}",
        out.stderr
    );
    assert_eq!(
        connections(&node),
        before,
        "sshd saw a connection the proxy should have refused:\n{}",
        node.log()
    );

    // An unknown node.
    let out = ssh(&config, "root@nowhere.example.com", &["true"]);
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("unknown node \"nowhere\""),
        "{}",
        out.stderr
    );

    // A node that is down.
    let out = ssh(&config, "root@dead-node.example.com", &["true"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("unreachable"), "{}", out.stderr);

    // Each refusal is one line on stderr from tbot, and an audit event on the server.
    let denied = events(&auth, "proxy.denied");
    let messages: Vec<String> = denied
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    for want in ["prod-node", "nowhere", "dead-node"] {
        assert!(
            messages.iter().any(|m| m.contains(want)),
            "no proxy.denied event for {want}: {messages:?}"
        );
    }
    assert_eq!(denied.len(), 3, "one event per refusal: {denied:?}");
    assert!(
        denied.iter().all(|e| e["user"] == "bot-devbot"),
        "{denied:?}"
    );
}

/// A node `name` registered at `addr` with `labels` (`k=v,...`, or none when empty).
fn add_node_at(auth: &AuthServer, addr: &str, name: &str, labels: &str) {
    let (name, addr, labels) = (
        format!("--name={name}"),
        format!("--addr={addr}"),
        format!("--labels={labels}"),
    );
    let mut args = vec!["nodes", "add", &name, &addr];
    if labels != "--labels=" {
        args.push(&labels);
    }
    auth.tctl(&args).success();
}

/// A node `name` registered at `node`'s address with `labels`.
fn add_node(auth: &AuthServer, node: &Sshd, name: &str, labels: &str) {
    add_node_at(auth, &node.addr, name, labels);
}

/// How many connections `node`'s sshd has accepted (its log also grows when an earlier
/// session ends, so the log itself cannot be compared).
fn connections(node: &Sshd) -> usize {
    node.log().matches("Connection from ").count()
}

/// Creates the resources in `yaml` with `tctl create -f`.
fn create(auth: &AuthServer, file: &str, yaml: &str) {
    let path = auth.scratch().join(file);
    std::fs::write(&path, yaml).unwrap();
    auth.tctl(&["create", "-f", path.to_str().unwrap()])
        .success();
}

const OPS_ROLE: &str = "kind: role\nversion: v5\nmetadata:\n  name: ops\nspec:\n  allow:\n    logins: [root]\n    node_labels:\n      '*': '*'\n";

#[test]
fn the_proxy_refuses_new_connections_of_a_bot_locked_by_user_or_by_role() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let node = Sshd::start(&auth, "node-name", &scratch.join("node"));
    add_node(&auth, &node, "node-name", "env=dev");
    create(&auth, "ops.yaml", OPS_ROLE);
    let join = add_bot(&auth, "robot", "ops");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    oneshot(&auth, &join, &data, &dest);
    let config = dest.join("ssh_config");
    let target = "root@node-name.example.com";

    // The control: the certificates work through the proxy.
    let out = ssh(&config, target, &["echo", "in"]);
    assert_eq!((out.code, out.stdout.trim()), (0, "in"), "{out:?}");

    // A lock on the bot's user: the same, still valid certificates are refused by the proxy
    // before sshd sees a connection.
    auth.tctl(&["bots", "lock", "robot", "--message=compromised runner"])
        .success();
    let before = connections(&node);
    let out = ssh(&config, target, &["echo", "in"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("compromised runner") && !out.stdout.contains("in"),
        "{out:?}"
    );
    assert_eq!(
        connections(&node),
        before,
        "sshd saw a connection of a locked bot"
    );
    // Audited twice: the refused call of the locked user, and the proxy's refusal.
    let denied = events(&auth, "access.denied");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["user"], "bot-robot", "{denied:?}");
    let proxy_denied = events(&auth, "proxy.denied");
    assert_eq!(proxy_denied.len(), 1, "{proxy_denied:?}");
    assert!(
        proxy_denied[0]["message"]
            .as_str()
            .unwrap()
            .contains("compromised runner"),
        "{proxy_denied:?}"
    );

    // Lifted: the proxy lets it through again.
    let locks: serde_json::Value =
        serde_json::from_str(&auth.tctl(&["locks", "ls", "--format=json"]).success()).unwrap();
    let id = locks[0]["metadata"]["name"].as_str().unwrap().to_string();
    auth.tctl(&["locks", "rm", &id]).success();
    let out = ssh(&config, target, &["echo", "in"]);
    assert_eq!((out.code, out.stdout.trim()), (0, "in"), "{out:?}");

    // A lock on the role the output certificate holds (`ops`), not on the bot.
    create(
        &auth,
        "lock.yaml",
        "kind: lock\nversion: v2\nmetadata:\n  name: ops-lock\nspec:\n  target:\n    role: ops\n  message: ops is frozen\n",
    );
    let before = connections(&node);
    let out = ssh(&config, target, &["echo", "in"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(out.stderr.contains("ops is frozen"), "{out:?}");
    assert_eq!(
        connections(&node),
        before,
        "sshd saw a connection of a locked role"
    );
    assert_eq!(events(&auth, "access.denied").len(), 2);
    assert_eq!(events(&auth, "proxy.denied").len(), 2);
}

#[test]
fn the_proxy_applies_deny_node_labels_over_an_allow_of_every_node() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    // One sshd registered as two nodes with different labels: only the labels differ.
    let node = Sshd::start(&auth, "dev-node", &scratch.join("node"));
    add_node(&auth, &node, "dev-node", "env=dev");
    add_node(&auth, &node, "prod-node", "env=prod,team=core");
    create(
        &auth,
        "all-but-prod.yaml",
        "kind: role\nversion: v5\nmetadata:\n  name: all-but-prod\nspec:\n  allow:\n    logins: [root]\n    node_labels:\n      '*': '*'\n  deny:\n    node_labels:\n      env: prod\n",
    );
    let join = add_bot(&auth, "robot", "all-but-prod");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    oneshot(&auth, &join, &data, &dest);
    let config = dest.join("ssh_config");

    let out = ssh(&config, "root@dev-node.example.com", &["echo", "dev"]);
    assert_eq!((out.code, out.stdout.trim()), (0, "dev"), "{out:?}");

    let before = connections(&node);
    let out = ssh(&config, "root@prod-node.example.com", &["echo", "prod"]);
    assert_ne!(out.code, 0, "{out:?}");
    assert!(
        out.stderr.contains("access denied") && out.stderr.contains("prod-node"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("prod"), "{out:?}");
    assert_eq!(
        connections(&node),
        before,
        "sshd saw a connection the deny should stop"
    );
    let denied = events(&auth, "proxy.denied");
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(
        denied[0]["message"].as_str().unwrap().contains("prod-node"),
        "{denied:?}"
    );
}

#[test]
fn twenty_parallel_sessions_through_one_proxy() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let node = Sshd::start(&auth, "node-name", &scratch.join("node"));
    add_node(&auth, &node, "node-name", "");
    create(&auth, "ops.yaml", OPS_ROLE);
    let join = add_bot(&auth, "robot", "ops");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    oneshot(&auth, &join, &data, &dest);
    let config = dest.join("ssh_config");

    let children: Vec<_> = (0..20)
        .map(|i| {
            std::process::Command::new("timeout")
                .arg("60")
                .arg("ssh")
                .arg("-F")
                .arg(&config)
                .arg("root@node-name.example.com")
                .arg(format!("sleep 1; echo session-{i}"))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "session {i}: {}\nsshd:\n{}",
            String::from_utf8_lossy(&out.stderr),
            node.log()
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("session-{i}")
        );
    }
    assert!(events(&auth, "proxy.connect").len() >= 20);
}

/// Starts `ssh ... COMMAND` with stdout piped and waits for its first line.
fn open_session(
    config: &Path,
    command: &str,
) -> (
    std::process::Child,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new("timeout")
        .arg("180")
        .arg("ssh")
        .arg("-F")
        .arg(config)
        .arg("root@node-name.example.com")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok);
    assert_eq!(
        first.as_deref(),
        Some("started"),
        "the session did not start"
    );
    (child, lines)
}

#[test]
fn a_new_lock_ends_open_proxy_sessions_of_its_target_only() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let node = Sshd::start(&auth, "node-name", &scratch.join("node"));
    add_node(&auth, &node, "node-name", "");
    create(&auth, "ops.yaml", OPS_ROLE);
    let mut configs = Vec::new();
    for name in ["robot", "other"] {
        let join = add_bot(&auth, name, "ops");
        let (data, dest) = (
            scratch.join(format!("data-{name}")),
            scratch.join(format!("dest-{name}")),
        );
        oneshot(&auth, &join, &data, &dest);
        configs.push(dest.join("ssh_config"));
    }

    // Two sessions that would each last two minutes on their own.
    let (mut locked, locked_out) =
        open_session(&configs[0], "echo started; sleep 120; echo finished");
    let (mut other, mut other_out) =
        open_session(&configs[1], "echo started; sleep 5; echo finished");

    let start = std::time::Instant::now();
    auth.tctl(&["bots", "lock", "robot", "--message=compromised runner"])
        .success();
    let status = loop {
        if let Some(s) = locked.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the locked bot's session is still open"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "the locked session ended {:?} after the lock",
        start.elapsed()
    );
    assert!(!status.success(), "{status:?}");
    let rest: Vec<String> = locked_out.map_while(Result::ok).collect();
    assert!(rest.is_empty(), "the session ran on: {rest:?}");

    // The other bot's session goes on to its end.
    let last = other_out.next().and_then(Result::ok);
    assert_eq!(last.as_deref(), Some("finished"));
    assert!(other.wait().unwrap().success());

    let ended = events(&auth, "proxy.terminated");
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["user"], "bot-robot");
    assert!(
        ended[0]["message"]
            .as_str()
            .unwrap()
            .contains("compromised runner"),
        "{ended:?}"
    );
}

/// The generated ssh_config hands `tbot proxy ssh` the auth server list the bot was given
/// (the proxy shares the auth port): with the first address dead, ssh still logs in.
#[test]
fn ssh_logs_in_through_a_proxy_list_whose_first_entry_is_dead() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let node = Sshd::start(&auth, "node-name", &scratch.join("node"));
    add_node(&auth, &node, "node-name", "env=dev");
    create(&auth, "ops.yaml", OPS_ROLE);
    let join = add_bot(&auth, "opsbot", "ops");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    let dead = format!("127.0.0.1:{}", free_port());
    let list = format!("{dead},{}", auth.addr);
    let mut args = tbot_start_args(&auth, &join, &data, &dest);
    *args.last_mut().unwrap() = list.clone();
    args.push("--oneshot".into());
    run_tbot(&args, &[]).success();
    let config = dest.join("ssh_config");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&format!(" --proxy={list} ssh ")), "{text}");

    let out = ssh(&config, "root@node-name.example.com", &["echo", "hello"]);
    assert_eq!(out.code, 0, "{out:?}\nsshd:\n{}", node.log());
    assert_eq!(out.stdout.trim(), "hello");
    assert_eq!(events(&auth, "proxy.connect").len(), 1);
}
