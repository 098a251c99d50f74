//! A `tbot start` daemon follows a CA rotation of the real `auth-server` on its own, phase by
//! phase (its renewal interval is ten minutes, so only the CA watch explains a renewal); a
//! bot that was stopped for the whole rotation exits 1 saying to join again.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use machine_id_client::{Client, ClientIdentity, RotateRequest, ca_pins};
use machine_id_e2e::{AuthServer, spawn_tbot};
use machine_id_mint::certs_from_pem;
use machine_id_types::{CaType, CertAuthority, RotationPhase};

use crate::{add_bot, free_port, generation, http_get, metric, oneshot, start_args, until};

/// Keys as `algorithm base64`, TLS CAs as pins.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Trust {
    tls: BTreeSet<String>,
    ssh: BTreeSet<String>,
    known_hosts: BTreeSet<String>,
}

fn key_id<'a>(mut fields: impl Iterator<Item = &'a str>) -> Option<String> {
    Some(format!("{} {}", fields.next()?, fields.next()?))
}

fn pins(ders: &[Vec<u8>]) -> BTreeSet<String> {
    ca_pins(ders)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// What the cluster trusts, from `GetCertAuthorities`.
fn cluster_trust(cas: &[CertAuthority]) -> Trust {
    let mut t = Trust {
        tls: BTreeSet::new(),
        ssh: BTreeSet::new(),
        known_hosts: BTreeSet::new(),
    };
    for ca in cas {
        for set in [&ca.spec.active_keys, &ca.spec.additional_trusted_keys] {
            for pem in &set.tls {
                t.tls.extend(pins(&certs_from_pem(pem).unwrap()));
            }
            for line in &set.ssh {
                let id = key_id(line.split_whitespace()).unwrap();
                if ca.sub_kind == CaType::Host {
                    t.known_hosts.insert(id.clone());
                }
                t.ssh.insert(id);
            }
        }
    }
    t
}

/// What the destination directory holds.
fn dest_trust(dest: &Path) -> Option<Trust> {
    let read = |f: &str| std::fs::read_to_string(dest.join(f)).ok();
    Some(Trust {
        tls: pins(&certs_from_pem(&read("tlscacerts")?).ok()?),
        ssh: read("sshcacerts")?
            .lines()
            .filter_map(|l| key_id(l.split_whitespace()))
            .collect(),
        known_hosts: read("known_hosts")?
            .lines()
            .filter(|l| l.starts_with("@cert-authority"))
            .filter_map(|l| key_id(l.split_whitespace().skip(2)))
            .collect(),
    })
}

/// Calls the auth server as its admin (the identity is read again each time: the server
/// rewrites it as the CAs move).
struct Admin<'a> {
    auth: &'a AuthServer,
    rt: tokio::runtime::Runtime,
}

impl Admin<'_> {
    async fn client(&self) -> Client {
        let id = ClientIdentity::load(self.auth.identity_dir()).unwrap();
        Client::connect(&self.auth.addr, &id).await.unwrap()
    }

    fn rotate(&self, phase: RotationPhase) {
        self.rt.block_on(async {
            self.client()
                .await
                .rotate_ca(&RotateRequest {
                    ca_type: "all".into(),
                    phase: Some(phase),
                    manual: true,
                    grace_period: None,
                })
                .await
                .unwrap()
        });
    }

    fn trust(&self) -> Trust {
        self.rt.block_on(async {
            cluster_trust(&self.client().await.get_cert_authorities().await.unwrap())
        })
    }
}

#[test]
fn a_daemon_follows_a_rotation_and_a_sleeping_bot_is_told_to_join_again() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let admin = Admin {
        auth: &auth,
        rt: tokio::runtime::Runtime::new().unwrap(),
    };

    // A bot that joins, then sleeps through the whole rotation.
    let sleeper = add_bot(&auth, "sleeper", "access");
    let (s_data, s_dest) = (scratch.join("s-data"), scratch.join("s-dest"));
    oneshot(&auth, &sleeper, &s_data, &s_dest).success();

    // A daemon that only the CA watch can make renew.
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    let config = scratch.join("tbot.yaml");
    std::fs::write(&config, "ca_rotation_debounce: 1s\n").unwrap();
    let diag = free_port();
    let mut args = start_args(&auth, &join, &data, &dest);
    args.extend(
        [
            "-c",
            &config.display().to_string(),
            "--renewal-interval",
            "10m",
            "--certificate-ttl",
            "20m",
            "--diag-addr",
            &diag,
        ]
        .map(String::from),
    );
    let log = scratch.join("tbot.log");
    let mut tbot = spawn_tbot(&args, &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    until(
        Duration::from_secs(30),
        "the daemon's first renewal and watch",
        || {
            // Not listening yet: not yet.
            std::net::TcpStream::connect(&diag).is_ok()
                && http_get(&diag, "/readyz")
                    .1
                    .contains("ca rotation watch: watching")
        },
    );
    let before = admin.trust();
    assert_eq!(dest_trust(&dest).as_ref(), Some(&before));

    for phase in [
        RotationPhase::Init,
        RotationPhase::UpdateClients,
        RotationPhase::UpdateServers,
        RotationPhase::Standby,
    ] {
        let generation_before = generation(&data);
        admin.rotate(phase);
        if phase == RotationPhase::UpdateClients {
            // As docs/rotation.md says: wait until the bots renewed (their certificates
            // now come from the new CA) before update_servers. Only the watch renews here.
            until(
                Duration::from_secs(15),
                "update_clients: the bot renews",
                || generation(&data) > generation_before,
            );
        }
        let want = admin.trust();
        let deadline = Instant::now() + Duration::from_secs(15);
        while dest_trust(&dest).as_ref() != Some(&want) {
            assert!(
                Instant::now() < deadline,
                "{phase}: the destination does not hold what the cluster trusts\n{}",
                read_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let n = if phase == RotationPhase::Standby {
            1
        } else {
            2
        };
        assert_eq!(want.tls.len(), n, "{phase}");
        assert_eq!(want.known_hosts.len(), n, "{phase}");
    }
    let after = dest_trust(&dest).unwrap();
    assert!(after.tls.is_disjoint(&before.tls) && after.ssh.is_disjoint(&before.ssh));
    let log_text = read_log();
    assert!(
        log_text.contains("CA rotation: user, host, tls entered update_clients; renewing identity and outputs in 1s"),
        "{log_text}"
    );
    // The watch re-opens with the identity of the last renewal.
    until(Duration::from_secs(15), "the watch open again", || {
        http_get(&diag, "/readyz")
            .1
            .contains("ca rotation watch: watching")
    });
    let (code, body) = http_get(&diag, "/readyz");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = http_get(&diag, "/metrics");
    assert!(
        metric(&metrics, "tbot_ca_rotation_renewals_total").unwrap() >= 3,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "tbot_renewal_failures_total"),
        Some(0),
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "tbot_ca_watch_up"), Some(1), "{metrics}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(tbot.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(tbot.wait().unwrap().success(), "{}", read_log());

    // The sleeper wakes up after the rotation: exit 1, no retries, one clear message.
    let s_log = scratch.join("sleeper.log");
    let mut woken = spawn_tbot(&start_args(&auth, &sleeper, &s_data, &s_dest), &s_log);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = woken.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = woken.kill();
            panic!(
                "the sleeping bot did not exit:\n{}",
                std::fs::read_to_string(&s_log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let e = std::fs::read_to_string(&s_log).unwrap();
    assert_eq!(status.code(), Some(1), "{e}");
    let error: Vec<&str> = e.lines().filter(|l| l.starts_with("ERROR: ")).collect();
    assert_eq!(error.len(), 1, "{e}");
    assert!(
        error[0].contains(
            "the cluster's certificate authorities were rotated while this bot was offline"
        ) && error[0].contains("signed by a CA the cluster no longer trusts")
            && error[0].contains("tctl tokens add --type=bot --bot=sleeper"),
        "{e}"
    );
}
