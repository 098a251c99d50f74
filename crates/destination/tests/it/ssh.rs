//! The generated ssh_config and known_hosts, judged by the real OpenSSH tools.

use std::path::Path;
use std::process::Command;

use machine_id_destination::{HostCaKey, SshConfigParams, SymlinkPolicy, known_hosts, ssh_config};

use crate::support::run;

/// Lines of `ssh -G` output for `host`, which parses the config without connecting.
fn ssh_g(config: &Path, host: &str) -> Vec<String> {
    let (ok, out, err) = run(Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(config)
        .arg(host));
    assert!(ok, "ssh -G rejected the generated config: {err}");
    out.lines().map(str::to_owned).collect()
}

fn value<'a>(lines: &'a [String], key: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
        .collect()
}

fn host_ca(dir: &Path) -> HostCaKey {
    let key = dir.join("host_ca");
    let (ok, _, err) = run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "host-ca", "-f"])
        .arg(&key));
    assert!(ok, "ssh-keygen: {err}");
    let line = std::fs::read_to_string(key.with_extension("pub")).expect("read pub");
    HostCaKey::parse(&line).expect("parse host CA key")
}

#[test]
fn ssh_parses_the_generated_config_with_spaces_in_paths() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("machine id");
    std::fs::create_dir(&dir).expect("mkdir");
    let ca = host_ca(tmp.path());
    let tbot = tmp.path().join("bin dir/tbot");
    let config = ssh_config(&SshConfigParams {
        cluster: "example.com",
        proxy_host: "proxy.example.com",
        proxy_addr: "proxy.example.com:3080",
        destination_dir: &dir,
        tbot_path: &tbot,
        symlinks: SymlinkPolicy::Secure,
        host_ca_keys: std::slice::from_ref(&ca),
    })
    .expect("render");
    let file = dir.join("ssh_config");
    std::fs::write(&file, &config).expect("write config");

    let node = ssh_g(&file, "root@node.example.com");
    let d = dir.display();
    assert_eq!(value(&node, "identityfile"), [format!("{d}/key")]);
    assert_eq!(value(&node, "certificatefile"), [format!("{d}/sshcert")]);
    assert_eq!(
        value(&node, "userknownhostsfile"),
        [format!("{d}/known_hosts")]
    );
    assert_eq!(value(&node, "port"), ["3022"]);
    assert_eq!(value(&node, "user"), ["root"]);
    // Host certificates only, of every key type (the CA's own first): an Ed25519 host CA
    // signs the ECDSA host keys `tctl auth sign` makes.
    assert_eq!(
        value(&node, "hostkeyalgorithms"),
        [
            "ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com,rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com"
        ]
    );
    assert_eq!(
        value(&node, "proxycommand"),
        [format!(
            "\"{}\" proxy --destination-dir=\"{d}\" --symlinks=secure --proxy=proxy.example.com:3080 ssh --cluster=example.com %r@%h:%p",
            tbot.display()
        )]
    );

    // The proxy itself gets the identity but no ProxyCommand and the default port.
    let proxy = ssh_g(&file, "proxy.example.com");
    assert_eq!(value(&proxy, "identityfile"), [format!("{d}/key")]);
    assert_eq!(value(&proxy, "port"), ["22"]);
    // (`ssh -G` prints `proxycommand none` or, in older versions, nothing.)
    let proxy_command = value(&proxy, "proxycommand");
    assert!(
        proxy_command.is_empty() || proxy_command == ["none"],
        "{proxy_command:?}"
    );

    // Hosts outside the cluster are untouched by the generated blocks.
    let other = ssh_g(&file, "elsewhere.org");
    assert!(!value(&other, "identityfile").contains(&format!("{d}/key").as_str()));
}

#[test]
fn ssh_parses_the_plain_facts_file_shape() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = host_ca(tmp.path());
    let config = ssh_config(&SshConfigParams {
        cluster: "example.com",
        proxy_host: "proxy.example.com",
        proxy_addr: "proxy.example.com:443",
        destination_dir: tmp.path(),
        tbot_path: Path::new("/usr/local/bin/tbot"),
        symlinks: SymlinkPolicy::TrySecure,
        host_ca_keys: &[ca],
    })
    .expect("render");
    let file = tmp.path().join("ssh_config");
    std::fs::write(&file, &config).expect("write");
    let node = ssh_g(&file, "node.example.com");
    assert_eq!(
        value(&node, "proxycommand"),
        [format!(
            "\"/usr/local/bin/tbot\" proxy --destination-dir={} --proxy=proxy.example.com:443 ssh --cluster=example.com %r@%h:%p",
            tmp.path().display()
        )]
    );
}

#[test]
fn ssh_keygen_finds_the_cert_authority_in_known_hosts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ca = host_ca(tmp.path());
    let text = known_hosts(
        "example.com",
        "proxy.example.com",
        std::slice::from_ref(&ca),
    );
    let line = text.lines().next().expect("one line");
    assert!(line.starts_with(
        "@cert-authority proxy.example.com,example.com,*.example.com ssh-ed25519 AAAA"
    ));
    assert!(line.ends_with(" type=host"));
    let file = tmp.path().join("known_hosts");
    std::fs::write(&file, &text).expect("write");
    for host in ["node.example.com", "proxy.example.com", "example.com"] {
        let (ok, out, err) = run(Command::new("ssh-keygen")
            .arg("-F")
            .arg(host)
            .arg("-f")
            .arg(&file));
        assert!(ok, "ssh-keygen -F {host}: {err}");
        assert!(out.contains("found: line 1 CA"), "{host}: {out}");
    }
    let (ok, _, _) = run(Command::new("ssh-keygen")
        .args(["-F", "node.other.org", "-f"])
        .arg(&file));
    assert!(!ok, "hosts outside the cluster do not match");
}
