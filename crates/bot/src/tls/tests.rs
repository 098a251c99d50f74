#![allow(clippy::unwrap_used)] // tests

use super::*;
use machine_id_mint::{CaKeys, PrivateKey, Suite};
use machine_id_types::AUTH_SERVER_NAME;
use rustls::pki_types::pem::PemObject as _;

fn new_ca() -> CaKeys {
    CaKeys::generate(
        "example.com",
        Suite::Default,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
}

/// A real rustls server on loopback presenting a certificate for [`AUTH_SERVER_NAME`] from
/// `ca`; it completes every handshake it can.
async fn tls_server(ca: &CaKeys) -> std::net::SocketAddr {
    let key = PrivateKey::generate(Suite::Default).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let cert = ca
        .signer()
        .unwrap()
        .sign_server_tls_cert(
            &key.public_key(),
            &[AUTH_SERVER_NAME.to_string()],
            &[],
            now - time::Duration::minutes(1),
            now + time::Duration::hours(1),
        )
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::from_pem_slice(key.to_pem().as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(tcp).await {
                    use tokio::io::AsyncWriteExt as _;
                    let _ = tls.write_all(b"hello").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

async fn handshake(config: &Arc<ClientConfig>, addr: std::net::SocketAddr) -> std::io::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(AUTH_SERVER_NAME).unwrap();
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(name, tcp)
        .await
        .map(drop)
}

/// The roots change under one client configuration: a server whose certificate comes from
/// a CA added later is refused before and accepted after, and the verifier is built once per
/// change of the roots, not per handshake.
#[tokio::test]
async fn the_verifier_follows_the_roots_and_is_built_once_per_change() {
    let old = new_ca();
    let new = new_ca();
    let roots = Arc::new(Mutex::new(vec![old.tls_ca_cert_der().to_vec()]));
    let source = roots.clone();
    let verifier = Arc::new(CurrentCas::new(
        Box::new(move || source.lock().unwrap().clone()),
        provider(),
    ));
    let config = Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth(),
    );
    let old_server = tls_server(&old).await;
    let new_server = tls_server(&new).await;

    handshake(&config, old_server).await.unwrap();
    let e = handshake(&config, new_server).await.unwrap_err();
    assert!(
        e.to_string().contains("UnknownIssuer") || e.to_string().contains("BadSignature"),
        "{e}"
    );
    assert_eq!(verifier.builds.load(Ordering::Relaxed), 1);

    // The rotation adds the new CA to the bot's roots.
    roots.lock().unwrap().push(new.tls_ca_cert_der().to_vec());
    for _ in 0..3 {
        handshake(&config, new_server).await.unwrap();
        handshake(&config, old_server).await.unwrap();
    }
    assert_eq!(
        verifier.builds.load(Ordering::Relaxed),
        2,
        "one build per root set"
    );

    // After the rotation only the new CA is trusted.
    *roots.lock().unwrap() = vec![new.tls_ca_cert_der().to_vec()];
    handshake(&config, new_server).await.unwrap();
    handshake(&config, old_server).await.unwrap_err();
    assert_eq!(verifier.builds.load(Ordering::Relaxed), 3);
}
