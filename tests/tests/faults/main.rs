//! Fault injection with real processes: the auth server killed with SIGKILL at random
//! moments while bots renew, then restarted on the same data dir and address.
//!
//! The bots here renew as the protocol asks (ARCHITECTURE, "renewal is idempotent"): a
//! renewal that got no answer is retried with the same certificate and the same new key
//! until it gets one, and the next renewal starts only from an answered one. tbot's own half
//! (its data dir and pending key under `kill -9` of tbot) is tested in `tests/tbot`.

#![allow(clippy::unwrap_used, missing_docs)] // tests

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use machine_id_client::{
    Certs, Client, ClientError, ClientIdentity, bootstrap_ca_certs, parse_pins,
};
use machine_id_e2e::AuthServer;
use machine_id_join::token::TokenSecret;
use machine_id_mint::{PrivateKey, Suite, parse_tls_identity};

/// Bots renewing at once.
const BOTS: usize = 4;
/// How many times the server is killed.
const KILLS: usize = 20;

/// A small xorshift generator seeded from the clock (printed, so a failure can be replayed
/// by reading the seed from the output).
struct Rng(u64);

impl Rng {
    fn from_clock() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        println!("seed {seed}");
        Self(seed)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// `tctl bots add NAME --format=json`: the token and the CA pins.
fn add_bot(auth: &AuthServer, name: &str) -> (TokenSecret, Vec<String>) {
    let out = auth
        .tctl(&["bots", "add", name, "--roles=access", "--format=json"])
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

fn new_key() -> PrivateKey {
    PrivateKey::generate(Suite::Default).unwrap()
}

fn identity(key: &PrivateKey, certs: &Certs) -> ClientIdentity {
    ClientIdentity::from_parts(
        &key.to_pem(),
        certs.tls_cert.clone(),
        certs.tls_ca_certs.clone(),
    )
    .unwrap()
}

/// What one bot saw.
#[derive(Debug, Default)]
struct BotRun {
    /// Renewals answered.
    renewals: u64,
    /// Attempts that failed with a transient error and were retried unchanged.
    retries: u64,
    /// The generation of the last certificate received.
    generation: u64,
    /// A refusal (a lock would show here).
    refused: Option<String>,
}

/// Renews in a loop until `stop` is set, retrying each renewal unchanged until answered.
async fn renew_loop(
    addr: String,
    mut key: PrivateKey,
    mut certs: Certs,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> (BotRun, PrivateKey, Certs) {
    let mut run = BotRun {
        generation: parse_tls_identity(&certs.tls_cert).unwrap().generation,
        ..BotRun::default()
    };
    let mut next = new_key();
    // A bot whose last answer was lost retries that renewal before it stops, as tbot does:
    // the server may have committed it, and only the retry's answer tells the bot.
    let mut unanswered = false;
    let mut stopped_at: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) || unanswered {
        let attempt = async {
            let client = Client::connect(&addr, &identity(&key, &certs)).await?;
            client
                .generate_user_certs(&next.public_key().to_spki_der(), Duration::ZERO, &[])
                .await
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(new)) => {
                let g = parse_tls_identity(&new.tls_cert).unwrap().generation;
                assert_eq!(
                    g,
                    run.generation + 1,
                    "each answer moves the generation by one"
                );
                run.generation = g;
                run.renewals += 1;
                answered.fetch_add(1, Ordering::SeqCst);
                key = std::mem::replace(&mut next, new_key());
                certs = new;
                unanswered = false;
            }
            Ok(Err(
                e @ (ClientError::PermissionDenied(_)
                | ClientError::Unauthenticated(_)
                | ClientError::NotFound(_)
                | ClientError::InvalidArgument(_)),
            )) => {
                run.refused = Some(e.to_string());
                break;
            }
            Ok(Err(_)) | Err(_) => {
                unanswered = true;
                run.retries += 1;
                // Only a hang gets this far; the generation check below then names the bot.
                if stop.load(Ordering::SeqCst) {
                    let since = *stopped_at.get_or_insert_with(Instant::now);
                    if since.elapsed() > machine_id_e2e::guide::HANG {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (run, key, certs)
}

#[test]
fn killing_the_auth_server_during_renewals_locks_no_bot_and_loses_nothing() {
    let mut auth = AuthServer::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut joined = Vec::new();
    for i in 0..BOTS {
        let (token, pins) = add_bot(&auth, &format!("bot{i}"));
        joined.push(rt.block_on(async {
            let cas = bootstrap_ca_certs(&auth.addr, &parse_pins(&pins).unwrap())
                .await
                .unwrap();
            let client = Client::connect_with_cas(&auth.addr, &cas).await.unwrap();
            let key = new_key();
            let certs = client
                .register_using_token(&token, &key.public_key().to_spki_der(), Duration::ZERO)
                .await
                .unwrap();
            (key, certs)
        }));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = joined
        .into_iter()
        .map(|(key, certs)| {
            rt.spawn(renew_loop(
                auth.addr.clone(),
                key,
                certs,
                stop.clone(),
                answered.clone(),
            ))
        })
        .collect();

    let mut rng = Rng::from_clock();
    let kills = std::env::var("FAULT_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(KILLS);
    for k in 0..kills {
        let cycle = Instant::now();
        // Let renewals get going after the (re)start, then kill at a random moment.
        let before = answered.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(60);
        while answered.load(Ordering::SeqCst) < before + BOTS as u64 {
            assert!(
                Instant::now() < deadline,
                "no renewals after a restart:\n{}",
                auth.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_micros(rng.below(200_000)));
        let waited = cycle.elapsed();
        auth.kill9();
        auth.restart_same_addr();
        println!(
            "kill {k}: renewals resumed after {waited:?}, restarted after {:?}",
            cycle.elapsed()
        );
    }
    stop.store(true, Ordering::SeqCst);
    let runs: Vec<_> = tasks.into_iter().map(|t| rt.block_on(t).unwrap()).collect();
    for (i, (run, _, _)) in runs.iter().enumerate() {
        println!("bot{i}: {run:?}");
    }

    // No bot was refused, and no lock exists.
    for (i, (run, _, _)) in runs.iter().enumerate() {
        assert!(run.refused.is_none(), "bot{i} was refused: {run:?}");
        assert!(
            run.renewals >= kills as u64,
            "bot{i} renewed too little: {run:?}"
        );
    }
    let locks = auth.tctl(&["locks", "ls", "--format=json"]).success();
    let locks: serde_json::Value = serde_json::from_str(&locks).unwrap();
    assert_eq!(locks.as_array().map(Vec::len), Some(0), "locks: {locks}");

    // Retries that hit a committed renewal were answered again, not locked.
    let events = auth
        .tctl(&[
            "events",
            "ls",
            "--type=cert.create",
            "--limit=10000",
            "--format=json",
        ])
        .success();
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let retried = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["fields"]["retry"] == serde_json::Value::Bool(true))
        .count();
    println!("renewals answered again after a lost answer: {retried}");

    // Nothing committed was lost, and nothing unanswered moved a bot past its certificate:
    // each bot's stored generation is the one of the last certificate it received, and each
    // renews once more after a last restart.
    auth.kill9();
    auth.restart_same_addr();
    for (i, (run, key, certs)) in runs.iter().enumerate() {
        let user: serde_json::Value = serde_json::from_str(
            &auth
                .tctl(&["get", &format!("users/bot-bot{i}"), "--format=json"])
                .success(),
        )
        .unwrap();
        assert_eq!(
            user["metadata"]["labels"]["generation"].as_str(),
            Some(run.generation.to_string().as_str()),
            "bot{i}: {user}"
        );
        let renewed = rt
            .block_on(async {
                let client = Client::connect(&auth.addr, &identity(key, certs)).await?;
                client
                    .generate_user_certs(&new_key().public_key().to_spki_der(), Duration::ZERO, &[])
                    .await
            })
            .unwrap();
        assert_eq!(
            parse_tls_identity(&renewed.tls_cert).unwrap().generation,
            run.generation + 1
        );
    }
}
