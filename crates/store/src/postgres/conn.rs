//! The connection string: a libpq URI (`postgresql://user:password@host:port/db?sslmode=...`)
//! or `key=value` pairs, split into what tokio-postgres understands and the TLS settings it
//! does not (`sslmode=verify-ca|verify-full`, `sslrootcert`); the password-free description
//! used in logs; and connection errors turned into one line that says what to check.

use std::path::PathBuf;
use std::time::Duration;

use crate::StoreError;

/// How to use TLS to the database, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS if the server offers it (certificate checked only when `sslrootcert` is given).
    Prefer,
    /// TLS always (certificate checked only when `sslrootcert` is given, as libpq does).
    Require,
    /// TLS, the certificate chain checked against `sslrootcert`.
    VerifyCa,
    /// TLS, the chain checked and the certificate must name the host.
    VerifyFull,
}

/// A parsed connection string.
pub(super) struct Settings {
    /// Everything but the TLS settings; its `Debug` hides the password.
    pub config: tokio_postgres::Config,
    pub ssl_mode: SslMode,
    /// `sslrootcert`: a PEM file of the CA certificates to trust.
    pub root_cert: Option<PathBuf>,
    /// `user@host:port/dbname`, no password.
    pub described: String,
}

/// What a bad connection string is told to look like.
const EXPECTED: &str = "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE?sslmode=verify-full\
                        &sslrootcert=/path/ca.pem, or key=value pairs such as host=... user=... \
                        dbname=...";

/// Parses `conn_string`; the error never repeats the string (it may hold a password).
pub(super) fn parse(conn_string: &str, connect_timeout: Duration) -> Result<Settings, StoreError> {
    let bad = |what: String| {
        StoreError::Backend(format!("invalid storage.conn_string: {what}; {EXPECTED}"))
    };
    let (rest, tls) = if ["postgresql://", "postgres://"]
        .iter()
        .any(|p| conn_string.starts_with(p))
    {
        split_uri(conn_string).map_err(bad)?
    } else {
        split_pairs(conn_string).map_err(bad)?
    };
    let mut ssl_mode = SslMode::Prefer;
    let mut root_cert = None;
    for (key, value) in tls {
        match key.as_str() {
            "sslmode" => {
                ssl_mode = match value.as_str() {
                    "disable" => SslMode::Disable,
                    "prefer" | "allow" => SslMode::Prefer,
                    "require" => SslMode::Require,
                    "verify-ca" => SslMode::VerifyCa,
                    "verify-full" => SslMode::VerifyFull,
                    other => {
                        return Err(bad(format!(
                            "sslmode={other} is not one of disable, prefer, require, verify-ca, \
                             verify-full"
                        )));
                    }
                }
            }
            _ => root_cert = Some(PathBuf::from(value)),
        }
    }
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e: tokio_postgres::Error| {
        // The driver's messages name the option, never its value.
        match std::error::Error::source(&e) {
            Some(source) => bad(format!("{e}: {source}")),
            None => bad(e.to_string()),
        }
    })?;
    if config.get_hosts().is_empty() {
        return Err(bad("no host given".to_owned()));
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(connect_timeout);
    }
    config.ssl_mode(match ssl_mode {
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        _ => tokio_postgres::config::SslMode::Require,
    });
    if config.get_application_name().is_none() {
        config.application_name("machine-id");
    }
    let described = describe(&config);
    Ok(Settings {
        config,
        ssl_mode,
        root_cert,
        described,
    })
}

/// `user@host:port[,host:port]/dbname`.
fn describe(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("?");
    format!(
        "{user}@{}/{}",
        hosts(config),
        config.get_dbname().unwrap_or(user)
    )
}

/// `host:port[,host:port]` (a Unix socket directory shows as its path).
fn hosts(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match host {
                tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(dir) => format!("{}:{port}", dir.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Splits the `sslmode` and `sslrootcert` parameters out of a URI.
#[allow(clippy::type_complexity)] // (the rest, the (key, value) pairs taken out)
fn split_uri(uri: &str) -> Result<(String, Vec<(String, String)>), String> {
    let Some((base, query)) = uri.split_once('?') else {
        return Ok((uri.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param
            .split_once('=')
            .ok_or_else(|| "a URI parameter without '='".to_owned())?;
        let key = percent_decode(key)?;
        if is_tls_key(&key) {
            taken.push((key, percent_decode(value)?));
        } else {
            kept.push(param);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, taken))
}

/// Splits the `sslmode` and `sslrootcert` pairs out of a libpq `key=value` string, whose
/// values may be single-quoted with backslash escapes.
#[allow(clippy::type_complexity)] // (the rest, the (key, value) pairs taken out)
fn split_pairs(s: &str) -> Result<(String, Vec<(String, String)>), String> {
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!("`{key}` is not followed by '='"));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, c)) => value.push(c),
                        None => return Err("a quoted value ends with a backslash".to_owned()),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("the quoted value of `{key}` is not closed")),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(s.len(), |&(i, _)| i);
        if is_tls_key(&key) {
            taken.push((key, value));
        } else {
            kept.push(s[start..end].trim_end());
        }
    }
    Ok((kept.join(" "), taken))
}

fn is_tls_key(key: &str) -> bool {
    key == "sslmode" || key == "sslrootcert"
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a bad %-escape in a URI parameter".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a URI parameter is not UTF-8".to_owned())
}

/// Turns a failed connection attempt into one line: where, as whom, why, what to check.
/// Network failures are [`StoreError::Unavailable`], refusals (password, database name,
/// certificate) [`StoreError::Backend`].
pub(super) fn connect_error(settings: &Settings, e: &tokio_postgres::Error) -> StoreError {
    let config = &settings.config;
    let user = config.get_user().unwrap_or("?");
    let where_ = format!(
        "cannot connect to PostgreSQL at {} (database {}, user {user})",
        hosts(config),
        config.get_dbname().unwrap_or(user)
    );
    if let Some(db) = e.as_db_error() {
        use tokio_postgres::error::SqlState;
        let code = db.code();
        let hint = if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            "check the user and password in storage.conn_string and pg_hba.conf"
        } else if *code == SqlState::INVALID_CATALOG_NAME {
            "create the database (CREATE DATABASE ... OWNER ...) or fix its name in \
             storage.conn_string"
        } else if *code == SqlState::TOO_MANY_CONNECTIONS || code.code().starts_with("57P") {
            return StoreError::Unavailable(format!(
                "{where_}: {}; retry when the server accepts connections",
                db.message()
            ));
        } else {
            "check storage.conn_string"
        };
        return StoreError::Backend(format!("{where_}: {}; {hint}", db.message()));
    }
    let mut cause = e.to_string();
    let mut source = std::error::Error::source(e);
    let mut tls = false;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref()
                && inner.downcast_ref::<rustls::Error>().is_some()
            {
                tls = true;
                cause = format!("TLS: {inner}");
            } else {
                cause = io_cause(io);
            }
        } else if s.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
            cause = format!("TLS: {s}");
        }
        source = s.source();
    }
    if tls {
        return StoreError::Backend(format!(
            "{where_}: {cause}; check sslmode and sslrootcert in storage.conn_string (with \
             sslmode=verify-full the server certificate must name the host)"
        ));
    }
    if cause.contains("server does not support TLS") {
        return StoreError::Backend(format!(
            "{where_}: the server does not support TLS; enable ssl on the server or use \
             sslmode=disable"
        ));
    }
    StoreError::Unavailable(format!(
        "{where_}: {cause}; check storage.conn_string and that the server is up"
    ))
}

fn io_cause(io: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match io.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        ErrorKind::TimedOut => "timed out".to_owned(),
        ErrorKind::ConnectionReset => "connection reset".to_owned(),
        ErrorKind::NotFound => "no such host or socket".to_owned(),
        _ => io.to_string(),
    }
}

#[cfg(test)]
mod tests;
