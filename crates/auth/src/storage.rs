//! Where the cluster state lives: [`StorageConfig`] (SQLite in the data directory, the
//! default, or a PostgreSQL database that several auth servers share), its connection string
//! kept out of logs ([`ConnString`]), and opening the backend it names.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use machine_id_store::Backend;
use serde::Deserialize;

use crate::error::{AuthError, Result};

/// The environment variable the daemon reads the PostgreSQL connection string from, so that
/// its password need not be on a command line or in the config file.
pub const STORAGE_CONN_STRING_ENV: &str = "MACHINE_ID_STORAGE_CONN_STRING";

/// Where the cluster state lives.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum StorageConfig {
    /// `backend.db` in the data directory: one auth server (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL database every auth server of the cluster shares.
    Postgres {
        /// How to reach it.
        conn_string: ConnString,
    },
}

impl StorageConfig {
    /// `sqlite` or `postgresql`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            StorageConfig::Sqlite => "sqlite",
            StorageConfig::Postgres { .. } => "postgresql",
        }
    }
}

/// A PostgreSQL connection string (a `postgresql://` URI or libpq `key=value` words) whose
/// `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnString(String);

impl ConnString {
    /// The whole string, password included: only for the driver.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The string with its password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl FromStr for ConnString {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the PostgreSQL connection string is empty; expected e.g. postgresql://machine_id@db.example.com:5432/machine_id?sslmode=verify-full".into());
        }
        let uri = s.starts_with("postgresql://") || s.starts_with("postgres://");
        if !uri && !s.contains('=') {
            return Err(format!(
                "{:?} is not a PostgreSQL connection string; expected a postgresql://user@host:port/database URI or libpq words like \"host=db port=5432 user=machine_id dbname=machine_id\"",
                redact(s).chars().take(80).collect::<String>()
            ));
        }
        Ok(Self(s.to_string()))
    }
}

impl fmt::Debug for ConnString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnString({:?})", self.redacted())
    }
}

impl fmt::Display for ConnString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `s` with the password of a URI's user info, a `password=` word or a `password=` query
/// parameter replaced by `***`.
fn redact(s: &str) -> String {
    let mut out = s.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = &out[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let start = scheme_end + 3 + colon + 1;
            let end = scheme_end + 3 + at;
            out.replace_range(start..end, "***");
        }
    }
    // `password=...` as a libpq word (up to whitespace) or a query parameter (up to `&`).
    let mut result = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let boundary_ok = i == 0 || matches!(rest.as_bytes()[i - 1], b' ' | b'?' | b'&' | b'\t');
        result.push_str(&rest[..i + "password=".len()]);
        rest = &rest[i + "password=".len()..];
        if boundary_ok {
            let quoted = rest.starts_with('\'');
            let end = if quoted {
                rest[1..].find('\'').map_or(rest.len(), |j| j + 2)
            } else {
                rest.find([' ', '&', '\t']).unwrap_or(rest.len())
            };
            result.push_str("***");
            rest = &rest[end..];
        }
    }
    result.push_str(rest);
    result
}

/// The `storage` section of the daemon's config file.
///
/// ```yaml
/// storage:
///   type: postgresql          # or sqlite (the default)
///   conn_string: postgresql://machine_id@db.example.com:5432/machine_id?sslmode=verify-full
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFileConfig {
    /// `sqlite` (the default) or `postgresql` (also `postgres`).
    #[serde(default, rename = "type")]
    pub kind: Option<StorageKind>,
    /// The PostgreSQL connection string (better given through
    /// `MACHINE_ID_STORAGE_CONN_STRING` when it holds a password).
    #[serde(default)]
    pub conn_string: Option<String>,
}

/// The storage types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// SQLite in the data directory.
    Sqlite,
    /// PostgreSQL.
    #[serde(alias = "postgres")]
    Postgresql,
}

impl StorageFileConfig {
    /// The storage the file's section and a connection string from the command line or the
    /// environment (`override_conn`, which wins) name. A connection string means PostgreSQL.
    ///
    /// # Errors
    ///
    /// A message naming the field when the type and connection string disagree or the
    /// string is not a PostgreSQL connection string.
    pub fn resolve(
        &self,
        override_conn: Option<&str>,
    ) -> std::result::Result<StorageConfig, String> {
        let conn = override_conn.or(self.conn_string.as_deref());
        match (self.kind, conn) {
            (None | Some(StorageKind::Sqlite), None) => Ok(StorageConfig::Sqlite),
            (Some(StorageKind::Sqlite), Some(_)) => Err(
                "storage.type is sqlite but a PostgreSQL connection string is given (storage.conn_string, --storage-conn-string or MACHINE_ID_STORAGE_CONN_STRING); set storage.type: postgresql or drop the connection string".into(),
            ),
            (Some(StorageKind::Postgresql), None) => Err(
                "storage.type is postgresql but no connection string is given; set storage.conn_string, --storage-conn-string or MACHINE_ID_STORAGE_CONN_STRING".into(),
            ),
            (_, Some(c)) => Ok(StorageConfig::Postgres {
                conn_string: c.parse()?,
            }),
        }
    }
}

/// Opens the PostgreSQL backend `conn` names (creating or migrating its schema).
pub(crate) async fn open_postgres(conn: &ConnString) -> Result<Arc<dyn Backend>> {
    let backend = machine_id_store::PostgresBackend::connect(conn.expose())
        .await
        .map_err(|e| AuthError::StorageOpen {
            store: format!("PostgreSQL {}", conn.redacted()),
            cause: e,
        })?;
    Ok(Arc::new(backend))
}

/// Opens the backend `storage` names; SQLite lives in `data_dir`.
pub(crate) async fn open(storage: &StorageConfig, data_dir: &Path) -> Result<Arc<dyn Backend>> {
    match storage {
        StorageConfig::Sqlite => {
            crate::server::open_store(&data_dir.join(crate::BACKEND_FILE)).await
        }
        StorageConfig::Postgres { conn_string } => open_postgres(conn_string).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        for (s, want) in [
            (
                "postgresql://mid:s3cret@db:5432/machine_id?sslmode=verify-full",
                "postgresql://mid:***@db:5432/machine_id?sslmode=verify-full",
            ),
            ("postgres://mid@db/m", "postgres://mid@db/m"),
            (
                "host=db user=mid password=s3cret dbname=m",
                "host=db user=mid password=*** dbname=m",
            ),
            (
                "host=db password='a b c' dbname=m",
                "host=db password=*** dbname=m",
            ),
            (
                "postgresql://db/m?user=mid&password=s3cret&sslmode=require",
                "postgresql://db/m?user=mid&password=***&sslmode=require",
            ),
        ] {
            let c: ConnString = s.parse().unwrap();
            assert_eq!(c.to_string(), want);
            assert!(!format!("{c:?}").contains("s3cret"));
            assert!(!format!("{c:?}").contains("a b c"));
            assert_eq!(c.expose(), s);
        }
    }

    #[test]
    fn type_and_conn_string_must_agree() {
        let file = |kind, conn: Option<&str>| StorageFileConfig {
            kind,
            conn_string: conn.map(str::to_string),
        };
        assert_eq!(file(None, None).resolve(None), Ok(StorageConfig::Sqlite));
        let pg = file(None, None).resolve(Some("postgresql://db/m")).unwrap();
        assert_eq!(pg.kind(), "postgresql");
        let from_file = file(Some(StorageKind::Postgresql), Some("host=db"))
            .resolve(None)
            .unwrap();
        assert_eq!(from_file.kind(), "postgresql");
        let e = file(Some(StorageKind::Postgresql), None)
            .resolve(None)
            .unwrap_err();
        assert!(e.contains("no connection string"), "{e}");
        let e = file(Some(StorageKind::Sqlite), None)
            .resolve(Some("postgresql://db/m"))
            .unwrap_err();
        assert!(e.contains("storage.type is sqlite"), "{e}");
        let e = file(None, None)
            .resolve(Some("db.example.com"))
            .unwrap_err();
        assert!(e.contains("not a PostgreSQL connection string"), "{e}");
    }
}
