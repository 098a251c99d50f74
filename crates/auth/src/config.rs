//! Configuration: [`AuthConfig`] is what [`crate::AuthServer::start`] takes; [`FileConfig`] is
//! the YAML file the daemon reads, turned into an [`AuthConfig`] by the binary after its flags
//! are applied.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use machine_id_join::iam::StsEndpoint;
use machine_id_mint::Suite;
use machine_id_types::{Clock, SystemClock, duration};
use serde::Deserialize;

use crate::storage::{StorageConfig, StorageFileConfig};

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/machine-id";
/// The default listen address: loopback only; `0.0.0.0` must be asked for.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:3025";

/// Everything the auth server needs to start.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Where the store (`backend.db`) and the admin identity (`admin/`) live.
    pub data_dir: PathBuf,
    /// The cluster name; must match the one stored on a later start.
    pub cluster_name: String,
    /// Where to listen for gRPC over TLS; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// The algorithms of new CAs (used on first start only; later starts keep the stored CAs).
    pub suite: Suite,
    /// Whether the SSH proxy runs (on the auth port, chosen by ALPN, and on
    /// [`Self::proxy_listen_addr`] when set). On by default, as in Teleport.
    pub proxy_enabled: bool,
    /// A second listener for the proxy (it always shares the auth port as well).
    pub proxy_listen_addr: Option<SocketAddr>,
    /// `host:port` clients use to reach the proxy, returned by Ping. Default, when the proxy
    /// runs: its own listener's address, else the auth listener's.
    pub proxy_public_addr: Option<String>,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// Lifetime of a bot's certificates when the bot asks for none (1h).
    pub default_cert_ttl: Duration,
    /// Longest lifetime of a renewable certificate (24h).
    pub max_renewable_ttl: Duration,
    /// Lifetime of a fresh bot join token when none is asked for (1h).
    pub default_token_ttl: Duration,
    /// Lifetime of the admin identity written for `tctl` at every start (1 year).
    pub admin_cert_ttl: Duration,
    /// Default lifetime of a host certificate from SignHostCert (12h).
    pub default_host_cert_ttl: Duration,
    /// How long a TLS handshake may take before the connection is dropped (10s).
    pub handshake_timeout: Duration,
    /// How long a connection may move no byte before it is closed (5m): gRPC connections
    /// and proxy connections that have not started relaying (the proxy's wait for the target
    /// line is the shorter of this and 10s). A relaying SSH session is never idle-closed.
    pub idle_timeout: Duration,
    /// Connections per source IP that may be in their TLS handshake or open without a client
    /// certificate at once (32); more are closed at once, with a log line.
    pub max_unauthenticated_connections_per_ip: usize,
    /// gRPC calls served at once (512); a call beyond that is answered `UNAVAILABLE` at once
    /// ("overloaded", nothing done) instead of queueing, and clients retry after a backoff.
    /// Long-lived `WatchCertAuthorities` streams do not count.
    pub max_in_flight_requests: usize,
    /// Audit events of unauthenticated callers (failed joins, anonymous proxy refusals) one
    /// source IP may cause at once (20); the bucket refills at
    /// [`Self::audit_events_per_minute_per_ip`].
    pub audit_burst_per_ip: u32,
    /// The sustained rate of such events per source IP (60 a minute). Events over the limit
    /// are counted and summarized in one `audit.dropped` event per address.
    pub audit_events_per_minute_per_ip: u32,
    /// The longest lifetime of a `token`-method join token (24h): `tctl bots add --ttl`,
    /// `tctl tokens add --ttl` and token resources beyond it are refused.
    pub max_token_ttl: Duration,
    /// STS endpoints an `iam` join may name besides the real AWS ones (private endpoints,
    /// tests); the server only ever sends to the allow-list, never to a host a client chose.
    pub extra_sts_endpoints: Vec<StsEndpoint>,
    /// How long STS may take to answer one forwarded `GetCallerIdentity` (10s).
    pub sts_timeout: Duration,
    /// `host:port` of the plain-HTTP diagnostics listener (`/healthz`, `/readyz`,
    /// `/metrics`); none by default. It reveals no secret but should stay on a trusted
    /// network (loopback, or a port only the monitoring system reaches).
    pub diag_addr: Option<String>,
    /// Where the cluster state lives: SQLite in the data directory (the default) or a
    /// PostgreSQL database several auth servers share.
    pub storage: StorageConfig,
    /// How often each auth server checks whether an automatic CA rotation's next phase is
    /// due (10s); every server checks, and compare-and-swap lets exactly one move it.
    pub rotation_check_interval: Duration,
    /// The grace period of an automatic rotation that names none (48h, as Teleport).
    pub default_rotation_grace_period: Duration,
    /// How long audit events are kept (90 days): older ones are deleted in the background,
    /// at start and every [`Self::audit_retention_interval`]. Zero keeps every event.
    pub audit_retention: Duration,
    /// How often the audit log is trimmed (1h); a pass that finds more than one batch to
    /// delete carries on until it is done.
    pub audit_retention_interval: Duration,
}

impl AuthConfig {
    /// A configuration with the defaults for everything but the three essentials.
    pub fn new(
        data_dir: impl Into<PathBuf>,
        cluster_name: impl Into<String>,
        listen_addr: SocketAddr,
    ) -> Self {
        Self {
            data_dir: data_dir.into(),
            cluster_name: cluster_name.into(),
            listen_addr,
            suite: Suite::Default,
            proxy_enabled: true,
            proxy_listen_addr: None,
            proxy_public_addr: None,
            clock: Arc::new(SystemClock),
            default_cert_ttl: Duration::from_secs(3600),
            max_renewable_ttl: Duration::from_secs(24 * 3600),
            default_token_ttl: Duration::from_secs(3600),
            admin_cert_ttl: Duration::from_secs(365 * 24 * 3600),
            default_host_cert_ttl: Duration::from_secs(12 * 3600),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_unauthenticated_connections_per_ip: 32,
            max_in_flight_requests: 512,
            audit_burst_per_ip: 20,
            audit_events_per_minute_per_ip: 60,
            max_token_ttl: Duration::from_secs(24 * 3600),
            extra_sts_endpoints: Vec::new(),
            sts_timeout: Duration::from_secs(10),
            diag_addr: None,
            storage: StorageConfig::Sqlite,
            rotation_check_interval: Duration::from_secs(10),
            default_rotation_grace_period: Duration::from_secs(48 * 3600),
            audit_retention: DEFAULT_AUDIT_RETENTION,
            audit_retention_interval: Duration::from_secs(3600),
        }
    }

    /// Checks the cluster name (non-empty, a DNS-like name: letters, digits, `-`, `.`, `_`)
    /// and that every lifetime, timeout and limit lies within its bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            source_name: "configuration".into(),
            field: field.into(),
            message,
        };
        validate_cluster_name(&self.cluster_name)
            .map_err(|m| invalid("auth_service.cluster_name", m))?;
        let within = |field: &str, d: Duration, min: Duration, max: Duration| {
            if d < min || d > max {
                Err(invalid(
                    field,
                    format!(
                        "{} is out of bounds; use a value from {} to {}",
                        duration::format(d),
                        duration::format(min),
                        duration::format(max)
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let s = Duration::from_secs;
        within(
            "limits.handshake_timeout",
            self.handshake_timeout,
            Duration::from_millis(100),
            s(300),
        )?;
        within(
            "limits.idle_timeout",
            self.idle_timeout,
            Duration::from_millis(100),
            s(24 * 3600),
        )?;
        within(
            "auth_service.max_token_ttl",
            self.max_token_ttl,
            s(60),
            MAX_TOKEN_TTL_CEILING,
        )?;
        within(
            "default_token_ttl",
            self.default_token_ttl,
            s(60),
            self.max_token_ttl,
        )?;
        within(
            "max_renewable_ttl",
            self.max_renewable_ttl,
            s(60),
            MAX_CERT_TTL_CEILING,
        )?;
        within(
            "default_cert_ttl",
            self.default_cert_ttl,
            s(60),
            self.max_renewable_ttl,
        )?;
        within(
            "default_host_cert_ttl",
            self.default_host_cert_ttl,
            s(60),
            s(365 * 24 * 3600),
        )?;
        within(
            "admin_cert_ttl",
            self.admin_cert_ttl,
            s(60),
            s(5 * 365 * 24 * 3600),
        )?;
        within(
            "auth_service.rotation_check_interval",
            self.rotation_check_interval,
            Duration::from_millis(50),
            s(600),
        )?;
        within(
            "audit_retention_interval",
            self.audit_retention_interval,
            Duration::from_millis(50),
            s(24 * 3600),
        )?;
        if !self.audit_retention.is_zero() && self.audit_retention < s(3600) {
            return Err(invalid(
                "auth_service.audit_retention",
                format!(
                    "{} would delete events almost as they are written; use 1h or more, or 0 to keep every event",
                    duration::format(self.audit_retention)
                ),
            ));
        }
        if self.max_unauthenticated_connections_per_ip == 0 {
            return Err(invalid(
                "limits.max_unauthenticated_connections_per_ip",
                "0 would refuse every join; use at least 1".into(),
            ));
        }
        if self.max_in_flight_requests == 0 {
            return Err(invalid(
                "limits.max_in_flight_requests",
                "0 would refuse every call; use at least 1".into(),
            ));
        }
        if let Some(addr) = &self.diag_addr {
            validate_host_port(addr).map_err(|m| invalid("auth_service.diag_addr", m))?;
        }
        if self.audit_burst_per_ip == 0 {
            return Err(invalid(
                "limits.audit_burst_per_ip",
                "0 would drop every event of unauthenticated callers; use at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// How long audit events are kept unless configured otherwise (90 days).
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// The longest `max_token_ttl` a configuration may set (30 days).
pub const MAX_TOKEN_TTL_CEILING: Duration = Duration::from_secs(30 * 24 * 3600);
/// The longest renewable certificate lifetime a configuration may set (7 days).
pub const MAX_CERT_TTL_CEILING: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks that `addr` is `host:port` (an IPv6 host in brackets).
fn validate_host_port(addr: &str) -> Result<(), String> {
    let bad = || format!("{addr:?} is not host:port; use e.g. 127.0.0.1:3000");
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad());
    }
    Ok(())
}

/// Checks a cluster name.
pub(crate) fn validate_cluster_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("missing; give the cluster a name like example.com".into());
    }
    if name.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._".contains(*c)))
    {
        return Err(format!(
            "invalid character {c:?} in {name:?}; use letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// A configuration file that cannot be used: names the file, the field and what is expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read config file {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause (in the message, not an error source, so it is printed once).
        cause: std::io::Error,
    },
    /// The file is over the size limit.
    #[error(transparent)]
    TooLarge(crate::files::FileTooLarge),
    /// The file is not valid YAML or does not have the expected shape.
    #[error("{source_name}: {field}: {message}")]
    Invalid {
        /// The file (or `configuration` for values from flags).
        source_name: String,
        /// The field at fault, as a dotted path (`.` for the document as a whole).
        field: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// The YAML configuration file of `auth-server`.
///
/// ```yaml
/// data_dir: /var/lib/machine-id
/// auth_service:
///   cluster_name: example.com
///   listen_addr: 127.0.0.1:3025
///   ca_suite: default        # or legacy (RSA-2048)
///   diag_addr: 127.0.0.1:3000  # optional: plain HTTP /healthz, /readyz, /metrics
/// proxy_service:             # the SSH proxy; on by default, sharing the auth port (ALPN)
///   enabled: true
///   listen_addr: 127.0.0.1:3080          # optional: a listener of its own as well
///   public_addr: proxy.example.com:3080  # what ssh_config and known_hosts name
/// join_service:              # the iam join method
///   extra_sts_endpoints:     # besides the real AWS STS endpoints (global, regional, FIPS)
///   - https://sts.internal.example.com
/// limits:                    # all optional; the defaults are shown
///   handshake_timeout: 10s   # TLS handshake
///   idle_timeout: 5m         # no byte either way (a relaying SSH session is exempt)
///   max_unauthenticated_connections_per_ip: 32   # in handshake or without a client cert
///   max_in_flight_requests: 512  # calls at once; more are answered UNAVAILABLE at once
///   audit_burst_per_ip: 20                       # audit events of unauthenticated callers
///   audit_events_per_minute_per_ip: 60
/// ```
///
/// `auth_service.max_token_ttl` (default `24h`) caps the lifetime of `token`-method join
/// tokens; `auth_service.rotation_check_interval` (default `10s`) is how often automatic CA
/// rotations are checked; `auth_service.audit_retention` (default `2160h`, 90 days; `0`
/// keeps every event, else at least `1h`) is how long audit events are kept.
///
/// Unknown fields are errors.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The data directory.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The auth service.
    #[serde(default)]
    pub auth_service: AuthServiceConfig,
    /// The proxy service.
    #[serde(default)]
    pub proxy_service: ProxyServiceConfig,
    /// The join service (iam method settings).
    #[serde(default)]
    pub join_service: JoinServiceConfig,
    /// Timeouts and per-address limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where the cluster state lives.
    #[serde(default)]
    pub storage: StorageFileConfig,
}

/// The `limits` section: timeouts and per-address limits (see [`AuthConfig`] for each).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// How long a TLS handshake may take (`10s`).
    #[serde(default, with = "duration::serde_opt")]
    pub handshake_timeout: Option<Duration>,
    /// How long a connection may move no byte (`5m`).
    #[serde(default, with = "duration::serde_opt")]
    pub idle_timeout: Option<Duration>,
    /// Connections per source IP in handshake or without a client certificate (32).
    #[serde(default)]
    pub max_unauthenticated_connections_per_ip: Option<usize>,
    /// gRPC calls served at once (512).
    #[serde(default)]
    pub max_in_flight_requests: Option<usize>,
    /// Audit events of unauthenticated callers per source IP at once (20).
    #[serde(default)]
    pub audit_burst_per_ip: Option<u32>,
    /// Their sustained rate per source IP, per minute (60).
    #[serde(default)]
    pub audit_events_per_minute_per_ip: Option<u32>,
}

/// The `join_service` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinServiceConfig {
    /// STS endpoint URLs (`https://host[:port]`, or `http://` for tests) allowed besides the
    /// real AWS ones.
    #[serde(default)]
    pub extra_sts_endpoints: Vec<String>,
}

/// The `auth_service` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthServiceConfig {
    /// Whether the auth service runs (it always does; `false` is an error).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// The cluster name.
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// `ip:port` to listen on.
    #[serde(default)]
    pub listen_addr: Option<SocketAddr>,
    /// `default` or `legacy`.
    #[serde(default)]
    pub ca_suite: Option<Suite>,
    /// The longest lifetime of a `token`-method join token (`24h`).
    #[serde(default, with = "duration::serde_opt")]
    pub max_token_ttl: Option<Duration>,
    /// `host:port` of the diagnostics listener (`/healthz`, `/readyz`, `/metrics`).
    #[serde(default)]
    pub diag_addr: Option<String>,
    /// How often automatic CA rotations are checked (`10s`).
    #[serde(default, with = "duration::serde_opt")]
    pub rotation_check_interval: Option<Duration>,
    /// How long audit events are kept (`2160h`, 90 days); `0` keeps every event.
    #[serde(default, with = "duration::serde_opt")]
    pub audit_retention: Option<Duration>,
}

/// The `proxy_service` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyServiceConfig {
    /// Whether the proxy runs (default: yes).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// `ip:port` to listen on.
    #[serde(default)]
    pub listen_addr: Option<SocketAddr>,
    /// `host:port` clients use to reach the proxy.
    #[serde(default)]
    pub public_addr: Option<String>,
}

impl FileConfig {
    /// Reads (at most [`crate::MAX_FILE_SIZE`] bytes) and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        use crate::files::{BoundedReadError, MAX_FILE_SIZE, read_bounded};
        let data =
            read_bounded(path, MAX_FILE_SIZE, "a configuration file").map_err(|e| match e {
                BoundedReadError::Io(cause) => ConfigError::Read {
                    path: path.to_path_buf(),
                    cause,
                },
                BoundedReadError::TooLarge(e) => ConfigError::TooLarge(e),
            })?;
        let text = String::from_utf8(data).map_err(|_| ConfigError::Invalid {
            source_name: path.display().to_string(),
            field: ".".into(),
            message: "not UTF-8 text; expected a YAML file".into(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Applies the file's `limits` section and `auth_service.max_token_ttl`,
    /// `rotation_check_interval` and `audit_retention` to `config` (fields the file leaves
    /// out keep their value).
    pub fn apply_limits(&self, config: &mut AuthConfig) {
        let l = &self.limits;
        if let Some(d) = l.handshake_timeout {
            config.handshake_timeout = d;
        }
        if let Some(d) = l.idle_timeout {
            config.idle_timeout = d;
        }
        if let Some(n) = l.max_unauthenticated_connections_per_ip {
            config.max_unauthenticated_connections_per_ip = n;
        }
        if let Some(n) = l.max_in_flight_requests {
            config.max_in_flight_requests = n;
        }
        if let Some(n) = l.audit_burst_per_ip {
            config.audit_burst_per_ip = n;
        }
        if let Some(n) = l.audit_events_per_minute_per_ip {
            config.audit_events_per_minute_per_ip = n;
        }
        if let Some(d) = self.auth_service.max_token_ttl {
            config.max_token_ttl = d;
        }
        if let Some(d) = self.auth_service.rotation_check_interval {
            config.rotation_check_interval = d;
        }
        if let Some(d) = self.auth_service.audit_retention {
            config.audit_retention = d;
        }
    }

    /// Parses YAML `text`; `source_name` names it in errors.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            source_name: source_name.to_string(),
            field: field.to_string(),
            message,
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let de = serde_norway::Deserializer::from_str(text);
        let cfg: FileConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            invalid(&path, explain(strip_path_prefix(&inner, &path)))
        })?;
        if cfg.auth_service.enabled == Some(false) {
            return Err(invalid(
                "auth_service.enabled",
                "false is not supported: this daemon is the auth service; remove the field".into(),
            ));
        }
        if let Some(name) = &cfg.auth_service.cluster_name {
            validate_cluster_name(name).map_err(|m| invalid("auth_service.cluster_name", m))?;
        }
        if let Some(conn) = &cfg.storage.conn_string {
            conn.parse::<crate::storage::ConnString>()
                .map_err(|m| invalid("storage.conn_string", m))?;
        }
        for (i, url) in cfg.join_service.extra_sts_endpoints.iter().enumerate() {
            StsEndpoint::parse(url).map_err(|e| {
                invalid(
                    &format!("join_service.extra_sts_endpoints[{i}]"),
                    e.to_string(),
                )
            })?;
        }
        Ok(cfg)
    }
}

/// serde_norway prefixes some messages with the parent's path (`auth_service: unknown
/// field ...`); the error already names the full path, so drop it.
fn strip_path_prefix<'a>(message: &'a str, path: &str) -> &'a str {
    match message.split_once(": ") {
        Some((prefix, rest)) if !prefix.is_empty() && path.starts_with(prefix) => rest,
        _ => message,
    }
}

/// Adds what is expected to serde's messages where they leave it out.
fn explain(message: &str) -> String {
    if message.contains("invalid socket address") {
        format!("{message}; expected ip:port, e.g. 127.0.0.1:3025")
    } else if message.contains("unknown variant") && message.contains("default") {
        format!("{message}; ca_suite is default or legacy")
    } else {
        message.to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    #[test]
    fn diag_addr_is_read_and_must_be_host_port() {
        let c =
            FileConfig::parse("auth_service:\n  diag_addr: localhost:3000\n", "f.yaml").unwrap();
        assert_eq!(c.auth_service.diag_addr.as_deref(), Some("localhost:3000"));
        let mut a = AuthConfig::new("/tmp/x", "example.com", "127.0.0.1:0".parse().unwrap());
        for good in ["localhost:3000", "127.0.0.1:0", "[::1]:3000"] {
            a.diag_addr = Some(good.into());
            a.validate().unwrap();
        }
        for bad in ["localhost", ":3000", "host:http", "::1:3000", "host:70000"] {
            a.diag_addr = Some(bad.into());
            assert_eq!(
                a.validate().unwrap_err().to_string(),
                format!(
                    "configuration: auth_service.diag_addr: {bad:?} is not host:port; use e.g. 127.0.0.1:3000"
                )
            );
        }
    }

    #[test]
    fn full_file_parses() {
        let c = FileConfig::parse(
            "data_dir: /tmp/x\nauth_service:\n  cluster_name: example.com\n  listen_addr: 127.0.0.1:3025\n  ca_suite: legacy\nproxy_service:\n  enabled: false\n  public_addr: proxy.example.com:3080\n",
            "f.yaml",
        )
        .unwrap();
        assert_eq!(c.data_dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(c.auth_service.ca_suite, Some(Suite::Legacy));
        assert_eq!(c.auth_service.cluster_name.as_deref(), Some("example.com"));
        assert_eq!(
            c.proxy_service.public_addr.as_deref(),
            Some("proxy.example.com:3080")
        );
        assert_eq!(FileConfig::parse("", "f").unwrap(), FileConfig::default());
    }

    #[test]
    fn limits_parse_apply_and_are_bounded() {
        let c = FileConfig::parse(
            "auth_service:\n  max_token_ttl: 2h\nlimits:\n  handshake_timeout: 3s\n  idle_timeout: 90s\n  max_unauthenticated_connections_per_ip: 4\n  max_in_flight_requests: 7\n  audit_burst_per_ip: 5\n  audit_events_per_minute_per_ip: 6\n",
            "f.yaml",
        )
        .unwrap();
        let mut a = AuthConfig::new("/d", "example.com", "127.0.0.1:0".parse().unwrap());
        c.apply_limits(&mut a);
        assert_eq!(a.handshake_timeout, Duration::from_secs(3));
        assert_eq!(a.idle_timeout, Duration::from_secs(90));
        assert_eq!(a.max_unauthenticated_connections_per_ip, 4);
        assert_eq!(a.max_in_flight_requests, 7);
        assert_eq!(
            (a.audit_burst_per_ip, a.audit_events_per_minute_per_ip),
            (5, 6)
        );
        assert_eq!(a.max_token_ttl, Duration::from_secs(7200));
        // The default token lifetime (1h) fits under 2h.
        a.validate().unwrap();

        let e = FileConfig::parse("limits:\n  idle_timeout: 10\n", "f.yaml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f.yaml: limits.idle_timeout: invalid duration \"10\""),
            "{e}"
        );
        let e = FileConfig::parse("limits:\n  idle_timeot: 1s\n", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("idle_timeot"), "{e}");

        a.max_token_ttl = Duration::from_secs(30 * 60);
        let e = a.validate().unwrap_err().to_string();
        assert_eq!(
            e,
            "configuration: default_token_ttl: 1h0m0s is out of bounds; use a value from 1m0s to 30m0s"
        );
        a.max_token_ttl = Duration::from_secs(3600);
        a.idle_timeout = Duration::ZERO;
        assert!(
            a.validate()
                .unwrap_err()
                .to_string()
                .contains("limits.idle_timeout")
        );
    }

    #[test]
    fn audit_retention_defaults_to_90_days_and_zero_keeps_everything() {
        let mut a = AuthConfig::new("/d", "example.com", "127.0.0.1:0".parse().unwrap());
        assert_eq!(a.audit_retention, Duration::from_secs(90 * 24 * 3600));
        FileConfig::parse("auth_service:\n  audit_retention: 720h\n", "f.yaml")
            .unwrap()
            .apply_limits(&mut a);
        assert_eq!(a.audit_retention, Duration::from_secs(30 * 24 * 3600));
        a.validate().unwrap();
        FileConfig::parse("auth_service:\n  audit_retention: 0\n", "f.yaml")
            .unwrap()
            .apply_limits(&mut a);
        assert_eq!(a.audit_retention, Duration::ZERO);
        a.validate().unwrap();
        FileConfig::parse("auth_service:\n  audit_retention: 10m\n", "f.yaml")
            .unwrap()
            .apply_limits(&mut a);
        assert_eq!(
            a.validate().unwrap_err().to_string(),
            "configuration: auth_service.audit_retention: 10m0s would delete events almost as they are written; use 1h or more, or 0 to keep every event"
        );
        let e = FileConfig::parse("auth_service:\n  audit_retention: 90d\n", "f.yaml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("f.yaml: auth_service.audit_retention: invalid duration"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = FileConfig::parse("auth_service:\n  cluster_nam: x\n", "f.yaml").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("f.yaml: auth_service"), "{s}");
        assert!(s.contains("cluster_nam"), "{s}");
        assert!(s.contains("cluster_name"), "{s}");
        assert!(!s.contains("auth_service: auth_service"), "{s}");
        assert!(s.contains("line 2"), "{s}");

        let e = FileConfig::parse("auth_service:\n  listen_addr: nowhere\n", "f.yaml").unwrap_err();
        let s = e.to_string();
        assert!(s.contains("auth_service.listen_addr"), "{s}");
        assert!(s.contains("ip:port"), "{s}");

        let e = FileConfig::parse("auth_service:\n  ca_suite: fancy\n", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("auth_service.ca_suite"), "{e}");

        let e = FileConfig::parse("auth_service:\n  cluster_name: 'a b'\n", "f.yaml").unwrap_err();
        assert!(e.to_string().contains("auth_service.cluster_name"), "{e}");

        let e = FileConfig::parse(
            "join_service:\n  extra_sts_endpoints: ['https://sts.example.com', 'ftp://x']\n",
            "f.yaml",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("join_service.extra_sts_endpoints[1]"),
            "{e}"
        );
    }
}
