//! Artifact templates: `known_hosts` and `ssh_config`, as pure functions.

use std::fmt::Write as _;
use std::path::Path;

use crate::{DestinationError, SymlinkPolicy};

/// A host CA public key, validated from an OpenSSH public key line
/// (`<type> <base64> [comment]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCaKey {
    algorithm: String,
    base64: String,
}

/// The key types this crate knows, with the host certificate algorithms each means for
/// `HostKeyAlgorithms`.
const CERT_ALGORITHMS: &[(&str, &str)] = &[
    ("ssh-ed25519", "ssh-ed25519-cert-v01@openssh.com"),
    (
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    ),
    (
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    ),
    (
        "ecdsa-sha2-nistp521",
        "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    ),
    (
        "ssh-rsa",
        "rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com",
    ),
];

impl HostCaKey {
    /// Parses an OpenSSH public key line such as `ssh-ed25519 AAAAC3... comment`.
    ///
    /// The key type must be one of `ssh-ed25519`, `ecdsa-sha2-nistp{256,384,521}` or
    /// `ssh-rsa`, and the blob must be base64. The comment is dropped.
    pub fn parse(line: &str) -> Result<Self, DestinationError> {
        let bad = |reason: String| DestinationError::InvalidInput {
            what: "host CA key",
            reason,
        };
        let mut fields = line.split_whitespace();
        let (Some(algorithm), Some(base64)) = (fields.next(), fields.next()) else {
            return Err(bad(
                "expected an OpenSSH public key line `<type> <base64> [comment]`".into(),
            ));
        };
        if !CERT_ALGORITHMS.iter().any(|(a, _)| *a == algorithm) {
            return Err(bad(format!(
                "unsupported key type `{algorithm}` (expected ssh-ed25519, ecdsa-sha2-nistp256/384/521 or ssh-rsa)"
            )));
        }
        if !base64
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            return Err(bad("the key blob is not base64".into()));
        }
        Ok(Self {
            algorithm: algorithm.to_owned(),
            base64: base64.to_owned(),
        })
    }

    /// The key type, e.g. `ssh-ed25519`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// The host certificate algorithms this CA key signs, as `HostKeyAlgorithms` wants them.
    pub fn cert_algorithms(&self) -> &'static str {
        CERT_ALGORITHMS
            .iter()
            .find(|(a, _)| *a == self.algorithm)
            .map_or("", |(_, c)| c)
    }
}

/// Renders `known_hosts`: one line per host CA key,
/// `@cert-authority <proxyhost>,<cluster>,*.<cluster> <type> <base64> type=host`.
///
/// `cluster` and `proxy_host` must be validated host names (see [`ssh_config`], which checks
/// them); this function only formats.
pub fn known_hosts(cluster: &str, proxy_host: &str, host_ca_keys: &[HostCaKey]) -> String {
    let mut out = String::new();
    for k in host_ca_keys {
        let _ = writeln!(
            out,
            "@cert-authority {proxy_host},{cluster},*.{cluster} {} {} type=host",
            k.algorithm, k.base64
        );
    }
    out
}

/// What [`ssh_config`] needs.
#[derive(Debug, Clone, Copy)]
pub struct SshConfigParams<'a> {
    /// The cluster name, e.g. `example.com`; nodes are addressed as `<node>.<cluster>`.
    pub cluster: &'a str,
    /// The proxy's host name, e.g. `proxy.example.com`.
    pub proxy_host: &'a str,
    /// The proxy address given to `tbot proxy`, e.g. `proxy.example.com:3080`, or a
    /// comma-separated list of them (`a:3025,b:3025`) that `tbot proxy` tries in turn.
    pub proxy_addr: &'a str,
    /// The destination directory (absolute).
    pub destination_dir: &'a Path,
    /// The path of the `tbot` binary (absolute).
    pub tbot_path: &'a Path,
    /// The destination's symlink policy, which `tbot proxy` reads the directory with (passed
    /// as `--symlinks=` when it is not the default).
    pub symlinks: SymlinkPolicy,
    /// The cluster's host CA keys; with any, `HostKeyAlgorithms` lists host certificate
    /// algorithms only (theirs first).
    pub host_ca_keys: &'a [HostCaKey],
}

fn check_host(what: &'static str, value: &str, allow_port: bool) -> Result<(), DestinationError> {
    let ok = !value.is_empty()
        && value.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'.' | b'-' | b'_')
                || (allow_port && matches!(b, b':' | b'[' | b']'))
        });
    if ok {
        Ok(())
    } else {
        Err(DestinationError::InvalidInput {
            what,
            reason: format!(
                "`{value}` is not a host name (letters, digits, `.`, `-`, `_`{})",
                if allow_port { ", `:port`" } else { "" }
            ),
        })
    }
}

/// Checks a path can be written into ssh_config and returns it with `%` doubled (OpenSSH
/// expands `%` tokens in `IdentityFile`, `CertificateFile`, `UserKnownHostsFile` and
/// `ProxyCommand`).
fn ssh_path(what: &'static str, path: &Path) -> Result<String, DestinationError> {
    let bad = |reason: &str| DestinationError::InvalidInput {
        what,
        reason: format!("{}: {reason}", path.display()),
    };
    let s = path
        .to_str()
        .ok_or_else(|| bad("the path is not valid UTF-8"))?;
    if !path.is_absolute() {
        return Err(bad("the path must be absolute"));
    }
    if s.chars().any(|c| c.is_control() || c == '"' || c == '\\') {
        return Err(bad(
            "the path holds a quote, backslash or control character, which ssh_config cannot quote",
        ));
    }
    if s.contains("${") {
        return Err(bad(
            "the path holds `${`, which OpenSSH would expand as an environment variable",
        ));
    }
    Ok(s.replace('%', "%%"))
}

/// Quotes an (already `%`-escaped) path for the POSIX shell OpenSSH runs `ProxyCommand` with:
/// bare when only safe characters, else in double quotes with `$` and `` ` `` escaped.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'/' | b'.' | b'_' | b'-' | b'+' | b',' | b':' | b'@' | b'=' | b'%'
                )
        })
    {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '$' | '`') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Renders `ssh_config` in the shape of the facts file:
///
/// ```text
/// # Begin generated configuration for example.com by tbot
/// Host *.example.com proxy.example.com
///     UserKnownHostsFile "<dir>/known_hosts"
///     IdentityFile "<dir>/key"
///     CertificateFile "<dir>/sshcert"
///     HostKeyAlgorithms <host cert algorithms in use>
/// Host *.example.com !proxy.example.com
///     Port 3022
///     ProxyCommand "<path to tbot>" proxy --destination-dir=<dir> --proxy=<proxy addr> ssh --cluster=example.com %r@%h:%p
/// # End generated configuration
/// ```
///
/// A destination whose symlink policy is not the default (`try-secure`) adds
/// `--symlinks=<policy>` after `--destination-dir`, so `tbot proxy` reads it the same way.
///
/// Paths are double-quoted for OpenSSH (so spaces work) and `%` in them is doubled. In
/// `ProxyCommand`, which OpenSSH hands to a shell, the destination dir stays bare when it
/// holds only shell-safe characters and is double-quoted otherwise. Paths must be absolute
/// and free of `"`, `\`, control characters and `${`; names must be host names. With no host
/// CA keys, `HostKeyAlgorithms` is left out (OpenSSH's default list applies).
pub fn ssh_config(params: &SshConfigParams<'_>) -> Result<String, DestinationError> {
    let SshConfigParams {
        cluster,
        proxy_host,
        proxy_addr,
        destination_dir,
        tbot_path,
        symlinks,
        host_ca_keys,
    } = *params;
    check_host("cluster name", cluster, false)?;
    check_host("proxy host", proxy_host, false)?;
    for addr in proxy_addr.split(',') {
        check_host("proxy address", addr, true)?;
    }
    let dir = ssh_path("destination dir for ssh_config", destination_dir)?;
    let tbot = ssh_path("tbot path for ssh_config", tbot_path)?;
    let dir = dir.trim_end_matches('/');
    let dir = if dir.is_empty() { "/" } else { dir };
    let join = |file: &str| {
        if dir == "/" {
            format!("/{file}")
        } else {
            format!("{dir}/{file}")
        }
    };

    // Host certificates only: a CA of one key type signs host keys of any type (an Ed25519
    // host CA signs the ECDSA host keys `tctl auth sign` makes), so every certificate
    // algorithm is listed, the CAs' own types first. Plain host keys are never accepted.
    let mut algorithms: Vec<&str> = Vec::new();
    if !host_ca_keys.is_empty() {
        let own = host_ca_keys.iter().map(HostCaKey::cert_algorithms);
        let all = CERT_ALGORITHMS.iter().map(|(_, c)| *c);
        for a in own.chain(all).flat_map(|c| c.split(',')) {
            if !a.is_empty() && !algorithms.contains(&a) {
                algorithms.push(a);
            }
        }
    }

    let mut out = String::new();
    let _ = writeln!(out, "# Begin generated configuration for {cluster} by tbot");
    let _ = writeln!(out, "Host *.{cluster} {proxy_host}");
    let _ = writeln!(out, "    UserKnownHostsFile \"{}\"", join("known_hosts"));
    let _ = writeln!(out, "    IdentityFile \"{}\"", join("key"));
    let _ = writeln!(out, "    CertificateFile \"{}\"", join("sshcert"));
    if !algorithms.is_empty() {
        let _ = writeln!(out, "    HostKeyAlgorithms {}", algorithms.join(","));
    }
    let _ = writeln!(out, "Host *.{cluster} !{proxy_host}");
    let _ = writeln!(out, "    Port 3022");
    let symlinks = if symlinks == SymlinkPolicy::default() {
        String::new()
    } else {
        format!(" --symlinks={symlinks}")
    };
    let _ = writeln!(
        out,
        "    ProxyCommand \"{tbot}\" proxy --destination-dir={}{symlinks} --proxy={proxy_addr} ssh --cluster={cluster} %r@%h:%p",
        shell_word(dir)
    );
    let _ = writeln!(out, "# End generated configuration");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb0dXmJl host-ca";
    const P256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY=";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC";

    fn keys(lines: &[&str]) -> Vec<HostCaKey> {
        lines
            .iter()
            .map(|l| HostCaKey::parse(l).expect("valid key line"))
            .collect()
    }

    #[test]
    fn known_hosts_has_one_line_per_key() {
        let out = known_hosts("example.com", "proxy.example.com", &keys(&[ED, P256]));
        assert_eq!(
            out,
            "@cert-authority proxy.example.com,example.com,*.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGb0dXmJl type=host\n\
             @cert-authority proxy.example.com,example.com,*.example.com ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTY= type=host\n"
        );
    }

    #[test]
    fn host_ca_key_rejects_bad_lines() {
        for bad in ["", "ssh-ed25519", "ssh-dss AAAA", "ssh-ed25519 not*base64"] {
            let e = HostCaKey::parse(bad).expect_err(bad);
            assert!(e.to_string().starts_with("invalid host CA key"), "{e}");
        }
    }

    fn params<'a>(dir: &'a Path, keys: &'a [HostCaKey]) -> SshConfigParams<'a> {
        SshConfigParams {
            cluster: "example.com",
            proxy_host: "proxy.example.com",
            proxy_addr: "proxy.example.com:3080",
            destination_dir: dir,
            tbot_path: Path::new("/usr/local/bin/tbot"),
            symlinks: SymlinkPolicy::TrySecure,
            host_ca_keys: keys,
        }
    }

    #[test]
    fn ssh_config_matches_the_facts_file_shape() {
        let k = keys(&[ED]);
        let out = ssh_config(&params(Path::new("/opt/machine-id/"), &k)).expect("renders");
        assert_eq!(
            out,
            "# Begin generated configuration for example.com by tbot\n\
             Host *.example.com proxy.example.com\n\
             \x20   UserKnownHostsFile \"/opt/machine-id/known_hosts\"\n\
             \x20   IdentityFile \"/opt/machine-id/key\"\n\
             \x20   CertificateFile \"/opt/machine-id/sshcert\"\n\
             \x20   HostKeyAlgorithms ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com,rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com\n\
             Host *.example.com !proxy.example.com\n\
             \x20   Port 3022\n\
             \x20   ProxyCommand \"/usr/local/bin/tbot\" proxy --destination-dir=/opt/machine-id --proxy=proxy.example.com:3080 ssh --cluster=example.com %r@%h:%p\n\
             # End generated configuration\n"
        );
    }

    #[test]
    fn a_proxy_list_is_passed_whole_and_each_entry_checked() {
        let k = keys(&[ED]);
        let dir = Path::new("/d");
        let mut p = params(dir, &k);
        p.proxy_addr = "a.example.com:3025,b.example.com:3025";
        let out = ssh_config(&p).expect("renders");
        assert!(
            out.contains(" --proxy=a.example.com:3025,b.example.com:3025 ssh "),
            "{out}"
        );
        p.proxy_addr = "a.example.com:3025,,b:1";
        let e = ssh_config(&p).expect_err("empty entry").to_string();
        assert!(e.contains("proxy address"), "{e}");
        p.proxy_addr = "a:1,b;rm -rf /";
        assert!(ssh_config(&p).is_err());
    }

    #[test]
    fn host_key_algorithms_are_certificates_only_ca_types_first() {
        let k = keys(&[P256, RSA, ED, P256]);
        let out = ssh_config(&params(Path::new("/d"), &k)).expect("renders");
        assert!(
            out.contains(
                "    HostKeyAlgorithms ecdsa-sha2-nistp256-cert-v01@openssh.com,rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com\n"
            ),
            "{out}"
        );
        let out = ssh_config(&params(Path::new("/d"), &[])).expect("renders");
        assert!(!out.contains("HostKeyAlgorithms"));
    }

    #[test]
    fn awkward_paths_are_quoted_or_refused() {
        let out = ssh_config(&params(Path::new("/tmp/a b/50%$x"), &[])).expect("renders");
        assert!(
            out.contains("IdentityFile \"/tmp/a b/50%%$x/key\""),
            "{out}"
        );
        assert!(
            out.contains("--destination-dir=\"/tmp/a b/50%%\\$x\" "),
            "{out}"
        );
        for bad in ["relative/dir", "/a\"b", "/a\\b", "/a\nb", "/a/${HOME}"] {
            let e = ssh_config(&params(Path::new(bad), &[])).expect_err(bad);
            assert!(matches!(e, DestinationError::InvalidInput { .. }), "{bad}");
        }
        let mut p = params(Path::new("/d"), &[]);
        p.cluster = "example.com\nHost *";
        assert!(ssh_config(&p).is_err());
    }
}
