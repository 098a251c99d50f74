//! The engine: join, renew, write outputs, in a loop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use machine_id_client::{
    Client, ClientError, PingInfo, bootstrap_ca_certs, fetch_ca_certs_unverified, parse_pins,
};
use machine_id_destination::{
    Artifacts, Destination, DirectoryDestination, HostCaKey, MemoryDestination, SshConfigParams,
    SymlinkPolicy, known_hosts, ssh_config,
};
use machine_id_join::iam::{self, AwsEnv};
use machine_id_join::token::TokenSecret;
use machine_id_mint::{PrivateKey, Suite, certs_from_pem};
use machine_id_types::{Clock, Identity, JoinMethod, SystemClock};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Notify, watch};

use crate::backoff::Backoff;
use crate::config::{BotConfig, resolve_token};
use crate::error::refusal;
use crate::identity::IssuedIdentity;
use crate::storage::Storage;
use crate::{BotError, Result};

/// How many times `oneshot` tries when the auth server cannot be reached.
const ONESHOT_ATTEMPTS: u32 = 3;
/// The first retry delay after a failure.
const RETRY_BASE: Duration = Duration::from_secs(1);
/// The longest retry delay.
const RETRY_MAX: Duration = Duration::from_secs(5 * 60);

/// Where one output goes and which roles its certificates carry.
#[derive(Clone)]
struct Output {
    destination: Arc<dyn Destination>,
    /// The directory, for the ssh_config template (directory destinations only).
    dir: Option<PathBuf>,
    /// Empty: every role the bot may impersonate.
    roles: Vec<String>,
    describe: String,
}

/// Builds a [`Bot`]. Defaults: memory storage, no destination, TTL 60m, interval 20m, the
/// system clock.
#[must_use]
pub struct BotBuilder {
    auth_server: Option<String>,
    token: Option<TokenSecret>,
    ca_pins: Vec<String>,
    ca_path: Option<PathBuf>,
    insecure: bool,
    certificate_ttl: Duration,
    renewal_interval: Duration,
    oneshot: bool,
    storage: Option<Storage>,
    outputs: Vec<Output>,
    clock: Arc<dyn Clock>,
    tbot_path: Option<PathBuf>,
    join_method: JoinMethod,
    aws_env: Option<AwsEnv>,
}

impl std::fmt::Debug for BotBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BotBuilder")
            .field("auth_server", &self.auth_server)
            .field("join_method", &self.join_method)
            .field("outputs", &self.outputs.len())
            .finish_non_exhaustive()
    }
}

impl Default for BotBuilder {
    fn default() -> Self {
        Self {
            auth_server: None,
            token: None,
            ca_pins: Vec::new(),
            ca_path: None,
            insecure: false,
            certificate_ttl: crate::config::DEFAULT_CERTIFICATE_TTL,
            renewal_interval: crate::config::DEFAULT_RENEWAL_INTERVAL,
            oneshot: false,
            storage: None,
            outputs: Vec::new(),
            clock: Arc::new(SystemClock),
            tbot_path: None,
            join_method: JoinMethod::Token,
            aws_env: None,
        }
    }
}

impl BotBuilder {
    /// Everything a (validated) config says: opens and locks the data directory, reads the
    /// token file.
    pub fn from_config(config: &BotConfig) -> Result<Self> {
        config.validate()?;
        let mut b = Self::default()
            .certificate_ttl(config.certificate_ttl())
            .renewal_interval(config.renewal_interval())
            .oneshot(config.oneshot)
            .insecure(config.insecure)
            .ca_pins(config.onboarding.ca_pins.clone())
            .join_method(config.onboarding.join_method);
        if let Some(a) = &config.auth_server {
            b = b.auth_server(a);
        }
        if let Some(t) = &config.onboarding.token {
            b.token = Some(match config.onboarding.join_method {
                // An iam token's name is no secret and never a file.
                JoinMethod::Iam => TokenSecret::new(t),
                JoinMethod::Token => resolve_token(t)?,
            });
        }
        if let Some(p) = &config.onboarding.ca_path {
            b = b.ca_path(p);
        }
        // Before the data directory is created or locked: a destination that overlaps it
        // would overwrite (or be) the bot's own identity.
        if let Some(data) = config.storage.data_dir() {
            for d in &config.destinations {
                if let Some(dir) = &d.directory {
                    crate::config::check_overlap(&data, &dir.path)?;
                }
            }
        }
        b.storage = Some(match config.storage.data_dir() {
            Some(dir) => Storage::directory(dir)?,
            None => Storage::memory(),
        });
        for d in &config.destinations {
            if let Some(dir) = &d.directory {
                b = b.directory_destination(&dir.path, dir.symlinks, d.roles.clone());
            }
        }
        Ok(b)
    }

    /// The auth server, `host:port`.
    pub fn auth_server(mut self, addr: impl Into<String>) -> Self {
        self.auth_server = Some(addr.into());
        self
    }

    /// The join token.
    pub fn token(mut self, token: impl AsRef<str>) -> Self {
        self.token = Some(TokenSecret::new(token));
        self
    }

    /// `sha256:<hex>` CA pins checked on the first join.
    pub fn ca_pins(mut self, pins: Vec<String>) -> Self {
        self.ca_pins = pins;
        self
    }

    /// A PEM file of the cluster's CA certificates, instead of pins.
    pub fn ca_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_path = Some(path.into());
        self
    }

    /// Trust whatever CA the server presents on the first join when no pin or CA path is
    /// given (testing only).
    pub fn insecure(mut self, insecure: bool) -> Self {
        self.insecure = insecure;
        self
    }

    /// The lifetime asked for every certificate.
    pub fn certificate_ttl(mut self, ttl: Duration) -> Self {
        self.certificate_ttl = ttl;
        self
    }

    /// The time between renewals.
    pub fn renewal_interval(mut self, interval: Duration) -> Self {
        self.renewal_interval = interval;
        self
    }

    /// Write the outputs once; [`Bot::run`] then returns.
    pub fn oneshot(mut self, oneshot: bool) -> Self {
        self.oneshot = oneshot;
        self
    }

    /// Keeps the bot's identity in a locked data directory.
    pub fn data_dir(mut self, path: impl Into<PathBuf>) -> Result<Self> {
        self.storage = Some(Storage::directory(path)?);
        Ok(self)
    }

    /// Keeps the bot's identity in memory (the default).
    pub fn memory_storage(mut self) -> Self {
        self.storage = Some(Storage::memory());
        self
    }

    /// Adds an output written to `destination` (e.g. a [`MemoryDestination`] clone kept to
    /// read from) with certificates for `roles` (empty: every role the bot may impersonate).
    pub fn destination(
        mut self,
        destination: impl Destination + 'static,
        roles: Vec<String>,
    ) -> Self {
        let n = self.outputs.len();
        self.outputs.push(Output {
            destination: Arc::new(destination),
            dir: None,
            roles,
            describe: format!("destination {n}"),
        });
        self
    }

    /// Adds an in-memory output and returns the builder with it; read it back with
    /// [`Bot::current_artifacts`] or [`Bot::current_identity`].
    pub fn memory_destination(self, roles: Vec<String>) -> Self {
        self.destination(MemoryDestination::new(), roles)
    }

    /// Adds a directory output.
    pub fn directory_destination(
        mut self,
        path: impl AsRef<Path>,
        symlinks: SymlinkPolicy,
        roles: Vec<String>,
    ) -> Self {
        let path = absolute(path.as_ref());
        self.outputs.push(Output {
            destination: Arc::new(DirectoryDestination::new(&path).with_symlinks(symlinks)),
            describe: format!("destination {}", path.display()),
            dir: Some(path),
            roles,
        });
        self
    }

    /// The clock expiry is judged by.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The `tbot` executable that ssh_config's `ProxyCommand` names (default: this process's
    /// executable).
    pub fn tbot_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.tbot_path = Some(path.into());
        self
    }

    /// How the bot joins: `token` (default; a single-use secret, then renewals) or `iam` (a
    /// signed `sts:GetCallerIdentity` request; every renewal is a fresh join with the same
    /// token name).
    pub fn join_method(mut self, method: JoinMethod) -> Self {
        self.join_method = method;
        self
    }

    /// Where the `iam` method reads AWS credentials, region and endpoint settings from
    /// (default: the process environment and home directory at each join).
    pub fn aws_env(mut self, env: AwsEnv) -> Self {
        self.aws_env = Some(env);
        self
    }

    /// Checks the settings and builds the bot (nothing is dialed yet).
    pub fn build(self) -> Result<Bot> {
        let auth_server = self.auth_server.filter(|a| !a.is_empty()).ok_or_else(|| {
            BotError::Config("no auth server; set one with auth_server(\"host:3025\")".into())
        })?;
        if self.certificate_ttl.is_zero() || self.renewal_interval.is_zero() {
            return Err(BotError::Config(
                "certificate_ttl and renewal_interval must be longer than zero".into(),
            ));
        }
        if self.certificate_ttl < self.renewal_interval {
            tracing::warn!(
                certificate_ttl = %machine_id_types::duration::format(self.certificate_ttl),
                renewal_interval = %machine_id_types::duration::format(self.renewal_interval),
                "the certificate TTL is shorter than the renewal interval: certificates will expire between renewals"
            );
        }
        let pins = parse_pins(&self.ca_pins)?;
        let storage = self.storage.unwrap_or_else(Storage::memory);
        if let Some(data) = storage.data_dir() {
            for dir in self.outputs.iter().filter_map(|o| o.dir.as_deref()) {
                crate::config::check_overlap(data, dir)?;
            }
        }
        let tbot_path = match self.tbot_path {
            Some(p) => absolute(&p),
            None => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tbot")),
        };
        let (stop_tx, _) = watch::channel(false);
        Ok(Bot {
            inner: Arc::new(Inner {
                auth_server,
                token: self.token,
                pins,
                ca_path: self.ca_path,
                insecure: self.insecure,
                certificate_ttl: self.certificate_ttl,
                renewal_interval: self.renewal_interval,
                oneshot: self.oneshot,
                storage,
                outputs: self.outputs,
                clock: self.clock,
                tbot_path,
                join_method: self.join_method,
                aws_env: self.aws_env,
                state: RwLock::default(),
                metrics: Metrics::default(),
                save_error: Mutex::default(),
                renew_now: Notify::new(),
                stop: stop_tx,
            }),
        })
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Counters for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) renewals: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) last_ok: AtomicBool,
    /// Unix seconds the earliest output certificate expires (0: none yet).
    pub(crate) expires: AtomicI64,
    /// Unix seconds the bot's own identity expires (0: none yet).
    pub(crate) identity_expires: AtomicI64,
    /// Set while the bot holds a renewed identity it could not save.
    pub(crate) identity_unsaved: AtomicBool,
}

/// What a renewal produced, for the accessors.
#[derive(Default)]
struct State {
    /// The bot identity durably stored (loaded at start, or saved by this process): the only
    /// one a renewal is ever sent from.
    stored: Option<IssuedIdentity>,
    /// A newer identity the server issued that could not be saved yet. It serves the outputs
    /// (impersonated certificates do not move the generation) but is never renewed from: a
    /// restart would present the stored one, which the server would then have moved past.
    unsaved: Option<IssuedIdentity>,
    outputs: Vec<OutputState>,
}

impl State {
    /// The bot identity in use: the unsaved one if any, else the stored one.
    fn bot(&self) -> Option<&IssuedIdentity> {
        self.unsaved.as_ref().or(self.stored.as_ref())
    }
}

/// How saving the renewed identity is going.
enum Saving {
    /// The save runs (fsyncs) while the outputs are fetched and written.
    Running(tokio::task::JoinHandle<Result<()>>),
    /// The identity in use could not be saved (again); no renewal was sent.
    Failed(BotError),
}

#[derive(Clone)]
struct OutputState {
    issued: IssuedIdentity,
    artifacts: Arc<Artifacts>,
    certified: Arc<CertifiedKey>,
}

struct Inner {
    auth_server: String,
    token: Option<TokenSecret>,
    pins: Vec<machine_id_client::CaPin>,
    ca_path: Option<PathBuf>,
    insecure: bool,
    certificate_ttl: Duration,
    renewal_interval: Duration,
    oneshot: bool,
    storage: Storage,
    outputs: Vec<Output>,
    clock: Arc<dyn Clock>,
    tbot_path: PathBuf,
    join_method: JoinMethod,
    aws_env: Option<AwsEnv>,
    state: RwLock<State>,
    metrics: Metrics,
    /// Why the renewed identity could not be saved, while it cannot.
    save_error: Mutex<Option<String>>,
    renew_now: Notify,
    stop: watch::Sender<bool>,
}

/// A numbers-only view of the bot's health, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Successful renewals (identity and every output) since start.
    pub renewals: u64,
    /// Failed renewal attempts since start.
    pub failures: u64,
    /// Whether the last attempt succeeded.
    pub last_ok: bool,
    /// Seconds until the earliest output certificate expires (negative: expired; `None`:
    /// nothing written yet).
    pub seconds_until_expiry: Option<i64>,
    /// Seconds until the bot's own identity expires.
    pub identity_seconds_until_expiry: Option<i64>,
    /// Whether the bot holds a renewed identity of its own that it could not save (a full or
    /// read-only data directory): outputs keep being renewed from it, the bot identity is
    /// not renewed again until it is saved. See [`Bot::identity_save_error`].
    pub identity_unsaved: bool,
    /// Whether the outputs hold valid certificates, the bot's identity is saved, and either
    /// the last renewal succeeded or the certificates are far (more than half their TTL)
    /// from expiry.
    pub ready: bool,
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
            .field("auth_server", &self.inner.auth_server)
            .field("storage", &self.inner.storage.describe())
            .finish_non_exhaustive()
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// `host` of `host:port` (`[v6]:port` → `v6`).
fn host_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    }
}

impl Bot {
    /// A builder.
    pub fn builder() -> BotBuilder {
        BotBuilder::default()
    }

    /// Whether this bot writes once and stops.
    pub fn is_oneshot(&self) -> bool {
        self.inner.oneshot
    }

    /// The identity of the first output's current certificate (the certificate a service
    /// presents), or `None` before the first renewal.
    pub fn current_identity(&self) -> Option<Identity> {
        self.read_state(|s| s.outputs.first().map(|o| o.issued.identity.clone()))
    }

    /// The bot's own renewable identity, or `None` before the first join.
    pub fn bot_identity(&self) -> Option<Identity> {
        self.read_state(|s| s.bot().map(|b| b.identity.clone()))
    }

    /// The files of output `index` as last written.
    pub fn current_artifacts(&self, index: usize) -> Option<Arc<Artifacts>> {
        self.read_state(|s| s.outputs.get(index).map(|o| o.artifacts.clone()))
    }

    /// The first output's key and certificate, for a rustls client (see
    /// [`Bot::rustls_client_config`]).
    pub(crate) fn current_certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.read_state(|s| s.outputs.first().map(|o| o.certified.clone()))
    }

    /// The cluster's TLS CA certificates (DER) as of the last renewal.
    pub fn current_ca_certs(&self) -> Vec<Vec<u8>> {
        self.read_state(|s| {
            s.outputs
                .first()
                .map(|o| o.issued.certs.tls_ca_certs.clone())
                .or_else(|| s.bot().map(|b| b.certs.tls_ca_certs.clone()))
                .unwrap_or_default()
        })
    }

    fn read_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self
            .inner
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Health numbers.
    pub fn status(&self) -> Status {
        let m = &self.inner.metrics;
        let now = self.inner.clock.now().unix_timestamp();
        let left = |v: i64| (v != 0).then(|| v - now);
        let seconds_until_expiry = left(m.expires.load(Ordering::Relaxed));
        let last_ok = m.last_ok.load(Ordering::Relaxed);
        let ttl = i64::try_from(self.inner.certificate_ttl.as_secs()).unwrap_or(i64::MAX);
        let identity_unsaved = m.identity_unsaved.load(Ordering::Relaxed);
        let ready = !identity_unsaved
            && match seconds_until_expiry {
                Some(s) => s > 0 && (last_ok || s > ttl / 2),
                None => false,
            };
        Status {
            renewals: m.renewals.load(Ordering::Relaxed),
            failures: m.failures.load(Ordering::Relaxed),
            last_ok,
            seconds_until_expiry,
            identity_seconds_until_expiry: left(m.identity_expires.load(Ordering::Relaxed)),
            identity_unsaved,
            ready,
        }
    }

    /// Why the bot's renewed identity could not be saved, while it cannot (what `/readyz`
    /// says); `None` when the identity in use is the stored one.
    pub fn identity_save_error(&self) -> Option<String> {
        self.inner
            .save_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Finishes writes to directory destinations that a killed tbot left half-renamed (see
    /// `DirectoryDestination::recover`), so each set is whole before anything else happens.
    /// [`Bot::run`] does this first, before contacting the auth server; failures are logged.
    pub async fn recover_destinations(&self) {
        for out in &self.inner.outputs {
            let dest = out.destination.clone();
            match tokio::task::spawn_blocking(move || dest.recover()).await {
                Ok(Ok(true)) => {
                    tracing::info!(output = %out.describe, "finished a destination write that was interrupted");
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(output = %out.describe, error = %e, "cannot finish an interrupted destination write; the next write replaces the set");
                }
                Err(e) => {
                    tracing::warn!(output = %out.describe, error = %e, "recovering the destination failed");
                }
            }
        }
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
    /// every interval until [`Bot::stop`]. Transient failures (auth server unreachable, lost
    /// races, destination writes) are retried with capped exponential backoff and jitter,
    /// keeping the last good files; a bot that is locked or deleted, or whose identity expired
    /// with no token to join again, ends with the error.
    pub async fn run(&self) -> Result<()> {
        self.recover_destinations().await;
        let mut stop = self.inner.stop.subscribe();
        let max = self.inner.renewal_interval.clamp(RETRY_BASE, RETRY_MAX);
        let mut backoff = Backoff::new(RETRY_BASE, max);
        // The first renewal: oneshot gives up after a few transient failures.
        loop {
            match self.renew().await {
                Ok(()) => break,
                Err(e) if e.is_transient() => {
                    if self.inner.oneshot && backoff.attempts() + 1 >= ONESHOT_ATTEMPTS {
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
        if self.inner.oneshot {
            tracing::info!("oneshot: outputs written, exiting");
            return Ok(());
        }
        let mut delay = self.inner.renewal_interval;
        loop {
            if wait(&mut stop, delay, Some(&self.inner.renew_now)).await {
                tracing::info!("stopping");
                return Ok(());
            }
            match self.renew().await {
                Ok(()) => {
                    backoff.reset();
                    delay = self.inner.renewal_interval;
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
        let m = &self.inner.metrics;
        match &result {
            Ok(()) => {
                m.renewals.fetch_add(1, Ordering::Relaxed);
                m.last_ok.store(true, Ordering::Relaxed);
            }
            Err(_) => {
                m.failures.fetch_add(1, Ordering::Relaxed);
                m.last_ok.store(false, Ordering::Relaxed);
            }
        }
        result
    }

    async fn renew_inner(&self) -> Result<()> {
        let (bot, saving) = self.renew_identity().await?;
        // The identity is saved (fsyncs) while the outputs are fetched and written.
        let outputs = self.renew_outputs(&bot).await;
        let saved = match saving {
            Saving::Running(task) => {
                let result = task
                    .await
                    .map_err(|e| BotError::Internal(format!("saving the identity: {e}")))
                    .and_then(|r| r);
                self.after_save(&bot, result)
            }
            Saving::Failed(e) => Err(e),
        };
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

    /// Records how saving `bot` went: on success it is the stored identity; on failure it
    /// stays in memory, unsaved, and the failure is reported loudly.
    fn after_save(&self, bot: &IssuedIdentity, result: Result<()>) -> Result<()> {
        let mut state = self
            .inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(()) => {
                state.stored = Some(bot.clone());
                state.unsaved = None;
                drop(state);
                let was = self
                    .inner
                    .metrics
                    .identity_unsaved
                    .swap(false, Ordering::Relaxed);
                *self
                    .inner
                    .save_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                if was {
                    tracing::info!(storage = %self.inner.storage.describe(), generation = bot.identity.generation, "saved the renewed bot identity; identity renewals resume");
                }
                Ok(())
            }
            Err(e) => {
                state.unsaved = Some(bot.clone());
                drop(state);
                Err(self.report_save_failure(bot, e))
            }
        }
    }

    fn report_save_failure(&self, bot: &IssuedIdentity, e: BotError) -> BotError {
        let storage = self.inner.storage.describe();
        let message = format!(
            "cannot save the renewed bot identity (generation {}) to the {storage}: {e}; it is kept in memory and serves the outputs, but the bot identity is not renewed again until it is saved (the save is retried at every renewal); fix the cause, e.g. free space on that filesystem, before the identity expires at {}",
            bot.identity.generation,
            rfc3339(bot.identity.expires),
        );
        tracing::error!("{message}");
        self.inner
            .metrics
            .identity_unsaved
            .store(true, Ordering::Relaxed);
        *self
            .inner
            .save_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
        e
    }

    async fn renew_outputs(&self, bot: &IssuedIdentity) -> Result<()> {
        let client = Client::connect(&self.inner.auth_server, &bot.client_identity()?)
            .await
            .map_err(refusal)?;
        let ping = client.ping().await.map_err(refusal)?;
        let host_ca_keys = self.host_ca_keys(&client, bot).await;
        let mut default_roles: Option<Vec<String>> = None;
        let mut states = Vec::with_capacity(self.inner.outputs.len());
        for out in &self.inner.outputs {
            let roles = if out.roles.is_empty() {
                if default_roles.is_none() {
                    default_roles = Some(self.impersonable_roles(&client, bot).await?);
                }
                default_roles.clone().unwrap_or_default()
            } else {
                out.roles.clone()
            };
            states.push(
                self.write_output(&client, out, &roles, &ping, &host_ca_keys)
                    .await?,
            );
        }
        let earliest = states
            .iter()
            .map(|s| s.issued.identity.expires.unix_timestamp())
            .min()
            .unwrap_or(bot.identity.expires.unix_timestamp());
        self.inner
            .metrics
            .expires
            .store(earliest, Ordering::Relaxed);
        let mut state = self
            .inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        state.outputs = states;
        Ok(())
    }

    /// Makes sure the bot holds a fresh renewable identity: renews the stored one, or joins
    /// with the token. Returns it with how saving it goes.
    ///
    /// The rule that keeps the server and the disk together: a renewal is sent only from the
    /// identity that is durably stored, with a key durably recorded as pending for it first,
    /// so any retry (after a lost answer or a crash) is the same request, which the server
    /// answers idempotently. A renewed identity that could not be saved serves the outputs
    /// but is never renewed from; its save is retried first at every renewal.
    async fn renew_identity(&self) -> Result<(IssuedIdentity, Saving)> {
        let inner = &self.inner;
        let token_hash = inner
            .token
            .as_ref()
            .map(|t| machine_id_join::token_hash(t.expose()));
        if let Some(unsaved) = self.read_state(|s| s.unsaved.clone()) {
            let result = self.save(&unsaved, token_hash.clone()).await;
            if let Err(e) = self.after_save(&unsaved, result) {
                // An iam bot's renewal is a fresh join, which no generation check judges:
                // joining again from an unsaved identity cannot get it locked.
                if inner.join_method != JoinMethod::Iam {
                    return Ok((unsaved, Saving::Failed(e)));
                }
            }
        }
        let current = match self.read_state(|s| s.stored.clone()) {
            Some(b) => Some(b),
            None => self.load_stored(token_hash.as_deref())?,
        };
        let now = inner.clock.now();
        let new = match current {
            // IAM certificates are not renewable: every renewal is a fresh join.
            _ if inner.join_method == JoinMethod::Iam => self.join().await?,
            Some(cur) if cur.identity.expires > now => {
                let renewed = self.renew_with(&cur).await?;
                tracing::info!(
                    user = %renewed.identity.username,
                    generation = renewed.identity.generation,
                    expires = %rfc3339(renewed.identity.expires),
                    "renewed the bot identity"
                );
                renewed
            }
            Some(expired) => {
                let expired_at = rfc3339(expired.identity.expires);
                tracing::warn!(expired = %expired_at, "the bot identity has expired; joining again");
                match self.join().await {
                    Ok(id) => id,
                    Err(e) if e.is_transient() => return Err(e),
                    Err(e) => {
                        return Err(BotError::IdentityExpired {
                            expired: expired_at,
                            cause: e.to_string(),
                        });
                    }
                }
            }
            None => self.join().await?,
        };
        // The server has moved the generation on: hold the new identity (unsaved) before
        // anything else can fail, so the outputs use it even if the save fails.
        inner
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .unsaved = Some(new.clone());
        inner
            .metrics
            .identity_expires
            .store(new.identity.expires.unix_timestamp(), Ordering::Relaxed);
        let stored = new
            .to_stored(&token_hash.unwrap_or_else(|| self.stored_token_hash().unwrap_or_default()));
        let storage = inner.storage.clone();
        let save = tokio::task::spawn_blocking(move || storage.save(&stored));
        Ok((new, Saving::Running(save)))
    }

    /// Saves `id` (blocking work off the runtime).
    async fn save(&self, id: &IssuedIdentity, token_hash: Option<String>) -> Result<()> {
        let stored = id
            .to_stored(&token_hash.unwrap_or_else(|| self.stored_token_hash().unwrap_or_default()));
        let storage = self.inner.storage.clone();
        tokio::task::spawn_blocking(move || storage.save(&stored))
            .await
            .map_err(|e| BotError::Internal(format!("saving the identity: {e}")))?
    }

    fn stored_token_hash(&self) -> Option<String> {
        self.inner
            .storage
            .load()
            .ok()
            .flatten()
            .map(|s| s.token_hash)
    }

    /// The stored identity, unless the token changed since it joined (then a fresh join).
    fn load_stored(&self, token_hash: Option<&str>) -> Result<Option<IssuedIdentity>> {
        let Some(stored) = self.inner.storage.load()? else {
            return Ok(None);
        };
        if let Some(h) = token_hash
            && h != stored.token_hash
        {
            tracing::info!(storage = %self.inner.storage.describe(), "the token differs from the one that joined; joining again with the new token");
            return Ok(None);
        }
        match IssuedIdentity::from_stored(&stored) {
            Ok(id) => {
                tracing::info!(
                    user = %id.identity.username,
                    generation = id.identity.generation,
                    expires = %rfc3339(id.identity.expires),
                    "using the stored bot identity"
                );
                self.inner
                    .state
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .stored = Some(id.clone());
                Ok(Some(id))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the stored identity is unusable; joining again");
                Ok(None)
            }
        }
    }

    /// Renews the stored identity `cur` with its pending key (written first if there is
    /// none), so that every retry of this renewal is the same request.
    async fn renew_with(&self, cur: &IssuedIdentity) -> Result<IssuedIdentity> {
        let key = self.pending_key(cur).await?;
        let client = Client::connect(&self.inner.auth_server, &cur.client_identity()?)
            .await
            .map_err(refusal)?;
        let certs = client
            .generate_user_certs(
                &key.public_key().to_spki_der(),
                self.inner.certificate_ttl,
                &[],
            )
            .await
            .map_err(refusal)?;
        IssuedIdentity::new(key, certs)
    }

    /// The key the renewal of `cur` certifies: the pending one recorded for `cur`'s
    /// certificate (a retry after a lost answer or a crash), else a new one, durably recorded
    /// before it is used. If it cannot be recorded, nothing is sent.
    async fn pending_key(&self, cur: &IssuedIdentity) -> Result<PrivateKey> {
        use sha2::Digest as _;
        let parent = hex::encode(sha2::Sha256::digest(&cur.certs.tls_cert));
        let storage = self.inner.storage.clone();
        let lookup = parent.clone();
        let found = tokio::task::spawn_blocking(move || storage.load_pending_key(&lookup))
            .await
            .map_err(|e| BotError::Internal(format!("reading the pending key: {e}")))??;
        if let Some(pem) = found {
            match PrivateKey::from_pem(&pem) {
                Ok(key) => {
                    tracing::info!(
                        generation = cur.identity.generation,
                        "retrying the renewal with the pending key of an earlier attempt"
                    );
                    return Ok(key);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the pending renewal key is unreadable; using a new one");
                }
            }
        }
        let key = new_key()?;
        let storage = self.inner.storage.clone();
        let pem = key.to_pem();
        tokio::task::spawn_blocking(move || storage.save_pending_key(&parent, &pem))
            .await
            .map_err(|e| BotError::Internal(format!("writing the pending key: {e}")))?
            .map_err(|e| {
                tracing::error!(error = %e, storage = %self.inner.storage.describe(), "cannot record the key of the next renewal, so the renewal was not sent (the auth server did not move); free space on the data directory's filesystem (or fix what the error names)");
                e
            })?;
        Ok(key)
    }

    /// The CAs to verify the auth server against on the first join.
    async fn join_cas(&self) -> Result<Vec<Vec<u8>>> {
        let inner = &self.inner;
        if !inner.pins.is_empty() {
            return Ok(bootstrap_ca_certs(&inner.auth_server, &inner.pins).await?);
        }
        if let Some(p) = &inner.ca_path {
            let bytes = crate::config::read_user_file(
                p,
                crate::bounded::CA_FILE_LIMIT,
                "CA file",
                "point --ca-path (or onboarding.ca_path) at the PEM file of the cluster's CA certificates",
            )
            .map_err(|e| match e {
                crate::config::UserFileError::Io(e) => {
                    BotError::Config(format!("cannot read the CA file {}: {e}", p.display()))
                }
                crate::config::UserFileError::Bot(b) => b,
            })?;
            let pem = String::from_utf8_lossy(&bytes);
            return certs_from_pem(&pem).map_err(|e| BotError::Invalid {
                what: format!("CA file {}", p.display()),
                message: e.to_string(),
            });
        }
        if !inner.insecure {
            return Err(BotError::NoTrustAnchor);
        }
        tracing::warn!(addr = %inner.auth_server, "--insecure: trusting whatever CA the auth server presents");
        Ok(fetch_ca_certs_unverified(&inner.auth_server).await?)
    }

    /// Joins with the token.
    async fn join(&self) -> Result<IssuedIdentity> {
        let inner = &self.inner;
        let Some(token) = &inner.token else {
            return Err(BotError::NoToken {
                storage: inner.storage.describe(),
            });
        };
        // An IAM bot joins at every renewal: once it holds certificates it trusts the CAs
        // they came with, as a renewal does, rather than bootstrapping from the pins again.
        let held = (inner.join_method == JoinMethod::Iam)
            .then(|| self.read_state(|s| s.bot().map(|b| b.certs.tls_ca_certs.clone())))
            .flatten()
            .filter(|cas| !cas.is_empty());
        let cas = match held {
            Some(cas) => cas,
            None => self.join_cas().await?,
        };
        let client = Client::connect_with_cas(&inner.auth_server, &cas).await?;
        let key = new_key()?;
        let spki = key.public_key().to_spki_der();
        let certs = match inner.join_method {
            JoinMethod::Token => {
                client
                    .register_using_token(token, &spki, inner.certificate_ttl)
                    .await
            }
            JoinMethod::Iam => {
                // Credentials first: a machine without any fails here, before the server
                // spends a challenge on it.
                let env = inner.aws_env.clone().unwrap_or_else(AwsEnv::from_process);
                let (creds, source) = iam::load_credentials(&env).await.map_err(BotError::Aws)?;
                let target = iam::resolve_sts_target(&env);
                tracing::debug!(source = ?source, sts = %target.url, region = %target.region, "signing sts:GetCallerIdentity");
                client
                    .register_using_iam(token.expose(), &spki, inner.certificate_ttl, |challenge| {
                        let signed = iam::sign_identity_request(
                            &creds,
                            &target,
                            &challenge,
                            std::time::SystemTime::now(),
                        );
                        std::future::ready(signed)
                    })
                    .await
            }
        }
        .map_err(|e| match e {
                ClientError::NotFound(m)
                | ClientError::PermissionDenied(m)
                | ClientError::InvalidArgument(m)
                | ClientError::Unauthenticated(m) => BotError::JoinRefused(m),
                other => BotError::Client(other),
            })?;
        let id = IssuedIdentity::new(key, certs)?;
        tracing::info!(
            user = %id.identity.username,
            generation = id.identity.generation,
            expires = %rfc3339(id.identity.expires),
            "joined the cluster"
        );
        Ok(id)
    }

    /// The host CA keys for known_hosts and ssh_config.
    async fn host_ca_keys(&self, client: &Client, bot: &IssuedIdentity) -> Vec<HostCaKey> {
        let lines = match client.export_ca(machine_id_types::ca_kind::HOST).await {
            Ok(ca) => ca.ssh_public_keys,
            Err(e) => {
                tracing::debug!(error = %e, "cannot export the host CA; using the last SSH CA key of the renewal");
                bot.certs.ssh_ca_keys.last().cloned().into_iter().collect()
            }
        };
        lines
            .iter()
            .filter_map(|l| match HostCaKey::parse(l) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a host CA key");
                    None
                }
            })
            .collect()
    }

    /// Every role the bot may impersonate: the `impersonate` roles of its own role, which
    /// every caller may read.
    async fn impersonable_roles(
        &self,
        client: &Client,
        bot: &IssuedIdentity,
    ) -> Result<Vec<String>> {
        let mut roles = Vec::new();
        for own in &bot.identity.roles {
            let role = client.get_role(own).await.map_err(refusal)?;
            for r in role
                .spec
                .allow
                .impersonate
                .map(|i| i.roles)
                .unwrap_or_default()
            {
                if !roles.contains(&r) {
                    roles.push(r);
                }
            }
        }
        if roles.is_empty() {
            return Err(BotError::Config(format!(
                "{} may impersonate no role; add the bot again with tctl bots add --roles=...",
                bot.identity.username
            )));
        }
        Ok(roles)
    }

    /// Gets impersonated certificates for `roles` and writes them to `out`.
    async fn write_output(
        &self,
        client: &Client,
        out: &Output,
        roles: &[String],
        ping: &PingInfo,
        host_ca_keys: &[HostCaKey],
    ) -> Result<OutputState> {
        let key = new_key()?;
        let certs = client
            .generate_user_certs(
                &key.public_key().to_spki_der(),
                self.inner.certificate_ttl,
                roles,
            )
            .await
            .map_err(refusal)?;
        let issued = IssuedIdentity::new(key, certs)?;
        tracing::debug!(output = %out.describe, "got the output certificates");
        let mut artifacts = issued.to_artifacts();
        let proxy_addr = ping
            .proxy_public_addr
            .clone()
            .unwrap_or_else(|| self.inner.auth_server.clone());
        let proxy_host = host_of(&proxy_addr);
        artifacts.known_hosts =
            known_hosts(&ping.cluster_name, proxy_host, host_ca_keys).into_bytes();
        if let Some(dir) = &out.dir {
            artifacts.ssh_config = ssh_config(&SshConfigParams {
                cluster: &ping.cluster_name,
                proxy_host,
                proxy_addr: &proxy_addr,
                destination_dir: dir,
                tbot_path: &self.inner.tbot_path,
                host_ca_keys,
            })?
            .into_bytes();
        }
        let certified = crate::tls::certified_key(&issued)?;
        let artifacts = Arc::new(artifacts);
        let dest = out.destination.clone();
        let to_write = artifacts.clone();
        tokio::task::spawn_blocking(move || dest.write(&to_write))
            .await
            .map_err(|e| BotError::Internal(format!("writing the destination: {e}")))??;
        tracing::info!(
            output = %out.describe,
            roles = %issued.identity.roles.join(","),
            expires = %rfc3339(issued.identity.expires),
            "wrote the output certificates"
        );
        Ok(OutputState {
            issued,
            artifacts,
            certified,
        })
    }
}

fn new_key() -> Result<PrivateKey> {
    PrivateKey::generate(Suite::Default)
        .map_err(|e| BotError::Internal(format!("generating a key: {e}")))
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

    #[test]
    fn host_of_strips_ports() {
        assert_eq!(host_of("proxy.example.com:3080"), "proxy.example.com");
        assert_eq!(host_of("127.0.0.1:3025"), "127.0.0.1");
        assert_eq!(host_of("[::1]:3025"), "::1");
        assert_eq!(host_of("host"), "host");
    }

    #[test]
    fn build_needs_an_auth_server() {
        let e = Bot::builder().build().unwrap_err().to_string();
        assert!(e.contains("auth server"), "{e}");
        let e = Bot::builder()
            .auth_server("a:1")
            .ca_pins(vec!["md5:00".into()])
            .build()
            .unwrap_err()
            .to_string();
        assert!(e.contains("algorithm"), "{e}");
    }

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
