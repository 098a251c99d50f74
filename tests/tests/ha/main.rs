//! End-to-end suite of high availability: real `auth-server` processes sharing one real
//! PostgreSQL database (started by the suite: `machine_id_store::pg_test`), the real `tctl`
//! and a real `tbot` daemon given every server. Servers are killed with SIGKILL, PostgreSQL is
//! stopped and started under a renewing bot, and a live SQLite cluster is moved with
//! `auth-server backend clone`; the judges are the servers themselves (generations, locks,
//! audit events) and tbot's outputs and metrics.
#![allow(clippy::unwrap_used, missing_docs)] // tests

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use machine_id_e2e::guide::{BotJoin, add_bot, free_port, http_get, tbot_start_args, wait_until};
use machine_id_e2e::{AuthServer, binaries, spawn_tbot};
use machine_id_mint::{certs_from_pem, parse_tls_identity};
use machine_id_store::pg_test::TempPostgres;

const CLUSTER: &str = "example.com";
/// How long a step the suite waits for (renewals every second) may take on a busy machine.
const STEP: Duration = Duration::from_secs(90);

/// An auth server on `conn`.
fn server_on(conn: &str) -> AuthServer {
    AuthServer::start_with_args(CLUSTER, &["--storage-conn-string", conn])
}

/// The generation of the bot identity tbot stored in `data`.
fn generation(data: &Path) -> u64 {
    std::fs::read_to_string(data.join("current/tlscert"))
        .ok()
        .and_then(|pem| certs_from_pem(&pem).ok())
        .and_then(|c| parse_tls_identity(&c[0]).ok())
        .map_or(0, |i| i.generation)
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

/// A tbot daemon renewing every second against `servers`, with its diagnostics on `diag`.
struct Tbot {
    child: Child,
    data: std::path::PathBuf,
    dest: std::path::PathBuf,
    log: std::path::PathBuf,
    diag: String,
}

impl Tbot {
    fn start(auth: &AuthServer, join: &BotJoin, servers: &str) -> Self {
        let scratch = auth.scratch();
        let (data, dest, log) = (
            scratch.join("tbot-data"),
            scratch.join("tbot-dest"),
            scratch.join("tbot.log"),
        );
        let diag = format!("127.0.0.1:{}", free_port());
        let mut args = tbot_start_args(auth, join, &data, &dest);
        let at = args.iter().position(|a| a == "--auth-server").unwrap();
        args[at + 1] = servers.to_string();
        args.extend(
            [
                "--renewal-interval",
                "1s",
                "--certificate-ttl",
                "1h",
                "--diag-addr",
                &diag,
            ]
            .map(String::from),
        );
        let child = spawn_tbot(&args, &log);
        let tbot = Self {
            child,
            data,
            dest,
            log,
            diag,
        };
        tbot.wait_for_generation(2);
        tbot
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn generation(&self) -> u64 {
        generation(&self.data)
    }

    /// Waits until the bot's stored generation reaches `n`.
    fn wait_for_generation(&self, n: u64) {
        wait_until(STEP, &format!("tbot's generation {n}"), || {
            self.generation() >= n
        });
    }

    /// Waits for `more` renewals beyond the current generation, and for the outputs to carry
    /// a certificate written after the last of them.
    fn wait_for_renewals(&self, more: u64) {
        let target = self.generation() + more;
        self.wait_for_generation(target);
        let before = std::fs::read(self.dest.join("tlscert")).unwrap();
        wait_until(STEP, "a fresh output certificate", || {
            std::fs::read(self.dest.join("tlscert")).is_ok_and(|c| c != before)
        });
    }

    fn metrics(&self) -> String {
        http_get(&self.diag, "/metrics").1
    }
}

impl Drop for Tbot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// No lock in the cluster (a generation check tripped by a retry would leave one).
#[track_caller]
fn assert_no_locks(auth: &AuthServer) {
    let out = auth.tctl(&["locks", "ls", "--format", "json"]).success();
    let locks: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(locks.as_array().map(Vec::len), Some(0), "locks: {out}");
}

#[test]
fn a_tbot_given_both_servers_renews_on_while_either_is_killed_and_restarted() {
    let Some(pg) = TempPostgres::shared() else {
        return;
    };
    let conn = pg.create_fresh_database();
    let mut a = server_on(&conn);
    let mut b = server_on(&conn);
    let join = add_bot(&a, "robot", "access");
    let tbot = Tbot::start(&a, &join, &format!("{},{}", a.addr, b.addr));

    a.kill9();
    tbot.wait_for_renewals(3);
    a.restart_same_addr();
    b.kill9();
    tbot.wait_for_renewals(3);
    b.restart_same_addr();
    tbot.wait_for_renewals(2);

    let metrics = tbot.metrics();
    assert_eq!(
        metric(&metrics, "tbot_renewal_failures_total"),
        Some(0),
        "no failed renewal beyond retries:\n{metrics}\n{}",
        tbot.log()
    );
    assert!(
        metric(&metrics, "tbot_auth_failovers_total").unwrap_or(0) >= 1,
        "the bot moved to the other server:\n{metrics}"
    );
    // Both servers agree on the bot and the log, whichever wrote it.
    for server in [&a, &b] {
        assert_no_locks(server);
        let events = server.tctl(&["events", "ls", "--format", "json"]).success();
        assert!(events.contains("bot.create"), "{events}");
        assert!(events.contains("\"cert.create\""), "{events}");
    }
    assert!(tbot.generation() >= 10, "{}", tbot.log());
}

#[test]
fn a_postgresql_restart_during_renewals_loses_nothing_and_renewals_resume() {
    // A server of its own: stopping the shared one would stop the other tests' databases.
    let Some(pg) = TempPostgres::start() else {
        return;
    };
    let conn = pg.create_fresh_database();
    let diag = format!("127.0.0.1:{}", free_port());
    let auth = AuthServer::start_with_args(
        CLUSTER,
        &["--storage-conn-string", &conn, "--diag-addr", &diag],
    );
    let join = add_bot(&auth, "robot", "access");
    let tbot = Tbot::start(&auth, &join, &auth.addr);
    tbot.wait_for_renewals(2);
    assert_eq!(http_get(&diag, "/readyz").0, 200);

    pg.stop();
    wait_until(STEP, "the auth server to report its store down", || {
        http_get(&diag, "/readyz").0 == 503
    });
    let stalled = tbot.generation();
    let out = auth.tctl(&["bots", "ls"]);
    assert_ne!(
        out.code, 0,
        "a call needing the database fails while it is down"
    );
    assert!(
        out.stderr.to_lowercase().contains("unavailable")
            || out.stderr.contains("PostgreSQL")
            || out.stderr.contains("postgresql"),
        "{}",
        out.stderr
    );
    assert!(
        tbot.dest.join("tlscert").exists(),
        "tbot keeps its last certificates"
    );

    pg.start_again();
    wait_until(STEP, "the auth server to be ready again", || {
        http_get(&diag, "/readyz").0 == 200
    });
    tbot.wait_for_generation(stalled + 3);
    assert_no_locks(&auth);
    let bots = auth.tctl(&["bots", "ls"]).success();
    assert!(bots.contains("robot"), "{bots}");
}

#[test]
fn a_hundred_concurrent_joins_with_one_token_over_two_servers_admit_one_bot() {
    let Some(pg) = TempPostgres::shared() else {
        return;
    };
    let conn = pg.create_fresh_database();
    // 50 handshakes at once from one address: above the default per-address limit (32) on
    // connections without a client certificate, which would turn most away before they join.
    let config = tempfile::tempdir().unwrap();
    let config_file = config.path().join("auth.yaml");
    std::fs::write(
        &config_file,
        "limits:\n  max_unauthenticated_connections_per_ip: 128\n",
    )
    .unwrap();
    let config_arg = config_file.display().to_string();
    let args = ["--storage-conn-string", &conn, "--config", &config_arg];
    let a = AuthServer::start_with_args(CLUSTER, &args);
    let b = AuthServer::start_with_args(CLUSTER, &args);
    let join = add_bot(&a, "robot", "access");
    let cas = {
        let pem = std::fs::read_to_string(a.identity_dir().join("tlscacerts")).unwrap();
        certs_from_pem(&pem).unwrap()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admitted = rt.block_on(async {
        let mut joins = tokio::task::JoinSet::new();
        for i in 0..100 {
            let addr = if i % 2 == 0 {
                a.addr.clone()
            } else {
                b.addr.clone()
            };
            let (cas, token) = (cas.clone(), join.token.clone());
            joins.spawn(async move {
                let key =
                    machine_id_mint::PrivateKey::generate(machine_id_mint::Suite::Default).unwrap();
                let client = machine_id_client::Client::connect_with_cas(addr.as_str(), &cas)
                    .await
                    .unwrap();
                client
                    .register_using_token(
                        &machine_id_join::token::TokenSecret::new(&token),
                        &key.public_key().to_spki_der(),
                        Duration::from_secs(3600),
                    )
                    .await
                    .is_ok()
            });
        }
        joins.join_all().await.into_iter().filter(|ok| *ok).count()
    });
    assert_eq!(admitted, 1, "one bot joins with a single-use token");
    let events = b.tctl(&["events", "ls", "--format", "json"]).success();
    assert_eq!(events.matches("\"bot.join\"").count(), 1, "{events}");
}

#[test]
fn backend_clone_moves_a_live_cluster_to_postgresql_and_the_bot_keeps_renewing() {
    let Some(pg) = TempPostgres::shared() else {
        return;
    };
    let conn = pg.create_fresh_database();
    let mut auth = AuthServer::start_cluster(CLUSTER);
    let join = add_bot(&auth, "robot", "access");
    let tbot = Tbot::start(&auth, &join, &auth.addr);
    tbot.wait_for_renewals(1);
    auth.stop();

    let scratch = auth.scratch();
    let (from, to) = (scratch.join("from.yaml"), scratch.join("to.yaml"));
    std::fs::write(&from, format!("data_dir: {}\n", auth.data_dir().display())).unwrap();
    std::fs::write(
        &to,
        format!(
            "data_dir: {}\nstorage:\n  type: postgresql\n  conn_string: {conn}\n",
            scratch.join("pg-data").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(&binaries().auth_server)
        .args(["backend", "clone", "--from"])
        .arg(&from)
        .arg("--to")
        .arg(&to)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Copied cluster \"example.com\""),
        "{stdout}"
    );

    let before = tbot.generation();
    auth.restart_same_addr_with(&["--storage-conn-string", &conn]);
    tbot.wait_for_generation(before + 2);
    assert_no_locks(&auth);
    assert!(
        auth.log().contains("postgresql"),
        "the server runs on PostgreSQL now:\n{}",
        auth.log()
    );
    let events = auth.tctl(&["events", "ls", "--format", "json"]).success();
    assert!(
        events.contains("bot.create"),
        "the old audit log came along: {events}"
    );
}

#[test]
fn a_replay_on_one_server_after_a_renewal_on_the_other_locks_the_bot_and_a_lock_reaches_both() {
    use machine_id_client::{Client, ClientIdentity};
    use machine_id_mint::{PrivateKey, Suite};
    let Some(pg) = TempPostgres::shared() else {
        return;
    };
    let conn = pg.create_fresh_database();
    let a = server_on(&conn);
    let b = server_on(&conn);
    let cas = {
        let pem = std::fs::read_to_string(a.identity_dir().join("tlscacerts")).unwrap();
        certs_from_pem(&pem).unwrap()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let identity = |key: &PrivateKey, cert: Vec<u8>| {
        ClientIdentity::from_parts(&key.to_pem(), cert, cas.clone()).unwrap()
    };
    let hour = Duration::from_secs(3600);

    // Two bots joined through B; each renews once through A.
    let mut ids = Vec::new();
    for name in ["robot", "other"] {
        let join = add_bot(&a, name, "access");
        let key = PrivateKey::generate(Suite::Default).unwrap();
        let first = rt.block_on(async {
            let anon = Client::connect_with_cas(b.addr.as_str(), &cas)
                .await
                .unwrap();
            anon.register_using_token(
                &machine_id_join::token::TokenSecret::new(&join.token),
                &key.public_key().to_spki_der(),
                hour,
            )
            .await
            .unwrap()
        });
        let first = identity(&key, first.tls_cert);
        let key2 = PrivateKey::generate(Suite::Default).unwrap();
        let second = rt.block_on(async {
            let on_a = Client::connect(a.addr.as_str(), &first).await.unwrap();
            on_a.generate_user_certs(&key2.public_key().to_spki_der(), hour, &[])
                .await
                .unwrap()
        });
        ids.push((first, identity(&key2, second.tls_cert)));
    }

    // robot's first certificate replayed on B: refused, the bot locked, one event.
    let (old, new) = &ids[0];
    let replay = rt.block_on(async {
        let on_b = Client::connect(b.addr.as_str(), old).await.unwrap();
        let key = PrivateKey::generate(Suite::Default).unwrap();
        on_b.generate_user_certs(&key.public_key().to_spki_der(), hour, &[])
            .await
    });
    let e = replay
        .expect_err("a replayed generation is refused")
        .to_string();
    assert!(e.contains("locked"), "{e}");
    for server in [&a, &b] {
        let events = server.tctl(&["events", "ls", "--format", "json"]).success();
        assert_eq!(
            events.matches("\"cert.generation_mismatch\"").count(),
            1,
            "{events}"
        );
        // The lock holds for robot's newest certificate on both servers.
        let refused = rt.block_on(async {
            match Client::connect(server.addr.as_str(), new).await {
                Ok(c) => c.list_nodes().await.is_err(),
                Err(_) => true,
            }
        });
        assert!(refused, "robot is locked on {}", server.addr);
    }

    // A lock made through A refuses `other` on B within a second.
    let (_, other) = &ids[1];
    let on_b = rt
        .block_on(Client::connect(b.addr.as_str(), other))
        .unwrap();
    rt.block_on(on_b.list_nodes()).unwrap();
    a.tctl(&["bots", "lock", "other", "--message=lost laptop"])
        .success();
    let locked_at = std::time::Instant::now();
    loop {
        match rt.block_on(on_b.list_nodes()) {
            Err(e) if e.to_string().contains("lost laptop") => break,
            r => {
                assert!(
                    locked_at.elapsed() < Duration::from_secs(1),
                    "B still answers `other` 1 s after the lock was made on A: {r:?}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
