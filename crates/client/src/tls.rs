//! rustls configurations and the connector tonic dials through.
//!
//! Every configuration is built from the ring provider explicitly
//! (`builder_with_provider(ring::default_provider())`): no other provider is compiled in, and
//! the plain `ClientConfig::builder()` would panic looking for one.

use crate::error::{ClientError, Result};
use crate::identity::ClientIdentity;
use machine_id_types::AUTH_SERVER_NAME;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// The ALPN protocol of gRPC over TLS.
const ALPN_H2: &[u8] = b"h2";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::TlsConfig(e.to_string()))
}

fn roots(cas: &[Vec<u8>]) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    for (i, der) in cas.iter().enumerate() {
        store
            .add(CertificateDer::from(der.clone()))
            .map_err(|e| ClientError::TlsConfig(format!("CA certificate {}: {e}", i + 1)))?;
    }
    if store.is_empty() {
        return Err(ClientError::TlsConfig(
            "no CA certificate to verify the auth server against".into(),
        ));
    }
    Ok(store)
}

fn finish(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Arc::new(config)
}

/// mTLS: presents `identity`, verifies the server against the identity's CAs.
pub(crate) fn identity_config(identity: &ClientIdentity) -> Result<Arc<ClientConfig>> {
    let config = builder()?
        .with_root_certificates(roots(identity.ca_certs())?)
        .with_client_auth_cert(
            vec![CertificateDer::from(identity.cert_der().to_vec())],
            identity.rustls_key()?,
        )
        .map_err(|e| ClientError::TlsConfig(format!("client certificate and key: {e}")))?;
    Ok(finish(config))
}

/// TLS without a client certificate, verifying the server against `cas`.
pub(crate) fn cas_config(cas: &[Vec<u8>]) -> Result<Arc<ClientConfig>> {
    let config = builder()?
        .with_root_certificates(roots(cas)?)
        .with_no_client_auth();
    Ok(finish(config))
}

/// TLS that accepts any server certificate. Used for exactly one call, the unauthenticated
/// fetch of the cluster's CA certificates during CA-pin bootstrap; what it returns is checked
/// against the pins before anything trusts it.
pub(crate) fn unverified_config() -> Result<Arc<ClientConfig>> {
    let config = builder()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert(provider())))
        .with_no_client_auth();
    Ok(finish(config))
}

/// Accepts any server certificate but still checks the handshake signatures, so the peer
/// holds the key of the certificate it showed.
#[derive(Debug)]
struct AcceptAnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why the connector could not hand tonic a TLS stream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectFailure {
    /// The TCP dial failed.
    #[error("{0}")]
    Dial(std::io::Error),
    /// The TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Handshake(std::io::Error),
}

impl ConnectFailure {
    /// The rustls error inside a failed handshake, if that is what it was.
    pub(crate) fn tls_error(&self) -> Option<&rustls::Error> {
        match self {
            Self::Handshake(e) => e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
            Self::Dial(_) => None,
        }
    }
}

/// Dials `addr` over TCP and runs the TLS handshake with `config`, naming the server
/// [`AUTH_SERVER_NAME`] whatever address was dialed, and opens a gRPC channel over it.
pub(crate) async fn channel(addr: &str, config: Arc<ClientConfig>) -> Result<Channel> {
    let tls = tokio_rustls::TlsConnector::from(config);
    let dial = addr.to_string();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let addr = dial.clone();
        let tls = tls.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr.as_str())
                .await
                .map_err(ConnectFailure::Dial)?;
            // Nagle's algorithm only delays small gRPC frames.
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(AUTH_SERVER_NAME)
                .map_err(|e| ConnectFailure::Handshake(std::io::Error::other(e)))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(ConnectFailure::Handshake)?;
            Ok::<_, ConnectFailure>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    // The URI only satisfies tonic (authority and :scheme); the connector above does the
    // dialing and the TLS. `http` keeps tonic from layering its own TLS on top.
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ClientError::BadAddress {
            addr: addr.to_string(),
            message: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(CALL_TIMEOUT);
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| connect_error(addr, &e))
}

/// How long dialing and the handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The alerts a server sends when it refuses the client's certificate: `DecryptError` (a CA
/// of the same name but another key, as after a rotation), `BadCertificate`, `UnknownCA`
/// and the like.
const CERTIFICATE_ALERTS: [rustls::AlertDescription; 6] = [
    rustls::AlertDescription::DecryptError,
    rustls::AlertDescription::BadCertificate,
    rustls::AlertDescription::UnknownCA,
    rustls::AlertDescription::CertificateUnknown,
    rustls::AlertDescription::UnsupportedCertificate,
    rustls::AlertDescription::CertificateRequired,
];

/// The fatal alert refusing the client's certificate (see [`CERTIFICATE_ALERTS`]) that `e`
/// or one of its sources is, if any.
///
/// During the handshake the rustls error is in the chain. After it (TLS 1.3 tells the client
/// at its first read), h2 keeps only the message of the I/O error it saw, so the alert is
/// recognized by rustls's own wording of it, `received fatal alert: <name>`.
pub(crate) fn rejected_certificate_alert(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let tls = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(alert)) = tls
            && CERTIFICATE_ALERTS.contains(alert)
        {
            return Some(format!("{alert:?}"));
        }
        let text = err.to_string();
        if let Some(alert) = CERTIFICATE_ALERTS
            .iter()
            .find(|a| text.contains(&rustls::Error::AlertReceived(**a).to_string()))
        {
            return Some(format!("{alert:?}"));
        }
        cur = err.source();
    }
    None
}

/// Turns a failed connect into the error a person can act on.
fn connect_error(addr: &str, e: &(dyn std::error::Error + 'static)) -> ClientError {
    if let Some(alert) = rejected_certificate_alert(e) {
        return ClientError::CertificateRejected {
            addr: addr.to_string(),
            alert,
        };
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(f) = err.downcast_ref::<ConnectFailure>() {
            if let Some(rustls::Error::InvalidCertificate(cert)) = f.tls_error() {
                use rustls::CertificateError as C;
                let message = match cert {
                    C::UnknownIssuer | C::BadSignature => {
                        "it is not signed by a CA this client trusts".to_string()
                    }
                    C::Expired | C::ExpiredContext { .. } => "it has expired".to_string(),
                    C::NotValidForName | C::NotValidForNameContext { .. } => {
                        format!("it is not issued for {AUTH_SERVER_NAME}")
                    }
                    other => format!("{other:?}"),
                };
                return ClientError::UntrustedServer {
                    addr: addr.to_string(),
                    message,
                };
            }
            return ClientError::Unavailable {
                addr: addr.to_string(),
                message: f.to_string(),
            };
        }
        cur = err.source();
    }
    ClientError::Unavailable {
        addr: addr.to_string(),
        message: error_chain(e),
    }
}

/// `e: cause: cause` for an error and its sources.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}
