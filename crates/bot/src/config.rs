//! The v1 YAML configuration of `tbot` and the flags that override it.
//!
//! ```yaml
//! auth_server: auth.example.com:3025       # or several: auth_servers: [a:3025, b:3025]
//! certificate_ttl: 60m
//! renewal_interval: 20m
//! oneshot: false
//! ca_rotation_debounce: 10s                 # wait after a CA rotation step before renewing
//! onboarding:
//!   join_method: token
//!   token: 0123456789abcdef0123456789abcdef   # or a path to a file holding it
//!   ca_pins: [sha256:...]
//!   ca_path: /path/to/cas.pem                # instead of pins
//! storage:
//!   directory: /var/lib/teleport/bot         # or `memory: {}`
//! destinations:
//!   - directory:
//!       path: /opt/machine-id                # `directory: /opt/machine-id` also works
//!       symlinks: try-secure
//!     roles: [access]                         # default: every role the bot may impersonate
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use machine_id_destination::SymlinkPolicy;
pub use machine_id_types::JoinMethod;
use machine_id_types::duration;
use serde::{Deserialize, Serialize};

use crate::{BotError, Result};

mod paths;

pub(crate) use paths::{UserFileError, read_user_file};
pub use paths::{check_overlap, resolve_lenient, resolve_token};

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/teleport/bot";
/// The default lifetime of the certificates asked for.
pub const DEFAULT_CERTIFICATE_TTL: Duration = Duration::from_secs(60 * 60);
/// The default time between renewals.
pub const DEFAULT_RENEWAL_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// The whole configuration (`-c config.yaml`, version v1 of the facts file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotConfig {
    /// The auth server, `host:port` (a comma-separated list also works).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_server: Option<String>,
    /// Several auth servers of the cluster, tried in turn (see
    /// [`machine_id_client::AuthAddrs`]); instead of `auth_server`, never with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_servers: Vec<String>,
    /// The lifetime asked for each certificate (default 60m).
    #[serde(
        default,
        with = "duration::serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate_ttl: Option<Duration>,
    /// The time between renewals (default 20m).
    #[serde(
        default,
        with = "duration::serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub renewal_interval: Option<Duration>,
    /// Write the outputs once and exit.
    #[serde(default, skip_serializing_if = "is_false")]
    pub oneshot: bool,
    /// How long to wait after a CA rotation step before renewing (default 10s).
    #[serde(
        default,
        with = "duration::serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ca_rotation_debounce: Option<Duration>,
    /// How to join.
    #[serde(default)]
    pub onboarding: Onboarding,
    /// Where the bot's own identity lives.
    #[serde(default)]
    pub storage: StorageConfig,
    /// Where the output certificates go.
    #[serde(default)]
    pub destinations: Vec<DestinationConfig>,
    /// Skip the CA check on the first join when neither pins nor a CA path are given
    /// (testing only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure: bool,
    /// `host:port` of the diagnostics listener (`/livez`, `/readyz`, `/metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diag_addr: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// `onboarding:`: how the bot joins the first time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Onboarding {
    /// `token` (the default) or `iam`.
    #[serde(default)]
    pub join_method: JoinMethod,
    /// The token, or the path of a file holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// `sha256:<hex>` pins of the cluster's CA certificates.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ca_pins: Vec<String>,
    /// A PEM file of the cluster's CA certificates, instead of pins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_path: Option<PathBuf>,
}

/// `storage:`: a directory (the default, [`DEFAULT_DATA_DIR`]) or memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// The data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<PathBuf>,
    /// Keep the identity in memory (`memory: {}`); it is lost when the process exits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Empty>,
}

/// An empty mapping (`{}`), for `memory: {}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

impl StorageConfig {
    /// The data directory, unless memory storage is chosen.
    pub fn data_dir(&self) -> Option<PathBuf> {
        if self.memory.is_some() && self.directory.is_none() {
            return None;
        }
        Some(
            self.directory
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        )
    }
}

/// One entry of `destinations:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// A directory destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryConfig>,
    /// The roles the output certificates carry (default: every role the bot may impersonate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// `directory:` of a destination: a path, or `{path, symlinks}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "DirectoryRepr")]
pub struct DirectoryConfig {
    /// The directory.
    pub path: PathBuf,
    /// The symlink policy (default `try-secure`).
    #[serde(default)]
    pub symlinks: SymlinkPolicy,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DirectoryRepr {
    Path(PathBuf),
    Full {
        path: PathBuf,
        #[serde(default)]
        symlinks: SymlinkPolicy,
    },
}

impl From<DirectoryRepr> for DirectoryConfig {
    fn from(r: DirectoryRepr) -> Self {
        match r {
            DirectoryRepr::Path(path) => Self {
                path,
                symlinks: SymlinkPolicy::default(),
            },
            DirectoryRepr::Full { path, symlinks } => Self { path, symlinks },
        }
    }
}

/// Flags that override the config file; `None` (or empty) leaves the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--auth-server` (repeated flags joined with `,`; a comma-separated list gives
    /// `auth_servers`).
    pub auth_server: Option<String>,
    /// `--certificate-ttl`.
    pub certificate_ttl: Option<Duration>,
    /// `--renewal-interval`.
    pub renewal_interval: Option<Duration>,
    /// `--oneshot`.
    pub oneshot: bool,
    /// `--join-method`.
    pub join_method: Option<JoinMethod>,
    /// `--token`.
    pub token: Option<String>,
    /// `--ca-pin` (repeatable).
    pub ca_pins: Vec<String>,
    /// `--ca-path`.
    pub ca_path: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--destination-dir`.
    pub destination_dir: Option<PathBuf>,
    /// `--insecure`.
    pub insecure: bool,
    /// `--diag-addr`.
    pub diag_addr: Option<String>,
}

impl BotConfig {
    /// Parses a YAML config; errors name the line and field.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error_free(de).map_err(BotError::Config)
    }

    /// Reads and parses the config file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_user_file(
            path,
            crate::bounded::CONFIG_FILE_LIMIT,
            "config file",
            "point -c at the tbot YAML config",
        )
        .map_err(|e| match e {
            UserFileError::Io(e) => BotError::ConfigFile {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
            UserFileError::Bot(b) => b,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| BotError::ConfigFile {
            path: path.to_path_buf(),
            message: "not UTF-8 text; point -c at the tbot YAML config".into(),
        })?;
        Self::from_yaml(&text).map_err(|e| BotError::ConfigFile {
            path: path.to_path_buf(),
            message: match e {
                BotError::Config(m) => m,
                other => other.to_string(),
            },
        })
    }

    /// The YAML this configuration amounts to (what `tbot configure` prints).
    pub fn to_yaml(&self) -> Result<String> {
        serde_norway::to_string(self).map_err(|e| BotError::Config(e.to_string()))
    }

    /// Applies flags over the file's values; returns the names of the settings a flag
    /// changed, so the caller can log them.
    pub fn apply(&mut self, o: Overrides) -> Vec<&'static str> {
        let mut changed = Vec::new();
        fn set<T: PartialEq>(
            slot: &mut T,
            value: T,
            name: &'static str,
            had: bool,
            changed: &mut Vec<&'static str>,
        ) {
            if had && *slot != value {
                changed.push(name);
            }
            *slot = value;
        }
        if let Some(v) = o.auth_server {
            // The flag replaces whichever key the file used; a list lands in auth_servers.
            let had = self.auth_server.is_some() || !self.auth_servers.is_empty();
            let entries: Vec<String> = v.split(',').map(|e| e.trim().to_string()).collect();
            let (single, list) = match entries.as_slice() {
                [one] => (Some(one.clone()), Vec::new()),
                _ => (None, entries),
            };
            if had && (self.auth_server != single || self.auth_servers != list) {
                changed.push("auth_server");
            }
            self.auth_server = single;
            self.auth_servers = list;
        }
        if let Some(v) = o.certificate_ttl {
            let had = self.certificate_ttl.is_some();
            set(
                &mut self.certificate_ttl,
                Some(v),
                "certificate_ttl",
                had,
                &mut changed,
            );
        }
        if let Some(v) = o.renewal_interval {
            let had = self.renewal_interval.is_some();
            set(
                &mut self.renewal_interval,
                Some(v),
                "renewal_interval",
                had,
                &mut changed,
            );
        }
        if o.oneshot {
            self.oneshot = true;
        }
        if let Some(v) = o.join_method {
            let had = self.onboarding.join_method != JoinMethod::default();
            set(
                &mut self.onboarding.join_method,
                v,
                "onboarding.join_method",
                had,
                &mut changed,
            );
        }
        if let Some(v) = o.token {
            let had = self.onboarding.token.is_some();
            set(
                &mut self.onboarding.token,
                Some(v),
                "onboarding.token",
                had,
                &mut changed,
            );
        }
        if !o.ca_pins.is_empty() {
            let had = !self.onboarding.ca_pins.is_empty();
            set(
                &mut self.onboarding.ca_pins,
                o.ca_pins,
                "onboarding.ca_pins",
                had,
                &mut changed,
            );
        }
        if let Some(v) = o.ca_path {
            let had = self.onboarding.ca_path.is_some();
            set(
                &mut self.onboarding.ca_path,
                Some(v),
                "onboarding.ca_path",
                had,
                &mut changed,
            );
        }
        if let Some(v) = o.data_dir {
            let had = self.storage.directory.is_some() || self.storage.memory.is_some();
            let before = self.storage.clone();
            self.storage = StorageConfig {
                directory: Some(v),
                memory: None,
            };
            if had && before != self.storage {
                changed.push("storage");
            }
        }
        if let Some(path) = o.destination_dir {
            match self.destinations.first_mut() {
                Some(first) => {
                    let symlinks = first
                        .directory
                        .as_ref()
                        .map(|d| d.symlinks)
                        .unwrap_or_default();
                    let new = Some(DirectoryConfig { path, symlinks });
                    if first.directory != new {
                        changed.push("destinations[0].directory");
                    }
                    first.directory = new;
                }
                None => self.destinations.push(DestinationConfig {
                    directory: Some(DirectoryConfig {
                        path,
                        symlinks: SymlinkPolicy::default(),
                    }),
                    roles: vec![],
                }),
            }
        }
        if o.insecure {
            self.insecure = true;
        }
        if let Some(v) = o.diag_addr {
            let had = self.diag_addr.is_some();
            set(&mut self.diag_addr, Some(v), "diag_addr", had, &mut changed);
        }
        changed
    }

    /// The auth servers to dial: `auth_server` (one address or a comma-separated list) or
    /// `auth_servers`, checked: an error says when none or both are set, an entry is empty,
    /// or an address has no port.
    pub fn auth_addrs(&self) -> Result<machine_id_client::AuthAddrs> {
        let single = self.auth_server.as_deref().unwrap_or_default();
        if !single.is_empty() && !self.auth_servers.is_empty() {
            return Err(BotError::Config(
                "both auth_server and auth_servers are set; keep one (auth_servers: [a:3025, b:3025] lists several)".into(),
            ));
        }
        if single.is_empty() && self.auth_servers.is_empty() {
            return Err(BotError::Config(
                "no auth server; pass --auth-server=host:3025 (or TELEPORT_AUTH_SERVER, or auth_server: in the config)".into(),
            ));
        }
        let addrs = if single.is_empty() {
            machine_id_client::AuthAddrs::from_list(&self.auth_servers)
        } else {
            machine_id_client::AuthAddrs::parse(single)
        }
        .map_err(|e| BotError::Config(e.to_string()))?;
        if let Some(auth) = addrs.as_slice().iter().find(|a| !a.contains(':')) {
            return Err(BotError::Config(format!(
                "auth server {auth:?} has no port; expected host:port, e.g. auth.example.com:3025"
            )));
        }
        Ok(addrs)
    }

    /// The certificate TTL in force.
    pub fn certificate_ttl(&self) -> Duration {
        self.certificate_ttl.unwrap_or(DEFAULT_CERTIFICATE_TTL)
    }

    /// The renewal interval in force.
    pub fn renewal_interval(&self) -> Duration {
        self.renewal_interval.unwrap_or(DEFAULT_RENEWAL_INTERVAL)
    }

    /// Checks what `tbot start` needs: an auth server, a token method we support, at least one
    /// destination with a path, non-zero durations.
    pub fn validate(&self) -> Result<()> {
        self.auth_addrs()?;
        if self.certificate_ttl().is_zero() || self.renewal_interval().is_zero() {
            return Err(BotError::Config(
                "certificate_ttl and renewal_interval must be longer than zero".into(),
            ));
        }
        for (i, d) in self.destinations.iter().enumerate() {
            if d.directory.is_none() {
                return Err(BotError::Config(format!(
                    "destinations[{i}] has no directory; give `directory: /path`"
                )));
            }
        }
        Ok(())
    }

    /// Whether the TTL is shorter than the interval (certificates would lapse between
    /// renewals); the caller warns.
    pub fn ttl_shorter_than_interval(&self) -> bool {
        self.certificate_ttl() < self.renewal_interval()
    }
}

/// Deserializes with the path of the failing field in the message.
fn serde_path_to_error_free<'de>(
    de: serde_norway::Deserializer<'de>,
) -> std::result::Result<BotConfig, String> {
    // `serde_norway` already reports line and column; add the field name it names.
    BotConfig::deserialize(de).map_err(|e| e.to_string())
}

/// Parses a Go-style duration flag (`60m`, `1h30m`, `90s`).
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    duration::parse(s).map_err(|e| e.to_string())
}

/// Parses a `--join-method` flag (`token` or `iam`).
pub fn parse_join_method(s: &str) -> std::result::Result<JoinMethod, String> {
    s.parse()
}

#[cfg(test)]
mod tests;
