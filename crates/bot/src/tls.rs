//! A rustls client configuration that always presents the bot's current certificate.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::identity::IssuedIdentity;
use crate::{Bot, BotError, Result};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls signing key and certificate of an issued identity.
pub(crate) fn certified_key(id: &IssuedIdentity) -> Result<Arc<CertifiedKey>> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key.to_pkcs8_der()));
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| BotError::Internal(format!("loading the key into rustls: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(
        vec![CertificateDer::from(id.certs.tls_cert.clone())],
        signing,
    )))
}

/// Presents whatever certificate the bot holds at handshake time.
#[derive(Debug)]
struct CurrentCert(Bot);

impl ResolvesClientCert for CurrentCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current_certified_key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Where [`CurrentCas`] reads the trusted roots (DER) at each handshake.
type RootsSource = Box<dyn Fn() -> Vec<Vec<u8>> + Send + Sync>;

/// A set of roots (DER) and the verifier built from it.
type CachedVerifier = (Vec<Vec<u8>>, Arc<WebPkiServerVerifier>);

/// Verifies servers against the cluster CAs the bot holds at handshake time, so a CA
/// rotation picked up by a renewal (both CAs during it, only the new one after) applies to
/// new connections without a restart. The webpki verifier is built once per set of roots
/// and cached; a handshake only compares the current roots with the cached set.
struct CurrentCas {
    roots: RootsSource,
    provider: Arc<CryptoProvider>,
    cached: Mutex<Option<CachedVerifier>>,
    /// How many verifiers were built (one per change of the roots).
    builds: AtomicU64,
}

impl std::fmt::Debug for CurrentCas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentCas")
            .field("builds", &self.builds.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl CurrentCas {
    fn new(roots: RootsSource, provider: Arc<CryptoProvider>) -> Self {
        Self {
            roots,
            provider,
            cached: Mutex::new(None),
            builds: AtomicU64::new(0),
        }
    }

    /// The verifier for the roots as they are now: the cached one while they did not change.
    fn verifier(&self) -> std::result::Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let current = (self.roots)();
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((roots, verifier)) = cached.as_ref()
            && *roots == current
        {
            return Ok(verifier.clone());
        }
        let mut store = RootCertStore::empty();
        for der in &current {
            store.add(CertificateDer::from(der.clone()))?;
        }
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(store), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("no usable cluster CA: {e}")))?;
        self.builds.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            roots = current.len(),
            "the cluster's trusted TLS CAs changed; verifying servers against the new set"
        );
        *cached = Some((current, verifier.clone()));
        Ok(verifier)
    }
}

impl ServerCertVerifier for CurrentCas {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.verifier()?.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

impl Bot {
    /// A rustls client configuration (ring provider only) that presents the first output's
    /// current certificate on every handshake and verifies servers against the cluster's CAs
    /// as of the last renewal ([`Bot::current_ca_certs`]): during a CA rotation, which the
    /// running bot follows on its own, that is both TLS CAs, and only the new one after it,
    /// without building a new configuration. Cluster servers present certificates for
    /// [`machine_id_types::AUTH_SERVER_NAME`]: dial with that server name. Set ALPN as the
    /// protocol needs (`h2` for gRPC).
    ///
    /// Fails until the first renewal has written an output.
    pub fn rustls_client_config(&self) -> Result<ClientConfig> {
        if self.current_certified_key().is_none() {
            return Err(BotError::Config(
                "no output certificate yet; call renew() (or wait for run()) first, with at least one destination".into(),
            ));
        }
        let provider = provider();
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| BotError::Internal(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CurrentCas::new(
                {
                    let bot = self.clone();
                    Box::new(move || bot.current_ca_certs())
                },
                provider,
            )))
            .with_client_cert_resolver(Arc::new(CurrentCert(self.clone())));
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
