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
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
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

/// The auth port's TLS material, replaceable while the server runs: the server certificate
/// (re-signed whenever the CA servers present changes, a rotation phase) and the roots
/// client certificates are verified against (every trusted TLS CA). Handshakes read the
/// current pair; connections already open keep theirs.
#[derive(Debug)]
pub(crate) struct ServerTls {
    minting: Minting,
    current: std::sync::RwLock<Material>,
}

/// What a server certificate is made from, besides the CA.
#[derive(Debug)]
struct Minting {
    key: PrivateKey,
    provider: Arc<rustls::crypto::CryptoProvider>,
    clock: Arc<dyn Clock>,
    listen: SocketAddr,
}

/// One server certificate and one set of client roots.
#[derive(Debug, Clone)]
struct Material {
    certified: Arc<rustls::sign::CertifiedKey>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ServerTls {
    /// A server key of `suite` (kept for the life of the process) and the material of
    /// `signer`.
    pub(crate) fn new(
        signer: &CaSigner,
        suite: Suite,
        clock: Arc<dyn Clock>,
        listen: SocketAddr,
    ) -> Result<Arc<Self>> {
        let key = PrivateKey::generate(suite)?;
        let minting = Minting {
            key,
            provider: provider(),
            clock,
            listen,
        };
        let material = minting.material(signer)?;
        Ok(Arc::new(Self {
            minting,
            current: std::sync::RwLock::new(material),
        }))
    }

    /// Re-signs the server certificate and replaces the client roots from `signer`.
    pub(crate) fn update(&self, signer: &CaSigner) -> Result<()> {
        let material = self.minting.material(signer)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = material;
        Ok(())
    }
}

impl Minting {
    fn material(&self, signer: &CaSigner) -> Result<Material> {
        let (dns, ips) = server_names(self.listen);
        let now = self.clock.now();
        let cert = signer.sign_server_tls_cert(
            &self.key.public_key(),
            &dns,
            &ips,
            now,
            now + SERVER_CERT_TTL,
        )?;
        let key_der = PrivateKeyDer::Pkcs8(self.key.to_pkcs8_der().into());
        let signing = self
            .provider
            .key_provider
            .load_private_key(key_der)
            .map_err(|e| tls_err("server key", e))?;
        // During a TLS CA rotation the chain carries a cross-certificate, so clients that
        // trust only the other CA (one CA pin) verify the server as well.
        let chain = std::iter::once(cert)
            .chain(signer.server_chain().iter().cloned())
            .map(CertificateDer::from)
            .collect();
        let certified = Arc::new(rustls::sign::CertifiedKey::new(chain, signing));
        let mut roots = RootCertStore::empty();
        for (i, der) in signer.trusted_tls_certs().iter().enumerate() {
            roots
                .add(CertificateDer::from(der.clone()))
                .map_err(|e| tls_err(&format!("TLS CA certificate {}", i + 1), e))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| tls_err("client certificate verifier", e))?;
        Ok(Material {
            certified,
            verifier,
        })
    }
}

impl ServerTls {
    fn current(&self) -> Material {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The server configuration over this material: ALPN `h2` plus `extra_alpn`, client
    /// certificates requested (not required) and verified against the current roots.
    pub(crate) fn server_config(
        self: &Arc<Self>,
        extra_alpn: &[&str],
    ) -> Result<Arc<ServerConfig>> {
        let verifier = Arc::new(ClockedClientVerifier {
            tls: self.clone(),
            clock: self.minting.clock.clone(),
        });
        let mut config = ServerConfig::builder_with_provider(self.minting.provider.clone())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .map_err(|e| tls_err("protocol versions", e))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        config
            .alpn_protocols
            .extend(extra_alpn.iter().map(|a| a.as_bytes().to_vec()));
        Ok(Arc::new(config))
    }
}

/// Hands every handshake the current server certificate.
#[derive(Debug)]
struct Resolver(Arc<ServerTls>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.current().certified)
    }
}

/// Verifies client certificates with webpki at a time clamped into the certificate's own
/// validity window (see the module docs: expiry is the auth layer's job, on its clock).
#[derive(Debug)]
struct ClockedClientVerifier {
    tls: Arc<ServerTls>,
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

impl ClockedClientVerifier {
    fn provider_schemes(&self) -> Vec<SignatureScheme> {
        self.tls
            .minting
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl ClientCertVerifier for ClockedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Both CAs of a rotation have the same subject; hints are optional anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let at = verification_time(end_entity, self.clock.now().unix_timestamp())?;
        self.tls
            .current()
            .verifier
            .verify_client_cert(end_entity, intermediates, at)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.tls
            .current()
            .verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.tls
            .current()
            .verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider_schemes()
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
