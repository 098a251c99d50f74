//! The bot's own identity: trusting the cluster on the first join (CA pins, a CA file or
//! `--insecure`), joining (token or `iam`), renewing from the durably stored identity with
//! its pending key, and saving what the server issued.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use machine_id_client::{
    AuthAddrs, BotCerts, CaPin, Client, ClientError, OutputRequest, bootstrap_ca_certs_with_clock,
    ca_pins, cluster_ca_pins_unverified, fetch_ca_certs_unverified,
};
use machine_id_join::iam::{AwsEnv, IamProver};
use machine_id_join::token::TokenSecret;
use machine_id_mint::{PrivateKey, certs_from_pem};
use machine_id_types::{Clock, JoinMethod};

use crate::error::refusal;
use crate::identity::{IssuedIdentity, new_key};
use crate::metrics::IdentityHealth;
use crate::storage::Storage;
use crate::{BotError, Result};

/// What a renewal brought for the outputs.
pub(crate) enum OutputsAnswer {
    /// Their certificates, from the renewal's own call.
    Given(BotCerts),
    /// Nothing yet (a join, or a renewed identity held unsaved): ask in one call.
    Ask,
    /// The server has no one-call cycle: ask per output, as before it.
    PerCall,
}

/// How the bot joins and whom it trusts on the first join.
pub(crate) struct JoinSettings {
    /// Shared with the outputs, so both start at the server that answered last.
    pub(crate) auth_server: AuthAddrs,
    pub(crate) token: Option<TokenSecret>,
    pub(crate) pins: Vec<CaPin>,
    pub(crate) ca_path: Option<PathBuf>,
    pub(crate) insecure: bool,
    pub(crate) certificate_ttl: Duration,
    pub(crate) join_method: JoinMethod,
    pub(crate) aws_env: Option<AwsEnv>,
}

/// The bot identities held in memory.
#[derive(Default)]
struct Held {
    /// The bot identity durably stored (loaded at start, or saved by this process): the only
    /// one a renewal is ever sent from.
    stored: Option<IssuedIdentity>,
    /// A newer identity the server issued that could not be saved yet. It serves the outputs
    /// (impersonated certificates do not move the generation) but is never renewed from: a
    /// restart would present the stored one, which the server would then have moved past.
    unsaved: Option<IssuedIdentity>,
}

impl Held {
    /// The bot identity in use: the unsaved one if any, else the stored one.
    fn bot(&self) -> Option<&IssuedIdentity> {
        self.unsaved.as_ref().or(self.stored.as_ref())
    }
}

/// How saving the renewed identity is going.
pub(crate) enum Saving {
    /// The save runs (fsyncs) while the outputs are fetched and written.
    Running(tokio::task::JoinHandle<Result<()>>),
    /// The identity in use could not be saved (again); no renewal was sent.
    Failed(BotError),
}

/// The bot's own renewable identity: where it comes from, where it is kept, how it is doing.
pub(crate) struct Onboarding {
    settings: JoinSettings,
    storage: Storage,
    clock: Arc<dyn Clock>,
    held: RwLock<Held>,
    /// Why the renewed identity could not be saved, while it cannot.
    save_error: Mutex<Option<String>>,
    /// Unix seconds the identity obtained last expires (0: none yet).
    expires: AtomicI64,
    /// Set while the bot holds a renewed identity it could not save.
    unsaved: AtomicBool,
}

impl Onboarding {
    /// The identity of a bot joining as `settings` say, kept in `storage`, judging expiry by
    /// `clock`.
    pub(crate) fn new(settings: JoinSettings, storage: Storage, clock: Arc<dyn Clock>) -> Self {
        Self {
            settings,
            storage,
            clock,
            held: RwLock::default(),
            save_error: Mutex::default(),
            expires: AtomicI64::new(0),
            unsaved: AtomicBool::new(false),
        }
    }

    /// The auth servers, with their failover state.
    pub(crate) fn auth_server(&self) -> &AuthAddrs {
        &self.settings.auth_server
    }

    /// Where the identity is kept.
    pub(crate) fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The bot identity in use (the unsaved one if any, else the stored one).
    pub(crate) fn bot(&self) -> Option<IssuedIdentity> {
        self.held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .bot()
            .cloned()
    }

    /// Why the renewed identity could not be saved, while it cannot.
    pub(crate) fn save_error(&self) -> Option<String> {
        self.save_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// What the identity contributes to the bot's status.
    pub(crate) fn health(&self) -> IdentityHealth {
        let expires = self.expires.load(Ordering::Relaxed);
        IdentityHealth {
            expires: (expires != 0).then_some(expires),
            unsaved: self.unsaved.load(Ordering::Relaxed),
        }
    }

    fn hold(&self) -> std::sync::RwLockWriteGuard<'_, Held> {
        self.held.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes sure the bot holds a fresh renewable identity: renews the stored one, or joins
    /// with the token. Returns it with how saving it goes.
    ///
    /// The rule that keeps the server and the disk together: a renewal is sent only from the
    /// identity that is durably stored, with a key durably recorded as pending for it first,
    /// so any retry (after a lost answer or a crash) is the same request, which the server
    /// answers idempotently. A renewed identity that could not be saved serves the outputs
    /// but is never renewed from; its save is retried first at every renewal.
    ///
    /// A renewal asks for `outputs` in the same call, and returns their answer; after a join,
    /// or from a server without that call, the outputs are still to be asked for.
    pub(crate) async fn renew_identity(
        &self,
        outputs: &[OutputRequest],
    ) -> Result<(IssuedIdentity, Saving, OutputsAnswer)> {
        let iam = self.settings.join_method == JoinMethod::Iam;
        let token_hash = self
            .settings
            .token
            .as_ref()
            .map(|t| machine_id_join::token_hash(t.expose()));
        let unsaved = self
            .held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .unsaved
            .clone();
        if let Some(unsaved) = unsaved {
            let result = self.save(&unsaved, token_hash.clone()).await;
            if let Err(e) = self.after_save(&unsaved, result) {
                // An iam bot's renewal is a fresh join, which no generation check judges:
                // joining again from an unsaved identity cannot get it locked.
                if !iam {
                    return Ok((unsaved, Saving::Failed(e), OutputsAnswer::Ask));
                }
            }
        }
        let stored = self
            .held
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .stored
            .clone();
        let current = match stored {
            Some(b) => Some(b),
            None => self.load_stored(token_hash.as_deref())?,
        };
        let now = self.clock.now();
        let mut answer = OutputsAnswer::Ask;
        let new = match current {
            // IAM certificates are not renewable: every renewal is a fresh join.
            _ if iam => self.join().await?,
            Some(cur) if cur.identity.expires > now => {
                let renewed = match self.renew_with(&cur, outputs).await {
                    Ok((renewed, outputs)) => {
                        answer = outputs;
                        renewed
                    }
                    Err(e) => return Err(self.explain_rotation(&cur, e).await),
                };
                tracing::info!(
                    user = %renewed.identity.username,
                    generation = renewed.identity.generation,
                    expires = %renewed.expires_rfc3339(),
                    "renewed the bot identity"
                );
                renewed
            }
            Some(expired) => {
                let expired_at = expired.expires_rfc3339();
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
        self.hold().unsaved = Some(new.clone());
        self.expires
            .store(new.identity.expires.unix_timestamp(), Ordering::Relaxed);
        let stored = new
            .to_stored(&token_hash.unwrap_or_else(|| self.stored_token_hash().unwrap_or_default()));
        let storage = self.storage.clone();
        let save = tokio::task::spawn_blocking(move || storage.save(&stored));
        Ok((new, Saving::Running(save), answer))
    }

    /// Waits for `saving` of `bot` to end and records how it went.
    pub(crate) async fn finish_save(&self, bot: &IssuedIdentity, saving: Saving) -> Result<()> {
        match saving {
            Saving::Running(task) => {
                let result = task
                    .await
                    .map_err(|e| BotError::Internal(format!("saving the identity: {e}")))
                    .and_then(|r| r);
                self.after_save(bot, result)
            }
            Saving::Failed(e) => Err(e),
        }
    }

    /// Records how saving `bot` went: on success it is the stored identity; on failure it
    /// stays in memory, unsaved, and the failure is reported loudly.
    fn after_save(&self, bot: &IssuedIdentity, result: Result<()>) -> Result<()> {
        let mut held = self.hold();
        match result {
            Ok(()) => {
                held.stored = Some(bot.clone());
                held.unsaved = None;
                drop(held);
                let was = self.unsaved.swap(false, Ordering::Relaxed);
                *self
                    .save_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                if was {
                    tracing::info!(storage = %self.storage.describe(), generation = bot.identity.generation, "saved the renewed bot identity; identity renewals resume");
                }
                Ok(())
            }
            Err(e) => {
                held.unsaved = Some(bot.clone());
                drop(held);
                Err(self.report_save_failure(bot, e))
            }
        }
    }

    fn report_save_failure(&self, bot: &IssuedIdentity, e: BotError) -> BotError {
        let storage = self.storage.describe();
        let message = format!(
            "cannot save the renewed bot identity (generation {}) to the {storage}: {e}; it is kept in memory and serves the outputs, but the bot identity is not renewed again until it is saved (the save is retried at every renewal); fix the cause, e.g. free space on that filesystem, before the identity expires at {}",
            bot.identity.generation,
            bot.expires_rfc3339(),
        );
        tracing::error!("{message}");
        self.unsaved.store(true, Ordering::Relaxed);
        *self
            .save_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(message);
        e
    }

    /// Saves `id` (blocking work off the runtime).
    async fn save(&self, id: &IssuedIdentity, token_hash: Option<String>) -> Result<()> {
        let stored = id
            .to_stored(&token_hash.unwrap_or_else(|| self.stored_token_hash().unwrap_or_default()));
        let storage = self.storage.clone();
        tokio::task::spawn_blocking(move || storage.save(&stored))
            .await
            .map_err(|e| BotError::Internal(format!("saving the identity: {e}")))?
    }

    fn stored_token_hash(&self) -> Option<String> {
        self.storage.load().ok().flatten().map(|s| s.token_hash)
    }

    /// The stored identity, unless the token changed since it joined (then a fresh join).
    fn load_stored(&self, token_hash: Option<&str>) -> Result<Option<IssuedIdentity>> {
        let Some(stored) = self.storage.load()? else {
            return Ok(None);
        };
        if let Some(h) = token_hash
            && h != stored.token_hash
        {
            tracing::info!(storage = %self.storage.describe(), "the token differs from the one that joined; joining again with the new token");
            return Ok(None);
        }
        match IssuedIdentity::from_stored(&stored) {
            Ok(id) => {
                tracing::info!(
                    user = %id.identity.username,
                    generation = id.identity.generation,
                    expires = %id.expires_rfc3339(),
                    "using the stored bot identity"
                );
                self.hold().stored = Some(id.clone());
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
    ///
    /// `outputs` are asked for in the same call (one connection, one call per cycle) and their
    /// answer returned; [`OutputsAnswer::PerCall`] from a server without that call, which
    /// renews alone.
    async fn renew_with(
        &self,
        cur: &IssuedIdentity,
        outputs: &[OutputRequest],
    ) -> Result<(IssuedIdentity, OutputsAnswer)> {
        let key = self.pending_key(cur).await?;
        let spki = key.public_key().to_spki_der();
        let ttl = self.settings.certificate_ttl;
        let client = cur
            .connect(&self.settings.auth_server, self.clock.as_ref())
            .await?;
        match client.generate_bot_certs(Some((&spki, ttl)), outputs).await {
            Ok(mut answer) => {
                let certs = answer.identity.take().ok_or_else(|| {
                    BotError::Internal("the renewal's answer holds no identity".into())
                })?;
                Ok((
                    IssuedIdentity::new(key, certs)?,
                    OutputsAnswer::Given(answer),
                ))
            }
            Err(e) if e.is_unimplemented() => {
                tracing::debug!("the auth server predates GenerateBotCerts; renewing alone");
                let certs = client
                    .generate_user_certs(&spki, ttl, &[])
                    .await
                    .map_err(refusal)?;
                Ok((IssuedIdentity::new(key, certs)?, OutputsAnswer::PerCall))
            }
            Err(e) => Err(refusal(e)),
        }
    }

    /// The key the renewal of `cur` certifies: the pending one recorded for `cur`'s
    /// certificate (a retry after a lost answer or a crash), else a new one, durably recorded
    /// before it is used. If it cannot be recorded, nothing is sent.
    async fn pending_key(&self, cur: &IssuedIdentity) -> Result<PrivateKey> {
        use sha2::Digest as _;
        let parent = hex::encode(sha2::Sha256::digest(&cur.certs.tls_cert));
        let storage = self.storage.clone();
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
        let storage = self.storage.clone();
        let pem = key.to_pem();
        tokio::task::spawn_blocking(move || storage.save_pending_key(&parent, &pem))
            .await
            .map_err(|e| BotError::Internal(format!("writing the pending key: {e}")))?
            .map_err(|e| {
                tracing::error!(error = %e, storage = %self.storage.describe(), "cannot record the key of the next renewal, so the renewal was not sent (the auth server did not move); free space on the data directory's filesystem (or fix what the error names)");
                e
            })?;
        Ok(key)
    }

    /// Turns the failure of a renewal from `cur` into [`BotError::CaRotatedWhileOffline`] when
    /// the cluster's CAs moved on without the bot: the server rejected its certificate, or
    /// it cannot verify the server's and the server's CAs (asked without verifying, only to
    /// explain) are not the ones it holds. Anything else is returned as it is.
    async fn explain_rotation(&self, cur: &IssuedIdentity, e: BotError) -> BotError {
        let bot = cur.identity.bot_name().unwrap_or("NAME").to_string();
        let storage = self.storage.describe();
        match e {
            BotError::Client(ClientError::CertificateRejected { addr, alert }) => {
                BotError::CaRotatedWhileOffline {
                    detail: format!(
                        "its certificates are signed by a CA the cluster no longer trusts: the auth server at {addr} rejected its certificate with TLS alert {alert}"
                    ),
                    bot,
                    storage,
                }
            }
            BotError::Client(ClientError::UntrustedServer { addr, message }) => {
                let theirs = match cluster_ca_pins_unverified(&addr).await {
                    Ok(p) => p,
                    Err(probe) => {
                        tracing::debug!(error = %probe, "cannot ask the auth server for its CAs");
                        return BotError::Client(ClientError::UntrustedServer { addr, message });
                    }
                };
                let ours = ca_pins(&cur.certs.tls_ca_certs).unwrap_or_default();
                let list = |p: &[CaPin]| {
                    p.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let detail = if theirs.iter().any(|t| ours.contains(t)) {
                    format!(
                        "the auth server at {addr} presents a certificate from a new TLS CA the bot never received ({message}); the rotation reached update_servers while the bot missed update_clients"
                    )
                } else {
                    format!(
                        "its certificates are signed by a CA the cluster no longer trusts: the auth server at {addr} trusts the TLS CAs {}, the bot holds {}",
                        list(&theirs),
                        list(&ours)
                    )
                };
                BotError::CaRotatedWhileOffline {
                    detail,
                    bot,
                    storage,
                }
            }
            other => other,
        }
    }

    /// The CAs to verify the auth server against on the first join.
    async fn join_cas(&self) -> Result<Vec<Vec<u8>>> {
        let s = &self.settings;
        if !s.pins.is_empty() {
            return Ok(
                bootstrap_ca_certs_with_clock(&s.auth_server, &s.pins, self.clock.as_ref()).await?,
            );
        }
        if let Some(p) = &s.ca_path {
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
        if !s.insecure {
            return Err(BotError::NoTrustAnchor);
        }
        tracing::warn!(addr = %s.auth_server, "--insecure: trusting whatever CA the auth server presents");
        Ok(fetch_ca_certs_unverified(&s.auth_server).await?)
    }

    /// Joins with the token.
    async fn join(&self) -> Result<IssuedIdentity> {
        let s = &self.settings;
        let Some(token) = &s.token else {
            return Err(BotError::NoToken {
                storage: self.storage.describe(),
            });
        };
        // An IAM bot joins at every renewal: once it holds certificates it trusts the CAs
        // they came with, as a renewal does, rather than bootstrapping from the pins again.
        let held = (s.join_method == JoinMethod::Iam)
            .then(|| self.bot().map(|b| b.certs.tls_ca_certs))
            .flatten()
            .filter(|cas| !cas.is_empty());
        let from_held = held.is_some();
        let cas = match held {
            Some(cas) => cas,
            None => self.join_cas().await?,
        };
        let client = match Client::connect_with_cas(&s.auth_server, &cas).await {
            // The CAs of the last join no longer verify the server: the cluster's TLS CA was
            // rotated while the bot was away. Its token joins again: trust comes from the
            // pins (or CA file) once more.
            Err(ClientError::UntrustedServer { .. }) if from_held => {
                tracing::info!(
                    "the CAs from the last join no longer verify the auth server (its TLS CA was rotated); establishing trust again from the CA pins"
                );
                let cas = self.join_cas().await?;
                Client::connect_with_cas(&s.auth_server, &cas).await?
            }
            r => r?,
        };
        let key = new_key()?;
        let spki = key.public_key().to_spki_der();
        let certs = match s.join_method {
            JoinMethod::Token => {
                client
                    .register_using_token(token, &spki, s.certificate_ttl)
                    .await
            }
            JoinMethod::Iam => {
                // Credentials first: a machine without any fails here, before the server
                // spends a challenge on it.
                let env = s.aws_env.clone().unwrap_or_else(AwsEnv::from_process);
                let prover = IamProver::load(&env).await.map_err(BotError::Aws)?;
                client
                    .register_using_iam(token.expose(), &spki, s.certificate_ttl, |challenge| {
                        std::future::ready(prover.sign(&challenge))
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
            expires = %id.expires_rfc3339(),
            "joined the cluster"
        );
        Ok(id)
    }
}
