//! The bot's outputs: for each destination, impersonated certificates for its roles, the
//! files they make (with `known_hosts` and `ssh_config`), the write, and what was written
//! last, for the accessors and the readiness rule.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use machine_id_client::{AuthAddrs, BotCerts, Certs, Client, OutputRequest};
use machine_id_destination::{
    Artifacts, Destination, DirectoryDestination, HostCaKey, SshConfigParams, SymlinkPolicy,
    known_hosts, ssh_config,
};
use machine_id_mint::{PrivateKey, certs_from_pem, parse_tls_identity};
use machine_id_types::Clock;
use rustls::sign::CertifiedKey;

use crate::error::refusal;
use crate::identity::{IssuedIdentity, new_key};
use crate::{BotError, Result};

/// Where one output goes and which roles its certificates carry.
#[derive(Clone)]
pub(crate) struct Output {
    destination: Arc<dyn Destination>,
    /// The directory and its symlink policy, for the ssh_config template (directory
    /// destinations only).
    dir: Option<(PathBuf, SymlinkPolicy)>,
    /// Empty: every role the bot may impersonate.
    roles: Vec<String>,
    describe: String,
}

impl Output {
    /// An output to `destination`, the `n`th of the bot.
    pub(crate) fn new(destination: Arc<dyn Destination>, roles: Vec<String>, n: usize) -> Self {
        Self {
            destination,
            dir: None,
            roles,
            describe: format!("destination {n}"),
        }
    }

    /// An output to the directory `path` (absolute).
    pub(crate) fn directory(path: PathBuf, symlinks: SymlinkPolicy, roles: Vec<String>) -> Self {
        Self {
            destination: Arc::new(DirectoryDestination::new(&path).with_symlinks(symlinks)),
            describe: format!("destination {}", path.display()),
            dir: Some((path, symlinks)),
            roles,
        }
    }

    /// The directory, for directory outputs.
    pub(crate) fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(|(d, _)| d.as_path())
    }
}

/// What one output holds since its last write.
#[derive(Clone)]
pub(crate) struct OutputState {
    pub(crate) issued: IssuedIdentity,
    pub(crate) artifacts: Arc<Artifacts>,
    pub(crate) certified: Arc<CertifiedKey>,
}

/// The outputs of one bot and what they hold.
pub(crate) struct Outputs {
    outputs: Vec<Output>,
    auth_server: AuthAddrs,
    certificate_ttl: Duration,
    tbot_path: PathBuf,
    clock: Arc<dyn Clock>,
    written: RwLock<Vec<OutputState>>,
    /// Unix seconds the earliest output certificate expires (0: none known).
    expires: AtomicI64,
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

/// The proxy address(es) for ssh_config: the one the cluster advertises (Ping), as always;
/// but when that is an address of the auth server list (the proxy shares the auth port, and
/// an auth server advertises its own listener by default), the whole list, so `tbot proxy`
/// can move on when that server is down. No advertised proxy: the auth server list.
fn proxy_addr(advertised: Option<&str>, auth_servers: &AuthAddrs) -> String {
    match advertised {
        Some(p) if !auth_servers.as_slice().iter().any(|a| a == p) => p.to_string(),
        _ => auth_servers.to_string(),
    }
}

/// When the certificate of a written set expires (Unix seconds), if it holds a readable one.
fn set_expiry(set: &Artifacts) -> Option<i64> {
    let pem = std::str::from_utf8(&set.tls_cert).ok()?;
    let der = certs_from_pem(pem).ok()?.into_iter().next()?;
    Some(parse_tls_identity(&der).ok()?.expires.unix_timestamp())
}

impl Outputs {
    /// The outputs of a bot of `auth_server` asking for certificates of `certificate_ttl`.
    pub(crate) fn new(
        outputs: Vec<Output>,
        auth_server: AuthAddrs,
        certificate_ttl: Duration,
        tbot_path: PathBuf,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            outputs,
            auth_server,
            certificate_ttl,
            tbot_path,
            clock,
            written: RwLock::default(),
            expires: AtomicI64::new(0),
        }
    }

    /// Reads what output `index` holds since its last write.
    pub(crate) fn read<T>(&self, index: usize, f: impl FnOnce(&OutputState) -> T) -> Option<T> {
        self.written
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
            .map(f)
    }

    /// The certificates each output holds since its last write.
    pub(crate) fn held_certs(&self) -> Vec<machine_id_client::Certs> {
        self.written
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|o| o.issued.certs.clone())
            .collect()
    }

    /// Unix seconds the earliest output certificate expires, once known.
    pub(crate) fn expires(&self) -> Option<i64> {
        let v = self.expires.load(Ordering::Relaxed);
        (v != 0).then_some(v)
    }

    /// Finishes writes to directory destinations that a killed tbot left half-renamed;
    /// failures are logged.
    pub(crate) async fn recover(&self) {
        for out in &self.outputs {
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

    /// Before anything was written by this process: when every destination already holds a
    /// set (a restart), the earliest expiry of their certificates is what the outputs hold,
    /// so the readiness rule judges those rather than saying there are none.
    pub(crate) async fn adopt_written(&self) {
        if self.outputs.is_empty() || self.expires().is_some() {
            return;
        }
        let mut earliest: Option<i64> = None;
        for out in &self.outputs {
            let dest = out.destination.clone();
            let found = match tokio::task::spawn_blocking(move || dest.read()).await {
                Ok(Ok(Some(set))) => set_expiry(&set),
                Ok(Ok(None)) => None,
                Ok(Err(e)) => {
                    tracing::debug!(output = %out.describe, error = %e, "cannot read the destination's set at start");
                    None
                }
                Err(e) => {
                    tracing::debug!(output = %out.describe, error = %e, "reading the destination at start failed");
                    None
                }
            };
            let Some(expires) = found else {
                return;
            };
            earliest = Some(earliest.map_or(expires, |e| e.min(expires)));
        }
        if let Some(t) = earliest {
            // Only if no renewal has written meanwhile.
            let _ = self
                .expires
                .compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
            tracing::debug!(
                expires = t,
                "the destinations hold certificates from before"
            );
        }
    }

    /// What the next renewal asks for: each output's key (the one it holds, else a new one)
    /// and roles.
    pub(crate) fn plan(&self) -> Result<OutputPlan> {
        // Each output keeps its key across renewals (see `write_output`).
        let written = self.written.read().unwrap_or_else(PoisonError::into_inner);
        let mut keys = Vec::with_capacity(self.outputs.len());
        let mut requests = Vec::with_capacity(self.outputs.len());
        for (i, out) in self.outputs.iter().enumerate() {
            let key = match written.get(i) {
                Some(s) => s.issued.key.clone(),
                None => new_key()?,
            };
            requests.push(OutputRequest {
                public_key_der: key.public_key().to_spki_der(),
                ttl: self.certificate_ttl,
                roles: out.roles.clone(),
            });
            keys.push(key);
        }
        Ok(OutputPlan { keys, requests })
    }

    /// Gets every output's certificates from the auth server as `bot` (one connection, one
    /// call; one call per output when `per_call`, for a server without the one-call cycle),
    /// and writes them.
    pub(crate) async fn renew(
        &self,
        bot: &IssuedIdentity,
        plan: OutputPlan,
        per_call: bool,
    ) -> Result<()> {
        let client = bot.connect(&self.auth_server, self.clock.as_ref()).await?;
        if per_call {
            return self.renew_per_call(&client, bot, plan).await;
        }
        match client.generate_bot_certs(None, &plan.requests).await {
            Ok(answer) => self.write_answer(bot, plan, answer).await,
            Err(e) if e.is_unimplemented() => {
                tracing::debug!("the auth server predates GenerateBotCerts; asking per output");
                self.renew_per_call(&client, bot, plan).await
            }
            Err(e) => Err(refusal(e)),
        }
    }

    /// Writes the outputs of a [`Client::generate_bot_certs`] answer, in order; the first
    /// refused output stops the writes and is returned.
    pub(crate) async fn write_answer(
        &self,
        bot: &IssuedIdentity,
        plan: OutputPlan,
        answer: BotCerts,
    ) -> Result<()> {
        let host_ca_keys = parse_host_ca_keys(&answer.host_ca_keys);
        let cluster = ClusterInfo {
            name: answer.cluster_name,
            proxy_public_addr: answer.proxy_public_addr,
            host_ca_keys,
        };
        let mut states = Vec::with_capacity(self.outputs.len());
        for ((out, key), result) in self.outputs.iter().zip(plan.keys).zip(answer.outputs) {
            let certs = result.map_err(refusal)?.certs;
            states.push(self.write_output(out, key, certs, &cluster).await?);
        }
        self.hold(bot, states);
        Ok(())
    }

    /// Gets the outputs' certificates one call each, from an auth server without
    /// GenerateBotCerts.
    async fn renew_per_call(
        &self,
        client: &Client,
        bot: &IssuedIdentity,
        plan: OutputPlan,
    ) -> Result<()> {
        let ping = client.ping().await.map_err(refusal)?;
        let cluster = ClusterInfo {
            name: ping.cluster_name,
            proxy_public_addr: ping.proxy_public_addr,
            host_ca_keys: host_ca_keys(client, bot).await,
        };
        let mut default_roles: Option<Vec<String>> = None;
        let mut states = Vec::with_capacity(self.outputs.len());
        for (out, (key, request)) in self
            .outputs
            .iter()
            .zip(plan.keys.into_iter().zip(plan.requests))
        {
            let roles = if request.roles.is_empty() {
                if default_roles.is_none() {
                    default_roles = Some(impersonable_roles(client, bot).await?);
                }
                default_roles.clone().unwrap_or_default()
            } else {
                request.roles
            };
            let certs = client
                .generate_user_certs(&request.public_key_der, request.ttl, &roles)
                .await
                .map_err(refusal)?;
            states.push(self.write_output(out, key, certs, &cluster).await?);
        }
        self.hold(bot, states);
        Ok(())
    }

    /// Records what every output now holds.
    fn hold(&self, bot: &IssuedIdentity, states: Vec<OutputState>) {
        let earliest = states
            .iter()
            .map(|s| s.issued.identity.expires.unix_timestamp())
            .min()
            .unwrap_or(bot.identity.expires.unix_timestamp());
        self.expires.store(earliest, Ordering::Relaxed);
        *self.written.write().unwrap_or_else(PoisonError::into_inner) = states;
    }

    /// Writes `certs` (issued for `key`, the key this output already holds or a new one) to
    /// `out`, with the known_hosts and ssh_config they go with.
    ///
    /// An output keeps its key for the life of the process, and only its certificates are
    /// renewed: the destination's files cannot be replaced as one set, and OpenSSH reads
    /// the certificate (`CertificateFile`) when it starts but the private key only when it
    /// authenticates, a round trip through the proxy later. With a new key per renewal, an
    /// `ssh` started just before a renewal would pair the old certificate with the new key
    /// and fail; with one key, every pairing of files from any two renewals matches. The
    /// bot's own identity (in its data directory, read by nothing else) still gets a new key
    /// at every renewal, which the generation counter relies on.
    async fn write_output(
        &self,
        out: &Output,
        key: PrivateKey,
        certs: Certs,
        cluster: &ClusterInfo,
    ) -> Result<OutputState> {
        let issued = IssuedIdentity::new(key, certs)?;
        tracing::debug!(output = %out.describe, "got the output certificates");
        let mut artifacts = issued.to_artifacts();
        let proxy_addr = proxy_addr(cluster.proxy_public_addr.as_deref(), &self.auth_server);
        let proxy_host = host_of(proxy_addr.split(',').next().unwrap_or_default());
        artifacts.known_hosts =
            known_hosts(&cluster.name, proxy_host, &cluster.host_ca_keys).into_bytes();
        if let Some((dir, symlinks)) = &out.dir {
            artifacts.ssh_config = ssh_config(&SshConfigParams {
                cluster: &cluster.name,
                proxy_host,
                proxy_addr: &proxy_addr,
                destination_dir: dir,
                tbot_path: &self.tbot_path,
                symlinks: *symlinks,
                host_ca_keys: &cluster.host_ca_keys,
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
            expires = %issued.expires_rfc3339(),
            "wrote the output certificates"
        );
        Ok(OutputState {
            issued,
            artifacts,
            certified,
        })
    }
}

/// What a renewal asks for its outputs: their keys and requests, in the outputs' order.
pub(crate) struct OutputPlan {
    keys: Vec<PrivateKey>,
    /// For [`Client::generate_bot_certs`].
    pub(crate) requests: Vec<OutputRequest>,
}

/// What every output's files need besides its certificates.
struct ClusterInfo {
    name: String,
    proxy_public_addr: Option<String>,
    host_ca_keys: Vec<HostCaKey>,
}

/// The host CA keys for known_hosts and ssh_config.
async fn host_ca_keys(client: &Client, bot: &IssuedIdentity) -> Vec<HostCaKey> {
    let lines = match client.export_ca(machine_id_types::ca_kind::HOST).await {
        Ok(ca) => ca.ssh_public_keys,
        Err(e) => {
            tracing::debug!(error = %e, "cannot export the host CA; using the last SSH CA key of the renewal");
            bot.certs.ssh_ca_keys.last().cloned().into_iter().collect()
        }
    };
    parse_host_ca_keys(&lines)
}

/// The host CA keys of OpenSSH `lines`; a line that is not one is logged and skipped.
fn parse_host_ca_keys(lines: &[String]) -> Vec<HostCaKey> {
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

/// Every role the bot may impersonate: the `impersonate` roles of its own role, which every
/// caller may read.
async fn impersonable_roles(client: &Client, bot: &IssuedIdentity) -> Result<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_ports() {
        assert_eq!(host_of("proxy.example.com:3080"), "proxy.example.com");
        assert_eq!(host_of("127.0.0.1:3025"), "127.0.0.1");
        assert_eq!(host_of("[::1]:3025"), "::1");
        assert_eq!(host_of("host"), "host");
    }

    #[test]
    fn the_proxy_is_the_advertised_one_unless_it_is_an_auth_server_of_the_list() {
        let one: AuthAddrs = "a:3025".into();
        let two: AuthAddrs = "a:3025,b:3025".into();
        assert_eq!(
            proxy_addr(Some("proxy.example.com:3080"), &two),
            "proxy.example.com:3080"
        );
        assert_eq!(proxy_addr(Some("a:3025"), &one), "a:3025");
        assert_eq!(proxy_addr(Some("b:3025"), &two), "a:3025,b:3025");
        assert_eq!(proxy_addr(None, &two), "a:3025,b:3025");
    }
}
