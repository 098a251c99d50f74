//! `openssl verify` and `openssl x509 -text` judge the X.509 certificates.

use crate::common::{fixture, identity, run, run_ok, write};
use machine_id_mint::{CaPin, Suite, cert_der_to_pem};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use time::Duration;

fn check(suite: Suite) {
    let f = fixture(suite);
    let dir = tempfile::tempdir().expect("tempdir");
    let id = identity("example.com", f.now);
    let user = f
        .signer
        .sign_user_tls_cert(&f.key.public_key(), &id, f.now)
        .expect("user cert");
    let server = f
        .signer
        .sign_server_tls_cert(
            &f.key.public_key(),
            &["auth.example.com".to_string()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            f.now,
            f.now + Duration::hours(2),
        )
        .expect("server cert");
    let ca = write(
        dir.path(),
        "ca.pem",
        &cert_der_to_pem(f.signer.tls_ca_cert_der()),
    );
    let user_pem = write(dir.path(), "cert.pem", &cert_der_to_pem(&user));
    let server_pem = write(dir.path(), "server.pem", &cert_der_to_pem(&server));

    let out = run_ok(
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(&ca)
            .arg(&user_pem),
    );
    assert!(out.contains("cert.pem: OK"), "{out}");
    let out = run_ok(
        Command::new("openssl")
            .args(["verify", "-purpose", "sslclient", "-x509_strict", "-CAfile"])
            .arg(&ca)
            .arg(&user_pem),
    );
    assert!(out.contains(": OK"), "{out}");
    let out = run_ok(
        Command::new("openssl")
            .args(["verify", "-purpose", "sslserver", "-x509_strict", "-CAfile"])
            .arg(&ca)
            .arg(&server_pem),
    );
    assert!(out.contains(": OK"), "{out}");
    // The user cert is not a CA: nothing it signs would verify, and openssl says it is no CA.
    let (ok, out) = run(Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&user_pem)
        .arg(&server_pem));
    assert!(!ok, "{out}");

    let text = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-nameopt", "RFC2253", "-in"])
            .arg(&user_pem),
    );
    for want in [
        "CN=bot-robot",
        "O=bot-robot",
        "O=access",
        "O=editor",
        "L=root",
        "L=ubuntu",
        "Issuer: CN=example.com,O=example.com",
        "TLS Web Client Authentication, TLS Web Server Authentication",
        "Digital Signature",
        "X509v3 Subject Key Identifier",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(text.contains(want), "{want} not in\n{text}");
    }
    let server_text = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&server_pem),
    );
    assert!(
        server_text.contains("DNS:auth.example.com, IP Address:127.0.0.1"),
        "{server_text}"
    );
    let ca_text = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in"])
            .arg(&ca),
    );
    assert!(ca_text.contains("CA:TRUE"), "{ca_text}");
    assert!(ca_text.contains("Certificate Sign, CRL Sign"), "{ca_text}");

    // The pin equals sha256 over the DER SPKI as openssl computes it.
    let spki = Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(&ca)
        .output()
        .expect("openssl pubkey");
    let spki_pem = write(
        dir.path(),
        "spki.pem",
        &String::from_utf8_lossy(&spki.stdout),
    );
    let der = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER", "-in"])
        .arg(&spki_pem)
        .output()
        .expect("openssl pkey");
    assert!(der.status.success());
    let pin = CaPin::from_cert_der(f.signer.tls_ca_cert_der()).expect("pin");
    assert_eq!(pin, CaPin::from_spki_der(&der.stdout));

    // OpenSSL reads the subject private key and it matches the certificate.
    let key = write(dir.path(), "key", &f.key.to_pem());
    let cert_pub = run_ok(
        Command::new("openssl")
            .args(["x509", "-noout", "-pubkey", "-in"])
            .arg(&user_pem),
    );
    let key_pub = run_ok(
        Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&key),
    );
    assert_eq!(cert_pub, key_pub);
}

#[test]
fn openssl_accepts_default_suite_certs() {
    check(Suite::Default);
}

#[test]
fn openssl_accepts_legacy_suite_certs() {
    check(Suite::Legacy);
}
