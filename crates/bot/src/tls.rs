//! A rustls client configuration that always presents the bot's current certificate.

use std::sync::Arc;

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

/// Verifies servers against the cluster CAs the bot holds at handshake time, so a CA
/// rotation picked up by a renewal applies to new connections.
#[derive(Debug)]
struct CurrentCas {
    bot: Bot,
    provider: Arc<CryptoProvider>,
}

impl CurrentCas {
    fn verifier(&self) -> std::result::Result<Arc<WebPkiServerVerifier>, rustls::Error> {
        let mut roots = RootCertStore::empty();
        for der in self.bot.current_ca_certs() {
            roots.add(CertificateDer::from(der))?;
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("no usable cluster CA: {e}")))
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
    /// as of the last renewal. Cluster servers present certificates for
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
            .with_custom_certificate_verifier(Arc::new(CurrentCas {
                bot: self.clone(),
                provider,
            }))
            .with_client_cert_resolver(Arc::new(CurrentCert(self.clone())));
        Ok(config)
    }
}
