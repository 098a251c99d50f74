//! A key with the certificates issued to it, in the shapes the bot needs.

use machine_id_client::{AuthAddrs, Certs, Client, ClientIdentity};
use machine_id_destination::Artifacts;
use machine_id_mint::{PrivateKey, Suite, cert_der_to_pem, certs_from_pem, parse_tls_identity};
use machine_id_types::{Clock, Identity};
use time::format_description::well_known::Rfc3339;

use crate::error::refusal;
use crate::storage::StoredIdentity;
use crate::{BotError, Result};

/// A new key for a renewal or an output.
pub(crate) fn new_key() -> Result<PrivateKey> {
    PrivateKey::generate(Suite::Default)
        .map_err(|e| BotError::Internal(format!("generating a key: {e}")))
}

fn invalid(what: &str, e: impl std::fmt::Display) -> BotError {
    BotError::Invalid {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// A private key and the certificates issued to it, with the identity the X.509 certificate
/// states. `Debug` shows the identity only.
#[derive(Clone)]
pub struct IssuedIdentity {
    pub(crate) key: PrivateKey,
    pub(crate) certs: Certs,
    pub(crate) identity: Identity,
}

impl std::fmt::Debug for IssuedIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedIdentity")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Checks the certificate's public key is `key`'s.
fn check_key_matches(key: &PrivateKey, cert_der: &[u8], what: &str) -> Result<()> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| invalid(what, e))?;
    if cert.tbs_certificate.subject_pki.raw != key.public_key().to_spki_der().as_slice() {
        return Err(invalid(what, "the certificate is not for the key"));
    }
    Ok(())
}

impl IssuedIdentity {
    /// Pairs `key` with `certs` from the server, checking the certificate is for the key.
    pub(crate) fn new(key: PrivateKey, certs: Certs) -> Result<Self> {
        check_key_matches(&key, &certs.tls_cert, "certificate from the auth server")?;
        let identity = parse_tls_identity(&certs.tls_cert)
            .map_err(|e| invalid("certificate from the auth server", e))?;
        Ok(Self {
            key,
            certs,
            identity,
        })
    }

    /// What the certificate says.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The private key, PEM. Handle with care.
    pub fn key_pem(&self) -> String {
        self.key.to_pem()
    }

    /// The X.509 certificate, DER.
    pub fn tls_cert_der(&self) -> &[u8] {
        &self.certs.tls_cert
    }

    /// The cluster's TLS CA certificates, DER.
    pub fn tls_ca_certs(&self) -> &[Vec<u8>] {
        &self.certs.tls_ca_certs
    }

    /// The OpenSSH certificate line.
    pub fn ssh_cert(&self) -> &str {
        &self.certs.ssh_cert
    }

    /// When the certificate expires, RFC 3339, for messages.
    pub(crate) fn expires_rfc3339(&self) -> String {
        self.identity.expires.format(&Rfc3339).unwrap_or_default()
    }

    /// A mutual-TLS connection to an auth server of `addrs` as this identity; its expiry is
    /// judged by `clock`. A renewed identity needs a connection of its own.
    pub(crate) async fn connect(&self, addrs: &AuthAddrs, clock: &dyn Clock) -> Result<Client> {
        Client::connect_with_clock(addrs, &self.client_identity()?, clock)
            .await
            .map_err(refusal)
    }

    /// For the gRPC client.
    pub(crate) fn client_identity(&self) -> Result<ClientIdentity> {
        Ok(ClientIdentity::from_parts(
            &self.key.to_pem(),
            self.certs.tls_cert.clone(),
            self.certs.tls_ca_certs.clone(),
        )?)
    }

    fn tls_ca_pem(&self) -> String {
        self.certs
            .tls_ca_certs
            .iter()
            .map(|c| cert_der_to_pem(c))
            .collect()
    }

    fn ssh_ca_lines(&self) -> String {
        let mut s = String::new();
        for k in &self.certs.ssh_ca_keys {
            s.push_str(k.trim_end());
            s.push('\n');
        }
        s
    }

    /// The data-dir form.
    pub(crate) fn to_stored(&self, token_hash: &str) -> StoredIdentity {
        StoredIdentity {
            key_pem: self.key.to_pem(),
            key_pub: line(&self.key.public_key().to_openssh()),
            ssh_cert: line(&self.certs.ssh_cert),
            tls_cert_pem: cert_der_to_pem(&self.certs.tls_cert),
            tls_ca_pem: self.tls_ca_pem(),
            ssh_ca: self.ssh_ca_lines(),
            token_hash: token_hash.to_string(),
        }
    }

    /// Reads a stored identity back, checking the pieces belong together.
    pub(crate) fn from_stored(s: &StoredIdentity) -> Result<Self> {
        let key = PrivateKey::from_pem(&s.key_pem).map_err(|e| invalid("stored key", e))?;
        let tls_cert = certs_from_pem(&s.tls_cert_pem)
            .map_err(|e| invalid("stored tlscert", e))?
            .into_iter()
            .next()
            .unwrap_or_default();
        let tls_ca_certs =
            certs_from_pem(&s.tls_ca_pem).map_err(|e| invalid("stored tlscacerts", e))?;
        let certs = Certs {
            ssh_cert: s.ssh_cert.trim().to_string(),
            tls_cert,
            tls_ca_certs,
            ssh_ca_keys: s
                .ssh_ca
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect(),
        };
        Self::new(key, certs).map_err(|e| invalid("stored identity", e))
    }

    /// The destination files, without the two templates.
    pub(crate) fn to_artifacts(&self) -> Artifacts {
        Artifacts {
            key: self.key.to_pem().into_bytes(),
            key_pub: line(&self.key.public_key().to_openssh()).into_bytes(),
            ssh_cert: line(&self.certs.ssh_cert).into_bytes(),
            ssh_ca_certs: self.ssh_ca_lines().into_bytes(),
            tls_cert: cert_der_to_pem(&self.certs.tls_cert).into_bytes(),
            tls_ca_certs: self.tls_ca_pem().into_bytes(),
            known_hosts: Vec::new(),
            ssh_config: Vec::new(),
        }
    }
}

/// `s` with exactly one trailing newline.
fn line(s: &str) -> String {
    format!("{}\n", s.trim_end())
}
