//! `tctl status`, `tctl auth export` and `tctl auth sign`, judged by `ssh-keygen`.

use machine_id_e2e::AuthServer;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn ssh_keygen(args: &[&str]) -> String {
    let out = Command::new("ssh-keygen")
        .args(args)
        .output()
        .expect("ssh-keygen (Debian openssh-client) must be installed");
    assert!(
        out.status.success(),
        "ssh-keygen {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn status_shows_cluster_pin_and_fingerprints() {
    let auth = AuthServer::start();
    let text = auth.tctl(&["status"]).success();
    assert!(text.contains("Cluster:         example.com\n"), "{text}");
    assert!(text.contains("CA pin:          sha256:"), "{text}");
    assert!(text.contains("user (SSH):    SHA256:"), "{text}");
    assert!(text.contains("host (SSH):    SHA256:"), "{text}");
    assert!(text.contains("tls (X.509):   SHA256:"), "{text}");
    let v: serde_json::Value =
        serde_json::from_str(&auth.tctl(&["status", "--format=json"]).success()).unwrap();
    assert_eq!(v["cluster_name"], "example.com");
    let pin = v["ca_pins"][0].as_str().unwrap();
    assert!(text.contains(pin), "{text}");

    // The user CA fingerprint is what ssh-keygen computes from the exported key.
    let f = auth.scratch().join("user_ca.pub");
    std::fs::write(&f, auth.tctl(&["auth", "export", "--type=user"]).success()).unwrap();
    let fp = ssh_keygen(&["-l", "-f", f.to_str().unwrap()]);
    let fp = fp.split_whitespace().nth(1).unwrap();
    assert_eq!(v["ca_fingerprints"]["user"][0], fp);
}

#[test]
fn export_user_host_tls() {
    let auth = AuthServer::start();
    let user = auth.tctl(&["auth", "export", "--type=user"]).success();
    assert_eq!(user.lines().count(), 1, "{user}");
    assert!(user.starts_with("ssh-"), "{user}");
    let f = auth.scratch().join("user_ca.pub");
    std::fs::write(&f, &user).unwrap();
    ssh_keygen(&["-l", "-f", f.to_str().unwrap()]);

    let host = auth.tctl(&["auth", "export", "--type=host"]).success();
    assert!(
        host.starts_with("@cert-authority *.example.com,example.com ssh-"),
        "{host}"
    );
    let tls = auth.tctl(&["auth", "export", "--type=tls"]).success();
    assert!(tls.starts_with("-----BEGIN CERTIFICATE-----\n"), "{tls}");
    let err = auth.tctl(&["auth", "export", "--type=db"]).failure();
    assert!(err.contains("--type=user"), "{err}");
}

#[test]
fn sign_host_writes_a_key_and_cert_sshd_accepts() {
    let auth = AuthServer::start();
    let prefix = auth.scratch().join("node");
    let p = prefix.to_str().unwrap();
    let out = auth
        .tctl(&[
            "auth",
            "sign",
            "--host=node-1,node-1.local",
            "--format=openssh",
            "--out",
            p,
            "--ttl=1h",
        ])
        .success();
    assert!(out.contains(p), "{out}");
    let mode = std::fs::metadata(&prefix).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The private key is readable by OpenSSH and matches the written public key.
    let public = ssh_keygen(&["-y", "-f", p]);
    let written = std::fs::read_to_string(format!("{p}.pub")).unwrap();
    assert_eq!(public.trim(), written.trim());
    let cert = ssh_keygen(&["-L", "-f", &format!("{p}-cert.pub")]);
    assert!(cert.contains("host certificate"), "{cert}");
    assert!(cert.contains("node-1.example.com"), "{cert}");
    assert!(cert.contains("node-1.local"), "{cert}");

    let err = auth
        .tctl(&["auth", "sign", "--host=n", "--format=tls", "--out", p])
        .failure();
    assert!(err.contains("openssh"), "{err}");
}

#[test]
fn sshd_accepts_the_signed_host_key_and_exported_user_ca() {
    let auth = AuthServer::start();
    let dir = auth.scratch();
    let prefix = dir.join("host");
    let ca = dir.join("user_ca.pub");
    std::fs::write(&ca, auth.tctl(&["auth", "export", "--type=user"]).success()).unwrap();
    auth.tctl(&[
        "auth",
        "sign",
        "--host=node-1",
        "--format=openssh",
        "--out",
        prefix.to_str().unwrap(),
    ])
    .success();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1\nPort 2222\nHostKey {key}\nHostCertificate {key}-cert.pub\nTrustedUserCAKeys {ca}\nAuthorizedKeysFile none\nPasswordAuthentication no\nUsePAM no\nStrictModes no\nPidFile {pid}\n",
            key = prefix.display(),
            ca = ca.display(),
            pid = dir.join("sshd.pid").display(),
        ),
    )
    .unwrap();
    // sshd wants its privilege separation directory even to check a config.
    let _ = std::fs::create_dir_all("/run/sshd");
    let sshd = ["/usr/sbin/sshd", "sshd"]
        .into_iter()
        .find(|p| Command::new(p).arg("-V").output().is_ok())
        .expect("sshd (Debian openssh-server) must be installed");
    let out = Command::new(sshd)
        .args(["-t", "-f", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sshd -t refused the config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
