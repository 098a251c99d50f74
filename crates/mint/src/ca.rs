//! The cluster's certificate authorities: stored key material ([`CaKeys`]) and the signer
//! built from it once ([`CaSigner`]).

use crate::key::{KeyPair, PublicKey, encode_pem};
use crate::signer::CaKey;
use crate::{MintError, Suite, ssh, x509};
use machine_id_types::Identity;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use time::OffsetDateTime;

/// How long a new TLS CA certificate is valid.
const TLS_CA_VALIDITY: time::Duration = time::Duration::days(3650);

/// The format version of [`CaKeys::to_bytes`].
const CA_KEYS_VERSION: u32 = 1;

/// The cluster's CA key material (private keys included); stored by the auth server.
///
/// Three CAs: the SSH user CA (sshd trusts it through `TrustedUserCAKeys`), the SSH host CA
/// (clients trust it through `@cert-authority` in `known_hosts`), and the TLS CA (a
/// self-signed X.509 CA issuing client and server certificates). `Debug` never shows keys.
#[derive(Clone)]
pub struct CaKeys {
    cluster_name: String,
    suite: Suite,
    user: KeyPair,
    host: KeyPair,
    tls: KeyPair,
    tls_cert_der: Vec<u8>,
}

impl std::fmt::Debug for CaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKeys")
            .field("cluster_name", &self.cluster_name)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

/// The stored form: JSON with PEM private keys and the PEM TLS CA certificate.
#[derive(Serialize, Deserialize)]
struct StoredCaKeys {
    version: u32,
    cluster_name: String,
    suite: Suite,
    ssh_user_ca_key: String,
    ssh_host_ca_key: String,
    tls_ca_key: String,
    tls_ca_cert: String,
}

impl CaKeys {
    /// Generates the three CAs of `suite` for `cluster_name`, with a self-signed TLS CA
    /// certificate (subject and issuer `O=<cluster>, CN=<cluster>`) valid from `now - 1m`
    /// for ten years.
    pub fn generate(
        cluster_name: &str,
        suite: Suite,
        now: OffsetDateTime,
    ) -> Result<Self, MintError> {
        if cluster_name.trim().is_empty() {
            return Err(MintError::InvalidRequest(
                "the cluster name is empty; set a cluster name in the auth server config".into(),
            ));
        }
        let (user, host, tls) = match suite {
            Suite::Default => (
                KeyPair::generate_ed25519(),
                KeyPair::generate_ed25519(),
                KeyPair::generate_p256()?,
            ),
            Suite::Legacy => (
                KeyPair::generate_rsa()?,
                KeyPair::generate_rsa()?,
                KeyPair::generate_rsa()?,
            ),
        };
        let tls_signer = CaKey::new(&tls)?;
        let tls_cert_der = x509::ca_cert(&tls_signer, cluster_name, now, now + TLS_CA_VALIDITY)?;
        tracing::debug!(
            cluster = cluster_name,
            ?suite,
            "generated cluster certificate authorities"
        );
        Ok(Self {
            cluster_name: cluster_name.to_owned(),
            suite,
            user,
            host,
            tls,
            tls_cert_der,
        })
    }

    /// Serializes for the store: JSON with PEM private keys (PKCS#8 for Ed25519, SEC1 for
    /// P-256, PKCS#1 for RSA) and the PEM TLS CA certificate.
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = StoredCaKeys {
            version: CA_KEYS_VERSION,
            cluster_name: self.cluster_name.clone(),
            suite: self.suite,
            ssh_user_ca_key: self.user.to_pem().unwrap_or_default(),
            ssh_host_ca_key: self.host.to_pem().unwrap_or_default(),
            tls_ca_key: self.tls.to_pem().unwrap_or_default(),
            tls_ca_cert: encode_pem("CERTIFICATE", &self.tls_cert_der),
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Reads what [`CaKeys::to_bytes`] wrote; checks that the TLS CA certificate belongs to
    /// the TLS CA key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MintError> {
        let stored: StoredCaKeys =
            serde_json::from_slice(bytes).map_err(|e| MintError::InvalidCaKeys(e.to_string()))?;
        if stored.version != CA_KEYS_VERSION {
            return Err(MintError::InvalidCaKeys(format!(
                "format version {} is not known to this build (expected {CA_KEYS_VERSION})",
                stored.version
            )));
        }
        let read = |what: &str, pem: &str| {
            KeyPair::from_pem(pem).map_err(|e| MintError::InvalidCaKeys(format!("{what}: {e}")))
        };
        let user = read("ssh user ca key", &stored.ssh_user_ca_key)?;
        let host = read("ssh host ca key", &stored.ssh_host_ca_key)?;
        let tls = read("tls ca key", &stored.tls_ca_key)?;
        let certs = crate::certs_from_pem(&stored.tls_ca_cert)
            .map_err(|e| MintError::InvalidCaKeys(format!("tls ca certificate: {e}")))?;
        let tls_cert_der = certs.into_iter().next().unwrap_or_default();
        let cert_key = x509::spki_of_cert(&tls_cert_der)
            .map_err(|e| MintError::InvalidCaKeys(format!("tls ca certificate: {e}")))?;
        if cert_key != tls.public_key().to_spki_der() {
            return Err(MintError::InvalidCaKeys(
                "the tls ca certificate does not belong to the tls ca key".into(),
            ));
        }
        Ok(Self {
            cluster_name: stored.cluster_name,
            suite: stored.suite,
            user,
            host,
            tls,
            tls_cert_der,
        })
    }

    /// Builds the signer (parses every key once; keep it and reuse it).
    pub fn signer(&self) -> Result<CaSigner, MintError> {
        CaSigner::new(self)
    }

    /// The cluster name.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The algorithm suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// The TLS CA certificate, DER.
    pub fn tls_ca_cert_der(&self) -> &[u8] {
        &self.tls_cert_der
    }

    /// The SSH user CA public key, OpenSSH line (for sshd's `TrustedUserCAKeys`).
    pub fn user_ca_openssh(&self) -> String {
        self.user.public_key().to_openssh()
    }

    /// The SSH host CA public key, OpenSSH line (for `@cert-authority` in `known_hosts`).
    pub fn host_ca_openssh(&self) -> String {
        self.host.public_key().to_openssh()
    }
}

/// The CAs with cached signers: build once with [`CaKeys::signer`], share (it is
/// `Send + Sync`), and mint every certificate with it. `Debug` never shows keys.
pub struct CaSigner {
    cluster_name: String,
    user: CaKey,
    host: CaKey,
    tls: CaKey,
    tls_cert_der: Vec<u8>,
    tls_issuer: x509_cert::name::Name,
    tls_key_id: Vec<u8>,
    user_ca_openssh: String,
    host_ca_openssh: String,
}

impl std::fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaSigner")
            .field("cluster_name", &self.cluster_name)
            .finish_non_exhaustive()
    }
}

impl CaSigner {
    fn new(keys: &CaKeys) -> Result<Self, MintError> {
        let user = CaKey::new(&keys.user)?;
        let host = CaKey::new(&keys.host)?;
        let tls = CaKey::new(&keys.tls)?;
        let (tls_issuer, tls_key_id) = x509::issuer_of(&keys.tls_cert_der, tls.public())?;
        Ok(Self {
            cluster_name: keys.cluster_name.clone(),
            user_ca_openssh: user.public().to_openssh(),
            host_ca_openssh: host.public().to_openssh(),
            user,
            host,
            tls,
            tls_cert_der: keys.tls_cert_der.clone(),
            tls_issuer,
            tls_key_id,
        })
    }

    /// The cluster name.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The SSH user CA public key, OpenSSH line (no comment).
    pub fn user_ca_openssh(&self) -> String {
        self.user_ca_openssh.clone()
    }

    /// The SSH host CA public key, OpenSSH line (no comment).
    pub fn host_ca_openssh(&self) -> String {
        self.host_ca_openssh.clone()
    }

    /// The TLS CA certificate, DER.
    pub fn tls_ca_cert_der(&self) -> &[u8] {
        &self.tls_cert_der
    }

    /// SSH user cert: key id = username, principals = logins, valid from `now - 1m` to
    /// `identity.expires`, extensions per the facts file. Returns the OpenSSH cert line.
    ///
    /// With no logins the one principal is `-teleport-nologin-<random>`: a certificate with
    /// no principals would be valid for every user.
    pub fn sign_user_ssh_cert(
        &self,
        subject: &PublicKey,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Result<String, MintError> {
        ssh::user_cert(&self.user, subject, identity, now)
    }

    /// X.509 client cert carrying `identity`; NotBefore `now - 1m`, NotAfter `identity.expires`. DER.
    ///
    /// Subject: `CN` = username, one `O` per role and one `L` per login (each its own RDN,
    /// in order), then the attributes of [`crate::oids`].
    pub fn sign_user_tls_cert(
        &self,
        subject: &PublicKey,
        identity: &Identity,
        now: OffsetDateTime,
    ) -> Result<Vec<u8>, MintError> {
        x509::user_cert(
            &self.tls,
            &self.tls_issuer,
            &self.tls_key_id,
            subject,
            identity,
            now,
        )
    }

    /// SSH host cert with `principals` (key id = the first). Returns the OpenSSH cert line.
    pub fn sign_host_ssh_cert(
        &self,
        subject: &PublicKey,
        principals: &[String],
        now: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<String, MintError> {
        ssh::host_cert(&self.host, subject, principals, now, not_after)
    }

    /// X.509 server cert (server auth EKU) with the given SANs. DER.
    pub fn sign_server_tls_cert(
        &self,
        subject: &PublicKey,
        dns_names: &[String],
        ips: &[IpAddr],
        now: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Vec<u8>, MintError> {
        x509::server_cert(
            &self.tls,
            &self.tls_issuer,
            &self.tls_key_id,
            &self.cluster_name,
            subject,
            dns_names,
            ips,
            now,
            not_after,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_keys_round_trip() {
        let now = OffsetDateTime::now_utc();
        let keys = CaKeys::generate("example.com", Suite::Default, now).expect("generate");
        let bytes = keys.to_bytes();
        let back = CaKeys::from_bytes(&bytes).expect("from_bytes");
        assert_eq!(back.cluster_name(), "example.com");
        assert_eq!(back.suite(), Suite::Default);
        assert_eq!(back.tls_ca_cert_der(), keys.tls_ca_cert_der());
        assert_eq!(back.user_ca_openssh(), keys.user_ca_openssh());
        assert_eq!(back.host_ca_openssh(), keys.host_ca_openssh());
        assert_eq!(back.to_bytes(), bytes);
        let signer = back.signer().expect("signer");
        assert_eq!(signer.user_ca_openssh(), keys.user_ca_openssh());
        assert!(signer.user_ca_openssh().starts_with("ssh-ed25519 AAAA"));
        let dbg = format!("{keys:?} {signer:?}");
        assert!(!dbg.contains("PRIVATE"), "{dbg}");
    }

    #[test]
    fn ca_keys_reject_bad_input() {
        assert!(matches!(
            CaKeys::from_bytes(b"{}"),
            Err(MintError::InvalidCaKeys(_))
        ));
        let now = OffsetDateTime::now_utc();
        let a = CaKeys::generate("a", Suite::Default, now).expect("a");
        let b = CaKeys::generate("b", Suite::Default, now).expect("b");
        let mut mixed: serde_json::Value = serde_json::from_slice(&a.to_bytes()).expect("json");
        let other: serde_json::Value = serde_json::from_slice(&b.to_bytes()).expect("json");
        mixed["tls_ca_cert"] = other["tls_ca_cert"].clone();
        let err =
            CaKeys::from_bytes(&serde_json::to_vec(&mixed).expect("json")).expect_err("mismatch");
        assert!(err.to_string().contains("does not belong"), "{err}");
        assert!(CaKeys::generate(" ", Suite::Default, now).is_err());
    }

    #[test]
    fn signer_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<CaSigner>();
        check::<CaKeys>();
    }
}
