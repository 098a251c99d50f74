//! Bots: add (text and json), ls, rm, an unknown role, an iam token.

use crate::{flag_value, rows_starting, table};
use machine_id_e2e::AuthServer;

fn status_pin(auth: &AuthServer) -> String {
    let status = auth.tctl(&["status"]).success();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CA pin:"))
        .map(|p| p.trim().to_string())
        .unwrap_or_else(|| panic!("no CA pin in status:\n{status}"))
}

#[test]
fn bots_add_ls_rm() {
    let auth = AuthServer::start();
    let out = auth
        .tctl(&["bots", "add", "robot", "--roles=access"])
        .success();

    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("The bot token: "))
        .unwrap_or_else(|| panic!("no token line:\n{out}"))
        .to_string();
    assert_eq!(token.len(), 32, "{out}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{out}");
    assert!(
        out.contains("This token will expire in 60 minutes."),
        "{out}"
    );

    let pin = status_pin(&auth);
    assert!(pin.starts_with("sha256:") && pin.len() == 7 + 64, "{pin}");
    let start = format!(
        "tbot start \\\n   --destination-dir=./tbot-user \\\n   --token={token} \\\n   --ca-pin={pin} \\\n   --auth-server={}\n",
        auth.addr
    );
    assert!(out.contains(&start), "expected\n{start}\nin\n{out}");
    assert!(!out.contains("--join-method"), "{out}");

    let t = table(&auth.tctl(&["bots", "ls"]).success());
    assert_eq!(t[0], ["Bot", "User", "Roles"]);
    assert_eq!(rows_starting(&t, "robot")[0][1..], ["bot-robot", "access"]);

    // The bot's role and user exist; the token is listed.
    let roles = table(&auth.tctl(&["get", "roles"]).success());
    assert_eq!(rows_starting(&roles, "bot-robot").len(), 1);
    let users = auth
        .tctl(&["get", "users/bot-robot", "--format=json"])
        .success();
    let user: serde_json::Value = serde_json::from_str(&users).unwrap();
    assert_eq!(user["spec"]["roles"][0], "bot-robot");
    let tokens = table(&auth.tctl(&["tokens", "ls"]).success());
    let shown = format!("sha256:{}", &machine_id_join::token_hash(&token)[..12]);
    assert_eq!(rows_starting(&tokens, &shown)[0][2], "robot");

    let out = auth.tctl(&["bots", "rm", "robot"]).success();
    assert_eq!(out, "Bot \"robot\" deleted successfully.\n");
    let t = table(&auth.tctl(&["bots", "ls"]).success());
    assert!(rows_starting(&t, "robot").is_empty());
    let err = auth.tctl(&["bots", "rm", "robot"]).failure();
    assert!(err.contains("robot"), "{err}");
}

#[test]
fn bots_add_json_for_scripts() {
    let auth = AuthServer::start();
    let out = auth
        .tctl(&[
            "bots",
            "add",
            "robot",
            "--roles=access,auditor",
            "--logins=root,ci",
            "--ttl=30m",
            "--format=json",
        ])
        .success();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["token"].as_str().unwrap().len(), 32);
    assert_eq!(v["token_ttl_minutes"], 30);
    assert_eq!(v["join_method"], "token");
    assert_eq!(v["ca_pins"][0].as_str().unwrap(), status_pin(&auth));
    assert_eq!(v["bot"]["roles"], serde_json::json!(["access", "auditor"]));
    assert_eq!(v["auth_server"], auth.addr.as_str());

    let bots: serde_json::Value =
        serde_json::from_str(&auth.tctl(&["bots", "ls", "--format=json"]).success()).unwrap();
    assert_eq!(bots[0]["name"], "robot");
    let user: serde_json::Value = serde_json::from_str(
        &auth
            .tctl(&["get", "users/bot-robot", "--format=json"])
            .success(),
    )
    .unwrap();
    assert_eq!(
        user["spec"]["traits"]["logins"],
        serde_json::json!(["root", "ci"])
    );
}

#[test]
fn unknown_role_fails_and_creates_nothing() {
    let auth = AuthServer::start();
    let err = auth
        .tctl(&["bots", "add", "robot", "--roles=access,nope"])
        .failure();
    assert!(err.contains("nope"), "{err}");
    let t = table(&auth.tctl(&["bots", "ls"]).success());
    assert_eq!(t.len(), 1, "no bot expected: {t:?}");
    let t = table(&auth.tctl(&["tokens", "ls"]).success());
    assert_eq!(t.len(), 1, "no token expected: {t:?}");
    let roles = table(&auth.tctl(&["get", "roles"]).success());
    assert!(rows_starting(&roles, "bot-robot").is_empty());
    auth.tctl(&["get", "users/bot-robot"]).failure();
}

#[test]
fn missing_roles_flag_is_a_usage_error() {
    let auth = AuthServer::start();
    let out = auth.tctl(&["bots", "add", "robot"]);
    assert_eq!(out.code, 2, "{out:?}");
}

#[test]
fn iam_token_bot_prints_the_join_method() {
    let auth = AuthServer::start();
    let f = auth.scratch().join("iam-token.yaml");
    std::fs::write(
        &f,
        r#"kind: token
version: v2
metadata: {name: iam-token, expires: "3000-01-01T00:00:00Z"}
spec:
  roles: [Bot]
  join_method: iam
  bot_name: robot
  allow:
  - aws_account: "111111111111"
    aws_arn: "arn:aws:sts::111111111111:assumed-role/teleport-bot-role/i-*"
"#,
    )
    .unwrap();
    let out = auth.tctl(&["create", f.to_str().unwrap()]).success();
    assert_eq!(out, "token \"iam-token\" has been created\n");
    let out = auth
        .tctl(&[
            "bots",
            "add",
            "robot",
            "--token=iam-token",
            "--roles=access",
        ])
        .success();
    assert!(out.contains("The bot token: iam-token\n"), "{out}");
    assert_eq!(
        flag_value(&out, "join-method").as_deref(),
        Some("iam"),
        "{out}"
    );
    assert!(
        out.contains("   --token=iam-token \\\n   --join-method=iam \\\n   --ca-pin=sha256:"),
        "{out}"
    );
    let t = table(&auth.tctl(&["tokens", "ls"]).success());
    assert_eq!(rows_starting(&t, "iam-token")[0][1], "Bot (iam)");
}
