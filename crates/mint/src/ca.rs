//! The cluster's certificate authorities: stored key material ([`CaKeys`]) and the signer
//! built from it once ([`CaSigner`]).

use crate::key::{KeyPair, PublicKey, encode_pem};
use crate::signer::CaKey;
use crate::{MintError, Suite, ssh, x509};
use machine_id_types::{
    CaPublicKeys, CaType, CertAuthority, Identity, KeyStep, Rotation, RotationMode, RotationPhase,
};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use time::OffsetDateTime;

/// How long a new TLS CA certificate is valid.
const TLS_CA_VALIDITY: time::Duration = time::Duration::days(3650);

/// The format version of [`CaKeys::to_bytes`]: 2 holds key sets and rotation status per CA;
/// 1 (one key per CA, read and upgraded) came before rotation.
const CA_KEYS_VERSION: u32 = 2;

/// One TLS CA: its key and self-signed certificate.
#[derive(Clone)]
struct TlsCa {
    key: KeyPair,
    cert_der: Vec<u8>,
}

/// The keys of one CA type: those that sign, those trusted besides (the other set, during a
/// rotation), and the rotation status.
#[derive(Clone)]
struct KeySet<K> {
    active: K,
    trusted: Vec<K>,
    rotation: Rotation,
}

impl<K: Clone> KeySet<K> {
    fn new(active: K) -> Self {
        Self {
            active,
            trusted: Vec::new(),
            rotation: Rotation::default(),
        }
    }

    /// Applies a phase change's key step; `fresh` makes new keys when the step needs them.
    fn apply(
        &self,
        rotation: Rotation,
        step: KeyStep,
        fresh: impl FnOnce() -> Result<K, MintError>,
    ) -> Result<Self, MintError> {
        let mut next = self.clone();
        next.rotation = rotation;
        match step {
            KeyStep::None => {}
            KeyStep::AddNewKeys => next.trusted = vec![fresh()?],
            KeyStep::Swap => {
                let Some(other) = next.trusted.pop() else {
                    return Err(MintError::InvalidCaKeys(
                        "a rotation phase needs the other key set, which is missing".into(),
                    ));
                };
                next.trusted = vec![std::mem::replace(&mut next.active, other)];
            }
            KeyStep::DropTrusted => next.trusted.clear(),
            KeyStep::Replace => {
                next.active = fresh()?;
                next.trusted.clear();
            }
        }
        Ok(next)
    }

    /// Active first, then the trusted ones.
    fn all(&self) -> impl Iterator<Item = &K> {
        std::iter::once(&self.active).chain(self.trusted.iter())
    }
}

/// The cluster's CA key material (private keys included); stored by the auth server.
///
/// Three CAs: the SSH user CA (sshd trusts it through `TrustedUserCAKeys`), the SSH host CA
/// (clients trust it through `@cert-authority` in `known_hosts`), and the TLS CA (a
/// self-signed X.509 CA issuing client and server certificates). Each has active keys (which
/// sign), additionally trusted keys (during a rotation) and a [`Rotation`] status;
/// [`CaKeys::rotate`] moves one through its phases. `Debug` never shows keys.
#[derive(Clone)]
pub struct CaKeys {
    cluster_name: String,
    suite: Suite,
    user: KeySet<KeyPair>,
    host: KeySet<KeyPair>,
    tls: KeySet<TlsCa>,
}

impl std::fmt::Debug for CaKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaKeys")
            .field("cluster_name", &self.cluster_name)
            .field("suite", &self.suite)
            .field("user_rotation", &self.user.rotation.phase)
            .field("host_rotation", &self.host.rotation.phase)
            .field("tls_rotation", &self.tls.rotation.phase)
            .finish_non_exhaustive()
    }
}

/// The stored form of one SSH CA key.
#[derive(Serialize, Deserialize)]
struct StoredSshKey {
    key: String,
}

/// The stored form of one TLS CA.
#[derive(Serialize, Deserialize)]
struct StoredTlsCa {
    key: String,
    cert: String,
}

/// The stored form of one key set.
#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "K: Deserialize<'de>"))]
struct StoredSet<K> {
    active: K,
    #[serde(default)]
    additional_trusted: Vec<K>,
    #[serde(default)]
    rotation: Rotation,
}

/// The stored form (version 2): JSON with PEM private keys and PEM TLS CA certificates.
#[derive(Serialize, Deserialize)]
struct StoredCaKeys {
    version: u32,
    cluster_name: String,
    suite: Suite,
    user: StoredSet<StoredSshKey>,
    host: StoredSet<StoredSshKey>,
    tls: StoredSet<StoredTlsCa>,
}

/// The stored form before rotation (version 1): one key per CA.
#[derive(Deserialize)]
struct StoredCaKeysV1 {
    cluster_name: String,
    suite: Suite,
    ssh_user_ca_key: String,
    ssh_host_ca_key: String,
    tls_ca_key: String,
    tls_ca_cert: String,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

fn read_key(what: &str, pem: &str) -> Result<KeyPair, MintError> {
    KeyPair::from_pem(pem).map_err(|e| MintError::InvalidCaKeys(format!("{what}: {e}")))
}

fn read_tls(key_pem: &str, cert_pem: &str) -> Result<TlsCa, MintError> {
    let key = read_key("tls ca key", key_pem)?;
    let cert_der = crate::certs_from_pem(cert_pem)
        .map_err(|e| MintError::InvalidCaKeys(format!("tls ca certificate: {e}")))?
        .into_iter()
        .next()
        .unwrap_or_default();
    let cert_key = x509::spki_of_cert(&cert_der)
        .map_err(|e| MintError::InvalidCaKeys(format!("tls ca certificate: {e}")))?;
    if cert_key != key.public_key().to_spki_der() {
        return Err(MintError::InvalidCaKeys(
            "the tls ca certificate does not belong to the tls ca key".into(),
        ));
    }
    Ok(TlsCa { key, cert_der })
}

fn store_ssh(k: &KeyPair) -> StoredSshKey {
    StoredSshKey {
        key: k.to_pem().unwrap_or_default(),
    }
}

fn store_tls(t: &TlsCa) -> StoredTlsCa {
    StoredTlsCa {
        key: t.key.to_pem().unwrap_or_default(),
        cert: encode_pem("CERTIFICATE", &t.cert_der),
    }
}

fn store_set<K, S>(set: &KeySet<K>, f: impl Fn(&K) -> S) -> StoredSet<S> {
    StoredSet {
        active: f(&set.active),
        additional_trusted: set.trusted.iter().map(&f).collect(),
        rotation: set.rotation.clone(),
    }
}

fn read_set<S, K>(
    stored: &StoredSet<S>,
    f: impl Fn(&S) -> Result<K, MintError>,
) -> Result<KeySet<K>, MintError> {
    Ok(KeySet {
        active: f(&stored.active)?,
        trusted: stored
            .additional_trusted
            .iter()
            .map(&f)
            .collect::<Result<_, _>>()?,
        rotation: stored.rotation.clone(),
    })
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
        let keys = Self {
            cluster_name: cluster_name.to_owned(),
            suite,
            user: KeySet::new(ssh_key(suite)?),
            host: KeySet::new(ssh_key(suite)?),
            tls: KeySet::new(tls_ca(cluster_name, suite, now)?),
        };
        tracing::debug!(
            cluster = cluster_name,
            ?suite,
            "generated cluster certificate authorities"
        );
        Ok(keys)
    }

    /// Serializes for the store: JSON with PEM private keys (PKCS#8 for Ed25519, SEC1 for
    /// P-256, PKCS#1 for RSA), PEM TLS CA certificates and each CA's rotation status.
    pub fn to_bytes(&self) -> Vec<u8> {
        let stored = StoredCaKeys {
            version: CA_KEYS_VERSION,
            cluster_name: self.cluster_name.clone(),
            suite: self.suite,
            user: store_set(&self.user, store_ssh),
            host: store_set(&self.host, store_ssh),
            tls: store_set(&self.tls, store_tls),
        };
        serde_json::to_vec(&stored).unwrap_or_default()
    }

    /// Reads what [`CaKeys::to_bytes`] wrote, this version's or the one before rotation;
    /// checks that each TLS CA certificate belongs to its key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MintError> {
        let invalid = |e: serde_json::Error| MintError::InvalidCaKeys(e.to_string());
        let version: VersionOnly = serde_json::from_slice(bytes).map_err(invalid)?;
        match version.version {
            1 => {
                let v1: StoredCaKeysV1 = serde_json::from_slice(bytes).map_err(invalid)?;
                Ok(Self {
                    cluster_name: v1.cluster_name,
                    suite: v1.suite,
                    user: KeySet::new(read_key("ssh user ca key", &v1.ssh_user_ca_key)?),
                    host: KeySet::new(read_key("ssh host ca key", &v1.ssh_host_ca_key)?),
                    tls: KeySet::new(read_tls(&v1.tls_ca_key, &v1.tls_ca_cert)?),
                })
            }
            CA_KEYS_VERSION => {
                let s: StoredCaKeys = serde_json::from_slice(bytes).map_err(invalid)?;
                Ok(Self {
                    cluster_name: s.cluster_name,
                    suite: s.suite,
                    user: read_set(&s.user, |k| read_key("ssh user ca key", &k.key))?,
                    host: read_set(&s.host, |k| read_key("ssh host ca key", &k.key))?,
                    tls: read_set(&s.tls, |t| read_tls(&t.key, &t.cert))?,
                })
            }
            other => Err(MintError::InvalidCaKeys(format!(
                "format version {other} is not known to this build (expected {CA_KEYS_VERSION}); run the auth server version that wrote it"
            ))),
        }
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

    /// The active TLS CA certificate, DER.
    pub fn tls_ca_cert_der(&self) -> &[u8] {
        &self.tls.active.cert_der
    }

    /// The active SSH user CA public key, OpenSSH line (for sshd's `TrustedUserCAKeys`).
    pub fn user_ca_openssh(&self) -> String {
        self.user.active.public_key().to_openssh()
    }

    /// The active SSH host CA public key, OpenSSH line (for `@cert-authority` in
    /// `known_hosts`).
    pub fn host_ca_openssh(&self) -> String {
        self.host.active.public_key().to_openssh()
    }

    /// The rotation status of CA `ca`.
    pub fn rotation(&self, ca: CaType) -> &Rotation {
        match ca {
            CaType::User => &self.user.rotation,
            CaType::Host => &self.host.rotation,
            CaType::Tls => &self.tls.rotation,
        }
    }

    /// Moves CA `ca` to phase `to` (see [`Rotation::advance`]): generates new keys for
    /// `init`, swaps the signing and trusted keys for `update_clients` and `rollback`, drops
    /// the trusted-only keys for `standby`. Returns the new key material; `self` is
    /// unchanged, so a caller that fails to store the result has changed nothing.
    ///
    /// # Errors
    ///
    /// [`MintError::Rotation`] for a phase that does not follow the current one, and key
    /// generation failures.
    pub fn rotate(
        &self,
        ca: CaType,
        to: RotationPhase,
        mode: RotationMode,
        grace_period: Option<std::time::Duration>,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<CaKeys, MintError> {
        let (rotation, step) = self
            .rotation(ca)
            .advance(to, mode, grace_period, id, now)
            .map_err(MintError::Rotation)?;
        let suite = self.suite;
        let mut next = self.clone();
        match ca {
            CaType::User => next.user = self.user.apply(rotation, step, || ssh_key(suite))?,
            CaType::Host => next.host = self.host.apply(rotation, step, || ssh_key(suite))?,
            CaType::Tls => {
                next.tls = self
                    .tls
                    .apply(rotation, step, || tls_ca(&self.cluster_name, suite, now))?;
            }
        }
        tracing::info!(ca = %ca, from = %self.rotation(ca).phase, to = %to, "ca rotation phase computed");
        Ok(next)
    }

    /// The public view of CA `ca`: active and trusted keys and the rotation status.
    pub fn cert_authority(&self, ca: CaType) -> CertAuthority {
        let ssh = |set: &KeySet<KeyPair>| {
            (
                CaPublicKeys {
                    ssh: vec![set.active.public_key().to_openssh()],
                    tls: vec![],
                },
                CaPublicKeys {
                    ssh: set
                        .trusted
                        .iter()
                        .map(|k| k.public_key().to_openssh())
                        .collect(),
                    tls: vec![],
                },
            )
        };
        let (active, trusted) = match ca {
            CaType::User => ssh(&self.user),
            CaType::Host => ssh(&self.host),
            CaType::Tls => (
                CaPublicKeys {
                    ssh: vec![],
                    tls: vec![encode_pem("CERTIFICATE", &self.tls.active.cert_der)],
                },
                CaPublicKeys {
                    ssh: vec![],
                    tls: self
                        .tls
                        .trusted
                        .iter()
                        .map(|t| encode_pem("CERTIFICATE", &t.cert_der))
                        .collect(),
                },
            ),
        };
        CertAuthority::new(
            &self.cluster_name,
            ca,
            active,
            trusted,
            self.rotation(ca).clone(),
        )
    }
}

/// A new SSH CA key of `suite`.
fn ssh_key(suite: Suite) -> Result<KeyPair, MintError> {
    match suite {
        Suite::Default => Ok(KeyPair::generate_ed25519()),
        Suite::Legacy => KeyPair::generate_rsa(),
    }
}

/// A new TLS CA of `suite` for `cluster`, self-signed, valid from `now - 1m` for ten years.
fn tls_ca(cluster: &str, suite: Suite, now: OffsetDateTime) -> Result<TlsCa, MintError> {
    let key = match suite {
        Suite::Default => KeyPair::generate_p256()?,
        Suite::Legacy => KeyPair::generate_rsa()?,
    };
    let signer = CaKey::new(&key)?;
    let cert_der = x509::ca_cert(&signer, cluster, now, now + TLS_CA_VALIDITY)?;
    Ok(TlsCa { key, cert_der })
}

/// The CAs with cached signers: build once with [`CaKeys::signer`], share (it is
/// `Send + Sync`), and mint every certificate with it; build a new one when the CAs change (a
/// rotation phase). `Debug` never shows keys.
///
/// Certificates for clients are signed with each CA's active keys. The auth server's own TLS
/// certificate ([`CaSigner::sign_server_tls_cert`]) is signed with the keys servers present:
/// the old ones until the TLS CA reaches `update_servers`, so clients that have not yet
/// renewed still trust it. What clients are told to trust ([`CaSigner::trusted_user_cas`],
/// [`CaSigner::trusted_host_cas`], [`CaSigner::trusted_tls_certs`]) is every trusted key.
pub struct CaSigner {
    cluster_name: String,
    user: CaKey,
    host: CaKey,
    tls: TlsSigner,
    /// Signs the servers' own TLS certificates; `None` when that is `tls`.
    server_tls: Option<TlsSigner>,
    /// During a TLS CA rotation: the CA that signs server certificates, cross-certified by
    /// each other trusted TLS CA (DER), for servers to present after their leaf.
    server_chain: Vec<Vec<u8>>,
    user_ca_openssh: String,
    host_ca_openssh: String,
    trusted_user: Vec<String>,
    trusted_host: Vec<String>,
    trusted_tls: Vec<Vec<u8>>,
    rotations: [Rotation; 3],
}

/// A TLS CA ready to sign: key, certificate, and the issuer fields of what it signs.
struct TlsSigner {
    key: CaKey,
    cert_der: Vec<u8>,
    issuer: x509_cert::name::Name,
    key_id: Vec<u8>,
}

impl TlsSigner {
    fn new(ca: &TlsCa) -> Result<Self, MintError> {
        let key = CaKey::new(&ca.key)?;
        let (issuer, key_id) = x509::issuer_of(&ca.cert_der, key.public())?;
        Ok(Self {
            key,
            cert_der: ca.cert_der.clone(),
            issuer,
            key_id,
        })
    }
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
        let user = CaKey::new(&keys.user.active)?;
        let host = CaKey::new(&keys.host.active)?;
        let tls = TlsSigner::new(&keys.tls.active)?;
        // Until update_servers, servers keep presenting the keys clients already trust.
        let server_tls = match (keys.tls.rotation.phase, keys.tls.trusted.first()) {
            (RotationPhase::UpdateClients, Some(old)) => Some(TlsSigner::new(old)?),
            _ => None,
        };
        let openssh = |set: &KeySet<KeyPair>| -> Vec<String> {
            set.all().map(|k| k.public_key().to_openssh()).collect()
        };
        let serving = server_tls.as_ref().unwrap_or(&tls);
        let mut server_chain = Vec::new();
        for other in keys.tls.all() {
            if other.cert_der != serving.cert_der {
                let issuer = CaKey::new(&other.key)?;
                server_chain.push(x509::cross_cert(
                    &issuer,
                    &other.cert_der,
                    &serving.cert_der,
                )?);
            }
        }
        Ok(Self {
            cluster_name: keys.cluster_name.clone(),
            user_ca_openssh: user.public().to_openssh(),
            host_ca_openssh: host.public().to_openssh(),
            user,
            host,
            tls,
            server_tls,
            server_chain,
            trusted_user: openssh(&keys.user),
            trusted_host: openssh(&keys.host),
            trusted_tls: keys.tls.all().map(|t| t.cert_der.clone()).collect(),
            rotations: [
                keys.user.rotation.clone(),
                keys.host.rotation.clone(),
                keys.tls.rotation.clone(),
            ],
        })
    }

    /// The cluster name.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The active SSH user CA public key, OpenSSH line (no comment).
    pub fn user_ca_openssh(&self) -> String {
        self.user_ca_openssh.clone()
    }

    /// The active SSH host CA public key, OpenSSH line (no comment).
    pub fn host_ca_openssh(&self) -> String {
        self.host_ca_openssh.clone()
    }

    /// The active TLS CA certificate, DER.
    pub fn tls_ca_cert_der(&self) -> &[u8] {
        &self.tls.cert_der
    }

    /// Every trusted SSH user CA key, active first (what sshd's `TrustedUserCAKeys` holds).
    pub fn trusted_user_cas(&self) -> &[String] {
        &self.trusted_user
    }

    /// Every trusted SSH host CA key, active first (the `@cert-authority` lines).
    pub fn trusted_host_cas(&self) -> &[String] {
        &self.trusted_host
    }

    /// Every trusted TLS CA certificate, DER, active first (clients' roots, the server's
    /// client-certificate roots, what CA pins are over).
    pub fn trusted_tls_certs(&self) -> &[Vec<u8>] {
        &self.trusted_tls
    }

    /// What a server presents after its leaf certificate: during a rotation of the TLS CA,
    /// the CA that signs server certificates cross-certified by the other one (DER), so a
    /// client that trusts only one of the two CAs (a bot given one CA pin) verifies the
    /// server in every phase; empty otherwise.
    pub fn server_chain(&self) -> &[Vec<u8>] {
        &self.server_chain
    }

    /// The rotation status of CA `ca` this signer was built from.
    pub fn rotation(&self, ca: CaType) -> &Rotation {
        match ca {
            CaType::User => &self.rotations[0],
            CaType::Host => &self.rotations[1],
            CaType::Tls => &self.rotations[2],
        }
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
            &self.tls.key,
            &self.tls.issuer,
            &self.tls.key_id,
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

    /// X.509 server cert (server auth EKU) with the given SANs, signed by the TLS CA keys
    /// servers present (see the type's docs). DER.
    pub fn sign_server_tls_cert(
        &self,
        subject: &PublicKey,
        dns_names: &[String],
        ips: &[IpAddr],
        now: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Vec<u8>, MintError> {
        let tls = self.server_tls.as_ref().unwrap_or(&self.tls);
        x509::server_cert(
            &tls.key,
            &tls.issuer,
            &tls.key_id,
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
        mixed["tls"]["active"]["cert"] = other["tls"]["active"]["cert"].clone();
        let err =
            CaKeys::from_bytes(&serde_json::to_vec(&mixed).expect("json")).expect_err("mismatch");
        assert!(err.to_string().contains("does not belong"), "{err}");
        assert!(CaKeys::generate(" ", Suite::Default, now).is_err());
    }

    fn rotate(keys: &CaKeys, ca: CaType, to: RotationPhase) -> CaKeys {
        keys.rotate(
            ca,
            to,
            RotationMode::Manual,
            None,
            "r1",
            OffsetDateTime::now_utc(),
        )
        .unwrap_or_else(|e| panic!("{ca} -> {to}: {e}"))
    }

    /// The issuer key a TLS certificate was signed with: the trusted CA that verifies it.
    fn signed_by(cert: &[u8], cas: &[Vec<u8>]) -> usize {
        let (_, leaf) = x509_parser::parse_x509_certificate(cert).expect("leaf");
        cas.iter()
            .position(|ca| {
                let (_, ca) = x509_parser::parse_x509_certificate(ca).expect("ca");
                ring::signature::UnparsedPublicKey::new(
                    &ring::signature::ECDSA_P256_SHA256_ASN1,
                    &ca.public_key().subject_public_key.data,
                )
                .verify(leaf.tbs_certificate.as_ref(), &leaf.signature_value.data)
                .is_ok()
            })
            .expect("signed by a trusted CA")
    }

    #[test]
    fn a_rotation_trusts_both_sets_and_moves_signing_then_serving() {
        let now = OffsetDateTime::now_utc();
        let k0 = CaKeys::generate("example.com", Suite::Default, now).expect("generate");
        let old_tls = k0.tls_ca_cert_der().to_vec();
        let old_user = k0.user_ca_openssh();
        let subject = crate::PrivateKey::generate(Suite::Default)
            .expect("key")
            .public_key();
        let server = |k: &CaKeys| {
            k.signer()
                .expect("signer")
                .sign_server_tls_cert(
                    &subject,
                    &["a".into()],
                    &[],
                    now,
                    now + time::Duration::hours(1),
                )
                .expect("server cert")
        };
        let init = rotate(&k0, CaType::Tls, RotationPhase::Init);
        let init = rotate(&init, CaType::User, RotationPhase::Init);
        let s = init.signer().expect("signer");
        assert_eq!(s.trusted_tls_certs().len(), 2);
        assert_eq!(
            s.trusted_tls_certs()[0],
            old_tls,
            "init: the old keys still sign"
        );
        assert_eq!(s.trusted_user_cas().len(), 2);
        assert_eq!(s.user_ca_openssh(), old_user);
        assert_eq!(s.trusted_host_cas().len(), 1, "the host CA was not rotated");
        assert_eq!(
            s.server_chain().len(),
            1,
            "the serving CA cross-certified by the new one"
        );
        assert_eq!(signed_by(&s.server_chain()[0], s.trusted_tls_certs()), 1);
        let new_tls = s.trusted_tls_certs()[1].clone();
        assert_ne!(new_tls, old_tls);

        let uc = rotate(&init, CaType::Tls, RotationPhase::UpdateClients);
        let s = uc.signer().expect("signer");
        assert_eq!(
            s.tls_ca_cert_der(),
            new_tls.as_slice(),
            "update_clients: new keys sign"
        );
        let both = s.trusted_tls_certs().to_vec();
        assert_eq!(both.len(), 2);
        let id = Identity {
            username: "bot-a".into(),
            roles: vec!["bot-a".into()],
            logins: vec![],
            traits: Default::default(),
            renewable: true,
            generation: 1,
            impersonator: None,
            disallow_reissue: false,
            cluster: "example.com".into(),
            expires: (now + time::Duration::hours(1))
                .replace_nanosecond(0)
                .expect("t"),
        };
        let client = s
            .sign_user_tls_cert(&subject, &id, now)
            .expect("client cert");
        assert_eq!(both[signed_by(&client, &both)], new_tls);
        assert_eq!(
            both[signed_by(&server(&uc), &both)],
            old_tls,
            "servers still present the old CA"
        );

        let us = rotate(&uc, CaType::Tls, RotationPhase::UpdateServers);
        assert_eq!(
            both[signed_by(&server(&us), &both)],
            new_tls,
            "update_servers: servers move"
        );
        // Stored and read back in the middle of a rotation.
        let back = CaKeys::from_bytes(&us.to_bytes()).expect("round trip");
        assert_eq!(back.to_bytes(), us.to_bytes());
        assert_eq!(
            back.rotation(CaType::Tls).phase,
            RotationPhase::UpdateServers
        );

        let done = rotate(&us, CaType::Tls, RotationPhase::Standby);
        let s = done.signer().expect("signer");
        assert_eq!(s.trusted_tls_certs(), &[new_tls.clone()][..]);
        assert!(s.server_chain().is_empty());
        assert!(done.rotation(CaType::Tls).last_rotated.is_some());
        assert_eq!(
            done.rotation(CaType::User).phase,
            RotationPhase::Init,
            "each CA on its own"
        );
    }

    #[test]
    fn rollback_restores_the_old_signing_keys() {
        let now = OffsetDateTime::now_utc();
        let k0 = CaKeys::generate("example.com", Suite::Default, now).expect("generate");
        let old_user = k0.user_ca_openssh();
        let k = rotate(&k0, CaType::User, RotationPhase::Init);
        let k = rotate(&k, CaType::User, RotationPhase::UpdateClients);
        assert_ne!(k.user_ca_openssh(), old_user);
        let k = rotate(&k, CaType::User, RotationPhase::UpdateServers);
        let rb = rotate(&k, CaType::User, RotationPhase::Rollback);
        assert_eq!(
            rb.user_ca_openssh(),
            old_user,
            "rollback: the old key signs again"
        );
        assert_eq!(rb.signer().expect("signer").trusted_user_cas().len(), 2);
        let done = rotate(&rb, CaType::User, RotationPhase::Standby);
        assert_eq!(
            done.signer().expect("s").trusted_user_cas(),
            &[old_user][..]
        );
        let err = done
            .rotate(
                CaType::User,
                RotationPhase::UpdateServers,
                RotationMode::Manual,
                None,
                "x",
                now,
            )
            .expect_err("illegal");
        assert!(err.to_string().contains("standby"), "{err}");
    }

    #[test]
    fn the_format_before_rotation_is_read_and_upgraded() {
        let now = OffsetDateTime::now_utc();
        let k = CaKeys::generate("example.com", Suite::Default, now).expect("generate");
        let v2: serde_json::Value = serde_json::from_slice(&k.to_bytes()).expect("json");
        let v1 = serde_json::json!({
            "version": 1,
            "cluster_name": "example.com",
            "suite": v2["suite"],
            "ssh_user_ca_key": v2["user"]["active"]["key"],
            "ssh_host_ca_key": v2["host"]["active"]["key"],
            "tls_ca_key": v2["tls"]["active"]["key"],
            "tls_ca_cert": v2["tls"]["active"]["cert"],
        });
        let back = CaKeys::from_bytes(&serde_json::to_vec(&v1).expect("v1")).expect("v1 reads");
        assert_eq!(
            back.to_bytes(),
            k.to_bytes(),
            "v1 upgrades to the same v2 record"
        );
        let mut v9 = v2.clone();
        v9["version"] = 9.into();
        let err = CaKeys::from_bytes(&serde_json::to_vec(&v9).expect("v9")).expect_err("v9");
        assert!(err.to_string().contains("version 9"), "{err}");
    }

    #[test]
    fn the_public_view_holds_no_private_key() {
        let now = OffsetDateTime::now_utc();
        let k = CaKeys::generate("example.com", Suite::Default, now).expect("generate");
        let k = rotate(&k, CaType::Tls, RotationPhase::Init);
        let ca = k.cert_authority(CaType::Tls);
        assert_eq!(ca.spec.active_keys.tls.len(), 1);
        assert_eq!(ca.spec.additional_trusted_keys.tls.len(), 1);
        assert_eq!(ca.spec.rotation.phase, RotationPhase::Init);
        let text = serde_json::to_string(&ca).expect("json");
        assert!(!text.contains("PRIVATE"), "{text}");
        assert!(text.contains("BEGIN CERTIFICATE"));
    }

    #[test]
    fn signer_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<CaSigner>();
        check::<CaKeys>();
    }
}
