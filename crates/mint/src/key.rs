//! Key pairs (subject keys and CA keys) and public keys, with their PEM, DER and OpenSSH
//! encodings.

use crate::{MintError, Suite};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc5912, rfc8410};
use der::asn1::{BitStringRef, OctetStringRef};
use der::{Decode, Encode};
use p256::elliptic_curve::zeroize::Zeroizing;
use rand_core::OsRng;
use rsa::pkcs1::{DecodeRsaPrivateKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use ssh_key::public::{EcdsaPublicKey, Ed25519PublicKey, KeyData, RsaPublicKey};

pub(crate) const OID_EC_PUBLIC_KEY: ObjectIdentifier = rfc5912::ID_EC_PUBLIC_KEY;
pub(crate) const OID_P256: ObjectIdentifier = rfc5912::SECP_256_R_1;
pub(crate) const OID_RSA: ObjectIdentifier = rfc5912::RSA_ENCRYPTION;
pub(crate) const OID_ED25519: ObjectIdentifier = rfc8410::ID_ED_25519;

/// RSA modulus size of the legacy suite.
const RSA_BITS: usize = 2048;

/// SEC1 `ECPrivateKey` (RFC 5915).
#[derive(der::Sequence)]
struct EcPrivateKeyAsn1<'a> {
    version: u8,
    private_key: OctetStringRef<'a>,
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    parameters: Option<ObjectIdentifier>,
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    public_key: Option<BitStringRef<'a>>,
}

/// An ECDSA P-256 key: the private scalar and the uncompressed public point.
#[derive(Clone)]
pub(crate) struct P256Key {
    pub(crate) scalar: Zeroizing<[u8; 32]>,
    pub(crate) public: [u8; 65],
}

impl P256Key {
    fn generate() -> Result<Self, MintError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .map_err(|e| MintError::KeyGeneration {
            algorithm: "ecdsa p-256",
            reason: e.to_string(),
        })?;
        // ring's own output: consistent by construction, no need to recompute the point.
        Self::from_pkcs8_der(pkcs8.as_ref(), false)
    }

    /// Reads PKCS#8 `PrivateKeyInfo` holding a P-256 key.
    fn from_pkcs8_der(der: &[u8], verify: bool) -> Result<Self, MintError> {
        let info = p256::pkcs8::PrivateKeyInfo::try_from(der)
            .map_err(|e| MintError::InvalidPrivateKey(format!("pkcs#8: {e}")))?;
        if info.algorithm.oid != OID_EC_PUBLIC_KEY {
            return Err(MintError::UnsupportedKey(info.algorithm.oid.to_string()));
        }
        match info.algorithm.parameters_oid() {
            Ok(curve) if curve == OID_P256 => {}
            Ok(curve) => return Err(MintError::UnsupportedKey(format!("ec curve {curve}"))),
            Err(e) => {
                return Err(MintError::InvalidPrivateKey(format!(
                    "pkcs#8 ec key without a named curve: {e}"
                )));
            }
        }
        Self::from_sec1_der(info.private_key, verify)
    }

    /// Reads SEC1 `ECPrivateKey`; computes the public point when it is missing, and checks
    /// it when `verify`.
    fn from_sec1_der(der: &[u8], verify: bool) -> Result<Self, MintError> {
        let asn1 = EcPrivateKeyAsn1::from_der(der)
            .map_err(|e| MintError::InvalidPrivateKey(format!("sec1 ec private key: {e}")))?;
        if asn1.version != 1 {
            return Err(MintError::InvalidPrivateKey(format!(
                "sec1 ec private key version {} (expected 1)",
                asn1.version
            )));
        }
        if let Some(curve) = asn1.parameters
            && curve != OID_P256
        {
            return Err(MintError::UnsupportedKey(format!("ec curve {curve}")));
        }
        let raw = asn1.private_key.as_bytes();
        if raw.len() > 32 || raw.is_empty() {
            return Err(MintError::InvalidPrivateKey(format!(
                "p-256 private scalar of {} bytes (expected 32)",
                raw.len()
            )));
        }
        let mut scalar = Zeroizing::new([0u8; 32]);
        scalar[32 - raw.len()..].copy_from_slice(raw);
        let given = asn1.public_key.and_then(|b| b.as_bytes());
        let public: [u8; 65] = match (given, verify) {
            (Some(p), false) => p.try_into().map_err(|_| {
                MintError::InvalidPrivateKey("p-256 public point is not 65 bytes".into())
            })?,
            _ => {
                let secret = p256::SecretKey::from_slice(&scalar[..]).map_err(|_| {
                    MintError::InvalidPrivateKey("p-256 private scalar out of range".into())
                })?;
                let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &secret.public_key(),
                    false,
                );
                let computed: [u8; 65] = point.as_bytes().try_into().map_err(|_| {
                    MintError::InvalidPrivateKey("p-256 public point is not 65 bytes".into())
                })?;
                if let Some(p) = given
                    && p != computed
                {
                    return Err(MintError::InvalidPrivateKey(
                        "the public key stored with the p-256 private key does not match it".into(),
                    ));
                }
                computed
            }
        };
        Ok(Self { scalar, public })
    }

    fn sec1_der(&self, with_parameters: bool) -> Result<Zeroizing<Vec<u8>>, MintError> {
        let asn1 = EcPrivateKeyAsn1 {
            version: 1,
            private_key: OctetStringRef::new(&self.scalar[..])
                .map_err(|e| MintError::encoding("ec private key", e))?,
            parameters: with_parameters.then_some(OID_P256),
            public_key: Some(
                BitStringRef::from_bytes(&self.public)
                    .map_err(|e| MintError::encoding("ec private key", e))?,
            ),
        };
        asn1.to_der()
            .map(Zeroizing::new)
            .map_err(|e| MintError::encoding("ec private key", e))
    }

    fn pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, MintError> {
        let inner = self.sec1_der(false)?;
        let info = p256::pkcs8::PrivateKeyInfo {
            algorithm: p256::pkcs8::AlgorithmIdentifierRef {
                oid: OID_EC_PUBLIC_KEY,
                parameters: Some((&OID_P256).into()),
            },
            private_key: &inner,
            public_key: None,
        };
        info.to_der()
            .map(Zeroizing::new)
            .map_err(|e| MintError::encoding("pkcs#8 private key", e))
    }
}

/// A private key of any algorithm this crate handles.
#[derive(Clone)]
pub(crate) enum KeyPair {
    P256(P256Key),
    Ed25519(Box<ed25519_dalek::SigningKey>),
    Rsa(Box<rsa::RsaPrivateKey>),
}

impl KeyPair {
    pub(crate) fn generate_p256() -> Result<Self, MintError> {
        P256Key::generate().map(Self::P256)
    }

    pub(crate) fn generate_ed25519() -> Self {
        Self::Ed25519(Box::new(ed25519_dalek::SigningKey::generate(&mut OsRng)))
    }

    pub(crate) fn generate_rsa() -> Result<Self, MintError> {
        rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS)
            .map(|k| Self::Rsa(Box::new(k)))
            .map_err(|e| MintError::KeyGeneration {
                algorithm: "rsa-2048",
                reason: e.to_string(),
            })
    }

    pub(crate) fn algorithm_name(&self) -> &'static str {
        match self {
            Self::P256(_) => "ecdsa-p256",
            Self::Ed25519(_) => "ed25519",
            Self::Rsa(_) => "rsa",
        }
    }

    /// Reads the first private key of a PEM text: SEC1, PKCS#1 or PKCS#8.
    pub(crate) fn from_pem(text: &str) -> Result<Self, MintError> {
        let blocks = pem::parse_many(text).map_err(|e| MintError::InvalidPem(e.to_string()))?;
        for block in &blocks {
            let der = block.contents();
            match block.tag() {
                "EC PRIVATE KEY" => return P256Key::from_sec1_der(der, true).map(Self::P256),
                "RSA PRIVATE KEY" => {
                    let key = rsa::RsaPrivateKey::from_pkcs1_der(der)
                        .map_err(|e| MintError::InvalidPrivateKey(format!("pkcs#1: {e}")))?;
                    return Self::checked_rsa(key);
                }
                "PRIVATE KEY" => return Self::from_pkcs8_der(der),
                "ENCRYPTED PRIVATE KEY" => {
                    return Err(MintError::InvalidPrivateKey(
                        "the key is encrypted; decrypt it first (openssl pkey -in key -out plain)"
                            .into(),
                    ));
                }
                "OPENSSH PRIVATE KEY" => {
                    return Err(MintError::InvalidPrivateKey(
                        "openssh private key format is not read; convert it to pem with \
                         ssh-keygen -p -m PEM -f key"
                            .into(),
                    ));
                }
                _ => {}
            }
        }
        Err(MintError::InvalidPem(
            "no private key block found; expected -----BEGIN EC PRIVATE KEY-----, \
             -----BEGIN RSA PRIVATE KEY----- or -----BEGIN PRIVATE KEY-----"
                .into(),
        ))
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, MintError> {
        let info = p256::pkcs8::PrivateKeyInfo::try_from(der)
            .map_err(|e| MintError::InvalidPrivateKey(format!("pkcs#8: {e}")))?;
        let oid = info.algorithm.oid;
        if oid == OID_EC_PUBLIC_KEY {
            P256Key::from_pkcs8_der(der, true).map(Self::P256)
        } else if oid == OID_ED25519 {
            ed25519_dalek::SigningKey::from_pkcs8_der(der)
                .map(|k| Self::Ed25519(Box::new(k)))
                .map_err(|e| MintError::InvalidPrivateKey(format!("pkcs#8 ed25519: {e}")))
        } else if oid == OID_RSA {
            let key = rsa::RsaPrivateKey::from_pkcs8_der(der)
                .map_err(|e| MintError::InvalidPrivateKey(format!("pkcs#8 rsa: {e}")))?;
            Self::checked_rsa(key)
        } else {
            Err(MintError::UnsupportedKey(oid.to_string()))
        }
    }

    fn checked_rsa(key: rsa::RsaPrivateKey) -> Result<Self, MintError> {
        key.validate()
            .map_err(|e| MintError::InvalidPrivateKey(format!("rsa: {e}")))?;
        if key.size() * 8 < RSA_BITS {
            return Err(MintError::InvalidPrivateKey(format!(
                "rsa key of {} bits is too short; use at least {RSA_BITS} bits",
                key.size() * 8
            )));
        }
        Ok(Self::Rsa(Box::new(key)))
    }

    /// PEM: SEC1 for P-256, PKCS#1 for RSA, PKCS#8 for Ed25519.
    pub(crate) fn to_pem(&self) -> Result<String, MintError> {
        let (tag, der) = match self {
            Self::P256(k) => ("EC PRIVATE KEY", k.sec1_der(true)?),
            Self::Rsa(k) => (
                "RSA PRIVATE KEY",
                Zeroizing::new(
                    k.to_pkcs1_der()
                        .map_err(|e| MintError::encoding("rsa private key", e))?
                        .as_bytes()
                        .to_vec(),
                ),
            ),
            Self::Ed25519(_) => ("PRIVATE KEY", self.to_pkcs8_der()?),
        };
        Ok(encode_pem(tag, &der))
    }

    /// Traditional DER: SEC1 (P-256), PKCS#1 (RSA), PKCS#8 (Ed25519, which has no other).
    pub(crate) fn to_traditional_der(&self) -> Result<Zeroizing<Vec<u8>>, MintError> {
        match self {
            Self::P256(k) => k.sec1_der(true),
            Self::Rsa(k) => Ok(Zeroizing::new(
                k.to_pkcs1_der()
                    .map_err(|e| MintError::encoding("rsa private key", e))?
                    .as_bytes()
                    .to_vec(),
            )),
            Self::Ed25519(_) => self.to_pkcs8_der(),
        }
    }

    pub(crate) fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, MintError> {
        match self {
            Self::P256(k) => k.pkcs8_der(),
            Self::Rsa(k) => rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(k.as_ref())
                .map(|d| Zeroizing::new(d.as_bytes().to_vec()))
                .map_err(|e| MintError::encoding("pkcs#8 private key", e)),
            Self::Ed25519(k) => ed25519_dalek::pkcs8::EncodePrivateKey::to_pkcs8_der(k.as_ref())
                .map(|d| Zeroizing::new(d.as_bytes().to_vec()))
                .map_err(|e| MintError::encoding("pkcs#8 private key", e)),
        }
    }

    pub(crate) fn public_key(&self) -> PublicKey {
        let inner = match self {
            Self::P256(k) => PublicInner::P256(Box::new(k.public)),
            Self::Ed25519(k) => PublicInner::Ed25519(k.verifying_key().to_bytes()),
            Self::Rsa(k) => PublicInner::Rsa {
                n: k.n().to_bytes_be(),
                e: k.e().to_bytes_be(),
            },
        };
        PublicKey { inner }
    }
}

/// PEM with LF line endings.
pub(crate) fn encode_pem(tag: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(tag, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// A subject private key. `Debug` never shows key material.
///
/// One key serves both SSH (`IdentityFile`) and TLS (rustls, OpenSSL).
#[derive(Clone)]
pub struct PrivateKey {
    pub(crate) inner: KeyPair,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.inner.algorithm_name())
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Generates a subject key of the suite: ECDSA P-256 ([`Suite::Default`]) or RSA-2048
    /// ([`Suite::Legacy`], slow: tens to hundreds of milliseconds).
    pub fn generate(suite: Suite) -> Result<Self, MintError> {
        let inner = match suite {
            Suite::Default => KeyPair::generate_p256()?,
            Suite::Legacy => KeyPair::generate_rsa()?,
        };
        Ok(Self { inner })
    }

    /// Reads the first private key of a PEM text: SEC1 `EC PRIVATE KEY` (P-256), PKCS#1
    /// `RSA PRIVATE KEY`, or PKCS#8 `PRIVATE KEY` (P-256, RSA or Ed25519).
    pub fn from_pem(pem: &str) -> Result<Self, MintError> {
        KeyPair::from_pem(pem).map(|inner| Self { inner })
    }

    /// PEM (SEC1 `EC PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`), readable by OpenSSH and rustls.
    /// An Ed25519 key (only ever read, never generated here) is written as PKCS#8.
    pub fn to_pem(&self) -> String {
        // Encoding a well-formed in-memory key cannot fail; the fallback is unreachable.
        self.inner.to_pem().unwrap_or_default()
    }

    /// The DER bytes `to_pem` wraps (SEC1, PKCS#1, or PKCS#8 for Ed25519).
    pub fn to_der(&self) -> Vec<u8> {
        self.inner
            .to_traditional_der()
            .map(|d| d.to_vec())
            .unwrap_or_default()
    }

    /// PKCS#8 `PrivateKeyInfo` DER, for consumers that want one format
    /// (`rustls_pki_types::PrivatePkcs8KeyDer`).
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        self.inner
            .to_pkcs8_der()
            .map(|d| d.to_vec())
            .unwrap_or_default()
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.public_key()
    }

    /// A short algorithm name: `ecdsa-p256`, `rsa` or `ed25519`.
    pub fn algorithm(&self) -> &'static str {
        self.inner.algorithm_name()
    }
}

#[derive(Clone, PartialEq, Eq)]
enum PublicInner {
    /// Uncompressed SEC1 point.
    P256(Box<[u8; 65]>),
    Ed25519([u8; 32]),
    /// Big-endian, no leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
}

/// A subject public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    inner: PublicInner,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The fingerprint `ssh-keygen -l` prints, computed here so that `key` depends on no
        // other module of this crate.
        let fp = self
            .ssh_key_data()
            .map(|data| data.fingerprint(ssh_key::HashAlg::Sha256).to_string())
            .unwrap_or_default();
        write!(f, "PublicKey({} {fp})", self.ssh_algorithm())
    }
}

impl PublicKey {
    /// Reads a DER SubjectPublicKeyInfo: ECDSA P-256 (uncompressed or compressed), Ed25519
    /// or RSA.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, MintError> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| MintError::InvalidPublicKey(format!("subject public key info: {e}")))?;
        let oid = spki.algorithm.oid;
        let bits = spki.subject_public_key.as_bytes().ok_or_else(|| {
            MintError::InvalidPublicKey("public key bit string has unused bits".into())
        })?;
        if oid == OID_EC_PUBLIC_KEY {
            match spki.algorithm.parameters_oid() {
                Ok(c) if c == OID_P256 => {}
                Ok(c) => return Err(MintError::UnsupportedKey(format!("ec curve {c}"))),
                Err(e) => {
                    return Err(MintError::InvalidPublicKey(format!(
                        "ec key without a named curve: {e}"
                    )));
                }
            }
            Self::from_p256_sec1(bits)
        } else if oid == OID_ED25519 {
            let bytes: [u8; 32] = bits.try_into().map_err(|_| {
                MintError::InvalidPublicKey(format!("ed25519 key of {} bytes", bits.len()))
            })?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|e| MintError::InvalidPublicKey(format!("ed25519: {e}")))?;
            Ok(Self {
                inner: PublicInner::Ed25519(bytes),
            })
        } else if oid == OID_RSA {
            let key = rsa::RsaPublicKey::from_public_key_der(der)
                .map_err(|e| MintError::InvalidPublicKey(format!("rsa: {e}")))?;
            Ok(Self::from_rsa(&key))
        } else {
            Err(MintError::UnsupportedKey(oid.to_string()))
        }
    }

    fn from_p256_sec1(bytes: &[u8]) -> Result<Self, MintError> {
        let key = p256::PublicKey::from_sec1_bytes(bytes)
            .map_err(|_| MintError::InvalidPublicKey("not a valid p-256 point".into()))?;
        let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&key, false);
        let public: [u8; 65] = point
            .as_bytes()
            .try_into()
            .map_err(|_| MintError::InvalidPublicKey("p-256 point is not 65 bytes".into()))?;
        Ok(Self {
            inner: PublicInner::P256(Box::new(public)),
        })
    }

    fn from_rsa(key: &rsa::RsaPublicKey) -> Self {
        Self {
            inner: PublicInner::Rsa {
                n: key.n().to_bytes_be(),
                e: key.e().to_bytes_be(),
            },
        }
    }

    /// Reads an OpenSSH public key line (`ecdsa-sha2-nistp256 AAAA... [comment]`,
    /// `ssh-ed25519 ...`, `ssh-rsa ...`).
    pub fn from_openssh(line: &str) -> Result<Self, MintError> {
        let key = ssh_key::PublicKey::from_openssh(line.trim())
            .map_err(|e| MintError::InvalidPublicKey(format!("openssh public key line: {e}")))?;
        match key.key_data() {
            KeyData::Ecdsa(EcdsaPublicKey::NistP256(point)) => {
                Self::from_p256_sec1(point.as_bytes())
            }
            KeyData::Ed25519(k) => {
                ed25519_dalek::VerifyingKey::from_bytes(&k.0)
                    .map_err(|e| MintError::InvalidPublicKey(format!("ed25519: {e}")))?;
                Ok(Self {
                    inner: PublicInner::Ed25519(k.0),
                })
            }
            KeyData::Rsa(k) => {
                let key = rsa::RsaPublicKey::try_from(k)
                    .map_err(|e| MintError::InvalidPublicKey(format!("rsa: {e}")))?;
                Ok(Self::from_rsa(&key))
            }
            other => Err(MintError::UnsupportedKey(other.algorithm().to_string())),
        }
    }

    /// DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Vec<u8> {
        match &self.inner {
            PublicInner::P256(p) => {
                // SEQUENCE { SEQUENCE { ecPublicKey, prime256v1 }, BIT STRING (0 unused) }
                const PREFIX: [u8; 26] = [
                    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
                ];
                let mut out = Vec::with_capacity(PREFIX.len() + 65);
                out.extend_from_slice(&PREFIX);
                out.extend_from_slice(&p[..]);
                out
            }
            PublicInner::Ed25519(k) => {
                const PREFIX: [u8; 12] = [
                    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
                ];
                let mut out = Vec::with_capacity(PREFIX.len() + 32);
                out.extend_from_slice(&PREFIX);
                out.extend_from_slice(k);
                out
            }
            PublicInner::Rsa { n, e } => {
                let key = rsa::RsaPublicKey::new_unchecked(
                    rsa::BigUint::from_bytes_be(n),
                    rsa::BigUint::from_bytes_be(e),
                );
                key.to_public_key_der()
                    .map(|d| d.as_bytes().to_vec())
                    .unwrap_or_default()
            }
        }
    }

    /// The OpenSSH key data (for certificates and fingerprints).
    pub(crate) fn ssh_key_data(&self) -> Result<KeyData, MintError> {
        Ok(match &self.inner {
            PublicInner::P256(p) => KeyData::Ecdsa(
                EcdsaPublicKey::from_sec1_bytes(&p[..])
                    .map_err(|e| MintError::InvalidPublicKey(format!("p-256: {e}")))?,
            ),
            PublicInner::Ed25519(k) => KeyData::Ed25519(Ed25519PublicKey(*k)),
            PublicInner::Rsa { n, e } => KeyData::Rsa(RsaPublicKey {
                e: ssh_key::Mpint::from_positive_bytes(e)
                    .map_err(|e| MintError::InvalidPublicKey(format!("rsa exponent: {e}")))?,
                n: ssh_key::Mpint::from_positive_bytes(n)
                    .map_err(|e| MintError::InvalidPublicKey(format!("rsa modulus: {e}")))?,
            }),
        })
    }

    /// `ecdsa-sha2-nistp256 AAAA...` (no comment).
    pub fn to_openssh(&self) -> String {
        self.ssh_key_data()
            .and_then(|data| {
                ssh_key::PublicKey::new(data, "")
                    .to_openssh()
                    .map_err(|e| MintError::encoding("openssh public key", e))
            })
            .unwrap_or_default()
    }

    /// The OpenSSH algorithm name (`ecdsa-sha2-nistp256`, `ssh-ed25519`, `ssh-rsa`).
    pub fn ssh_algorithm(&self) -> &'static str {
        match &self.inner {
            PublicInner::P256(_) => "ecdsa-sha2-nistp256",
            PublicInner::Ed25519(_) => "ssh-ed25519",
            PublicInner::Rsa { .. } => "ssh-rsa",
        }
    }

    /// The raw key bits of the SubjectPublicKeyInfo (for key identifiers).
    pub(crate) fn raw_bits(&self) -> Vec<u8> {
        match &self.inner {
            PublicInner::P256(p) => p.to_vec(),
            PublicInner::Ed25519(k) => k.to_vec(),
            PublicInner::Rsa { .. } => {
                let der = self.to_spki_der();
                spki::SubjectPublicKeyInfoRef::from_der(&der)
                    .ok()
                    .and_then(|s| s.subject_public_key.as_bytes().map(<[u8]>::to_vec))
                    .unwrap_or_default()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p256_pem_round_trip_and_formats() {
        let key = PrivateKey::generate(Suite::Default).expect("generate");
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN EC PRIVATE KEY-----\n"), "{pem}");
        let back = PrivateKey::from_pem(&pem).expect("read back");
        assert_eq!(back.public_key(), key.public_key());
        // PKCS#8 reads back to the same key.
        let p8 = encode_pem("PRIVATE KEY", &key.to_pkcs8_der());
        let back8 = PrivateKey::from_pem(&p8).expect("pkcs8");
        assert_eq!(back8.public_key(), key.public_key());
        // ring accepts our PKCS#8 as is.
        ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &key.to_pkcs8_der(),
            &ring::rand::SystemRandom::new(),
        )
        .expect("ring pkcs8");
    }

    #[test]
    fn public_key_encodings_round_trip() {
        let key = PrivateKey::generate(Suite::Default).expect("generate");
        let public = key.public_key();
        let der = public.to_spki_der();
        assert_eq!(PublicKey::from_spki_der(&der).expect("spki"), public);
        let line = public.to_openssh();
        assert!(line.starts_with("ecdsa-sha2-nistp256 AAAA"), "{line}");
        assert!(!line.ends_with(' '));
        assert_eq!(PublicKey::from_openssh(&line).expect("openssh"), public);
        // p256's own SPKI encoding agrees with our fixed prefix.
        let p = p256::PublicKey::from_sec1_bytes(&key_bytes(&public)).expect("point");
        assert_eq!(p.to_public_key_der().expect("der").as_bytes(), &der[..]);
        let dbg = format!("{key:?}");
        assert!(!dbg.contains(&hex::encode(key.to_der())));
    }

    fn key_bytes(k: &PublicKey) -> Vec<u8> {
        k.raw_bits()
    }

    #[test]
    fn ed25519_pkcs8_and_spki() {
        let key = KeyPair::generate_ed25519();
        let pem = key.to_pem().expect("pem");
        let back = KeyPair::from_pem(&pem).expect("read");
        assert_eq!(back.public_key(), key.public_key());
        let der = key.public_key().to_spki_der();
        assert_eq!(
            PublicKey::from_spki_der(&der).expect("spki"),
            key.public_key()
        );
        assert!(
            key.public_key()
                .to_openssh()
                .starts_with("ssh-ed25519 AAAA")
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            PrivateKey::from_pem("nothing here"),
            Err(MintError::InvalidPem(_))
        ));
        assert!(PublicKey::from_spki_der(b"\x30\x00").is_err());
        assert!(PublicKey::from_openssh("ssh-ed25519 !!!").is_err());
        let bad = encode_pem("EC PRIVATE KEY", b"\x30\x03\x02\x01\x01");
        assert!(PrivateKey::from_pem(&bad).is_err());
    }

    #[test]
    fn sec1_without_public_point_is_completed() {
        let key = P256Key::generate().expect("generate");
        let asn1 = EcPrivateKeyAsn1 {
            version: 1,
            private_key: OctetStringRef::new(&key.scalar[..]).expect("octets"),
            parameters: Some(OID_P256),
            public_key: None,
        };
        let der = asn1.to_der().expect("der");
        let back = P256Key::from_sec1_der(&der, true).expect("read");
        assert_eq!(back.public, key.public);
    }
}
