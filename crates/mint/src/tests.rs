//! Unit tests across modules: minting and reading back.

use super::*;
use std::collections::BTreeMap;
use time::{Duration, OffsetDateTime};

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("whole second")
}

pub(crate) fn identity(now: OffsetDateTime) -> Identity {
    Identity {
        username: "bot-robot".into(),
        roles: vec!["bot-robot".into(), "access".into(), "editor".into()],
        logins: vec!["root".into(), "ubuntu".into()],
        traits: BTreeMap::from([("logins".to_string(), vec!["root".to_string()])]),
        renewable: true,
        generation: 7,
        impersonator: None,
        disallow_reissue: false,
        cluster: "example.com".into(),
        expires: now + Duration::hours(1),
    }
}

/// Checks `cert_der`'s signature with the key of `ca_der`, with ring.
fn verify(cert_der: &[u8], ca_der: &[u8]) {
    use ring::signature as rs;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).expect("cert");
    let (_, ca) = x509_parser::parse_x509_certificate(ca_der).expect("ca");
    let oid = cert.signature_algorithm.algorithm.to_id_string();
    let alg: &dyn rs::VerificationAlgorithm = match oid.as_str() {
        "1.2.840.10045.4.3.2" => &rs::ECDSA_P256_SHA256_ASN1,
        "1.2.840.113549.1.1.11" => &rs::RSA_PKCS1_2048_8192_SHA256,
        "1.3.101.112" => &rs::ED25519,
        other => panic!("unexpected signature algorithm {other}"),
    };
    // The SPKI bit string holds what ring wants: the point, the Ed25519 key, or the
    // PKCS#1 RSAPublicKey.
    let key = rs::UnparsedPublicKey::new(alg, &ca.public_key().subject_public_key.data);
    key.verify(cert.tbs_certificate.as_ref(), &cert.signature_value.data)
        .expect("signature verifies");
}

#[test]
fn tls_identity_round_trip() {
    let now = now();
    let ca = CaKeys::generate("example.com", Suite::Default, now)
        .expect("ca")
        .signer()
        .expect("signer");
    let key = PrivateKey::generate(Suite::Default).expect("key");
    let mut id = identity(now);
    let der = ca
        .sign_user_tls_cert(&key.public_key(), &id, now)
        .expect("cert");
    assert_eq!(parse_tls_identity(&der).expect("parse"), id);

    id.renewable = false;
    id.impersonator = Some("bot-robot".into());
    id.disallow_reissue = true;
    id.generation = 0;
    id.traits.clear();
    let der = ca
        .sign_user_tls_cert(&key.public_key(), &id, now)
        .expect("cert");
    assert_eq!(parse_tls_identity(&der).expect("parse"), id);
}

#[test]
fn tls_identity_many_and_long_values() {
    let now = now();
    let ca = CaKeys::generate("example.com", Suite::Default, now)
        .expect("ca")
        .signer()
        .expect("signer");
    let key = PrivateKey::generate(Suite::Default).expect("key");
    let mut id = identity(now);
    // Reverse-sorted names: order must survive (a multi-valued RDN would sort them).
    id.roles = (0..60).rev().map(|i| format!("role-{i:03}")).collect();
    id.logins = (0..40).rev().map(|i| format!("login{i}")).collect();
    id.username = format!("bot-{}", "x".repeat(300));
    id.roles.push("r".repeat(1000));
    id.traits
        .insert("k".repeat(200), vec!["v,=+\"\\<>;".repeat(50)]);
    let der = ca
        .sign_user_tls_cert(&key.public_key(), &id, now)
        .expect("cert");
    assert_eq!(parse_tls_identity(&der).expect("parse"), id);
}

#[test]
fn tls_cert_fields() {
    let now = now();
    let ca = CaKeys::generate("example.com", Suite::Default, now)
        .expect("ca")
        .signer()
        .expect("signer");
    let key = PrivateKey::generate(Suite::Default).expect("key");
    let id = identity(now);
    let der = ca
        .sign_user_tls_cert(&key.public_key(), &id, now)
        .expect("cert");
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
    assert_eq!(
        cert.validity().not_before.to_datetime(),
        now - Duration::minutes(1)
    );
    assert_eq!(cert.issuer().to_string(), "O=example.com, CN=example.com");
    assert!(cert.tbs_certificate.raw_serial().len() >= 15);
    let ku = cert.key_usage().expect("ku").expect("present");
    assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_cert_sign());
    let eku = cert.extended_key_usage().expect("eku").expect("present");
    assert!(eku.value.client_auth && eku.value.server_auth);
    // Signed by the CA.
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.tls_ca_cert_der()).expect("ca");
    verify(&der, ca.tls_ca_cert_der());
    verify(ca.tls_ca_cert_der(), ca.tls_ca_cert_der());
    assert!(ca_cert.is_ca());
    // Pin of the CA.
    let pin = CaPin::from_cert_der(ca.tls_ca_cert_der()).expect("pin");
    assert!(pin.to_string().starts_with("sha256:"));
    assert!(pin.matches(&CaPin::parse(&pin.to_string()).expect("parse")));
}

#[test]
fn rejects_expired_or_empty() {
    let now = now();
    let ca = CaKeys::generate("example.com", Suite::Default, now)
        .expect("ca")
        .signer()
        .expect("signer");
    let key = PrivateKey::generate(Suite::Default)
        .expect("key")
        .public_key();
    let mut id = identity(now);
    id.expires = now - Duration::seconds(1);
    assert!(matches!(
        ca.sign_user_tls_cert(&key, &id, now),
        Err(MintError::InvalidValidity(_))
    ));
    assert!(matches!(
        ca.sign_user_ssh_cert(&key, &id, now),
        Err(MintError::InvalidValidity(_))
    ));
    assert!(
        ca.sign_host_ssh_cert(&key, &[], now, now + Duration::hours(1))
            .is_err()
    );
    assert!(
        ca.sign_server_tls_cert(&key, &[], &[], now, now + Duration::hours(1))
            .is_err()
    );
    assert!(parse_tls_identity(b"garbage").is_err());
}

#[test]
fn ssh_user_cert_contents() {
    let now = now();
    let ca = CaKeys::generate("example.com", Suite::Default, now)
        .expect("ca")
        .signer()
        .expect("signer");
    let key = PrivateKey::generate(Suite::Default).expect("key");
    let id = identity(now);
    let line = ca
        .sign_user_ssh_cert(&key.public_key(), &id, now)
        .expect("cert");
    let cert = ssh_key::Certificate::from_openssh(&line).expect("parse");
    assert_eq!(cert.key_id(), "bot-robot");
    assert_eq!(cert.valid_principals(), ["root", "ubuntu"]);
    assert_eq!(cert.cert_type(), ssh_key::certificate::CertType::User);
    assert_eq!(
        cert.valid_after(),
        (now - Duration::minutes(1)).unix_timestamp() as u64
    );
    assert_eq!(cert.valid_before(), id.expires.unix_timestamp() as u64);
    let ext = cert.extensions();
    assert!(ext.contains_key("permit-pty"));
    assert_eq!(
        ext.get(ssh_ext::ROLES).map(String::as_str),
        Some(r#"{"roles":["bot-robot","access","editor"],"version":"v1"}"#)
    );
    assert_eq!(ext.get(ssh_ext::GENERATION).map(String::as_str), Some("7"));
    assert!(ext.contains_key(ssh_ext::RENEWABLE));
    assert_eq!(
        ext.get(ssh_ext::ROUTE_TO_CLUSTER).map(String::as_str),
        Some("example.com")
    );
    let ca_fp = ssh_fingerprint(&ca.user_ca_openssh()).expect("fp");
    cert.validate_at(
        now.unix_timestamp() as u64,
        &[ca_fp.parse().expect("fingerprint")],
    )
    .expect("valid");
    assert_eq!(
        ssh_fingerprint(&line).expect("cert fp"),
        ssh_fingerprint(&key.public_key().to_openssh()).expect("key fp")
    );
}

#[test]
fn ssh_user_cert_without_logins_is_not_a_golden_ticket() {
    let now = now();
    let ca = CaKeys::generate("example.com", Suite::Default, now)
        .expect("ca")
        .signer()
        .expect("signer");
    let key = PrivateKey::generate(Suite::Default).expect("key");
    let mut id = identity(now);
    id.logins.clear();
    let line = ca
        .sign_user_ssh_cert(&key.public_key(), &id, now)
        .expect("cert");
    let cert = ssh_key::Certificate::from_openssh(&line).expect("parse");
    assert_eq!(cert.valid_principals().len(), 1);
    assert!(cert.valid_principals()[0].starts_with("-teleport-nologin-"));
}

#[test]
fn ssh_host_cert_contents() {
    let now = now();
    let ca = CaKeys::generate("example.com", Suite::Default, now)
        .expect("ca")
        .signer()
        .expect("signer");
    let key = PrivateKey::generate(Suite::Default).expect("key");
    let principals = vec!["node1".to_string(), "node1.example.com".to_string()];
    let line = ca
        .sign_host_ssh_cert(&key.public_key(), &principals, now, now + Duration::days(1))
        .expect("cert");
    let cert = ssh_key::Certificate::from_openssh(&line).expect("parse");
    assert_eq!(cert.cert_type(), ssh_key::certificate::CertType::Host);
    assert_eq!(cert.key_id(), "node1");
    assert_eq!(cert.valid_principals(), &principals[..]);
}

#[test]
fn legacy_suite_signs_both_kinds() {
    let now = now();
    let keys = CaKeys::generate("legacy.example", Suite::Legacy, now).expect("ca");
    let back = CaKeys::from_bytes(&keys.to_bytes()).expect("round trip");
    let ca = back.signer().expect("signer");
    assert!(ca.user_ca_openssh().starts_with("ssh-rsa "));
    let key = PrivateKey::generate(Suite::Legacy).expect("key");
    assert!(key.to_pem().starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert_eq!(
        PrivateKey::from_pem(&key.to_pem())
            .expect("read")
            .public_key(),
        key.public_key()
    );
    let mut id = identity(now);
    id.cluster = "legacy.example".into();
    let line = ca
        .sign_user_ssh_cert(&key.public_key(), &id, now)
        .expect("ssh");
    assert!(line.starts_with("ssh-rsa-cert-v01@openssh.com "));
    let cert = ssh_key::Certificate::from_openssh(&line).expect("parse");
    let ca_fp = ssh_fingerprint(&ca.user_ca_openssh()).expect("fp");
    cert.validate_at(
        now.unix_timestamp() as u64,
        &[ca_fp.parse().expect("fingerprint")],
    )
    .expect("valid rsa-sha2-512 signature");
    let der = ca
        .sign_user_tls_cert(&key.public_key(), &id, now)
        .expect("tls");
    assert_eq!(parse_tls_identity(&der).expect("parse"), id);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("parse");
    let (_, ca_cert) = x509_parser::parse_x509_certificate(ca.tls_ca_cert_der()).expect("ca");
    verify(&der, ca.tls_ca_cert_der());
    drop((cert, ca_cert));
}

#[test]
fn pem_helpers() {
    let now = now();
    let keys = CaKeys::generate("example.com", Suite::Default, now).expect("ca");
    let pem = cert_der_to_pem(keys.tls_ca_cert_der());
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    let two = format!("{pem}{pem}");
    let certs = certs_from_pem(&two).expect("certs");
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[0], keys.tls_ca_cert_der());
    assert!(certs_from_pem("").is_err());
    assert!(certs_from_pem(&key::encode_pem("CERTIFICATE", b"junk")).is_err());
}
