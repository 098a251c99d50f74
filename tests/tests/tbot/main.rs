//! End-to-end suite of `tbot`: the real `auth-server`, the real `tctl bots add`, the real
//! `tbot start`, judged by `ssh-keygen`, `ssh -G`, `openssl verify` and the server itself.
#![allow(clippy::unwrap_used, missing_docs)] // tests

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use machine_id_e2e::{AuthServer, Output, run_tbot, spawn_tbot};
use machine_id_mint::{certs_from_pem, parse_tls_identity};
use machine_id_types::Identity;

const EIGHT: [&str; 8] = [
    "key",
    "key.pub",
    "known_hosts",
    "ssh_config",
    "sshcacerts",
    "sshcert",
    "tlscacerts",
    "tlscert",
];

use machine_id_e2e::guide::{BotJoin as Join, add_bot, tbot_start_args as start_args};

mod crash;
mod daemon;
mod failover;
mod rotation;

fn oneshot(auth: &AuthServer, join: &Join, data: &Path, dest: &Path) -> Output {
    let mut args = start_args(auth, join, data, dest);
    args.push("--oneshot".into());
    run_tbot(&args, &[])
}

fn tls_identity(dir: &Path) -> Identity {
    let pem = std::fs::read_to_string(dir.join("tlscert")).unwrap();
    parse_tls_identity(&certs_from_pem(&pem).unwrap()[0]).unwrap()
}

/// The generation of the bot identity stored in `data` (read through `current`, the
/// symlink a save replaces with one rename, so a read sees one whole unit).
fn generation(data: &Path) -> u64 {
    std::fs::read_to_string(data.join("current/tlscert"))
        .ok()
        .and_then(|pem| certs_from_pem(&pem).ok())
        .and_then(|c| parse_tls_identity(&c[0]).ok())
        .map_or(0, |i| i.generation)
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

use machine_id_e2e::guide::http_get;
use machine_id_e2e::guide::wait_until as until;

fn free_port() -> String {
    format!("127.0.0.1:{}", machine_id_e2e::guide::free_port())
}

fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn oneshot_writes_the_destination_the_tools_accept() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let role = scratch.join("ops.yaml");
    std::fs::write(
        &role,
        "kind: role\nversion: v5\nmetadata:\n  name: ops\nspec:\n  allow:\n    logins: [ubuntu, deploy]\n    node_labels:\n      '*': '*'\n",
    )
    .unwrap();
    auth.tctl(&["create", "-f", role.to_str().unwrap()])
        .success();
    let join = add_bot(&auth, "robot", "ops");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));

    let out = oneshot(&auth, &join, &data, &dest);
    out.success();

    // The eight files, 0600, in a 0700 directory; the data dir likewise.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dest), 0o700);
    assert_eq!(mode(&data), 0o700);
    for f in EIGHT {
        assert_eq!(mode(&dest.join(f)), 0o600, "{f}");
    }
    // The identity is one unit directory that `current` names.
    assert_eq!(
        std::fs::read_link(data.join("current")).unwrap(),
        Path::new("id-1")
    );
    assert_eq!(mode(&data.join("id-1")), 0o700);
    for f in [
        "key",
        "key.pub",
        "sshcert",
        "tlscert",
        "tlscacerts",
        "sshcacerts",
        "tokenhash",
    ] {
        assert_eq!(
            mode(&data.join("current").join(f)),
            0o600,
            "data/current/{f}"
        );
    }
    assert!(!data.join("pending").exists(), "no pending key at rest");

    // ssh-keygen parses the certificate, and its key is key.pub.
    let (ok, cert) = run(
        "ssh-keygen",
        &["-L", "-f", dest.join("sshcert").to_str().unwrap()],
    );
    assert!(ok, "{cert}");
    assert!(cert.contains("Key ID: \"bot-robot\""), "{cert}");
    assert!(cert.contains("ubuntu") && cert.contains("deploy"), "{cert}");
    let (ok, pubfp) = run(
        "ssh-keygen",
        &["-l", "-f", dest.join("key.pub").to_str().unwrap()],
    );
    assert!(ok, "{pubfp}");
    let fp = pubfp.split_whitespace().nth(1).unwrap();
    assert!(
        cert.lines()
            .any(|l| l.contains("Public key:") && l.contains(fp)),
        "the certificate is not for key.pub ({fp}):\n{cert}"
    );

    // openssl trusts the X.509 certificate through tlscacerts.
    let (ok, v) = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            dest.join("tlscacerts").to_str().unwrap(),
            dest.join("tlscert").to_str().unwrap(),
        ],
    );
    assert!(ok && v.contains(": OK"), "{v}");

    // The output is impersonated, for the roles and logins asked, and never outlives the
    // bot's own (renewable) identity.
    let output = tls_identity(&dest);
    let bot = tls_identity(&data.join("current"));
    assert_eq!(output.username, "bot-robot");
    assert_eq!(output.roles, ["ops"]);
    assert!(output.logins.contains(&"ubuntu".to_string()), "{output:?}");
    assert!(output.logins.contains(&"deploy".to_string()), "{output:?}");
    assert_eq!(output.impersonator.as_deref(), Some("bot-robot"));
    assert!(!output.renewable && output.disallow_reissue);
    assert!(output.expires <= bot.expires);
    assert!(bot.renewable);
    assert_eq!(bot.generation, 1);

    // known_hosts and ssh_config in the facts file's shape; OpenSSH reads the config.
    let kh = std::fs::read_to_string(dest.join("known_hosts")).unwrap();
    assert!(
        kh.starts_with("@cert-authority 127.0.0.1,example.com,*.example.com ssh-ed25519 ")
            && kh.trim_end().ends_with(" type=host"),
        "{kh}"
    );
    let cfg = std::fs::read_to_string(dest.join("ssh_config")).unwrap();
    let tbot = machine_id_e2e::binaries().tbot.display().to_string();
    assert!(
        cfg.contains(&format!("ProxyCommand \"{tbot}\" proxy --destination-dir=")),
        "{cfg}"
    );
    let (ok, g) = run(
        "ssh",
        &[
            "-G",
            "-F",
            dest.join("ssh_config").to_str().unwrap(),
            "node.example.com",
        ],
    );
    assert!(ok, "{g}");
    assert!(g.contains("port 3022"), "{g}");
    assert!(
        g.contains(&format!(
            "certificatefile {}",
            dest.join("sshcert").display()
        )),
        "{g}"
    );

    // A restart uses the stored identity (the token was single-use) and renews it. Even
    // debug logs carry no token, key or certificate body.
    let mut args = start_args(&auth, &join, &data, &dest);
    args.extend(["--oneshot".to_string(), "-d".to_string()]);
    let out = run_tbot(&args, &[]);
    out.success();
    assert_eq!(generation(&data), 2);
    assert!(out.stderr.contains("DEBUG"), "{}", out.stderr);
    assert!(!out.stderr.contains(&join.token), "the token was logged");
    assert!(!out.stderr.contains("BEGIN"), "a PEM body was logged");
}

#[test]
fn bad_input_fails_with_one_clear_line() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let join = add_bot(&auth, "robot", "access");
    let d = |n: &str| scratch.join(n);

    // Wrong pin: nothing is sent to the server, the token stays usable.
    let bad = Join {
        token: join.token.clone(),
        pin: format!("sha256:{}", "0".repeat(64)),
    };
    let e = oneshot(&auth, &bad, &d("data-pin"), &d("dest-pin")).failure();
    assert!(
        e.contains("matches none of the CA pins") && e.contains("tctl status"),
        "{e}"
    );
    assert_eq!(
        e.lines().filter(|l| l.starts_with("ERROR: ")).count(),
        1,
        "{e}"
    );
    // A malformed pin.
    let bad = Join {
        token: join.token.clone(),
        pin: "md5:00".into(),
    };
    let e = oneshot(&auth, &bad, &d("data-pin"), &d("dest-pin")).failure();
    assert!(
        e.contains("expected algorithm:pin") || e.contains("sha256"),
        "{e}"
    );
    // No pin and no CA path.
    let mut args = start_args(&auth, &join, &d("data-nopin"), &d("dest-nopin"));
    let i = args.iter().position(|a| a == "--ca-pin").unwrap();
    args.drain(i..i + 2);
    args.push("--oneshot".into());
    let e = run_tbot(&args, &[]).failure();
    assert!(e.contains("no CA pin or CA path"), "{e}");
    assert!(!d("dest-nopin").join("key").exists());

    // The token from a file; then the same (used) token fails.
    let token_file = d("token");
    std::fs::write(&token_file, format!("{}\n", join.token)).unwrap();
    let from_file = Join {
        token: token_file.display().to_string(),
        pin: join.pin.clone(),
    };
    oneshot(&auth, &from_file, &d("data-ok"), &d("dest-ok")).success();
    let e = oneshot(&auth, &join, &d("data-used"), &d("dest-used")).failure();
    assert!(
        e.contains("joining the cluster failed") && e.contains("tctl bots add"),
        "{e}"
    );

    // Unreachable auth server.
    let mut args = start_args(&auth, &join, &d("data-down"), &d("dest-down"));
    let i = args.iter().position(|a| a == "--auth-server").unwrap();
    args[i + 1] = free_port();
    args.push("--oneshot".into());
    let e = run_tbot(&args, &[]).failure();
    assert!(e.contains("cannot reach the auth server"), "{e}");

    // The token from the environment, the auth server too.
    let join2 = add_bot(&auth, "robot2", "access");
    let out = run_tbot(
        &[
            "start",
            "--oneshot",
            "--data-dir",
            d("data-env").to_str().unwrap(),
            "--destination-dir",
            d("dest-env").to_str().unwrap(),
            "--ca-pin",
            &join2.pin,
        ],
        &[
            ("TELEPORT_BOT_TOKEN", &join2.token),
            ("TELEPORT_AUTH_SERVER", &auth.addr),
        ],
    );
    out.success();

    // A symlink in the destination path under `secure`: refused, nothing written through it.
    let real = d("real");
    std::fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(&real, d("link")).unwrap();
    let cfg = d("secure.yaml");
    std::fs::write(
        &cfg,
        format!(
            "destinations:\n  - directory:\n      path: {}\n      symlinks: secure\n",
            d("link").display()
        ),
    )
    .unwrap();
    let e = run_tbot(
        &[
            "start",
            "--oneshot",
            "-c",
            cfg.to_str().unwrap(),
            "--data-dir",
            d("data-env").to_str().unwrap(),
            "--ca-pin",
            &join2.pin,
            "--auth-server",
            &auth.addr,
        ],
        &[],
    )
    .failure();
    assert!(e.contains("symlink") && e.contains("secure"), "{e}");
    assert_eq!(
        std::fs::read_dir(&real).unwrap().count(),
        0,
        "written through the link"
    );

    // A read-only destination: one clear line, nothing half-written. (The suite runs as
    // root, which file modes do not stop, so the destination is a read-only mount.)
    let ro = d("ro");
    std::fs::create_dir_all(&ro).unwrap();
    let _mount = Tmpfs::mount(&ro, "size=1m,ro");
    let e = run_tbot(
        &[
            "start",
            "--oneshot",
            "--data-dir",
            d("data-env").to_str().unwrap(),
            "--destination-dir",
            ro.to_str().unwrap(),
            "--ca-pin",
            &join2.pin,
            "--auth-server",
            &auth.addr,
        ],
        &[],
    )
    .failure();
    assert!(e.contains("read-only"), "{e}");
    assert_eq!(
        e.lines().filter(|l| l.starts_with("ERROR: ")).count(),
        1,
        "{e}"
    );
    assert_eq!(std::fs::read_dir(&ro).unwrap().count(), 0);

    // A data dir the bot cannot write: named, with the fix.
    let ro_data = d("ro-data");
    std::fs::create_dir_all(&ro_data).unwrap();
    let _data_mount = Tmpfs::mount(&ro_data, "size=1m,ro");
    let e = oneshot(&auth, &join2, &ro_data, &d("dest-ro-data")).failure();
    assert!(
        e.contains("ro-data") && e.contains("read-only") && e.contains("--data-dir"),
        "{e}"
    );
    assert!(!d("dest-ro-data").join("key").exists());

    // The same data dir still works with a good destination afterwards.
    let good = Join {
        token: join2.token.clone(),
        pin: join2.pin.clone(),
    };
    oneshot(&auth, &good, &d("data-env"), &d("dest-good")).success();
    for f in EIGHT {
        assert!(d("dest-good").join(f).exists(), "{f}");
    }
}

/// A tmpfs mounted on a directory for the life of the value (the suite runs as root).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, options: &str) -> Self {
        let (ok, text) = run(
            "mount",
            &["-t", "tmpfs", "-o", options, "tmpfs", dir.to_str().unwrap()],
        );
        assert!(ok, "mount -t tmpfs {}: {text}", dir.display());
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_keeps_the_last_good_destination() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    std::fs::create_dir_all(&dest).unwrap();
    let _mount = Tmpfs::mount(&dest, "size=256k,mode=0700");
    oneshot(&auth, &join, &data, &dest).success();
    let before: Vec<Vec<u8>> = EIGHT
        .iter()
        .map(|f| std::fs::read(dest.join(f)).unwrap())
        .collect();

    // Fill the filesystem, leaving less than one new set needs.
    let filler = dest.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    let e = oneshot(&auth, &join, &data, &dest).failure();
    assert!(e.contains("no space left"), "{e}");
    let after: Vec<Vec<u8>> = EIGHT
        .iter()
        .map(|f| std::fs::read(dest.join(f)).unwrap())
        .collect();
    assert!(before == after, "the last good set was touched");
    let (ok, v) = run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            dest.join("tlscacerts").to_str().unwrap(),
            dest.join("tlscert").to_str().unwrap(),
        ],
    );
    assert!(ok, "{v}");

    // Space again: the next run writes a new set, with the identity renewed meanwhile.
    std::fs::remove_file(&filler).unwrap();
    oneshot(&auth, &join, &data, &dest).success();
    assert_ne!(std::fs::read(dest.join("tlscert")).unwrap(), before[7]);
    let names: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(names.len(), EIGHT.len(), "stray files: {names:?}");
}

#[test]
fn configure_prints_what_the_flags_amount_to() {
    let out = run_tbot(
        &[
            "configure",
            "--auth-server",
            "auth.example.com:3025",
            "--token",
            "abc",
            "--ca-pin",
            "sha256:00",
            "--destination-dir",
            "/opt/machine-id",
            "--certificate-ttl",
            "30m",
        ],
        &[],
    )
    .success();
    for want in [
        "auth_server: auth.example.com:3025",
        "certificate_ttl: 30m0s",
        "token: abc",
        "sha256:00",
        "directory: /var/lib/teleport/bot",
        "path: /opt/machine-id",
    ] {
        assert!(out.contains(want), "{want}:\n{out}");
    }
}

#[test]
fn long_running_bot_renews_survives_an_outage_and_stops_cleanly() {
    let mut auth = AuthServer::start();
    let scratch = auth.scratch();
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    let diag = free_port();
    let log = scratch.join("tbot.log");
    let mut args = start_args(&auth, &join, &data, &dest);
    args.extend(
        [
            "--renewal-interval",
            "1s",
            "--certificate-ttl",
            "1m",
            "--diag-addr",
            &diag,
        ]
        .map(String::from),
    );
    let mut tbot = spawn_tbot(&args, &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    until(Duration::from_secs(60), "three renewals", || {
        generation(&data) >= 3
    });
    let (code, body) = http_get(&diag, "/livez");
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get(&diag, "/readyz");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = http_get(&diag, "/metrics");
    assert!(
        metric(&metrics, "tbot_renewals_total").unwrap() >= 2,
        "{metrics}"
    );
    assert!(
        metric(&metrics, "tbot_certificate_seconds_until_expiry").unwrap() > 0,
        "{metrics}"
    );

    // A second tbot on the same data dir is refused.
    let e = oneshot(&auth, &join, &data, &scratch.join("dest2")).failure();
    assert!(e.contains("in use by another tbot"), "{e}");

    // The server goes away: tbot keeps its files and retries.
    auth.stop();
    // A renewal in flight when the server stopped may still complete (the server drains its
    // calls): what must be kept is the set in place once renewals fail.
    until(Duration::from_secs(30), "a failed renewal", || {
        read_log().contains("renewal failed")
    });
    let kept = std::fs::read(dest.join("tlscert")).unwrap();
    let gen_before = generation(&data);
    let failed = read_log().matches("renewal failed").count();
    until(Duration::from_secs(30), "more failed renewals", || {
        read_log().matches("renewal failed").count() >= failed + 2
    });
    assert!(
        tbot.try_wait().unwrap().is_none(),
        "tbot exited:\n{}",
        read_log()
    );
    for f in EIGHT {
        assert!(dest.join(f).exists(), "{f} removed during the outage");
    }
    assert_eq!(std::fs::read(dest.join("tlscert")).unwrap(), kept);
    let (_, metrics) = http_get(&diag, "/metrics");
    assert!(
        metric(&metrics, "tbot_renewal_failures_total").unwrap() >= 2,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "tbot_last_renewal_success"),
        Some(0),
        "{metrics}"
    );

    // It comes back on the same address: tbot recovers by itself.
    auth.restart_same_addr();
    until(
        Duration::from_secs(60),
        "a renewal after the outage",
        || generation(&data) > gen_before,
    );
    until(Duration::from_secs(30), "new output certificates", || {
        std::fs::read(dest.join("tlscert")).is_ok_and(|c| c != kept)
    });

    // SIGTERM stops cleanly (SIGHUP and SIGUSR1: `signals_renew_now_and_sigterm_stops`).
    let pid = nix::unistd::Pid::from_raw(i32::try_from(tbot.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tbot.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", read_log());
}

#[test]
fn replayed_data_dir_gets_the_bot_locked() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    oneshot(&auth, &join, &data, &dest).success();
    let old = scratch.join("data-old");
    copy_dir(&data, &old);
    oneshot(&auth, &join, &data, &dest).success();
    assert_eq!(generation(&data), 2);

    // The stolen copy renews with generation 1: the server locks the bot.
    let e = oneshot(&auth, &join, &old, &scratch.join("dest-old")).failure();
    assert!(e.contains("stolen") && e.contains("locked"), "{e}");
    assert!(e.contains("tctl locks rm"), "{e}");

    // The legitimate bot, running as a daemon, now exits with the lock message.
    let out = run_tbot(&start_args(&auth, &join, &data, &dest), &[]);
    let e = out.failure();
    assert!(e.contains("is locked"), "{e}");
    let bots = auth.tctl(&["bots", "ls"]).success();
    assert!(bots.contains("robot"), "{bots}");
}

/// Copies a data dir as a thief would (`cp -a`: the unit directories and the symlink).
fn copy_dir(from: &Path, to: &Path) {
    let (ok, text) = run("cp", &["-a", from.to_str().unwrap(), to.to_str().unwrap()]);
    assert!(ok, "{text}");
}

#[test]
fn embedding_example_makes_an_mtls_call_as_the_bot() {
    let auth = AuthServer::start();
    let join = add_bot(&auth, "robot", "access");
    let example = machine_id_e2e::example("machine-id-bot", "embed");
    let out = Command::new(example)
        .args([&auth.addr, &join.token, &join.pin])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("identity: user=bot-robot roles=[access] impersonator=bot-robot"),
        "{stdout}"
    );
    // The server reads roles only for a caller whose verified certificate holds them.
    assert!(
        stdout.contains("the server authenticated us as bot-robot and let us read our role access"),
        "{stdout}"
    );
}

#[test]
fn config_file_with_flag_overrides_and_a_ca_path() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let first = add_bot(&auth, "robot", "access");
    oneshot(
        &auth,
        &first,
        &scratch.join("data1"),
        &scratch.join("dest1"),
    )
    .success();
    let cas = scratch.join("dest1").join("tlscacerts");

    // The config names a wrong auth server and TTL; flags override both and the log says so.
    let second = add_bot(&auth, "robot2", "access");
    let cfg = scratch.join("tbot.yaml");
    std::fs::write(
        &cfg,
        format!(
            "auth_server: 127.0.0.1:1\ncertificate_ttl: 2h\noneshot: true\nonboarding:\n  token: {}\n  ca_path: {}\nstorage:\n  directory: {}\ndestinations:\n  - directory: {}\n    roles: [access]\n",
            second.token,
            cas.display(),
            scratch.join("data2").display(),
            scratch.join("dest2").display(),
        ),
    )
    .unwrap();
    let out = run_tbot(
        &[
            "start",
            "-c",
            cfg.to_str().unwrap(),
            "--auth-server",
            &auth.addr,
            "--certificate-ttl",
            "30m",
        ],
        &[],
    );
    out.success();
    assert!(
        out.stderr
            .contains("a command-line flag overrides the config file")
            && out.stderr.contains("auth_server")
            && out.stderr.contains("certificate_ttl"),
        "{}",
        out.stderr
    );
    let id = tls_identity(&scratch.join("dest2"));
    assert_eq!(id.username, "bot-robot2");
    let left = id.expires - time::OffsetDateTime::now_utc();
    assert!(left <= time::Duration::minutes(30), "{left}");
}

/// Runs `cmd args` as the Unix user `user` (the tests run as root).
fn run_as(user: &str, cmd: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["-u", user, "--", cmd];
    all.extend_from_slice(args);
    run("runuser", &all)
}

#[test]
fn init_gives_the_reader_read_access() {
    // `tbot init` chowns and sets ACLs: it runs as root, as the tests do here and in CI.
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "the tbot suite runs as root (tbot init chowns, and the reader is another user)"
    );
    let auth = AuthServer::start();
    let join = add_bot(&auth, "robot", "access");
    // A scratch dir every user may traverse; the bot user is `daemon`, the reader `nobody`.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (data, dest) = (tmp.path().join("data"), tmp.path().join("out"));
    // As an operator would: the bot user's own data dir, made by root.
    std::fs::create_dir(&data).unwrap();
    let daemon = nix::unistd::User::from_name("daemon").unwrap().unwrap();
    nix::unistd::chown(&data, Some(daemon.uid), Some(daemon.gid)).unwrap();
    run_tbot(
        &[
            "init",
            "--destination-dir",
            dest.to_str().unwrap(),
            "--bot-user",
            "daemon",
            "--reader-user",
            "nobody",
        ],
        &[],
    )
    .success();
    let (ok, acl) = run("getfacl", &["-p", dest.to_str().unwrap()]);
    assert!(ok, "{acl}");
    assert!(acl.contains("# owner: daemon"), "{acl}");
    assert!(acl.contains("user:nobody:r-x"), "{acl}");
    assert!(acl.contains("default:user:nobody:r--"), "{acl}");
    assert!(acl.contains("other::---"), "{acl}");

    // The bot user writes the outputs; the reader reads them; nobody else does, and the
    // reader sees nothing of the bot's data dir.
    let tbot = machine_id_e2e::binaries().tbot.display().to_string();
    let mut args = vec![
        "env",
        "-u",
        "TELEPORT_BOT_TOKEN",
        "-u",
        "TELEPORT_AUTH_SERVER",
        &tbot,
    ];
    let start = start_args(&auth, &join, &data, &dest);
    args.extend(start.iter().map(String::as_str));
    args.push("--oneshot");
    let (ok, log) = run_as("daemon", args[0], &args[1..]);
    assert!(ok, "tbot as the bot user failed:\n{log}");
    let (ok, pem) = run_as("nobody", "cat", &[dest.join("tlscert").to_str().unwrap()]);
    assert!(ok && pem.contains("BEGIN CERTIFICATE"), "{pem}");
    let (ok, key) = run_as("nobody", "cat", &[dest.join("key").to_str().unwrap()]);
    assert!(
        ok && key.contains("PRIVATE KEY"),
        "the reader cannot read key: {key}"
    );
    let (ok, e) = run_as("nobody", "ls", &[data.to_str().unwrap()]);
    assert!(!ok && e.contains("Permission denied"), "{e}");
    let (ok, e) = run_as("bin", "cat", &[dest.join("tlscert").to_str().unwrap()]);
    assert!(
        !ok && e.contains("Permission denied"),
        "another user read the outputs: {e}"
    );

    let e = run_tbot(
        &[
            "init",
            "--destination-dir",
            dest.to_str().unwrap(),
            "--bot-user",
            "no-such-user-here",
            "--reader-user",
            "nobody",
        ],
        &[],
    )
    .failure();
    assert!(e.contains("no-such-user-here"), "{e}");
}

/// `--destination-dir` equal to, inside or around `--data-dir` is refused with one line that
/// names both and the fix, and the identity is untouched; oversized token, CA and config
/// files are refused with their size and the limit, without being read whole.
#[test]
fn overlapping_dirs_and_oversized_files_are_refused_with_one_clear_line() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    oneshot(&auth, &join, &data, &dest).success();
    let before = generation(&data);

    for (bad, relation) in [
        (data.clone(), "is"),
        (data.join("out"), "lies inside"),
        (scratch.clone(), "contains"),
    ] {
        let e = oneshot(&auth, &join, &data, &bad).failure();
        assert_eq!(
            e.lines().filter(|l| l.starts_with("ERROR: ")).count(),
            1,
            "{e}"
        );
        assert!(
            e.contains(&format!(
                "ERROR: destination {} {relation} the data directory {}",
                bad.display(),
                data.display()
            )) && e.contains("choose a --destination-dir outside --data-dir"),
            "{e}"
        );
    }
    assert!(!data.join("out").exists());
    assert!(!data.join("key").exists() && !data.join("ssh_config").exists());
    // The identity is whole and renews.
    oneshot(&auth, &join, &data, &dest).success();
    assert_eq!(generation(&data), before + 1);

    let big = |name: &str, len: usize| {
        let p = scratch.join(name);
        std::fs::write(&p, vec![b'a'; len]).unwrap();
        p
    };
    let token = big("token", 100 * 1024);
    let bad = Join {
        token: token.display().to_string(),
        pin: join.pin.clone(),
    };
    let e = oneshot(
        &auth,
        &bad,
        &scratch.join("data-t"),
        &scratch.join("dest-t"),
    )
    .failure();
    assert!(
        e.contains(&format!(
            "ERROR: the token file {} is 102400 bytes, more than the 65536-byte limit for a token file;",
            token.display()
        )),
        "{e}"
    );

    let cas = big("cas.pem", 2 << 20);
    let fresh = add_bot(&auth, "robot2", "access");
    let mut args = start_args(
        &auth,
        &fresh,
        &scratch.join("data-c"),
        &scratch.join("dest-c"),
    );
    let i = args.iter().position(|a| a == "--ca-pin").unwrap();
    args.drain(i..i + 2);
    args.extend([
        "--ca-path".into(),
        cas.display().to_string(),
        "--oneshot".into(),
    ]);
    let e = run_tbot(&args, &[]).failure();
    assert!(
        e.contains(&format!(
            "ERROR: the CA file {} is 2097152 bytes, more than the 1048576-byte limit for a CA file; point --ca-path",
            cas.display()
        )),
        "{e}"
    );

    let config = big("tbot.yaml", (1 << 20) + 1);
    let e = run_tbot(&["start", "-c", config.to_str().unwrap()], &[]).failure();
    assert!(
        e.contains(&format!(
            "ERROR: the config file {} is 1048577 bytes, more than the 1048576-byte limit for a config file",
            config.display()
        )),
        "{e}"
    );
}
