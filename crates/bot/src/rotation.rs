//! Following a CA rotation: a running bot watches the cluster's CAs and, when a rotation
//! changes what it must hold, renews its identity and every output after a short debounce,
//! so `tlscacerts`, `sshcacerts` and `known_hosts` hold both CAs during a rotation and only
//! the new one after it.
//!
//! **Why a server-streamed watch rather than polling CA fingerprints.** The watch
//! (`WatchCertAuthorities`) sends the full CA set when opened and again after each change,
//! so the bot reacts well under a second after a phase moves (plus the debounce), where a
//! poll reacts only at its next tick; and it costs one idle HTTP/2 stream per bot instead of
//! a request per bot per tick, which matters with thousands of bots. Teleport's tbot does the
//! same (a `cert_authority` watcher). The renewal schedule stays the fallback: a bot whose
//! watch is down still renews on its interval and picks up the CAs then.
//!
//! **When to renew.** On each message the follower compares with the last one and with
//! what the bot holds:
//! - a CA entered a phase in which clients must renew
//!   ([`RotationPhase::clients_renew_on_entry`]: `update_clients`, `rollback`, `standby`):
//!   the signing keys or the trusted set changed;
//! - or the keys the cluster trusts (active and additionally trusted, every CA) differ from
//!   those the bot's identity or any output holds: a bot that started mid-rotation, or
//!   missed messages while disconnected, catches up; this also makes `init` refresh the
//!   trust bundles, so they hold the new CAs before anything is signed by them.
//!
//! A renewal for one trusted set is asked for once: if the keys still differ after it (the
//! server's lists disagree), the follower says so and waits for the next change instead of
//! renewing in a loop.
//!
//! The renewal is debounced (default 10 s, like Teleport; `ca_rotation_debounce`), which
//! coalesces the three CA types moving one after another and lets every auth server see the
//! change; then it goes through [`Bot::renew_now`], the same path as SIGHUP. The watch is
//! re-opened with the renewed identity after every renewal (so an expiring certificate never
//! holds it), and after an error or the end of the stream with a jittered delay around 2 s.
//! Oneshot bots do not watch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use machine_id_client::{CaWatch, Certs};
use machine_id_mint::certs_from_pem;
use machine_id_types::{CaType, CertAuthority, RotationPhase};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::{Bot, Result};

/// The debounce before a rotation renewal, unless configured.
pub const DEFAULT_CA_ROTATION_DEBOUNCE: Duration = Duration::from_secs(10);

/// The delay before re-opening a watch that failed or ended (jittered down to half).
const REOPEN_DELAY: Duration = Duration::from_secs(2);

/// How the CA watch is doing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum WatchState {
    /// Not started: oneshot, or before the first renewal.
    #[default]
    Idle,
    /// Opening.
    Opening,
    /// Open: changes arrive as they happen.
    Watching,
    /// Failed or ended; re-opening after a short delay.
    Reconnecting {
        /// Why.
        error: String,
    },
}

/// The follower's health, shared with [`Bot::status`] and `/readyz`.
#[derive(Debug, Default)]
pub(crate) struct WatchHealth {
    state: Mutex<WatchState>,
    renewals: AtomicU64,
}

impl WatchHealth {
    fn set(&self, state: WatchState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    /// The watch's state now.
    pub(crate) fn state(&self) -> WatchState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Renewals the follower asked for since start.
    pub(crate) fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// Whether the watch is open; `None` while it does not run.
    pub(crate) fn up(&self) -> Option<bool> {
        match self.state() {
            WatchState::Idle => None,
            WatchState::Watching => Some(true),
            WatchState::Opening | WatchState::Reconnecting { .. } => Some(false),
        }
    }

    /// One line for `/readyz`, or `None` while the watch does not run.
    pub(crate) fn describe(&self) -> Option<String> {
        match self.state() {
            WatchState::Idle => None,
            WatchState::Opening => Some("ca rotation watch: opening".into()),
            WatchState::Watching => Some("ca rotation watch: watching".into()),
            WatchState::Reconnecting { error } => Some(format!(
                "ca rotation watch: reconnecting ({error}); the bot still renews on its schedule"
            )),
        }
    }
}

/// The CA keys trusted by the cluster or held by a bot: TLS CA certificates (DER) and SSH CA
/// public keys (`algorithm base64`, without comments), each as a set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TrustedKeys {
    tls: BTreeSet<Vec<u8>>,
    ssh: BTreeSet<String>,
}

/// An OpenSSH public key line without its comment.
fn ssh_key_id(line: &str) -> Option<String> {
    let mut fields = line.split_whitespace();
    Some(format!("{} {}", fields.next()?, fields.next()?))
}

impl TrustedKeys {
    /// Every key the cluster's CAs trust: active and additionally trusted, every CA type.
    pub(crate) fn of_cluster(cas: &[CertAuthority]) -> Self {
        let mut keys = Self::default();
        for ca in cas {
            for set in [&ca.spec.active_keys, &ca.spec.additional_trusted_keys] {
                keys.ssh
                    .extend(set.ssh.iter().filter_map(|l| ssh_key_id(l)));
                for pem in &set.tls {
                    match certs_from_pem(pem) {
                        Ok(ders) => keys.tls.extend(ders),
                        Err(e) => {
                            tracing::warn!(ca = %ca.sub_kind, error = %e, "a TLS CA certificate of the CA watch does not parse; ignoring it");
                        }
                    }
                }
            }
        }
        keys
    }

    /// The keys certificates from a join or a renewal carry (what the destination's
    /// `tlscacerts` and `sshcacerts` are made of).
    pub(crate) fn of_certs(certs: &Certs) -> Self {
        Self {
            tls: certs.tls_ca_certs.iter().cloned().collect(),
            ssh: certs
                .ssh_ca_keys
                .iter()
                .filter_map(|l| ssh_key_id(l))
                .collect(),
        }
    }
}

/// What one message of the watch means for the bot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// CAs whose phase changed since the last message, with the phase they entered.
    pub(crate) entered: Vec<(CaType, RotationPhase)>,
    /// Why the bot must renew, or `None`.
    pub(crate) renew: Option<String>,
}

/// The decision rule, without I/O (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Judge {
    /// Each CA's phase in the last message.
    phases: BTreeMap<CaType, RotationPhase>,
    /// The cluster's trusted keys the last renewal for a mismatch was asked for.
    acted_on: Option<TrustedKeys>,
}

/// `user, host entered update_clients; tls entered init` from the changes.
fn describe_entries(entered: &[(CaType, RotationPhase)]) -> String {
    let mut by_phase: Vec<(RotationPhase, Vec<&str>)> = Vec::new();
    for (ca, phase) in entered {
        match by_phase.iter_mut().find(|(p, _)| p == phase) {
            Some((_, cas)) => cas.push(ca.as_str()),
            None => by_phase.push((*phase, vec![ca.as_str()])),
        }
    }
    by_phase
        .iter()
        .map(|(p, cas)| format!("{} entered {p}", cas.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Judge {
    /// Judges `cas` (a message of the watch) against the last message and `held`, the keys
    /// the bot's identity and each output hold.
    pub(crate) fn judge(&mut self, cas: &[CertAuthority], held: &[TrustedKeys]) -> Verdict {
        let mut entered = Vec::new();
        for ca in cas {
            let phase = ca.spec.rotation.phase;
            if let Some(last) = self.phases.insert(ca.sub_kind, phase)
                && last != phase
            {
                entered.push((ca.sub_kind, phase));
            }
        }
        let cluster = TrustedKeys::of_cluster(cas);
        let renewing: Vec<_> = entered
            .iter()
            .copied()
            .filter(|(_, p)| p.clients_renew_on_entry())
            .collect();
        let differs = held.iter().any(|h| *h != cluster);
        let renew = if !renewing.is_empty() {
            Some(describe_entries(&renewing))
        } else if differs && self.acted_on.as_ref() != Some(&cluster) {
            let rotating: Vec<_> = cas
                .iter()
                .filter(|c| c.spec.rotation.phase != RotationPhase::Standby)
                .map(|c| (c.sub_kind, c.spec.rotation.phase))
                .collect();
            Some(if rotating.is_empty() {
                "the cluster trusts other CA keys than the bot holds".to_string()
            } else {
                format!(
                    "the cluster trusts other CA keys than the bot holds ({})",
                    rotating
                        .iter()
                        .map(|(c, p)| format!("{c} in {p}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        } else {
            if differs {
                tracing::warn!(
                    "CA rotation: the bot renewed for this set of CA keys, yet what it holds still differs from what the cluster trusts; not renewing again until the CAs change (the renewal schedule goes on)"
                );
            }
            None
        };
        if renew.is_some() {
            self.acted_on = Some(cluster);
        }
        Verdict { entered, renew }
    }
}

/// Returns once the bot is asked to stop (or dropped).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here.
    let _ = stop.wait_for(|s| *s).await.map(drop);
}

/// The next message of `watch`, or never when there is none.
async fn next(
    watch: &mut Option<CaWatch>,
) -> machine_id_client::Result<Option<Vec<CertAuthority>>> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// Runs the follower for `bot` until the task is dropped or the bot is stopped (see the
/// module docs). Expects the bot to hold an identity (it waits for one otherwise).
pub(crate) async fn follow(bot: Bot) {
    let health = bot.watch_health();
    let debounce = bot.ca_rotation_debounce();
    let mut stop = bot.stop_signal();
    let mut renewed = bot.renewed_signal();
    let mut judge = Judge::default();
    let mut watch: Option<CaWatch> = None;
    let mut backoff = Backoff::new(REOPEN_DELAY, REOPEN_DELAY);
    let mut reopen_at = Instant::now();
    let mut due: Option<Instant> = None;
    health.set(WatchState::Opening);
    loop {
        tokio::select! {
            () = stopped(&mut stop) => return,
            changed = renewed.changed() => {
                if changed.is_err() {
                    return;
                }
                // A new identity: watch with it from now on.
                if watch.take().is_some() {
                    tracing::debug!("re-opening the CA watch with the renewed identity");
                    health.set(WatchState::Opening);
                }
                reopen_at = Instant::now();
            }
            () = tokio::time::sleep_until(due.unwrap_or_else(Instant::now)), if due.is_some() => {
                due = None;
                health.renewals.fetch_add(1, Ordering::Relaxed);
                tracing::info!("CA rotation: renewing the identity and every output now");
                bot.renew_now();
            }
            message = next(&mut watch), if watch.is_some() => {
                let error = match message {
                    Ok(Some(cas)) => {
                        on_message(&mut judge, &cas, &bot, debounce, &mut due);
                        continue;
                    }
                    Ok(None) => "the auth server ended the watch".to_string(),
                    Err(e) => e.to_string(),
                };
                watch = None;
                let delay = backoff.next_delay();
                tracing::info!(error, retry_in = ?delay, "CA watch interrupted; re-opening it");
                health.set(WatchState::Reconnecting { error });
                reopen_at = Instant::now() + delay;
            }
            () = tokio::time::sleep_until(reopen_at), if watch.is_none() => {
                match open(&bot).await {
                    Ok(Some(w)) => {
                        watch = Some(w);
                        backoff.reset();
                        health.set(WatchState::Watching);
                        tracing::debug!("watching the cluster's CAs");
                    }
                    // No identity yet: the next renewal wakes us.
                    Ok(None) => reopen_at = Instant::now() + Duration::from_secs(3600),
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::info!(error = %e, retry_in = ?delay, "cannot open the CA watch; retrying");
                        health.set(WatchState::Reconnecting { error: e.to_string() });
                        reopen_at = Instant::now() + delay;
                    }
                }
            }
        }
    }
}

/// Opens a watch as the bot's current identity; `None` when it has none yet.
async fn open(bot: &Bot) -> Result<Option<CaWatch>> {
    let Some(client) = bot.connect_as_bot().await? else {
        return Ok(None);
    };
    Ok(Some(
        client
            .watch_cert_authorities()
            .await
            .map_err(crate::error::refusal)?,
    ))
}

/// Judges one message and schedules a renewal when it calls for one.
fn on_message(
    judge: &mut Judge,
    cas: &[CertAuthority],
    bot: &Bot,
    debounce: Duration,
    due: &mut Option<Instant>,
) {
    let held: Vec<TrustedKeys> = bot.held_certs().iter().map(TrustedKeys::of_certs).collect();
    let verdict = judge.judge(cas, &held);
    let next_steps = || {
        verdict
            .entered
            .iter()
            .map(|(ca, p)| format!("{ca}: {}", p.next_step_hint(*ca)))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match &verdict.renew {
        Some(why) => {
            if due.is_none() {
                *due = Some(Instant::now() + debounce);
            }
            tracing::info!(
                next_steps = %next_steps(),
                "CA rotation: {why}; renewing identity and outputs in {}",
                machine_id_types::duration::format(debounce)
            );
        }
        None if !verdict.entered.is_empty() => {
            tracing::info!(
                next_steps = %next_steps(),
                "CA rotation: {}; the bot already holds what it needs, nothing to renew",
                describe_entries(&verdict.entered)
            );
        }
        None => {}
    }
}

#[cfg(test)]
mod tests;
