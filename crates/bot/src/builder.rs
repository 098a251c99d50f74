//! [`BotBuilder`]: the settings of a [`Bot`], from code or from a [`BotConfig`], checked once
//! when the bot is built.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use machine_id_client::parse_pins;
use machine_id_destination::{Destination, MemoryDestination, SymlinkPolicy};
use machine_id_join::iam::AwsEnv;
use machine_id_join::token::TokenSecret;
use machine_id_types::{Clock, JoinMethod, SystemClock};

use crate::bot::Schedule;
use crate::config::{BotConfig, resolve_token};
use crate::onboarding::{JoinSettings, Onboarding};
use crate::outputs::{Output, Outputs};
use crate::storage::Storage;
use crate::{Bot, BotError, Result};

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
    ca_rotation_debounce: Duration,
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
            ca_rotation_debounce: crate::rotation::DEFAULT_CA_ROTATION_DEBOUNCE,
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
            .ca_rotation_debounce(
                config
                    .ca_rotation_debounce
                    .unwrap_or(crate::rotation::DEFAULT_CA_ROTATION_DEBOUNCE),
            )
            .insecure(config.insecure)
            .ca_pins(config.onboarding.ca_pins.clone())
            .join_method(config.onboarding.join_method);
        b = b.auth_servers(config.auth_addrs()?.as_slice());
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

    /// The auth server, `host:port`, or several as a comma-separated list
    /// (`"a:3025,b:3025"`): see [`machine_id_client::AuthAddrs`] for how the bot moves
    /// between them.
    pub fn auth_server(mut self, addr: impl Into<String>) -> Self {
        self.auth_server = Some(addr.into());
        self
    }

    /// Several auth servers of the cluster, tried in turn (each entry may itself be a
    /// comma-separated list).
    pub fn auth_servers<I, S>(self, addrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let list: Vec<String> = addrs.into_iter().map(|a| a.as_ref().to_string()).collect();
        self.auth_server(list.join(","))
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

    /// How long a running bot waits, after a CA rotation changed what it must hold, before
    /// renewing its identity and every output (default 10 s): coalesces the CA types moving
    /// one after another and lets every auth server see the change. Zero renews at once.
    pub fn ca_rotation_debounce(mut self, debounce: Duration) -> Self {
        self.ca_rotation_debounce = debounce;
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
        self.outputs
            .push(Output::new(Arc::new(destination), roles, n));
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
        self.outputs
            .push(Output::directory(absolute(path.as_ref()), symlinks, roles));
        self
    }

    /// The clock expiry is judged by: the bot's own identity, the client's checks of the
    /// certificates it presents and of the pinned CAs, and the readiness rule.
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
        let auth_server = machine_id_client::AuthAddrs::parse(&auth_server)
            .map_err(|e| BotError::Config(e.to_string()))?;
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
            for dir in self.outputs.iter().filter_map(Output::dir) {
                crate::config::check_overlap(data, dir)?;
            }
        }
        let tbot_path = match self.tbot_path {
            Some(p) => absolute(&p),
            None => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("tbot")),
        };
        let outputs = Outputs::new(
            self.outputs,
            auth_server.clone(),
            self.certificate_ttl,
            tbot_path,
            self.clock.clone(),
        );
        let onboarding = Onboarding::new(
            JoinSettings {
                auth_server,
                token: self.token,
                pins,
                ca_path: self.ca_path,
                insecure: self.insecure,
                certificate_ttl: self.certificate_ttl,
                join_method: self.join_method,
                aws_env: self.aws_env,
            },
            storage,
            self.clock.clone(),
        );
        let schedule = Schedule {
            certificate_ttl: self.certificate_ttl,
            renewal_interval: self.renewal_interval,
            oneshot: self.oneshot,
            ca_rotation_debounce: self.ca_rotation_debounce,
        };
        Ok(Bot::new(onboarding, outputs, schedule, self.clock))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

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
}
