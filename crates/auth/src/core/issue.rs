//! Minting certificates for a subject key: the requested lifetime within its ceiling, the
//! subject key read from DER, and a bot's own certificates (its roles, the logins they
//! allow, its traits) as every join and renewal issues them.

use std::time::Duration;

use machine_id_mint::PublicKey;
use machine_id_types::{Identity, User};
use time::OffsetDateTime;

use super::{Core, add, expanded_logins};
use crate::error::{AuthError, Result};

/// Certificates issued for one subject key, with the CAs that vouch for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IssuedCerts {
    /// The SSH certificate, one OpenSSH authorized-keys line.
    pub ssh_cert: String,
    /// The X.509 certificate, DER.
    pub tls_cert: Vec<u8>,
    /// The cluster's trusted TLS CA certificates, DER (both sets during a rotation).
    pub tls_ca_certs: Vec<Vec<u8>>,
    /// The cluster's trusted SSH CA public keys, OpenSSH lines: every user CA key, then every
    /// host CA key.
    pub ssh_ca_keys: Vec<String>,
}

impl Core {
    /// The lifetime of certificates asked for `requested` (`None`: the default), capped at
    /// `max`.
    pub(super) fn ttl(&self, requested: Option<Duration>, max: Duration) -> Duration {
        requested.unwrap_or(self.limits.default_cert_ttl).min(max)
    }

    /// The subject key of a certificate request, from its DER SubjectPublicKeyInfo.
    pub(super) fn subject_key(der: &[u8]) -> Result<PublicKey> {
        if der.is_empty() {
            return Err(AuthError::InvalidArgument(
                "public_key is empty; send the DER SubjectPublicKeyInfo of the key to certify"
                    .into(),
            ));
        }
        PublicKey::from_spki_der(der).map_err(|e| {
            AuthError::InvalidArgument(format!(
                "public_key is not a supported DER SubjectPublicKeyInfo: {e}"
            ))
        })
    }

    /// Mints the SSH and X.509 certificates of `identity` for `subject`.
    pub(super) fn issue(&self, subject: &PublicKey, identity: &Identity) -> Result<IssuedCerts> {
        let now = self.clock.now();
        let signer = self.cas.signer();
        let ssh_cert = signer.sign_user_ssh_cert(subject, identity, now)?;
        let tls_cert = signer.sign_user_tls_cert(subject, identity, now)?;
        Ok(IssuedCerts {
            ssh_cert,
            tls_cert,
            tls_ca_certs: signer.trusted_tls_certs().to_vec(),
            ssh_ca_keys: signer
                .trusted_user_cas()
                .iter()
                .chain(signer.trusted_host_cas())
                .cloned()
                .collect(),
        })
    }

    /// Issues a bot's own certificates (not an output's) for `subject`: the user's roles, the
    /// logins they allow with its `logins` trait, its traits, a TTL of `ttl` (`None`: the
    /// default) capped at the renewable maximum. `Some(generation)` makes them renewable with
    /// that generation (token joins and renewals); `None` makes them neither (IAM joins).
    pub(super) async fn issue_bot_certs(
        &self,
        subject: &PublicKey,
        user: &User,
        generation: Option<u64>,
        ttl: Option<Duration>,
        now: OffsetDateTime,
    ) -> Result<(IssuedCerts, Identity)> {
        let roles = self.stored_roles(&user.spec.roles).await?;
        let ttl = self.ttl(ttl, self.limits.max_renewable_ttl);
        let identity = Identity {
            username: user.metadata.name.clone(),
            roles: user.spec.roles.clone(),
            logins: expanded_logins(&roles, user.logins()),
            traits: user.spec.traits.clone(),
            renewable: generation.is_some(),
            generation: generation.unwrap_or(0),
            impersonator: None,
            disallow_reissue: false,
            cluster: self.cluster_name.clone(),
            expires: add(now, ttl),
        };
        let certs = self.issue(subject, &identity)?;
        Ok((certs, identity))
    }

    /// Every trusted TLS CA certificate, DER, active first.
    pub fn tls_ca_certs(&self) -> Vec<Vec<u8>> {
        self.cas.signer().trusted_tls_certs().to_vec()
    }
}
