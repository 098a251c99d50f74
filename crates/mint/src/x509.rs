//! X.509: the TLS CA certificate, user (client) and server certificates, and reading an
//! [`Identity`] back.

use crate::key::PublicKey;
use crate::signer::CaKey;
use crate::{MintError, oids};
use const_oid::ObjectIdentifier;
use const_oid::db::{rfc4519, rfc5280};
use der::asn1::{Any, BitStringRef, GeneralizedTime, Ia5String, OctetString, SetOfVec, UtcTime};
use der::oid::AssociatedOid;
use der::{Decode, Encode, Tag};
use machine_id_types::Identity;
use std::collections::BTreeMap;
use std::net::IpAddr;
use time::OffsetDateTime;
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};
use x509_cert::{TbsCertificate, Version};

/// Clock skew allowance: certificates are valid from one minute before `now`.
pub(crate) const BACKDATE: time::Duration = time::Duration::minutes(1);

/// A random positive serial of 128 bits (RFC 5280 allows up to 20 octets).
fn random_serial() -> Result<SerialNumber, MintError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| MintError::Random)?;
    // Never zero (a zero serial is not allowed); `Uint` adds the sign octet when needed.
    bytes[15] |= 1;
    SerialNumber::new(&bytes).map_err(|e| MintError::encoding("serial number", e))
}

/// UTCTime before 2050, GeneralizedTime from then on (RFC 5280 4.1.2.5).
fn x509_time(t: OffsetDateTime) -> Result<Time, MintError> {
    let secs = u64::try_from(t.unix_timestamp()).map_err(|_| {
        MintError::InvalidValidity(format!("{t} is before 1970 and cannot be encoded"))
    })?;
    let d = std::time::Duration::from_secs(secs);
    let out = if t.to_offset(time::UtcOffset::UTC).year() < 2050 {
        UtcTime::from_unix_duration(d).map(Time::UtcTime)
    } else {
        GeneralizedTime::from_unix_duration(d).map(Time::GeneralTime)
    };
    out.map_err(|e| MintError::InvalidValidity(format!("{t} cannot be encoded: {e}")))
}

fn validity(not_before: OffsetDateTime, not_after: OffsetDateTime) -> Result<Validity, MintError> {
    if not_after <= not_before + BACKDATE {
        return Err(MintError::InvalidValidity(format!(
            "the certificate would expire at {not_after}, not after it is issued at {}; \
             ask for a positive ttl and check the clock",
            not_before + BACKDATE
        )));
    }
    Ok(Validity {
        not_before: x509_time(not_before)?,
        not_after: x509_time(not_after)?,
    })
}

/// One RDN holding one UTF8String attribute.
fn rdn(oid: ObjectIdentifier, value: &str) -> Result<RelativeDistinguishedName, MintError> {
    let value = Any::new(Tag::Utf8String, value.as_bytes())
        .map_err(|e| MintError::encoding("subject name", e))?;
    let set = SetOfVec::try_from(vec![AttributeTypeAndValue { oid, value }])
        .map_err(|e| MintError::encoding("subject name", e))?;
    Ok(RelativeDistinguishedName(set))
}

/// `O=<cluster>, CN=<cluster>`: the TLS CA's subject.
fn ca_name(cluster: &str) -> Result<Name, MintError> {
    Ok(RdnSequence(vec![
        rdn(rfc4519::O, cluster)?,
        rdn(rfc4519::CN, cluster)?,
    ]))
}

/// The user certificate's subject. Each value is its own RDN so the order of roles and
/// logins survives (a multi-valued RDN is a DER SET, which sorts its members).
fn user_name(identity: &Identity) -> Result<Name, MintError> {
    if identity.username.is_empty() {
        return Err(MintError::InvalidRequest(
            "the identity has an empty username".into(),
        ));
    }
    let mut rdns = Vec::with_capacity(identity.roles.len() + identity.logins.len() + 6);
    rdns.push(rdn(rfc4519::CN, &identity.username)?);
    for role in &identity.roles {
        rdns.push(rdn(rfc4519::O, role)?);
    }
    for login in &identity.logins {
        rdns.push(rdn(rfc4519::L, login)?);
    }
    rdns.push(rdn(oids::CLUSTER, &identity.cluster)?);
    if identity.renewable {
        rdns.push(rdn(oids::RENEWABLE, "true")?);
    }
    rdns.push(rdn(oids::GENERATION, &identity.generation.to_string())?);
    if let Some(imp) = &identity.impersonator {
        rdns.push(rdn(oids::IMPERSONATOR, imp)?);
    }
    if identity.disallow_reissue {
        rdns.push(rdn(oids::DISALLOW_REISSUE, "true")?);
    }
    if !identity.traits.is_empty() {
        let json = serde_json::to_string(&identity.traits)
            .map_err(|e| MintError::encoding("traits", e))?;
        rdns.push(rdn(oids::TRAITS, &json)?);
    }
    Ok(RdnSequence(rdns))
}

fn ext<T: AssociatedOid + Encode>(critical: bool, value: &T) -> Result<Extension, MintError> {
    let der = value
        .to_der()
        .map_err(|e| MintError::encoding("certificate extension", e))?;
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(der)
            .map_err(|e| MintError::encoding("certificate extension", e))?,
    })
}

/// Key identifier: the leftmost 160 bits of SHA-256 over the public key bits (RFC 7093).
fn key_id(public: &PublicKey) -> Vec<u8> {
    let digest = ring::digest::digest(&ring::digest::SHA256, &public.raw_bits());
    digest.as_ref()[..20].to_vec()
}

fn spki(public: &PublicKey) -> Result<SubjectPublicKeyInfoOwned, MintError> {
    SubjectPublicKeyInfoOwned::from_der(&public.to_spki_der())
        .map_err(|e| MintError::InvalidPublicKey(e.to_string()))
}

/// DER `SEQUENCE` of already-encoded parts.
fn der_sequence(parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 6);
    out.push(0x30);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

/// Encodes the TBS, signs it with `signer`, and assembles the certificate.
fn sign(signer: &CaKey, tbs: &TbsCertificate) -> Result<Vec<u8>, MintError> {
    let tbs_der = tbs
        .to_der()
        .map_err(|e| MintError::encoding("certificate", e))?;
    let sig = signer.sign_x509(&tbs_der)?;
    let alg = signer
        .x509_alg()
        .to_der()
        .map_err(|e| MintError::encoding("certificate", e))?;
    let bits = BitStringRef::from_bytes(&sig)
        .and_then(|b| b.to_der())
        .map_err(|e| MintError::encoding("certificate", e))?;
    Ok(der_sequence(&[&tbs_der, &alg, &bits]))
}

/// The self-signed TLS CA certificate.
pub(crate) fn ca_cert(
    signer: &CaKey,
    cluster: &str,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Vec<u8>, MintError> {
    let name = ca_name(cluster)?;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial()?,
        signature: signer.x509_alg().clone(),
        issuer: name.clone(),
        validity: validity(now - BACKDATE, not_after)?,
        subject: name,
        subject_public_key_info: spki(signer.public())?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(ca_extensions(vec![ext(
            false,
            &subject_key_id(signer.public())?,
        )?])?),
    };
    sign(signer, &tbs)
}

/// The extensions of a CA certificate: basic constraints (a CA) and key usage (signs
/// certificates and CRLs), both critical, then `rest`.
fn ca_extensions(rest: Vec<Extension>) -> Result<Vec<Extension>, MintError> {
    let mut all = vec![
        ext(
            true,
            &BasicConstraints {
                ca: true,
                path_len_constraint: None,
            },
        )?,
        ext(
            true,
            &KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign | KeyUsages::DigitalSignature),
        )?,
    ];
    all.extend(rest);
    Ok(all)
}

/// A cross-certificate: the CA of `subject_cert_der` (its name, key and validity), issued by
/// `issuer` (whose own certificate is `issuer_cert_der`). A server presenting it after its
/// leaf is verifiable by clients that trust either CA; CA rotation uses it so that a
/// client pinned to the old TLS CA and one pinned to the new both reach the servers in
/// every phase.
pub(crate) fn cross_cert(
    issuer: &CaKey,
    issuer_cert_der: &[u8],
    subject_cert_der: &[u8],
) -> Result<Vec<u8>, MintError> {
    let subject = x509_cert::Certificate::from_der(subject_cert_der)
        .map_err(|e| MintError::InvalidCaKeys(format!("tls ca certificate: {e}")))?
        .tbs_certificate;
    let (issuer_name, issuer_key_id) = issuer_of(issuer_cert_der, issuer.public())?;
    let ski = subject
        .get::<SubjectKeyIdentifier>()
        .ok()
        .flatten()
        .map(|(_, ski)| ski)
        .ok_or_else(|| {
            MintError::InvalidCaKeys("tls ca certificate: no subject key identifier".into())
        })?;
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial()?,
        signature: issuer.x509_alg().clone(),
        issuer: issuer_name,
        validity: subject.validity,
        subject: subject.subject,
        subject_public_key_info: subject.subject_public_key_info,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(ca_extensions(vec![
            ext(false, &ski)?,
            ext(false, &authority_key_id(&issuer_key_id)?)?,
        ])?),
    };
    sign(issuer, &tbs)
}

fn subject_key_id(public: &PublicKey) -> Result<SubjectKeyIdentifier, MintError> {
    OctetString::new(key_id(public))
        .map(SubjectKeyIdentifier)
        .map_err(|e| MintError::encoding("subject key identifier", e))
}

fn authority_key_id(id: &[u8]) -> Result<AuthorityKeyIdentifier, MintError> {
    Ok(AuthorityKeyIdentifier {
        key_identifier: Some(
            OctetString::new(id).map_err(|e| MintError::encoding("authority key identifier", e))?,
        ),
        ..Default::default()
    })
}

fn leaf_key_usage(subject: &PublicKey) -> KeyUsage {
    if subject.ssh_algorithm() == "ssh-rsa" {
        KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment)
    } else {
        KeyUsage(KeyUsages::DigitalSignature.into())
    }
}

/// The issuer name and key identifier to put in certificates the TLS CA issues.
pub(crate) fn issuer_of(
    ca_cert_der: &[u8],
    ca_public: &PublicKey,
) -> Result<(Name, Vec<u8>), MintError> {
    let cert = x509_cert::Certificate::from_der(ca_cert_der)
        .map_err(|e| MintError::InvalidCaKeys(format!("tls ca certificate: {e}")))?;
    let ski = cert
        .tbs_certificate
        .get::<SubjectKeyIdentifier>()
        .ok()
        .flatten()
        .map(|(_, ski)| ski.0.as_bytes().to_vec())
        .unwrap_or_else(|| key_id(ca_public));
    Ok((cert.tbs_certificate.subject, ski))
}

/// The DER SubjectPublicKeyInfo of a certificate.
pub(crate) fn spki_of_cert(cert_der: &[u8]) -> Result<Vec<u8>, MintError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| MintError::InvalidCertificate(e.to_string()))?;
    Ok(cert.tbs_certificate.subject_pki.raw.to_vec())
}

pub(crate) fn user_cert(
    signer: &CaKey,
    issuer: &Name,
    issuer_key_id: &[u8],
    subject: &PublicKey,
    identity: &Identity,
    now: OffsetDateTime,
) -> Result<Vec<u8>, MintError> {
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial()?,
        signature: signer.x509_alg().clone(),
        issuer: issuer.clone(),
        validity: validity(now - BACKDATE, identity.expires)?,
        subject: user_name(identity)?,
        subject_public_key_info: spki(subject)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(vec![
            ext(true, &leaf_key_usage(subject))?,
            ext(
                false,
                &ExtendedKeyUsage(vec![rfc5280::ID_KP_CLIENT_AUTH, rfc5280::ID_KP_SERVER_AUTH]),
            )?,
            ext(
                true,
                &BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
            )?,
            ext(false, &subject_key_id(subject)?)?,
            ext(false, &authority_key_id(issuer_key_id)?)?,
        ]),
    };
    sign(signer, &tbs)
}

#[allow(clippy::too_many_arguments)] // mirrors CaSigner::sign_server_tls_cert plus the CA parts
pub(crate) fn server_cert(
    signer: &CaKey,
    issuer: &Name,
    issuer_key_id: &[u8],
    cluster: &str,
    subject_key: &PublicKey,
    dns_names: &[String],
    ips: &[IpAddr],
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<Vec<u8>, MintError> {
    let mut sans = Vec::with_capacity(dns_names.len() + ips.len());
    for name in dns_names {
        let ia5 = Ia5String::new(name).map_err(|_| {
            MintError::InvalidRequest(format!(
                "dns name {name:?} is not ascii; give it in punycode (xn--...)"
            ))
        })?;
        sans.push(GeneralName::DnsName(ia5));
    }
    for ip in ips {
        let octets = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        sans.push(GeneralName::IpAddress(
            OctetString::new(octets).map_err(|e| MintError::encoding("ip address", e))?,
        ));
    }
    let common_name = match (dns_names.first(), ips.first()) {
        (Some(name), _) => name.clone(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => {
            return Err(MintError::InvalidRequest(
                "a server certificate needs at least one dns name or ip address".into(),
            ));
        }
    };
    let subject = RdnSequence(vec![
        rdn(rfc4519::O, cluster)?,
        rdn(rfc4519::CN, &common_name)?,
    ]);
    let tbs = TbsCertificate {
        version: Version::V3,
        serial_number: random_serial()?,
        signature: signer.x509_alg().clone(),
        issuer: issuer.clone(),
        validity: validity(now - BACKDATE, not_after)?,
        subject,
        subject_public_key_info: spki(subject_key)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(vec![
            ext(true, &leaf_key_usage(subject_key))?,
            ext(false, &ExtendedKeyUsage(vec![rfc5280::ID_KP_SERVER_AUTH]))?,
            ext(
                true,
                &BasicConstraints {
                    ca: false,
                    path_len_constraint: None,
                },
            )?,
            ext(false, &SubjectAltName(sans))?,
            ext(false, &subject_key_id(subject_key)?)?,
            ext(false, &authority_key_id(issuer_key_id)?)?,
        ]),
    };
    sign(signer, &tbs)
}

/// Reads the identity from an X.509 certificate the TLS CA issued (does not verify the chain).
///
/// `expires` is NotAfter, whole seconds (X.509 times carry no fraction).
pub fn parse_tls_identity(cert_der: &[u8]) -> Result<Identity, MintError> {
    parse_tls_cert(cert_der).map(|c| c.identity)
}

/// An X.509 certificate the TLS CA issued, as read by [`parse_tls_cert`].
#[derive(Debug, Clone, PartialEq)]
pub struct TlsCertInfo {
    /// The identity it carries.
    pub identity: Identity,
    /// When it was issued: NotBefore plus the one-minute backdate every certificate of this
    /// crate carries (whole seconds).
    pub issued: time::OffsetDateTime,
    /// The DER SubjectPublicKeyInfo of the key it certifies.
    pub public_key_der: Vec<u8>,
}

/// Reads the identity and the issue time of an X.509 certificate the TLS CA issued (does not
/// verify the chain).
pub fn parse_tls_cert(cert_der: &[u8]) -> Result<TlsCertInfo, MintError> {
    let (rest, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| MintError::InvalidCertificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(MintError::InvalidCertificate(format!(
            "{} bytes after the certificate",
            rest.len()
        )));
    }
    let mut username = None;
    let mut roles = Vec::new();
    let mut logins = Vec::new();
    let mut cluster = None;
    let mut renewable = false;
    let mut generation = 0;
    let mut impersonator = None;
    let mut disallow_reissue = false;
    let mut traits = BTreeMap::new();
    for attr in cert.subject().iter_attributes() {
        let oid = attr.attr_type().as_bytes();
        let value = || {
            attr.as_str().map(str::to_owned).map_err(|e| {
                MintError::InvalidCertificate(format!(
                    "subject attribute {} is not a string: {e}",
                    attr.attr_type()
                ))
            })
        };
        if oid == rfc4519::CN.as_bytes() {
            username = Some(value()?);
        } else if oid == rfc4519::O.as_bytes() {
            roles.push(value()?);
        } else if oid == rfc4519::L.as_bytes() {
            logins.push(value()?);
        } else if oid == oids::CLUSTER.as_bytes() {
            cluster = Some(value()?);
        } else if oid == oids::RENEWABLE.as_bytes() {
            renewable = value()? == "true";
        } else if oid == oids::GENERATION.as_bytes() {
            let v = value()?;
            generation = v.parse().map_err(|_| {
                MintError::InvalidCertificate(format!("generation {v:?} is not a number"))
            })?;
        } else if oid == oids::IMPERSONATOR.as_bytes() {
            impersonator = Some(value()?);
        } else if oid == oids::DISALLOW_REISSUE.as_bytes() {
            disallow_reissue = value()? == "true";
        } else if oid == oids::TRAITS.as_bytes() {
            traits = serde_json::from_str(&value()?).map_err(|e| {
                MintError::InvalidCertificate(format!("traits attribute is not json: {e}"))
            })?;
        }
    }
    let username = username.ok_or_else(|| {
        MintError::InvalidCertificate("the subject has no common name (the username)".into())
    })?;
    let cluster = cluster.ok_or_else(|| {
        MintError::InvalidCertificate(
            "the subject has no cluster attribute; it was not issued by a machine id tls ca".into(),
        )
    })?;
    let identity = Identity {
        username,
        roles,
        logins,
        traits,
        renewable,
        generation,
        impersonator,
        disallow_reissue,
        cluster,
        expires: cert.validity().not_after.to_datetime(),
    };
    Ok(TlsCertInfo {
        identity,
        issued: cert.validity().not_before.to_datetime() + BACKDATE,
        public_key_der: cert.public_key().raw.to_vec(),
    })
}
