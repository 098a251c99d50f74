//! OpenSSH certificates: user certs from the user CA, host certs from the host CA.

use crate::key::PublicKey;
use crate::signer::CaKey;
use crate::x509::BACKDATE;
use crate::{MintError, ssh_ext};
use machine_id_types::Identity;
use ssh_key::certificate::{Builder, CertType};
use time::OffsetDateTime;

/// Size of the certificate nonce (OpenSSH uses 32).
const NONCE_LEN: usize = 32;

fn random_bytes<const N: usize>() -> Result<[u8; N], MintError> {
    let mut out = [0u8; N];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut out)
        .map_err(|_| MintError::Random)?;
    Ok(out)
}

fn unix(t: OffsetDateTime, what: &str) -> Result<u64, MintError> {
    u64::try_from(t.unix_timestamp())
        .map_err(|_| MintError::InvalidValidity(format!("{what} {t} is before 1970")))
}

fn builder(
    subject: &PublicKey,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
    cert_type: CertType,
    key_id: &str,
) -> Result<Builder, MintError> {
    if not_after <= now {
        return Err(MintError::InvalidValidity(format!(
            "the certificate would expire at {not_after}, not after it is issued at {now}; \
             ask for a positive ttl and check the clock"
        )));
    }
    let valid_after = unix(now - BACKDATE, "valid after").unwrap_or(0);
    let valid_before = unix(not_after, "valid before")?;
    let nonce = random_bytes::<NONCE_LEN>()?;
    let serial = u64::from_be_bytes(random_bytes::<8>()?);
    let mut b = Builder::new(nonce, subject.ssh_key_data()?, valid_after, valid_before)
        .map_err(|e| MintError::InvalidValidity(e.to_string()))?;
    let enc = |e: ssh_key::Error| MintError::encoding("ssh certificate", e);
    b.serial(serial).map_err(enc)?;
    b.cert_type(cert_type).map_err(enc)?;
    b.key_id(key_id).map_err(enc)?;
    Ok(b)
}

fn finish(b: Builder, ca: &CaKey) -> Result<String, MintError> {
    let cert = b
        .sign(ca)
        .map_err(|e| MintError::signing("ssh certificate", e))?;
    cert.to_openssh()
        .map_err(|e| MintError::encoding("ssh certificate", e))
}

pub(crate) fn user_cert(
    ca: &CaKey,
    subject: &PublicKey,
    identity: &Identity,
    now: OffsetDateTime,
) -> Result<String, MintError> {
    if identity.username.is_empty() {
        return Err(MintError::InvalidRequest(
            "the identity has an empty username".into(),
        ));
    }
    let mut b = builder(
        subject,
        now,
        identity.expires,
        CertType::User,
        &identity.username,
    )?;
    let enc = |e: ssh_key::Error| MintError::encoding("ssh certificate", e);
    if identity.logins.is_empty() {
        // No principals would mean "any user": put in one nobody can log in as.
        let nologin = format!("-teleport-nologin-{}", hex::encode(random_bytes::<16>()?));
        b.valid_principal(nologin).map_err(enc)?;
    }
    for login in &identity.logins {
        b.valid_principal(login.as_str()).map_err(enc)?;
    }
    b.extension("permit-pty", "").map_err(enc)?;
    b.extension("permit-port-forwarding", "").map_err(enc)?;
    let roles = serde_json::json!({ "version": "v1", "roles": identity.roles }).to_string();
    b.extension(ssh_ext::ROLES, roles).map_err(enc)?;
    let traits =
        serde_json::to_string(&identity.traits).map_err(|e| MintError::encoding("traits", e))?;
    b.extension(ssh_ext::TRAITS, traits).map_err(enc)?;
    b.extension(ssh_ext::ROUTE_TO_CLUSTER, identity.cluster.as_str())
        .map_err(enc)?;
    if let Some(imp) = &identity.impersonator {
        b.extension(ssh_ext::IMPERSONATOR, imp.as_str())
            .map_err(enc)?;
    }
    if identity.disallow_reissue {
        b.extension(ssh_ext::DISALLOW_REISSUE, "").map_err(enc)?;
    }
    if identity.renewable {
        b.extension(ssh_ext::RENEWABLE, "").map_err(enc)?;
    }
    if identity.generation > 0 {
        b.extension(ssh_ext::GENERATION, identity.generation.to_string())
            .map_err(enc)?;
    }
    finish(b, ca)
}

pub(crate) fn host_cert(
    ca: &CaKey,
    subject: &PublicKey,
    principals: &[String],
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<String, MintError> {
    let first = principals.first().ok_or_else(|| {
        MintError::InvalidRequest(
            "a host certificate needs at least one principal (the node name)".into(),
        )
    })?;
    let mut b = builder(subject, now, not_after, CertType::Host, first)?;
    for p in principals {
        b.valid_principal(p.as_str())
            .map_err(|e| MintError::encoding("ssh certificate", e))?;
    }
    finish(b, ca)
}
