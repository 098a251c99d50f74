//! The CA signing keys: one [`CaKey`] per CA, with its signers built once, that signs SSH
//! certificates (as an `ssh_key` signer) and X.509 TBS bytes. `ssh` and `x509` take a
//! `CaKey`; `ca` builds them from the stored key material. Depends on `key` only.

use crate::MintError;
use crate::key::{KeyPair, P256Key, PublicKey};
use ring::signature::KeyPair as _;
use ring::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair,
    RSA_PKCS1_SHA256, RSA_PKCS1_SHA512, RsaKeyPair,
};
use ssh_key::public::KeyData;
use ssh_key::{Algorithm, EcdsaCurve, HashAlg};
use x509_cert::spki::AlgorithmIdentifierOwned;

/// A CA key with its signers built once.
enum SignerImpl {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    P256 {
        /// DER (r, s) signatures for X.509.
        asn1: Box<EcdsaKeyPair>,
        /// Fixed r || s signatures, re-encoded as SSH mpints.
        fixed: Box<EcdsaKeyPair>,
    },
    Rsa(Box<RsaKeyPair>),
}

/// One CA key ready to sign: an `ssh_key` signer (`signature::Signer<ssh_key::Signature>`)
/// and an X.509 TBS signer.
pub(crate) struct CaKey {
    imp: SignerImpl,
    ssh_public: KeyData,
    public: PublicKey,
    x509_alg: AlgorithmIdentifierOwned,
    rng: ring::rand::SystemRandom,
}

impl CaKey {
    pub(crate) fn new(key: &KeyPair) -> Result<Self, MintError> {
        let public = key.public_key();
        let ssh_public = public.ssh_key_data()?;
        let (imp, x509_alg) = match key {
            KeyPair::Ed25519(k) => (
                SignerImpl::Ed25519(k.clone()),
                AlgorithmIdentifierOwned {
                    oid: const_oid::db::rfc8410::ID_ED_25519,
                    parameters: None,
                },
            ),
            KeyPair::P256(k) => (
                SignerImpl::P256 {
                    asn1: Box::new(ring_p256(k, &ECDSA_P256_SHA256_ASN1_SIGNING)?),
                    fixed: Box::new(ring_p256(k, &ECDSA_P256_SHA256_FIXED_SIGNING)?),
                },
                AlgorithmIdentifierOwned {
                    oid: const_oid::db::rfc5912::ECDSA_WITH_SHA_256,
                    parameters: None,
                },
            ),
            KeyPair::Rsa(_) => {
                let der = key.to_traditional_der()?;
                let pair = RsaKeyPair::from_der(&der)
                    .map_err(|e| MintError::InvalidPrivateKey(format!("rsa key rejected: {e}")))?;
                (
                    SignerImpl::Rsa(Box::new(pair)),
                    AlgorithmIdentifierOwned {
                        oid: const_oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
                        parameters: Some(der::asn1::Any::null()),
                    },
                )
            }
        };
        Ok(Self {
            imp,
            ssh_public,
            public,
            x509_alg,
            rng: ring::rand::SystemRandom::new(),
        })
    }

    pub(crate) fn public(&self) -> &PublicKey {
        &self.public
    }

    pub(crate) fn x509_alg(&self) -> &AlgorithmIdentifierOwned {
        &self.x509_alg
    }

    /// Signs X.509 TBS bytes: ECDSA-SHA256 (DER), Ed25519, or RSA PKCS#1 v1.5 SHA-256.
    pub(crate) fn sign_x509(&self, tbs: &[u8]) -> Result<Vec<u8>, MintError> {
        match &self.imp {
            SignerImpl::Ed25519(k) => Ok(ed25519_dalek::Signer::sign(k.as_ref(), tbs)
                .to_bytes()
                .to_vec()),
            SignerImpl::P256 { asn1, .. } => asn1
                .sign(&self.rng, tbs)
                .map(|s| s.as_ref().to_vec())
                .map_err(|e| MintError::signing("x509 certificate", e)),
            SignerImpl::Rsa(pair) => {
                let mut out = vec![0u8; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &self.rng, tbs, &mut out)
                    .map_err(|e| MintError::signing("x509 certificate", e))?;
                Ok(out)
            }
        }
    }
}

/// SSH mpint encoding of a positive big-endian integer (length-prefixed, minimal, with a
/// leading zero when the top bit is set).
fn push_mpint(out: &mut Vec<u8>, bytes: &[u8]) {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let pad = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let len = bytes.len() + usize::from(pad);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    if pad {
        out.push(0);
    }
    out.extend_from_slice(bytes);
}

impl signature::Signer<ssh_key::Signature> for CaKey {
    fn try_sign(&self, msg: &[u8]) -> Result<ssh_key::Signature, signature::Error> {
        match &self.imp {
            SignerImpl::Ed25519(k) => {
                let sig = ed25519_dalek::Signer::sign(k.as_ref(), msg);
                ssh_key::Signature::new(Algorithm::Ed25519, sig.to_bytes().to_vec())
                    .map_err(signature::Error::from_source)
            }
            SignerImpl::P256 { fixed, .. } => {
                let sig = fixed
                    .sign(&self.rng, msg)
                    .map_err(|_| signature::Error::new())?;
                let (r, s) = sig.as_ref().split_at(32);
                let mut data = Vec::with_capacity(2 * (4 + 33));
                push_mpint(&mut data, r);
                push_mpint(&mut data, s);
                ssh_key::Signature::new(
                    Algorithm::Ecdsa {
                        curve: EcdsaCurve::NistP256,
                    },
                    data,
                )
                .map_err(signature::Error::from_source)
            }
            SignerImpl::Rsa(pair) => {
                // rsa-sha2-512, as OpenSSH itself signs with an RSA CA.
                let mut out = vec![0u8; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA512, &self.rng, msg, &mut out)
                    .map_err(|_| signature::Error::new())?;
                ssh_key::Signature::new(
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha512),
                    },
                    out,
                )
                .map_err(signature::Error::from_source)
            }
        }
    }
}

impl From<&CaKey> for KeyData {
    fn from(key: &CaKey) -> KeyData {
        key.ssh_public.clone()
    }
}

/// Builds ring's P-256 key pair for `alg` from our key.
pub(crate) fn ring_p256(
    key: &P256Key,
    alg: &'static ring::signature::EcdsaSigningAlgorithm,
) -> Result<ring::signature::EcdsaKeyPair, MintError> {
    let rng = ring::rand::SystemRandom::new();
    let pair = ring::signature::EcdsaKeyPair::from_private_key_and_public_key(
        alg,
        &key.scalar[..],
        &key.public,
        &rng,
    )
    .map_err(|e| MintError::InvalidPrivateKey(format!("p-256 key rejected: {e}")))?;
    debug_assert_eq!(pair.public_key().as_ref(), &key.public[..]);
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mpint_encoding() {
        let mut out = Vec::new();
        push_mpint(&mut out, &[0x00, 0x00, 0x7f]);
        assert_eq!(out, [0, 0, 0, 1, 0x7f]);
        out.clear();
        push_mpint(&mut out, &[0x80, 0x01]);
        assert_eq!(out, [0, 0, 0, 3, 0, 0x80, 0x01]);
        out.clear();
        push_mpint(&mut out, &[0, 0]);
        assert_eq!(out, [0, 0, 0, 0]);
    }
}
