//! CA rotation through `tctl`: `tctl auth rotate` refusing every illegal move without
//! changing anything, a manual rotation of all CAs walked phase by phase with `tctl status`,
//! `tctl auth export` and `tctl get cert_authorities` showing both key sets in between,
//! automatic and forced rotations.

use crate::table;
use machine_id_e2e::{AuthServer, Output, run_tctl};

/// `tctl status --format=json`.
fn status(auth: &AuthServer) -> serde_json::Value {
    serde_json::from_str(&auth.tctl(&["status", "--format=json"]).success()).unwrap()
}

/// `tctl auth rotate ARGS`.
fn rotate(auth: &AuthServer, args: &[&str]) -> Output {
    let mut full = vec!["auth", "rotate"];
    full.extend_from_slice(args);
    auth.tctl(&full)
}

/// The CA table of `tctl status` (after the blank line), as cells.
fn ca_table(status_text: &str) -> Vec<Vec<String>> {
    let (_, t) = status_text
        .split_once("\n\n")
        .unwrap_or_else(|| panic!("no CA table in status:\n{status_text}"));
    table(t)
}

/// The `CA pin:` lines of `tctl status`.
fn pins(status_text: &str) -> Vec<String> {
    status_text
        .lines()
        .filter_map(|l| l.strip_prefix("CA pin:"))
        .map(|p| p.trim().to_string())
        .collect()
}

/// How many certificates a PEM text holds.
fn pem_count(text: &str) -> usize {
    text.matches("-----BEGIN CERTIFICATE-----").count()
}

/// Asserts `tctl auth rotate ARGS` fails with every one of `needles` in its message and
/// changes nothing `tctl status` shows.
#[track_caller]
fn refused(auth: &AuthServer, args: &[&str], needles: &[&str]) -> String {
    let before = status(auth);
    let err = rotate(auth, args).failure();
    for n in needles {
        assert!(
            err.contains(n),
            "tctl auth rotate {args:?}: {n:?} missing from:\n{err}"
        );
    }
    assert_eq!(
        status(auth),
        before,
        "tctl auth rotate {args:?} changed something"
    );
    err
}

#[test]
fn every_illegal_move_is_refused_naming_the_phase_and_changes_nothing() {
    let auth = AuthServer::start();
    // From standby only init may follow.
    for to in ["update_clients", "update_servers", "standby", "rollback"] {
        refused(
            &auth,
            &["--type=user", "--manual", &format!("--phase={to}")],
            &["standby", "init"],
        );
    }
    refused(
        &auth,
        &["--type=db", "--manual", "--phase=init"],
        &["\"db\"", "user, host, tls or all"],
    );
    refused(
        &auth,
        &["--type=user", "--manual", "--phase=finish"],
        &[
            "\"finish\"",
            "init, update_clients, update_servers, standby or rollback",
            "the user CA is in phase standby (next: init)",
        ],
    );

    rotate(&auth, &["--type=user", "--manual", "--phase=init"]).success();
    // A second init, and every phase out of order.
    refused(
        &auth,
        &["--type=user", "--manual", "--phase=init"],
        &["already in progress", "init", "update_clients", "rollback"],
    );
    for to in ["update_servers", "standby"] {
        refused(
            &auth,
            &["--type=user", "--manual", &format!("--phase={to}")],
            &["init", "update_clients", "rollback"],
        );
    }
    refused(
        &auth,
        &["--type=user", "--manual", "--phase=update-clients"],
        &[
            "did you mean --phase=update_clients?",
            "the user CA is in phase init (next: update_clients or rollback)",
        ],
    );
    // standby before update_servers.
    rotate(
        &auth,
        &["--type=user", "--manual", "--phase=update_clients"],
    )
    .success();
    refused(
        &auth,
        &["--type=user", "--manual", "--phase=standby"],
        &["update_clients", "update_servers", "rollback"],
    );
    // The other CAs were never touched: a rotation of all of them is refused as a whole.
    refused(
        &auth,
        &["--type=all", "--manual", "--phase=update_servers"],
        &["standby", "init"],
    );
    let v = status(&auth);
    let phases: Vec<&str> = v["cert_authorities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ca| ca["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["update_clients", "standby", "standby"]);
}

#[test]
fn flag_mistakes_are_reported_before_anything_is_sent() {
    // Nothing listens here and there is no identity: a flag mistake must be found first.
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "--auth-server",
        "127.0.0.1:1",
        "--identity",
        dir.path().to_str().unwrap(),
        "auth",
        "rotate",
    ];
    for (args, needle) in [
        (&["--manual", "--phase=init"][..], "--type is required"),
        (&["--type=all", "--phase=init"][..], "needs --manual"),
        (&["--type=all", "--manual"][..], "--manual needs --phase"),
        (&["--type=all"][..], "--grace-period=DUR"),
        (
            &[
                "--type=all",
                "--manual",
                "--phase=init",
                "--grace-period=1h",
            ][..],
            "do not go together",
        ),
        (&["--type=all", "--grace-period=soon"][..], "--grace-period"),
        (
            &["--type=dbs", "--grace-period=1h"][..],
            "user, host, tls or all",
        ),
    ] {
        let mut full: Vec<&str> = base.to_vec();
        full.extend_from_slice(args);
        let err = run_tctl(&full).failure();
        assert!(
            err.contains(needle),
            "{args:?}: {needle:?} missing from:\n{err}"
        );
        assert!(
            !err.contains("127.0.0.1:1"),
            "{args:?} tried to connect:\n{err}"
        );
    }
}

#[test]
fn a_manual_rotation_of_all_cas_shows_both_key_sets_until_standby() {
    let auth = AuthServer::start();
    let text = auth.tctl(&["status"]).success();
    let old_pins = pins(&text);
    assert_eq!(old_pins.len(), 1, "{text}");
    let t = ca_table(&text);
    assert_eq!(
        t[0],
        ["Authority", "Rotation", "Protocol", "Status", "Fingerprint"]
    );
    assert_eq!(t.len(), 1 + 3, "{text}");
    for (row, (authority, protocol)) in
        t[1..]
            .iter()
            .zip([("user", "SSH"), ("host", "SSH"), ("tls", "TLS")])
    {
        assert_eq!(
            (
                row[0].as_str(),
                row[1].as_str(),
                row[2].as_str(),
                row[3].as_str()
            ),
            (authority, "standby (never rotated)", protocol, "active"),
            "{text}"
        );
        assert!(row[4].starts_with("SHA256:"), "{text}");
    }
    let old_user_ca = auth.tctl(&["auth", "export", "--type=user"]).success();

    for phase in ["init", "update_clients", "update_servers"] {
        let out = rotate(
            &auth,
            &["--type=all", "--manual", &format!("--phase={phase}")],
        )
        .success();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            format!("Updated rotation phase to \"{phase}\". To check status use 'tctl status'"),
            "{out}"
        );
        for (line, ca) in lines[1..].iter().zip(["user", "host", "tls"]) {
            assert!(line.starts_with(&format!("{ca} CA ({phase}): ")), "{out}");
        }
        assert_eq!(lines.len(), 4, "{out}");

        let text = auth.tctl(&["status"]).success();
        let now_pins = pins(&text);
        assert_eq!(now_pins.len(), 2, "two pins mid-rotation:\n{text}");
        assert!(now_pins.contains(&old_pins[0]), "{text}");
        let t = ca_table(&text);
        assert_eq!(t.len(), 1 + 6, "two keys per CA:\n{text}");
        let described = format!("in progress (mode: manual, phase: {phase})");
        for row in &t[1..] {
            assert_eq!(row[1], described, "{text}");
        }
        for ca in ["user", "host", "tls"] {
            let statuses: Vec<&str> = t[1..]
                .iter()
                .filter(|r| r[0] == ca)
                .map(|r| r[3].as_str())
                .collect();
            assert_eq!(statuses, ["active", "trusted"], "{text}");
        }
        // The JSON holds the same: the pins of both TLS CAs, two keys per CA.
        let v = status(&auth);
        assert_eq!(v["ca_pins"].as_array().unwrap().len(), 2);
        assert_eq!(v["cert_authorities"][2]["phase"], phase);
        assert_eq!(
            v["cert_authorities"][2]["keys"].as_array().unwrap().len(),
            2
        );

        // Every trust point carries both CAs.
        let user = auth.tctl(&["auth", "export", "--type=user"]).success();
        assert_eq!(user.lines().count(), 2, "{user}");
        assert!(
            user.contains(old_user_ca.trim()),
            "the old user CA is still trusted:\n{user}"
        );
        let host = auth.tctl(&["auth", "export", "--type=host"]).success();
        assert_eq!(host.lines().count(), 2, "{host}");
        assert!(
            host.lines()
                .all(|l| l.starts_with("@cert-authority *.example.com,example.com ssh-")),
            "{host}"
        );
        let tls = auth.tctl(&["auth", "export", "--type=tls"]).success();
        assert_eq!(pem_count(&tls), 2, "{tls}");
    }

    let out = rotate(&auth, &["--type=all", "--manual", "--phase=standby"]).success();
    assert!(
        out.contains("user CA (standby): nothing: the rotation is complete"),
        "{out}"
    );
    let text = auth.tctl(&["status"]).success();
    let new_pins = pins(&text);
    assert_eq!(new_pins.len(), 1, "one pin after the rotation:\n{text}");
    assert_ne!(new_pins, old_pins, "the TLS CA was replaced:\n{text}");
    let t = ca_table(&text);
    assert_eq!(t.len(), 1 + 3, "{text}");
    for row in &t[1..] {
        assert!(row[1].starts_with("standby (last rotated: "), "{text}");
        assert_eq!(row[3], "active", "{text}");
    }
    let user = auth.tctl(&["auth", "export", "--type=user"]).success();
    assert_eq!(user.lines().count(), 1, "{user}");
    assert_ne!(user, old_user_ca, "the user CA was replaced");
    let host = auth.tctl(&["auth", "export", "--type=host"]).success();
    assert_eq!(host.lines().count(), 1, "{host}");
    let tls = auth.tctl(&["auth", "export", "--type=tls"]).success();
    assert_eq!(pem_count(&tls), 1, "{tls}");
}

#[test]
fn get_cert_authorities_shows_the_public_parts_and_create_is_refused() {
    let auth = AuthServer::start();
    rotate(&auth, &["--type=tls", "--manual", "--phase=init"]).success();
    let yaml = auth
        .tctl(&["get", "cert_authorities", "--format=yaml"])
        .success();
    assert!(!yaml.contains("PRIVATE"), "a private key in:\n{yaml}");
    let docs: Vec<serde_norway::Value> = yaml
        .split("\n---\n")
        .map(|d| serde_norway::from_str(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 3, "{yaml}");
    let types: Vec<&str> = docs
        .iter()
        .map(|d| d["spec"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["user", "host", "tls"]);
    for d in &docs {
        assert_eq!(d["kind"].as_str(), Some("cert_authority"), "{yaml}");
        assert_eq!(
            d["metadata"]["name"].as_str(),
            Some("example.com"),
            "{yaml}"
        );
    }
    let tls = &docs[2]["spec"];
    assert_eq!(tls["rotation"]["phase"].as_str(), Some("init"), "{yaml}");
    assert_eq!(
        tls["rotation"]["state"].as_str(),
        Some("in_progress"),
        "{yaml}"
    );
    assert_eq!(tls["active_keys"]["tls"].as_sequence().unwrap().len(), 1);
    assert_eq!(
        tls["additional_trusted_keys"]["tls"]
            .as_sequence()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        docs[0]["spec"]["rotation"]["phase"].as_str(),
        Some("standby")
    );

    // The other names, JSON, one CA by type, and the text table.
    let v: serde_json::Value =
        serde_json::from_str(&auth.tctl(&["get", "cas", "--format=json"]).success()).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    let one: serde_json::Value = serde_json::from_str(
        &auth
            .tctl(&["get", "cert_authority/tls", "--format=json"])
            .success(),
    )
    .unwrap();
    assert_eq!(one["spec"]["rotation"]["phase"], "init");
    let t = table(&auth.tctl(&["get", "cert_authorities"]).success());
    assert_eq!(t.len(), 1 + 4, "{t:?}");
    let err = auth.tctl(&["get", "cert_authority/db"]).failure();
    assert!(err.contains("user, host, tls or all"), "{err}");

    // CAs change only by rotation.
    let file = auth.scratch().join("ca.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let err = auth
        .tctl(&["create", "-f", file.to_str().unwrap()])
        .failure();
    assert!(err.contains("tctl auth rotate"), "{err}");
    let err = auth.tctl(&["rm", "cert_authority/user"]).failure();
    assert!(err.contains("tctl auth rotate"), "{err}");
    assert_eq!(
        auth.tctl(&["get", "cert_authorities", "--format=yaml"])
            .success(),
        yaml
    );
}

#[test]
fn an_automatic_rotation_starts_with_a_schedule_and_can_be_rolled_back() {
    let auth = AuthServer::start();
    let out = rotate(&auth, &["--type=user", "--grace-period=3h"]).success();
    assert!(
        out.starts_with("Started an automatic rotation of the user CA (grace period 3h0m0s)"),
        "{out}"
    );
    assert!(out.contains("update_clients at "), "{out}");
    assert!(
        out.contains("user CA (init): install the new user CA"),
        "{out}"
    );
    let text = auth.tctl(&["status"]).success();
    assert!(
        text.contains("in progress (mode: auto, phase: init)"),
        "{text}"
    );

    let out = rotate(&auth, &["--type=user", "--manual", "--phase=rollback"]).success();
    assert!(out.contains("user CA (rollback): "), "{out}");
    let text = auth.tctl(&["status"]).success();
    assert!(
        text.contains("in progress (mode: manual, phase: rollback)"),
        "a rollback makes the rotation manual:\n{text}"
    );
    rotate(&auth, &["--type=user", "--manual", "--phase=standby"]).success();
    let user = auth.tctl(&["auth", "export", "--type=user"]).success();
    assert_eq!(user.lines().count(), 1, "{user}");
}

#[test]
fn a_forced_rotation_asks_first_and_replaces_the_keys_at_once() {
    let auth = AuthServer::start();
    let before = status(&auth);
    let old_host = auth.tctl(&["auth", "export", "--type=host"]).success();
    // No terminal to answer on: not confirmed.
    let err = rotate(&auth, &["--type=host", "--grace-period=0"]).failure();
    assert!(err.contains("every certificate"), "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(
        status(&auth),
        before,
        "nothing changed without confirmation"
    );

    let out = rotate(&auth, &["--type=host", "--grace-period=0", "--yes"]).success();
    assert!(
        out.starts_with("Replaced the keys of the host CA at once"),
        "{out}"
    );
    assert!(out.contains("tctl auth sign"), "{out}");
    let host = auth.tctl(&["auth", "export", "--type=host"]).success();
    assert_eq!(host.lines().count(), 1, "{host}");
    assert_ne!(host, old_host, "the host CA was replaced");
    let v = status(&auth);
    let host_ca = &v["cert_authorities"][1];
    assert_eq!(host_ca["authority"], "host");
    assert_eq!(host_ca["phase"], "standby");
    assert!(
        host_ca["rotation"]
            .as_str()
            .unwrap()
            .starts_with("standby (last rotated: "),
        "{v}"
    );
    assert_eq!(
        v["ca_pins"], before["ca_pins"],
        "the TLS CA was not touched"
    );
}
