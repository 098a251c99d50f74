//! The set of files a destination holds.

use std::fmt;

/// The name of one file of a destination's set.
///
/// [`ArtifactName::ALL`] lists them in the order a [`DirectoryDestination`](crate::DirectoryDestination)
/// renames them into place: CA material and templates first, then the identity's key and
/// certificates back to back, so the window in which a plain-file reader could pair a key with
/// another key's certificate is as short as it can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ArtifactName {
    /// `sshcacerts`: SSH CA public keys, one OpenSSH line each.
    SshCaCerts,
    /// `tlscacerts`: the cluster's CA certificates, PEM.
    TlsCaCerts,
    /// `known_hosts`: `@cert-authority` lines for the host CA keys.
    KnownHosts,
    /// `ssh_config`: the generated OpenSSH client configuration.
    SshConfig,
    /// `key`: the identity's private key, PEM.
    Key,
    /// `key.pub`: the identity's public key, one OpenSSH line.
    KeyPub,
    /// `sshcert`: the OpenSSH user certificate line.
    SshCert,
    /// `tlscert`: the X.509 client certificate, PEM.
    TlsCert,
}

impl ArtifactName {
    /// Every artifact, in rename order.
    pub const ALL: [ArtifactName; 8] = [
        ArtifactName::SshCaCerts,
        ArtifactName::TlsCaCerts,
        ArtifactName::KnownHosts,
        ArtifactName::SshConfig,
        ArtifactName::Key,
        ArtifactName::KeyPub,
        ArtifactName::SshCert,
        ArtifactName::TlsCert,
    ];

    /// The file name in a destination directory.
    pub const fn file_name(self) -> &'static str {
        match self {
            ArtifactName::SshCaCerts => "sshcacerts",
            ArtifactName::TlsCaCerts => "tlscacerts",
            ArtifactName::KnownHosts => "known_hosts",
            ArtifactName::SshConfig => "ssh_config",
            ArtifactName::Key => "key",
            ArtifactName::KeyPub => "key.pub",
            ArtifactName::SshCert => "sshcert",
            ArtifactName::TlsCert => "tlscert",
        }
    }

    /// Whether the file holds a secret (only `key` does; the rest are public material, but
    /// every file is still written 0600).
    pub const fn is_secret(self) -> bool {
        matches!(self, ArtifactName::Key)
    }
}

impl fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.file_name())
    }
}

/// The contents of a destination: the eight files as bytes, written and read as one set.
///
/// `key` is a private key, so `Debug` prints only each file's length, never its contents.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Artifacts {
    /// `key`: private key PEM (one key serves SSH and TLS).
    pub key: Vec<u8>,
    /// `key.pub`: OpenSSH public key line.
    pub key_pub: Vec<u8>,
    /// `sshcert`: OpenSSH user certificate line.
    pub ssh_cert: Vec<u8>,
    /// `sshcacerts`: SSH CA public keys, one per line.
    pub ssh_ca_certs: Vec<u8>,
    /// `tlscert`: X.509 certificate PEM.
    pub tls_cert: Vec<u8>,
    /// `tlscacerts`: CA certificate PEMs (user CA and host CA).
    pub tls_ca_certs: Vec<u8>,
    /// `known_hosts`: see [`known_hosts`](crate::known_hosts).
    pub known_hosts: Vec<u8>,
    /// `ssh_config`: see [`ssh_config`](crate::ssh_config).
    pub ssh_config: Vec<u8>,
}

impl Artifacts {
    /// The contents of one file.
    pub fn get(&self, name: ArtifactName) -> &[u8] {
        match name {
            ArtifactName::Key => &self.key,
            ArtifactName::KeyPub => &self.key_pub,
            ArtifactName::SshCert => &self.ssh_cert,
            ArtifactName::SshCaCerts => &self.ssh_ca_certs,
            ArtifactName::TlsCert => &self.tls_cert,
            ArtifactName::TlsCaCerts => &self.tls_ca_certs,
            ArtifactName::KnownHosts => &self.known_hosts,
            ArtifactName::SshConfig => &self.ssh_config,
        }
    }

    /// Mutable access to the contents of one file.
    pub fn get_mut(&mut self, name: ArtifactName) -> &mut Vec<u8> {
        match name {
            ArtifactName::Key => &mut self.key,
            ArtifactName::KeyPub => &mut self.key_pub,
            ArtifactName::SshCert => &mut self.ssh_cert,
            ArtifactName::SshCaCerts => &mut self.ssh_ca_certs,
            ArtifactName::TlsCert => &mut self.tls_cert,
            ArtifactName::TlsCaCerts => &mut self.tls_ca_certs,
            ArtifactName::KnownHosts => &mut self.known_hosts,
            ArtifactName::SshConfig => &mut self.ssh_config,
        }
    }

    /// Every file with its name, in [`ArtifactName::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (ArtifactName, &[u8])> + '_ {
        ArtifactName::ALL.into_iter().map(|n| (n, self.get(n)))
    }
}

impl fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Len(usize);
        impl fmt::Debug for Len {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "<{} bytes redacted>", self.0)
            }
        }
        let mut s = f.debug_struct("Artifacts");
        for (name, bytes) in self.iter() {
            s.field(name.file_name(), &Len(bytes.len()));
        }
        s.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_contents() {
        let a = Artifacts {
            key: b"-----BEGIN PRIVATE KEY-----secret".to_vec(),
            ..Artifacts::default()
        };
        let d = format!("{a:?}");
        assert!(!d.contains("secret") && !d.contains("BEGIN"), "{d}");
        assert!(d.contains("key: <33 bytes redacted>"), "{d}");
    }

    #[test]
    fn names_are_the_facts_file_names_and_unique() {
        let names: std::collections::BTreeSet<_> =
            ArtifactName::ALL.iter().map(|n| n.file_name()).collect();
        assert_eq!(names.len(), 8);
        for n in [
            "key",
            "key.pub",
            "known_hosts",
            "ssh_config",
            "sshcacerts",
            "sshcert",
            "tlscacerts",
            "tlscert",
        ] {
            assert!(names.contains(n), "{n}");
        }
    }

    #[test]
    fn get_mut_and_get_agree() {
        let mut a = Artifacts::default();
        for (i, n) in ArtifactName::ALL.into_iter().enumerate() {
            a.get_mut(n).push(u8::try_from(i).unwrap_or(0));
        }
        for (i, (_, b)) in a.iter().enumerate() {
            assert_eq!(b, [u8::try_from(i).unwrap_or(0)]);
        }
    }
}
