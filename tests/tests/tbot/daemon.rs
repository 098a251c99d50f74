//! What the README promises of a running `tbot`: signals renew now or stop it, JSON logs,
//! and exit code 1 for a deleted bot or an expired identity.

use std::time::Duration;

use machine_id_e2e::{AuthServer, run_tbot, spawn_tbot};
use machine_id_mint::{certs_from_pem, parse_tls_identity};

use crate::{add_bot, generation, oneshot, start_args, tls_identity, until};

/// SIGHUP and SIGUSR1 renew now: with a renewal interval of an hour no scheduled renewal can
/// happen during the test, so each new generation and new output certificate is the signal's.
#[test]
fn signals_renew_now_and_sigterm_stops() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    let log = scratch.join("tbot.log");
    let mut args = start_args(&auth, &join, &data, &dest);
    args.extend(["--renewal-interval", "1h", "--certificate-ttl", "2h"].map(String::from));
    let mut tbot = spawn_tbot(&args, &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    until(Duration::from_secs(60), "the first renewal", || {
        read_log().contains("wrote the output certificates")
    });
    assert_eq!(generation(&data), 1, "{}", read_log());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(tbot.id()).unwrap());
    for (round, signal) in [
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGUSR1,
    ]
    .into_iter()
    .enumerate()
    {
        let gen_before = generation(&data);
        let cert_before = std::fs::read(dest.join("tlscert")).unwrap();
        let written = read_log().matches("wrote the output certificates").count();
        nix::sys::signal::kill(pid, signal).unwrap();
        until(
            Duration::from_secs(60),
            &format!("the renewal {signal} asked for"),
            || {
                read_log().matches("wrote the output certificates").count() > written
                    && generation(&data) > gen_before
            },
        );
        assert_eq!(generation(&data), 2 + u64::try_from(round).unwrap());
        assert_ne!(
            std::fs::read(dest.join("tlscert")).unwrap(),
            cert_before,
            "{signal}: no new output certificate"
        );
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tbot.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", read_log());
    assert!(read_log().contains("stopping"), "{}", read_log());
}

/// `--log-format=json`: every line tbot logs is one JSON object with a timestamp, a level and
/// the event's fields, and no secret is among them.
#[test]
fn json_logs_are_one_object_per_line() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    let mut args = vec!["--log-format=json".to_string()];
    args.extend(start_args(&auth, &join, &data, &dest));
    args.push("--oneshot".into());
    let out = run_tbot(&args, &[]);
    out.success();
    let lines: Vec<&str> = out.stderr.lines().filter(|l| !l.is_empty()).collect();
    assert!(lines.len() >= 3, "{}", out.stderr);
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for (line, e) in lines.iter().zip(&events) {
        assert!(e["timestamp"].is_string(), "{line}");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"]
                .contains(&e["level"].as_str().unwrap_or("")),
            "{line}"
        );
        assert!(e["fields"]["message"].is_string(), "{line}");
    }
    let joined = events
        .iter()
        .find(|e| e["fields"]["message"] == "joined the cluster")
        .unwrap_or_else(|| panic!("no join event:\n{}", out.stderr));
    assert_eq!(joined["level"], "INFO");
    assert_eq!(joined["fields"]["user"], "bot-robot");
    assert_eq!(joined["fields"]["generation"], 1);
    assert!(
        events.iter().any(
            |e| e["fields"]["message"] == "wrote the output certificates"
                && e["fields"]["roles"] == "access"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains(&join.token), "the token was logged");
    assert!(!out.stderr.contains("BEGIN"), "a PEM body was logged");
}

/// The README: a deleted bot, and an identity that expired with no usable token, end
/// `tbot start` with exit code 1 and one `ERROR:` line saying what to do.
#[test]
fn deleted_bot_and_expired_identity_exit_1() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();

    // Deleted: the long-running bot exits (not retried) with 1.
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    oneshot(&auth, &join, &data, &dest).success();
    auth.tctl(&["bots", "rm", "robot"]).success();
    let out = run_tbot(&start_args(&auth, &join, &data, &dest), &[]);
    let e = out.failure();
    assert_eq!(
        e.lines().filter(|l| l.starts_with("ERROR: ")).count(),
        1,
        "{e}"
    );
    assert!(
        e.contains("refuses this bot") && e.contains("bot \"robot\" was deleted"),
        "{e}"
    );

    // Expired: certificates of three seconds, then the spent token cannot join again.
    let join = add_bot(&auth, "robot2", "access");
    let (data, dest) = (scratch.join("data2"), scratch.join("dest2"));
    let mut args = start_args(&auth, &join, &data, &dest);
    args.extend(
        [
            "--oneshot",
            "--certificate-ttl",
            "3s",
            "--renewal-interval",
            "1s",
        ]
        .map(String::from),
    );
    run_tbot(&args, &[]).success();
    let expires = tls_identity(&dest).expires.max(
        parse_tls_identity(
            &certs_from_pem(&std::fs::read_to_string(data.join("current/tlscert")).unwrap())
                .unwrap()[0],
        )
        .unwrap()
        .expires,
    );
    // Real binaries have no fake clock: wait (bounded) until the identity is past its end.
    until(Duration::from_secs(30), "the identity's expiry", || {
        time::OffsetDateTime::now_utc() > expires + time::Duration::seconds(1)
    });
    let out = run_tbot(&start_args(&auth, &join, &data, &dest), &[]);
    let e = out.failure();
    assert!(
        e.contains("expired") && e.contains("join again with a fresh token"),
        "{e}"
    );
}
