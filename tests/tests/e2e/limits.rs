//! Issue 9 items 5 and 6 with the real binaries: startup safety (a lost store next to the
//! admin identity, private key modes), the offline recovery commands, limits set in the
//! config file, bounded reads of the files users point at, hashed tokens and input
//! validation, each checked by the message a user sees.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{rows_starting, table};
use machine_id_e2e::guide::HANG;
use machine_id_e2e::{AuthServer, Output, binaries, run_tctl};

/// The `auth-server` command with `args`, without the environment that changes defaults.
pub(crate) fn auth_server(args: &[&str]) -> Command {
    let mut cmd = Command::new(&binaries().auth_server);
    cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null());
    cmd
}

/// Runs `cmd`, which must exit by itself (a refused start, an offline command).
pub(crate) fn run(mut cmd: Command) -> Output {
    let command = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + HANG;
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{command} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    Output {
        command,
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `auth-server start` on `data_dir` for cluster example.com on a free port.
fn start_cmd(data_dir: &Path) -> Command {
    let mut cmd = auth_server(&["start", "--cluster-name", "example.com"]);
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["--auth-listen", "127.0.0.1:0"]);
    cmd
}

/// Spawns `cmd` and waits for its ready line; the caller kills it.
pub(crate) fn spawn_ready(mut cmd: Command) -> Child {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn auth-server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("auth server ready on ") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(HANG)
        .expect("auth-server did not get ready");
    child
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Moves the store (and its WAL files) of a stopped server to `to_dir`.
fn move_store(data_dir: &Path, to_dir: &Path) {
    for name in ["backend.db", "backend.db-wal", "backend.db-shm"] {
        let from = data_dir.join(name);
        if from.exists() {
            std::fs::rename(&from, to_dir.join(name)).unwrap();
        }
    }
}

#[test]
fn start_refuses_a_missing_or_empty_store_next_to_the_admin_identity() {
    let mut auth = AuthServer::start();
    auth.tctl(&["bots", "add", "robot", "--roles=access"])
        .success();
    assert!(auth.stop().success());
    let data = auth.data_dir();
    let db = data.join("backend.db");
    let admin = data.join("admin");
    let saved = auth.scratch();
    move_store(&data, &saved);

    let want = |state: &str| {
        format!(
            "refusing to start: the data directory {} holds an admin identity ({}) but its store {} is {state}, so starting would create a new cluster with new certificate authorities and every existing bot and node would stop working; restore {} from a backup, or, to really start a new cluster, move {} away first",
            data.display(),
            admin.display(),
            db.display(),
            db.display(),
            admin.display()
        )
    };
    let out = run(start_cmd(&data));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&want("missing")), "{}", out.stderr);
    assert!(!db.exists(), "a refused start must not create a store");

    std::fs::write(&db, b"").unwrap();
    let out = run(start_cmd(&data));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains(&want("empty")), "{}", out.stderr);

    // Restoring the store is the fix: the old cluster, its bot and its admin identity work.
    std::fs::remove_file(&db).unwrap();
    move_store(&saved, &data);
    auth.restart();
    let bots = auth.tctl(&["bots", "ls"]).success();
    assert!(bots.contains("robot"), "{bots}");

    // Moving admin/ away is the way to a new cluster.
    assert!(auth.stop().success());
    move_store(&data, &saved);
    std::fs::rename(&admin, saved.join("admin")).unwrap();
    auth.restart();
    let bots = auth.tctl(&["bots", "ls"]).success();
    assert!(!bots.contains("robot"), "{bots}");
}

#[test]
fn start_fixes_private_files_open_to_others_with_a_warning() {
    let mut auth = AuthServer::start();
    assert!(auth.stop().success());
    let key = auth.identity_dir().join("key");
    let db = auth.data_dir().join("backend.db");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
    auth.restart();
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&db), 0o600);
    let log = auth.log();
    for (path, old) in [(&key, "0644"), (&db, "0640")] {
        assert!(
            log.lines().any(|l| l.contains("WARN")
                && l.contains(
                    "private file was accessible to group or others; set its mode to 0600"
                )
                && l.contains(&format!("path={}", path.display()))
                && l.contains(&format!("old_mode={old}"))),
            "no warning for {}:\n{log}",
            path.display()
        );
    }
    auth.tctl(&["status"]).success();
}

#[test]
fn start_refuses_a_private_key_open_to_others_that_it_cannot_fix() {
    // The server runs as `nobody`; the admin key belongs to root, so chmod fails.
    const NOBODY: u32 = 65534;
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = root.path().join("data");
    std::fs::create_dir(&data).unwrap();
    nix::unistd::chown(
        &data,
        Some(nix::unistd::Uid::from_raw(NOBODY)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    let as_nobody = |mut cmd: Command| {
        cmd.uid(NOBODY).gid(NOBODY);
        cmd
    };
    let mut first = spawn_ready(as_nobody(start_cmd(&data)));
    first.kill().unwrap();
    first.wait().unwrap();

    let key = data.join("admin/key");
    nix::unistd::chown(
        &key,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(0)),
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(as_nobody(start_cmd(&data)));
    assert_eq!(out.code, 1, "{out:?}");
    let want = format!(
        "the admin identity's private key {k} (mode 0644) is accessible to group or others and its mode cannot be changed to 0600 (Operation not permitted (os error 1)); run `chmod 600 {k}` as the file's owner, or chown it to the user running auth-server",
        k = key.display()
    );
    assert!(out.stderr.contains(&want), "{}", out.stderr);
    assert_eq!(mode(&key), 0o644);
}

#[test]
fn offline_locks_ls_and_rm_work_on_the_stopped_data_dir_only() {
    let mut auth = AuthServer::start();
    auth.tctl(&["bots", "add", "robot", "--roles=access"])
        .success();
    auth.tctl(&["bots", "lock", "robot", "--message=stolen laptop"])
        .success();
    let locks: serde_json::Value =
        serde_json::from_str(&auth.tctl(&["locks", "ls", "--format=json"]).success()).unwrap();
    let id = locks[0]["metadata"]["name"].as_str().unwrap().to_string();
    let data = auth.data_dir();
    let data_arg = data.to_str().unwrap();

    // Refused while the server runs on the directory.
    let out = run(auth_server(&["locks", "ls", "--data-dir", data_arg]));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "the data directory {data_arg} is in use by another process ({data_arg}/auth-server.lock is locked): an auth server is running on it; stop it first, or, while it runs, use tctl locks ls and tctl locks rm"
        )),
        "{}",
        out.stderr
    );

    assert!(auth.stop().success());
    let out = run(auth_server(&["locks", "ls", "--data-dir", data_arg]));
    let t = table(&out.success());
    assert_eq!(t[0], ["ID", "Target", "Message", "Expires"]);
    assert_eq!(
        rows_starting(&t, &id)[0][1..],
        ["user=bot-robot", "stolen laptop", "never"]
    );

    // --config names the data directory too.
    let cfg = auth.scratch().join("auth.yaml");
    std::fs::write(&cfg, format!("data_dir: {data_arg}\n")).unwrap();
    let out = run(auth_server(&[
        "locks",
        "rm",
        &id,
        "--config",
        cfg.to_str().unwrap(),
    ]));
    assert_eq!(
        out.success(),
        format!(
            "Lock {id:?} (user=bot-robot) has been removed from {data_arg}; start the auth server again.\n"
        )
    );
    let out = run(auth_server(&["locks", "rm", &id, "--data-dir", data_arg]));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "lock {id:?} not found in {data_arg}; the locks are: none"
        )),
        "{}",
        out.stderr
    );

    auth.restart();
    let t = table(&auth.tctl(&["locks", "ls"]).success());
    assert!(rows_starting(&t, &id).is_empty(), "{t:?}");
    let events = auth
        .tctl(&["events", "ls", "--type=lock.delete", "--format=json"])
        .success();
    assert!(events.contains("auth-server (offline)"), "{events}");
    // The bot may join again with a new token.
    auth.tctl(&["tokens", "add", "--type=bot", "--bot=robot"])
        .success();

    // A directory that is not a data directory is not turned into one.
    let empty = auth.scratch().join("not-a-data-dir");
    std::fs::create_dir(&empty).unwrap();
    let out = run(auth_server(&[
        "locks",
        "ls",
        "--data-dir",
        empty.to_str().unwrap(),
    ]));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("holds no store (backend.db)"),
        "{}",
        out.stderr
    );
    assert!(!empty.join("backend.db").exists());
}

#[test]
fn config_limits_cap_unauthenticated_connections_per_address() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("auth.yaml");
    std::fs::write(
        &cfg,
        "limits:\n  max_unauthenticated_connections_per_ip: 1\n  handshake_timeout: 2m\n",
    )
    .unwrap();
    let auth = AuthServer::start_with_args("example.com", &["--config", cfg.to_str().unwrap()]);
    let held = std::net::TcpStream::connect(&auth.addr).unwrap();
    let mut refused = std::net::TcpStream::connect(&auth.addr).unwrap();
    refused.set_read_timeout(Some(HANG)).unwrap();
    let mut buf = [0u8; 8];
    let n = std::io::Read::read(&mut refused, &mut buf);
    assert!(matches!(n, Ok(0)) || n.is_err(), "{n:?}");
    assert!(
        auth.log().lines().any(|l| l.contains("WARN")
            && l.contains("refusing connection: too many connections from this address are in their TLS handshake or have no client certificate (limits.max_unauthenticated_connections_per_ip)")
            && l.contains("limit=1")),
        "{}",
        auth.log()
    );
    drop(held);

    // A bad value is refused with the file and field named.
    std::fs::write(&cfg, "limits:\n  idle_timeout: soon\n").unwrap();
    let out = run({
        let mut c = start_cmd(&cfg_dir.path().join("data"));
        c.args(["--config", cfg.to_str().unwrap()]);
        c
    });
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{}: limits.idle_timeout: invalid duration \"soon\"",
            cfg.display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn files_users_point_at_are_read_with_a_size_bound() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();

    let big_yaml = scratch.join("big.yaml");
    std::fs::write(&big_yaml, vec![b'#'; 5 * 1024 * 1024]).unwrap();
    let err = auth
        .tctl(&["create", "-f", big_yaml.to_str().unwrap()])
        .failure();
    assert!(
        err.contains(&format!(
            "{} is too large for a resource file: 5242880 bytes, over the limit of 4194304 bytes (4 MiB); is this the right file?",
            big_yaml.display()
        )),
        "{err}"
    );

    let big_cfg = scratch.join("auth.yaml");
    std::fs::write(&big_cfg, vec![b'#'; 2 * 1024 * 1024]).unwrap();
    let out = run({
        let mut c = start_cmd(&scratch.join("data"));
        c.args(["--config", big_cfg.to_str().unwrap()]);
        c
    });
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{} is too large for a configuration file: 2097152 bytes, over the limit of 1048576 bytes (1 MiB)",
            big_cfg.display()
        )),
        "{}",
        out.stderr
    );
    // An endless file is refused too, not read forever.
    let out = run(auth_server(&["locks", "ls", "--config", "/dev/zero"]));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("/dev/zero is too large for a configuration file: more than 1048576 bytes"),
        "{}",
        out.stderr
    );

    // An identity directory with an oversized CA file.
    let id = scratch.join("identity");
    std::fs::create_dir(&id).unwrap();
    for f in ["key", "tlscert", "tlscacerts"] {
        std::fs::copy(auth.identity_dir().join(f), id.join(f)).unwrap();
    }
    let mut cas = std::fs::read(id.join("tlscacerts")).unwrap();
    cas.resize(2 * 1024 * 1024, b'\n');
    std::fs::write(id.join("tlscacerts"), cas).unwrap();
    let err = run_tctl(&[
        "--auth-server",
        &auth.addr,
        "--identity",
        id.to_str().unwrap(),
        "status",
    ])
    .failure();
    assert!(
        err.contains(&format!(
            "{} is too large for an identity file: 2097152 bytes, over the limit of 1048576 bytes (1 MiB)",
            id.join("tlscacerts").display()
        )),
        "{err}"
    );
}

#[test]
fn tokens_are_shown_by_hash_prefix_and_lifetimes_and_logins_are_checked() {
    let auth = AuthServer::start();
    let out = auth
        .tctl(&["bots", "add", "robot", "--roles=access"])
        .success();
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("The bot token: "))
        .unwrap()
        .to_string();
    let shown = format!("sha256:{}", &machine_id_join::token_hash(&token)[..12]);
    let ls = auth.tctl(&["tokens", "ls"]).success();
    assert!(!ls.contains(&token), "{ls}");
    let t = table(&ls);
    assert_eq!(rows_starting(&t, &shown)[0][1..3], ["Bot", "robot"]);
    let yaml = auth.tctl(&["get", "tokens", "--format=yaml"]).success();
    assert!(!yaml.contains(&token) && yaml.contains(&shown), "{yaml}");

    // Token lifetimes are capped (24h by default).
    for args in [
        &["tokens", "add", "--type=bot", "--bot=robot", "--ttl=48h"][..],
        &["bots", "add", "robot2", "--roles=access", "--ttl=25h"][..],
    ] {
        let err = auth.tctl(args).failure();
        assert!(
            err.contains("longer than this cluster's maximum of 24h0m0s for token-method join tokens (auth_service.max_token_ttl in the auth server's config); ask for a shorter --ttl"),
            "{err}"
        );
    }

    // Logins and principals: no spaces or control characters, with the field and value named.
    let err = auth
        .tctl(&[
            "bots",
            "add",
            "robot3",
            "--roles=access",
            "--logins=root,bad login",
        ])
        .failure();
    assert!(
        err.contains("ERROR: --logins: invalid login \"bad login\": ' ' is not allowed; logins have no spaces, commas or control characters"),
        "{err}"
    );
    let out_prefix = auth.scratch().join("node");
    let err = auth
        .tctl(&[
            "auth",
            "sign",
            "--host=node\tone",
            "--out",
            out_prefix.to_str().unwrap(),
        ])
        .failure();
    assert!(
        err.contains("ERROR: --host: invalid host name \"node\\tone\": '\\t' is not allowed"),
        "{err}"
    );
    let err = auth
        .tctl(&[
            "auth",
            "sign",
            "--host=node",
            "--ttl=9000h",
            "--out",
            out_prefix.to_str().unwrap(),
        ])
        .failure();
    assert!(
        err.contains("ERROR: --ttl: 9000h0m0s is out of bounds for a host certificate; use a value from 1s to 8760h0m0s (one year)"),
        "{err}"
    );
    let role = auth.scratch().join("role.yaml");
    std::fs::write(
        &role,
        "kind: role\nversion: v5\nmetadata:\n  name: dev\nspec:\n  allow:\n    logins: [\"root\\u0007\"]\n",
    )
    .unwrap();
    let err = auth.tctl(&["create", role.to_str().unwrap()]).failure();
    assert!(
        err.contains("spec.allow.logins: invalid login \"root\\u{7}\": '\\u{7}' is not allowed"),
        "{err}"
    );
}
