//! Bots joining the real `auth-server` through the `client` crate, with the certificates
//! judged by `openssl` and `ssh-keygen`, and the server's state surviving restarts and
//! `kill -9` in the middle of a burst of joins.

use machine_id_client::{
    Certs, Client, ClientError, ClientIdentity, bootstrap_ca_certs, parse_pins,
};
use machine_id_e2e::AuthServer;
use machine_id_join::token::TokenSecret;
use machine_id_mint::{PrivateKey, Suite, cert_der_to_pem, parse_tls_identity};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// `tctl bots add NAME --roles=access --format=json`: the token and the CA pins.
fn add_bot(auth: &AuthServer, name: &str) -> (TokenSecret, Vec<String>) {
    let out = auth
        .tctl(&[
            "bots",
            "add",
            name,
            "--roles=access",
            "--logins=root",
            "--format=json",
        ])
        .success();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let pins = v["ca_pins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    (TokenSecret::new(v["token"].as_str().unwrap()), pins)
}

/// A client that trusts the cluster after checking the CA pins, as tbot does.
async fn pinned_client(auth: &AuthServer, pins: &[String]) -> (Client, Vec<Vec<u8>>) {
    let cas = bootstrap_ca_certs(&auth.addr, &parse_pins(pins).unwrap())
        .await
        .unwrap();
    (
        Client::connect_with_cas(&auth.addr, &cas).await.unwrap(),
        cas,
    )
}

/// Joins with `token` for a fresh key; returns the key and what the server gave.
async fn join(client: &Client, token: &TokenSecret) -> Result<(PrivateKey, Certs), ClientError> {
    let key = PrivateKey::generate(Suite::Default).unwrap();
    let certs = client
        .register_using_token(token, &key.public_key().to_spki_der(), Duration::ZERO)
        .await?;
    Ok((key, certs))
}

/// The bot's renewable identity as a client identity.
fn identity(key: &PrivateKey, certs: &Certs) -> ClientIdentity {
    ClientIdentity::from_parts(
        &key.to_pem(),
        certs.tls_cert.clone(),
        certs.tls_ca_certs.clone(),
    )
    .unwrap()
}

/// Renews with `(key, certs)`: new certs for the same key.
async fn renew(auth: &AuthServer, key: &PrivateKey, certs: &Certs) -> Result<Certs, ClientError> {
    let client = Client::connect(&auth.addr, &identity(key, certs)).await?;
    client
        .generate_user_certs(&key.public_key().to_spki_der(), Duration::ZERO, &[])
        .await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_token_admits_one_bot_and_real_peers_accept_its_certs() {
    let auth = AuthServer::start();
    let (token, pins) = add_bot(&auth, "robot");
    let rt = runtime();
    let (client, _) = rt.block_on(pinned_client(&auth, &pins));
    let (_key, certs) = rt.block_on(join(&client, &token)).unwrap();

    let id = parse_tls_identity(&certs.tls_cert).unwrap();
    assert_eq!(id.username, "bot-robot");
    assert_eq!(id.roles, vec!["bot-robot".to_string()]);
    assert!(id.renewable);
    assert_eq!(id.generation, 1);
    assert_eq!(id.cluster, "example.com");

    let second = rt.block_on(join(&client, &token)).unwrap_err();
    assert!(
        matches!(second, ClientError::PermissionDenied(_)),
        "second use: {second:?}"
    );
    assert!(second.to_string().contains("already used"), "{second}");

    // openssl judges the X.509 certificate against the CA tctl exports.
    let dir = auth.scratch();
    let ca = auth.tctl(&["auth", "export", "--type=tls"]).success();
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    std::fs::write(dir.join("tlscert"), cert_der_to_pem(&certs.tls_cert)).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(dir.join("ca.pem"))
        .arg(dir.join("tlscert"))
        .output()
        .expect("openssl must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(": OK"),
        "openssl verify: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ssh-keygen judges the SSH certificate: key id = user, principals = the bot's logins
    // trait is not granted by the bot's own role (only by impersonated `access`).
    std::fs::write(dir.join("sshcert"), &certs.ssh_cert).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-L")
        .arg("-f")
        .arg(dir.join("sshcert"))
        .output()
        .expect("ssh-keygen must be installed");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ssh-keygen -L: {text}");
    assert!(text.contains("user certificate"), "{text}");
    assert!(text.contains("Key ID: \"bot-robot\""), "{text}");
}

#[test]
fn fifty_concurrent_joins_with_one_token_admit_exactly_one() {
    let auth = AuthServer::start();
    let (token, pins) = add_bot(&auth, "robot");
    let rt = runtime();
    let (client, _) = rt.block_on(pinned_client(&auth, &pins));
    let results = rt.block_on(async {
        let joins = (0..50).map(|_| {
            let (client, token) = (client.clone(), token.clone());
            tokio::spawn(async move { join(&client, &token).await.map(|_| ()) })
        });
        futures::future::join_all(joins).await
    });
    let results: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    let wins = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{results:?}");
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(e, ClientError::PermissionDenied(_)), "{e:?}");
    }
    let user: serde_json::Value = serde_json::from_str(
        &auth
            .tctl(&["get", "users/bot-robot", "--format=json"])
            .success(),
    )
    .unwrap();
    assert_eq!(user["metadata"]["labels"]["generation"], "1");
}

#[test]
fn a_replayed_generation_locks_the_bot_and_is_audited() {
    let auth = AuthServer::start();
    let (token, pins) = add_bot(&auth, "robot");
    let rt = runtime();
    let (client, _) = rt.block_on(pinned_client(&auth, &pins));
    let (key, first) = rt.block_on(join(&client, &token)).unwrap();
    let second = rt.block_on(renew(&auth, &key, &first)).unwrap();
    assert_eq!(parse_tls_identity(&second.tls_cert).unwrap().generation, 2);

    // A copy of the first identity, replayed: the server sees generation 1 where 2 is stored.
    let replay = rt.block_on(renew(&auth, &key, &first)).unwrap_err();
    assert!(
        matches!(replay, ClientError::PermissionDenied(_)),
        "{replay:?}"
    );
    assert!(replay.to_string().contains("locked"), "{replay}");

    // The bot is locked: the current identity is refused too.
    let current = rt.block_on(renew(&auth, &key, &second)).unwrap_err();
    assert!(
        matches!(current, ClientError::PermissionDenied(_)),
        "{current:?}"
    );

    let events: serde_json::Value = serde_json::from_str(
        &auth
            .tctl(&[
                "events",
                "ls",
                "--type=cert.generation_mismatch",
                "--format=json",
            ])
            .success(),
    )
    .unwrap();
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["user"], "bot-robot");
    let locks: serde_json::Value =
        serde_json::from_str(&auth.tctl(&["locks", "ls", "--format=json"]).success()).unwrap();
    assert_eq!(locks[0]["spec"]["target"]["user"], "bot-robot", "{locks}");
}

#[test]
fn a_restart_keeps_cas_bots_tokens_roles_and_generations() {
    let mut auth = AuthServer::start();
    let (token, pins) = add_bot(&auth, "robot");
    let (unused, _) = add_bot(&auth, "spare");
    let role = auth.tctl(&["get", "roles/access"]).success();
    let edited = role.replace(
        "- '{{internal.logins}}'",
        "- '{{internal.logins}}'\n    - root",
    );
    assert_ne!(role, edited, "the role's YAML has the logins line:\n{role}");
    let file = auth.scratch().join("access.yaml");
    std::fs::write(&file, &edited).unwrap();
    auth.tctl(&["create", "-f", file.to_str().unwrap()])
        .success();
    auth.tctl(&["nodes", "add", "--name=node-name", "--addr=127.0.0.1:2222"])
        .success();

    let rt = runtime();
    let (client, _) = rt.block_on(pinned_client(&auth, &pins));
    let (key, first) = rt.block_on(join(&client, &token)).unwrap();
    let second = rt.block_on(renew(&auth, &key, &first)).unwrap();
    let status_before = auth.tctl(&["status", "--format=json"]).success();

    let exit = auth.stop();
    assert!(
        exit.success(),
        "SIGTERM should stop auth-server cleanly: {exit:?}"
    );
    auth.restart();

    // Same CAs: the old pin still bootstraps and the bot's certificate still authenticates.
    let status_after = auth.tctl(&["status", "--format=json"]).success();
    let pins_of =
        |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["ca_pins"].clone();
    assert_eq!(pins_of(&status_before), pins_of(&status_after));
    let third = rt.block_on(renew(&auth, &key, &second)).unwrap();
    assert_eq!(parse_tls_identity(&third.tls_cert).unwrap().generation, 3);

    assert_eq!(auth.tctl(&["get", "roles/access"]).success(), edited);
    let bots = auth.tctl(&["bots", "ls"]).success();
    assert!(bots.contains("robot") && bots.contains("spare"), "{bots}");
    assert!(auth.tctl(&["nodes", "ls"]).success().contains("node-name"));
    // The unused token survived and still admits its bot; the used one stayed used.
    let (client, _) = rt.block_on(pinned_client(&auth, &pins));
    rt.block_on(join(&client, &unused)).unwrap();
    let e = rt.block_on(join(&client, &token)).unwrap_err();
    assert!(e.to_string().contains("the join token is not valid"), "{e}");
}

#[test]
fn kill_9_during_a_burst_of_joins_loses_nothing_committed() {
    const BOTS: usize = 30;
    const KILL_AFTER: usize = 8;
    let mut auth = AuthServer::start();
    let mut tokens = Vec::new();
    let mut pins = Vec::new();
    for i in 0..BOTS {
        let (token, p) = add_bot(&auth, &format!("bot{i}"));
        tokens.push(token);
        pins = p;
    }
    let rt = runtime();
    let (client, _) = rt.block_on(pinned_client(&auth, &pins));

    // Joins run 4 at a time; once KILL_AFTER have been answered, the server is killed -9
    // while the rest are in flight.
    let done = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(tokio::sync::Notify::new());
    let results = rt.block_on(async {
        let limit = Arc::new(tokio::sync::Semaphore::new(4));
        let handles: Vec<_> = tokens
            .iter()
            .cloned()
            .map(|token| {
                let (client, limit, done, killed) =
                    (client.clone(), limit.clone(), done.clone(), killed.clone());
                tokio::spawn(async move {
                    let _permit = limit.acquire_owned().await.unwrap();
                    let r = join(&client, &token).await;
                    if r.is_ok() && done.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                        killed.notify_one();
                    }
                    r
                })
            })
            .collect();
        killed.notified().await;
        auth.kill9();
        futures::future::join_all(handles).await
    });
    let results: Vec<_> = results.into_iter().map(|r| r.unwrap()).collect();
    let admitted: Vec<usize> = (0..BOTS).filter(|i| results[*i].is_ok()).collect();
    assert!(admitted.len() >= KILL_AFTER, "{admitted:?}");
    assert!(
        admitted.len() < BOTS,
        "the kill came after every join; nothing was tested"
    );

    auth.restart();
    let tokens_left = auth.tctl(&["tokens", "ls", "--format=json"]).success();
    let bots = auth.tctl(&["bots", "ls", "--format=json"]).success();
    let bots: serde_json::Value = serde_json::from_str(&bots).unwrap();
    assert_eq!(
        bots.as_array().unwrap().len(),
        BOTS,
        "every committed bot survives"
    );
    for (i, token) in tokens.iter().enumerate() {
        let user: serde_json::Value = serde_json::from_str(
            &auth
                .tctl(&["get", &format!("users/bot-bot{i}"), "--format=json"])
                .success(),
        )
        .unwrap();
        let generation = user["metadata"]["labels"]["generation"]
            .as_str()
            .unwrap()
            .to_string();
        // The listing shows a secret token by the prefix of its hash.
        let shown = format!(
            "sha256:{}",
            &machine_id_join::token_hash(token.expose())[..12]
        );
        let token_present = tokens_left.contains(&shown);
        if let Ok((key, certs)) = &results[i] {
            // A join that answered was committed: token consumed, generation 1, and the
            // identity it returned renews against the restarted server.
            assert!(
                !token_present,
                "bot{i}: a used token came back after kill -9"
            );
            assert_eq!(generation, "1", "bot{i}");
            let renewed = rt.block_on(renew(&auth, key, certs)).unwrap();
            assert_eq!(parse_tls_identity(&renewed.tls_cert).unwrap().generation, 2);
        } else {
            // A join without an answer either committed whole or not at all.
            assert_eq!(
                token_present,
                generation == "0",
                "bot{i}: token present={token_present} but generation={generation}"
            );
        }
    }
}
