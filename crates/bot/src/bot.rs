//! [`Bot`]: the handle an embedding service or `tbot` holds, and the loop that ties the parts
//! together (the bot's own identity in [`onboarding`](crate::onboarding), the destinations in
//! [`outputs`](crate::outputs), the counters in [`metrics`](crate::metrics)): renew, wait,
//! retry with backoff, stop.

use std::sync::Arc;
use std::time::Duration;

use machine_id_client::{Certs, Client};
use machine_id_destination::Artifacts;
use machine_id_types::{Clock, Identity};
use rustls::sign::CertifiedKey;
use tokio::sync::{Notify, watch};

use crate::Result;
use crate::backoff::Backoff;
use crate::builder::BotBuilder;
use crate::metrics::{AuthHealth, Counters, NotReady, Status};
use crate::onboarding::{Onboarding, OutputsAnswer};
use crate::outputs::Outputs;
use crate::rotation::WatchHealth;

/// How many times `oneshot` tries when the auth server cannot be reached.
const ONESHOT_ATTEMPTS: u32 = 3;
/// The first retry delay after a failure.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// The longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(5 * 60);

/// When the bot renews and what it asks for.
pub(crate) struct Schedule {
    pub(crate) certificate_ttl: Duration,
    pub(crate) renewal_interval: Duration,
    pub(crate) oneshot: bool,
    /// How long the CA rotation follower waits before renewing.
    pub(crate) ca_rotation_debounce: Duration,
}

struct Inner {
    onboarding: Onboarding,
    outputs: Outputs,
    counters: Counters,
    schedule: Schedule,
    clock: Arc<dyn Clock>,
    renew_now: Notify,
    stop: watch::Sender<bool>,
    /// Counts the renewals of the bot's own identity (the CA watch re-opens with each).
    renewed: watch::Sender<u64>,
    watch_health: WatchHealth,
}

/// The tbot engine. Cheap to clone; clones share one bot.
///
/// ```no_run
/// # async fn run() -> Result<(), machine_id_bot::BotError> {
/// let bot = machine_id_bot::Bot::builder()
///     .auth_server("127.0.0.1:3025")
///     .token("0123456789abcdef0123456789abcdef")
///     .ca_pins(vec!["sha256:...".into()])
///     .memory_destination(vec![])
///     .build()?;
/// bot.renew().await?; // join and get the first certificates
/// let identity = bot.current_identity().expect("renewed");
/// println!("{} holds roles {:?}", identity.username, identity.roles);
/// let tls = bot.rustls_client_config()?; // always presents the current certificate
/// tokio::spawn({ let bot = bot.clone(); async move { bot.run().await } });
/// # let _ = tls; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Bot {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Bot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bot")
            .field("auth_server", &self.inner.onboarding.auth_server())
            .field("storage", &self.inner.onboarding.storage().describe())
            .finish_non_exhaustive()
    }
}

impl Bot {
    /// A builder.
    pub fn builder() -> BotBuilder {
        BotBuilder::default()
    }

    /// The bot of its parts (what [`BotBuilder::build`] checked and made).
    pub(crate) fn new(
        onboarding: Onboarding,
        outputs: Outputs,
        schedule: Schedule,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (stop, _) = watch::channel(false);
        let (renewed, _) = watch::channel(0);
        Self {
            inner: Arc::new(Inner {
                onboarding,
                outputs,
                counters: Counters::default(),
                schedule,
                clock,
                renew_now: Notify::new(),
                stop,
                renewed,
                watch_health: WatchHealth::default(),
            }),
        }
    }

    /// Whether this bot writes once and stops.
    pub fn is_oneshot(&self) -> bool {
        self.inner.schedule.oneshot
    }

    /// The identity of the first output's current certificate (the certificate a service
    /// presents), or `None` before the first renewal.
    pub fn current_identity(&self) -> Option<Identity> {
        self.inner.outputs.read(0, |o| o.issued.identity.clone())
    }

    /// The bot's own renewable identity, or `None` before the first join.
    pub fn bot_identity(&self) -> Option<Identity> {
        self.inner.onboarding.bot().map(|b| b.identity)
    }

    /// The files of output `index` as last written.
    pub fn current_artifacts(&self, index: usize) -> Option<Arc<Artifacts>> {
        self.inner.outputs.read(index, |o| o.artifacts.clone())
    }

    /// The first output's key and certificate, for a rustls client (see
    /// [`Bot::rustls_client_config`]).
    pub(crate) fn current_certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.inner.outputs.read(0, |o| o.certified.clone())
    }

    /// The cluster's TLS CA certificates (DER) as of the last renewal.
    pub fn current_ca_certs(&self) -> Vec<Vec<u8>> {
        self.inner
            .outputs
            .read(0, |o| o.issued.certs.tls_ca_certs.clone())
            .or_else(|| self.inner.onboarding.bot().map(|b| b.certs.tls_ca_certs))
            .unwrap_or_default()
    }

    /// The certificates the bot's identity and each output hold now (what the CA rotation
    /// follower compares with the cluster's CAs).
    pub(crate) fn held_certs(&self) -> Vec<Certs> {
        let mut held: Vec<Certs> = self
            .inner
            .onboarding
            .bot()
            .map(|b| b.certs)
            .into_iter()
            .collect();
        held.extend(self.inner.outputs.held_certs());
        held
    }

    /// A mutual-TLS connection as the bot's current identity; `None` before it has one.
    pub(crate) async fn connect_as_bot(&self) -> Result<Option<Client>> {
        let Some(bot) = self.inner.onboarding.bot() else {
            return Ok(None);
        };
        let client = bot
            .connect(
                self.inner.onboarding.auth_server(),
                self.inner.clock.as_ref(),
            )
            .await?;
        Ok(Some(client))
    }

    /// The CA rotation follower's health.
    pub(crate) fn watch_health(&self) -> &WatchHealth {
        &self.inner.watch_health
    }

    /// How long the CA rotation follower waits before renewing.
    pub(crate) fn ca_rotation_debounce(&self) -> Duration {
        self.inner.schedule.ca_rotation_debounce
    }

    /// Turns `true` when the bot is asked to stop.
    pub(crate) fn stop_signal(&self) -> watch::Receiver<bool> {
        self.inner.stop.subscribe()
    }

    /// Changes at each renewal of the bot's own identity.
    pub(crate) fn renewed_signal(&self) -> watch::Receiver<u64> {
        self.inner.renewed.subscribe()
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.inner.schedule.certificate_ttl.as_secs()).unwrap_or(i64::MAX)
    }

    /// Health numbers.
    pub fn status(&self) -> Status {
        Status::new(
            &self.inner.counters,
            self.inner.outputs.expires(),
            self.inner.onboarding.health(),
            AuthHealth {
                failovers: self.inner.onboarding.auth_server().failovers(),
                retries: self.inner.onboarding.auth_server().retries(),
            },
            self.inner.clock.now().unix_timestamp(),
            self.ttl_secs(),
        )
        .with_ca_watch(
            self.inner.watch_health.renewals(),
            self.inner.watch_health.up(),
        )
    }

    /// One line on the CA rotation watch for `/readyz`, while it runs.
    pub(crate) fn ca_watch_line(&self) -> Option<String> {
        self.inner.watch_health.describe()
    }

    /// Why the bot is not ready, in words (what `/readyz` says), or `None` when it is.
    pub(crate) fn not_ready_reason(&self) -> Option<String> {
        let st = self.status();
        if st.ready {
            return None;
        }
        if let Some(e) = self.identity_save_error() {
            return Some(e);
        }
        let reason = crate::metrics::judge(
            st.identity_unsaved,
            st.seconds_until_expiry,
            st.last_ok,
            st.renewals + st.failures > 0,
            self.ttl_secs(),
        )
        .err()
        .unwrap_or(NotReady::NoCertificates);
        Some(reason.to_string())
    }

    /// Why the bot's renewed identity could not be saved, while it cannot (what `/readyz`
    /// says); `None` when the identity in use is the stored one.
    pub fn identity_save_error(&self) -> Option<String> {
        self.inner.onboarding.save_error()
    }

    /// Finishes writes to directory destinations that a killed tbot left half-renamed (see
    /// `DirectoryDestination::recover`), so each set is whole before anything else happens.
    /// [`Bot::run`] does this first, before contacting the auth server; failures are logged.
    pub async fn recover_destinations(&self) {
        self.inner.outputs.recover().await;
    }

    /// Asks the loop to renew now (what SIGHUP and SIGUSR1 do).
    pub fn renew_now(&self) {
        self.inner.renew_now.notify_one();
    }

    /// Asks the loop to stop (what SIGINT and SIGTERM do); [`Bot::run`] then returns `Ok`.
    pub fn stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Runs the bot: the first renewal (joining if needed), then, unless oneshot, renewals
    /// every interval until [`Bot::stop`], and follows CA rotations on its own (a watch on
    /// the cluster's CAs renews the identity and every output when a rotation changes what
    /// they must hold; see [`BotBuilder::ca_rotation_debounce`]). Transient failures (auth server unreachable, lost
    /// races, destination writes) are retried with capped exponential backoff and jitter,
    /// keeping the last good files; a bot that is locked or deleted, or whose identity expired
    /// with no token to join again, ends with the error.
    ///
    /// Until the first renewal succeeds, [`Bot::status`] judges the certificates the
    /// destinations already hold (a restart), not "none".
    pub async fn run(&self) -> Result<()> {
        self.recover_destinations().await;
        self.inner.outputs.adopt_written().await;
        let schedule = &self.inner.schedule;
        let mut stop = self.inner.stop.subscribe();
        let max = schedule.renewal_interval.clamp(RETRY_BASE, RETRY_MAX);
        let mut backoff = Backoff::new(RETRY_BASE, max);
        // The first renewal: oneshot gives up after a few transient failures.
        loop {
            match self.renew().await {
                Ok(()) => break,
                Err(e) if e.is_transient() => {
                    if schedule.oneshot && backoff.attempts() + 1 >= ONESHOT_ATTEMPTS {
                        return Err(e);
                    }
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?delay, "the first renewal failed; retrying");
                    if wait(&mut stop, delay, None).await {
                        return Ok(());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        backoff.reset();
        if schedule.oneshot {
            tracing::info!("oneshot: outputs written, exiting");
            return Ok(());
        }
        // Follows CA rotations until this function returns (the guard ends it).
        let _follower = AbortOnDrop(tokio::spawn(crate::rotation::follow(self.clone())));
        let mut delay = schedule.renewal_interval;
        loop {
            if wait(&mut stop, delay, Some(&self.inner.renew_now)).await {
                tracing::info!("stopping");
                return Ok(());
            }
            match self.renew().await {
                Ok(()) => {
                    backoff.reset();
                    delay = schedule.renewal_interval;
                }
                Err(e) if e.is_transient() => {
                    delay = backoff.next_delay();
                    tracing::warn!(error = %e, attempt = backoff.attempts(), retry_in = ?delay, "renewal failed; keeping the last good certificates and retrying");
                }
                Err(e) => {
                    tracing::error!(error = %e, "renewal failed and cannot be retried");
                    return Err(e);
                }
            }
        }
    }

    /// One renewal: the bot's identity (joining when there is none), then every output.
    pub async fn renew(&self) -> Result<()> {
        let result = self.renew_inner().await;
        self.inner.counters.record(result.is_ok());
        result
    }

    async fn renew_inner(&self) -> Result<()> {
        let inner = &self.inner;
        let plan = inner.outputs.plan()?;
        let (bot, saving, answer) = inner.onboarding.renew_identity(&plan.requests).await?;
        // The identity is saved (fsyncs) while the outputs are fetched and written.
        let outputs = match answer {
            OutputsAnswer::Given(answer) => inner.outputs.write_answer(&bot, plan, answer).await,
            OutputsAnswer::Ask => inner.outputs.renew(&bot, plan, false).await,
            OutputsAnswer::PerCall => inner.outputs.renew(&bot, plan, true).await,
        };
        let saved = inner.onboarding.finish_save(&bot, saving).await;
        // The identity changed (and the outputs were renewed, or failed): the CA watch
        // re-opens with it, and judges what the outputs hold now.
        inner.renewed.send_modify(|n| *n = n.wrapping_add(1));
        // A save that failed needs a person more than an output that failed.
        match (saved, outputs) {
            (Err(e), Err(out)) => {
                tracing::warn!(error = %out, "the outputs were not renewed either");
                Err(e)
            }
            (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(())) => Ok(()),
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits `delay`, or until `notify` fires; `true` when asked to stop instead.
async fn wait(stop: &mut watch::Receiver<bool>, delay: Duration, notify: Option<&Notify>) -> bool {
    if *stop.borrow() {
        return true;
    }
    let renew = async {
        match notify {
            Some(n) => {
                n.notified().await;
                tracing::info!("renewing now, as asked");
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(delay) => false,
        () = renew => false,
        r = stop.wait_for(|s| *s) => r.is_ok(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;
    use crate::BotError;

    #[tokio::test]
    async fn no_pin_no_ca_path_refuses() {
        let bot = Bot::builder()
            .auth_server("127.0.0.1:1")
            .token("t")
            .memory_destination(vec![])
            .build()
            .unwrap();
        let e = bot.renew().await.unwrap_err();
        assert!(matches!(e, BotError::NoTrustAnchor), "{e}");
        assert_eq!(bot.status().failures, 1);
        assert!(!bot.status().ready);
    }

    #[tokio::test]
    async fn stop_ends_the_wait() {
        let (tx, mut rx) = watch::channel(false);
        tx.send_replace(true);
        assert!(wait(&mut rx, Duration::from_secs(3600), None).await);
    }
}
