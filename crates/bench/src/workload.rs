//! The requests of each workload, made as tbot makes them, and the workers that make them.
//!
//! A worker owns its bots (each bot's current identity lives with exactly one worker) and
//! works them in turn, one request at a time, so a bot never renews concurrently with
//! itself. A failed attempt is counted by kind; a renewal or an output request is retried
//! unchanged (the same key, from the same identity), as tbot retries, which the server
//! answers idempotently; a join is not retried (its token is single-use).

use std::sync::Arc;
use std::time::{Duration, Instant};

use machine_id_client::{Client, ClientError, OutputRequest};
use machine_id_join::token::TokenSecret;
use tokio::sync::Barrier;

use crate::Workload;
use crate::fleet::{BenchBot, JoinFailure, JoinTrust, join, new_key, not_sent};
use crate::report::ErrorTally;

/// The pause before a failed attempt is sent again (tbot backs off for longer; a bench that
/// meets failures is measuring them, and they are counted).
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How long after the workload's end an unanswered renewal is still retried before its bot
/// is dropped from the bench.
const GRACE: Duration = Duration::from_secs(10);

/// What the workers of one workload counted.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) latencies: Vec<Duration>,
    pub(crate) requests: u64,
    pub(crate) renewals: u64,
    pub(crate) errors: ErrorTally,
    pub(crate) dropped: u64,
}

impl Tally {
    pub(crate) fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.requests += other.requests;
        self.renewals += other.renewals;
        self.errors.merge(other.errors);
        self.dropped += other.dropped;
    }

    fn answered(&mut self, started: Instant) {
        self.latencies.push(started.elapsed());
        self.requests += 1;
    }
}

/// How one request ended.
enum Outcome {
    /// Answered (after retries, if any).
    Answered,
    /// Failed in this process before anything was sent; the bot stays.
    Failed,
    /// The bot was dropped from the bench.
    Dropped,
}

/// Refusals that sending the same request again cannot change.
fn permanent(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::PermissionDenied(_)
            | ClientError::Unauthenticated(_)
            | ClientError::NotFound(_)
            | ClientError::InvalidArgument(_)
            | ClientError::CertificateRejected { .. }
            | ClientError::UntrustedServer { .. }
            | ClientError::IdentityExpired { .. }
            | ClientError::IdentityInvalid { .. }
            | ClientError::BadCertificate { .. }
            | ClientError::TlsConfig(_)
    )
}

/// After a failed attempt: drops the bot if the failure is permanent or the grace period is
/// over (returns `Some(Dropped)`), else pauses before the retry (returns `None`).
async fn after_failure(
    bot: &mut BenchBot,
    e: &ClientError,
    deadline: Instant,
    errors: &mut ErrorTally,
) -> Option<Outcome> {
    errors.client(e);
    if permanent(e) {
        tracing::warn!(bot = %bot.name, error = %e, "the server refused the bot; it is dropped from the bench");
        bot.dropped = Some(e.to_string());
        return Some(Outcome::Dropped);
    }
    if Instant::now() >= deadline + GRACE {
        tracing::warn!(bot = %bot.name, error = %e, "a request stayed unanswered past the workload's end; the bot is dropped from the bench");
        bot.dropped = Some(format!(
            "unanswered {} s after the workload's end: {e}",
            GRACE.as_secs()
        ));
        return Some(Outcome::Dropped);
    }
    tokio::time::sleep(RETRY_PAUSE).await;
    None
}

/// Renews the bot identity as tbot does: a new key, a new mutual-TLS connection as the
/// current identity, and one call, retried unchanged until answered: `GenerateUserCerts`
/// for the new key (`cycle == false`), or a whole tbot cycle (`cycle == true`):
/// `GenerateBotCerts` for the new key and one output (the bot's kept output key, every role
/// it may impersonate). Returns how it ended and whether the bot's generation moved (an
/// output refused in a cycle is counted as an error after its renewal).
async fn renew(
    bot: &mut BenchBot,
    cycle: bool,
    deadline: Instant,
    errors: &mut ErrorTally,
) -> (Outcome, bool) {
    let next = match new_key() {
        Ok(k) => k,
        Err(e) => {
            errors.record("local", || format!("generating a key: {e}"));
            return (Outcome::Failed, false);
        }
    };
    let spki = next.public_key().to_spki_der();
    let outputs = [OutputRequest {
        public_key_der: bot.output_spki.clone(),
        ttl: Duration::ZERO,
        roles: vec![],
    }];
    loop {
        let attempt = async {
            let client = Client::connect(bot.addrs.clone(), &bot.identity()?).await?;
            if !cycle {
                let certs = client
                    .generate_user_certs(&spki, Duration::ZERO, &[])
                    .await?;
                return Ok((certs, None));
            }
            let answer = client
                .generate_bot_certs(Some((&spki, Duration::ZERO)), &outputs)
                .await?;
            let refused = answer.outputs.into_iter().find_map(Result::err);
            let certs = answer.identity.ok_or_else(|| ClientError::Server {
                code: "Internal".into(),
                message: "a renewal answered without the identity".into(),
            })?;
            Ok::<_, ClientError>((certs, refused))
        };
        match attempt.await {
            Ok((certs, refused)) => {
                let before = bot.generation;
                return match bot.hold(next, certs) {
                    Ok(g) => {
                        if g != before + 1 {
                            errors.record("generation", || {
                                format!(
                                    "bot {} renewed from generation {before} to {g}, not {}",
                                    bot.name,
                                    before + 1
                                )
                            });
                        }
                        match refused {
                            Some(e) => {
                                errors.client(&e);
                                (Outcome::Failed, true)
                            }
                            None => (Outcome::Answered, true),
                        }
                    }
                    Err(m) => {
                        errors.record("bad_answer", || format!("renewed certificate: {m}"));
                        bot.dropped = Some(m);
                        (Outcome::Dropped, false)
                    }
                };
            }
            Err(e) => {
                if let Some(out) = after_failure(bot, &e, deadline, errors).await {
                    return (out, false);
                }
            }
        }
    }
}

/// An output's certificates over the bot's kept connection (made when missing), or over a
/// new connection (`kept == false`); retried unchanged until answered.
async fn output(
    bot: &mut BenchBot,
    kept: bool,
    deadline: Instant,
    errors: &mut ErrorTally,
) -> Outcome {
    loop {
        let client = match (kept, bot.kept.clone()) {
            (true, Some(c)) => Ok(c),
            _ => match bot.identity() {
                Ok(id) => Client::connect(bot.addrs.clone(), &id).await,
                Err(e) => Err(e),
            },
        };
        let attempt = match client {
            Ok(client) => {
                if kept {
                    bot.kept = Some(client.clone());
                }
                client
                    .generate_user_certs(&bot.output_spki, Duration::ZERO, &bot.roles)
                    .await
            }
            Err(e) => Err(e),
        };
        match attempt {
            Ok(_) => return Outcome::Answered,
            Err(e) => {
                if let Some(out) = after_failure(bot, &e, deadline, errors).await {
                    return out;
                }
            }
        }
    }
}

/// One worker of a timed workload (not `join`): prepares (the `output` workload connects
/// each bot once), waits at `ready` and `start`, then works its bots in turn for `duration`.
pub(crate) async fn work(
    workload: Workload,
    mut bots: Vec<BenchBot>,
    ready: Arc<Barrier>,
    start: Arc<Barrier>,
    duration: Duration,
) -> (Vec<BenchBot>, Tally) {
    let mut tally = Tally::default();
    if workload == Workload::Output {
        for bot in bots.iter_mut().filter(|b| b.dropped.is_none()) {
            match bot.identity() {
                Ok(id) => match Client::connect(bot.addrs.clone(), &id).await {
                    Ok(c) => bot.kept = Some(c),
                    Err(e) => tally.errors.client(&e),
                },
                Err(e) => tally.errors.client(&e),
            }
        }
    }
    ready.wait().await;
    start.wait().await;
    let deadline = Instant::now() + duration;
    let mut next = 0;
    while Instant::now() < deadline {
        let n = bots.len();
        let Some(i) = (0..n)
            .map(|k| (next + k) % n)
            .find(|&i| bots[i].dropped.is_none())
        else {
            break;
        };
        next = i + 1;
        let bot = &mut bots[i];
        let started = Instant::now();
        let errors = &mut tally.errors;
        // Counted apart from the requests: a cycle whose output half fails has still moved
        // the bot's generation.
        let mut renewed = false;
        let outcome = match workload {
            Workload::Renew | Workload::Cycle => {
                let (out, moved) = renew(bot, workload == Workload::Cycle, deadline, errors).await;
                renewed = moved;
                out
            }
            Workload::Output => output(bot, true, deadline, errors).await,
            Workload::OutputNewConn => output(bot, false, deadline, errors).await,
            // Joins run in windows of tokens made beforehand: `join_window`.
            Workload::Join => Outcome::Failed,
        };
        tally.renewals += u64::from(renewed);
        match outcome {
            Outcome::Answered => tally.answered(started),
            Outcome::Failed => {}
            Outcome::Dropped => tally.dropped += 1,
        }
    }
    for bot in &mut bots {
        bot.kept = None;
    }
    (bots, tally)
}

/// One worker's share of a join window: joins with each `(bot index, token)` in turn until
/// `deadline`; returns the tokens left unused. A failed join leaves the bot out of the
/// following workloads (the server may have consumed the token and moved the bot's
/// generation) unless a later join of it succeeds.
pub(crate) async fn join_window(
    mut bots: Vec<BenchBot>,
    tokens: Vec<(usize, TokenSecret)>,
    trust: JoinTrust,
    deadline: Instant,
) -> (Vec<BenchBot>, Tally, Vec<TokenSecret>) {
    let mut tally = Tally::default();
    let mut unused = Vec::new();
    let live_before = bots.iter().filter(|b| b.dropped.is_none()).count();
    let mut tokens = tokens.into_iter();
    while let Some((i, token)) = tokens.next() {
        if Instant::now() >= deadline {
            unused.push(token);
            unused.extend(tokens.by_ref().map(|(_, t)| t));
            break;
        }
        let Some(bot) = bots.get_mut(i) else {
            unused.push(token);
            continue;
        };
        let started = Instant::now();
        // Sent again with the same token while the server cannot have taken it, as tbot
        // does; each failed attempt is counted.
        let joined = loop {
            match join(&bot.addrs, &trust, &token).await {
                Err(e) if not_sent(&e) && Instant::now() < deadline + GRACE => {
                    if let JoinFailure::Client(c) = &e {
                        tally.errors.client(c);
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                r => break r,
            }
        };
        match joined {
            Ok((key, certs)) => match bot.hold(key, certs) {
                Ok(g) => {
                    if g != 1 {
                        tally.errors.record("generation", || {
                            format!("bot {} joined with generation {g}, not 1", bot.name)
                        });
                    }
                    bot.dropped = None;
                    tally.answered(started);
                }
                Err(m) => {
                    tally
                        .errors
                        .record("bad_answer", || format!("joined certificate: {m}"));
                    bot.dropped = Some(m);
                }
            },
            Err(JoinFailure::Client(e)) => {
                tally.errors.client(&e);
                bot.dropped = Some(format!("a join failed: {e}"));
            }
            Err(JoinFailure::Local(m)) => tally.errors.record("local", || m),
        }
    }
    let live_after = bots.iter().filter(|b| b.dropped.is_none()).count();
    tally.dropped = live_before.saturating_sub(live_after) as u64;
    (bots, tally, unused)
}
