//! End-to-end suite of CA rotation: the real `auth-server`, `tctl auth rotate`, a running
//! `tbot` daemon and a real OpenSSH `sshd` node behind the proxy, with `ssh -F ssh_config`
//! logging in about once a second through every phase. sshd and ssh judge every login; the
//! destination's files and `ssh-keygen -L` / `openssl verify` show which CA signed what.
#![allow(clippy::unwrap_used, missing_docs)] // tests

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use machine_id_e2e::guide::{
    BotJoin, HANG, Sshd, add_bot, free_port, http_get, ssh, tbot_start_args, wait_until,
};
use machine_id_e2e::{AuthServer, spawn_tbot};
use machine_id_mint::ssh_fingerprint;

/// The CAs as `tctl auth export` prints them: one entry per trusted key, active first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cas {
    user: Vec<String>,
    host: Vec<String>,
    tls: Vec<String>,
}

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn pems(text: &str) -> Vec<String> {
    text.split_inclusive("-----END CERTIFICATE-----")
        .map(str::trim)
        .filter(|p| p.contains("BEGIN CERTIFICATE"))
        .map(|p| format!("{p}\n"))
        .collect()
}

fn cas(auth: &AuthServer) -> Cas {
    Cas {
        user: lines(&auth.tctl(&["auth", "export", "--type=user"]).success()),
        host: lines(&auth.tctl(&["auth", "export", "--type=host"]).success())
            .iter()
            .map(|l| {
                // `@cert-authority PATTERNS KEYTYPE KEY type=host`: the key alone.
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {}", f[2], f[3])
            })
            .collect(),
        tls: pems(&auth.tctl(&["auth", "export", "--type=tls"]).success()),
    }
}

fn rotate(auth: &AuthServer, phase: &str) {
    auth.tctl(&[
        "auth",
        "rotate",
        "--manual",
        "--type=all",
        &format!("--phase={phase}"),
    ])
    .success();
}

/// The fingerprint of the CA that signed the SSH certificate at `path` (`ssh-keygen -L`).
fn ssh_signer(path: &Path) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Signing CA: "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string()
}

fn fp(line: &str) -> String {
    ssh_fingerprint(line).unwrap()
}

/// Whether `openssl verify` accepts the certificate at `cert` with only `ca_pem` trusted.
fn openssl_verifies(ca_pem: &str, cert: &Path, scratch: &Path) -> bool {
    let ca = scratch.join(format!("ca-{}.pem", free_port()));
    std::fs::write(&ca, ca_pem).unwrap();
    let ok = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&ca)
        .arg(cert)
        .output()
        .unwrap()
        .status
        .success();
    let _ = std::fs::remove_file(&ca);
    ok
}

/// Whether `openssl s_client` verifies the auth server with only `ca_pem` trusted.
fn openssl_connects(auth: &AuthServer, ca_pem: &str) -> bool {
    use std::io::Write as _;
    let ca = auth.scratch().join(format!("only-{}.pem", free_port()));
    std::fs::write(&ca, ca_pem).unwrap();
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &auth.addr,
            "-verify_return_error",
            "-brief",
        ])
        .arg("-CAfile")
        .arg(&ca)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(b"");
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.contains("Verification: OK")
}

/// What the destination says the bot trusts.
#[derive(Debug, PartialEq, Eq)]
struct Trusted {
    tls: Vec<String>,
    ssh: Vec<String>,
    known_hosts: Vec<String>,
}

fn trusted(dest: &Path) -> Trusted {
    let read = |n: &str| std::fs::read_to_string(dest.join(n)).unwrap_or_default();
    Trusted {
        tls: pems(&read("tlscacerts")),
        ssh: lines(&read("sshcacerts")),
        known_hosts: lines(&read("known_hosts"))
            .into_iter()
            .filter(|l| l.starts_with("@cert-authority"))
            .collect(),
    }
}

/// Whether the destination trusts exactly the CAs `cas` lists.
fn trusts_exactly(dest: &Path, cas: &Cas) -> bool {
    let t = trusted(dest);
    let mut want_ssh: Vec<String> = cas.user.iter().chain(&cas.host).cloned().collect();
    let mut have_ssh = t.ssh.clone();
    want_ssh.sort();
    have_ssh.sort();
    let mut want_tls = cas.tls.clone();
    let mut have_tls = t.tls.clone();
    want_tls.sort();
    have_tls.sort();
    want_tls == have_tls
        && want_ssh == have_ssh
        && t.known_hosts.len() == cas.host.len()
        && cas.host.iter().all(|k| {
            t.known_hosts
                .iter()
                .any(|l| l.contains(k.split_whitespace().nth(1).unwrap()))
        })
}

/// `ssh -F ssh_config root@node` about once a second on a thread of its own, counting every
/// login and keeping every failure.
struct LoginLoop {
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoginLoop {
    fn start(config: PathBuf, destination: &str) -> Self {
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ok2, failures2, stop2) = (ok.clone(), failures.clone(), stop.clone());
        let destination = destination.to_string();
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let started = Instant::now();
                let out = ssh(&config, &destination, &["echo", "logged-in"]);
                if out.code == 0 && out.stdout.contains("logged-in") {
                    ok2.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures2
                        .lock()
                        .unwrap()
                        .push(format!("exit {}: {}{}", out.code, out.stdout, out.stderr));
                }
                if let Some(rest) = Duration::from_secs(1).checked_sub(started.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        });
        Self {
            ok,
            failures,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits for `n` more successful logins.
    fn wait_for(&self, n: usize, what: &str) {
        let target = self.ok.load(Ordering::Relaxed) + n;
        wait_until(HANG, &format!("{n} logins {what}"), || {
            self.ok.load(Ordering::Relaxed) >= target
        });
    }

    /// Stops the loop; returns the number of logins and the failures.
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

impl Drop for LoginLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A cluster with one OpenSSH node the bot may log in to as root, and a tbot daemon.
struct Setup {
    auth: AuthServer,
    node: Sshd,
    tbot: Child,
    dest: PathBuf,
    log: PathBuf,
    diag: String,
}

impl Setup {
    fn start(auth: AuthServer, renewal_interval: &str) -> Self {
        let scratch = auth.scratch();
        let node = Sshd::start(&auth, "node-name", &scratch.join("node"));
        auth.tctl(&[
            "nodes",
            "add",
            "--name=node-name",
            &format!("--addr={}", node.addr),
            "--labels=env=dev",
        ])
        .success();
        let role = scratch.join("root-login.yaml");
        std::fs::write(
            &role,
            "kind: role\nversion: v5\nmetadata:\n  name: root-login\nspec:\n  allow:\n    logins: [root]\n    node_labels:\n      '*': '*'\n",
        )
        .unwrap();
        auth.tctl(&["create", role.to_str().unwrap()]).success();
        let join: BotJoin = add_bot(&auth, "robot", "root-login");
        let (data, dest, log) = (
            scratch.join("tbot-data"),
            scratch.join("machine-id"),
            scratch.join("tbot.log"),
        );
        let diag = format!("127.0.0.1:{}", free_port());
        let mut args = tbot_start_args(&auth, &join, &data, &dest);
        args.extend(
            [
                "--renewal-interval",
                renewal_interval,
                "--certificate-ttl",
                "1h",
                "--diag-addr",
                &diag,
            ]
            .map(String::from),
        );
        let tbot = spawn_tbot(&args, &log);
        let setup = Self {
            auth,
            node,
            tbot,
            dest,
            log,
            diag,
        };
        wait_until(HANG, "tbot's first outputs", || {
            setup.tbot_log().contains("wrote the output certificates")
        });
        setup
    }

    fn tbot_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn renewal_failures(&self) -> u64 {
        let text = http_get(&self.diag, "/metrics").1;
        text.lines()
            .find_map(|l| l.strip_prefix("tbot_renewal_failures_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no tbot_renewal_failures_total in:\n{text}"))
    }

    /// Waits until the destination trusts exactly `cas`.
    fn wait_trusts(&self, cas: &Cas, what: &str) {
        wait_until(HANG, what, || trusts_exactly(&self.dest, cas));
    }

    /// Waits until the bot's SSH and X.509 certificates come from the active keys of `cas`.
    fn wait_signed_by(&self, cas: &Cas, what: &str) {
        let user = fp(&cas.user[0]);
        let scratch = self.auth.scratch();
        wait_until(HANG, what, || {
            ssh_signer(&self.dest.join("sshcert")) == user
                && openssl_verifies(&cas.tls[0], &self.dest.join("tlscert"), &scratch)
        });
    }

    /// Checks the end of a run: no failed login, no failed renewal, no lock.
    fn assert_clean(&self, logins: LoginLoop) {
        let (ok, failures) = logins.finish();
        assert!(
            failures.is_empty(),
            "{} failed logins of {}:\n{}\nsshd:\n{}\ntbot:\n{}",
            failures.len(),
            ok + failures.len(),
            failures.join("\n"),
            self.node.log(),
            self.tbot_log()
        );
        assert!(ok >= 10, "only {ok} logins");
        assert_eq!(self.renewal_failures(), 0, "tbot:\n{}", self.tbot_log());
        let locks = self
            .auth
            .tctl(&["locks", "ls", "--format", "json"])
            .success();
        assert_eq!(locks.trim(), "[]", "locks: {locks}");
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = self.tbot.kill();
        let _ = self.tbot.wait();
    }
}

#[test]
fn rotating_every_ca_by_hand_loses_no_login_and_no_renewal() {
    let s = Setup::start(AuthServer::start(), "3s");
    let logins = LoginLoop::start(s.dest.join("ssh_config"), "root@node-name.example.com");
    logins.wait_for(3, "before the rotation");
    let old = cas(&s.auth);
    assert_eq!((old.user.len(), old.host.len(), old.tls.len()), (1, 1, 1));

    // init: the new keys are trusted; nodes learn the new user CA before update_clients.
    rotate(&s.auth, "init");
    let both = cas(&s.auth);
    assert_eq!(
        (both.user.len(), both.host.len(), both.tls.len()),
        (2, 2, 2)
    );
    assert_eq!(
        both.user[0], old.user[0],
        "init: the old user CA still signs"
    );
    s.node.install_user_cas(&s.auth);
    s.wait_trusts(&both, "the destination trusting both CAs of each type");
    // A client given either CA pin alone verifies the server (openssl judges the chain).
    for ca in &both.tls {
        assert!(
            openssl_connects(&s.auth, ca),
            "openssl with one CA of {both:?}"
        );
    }
    logins.wait_for(3, "during init");

    // update_clients: the new keys sign; tbot renews on its own.
    rotate(&s.auth, "update_clients");
    let swapped = cas(&s.auth);
    assert_eq!(swapped.user[0], both.user[1], "the new user CA is active");
    s.wait_signed_by(&swapped, "the bot's certificates from the new CAs");
    logins.wait_for(3, "during update_clients");

    // update_servers: servers present the new TLS CA; the node gets a new host certificate.
    rotate(&s.auth, "update_servers");
    s.node.resign_host(&s.auth);
    logins.wait_for(3, "during update_servers");

    // standby: only the new keys remain, in the cluster and in the destination.
    rotate(&s.auth, "standby");
    let new = cas(&s.auth);
    assert_eq!(new.user, vec![swapped.user[0].clone()]);
    assert_eq!(new.tls, vec![swapped.tls[0].clone()]);
    s.wait_trusts(&new, "the destination trusting only the new CAs");
    logins.wait_for(3, "after standby");
    // The node drops the old user CA too.
    s.node.install_user_cas(&s.auth);
    logins.wait_for(3, "with only the new user CA on the node");
    s.assert_clean(logins);
    let t = trusted(&s.dest);
    assert!(!t.tls.contains(&old.tls[0]) && !t.ssh.contains(&old.user[0]));
}

#[test]
fn a_rollback_from_update_servers_loses_no_login() {
    let s = Setup::start(AuthServer::start(), "3s");
    let logins = LoginLoop::start(s.dest.join("ssh_config"), "root@node-name.example.com");
    logins.wait_for(3, "before the rotation");
    let old = cas(&s.auth);
    rotate(&s.auth, "init");
    s.node.install_user_cas(&s.auth);
    let both = cas(&s.auth);
    s.wait_trusts(&both, "the destination trusting both CAs");
    rotate(&s.auth, "update_clients");
    s.wait_signed_by(&cas(&s.auth), "the bot's certificates from the new CAs");
    rotate(&s.auth, "update_servers");
    s.node.resign_host(&s.auth);
    logins.wait_for(3, "during update_servers");

    // rollback: the old keys sign again; the node goes back to a host certificate of the old
    // host CA; the bot follows.
    rotate(&s.auth, "rollback");
    let back = cas(&s.auth);
    assert_eq!(back.user[0], old.user[0], "the old user CA signs again");
    s.node.resign_host(&s.auth);
    s.wait_signed_by(&back, "the bot's certificates from the old CAs again");
    logins.wait_for(3, "during rollback");
    rotate(&s.auth, "standby");
    assert_eq!(
        cas(&s.auth),
        old,
        "after the rollback the cluster has its old CAs"
    );
    s.wait_trusts(&old, "the destination trusting only the old CAs");
    logins.wait_for(3, "after the rollback");
    s.assert_clean(logins);
}

#[test]
fn an_automatic_rotation_walks_every_phase_and_the_bot_follows() {
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = cfg_dir.path().join("auth.yaml");
    std::fs::write(&cfg, "auth_service:\n  rotation_check_interval: 200ms\n").unwrap();
    let auth = AuthServer::start_with_args("example.com", &["--config", cfg.to_str().unwrap()]);
    // A renewal interval of an hour: only the CA watch can explain a renewal.
    let s = Setup::start(auth, "1h");
    let old = cas(&s.auth);
    let t0 = Instant::now();
    s.auth
        .tctl(&["auth", "rotate", "--type=all", "--grace-period=12s"])
        .success();
    wait_until(HANG, "the rotation back in standby", || {
        let c = cas(&s.auth);
        c.tls.len() == 1 && c.tls != old.tls
    });
    assert!(
        t0.elapsed() >= Duration::from_secs(11),
        "the phases waited for the schedule"
    );
    let new = cas(&s.auth);
    assert_ne!(new.user, old.user);
    s.wait_trusts(&new, "the destination trusting only the new CAs");
    s.wait_signed_by(&new, "the bot's certificates from the new CAs");
    let events = s
        .auth
        .tctl(&["events", "ls", "--type=ca.rotate", "--format=json"])
        .success();
    let events: Vec<serde_json::Value> = serde_json::from_str(&events).unwrap();
    assert_eq!(
        events.len(),
        12,
        "3 types x 4 phase changes, each once: {events:?}"
    );
    assert_eq!(s.renewal_failures(), 0, "tbot:\n{}", s.tbot_log());
    // The bot renewed because of the rotation, not its schedule.
    assert!(
        s.tbot_log().to_lowercase().contains("rotation"),
        "{}",
        s.tbot_log()
    );
}

#[test]
fn a_kill_9_around_a_phase_change_leaves_every_ca_wholly_in_one_phase() {
    let mut auth = AuthServer::start();
    for (round, delay_ms) in [0u64, 2, 5, 10, 30].into_iter().enumerate() {
        let before = cas(&auth);
        let phase = if before.tls.len() == 1 {
            "init"
        } else {
            "rollback"
        };
        // tctl races the kill: the change commits wholly or not at all.
        let tctl = std::process::Command::new(&machine_id_e2e::binaries().tctl)
            .args(["--auth-server", &auth.addr, "--identity"])
            .arg(auth.identity_dir())
            .args([
                "auth",
                "rotate",
                "--manual",
                "--type=all",
                &format!("--phase={phase}"),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        auth.kill9();
        // Whatever tctl got is of no interest: the store decides.
        let mut tctl = tctl;
        let _ = tctl.kill();
        let _ = tctl.wait();
        auth.restart_same_addr();
        let after = cas(&auth);
        let status = auth
            .tctl(&["get", "cert_authorities", "--format=json"])
            .success();
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        let phases: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c["spec"]["rotation"]["phase"]
                    .as_str()
                    .unwrap_or("standby")
                    .to_string()
            })
            .collect();
        assert!(
            phases.iter().all(|p| p == &phases[0]),
            "round {round}: the CA types moved apart: {phases:?}"
        );
        let sizes = (after.user.len(), after.host.len(), after.tls.len());
        assert!(
            sizes == (1, 1, 1) || sizes == (2, 2, 2),
            "round {round}: {sizes:?}"
        );
        if phases[0] == "rollback" {
            rotate(&auth, "standby");
        }
    }
    // The cluster still works: a bot joins and the rotation can be walked to the end.
    let join = add_bot(&auth, "after", "access");
    assert!(!join.token.is_empty());
    if cas(&auth).tls.len() == 2 {
        rotate(&auth, "rollback");
        rotate(&auth, "standby");
    }
    rotate(&auth, "init");
    auth.kill9();
    auth.restart_same_addr();
    rotate(&auth, "update_clients");
    rotate(&auth, "update_servers");
    rotate(&auth, "standby");
    assert_eq!(cas(&auth).tls.len(), 1);
}
