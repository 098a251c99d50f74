//! `tsh ls` with the certificates the real `tbot` wrote: the auth server shows each identity
//! the nodes its roles reach by labels.

use std::path::{Path, PathBuf};

use crate::table;
use machine_id_e2e::guide::{add_bot, tbot_start_args};
use machine_id_e2e::{AuthServer, run_tbot, run_tsh};

/// Adds bot `name` with `roles` and runs `tbot start --oneshot` for it; returns the
/// destination directory.
fn bot_destination(auth: &AuthServer, name: &str, roles: &str) -> PathBuf {
    let join = add_bot(auth, name, roles);
    let scratch = auth.scratch();
    let (data, dest) = (
        scratch.join(format!("{name}-data")),
        scratch.join(format!("{name}-dest")),
    );
    let mut args = tbot_start_args(auth, &join, &data, &dest);
    args.push("--oneshot".into());
    run_tbot(&args, &[]).success();
    dest
}

fn ls(auth: &AuthServer, dest: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "ls",
        "-i",
        dest.to_str().unwrap(),
        "--auth-server",
        &auth.addr,
    ];
    args.extend_from_slice(extra);
    run_tsh(&args).success()
}

#[test]
fn tsh_ls_shows_the_nodes_each_bot_may_reach() {
    let auth = AuthServer::start();
    for (name, port, env) in [("node-a", 2201, "dev"), ("node-b", 2202, "prod")] {
        auth.tctl(&[
            "nodes",
            "add",
            &format!("--name={name}"),
            &format!("--addr=127.0.0.1:{port}"),
            &format!("--labels=env={env}"),
        ])
        .success();
    }
    let role = auth.scratch().join("dev-only.yaml");
    std::fs::write(
        &role,
        "kind: role\nversion: v5\nmetadata:\n  name: dev-only\nspec:\n  allow:\n    logins: [root]\n    node_labels:\n      env: dev\n",
    )
    .unwrap();
    auth.tctl(&["create", "-f", role.to_str().unwrap()])
        .success();
    let robot = bot_destination(&auth, "robot", "access");
    let devbot = bot_destination(&auth, "devbot", "dev-only");

    // `access` has `'*': '*'`: both nodes, sorted by name, labels k=v.
    let out = ls(&auth, &robot, &[]);
    let t = table(&out);
    assert_eq!(t[0], ["Node Name", "Address", "Labels"]);
    assert_eq!(
        t[1..],
        [
            ["node-a", "127.0.0.1:2201", "env=dev"],
            ["node-b", "127.0.0.1:2202", "env=prod"],
        ]
    );
    assert_eq!(
        out,
        "Node Name Address        Labels\n\
         --------- -------------- --------\n\
         node-a    127.0.0.1:2201 env=dev\n\
         node-b    127.0.0.1:2202 env=prod\n"
    );
    // `--proxy` is the same address; the flags may come before `ls`.
    let out2 = run_tsh(&[
        "--proxy",
        &auth.addr,
        "--identity",
        robot.to_str().unwrap(),
        "ls",
    ])
    .success();
    assert_eq!(out2, out);

    // `env: dev`: node-a only.
    let t = table(&ls(&auth, &devbot, &[]));
    assert_eq!(t[0], ["Node Name", "Address", "Labels"]);
    assert_eq!(t[1..], [["node-a", "127.0.0.1:2201", "env=dev"]]);

    // JSON: an array of {name, id, addr, labels}.
    let json: serde_json::Value =
        serde_json::from_str(&ls(&auth, &devbot, &["--format=json"])).unwrap();
    let nodes = json.as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{json}");
    assert_eq!(nodes[0]["name"], "node-a");
    assert_eq!(nodes[0]["addr"], "127.0.0.1:2201");
    assert_eq!(nodes[0]["labels"], serde_json::json!({"env": "dev"}));
    assert_eq!(nodes[0]["id"].as_str().unwrap().len(), 36, "a uuid: {json}");
    let json: serde_json::Value =
        serde_json::from_str(&ls(&auth, &robot, &["--format=json"])).unwrap();
    let names: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node-a", "node-b"]);
}

#[test]
fn tsh_ls_errors_name_the_problem() {
    // Neither needs a server: the identity is checked before dialing.
    let err = run_tsh(&["ls", "-i", "/nonexistent"]).failure();
    assert!(err.contains("/nonexistent"), "{err}");
    assert!(err.contains("identity directory"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    let empty = tempfile::tempdir().unwrap();
    let err = run_tsh(&["ls", "-i", empty.path().to_str().unwrap()]).failure();
    assert!(
        err.contains(&empty.path().join("key").display().to_string()),
        "{err}"
    );

    // No identity, or an unknown flag: usage errors, exit 2.
    let out = run_tsh(&["ls"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("--identity"), "{}", out.stderr);
    assert_eq!(run_tsh(&["ls", "-i", "/d", "--format=yaml"]).code, 2);
}
