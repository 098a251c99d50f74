//! `ssh-keygen` reads our keys and certificates.

use crate::common::{fixture, run_ok, write};
use machine_id_mint::{Suite, ssh_fingerprint};
use std::process::Command;
use time::Duration;

fn check_user_cert(suite: Suite, cert_type: &str, ca_type: &str) {
    let f = fixture(suite);
    let dir = tempfile::tempdir().expect("tempdir");
    let id = crate::common::identity("example.com", f.now);
    let line = f
        .signer
        .sign_user_ssh_cert(&f.key.public_key(), &id, f.now)
        .expect("user cert");
    let path = write(dir.path(), "sshcert", &format!("{line}\n"));
    let out = run_ok(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&path));
    assert!(
        out.contains(&format!("Type: {cert_type} user certificate")),
        "{out}"
    );
    assert!(out.contains("Key ID: \"bot-robot\""), "{out}");
    let ca_fp = ssh_fingerprint(&f.signer.user_ca_openssh()).expect("ca fp");
    assert!(
        out.contains(&format!("Signing CA: {ca_type} {ca_fp}")),
        "{out}"
    );
    let principals = out
        .split("Principals:")
        .nth(1)
        .and_then(|s| s.split("Critical Options:").next())
        .expect("principals section");
    let principals: Vec<&str> = principals.split_whitespace().collect();
    assert_eq!(principals, ["root", "ubuntu"], "{out}");
    for ext in [
        "permit-pty",
        "permit-port-forwarding",
        "teleport-roles",
        "teleport-traits",
        "teleport-route-to-cluster",
        "renewable",
        "generation",
    ] {
        assert!(out.contains(ext), "extension {ext} missing:\n{out}");
    }
    let key_fp = ssh_fingerprint(&f.key.public_key().to_openssh()).expect("key fp");
    assert!(out.contains(&key_fp), "{out}");
}

#[test]
fn ssh_keygen_reads_default_user_cert() {
    check_user_cert(
        Suite::Default,
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
        "ED25519",
    );
}

#[test]
fn ssh_keygen_reads_legacy_user_cert() {
    check_user_cert(Suite::Legacy, "ssh-rsa-cert-v01@openssh.com", "RSA");
}

#[test]
fn ssh_keygen_reads_host_cert() {
    for suite in [Suite::Default, Suite::Legacy] {
        let f = fixture(suite);
        let dir = tempfile::tempdir().expect("tempdir");
        let principals = vec![
            "node1".to_string(),
            "node1.example.com".to_string(),
            "127.0.0.1".to_string(),
        ];
        let line = f
            .signer
            .sign_host_ssh_cert(
                &f.key.public_key(),
                &principals,
                f.now,
                f.now + Duration::days(1),
            )
            .expect("host cert");
        let path = write(dir.path(), "host-cert.pub", &format!("{line}\n"));
        let out = run_ok(Command::new("ssh-keygen").arg("-L").arg("-f").arg(&path));
        assert!(out.contains("host certificate"), "{out}");
        assert!(out.contains("Key ID: \"node1\""), "{out}");
        for p in &principals {
            assert!(
                out.contains(&format!("\n                {p}\n")),
                "{p}: {out}"
            );
        }
    }
}

#[test]
fn ssh_keygen_reads_private_key_and_agrees_on_fingerprints() {
    for suite in [Suite::Default, Suite::Legacy] {
        let f = fixture(suite);
        let dir = tempfile::tempdir().expect("tempdir");
        let key = write(dir.path(), "key", &f.key.to_pem());
        // OpenSSH derives the public key from our PEM private key.
        let derived = run_ok(Command::new("ssh-keygen").arg("-y").arg("-f").arg(&key));
        assert_eq!(derived.trim(), f.key.public_key().to_openssh());
        // Fingerprints agree with `ssh-keygen -l`, for the subject key and both CAs.
        for line in [
            f.key.public_key().to_openssh(),
            f.signer.user_ca_openssh(),
            f.signer.host_ca_openssh(),
        ] {
            let pubfile = write(dir.path(), "k.pub", &format!("{line}\n"));
            let out = run_ok(Command::new("ssh-keygen").arg("-l").arg("-f").arg(&pubfile));
            let fp = ssh_fingerprint(&line).expect("fp");
            assert!(out.contains(&fp), "{fp} not in {out}");
        }
    }
}
