//! [`ClientIdentity`]: the key, certificate and cluster CAs a client presents and trusts,
//! read from an identity directory, a destination's artifacts, or given in memory.

use crate::error::{ClientError, Result};
use machine_id_destination::Artifacts;
use machine_id_types::ADMIN_USER;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The file names of an identity directory.
pub mod files {
    use machine_id_destination::ArtifactName;

    /// The private key, PEM.
    pub const KEY: &str = ArtifactName::Key.file_name();
    /// The X.509 client certificate, PEM.
    pub const TLS_CERT: &str = ArtifactName::TlsCert.file_name();
    /// The cluster's TLS CA certificates, PEM.
    pub const TLS_CA_CERTS: &str = ArtifactName::TlsCaCerts.file_name();
}

/// What a client presents to the auth server and whom it trusts: a private key, the X.509
/// certificate issued to it, and the cluster's TLS CA certificates.
///
/// Loaded from a directory holding `key`, `tlscert` and `tlscacerts` (PEM), as the auth server
/// writes its admin identity and `tbot` its own, or built in memory. `Debug` never shows the
/// key.
#[derive(Clone)]
pub struct ClientIdentity {
    key_pem: String,
    cert_der: Vec<u8>,
    ca_ders: Vec<Vec<u8>>,
    username: String,
    expires: OffsetDateTime,
    source: Option<PathBuf>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("username", &self.username)
            .field("expires", &self.expires)
            .field("ca_certs", &self.ca_ders.len())
            .field("source", &self.source)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn read(dir: &Path, name: &str) -> Result<String> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|error| ClientError::IdentityRead { path, error })
}

/// Reads every certificate of a PEM text as DER.
pub(crate) fn pem_certs(pem: &str, what: &str) -> Result<Vec<Vec<u8>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::IdentityInvalid {
            what: what.to_string(),
            message: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(ClientError::IdentityInvalid {
            what: what.to_string(),
            message: "no certificate found; expected -----BEGIN CERTIFICATE-----".into(),
        });
    }
    Ok(certs)
}

/// The subject CN and NotAfter of a certificate.
pub(crate) fn cert_facts(der: &[u8], what: &str) -> Result<(String, OffsetDateTime)> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| ClientError::BadCertificate {
            what: what.to_string(),
            message: e.to_string(),
        })?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string();
    Ok((cn, cert.validity().not_after.to_datetime()))
}

impl ClientIdentity {
    /// Loads the identity in `dir`: `key`, `tlscert` and `tlscacerts`, all PEM.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        Self::from_pem_files(
            read(dir, files::KEY)?,
            &read(dir, files::TLS_CERT)?,
            &read(dir, files::TLS_CA_CERTS)?,
            dir,
        )
    }

    /// The identity in a destination's `artifacts` (its `key`, `tlscert` and `tlscacerts`), as
    /// read from the destination directory `dir` (named in messages and by
    /// [`ClientIdentity::source_dir`]). Reading through the destination, rather than by path
    /// with [`ClientIdentity::load`], gets one whole set under its symlink policy.
    pub fn from_artifacts(artifacts: &Artifacts, dir: &Path) -> Result<Self> {
        let text = |bytes: &[u8], name: &str| {
            String::from_utf8(bytes.to_vec()).map_err(|_| ClientError::IdentityInvalid {
                what: dir.join(name).display().to_string(),
                message: "not UTF-8 text; expected PEM".into(),
            })
        };
        Self::from_pem_files(
            text(&artifacts.key, files::KEY)?,
            &text(&artifacts.tls_cert, files::TLS_CERT)?,
            &text(&artifacts.tls_ca_certs, files::TLS_CA_CERTS)?,
            dir,
        )
    }

    /// The identity of the three PEM files of directory `dir`.
    fn from_pem_files(key_pem: String, cert_pem: &str, ca_pem: &str, dir: &Path) -> Result<Self> {
        let cert_path = dir.join(files::TLS_CERT).display().to_string();
        let ca_path = dir.join(files::TLS_CA_CERTS).display().to_string();
        let cert = pem_certs(cert_pem, &cert_path)?;
        let cas = pem_certs(ca_pem, &ca_path)?;
        let cert_der = cert.into_iter().next().unwrap_or_default();
        let mut id = Self::build(
            key_pem,
            cert_der,
            cas,
            &dir.join(files::KEY).display().to_string(),
            &cert_path,
        )?;
        id.source = Some(dir.to_path_buf());
        Ok(id)
    }

    /// An identity from a key (PEM), its certificate (DER) and the CA certificates (DER).
    pub fn from_parts(key_pem: &str, cert_der: Vec<u8>, ca_ders: Vec<Vec<u8>>) -> Result<Self> {
        Self::build(key_pem.to_string(), cert_der, ca_ders, "key", "certificate")
    }

    fn build(
        key_pem: String,
        cert_der: Vec<u8>,
        ca_ders: Vec<Vec<u8>>,
        key_what: &str,
        cert_what: &str,
    ) -> Result<Self> {
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
            ClientError::IdentityInvalid {
                what: key_what.to_string(),
                message: format!("not a PEM private key: {e}"),
            }
        })?;
        if ca_ders.is_empty() {
            return Err(ClientError::IdentityInvalid {
                what: "CA certificates".into(),
                message: "none given; the identity needs the cluster's TLS CA".into(),
            });
        }
        let (username, expires) = cert_facts(&cert_der, cert_what)?;
        Ok(Self {
            key_pem,
            cert_der,
            ca_ders,
            username,
            expires,
            source: None,
        })
    }

    /// The private key, PEM. Handle with care: it is the identity's secret.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The X.509 certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The cluster's TLS CA certificates, DER.
    pub fn ca_certs(&self) -> &[Vec<u8>] {
        &self.ca_ders
    }

    /// The user the certificate names (its subject CN).
    pub fn username(&self) -> &str {
        &self.username
    }

    /// When the certificate expires.
    pub fn expires(&self) -> OffsetDateTime {
        self.expires
    }

    /// The directory the identity was loaded from, if any.
    pub fn source_dir(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// Fails with [`ClientError::IdentityExpired`], naming the certificate file and what to do,
    /// when the certificate is no longer valid at `now`.
    pub fn check_valid_at(&self, now: OffsetDateTime) -> Result<()> {
        if self.expires > now {
            return Ok(());
        }
        let what = match &self.source {
            Some(dir) => dir.join(files::TLS_CERT).display().to_string(),
            None => "in-memory identity".to_string(),
        };
        let hint = if self.username == ADMIN_USER {
            "restart auth-server to re-issue the admin identity (it rewrites DATA_DIR/admin on start)".to_string()
        } else if self.username.starts_with("bot-") {
            "tbot renews its identity before it expires; once expired, the bot must join again with a new token (tctl bots add or tctl tokens add)".to_string()
        } else {
            "get a new identity from the cluster's administrator".to_string()
        };
        Err(ClientError::IdentityExpired {
            what,
            user: self.username.clone(),
            expired: self.expires.format(&Rfc3339).unwrap_or_default(),
            hint,
        })
    }

    pub(crate) fn rustls_key(&self) -> Result<PrivateKeyDer<'static>> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| ClientError::TlsConfig(format!("private key: {e}")))
    }
}
