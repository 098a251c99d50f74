//! The v1 YAML configuration of `tbot` and the flags that override it.
//!
//! ```yaml
//! auth_server: auth.example.com:3025
//! certificate_ttl: 60m
//! renewal_interval: 20m
//! oneshot: false
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
use machine_id_join::token::TokenSecret;
pub use machine_id_types::JoinMethod;
use machine_id_types::duration;
use serde::{Deserialize, Serialize};

use crate::{BotError, Result};

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
    /// The auth server, `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_server: Option<String>,
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
    /// `--auth-server`.
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
            let had = self.auth_server.is_some();
            set(
                &mut self.auth_server,
                Some(v),
                "auth_server",
                had,
                &mut changed,
            );
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
        let auth = self.auth_server.as_deref().unwrap_or_default();
        if auth.is_empty() {
            return Err(BotError::Config(
                "no auth server; pass --auth-server=host:3025 (or TELEPORT_AUTH_SERVER, or auth_server: in the config)".into(),
            ));
        }
        if !auth.contains(':') {
            return Err(BotError::Config(format!(
                "auth server {auth:?} has no port; expected host:port, e.g. auth.example.com:3025"
            )));
        }
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

/// Resolves the `token` setting: a path to an existing file (or anything starting with `/` or
/// `./`) is read and trimmed; anything else is the token itself.
pub fn resolve_token(value: &str) -> Result<TokenSecret> {
    let path = Path::new(value);
    let looks_like_path =
        value.starts_with('/') || value.starts_with("./") || value.starts_with("../");
    if looks_like_path || path.is_file() {
        let bytes = read_user_file(
            path,
            crate::bounded::TOKEN_FILE_LIMIT,
            "token file",
            "point --token (or onboarding.token) at the file that holds only the token, or pass the token itself",
        )
        .map_err(|e| match e {
            UserFileError::Io(source) => BotError::TokenFile {
                path: path.to_path_buf(),
                source,
            },
            UserFileError::Bot(b) => b,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| {
            BotError::Config(format!(
                "the token file {} is not text; point --token at the file that holds only the token",
                path.display()
            ))
        })?;
        let token = TokenSecret::new(text);
        if token.expose().is_empty() {
            return Err(BotError::Config(format!(
                "the token file {} is empty",
                path.display()
            )));
        }
        return Ok(token);
    }
    Ok(TokenSecret::new(value))
}

/// Why [`read_user_file`] failed.
pub(crate) enum UserFileError {
    /// Opening or reading failed; the caller names the file.
    Io(std::io::Error),
    /// Too large: the full error.
    Bot(BotError),
}

/// Reads a file the user pointed at with a bounded reader; too large is
/// [`BotError::FileTooLarge`] with `what` and `fix`.
pub(crate) fn read_user_file(
    path: &Path,
    limit: u64,
    what: &'static str,
    fix: &'static str,
) -> std::result::Result<Vec<u8>, UserFileError> {
    crate::bounded::read_bounded(path, limit).map_err(|e| match e {
        crate::bounded::ReadError::Io(e) => UserFileError::Io(e),
        crate::bounded::ReadError::TooLarge { size } => {
            UserFileError::Bot(BotError::FileTooLarge {
                what,
                path: path.to_path_buf(),
                size,
                limit,
                fix,
            })
        }
    })
}

/// `path` made absolute with symlinks resolved, as far as it exists: the nearest existing
/// ancestor is canonicalized and the rest appended (`..` and `.` in the rest are applied
/// lexically), so paths that do not exist yet compare as they will once created.
pub fn resolve_lenient(path: &Path) -> PathBuf {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            let mut out = c;
            for part in rest.iter().rev() {
                match part {
                    std::path::Component::ParentDir => {
                        out.pop();
                    }
                    std::path::Component::Normal(p) => out.push(p),
                    _ => {}
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return absolute,
        }
    }
}

/// Refuses a destination that is, contains or lies inside the data directory (compared
/// after [`resolve_lenient`], so symlinks and `..` do not hide an overlap).
pub fn check_overlap(data_dir: &Path, destination: &Path) -> Result<()> {
    let data = resolve_lenient(data_dir);
    let dest = resolve_lenient(destination);
    let relation = if data == dest {
        "is"
    } else if dest.starts_with(&data) {
        "lies inside"
    } else if data.starts_with(&dest) {
        "contains"
    } else {
        return Ok(());
    };
    Err(BotError::Overlap {
        destination: destination.to_path_buf(),
        data_dir: data_dir.to_path_buf(),
        relation,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    const FULL: &str = r#"
auth_server: auth.example.com:3025
certificate_ttl: 30m
renewal_interval: 10m
oneshot: true
onboarding:
  join_method: token
  token: abcd
  ca_pins: ["sha256:00"]
storage:
  directory: /var/lib/bot
destinations:
  - directory:
      path: /opt/machine-id
      symlinks: secure
    roles: [access]
  - directory: /opt/other
"#;

    #[test]
    fn parses_the_v1_shape() {
        let c = BotConfig::from_yaml(FULL).unwrap();
        assert_eq!(c.auth_server.as_deref(), Some("auth.example.com:3025"));
        assert_eq!(c.certificate_ttl(), Duration::from_secs(1800));
        assert_eq!(c.renewal_interval(), Duration::from_secs(600));
        assert!(c.oneshot);
        assert_eq!(c.onboarding.token.as_deref(), Some("abcd"));
        assert_eq!(c.storage.data_dir(), Some(PathBuf::from("/var/lib/bot")));
        assert_eq!(c.destinations.len(), 2);
        let d0 = c.destinations[0].directory.as_ref().unwrap();
        assert_eq!(d0.symlinks, SymlinkPolicy::Secure);
        assert_eq!(c.destinations[0].roles, ["access"]);
        let d1 = c.destinations[1].directory.as_ref().unwrap();
        assert_eq!(d1.path, PathBuf::from("/opt/other"));
        assert_eq!(d1.symlinks, SymlinkPolicy::TrySecure);
        c.validate().unwrap();
    }

    #[test]
    fn defaults() {
        let c = BotConfig::from_yaml("auth_server: a:1\n").unwrap();
        assert_eq!(c.certificate_ttl(), DEFAULT_CERTIFICATE_TTL);
        assert_eq!(c.renewal_interval(), DEFAULT_RENEWAL_INTERVAL);
        assert_eq!(c.storage.data_dir(), Some(PathBuf::from(DEFAULT_DATA_DIR)));
        let m = BotConfig::from_yaml("storage:\n  memory: {}\n").unwrap();
        assert_eq!(m.storage.data_dir(), None);
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_refused() {
        let e = BotConfig::from_yaml("auth_servr: a:1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth_servr"), "{e}");
        let e = BotConfig::from_yaml("certificate_ttl: 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unit"), "{e}");
        let e = BotConfig::from_yaml("destinations:\n - directory: {path: /x, symlinks: nope}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid configuration"), "{e}");
    }

    #[test]
    fn flags_override_and_say_so() {
        let mut c = BotConfig::from_yaml(FULL).unwrap();
        let changed = c.apply(Overrides {
            auth_server: Some("other:3025".into()),
            certificate_ttl: Some(Duration::from_secs(60)),
            destination_dir: Some("/tmp/d".into()),
            token: Some("abcd".into()),
            ..Overrides::default()
        });
        assert_eq!(c.auth_server.as_deref(), Some("other:3025"));
        assert_eq!(c.certificate_ttl(), Duration::from_secs(60));
        let d0 = c.destinations[0].directory.as_ref().unwrap();
        assert_eq!(d0.path, PathBuf::from("/tmp/d"));
        assert_eq!(
            d0.symlinks,
            SymlinkPolicy::Secure,
            "the file's policy is kept"
        );
        assert!(changed.contains(&"auth_server"));
        assert!(changed.contains(&"certificate_ttl"));
        assert!(changed.contains(&"destinations[0].directory"));
        assert!(
            !changed.contains(&"onboarding.token"),
            "same value: not an override"
        );
        assert!(c.ttl_shorter_than_interval());
    }

    #[test]
    fn configure_round_trips() {
        let mut c = BotConfig::default();
        c.apply(Overrides {
            auth_server: Some("127.0.0.1:3025".into()),
            token: Some("t".into()),
            ca_pins: vec!["sha256:ab".into()],
            destination_dir: Some("/opt/machine-id".into()),
            data_dir: Some("/var/lib/bot".into()),
            certificate_ttl: Some(Duration::from_secs(3600)),
            ..Overrides::default()
        });
        let yaml = c.to_yaml().unwrap();
        assert!(yaml.contains("certificate_ttl: 1h0m0s"), "{yaml}");
        assert_eq!(BotConfig::from_yaml(&yaml).unwrap(), c);
    }

    #[test]
    fn validate_names_the_fix() {
        let e = BotConfig::default().validate().unwrap_err().to_string();
        assert!(e.contains("--auth-server"), "{e}");
        let e = BotConfig::from_yaml("auth_server: host\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("no port"), "{e}");
    }

    #[test]
    fn overlapping_destination_and_data_dir_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let data = base.join("data");
        std::fs::create_dir(&data).unwrap();
        for (dest, relation) in [
            (data.clone(), "is"),
            (base.join("data/out"), "lies inside"),
            (base.join("data/a/../out/x"), "lies inside"),
            (base.to_path_buf(), "contains"),
            (base.join("new/../data"), "is"),
        ] {
            let e = check_overlap(&data, &dest).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!(
                    "destination {} {relation} the data directory {}",
                    dest.display(),
                    data.display()
                )),
                "{msg}"
            );
            assert!(
                msg.contains("--destination-dir outside --data-dir"),
                "{msg}"
            );
        }
        // Through a symlink.
        std::os::unix::fs::symlink(&data, base.join("link")).unwrap();
        let e = check_overlap(&data, &base.join("link/out")).unwrap_err();
        assert!(e.to_string().contains("lies inside"), "{e}");
        // Siblings with a common prefix do not overlap.
        check_overlap(&data, &base.join("data2")).unwrap();
        check_overlap(&base.join("not-yet/data"), &base.join("not-yet/dest")).unwrap();
        let e = check_overlap(&base.join("not-yet/data"), &base.join("not-yet")).unwrap_err();
        assert!(e.to_string().contains("contains"), "{e}");
    }

    #[test]
    fn oversized_user_files_are_refused_with_size_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, vec![b'a'; 70_000]).unwrap();
        let e = resolve_token(f.to_str().unwrap()).unwrap_err().to_string();
        assert_eq!(
            e,
            format!(
                "the token file {} is 70000 bytes, more than the 65536-byte limit for a token file; point --token (or onboarding.token) at the file that holds only the token, or pass the token itself",
                f.display()
            )
        );
        let c = dir.path().join("tbot.yaml");
        std::fs::write(&c, vec![b'#'; (1 << 20) + 1]).unwrap();
        let e = BotConfig::load(&c).unwrap_err().to_string();
        assert!(
            e.contains("is 1048577 bytes, more than the 1048576-byte limit for a config file"),
            "{e}"
        );
        let e = resolve_token("/dev/zero").unwrap_err().to_string();
        assert!(e.contains("/dev/zero is more than 65536 bytes"), "{e}");
    }

    #[test]
    fn token_from_file_or_value() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "secret\n").unwrap();
        assert_eq!(
            resolve_token(f.to_str().unwrap()).unwrap().expose(),
            "secret"
        );
        assert_eq!(resolve_token("abc").unwrap().expose(), "abc");
        let e = resolve_token("/no/such/token").unwrap_err().to_string();
        assert!(e.contains("/no/such/token"), "{e}");
    }
}
