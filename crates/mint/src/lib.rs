//! Keys, certificate authorities, and the certificates Machine ID mints. Pure: no I/O.
//!
//! - [`PrivateKey`] / [`PublicKey`]: a subject key (ECDSA P-256 by default, RSA-2048 in the
//!   legacy [`Suite`]); one key serves both SSH and TLS.
//! - [`CaKeys`]: the cluster's three CAs (SSH user, SSH host, TLS), serializable for the store.
//! - [`CaSigner`]: the CAs with cached signers, built once and used for every certificate.
//! - [`parse_tls_identity`]: reads an [`Identity`] back from an X.509 certificate.
//! - [`CaPin`]: `sha256:<hex>` over a CA certificate's SubjectPublicKeyInfo.
//! - [`ssh_fingerprint`] and [`cert_fingerprint`]: the fingerprints `ssh-keygen -l` and
//!   `openssl x509 -fingerprint -sha256` print, for people to compare.
//! - [`oids`] and [`ssh_ext`]: where the identity sits in X.509 subjects and SSH extensions.
//!
//! Signing uses ring (ECDSA P-256, RSA) and ed25519-dalek, each key parsed once in
//! [`CaKeys::signer`]; SSH certificates are built with `ssh-key`, X.509 certificates by
//! encoding the TBSCertificate with `x509-cert` and signing its bytes.
//!
//! ```
//! use machine_id_mint::{CaKeys, PrivateKey, Suite, parse_tls_identity};
//! use machine_id_types::Identity;
//! use time::{Duration, OffsetDateTime};
//!
//! let now = OffsetDateTime::now_utc();
//! let ca = CaKeys::generate("example.com", Suite::Default, now)?.signer()?;
//! let key = PrivateKey::generate(Suite::Default)?;
//! let identity = Identity {
//!     username: "bot-robot".into(),
//!     roles: vec!["bot-robot".into()],
//!     logins: vec![],
//!     traits: Default::default(),
//!     renewable: true,
//!     generation: 1,
//!     impersonator: None,
//!     disallow_reissue: false,
//!     cluster: "example.com".into(),
//!     expires: (now + Duration::hours(1)).replace_nanosecond(0)?,
//! };
//! let ssh_cert = ca.sign_user_ssh_cert(&key.public_key(), &identity, now)?;
//! assert!(ssh_cert.starts_with("ecdsa-sha2-nistp256-cert-v01@openssh.com "));
//! let tls_cert = ca.sign_user_tls_cert(&key.public_key(), &identity, now)?;
//! assert_eq!(parse_tls_identity(&tls_cert)?, identity);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

mod ca;
mod error;
mod fingerprint;
mod key;
mod pin;
mod signer;
mod ssh;
mod x509;

pub use ca::{CaKeys, CaSigner};
pub use error::MintError;
pub use fingerprint::{cert_fingerprint, ssh_fingerprint};
pub use key::{PrivateKey, PublicKey};
pub use pin::CaPin;
pub use x509::{TlsCertInfo, parse_tls_cert, parse_tls_identity};

#[doc(no_inline)]
pub use machine_id_types::Identity;

/// Which algorithms a cluster uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// Ed25519 SSH CAs, ECDSA P-256 TLS CA and subject keys.
    #[default]
    Default,
    /// RSA-2048 everywhere.
    Legacy,
}

/// Object identifiers of the X.509 subject attributes that carry an [`Identity`] beyond the
/// standard ones (`CN` = username, one `O` per role, one `L` per login).
///
/// They sit under the private arc `1.3.9999.2` and hold UTF8String values. Each attribute is
/// its own RDN, after the standard ones.
pub mod oids {
    use const_oid::ObjectIdentifier;

    /// The cluster name (always present).
    pub const CLUSTER: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.9999.2.1");
    /// `true` when the identity may be renewed (absent otherwise).
    pub const RENEWABLE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.9999.2.2");
    /// The generation counter, decimal (always present; `0` for non-bot identities).
    pub const GENERATION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.9999.2.3");
    /// The user who impersonated this identity (`bot-robot`), when any.
    pub const IMPERSONATOR: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.9999.2.4");
    /// `true` when certificates may not be re-issued from this one (absent otherwise).
    pub const DISALLOW_REISSUE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.9999.2.5");
    /// The user's traits as a JSON object of string lists, when any.
    pub const TRAITS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.9999.2.6");
}

/// Names of the Teleport-like extensions of SSH user certificates, besides the standard
/// `permit-pty` and `permit-port-forwarding` (which every user certificate carries).
///
/// Values are SSH strings, as OpenSSH wants non-empty extension data; flags have empty data.
pub mod ssh_ext {
    /// `{"version":"v1","roles":[...]}`.
    pub const ROLES: &str = "teleport-roles";
    /// The traits as a JSON object of string lists.
    pub const TRAITS: &str = "teleport-traits";
    /// The cluster name.
    pub const ROUTE_TO_CLUSTER: &str = "teleport-route-to-cluster";
    /// The impersonating user, when any.
    pub const IMPERSONATOR: &str = "impersonator";
    /// Present (empty) when certificates may not be re-issued from this one.
    pub const DISALLOW_REISSUE: &str = "disallow-reissue";
    /// Present (empty) when the identity is renewable.
    pub const RENEWABLE: &str = "renewable";
    /// The generation counter, decimal; absent when 0.
    pub const GENERATION: &str = "generation";
}

/// PEM-encodes a DER certificate (LF line endings).
pub fn cert_der_to_pem(der: &[u8]) -> String {
    key::encode_pem("CERTIFICATE", der)
}

/// Reads every certificate of a PEM text, DER. Other blocks are skipped; no certificate at
/// all is an error.
pub fn certs_from_pem(pem: &str) -> Result<Vec<Vec<u8>>, MintError> {
    let blocks = pem::parse_many(pem).map_err(|e| MintError::InvalidPem(e.to_string()))?;
    let certs: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(pem::Pem::into_contents)
        .collect();
    if certs.is_empty() {
        return Err(MintError::InvalidPem(
            "no certificate found; expected -----BEGIN CERTIFICATE----- blocks".into(),
        ));
    }
    for (i, der) in certs.iter().enumerate() {
        x509_parser::parse_x509_certificate(der).map_err(|e| {
            MintError::InvalidCertificate(format!("certificate {} of the pem text: {e}", i + 1))
        })?;
    }
    Ok(certs)
}

#[cfg(test)]
mod tests;
