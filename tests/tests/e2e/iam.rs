//! The guide's IAM join end to end with real processes: `moto_server` stands in for AWS STS
//! (credentials from an assumed role, so the ARN is an `assumed-role/...` one), the real
//! `auth-server` with moto on its STS allow-list, `tctl create -f`, `tctl bots add --token`,
//! and `tbot start --join-method=iam`, judged by `openssl` and the audit log.

use std::path::Path;

use machine_id_e2e::guide::wait_until;
use machine_id_e2e::moto::{AwsSessionCredentials, Moto};
use machine_id_e2e::{AuthServer, Output, run_tbot, spawn_tbot_env};
use machine_id_mint::{certs_from_pem, parse_tls_identity};

const ACCOUNT: &str = "123456789012";
const ROLE: &str = "arn:aws:iam::123456789012:role/teleport-bot-role";
const SESSION: &str = "i-0123456789abcdef0";
const ARN: &str = "arn:aws:sts::123456789012:assumed-role/teleport-bot-role/i-0123456789abcdef0";

const FILES: [&str; 8] = [
    "key",
    "key.pub",
    "known_hosts",
    "ssh_config",
    "sshcacerts",
    "sshcert",
    "tlscacerts",
    "tlscert",
];

/// An auth server that accepts moto as an STS endpoint.
fn auth_with(moto: &Moto) -> AuthServer {
    AuthServer::start_with_args("example.com", &["--extra-sts-endpoint", &moto.url()])
}

/// Writes and creates an iam token for `bot` with `rules` (YAML list items).
fn create_token(auth: &AuthServer, name: &str, bot: &str, rules: &str) {
    let file = auth.scratch().join(format!("{name}.yaml"));
    std::fs::write(
        &file,
        format!(
            "kind: token\nversion: v2\nmetadata: {{name: {name}, expires: \"3000-01-01T00:00:00Z\"}}\nspec:\n  roles: [Bot]\n  join_method: iam\n  bot_name: {bot}\n  allow:\n{rules}"
        ),
    )
    .unwrap();
    auth.tctl(&["create", "-f", file.to_str().unwrap()])
        .success();
}

/// `tctl bots add BOT --token=TOKEN --roles=access`: returns the `--ca-pin` it printed and
/// checks it told the user to join with iam.
fn add_bot(auth: &AuthServer, bot: &str, token: &str) -> String {
    let out = auth
        .tctl(&[
            "bots",
            "add",
            bot,
            &format!("--token={token}"),
            "--roles=access",
        ])
        .success();
    assert!(out.contains("--join-method=iam"), "{out}");
    assert!(out.contains(&format!("--token={token}")), "{out}");
    out.split_whitespace()
        .find_map(|w| w.strip_prefix("--ca-pin="))
        .expect("ca pin")
        .to_string()
}

/// `tbot start --join-method=iam --token=TOKEN ...` arguments (add `--oneshot` to taste).
fn iam_args(auth: &AuthServer, token: &str, pin: &str, dir: &Path) -> Vec<String> {
    vec![
        "start".into(),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--destination-dir".into(),
        dir.join("dest").display().to_string(),
        "--join-method=iam".into(),
        format!("--token={token}"),
        format!("--ca-pin={pin}"),
        format!("--auth-server={}", auth.addr),
    ]
}

/// The environment of a machine whose only AWS settings are `creds` (if any) and moto as
/// the STS endpoint: an empty home (no ~/.aws) and no instance metadata.
fn aws_env(
    moto: &Moto,
    creds: Option<&AwsSessionCredentials>,
    dir: &Path,
) -> Vec<(String, String)> {
    let home = dir.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut env = vec![
        ("HOME".to_string(), home.display().to_string()),
        ("AWS_REGION".into(), "us-east-1".into()),
        ("AWS_ENDPOINT_URL_STS".into(), moto.url()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ];
    if let Some(c) = creds {
        env.push(("AWS_ACCESS_KEY_ID".into(), c.access_key_id.clone()));
        env.push(("AWS_SECRET_ACCESS_KEY".into(), c.secret_access_key.clone()));
        env.push(("AWS_SESSION_TOKEN".into(), c.session_token.clone()));
    }
    env
}

fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// `tbot start --join-method=iam --token=TOKEN --oneshot ...` with the assumed role's
/// credentials in the environment and moto as the STS endpoint, nothing else of AWS.
fn tbot_iam(
    auth: &AuthServer,
    moto: &Moto,
    creds: &AwsSessionCredentials,
    token: &str,
    pin: &str,
    dir: &Path,
) -> Output {
    let mut args = iam_args(auth, token, pin, dir);
    args.push("--oneshot".into());
    let env = aws_env(moto, Some(creds), dir);
    run_tbot(&args, &env_refs(&env))
}

/// The `bot.join` events of the assumed role's ARN.
fn join_events(auth: &AuthServer) -> usize {
    let out = auth
        .tctl(&["events", "ls", "--type=bot.join", "--format=json"])
        .success();
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e.to_string().contains(ARN))
        .count()
}

fn openssl_verify(dest: &Path) {
    let out = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dest.join("tlscacerts"))
        .arg(dest.join("tlscert"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn guide_iam_join_with_moto() {
    let moto = Moto::start();
    let creds = moto.assume_role(ROLE, SESSION);
    let auth = auth_with(&moto);
    // Step 3 of the guide, as typed (with moto's account).
    create_token(
        &auth,
        "iam-token",
        "robot",
        &format!(
            "  - aws_account: \"{ACCOUNT}\"\n    aws_arn: \"arn:aws:sts::{ACCOUNT}:assumed-role/teleport-bot-role/i-*\"\n"
        ),
    );
    let pin = add_bot(&auth, "robot", "iam-token");
    let dir = auth.scratch().join("bot");
    tbot_iam(&auth, &moto, &creds, "iam-token", &pin, &dir).success();

    let dest = dir.join("dest");
    for f in FILES {
        assert!(dest.join(f).is_file(), "{f} missing");
    }
    openssl_verify(&dest);
    let pem = std::fs::read_to_string(dest.join("tlscert")).unwrap();
    let id = parse_tls_identity(&certs_from_pem(&pem).unwrap()[0]).unwrap();
    assert_eq!(id.impersonator.as_deref(), Some("bot-robot"));
    assert_eq!(id.roles, vec!["access".to_string()]);

    // The server audited who joined: the assumed role's ARN, from STS (moto).
    let events = auth
        .tctl(&["events", "ls", "--type=bot.join", "--format=json"])
        .success();
    assert!(events.contains(ARN), "{events}");
    assert!(events.contains("\"iam\""), "{events}");

    // The token is not consumed: the next run (a renewal is a fresh join) works too.
    let tokens = auth.tctl(&["tokens", "ls"]).success();
    assert!(tokens.contains("iam-token"), "{tokens}");
    tbot_iam(&auth, &moto, &creds, "iam-token", &pin, &dir).success();
    openssl_verify(&dest);
}

#[test]
fn iam_rules_by_account_by_arn_glob_and_no_match_with_moto() {
    let moto = Moto::start();
    let creds = moto.assume_role(ROLE, SESSION);
    let auth = auth_with(&moto);
    let scratch = auth.scratch();

    create_token(
        &auth,
        "by-account",
        "acct",
        &format!("  - aws_account: \"{ACCOUNT}\"\n"),
    );
    let pin = add_bot(&auth, "acct", "by-account");
    tbot_iam(&auth, &moto, &creds, "by-account", &pin, &scratch.join("a")).success();

    create_token(
        &auth,
        "by-arn",
        "arnbot",
        "  - aws_arn: \"arn:aws:sts::*:assumed-role/teleport-bot-role/i-0123456789abcdef?\"\n",
    );
    add_bot(&auth, "arnbot", "by-arn");
    tbot_iam(&auth, &moto, &creds, "by-arn", &pin, &scratch.join("b")).success();

    // Another account, and an ARN glob anchored at both ends that the ARN only contains.
    create_token(
        &auth,
        "no-match",
        "nobot",
        "  - aws_account: \"111111111111\"\n  - aws_arn: \"assumed-role/teleport-bot-role/*\"\n",
    );
    add_bot(&auth, "nobot", "no-match");
    let out = tbot_iam(&auth, &moto, &creds, "no-match", &pin, &scratch.join("c"));
    let err = out.failure();
    assert!(
        err.contains("instance did not match any allow rules"),
        "{err}"
    );
    assert!(err.contains(ARN) && err.contains("no-match"), "{err}");
    assert!(!scratch.join("c/dest/tlscert").exists());
    let failed = auth
        .tctl(&["events", "ls", "--type=bot.join.failed", "--format=json"])
        .success();
    assert!(
        failed.contains("instance did not match any allow rules"),
        "{failed}"
    );
}

/// The long-running bot: every renewal (here: SIGHUP) is a fresh IAM join with the same
/// token; SIGTERM stops it cleanly.
#[test]
fn iam_daemon_rejoins_at_each_renewal() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let moto = Moto::start();
    let creds = moto.assume_role(ROLE, SESSION);
    let auth = auth_with(&moto);
    create_token(
        &auth,
        "iam-token",
        "robot",
        &format!("  - aws_account: \"{ACCOUNT}\"\n"),
    );
    let pin = add_bot(&auth, "robot", "iam-token");
    let dir = auth.scratch().join("daemon");
    let env = aws_env(&moto, Some(&creds), &dir);
    let log = dir.join("tbot.log");
    let mut child = spawn_tbot_env(
        &iam_args(&auth, "iam-token", &pin, &dir),
        &env_refs(&env),
        &log,
    );
    let cert = dir.join("dest/tlscert");
    let tail = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(machine_id_e2e::guide::HANG, "the first set", || {
        cert.is_file() && join_events(&auth) == 1
    });
    let first = std::fs::read(&cert).unwrap();
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, Signal::SIGHUP).unwrap();
    wait_until(machine_id_e2e::guide::HANG, "a join after SIGHUP", || {
        join_events(&auth) == 2 && std::fs::read(&cert).unwrap() != first
    });
    openssl_verify(&dir.join("dest"));
    kill(pid, Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "tbot exited with {status}:\n{}", tail());
}

/// A machine without AWS credentials: tbot says where it looked and what to do, exits 1,
/// and the server never saw a join attempt.
#[test]
fn iam_without_credentials_fails_clearly() {
    let moto = Moto::start();
    let auth = auth_with(&moto);
    create_token(
        &auth,
        "iam-token",
        "robot",
        &format!("  - aws_account: \"{ACCOUNT}\"\n"),
    );
    let pin = add_bot(&auth, "robot", "iam-token");
    let dir = auth.scratch().join("nocreds");
    let mut args = iam_args(&auth, "iam-token", &pin, &dir);
    args.push("--oneshot".into());
    let env = aws_env(&moto, None, &dir);
    let err = run_tbot(&args, &env_refs(&env)).failure();
    assert!(err.contains("no AWS credentials found"), "{err}");
    assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
    let failed = auth
        .tctl(&["events", "ls", "--type=bot.join.failed", "--format=json"])
        .success();
    assert!(!failed.contains("iam-token"), "{failed}");
}
