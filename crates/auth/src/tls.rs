//! TLS for the auth port: the server certificate, and client certificates asked for but not
//! required.
//!
//! The ring provider is used explicitly everywhere (`builder_with_provider`): the workspace
//! does not build aws-lc-rs, and rustls' plain `builder()` would panic if two providers were
//! ever compiled in.
//!
//! Client certificates: the TLS layer verifies the chain to the cluster's TLS CA, the
//! signatures and the key usages, but judges the validity period at a time clamped into the
//! certificate's own validity window. Expiry is instead checked by the auth layer against the
//! server's [`Clock`], so that (a) an expired certificate gets an `UNAUTHENTICATED` reply that
//! says what to do instead of a bare TLS alert, and (b) tests move time with a fake clock.
//! **Invariant:** anything that accepts connections with this configuration (the gRPC
//! services, a proxy on the same port) must check the identity's expiry itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use machine_id_mint::{CaSigner, PrivateKey, Suite};
use machine_id_types::{AUTH_SERVER_NAME, Clock};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime, pem::PemObject};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};

use crate::error::{AuthError, Result};

/// How long the server's own TLS certificate is valid (it is minted afresh at every start).
const SERVER_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

fn tls_err(what: &str, e: impl std::fmt::Display) -> AuthError {
    AuthError::Tls(format!("{what}: {e}"))
}

/// The ring crypto provider.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The DNS names and IPs the server certificate carries.
pub(crate) fn server_names(listen: SocketAddr) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = vec![AUTH_SERVER_NAME.to_string(), "localhost".to_string()];
    if let Some(h) = hostname::get().ok().and_then(|h| h.into_string().ok()) {
        let valid = !h.is_empty()
            && h.len() <= 253
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !h.starts_with('-')
            && !h.starts_with('.');
        if valid && !dns.contains(&h) {
            dns.push(h);
        }
    }
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    let ip = listen.ip();
    if !ip.is_unspecified() && !ips.contains(&ip) {
        ips.push(ip);
    }
    (dns, ips)
}

/// Builds the server configuration: a server certificate minted now from the TLS CA, ALPN
/// `h2`, client certificates requested (not required) and verified against the TLS CA.
pub(crate) fn server_config(
    signer: &CaSigner,
    suite: Suite,
    clock: Arc<dyn Clock>,
    listen: SocketAddr,
) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let key = PrivateKey::generate(suite)?;
    let (dns, ips) = server_names(listen);
    let now = clock.now();
    let cert =
        signer.sign_server_tls_cert(&key.public_key(), &dns, &ips, now, now + SERVER_CERT_TTL)?;
    let key_der = PrivateKeyDer::from_pem_slice(key.to_pem().as_bytes())
        .map_err(|e| tls_err("server key", e))?;
    let ca = CertificateDer::from(signer.tls_ca_cert_der().to_vec());
    let mut roots = RootCertStore::empty();
    roots
        .add(ca)
        .map_err(|e| tls_err("TLS CA certificate", e))?;
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_err("client certificate verifier", e))?;
    let verifier = Arc::new(ClockedClientVerifier { inner, clock });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .map_err(|e| tls_err("protocol versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(cert)], key_der)
        .map_err(|e| tls_err("server certificate", e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Verifies client certificates with webpki at a time clamped into the certificate's own
/// validity window (see the module docs: expiry is the auth layer's job, on its clock).
#[derive(Debug)]
struct ClockedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    clock: Arc<dyn Clock>,
}

/// The time to verify `cert` at: the clock's now, clamped into `[not_before, not_after]`.
fn verification_time(
    cert: &CertificateDer<'_>,
    now: i64,
) -> std::result::Result<UnixTime, rustls::Error> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    let nb = parsed.validity().not_before.timestamp();
    let na = parsed.validity().not_after.timestamp();
    let t = now.clamp(nb.min(na), na).max(0);
    Ok(UnixTime::since_unix_epoch(Duration::from_secs(
        u64::try_from(t).unwrap_or(0),
    )))
}

impl ClientCertVerifier for ClockedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let at = verification_time(end_entity, self.clock.now().unix_timestamp())?;
        self.inner.verify_client_cert(end_entity, intermediates, at)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cover_loopback_and_the_listen_ip() {
        let (dns, ips) = server_names("10.1.2.3:3025".parse().expect("addr"));
        assert_eq!(dns[0], AUTH_SERVER_NAME);
        assert!(dns.contains(&"localhost".to_string()));
        assert!(ips.contains(&IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert!(ips.contains(&"10.1.2.3".parse().expect("ip")));
        let (_, ips) = server_names("0.0.0.0:3025".parse().expect("addr"));
        assert_eq!(ips.len(), 2);
    }
}
