//! Unit tests of connection string parsing: the TLS settings split out of both forms, the
//! description, and errors that never repeat the password.

// Tests fail loudly on unexpected errors.
#![allow(clippy::unwrap_used)]

use super::*;

const T: Duration = Duration::from_secs(5);

fn message(result: Result<Settings, StoreError>) -> String {
    match result {
        Err(StoreError::Backend(m)) => m,
        Err(e) => panic!("expected a backend error, got {e}"),
        Ok(s) => panic!("expected an error, parsed {}", s.described),
    }
}

#[test]
fn uri_with_tls_parameters() {
    let s = parse(
        "postgresql://machine_id:p%40ss@db.example:5433/cluster?sslmode=verify-full\
         &application_name=x&sslrootcert=%2Fetc%2Fca.pem",
        T,
    )
    .unwrap();
    assert_eq!(s.ssl_mode, SslMode::VerifyFull);
    assert_eq!(
        s.root_cert.as_deref(),
        Some(std::path::Path::new("/etc/ca.pem"))
    );
    assert_eq!(s.described, "machine_id@db.example:5433/cluster");
    assert_eq!(s.config.get_password(), Some(&b"p@ss"[..]));
    assert_eq!(s.config.get_application_name(), Some("x"));
    assert_eq!(s.config.get_connect_timeout(), Some(&T));
    assert!(!format!("{:?}", s.config).contains("p@ss"));
}

#[test]
fn key_value_with_quotes_and_tls() {
    let s = parse(
        "host=10.0.0.1 port = 6000 user=admin password='sp ace' dbname=ha \
         sslmode=verify-ca sslrootcert='/a b/ca.pem' connect_timeout=2",
        T,
    );
    let s = match s {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(s.config.get_password(), Some(&b"sp ace"[..]));
    assert_eq!(s.ssl_mode, SslMode::VerifyCa);
    assert_eq!(
        s.root_cert.as_deref(),
        Some(std::path::Path::new("/a b/ca.pem"))
    );
    assert_eq!(s.described, "admin@10.0.0.1:6000/ha");
    assert_eq!(
        s.config.get_connect_timeout(),
        Some(&Duration::from_secs(2))
    );
}

#[test]
fn quoted_password_survives_the_split() {
    let s = parse(
        "host=h user=u password='a b\\'c' dbname=d sslmode=require",
        T,
    )
    .unwrap();
    assert_eq!(s.config.get_password(), Some(&b"a b'c"[..]));
    assert_eq!(s.ssl_mode, SslMode::Require);
}

#[test]
fn defaults_to_prefer_and_the_user_as_database() {
    let s = parse("postgres://u:pw@h", T).unwrap();
    assert_eq!(s.ssl_mode, SslMode::Prefer);
    assert_eq!(s.described, "u@h:5432/u");
}

#[test]
fn bad_strings_are_named_without_the_password() {
    let m = message(parse("postgresql://u:topsecret@h/db?sslmode=maybe", T));
    assert!(m.contains("sslmode=maybe"), "{m}");
    assert!(m.contains("expected postgresql://"), "{m}");
    assert!(!m.contains("topsecret"), "{m}");
    let m = message(parse("host=h password=topsecret frobnicate=1", T));
    assert!(m.contains("frobnicate"), "{m}");
    assert!(!m.contains("topsecret"), "{m}");
    let m = message(parse("user=u password='topsecret", T));
    assert!(m.contains("not closed"), "{m}");
    assert!(!m.contains("topsecret"), "{m}");
    let m = message(parse("user=u dbname=d", T));
    assert!(m.contains("no host"), "{m}");
}
