//! The crate's one error type.

/// Errors of minting and parsing. Messages say what is wrong and, where a person can act,
/// what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The system random source or a key generator failed.
    #[error(
        "generating a {algorithm} key failed: {reason}; check that the system random source works"
    )]
    KeyGeneration {
        /// The algorithm asked for.
        algorithm: &'static str,
        /// What the generator reported.
        reason: String,
    },
    /// The system random source failed while drawing a serial number or nonce.
    #[error("the system random source failed; check that /dev/urandom (getrandom) works")]
    Random,
    /// PEM text could not be read.
    #[error("invalid pem: {0}")]
    InvalidPem(String),
    /// A private key could not be read or is not usable.
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(String),
    /// A public key could not be read or is not usable.
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    /// A key of an algorithm this crate does not handle.
    #[error("unsupported key algorithm {0}: use ECDSA P-256, Ed25519 or RSA")]
    UnsupportedKey(String),
    /// Stored CA key material could not be read.
    #[error(
        "invalid cluster ca keys: {0}; restore them from a backup or rotate the certificate authorities"
    )]
    InvalidCaKeys(String),
    /// The requested validity window is empty or out of range.
    #[error("invalid certificate validity: {0}")]
    InvalidValidity(String),
    /// A value cannot be carried in a certificate.
    #[error("invalid certificate request: {0}")]
    InvalidRequest(String),
    /// A certificate could not be read, or lacks what Machine ID puts in it.
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    /// A rotation phase that does not follow the current one; nothing was changed.
    #[error(transparent)]
    Rotation(machine_id_types::RotationError),
    /// Signing failed (a broken key or random source).
    #[error(
        "signing the {what} failed: {reason}; the ca key may be damaged, rotate the certificate authorities"
    )]
    Signing {
        /// What was being signed.
        what: &'static str,
        /// What the signer reported.
        reason: String,
    },
    /// Encoding a certificate failed.
    #[error("encoding the {what} failed: {reason}")]
    Encoding {
        /// What was being encoded.
        what: &'static str,
        /// What the encoder reported.
        reason: String,
    },
    /// A CA pin could not be read.
    #[error("invalid ca pin {pin:?}: {reason}")]
    InvalidCaPin {
        /// The pin as given.
        pin: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl MintError {
    pub(crate) fn encoding(what: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Encoding {
            what,
            reason: e.to_string(),
        }
    }

    pub(crate) fn signing(what: &'static str, e: impl std::fmt::Display) -> Self {
        Self::Signing {
            what,
            reason: e.to_string(),
        }
    }
}
