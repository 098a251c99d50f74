//! A rustls mTLS handshake on 127.0.0.1: the server cert from `sign_server_tls_cert`, the
//! client cert from `sign_user_tls_cert`, keys read from our PEM by rustls-pki-types.

use crate::common::{fixture, identity};
use machine_id_mint::{PrivateKey, Suite, parse_tls_identity};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

async fn handshake(suite: Suite) {
    let f = fixture(suite);
    let id = identity("example.com", f.now);
    let server_key = PrivateKey::generate(suite).expect("server key");
    let server_cert = f
        .signer
        .sign_server_tls_cert(
            &server_key.public_key(),
            &["auth.example.com".to_string()],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            f.now,
            f.now + Duration::hours(1),
        )
        .expect("server cert");
    let client_cert = f
        .signer
        .sign_user_tls_cert(&f.key.public_key(), &id, f.now)
        .expect("client cert");
    let ca = CertificateDer::from(f.signer.tls_ca_cert_der().to_vec());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("root");
    let roots = Arc::new(roots);

    // Keys go through PEM, as tbot's `key` file does.
    let server_key_der =
        PrivateKeyDer::from_pem_slice(server_key.to_pem().as_bytes()).expect("server key pem");
    let client_key_der =
        PrivateKeyDer::from_pem_slice(f.key.to_pem().as_bytes()).expect("client key pem");

    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .expect("client verifier");
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![CertificateDer::from(server_cert)], server_key_der)
        .expect("server config");
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![CertificateDer::from(client_cert)], client_key_der)
        .expect("client config");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.expect("server handshake");
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .expect("client certificate");
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.expect("read");
        tls.write_all(b"pong").await.expect("write");
        tls.shutdown().await.ok();
        parse_tls_identity(&peer).expect("identity from the verified client cert")
    });

    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let server_name = ServerName::try_from("auth.example.com").expect("name");
    let mut tls = connector
        .connect(server_name, tcp)
        .await
        .expect("client handshake");
    tls.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.expect("read");
    assert_eq!(&buf, b"pong");
    let seen = server.await.expect("server task");
    assert_eq!(seen, id);
}

#[tokio::test]
async fn rustls_mtls_default_suite() {
    handshake(Suite::Default).await;
}

#[tokio::test]
async fn rustls_mtls_legacy_suite() {
    handshake(Suite::Legacy).await;
}

#[tokio::test]
async fn rustls_accepts_the_ip_san_and_pkcs8() {
    let f = fixture(Suite::Default);
    let server_key = PrivateKey::generate(Suite::Default).expect("server key");
    let server_cert = f
        .signer
        .sign_server_tls_cert(
            &server_key.public_key(),
            &[],
            &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
            f.now,
            f.now + Duration::hours(1),
        )
        .expect("server cert");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(f.signer.tls_ca_cert_der().to_vec()))
        .expect("root");
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(server_cert)],
            PrivateKeyDer::Pkcs8(server_key.to_pkcs8_der().into()),
        )
        .expect("server config");
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(tcp).await.expect("server handshake");
        tls.write_all(b"ok").await.expect("write");
        tls.shutdown().await.ok();
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let mut tls = connector.connect(name, tcp).await.expect("handshake by ip");
    let mut buf = [0u8; 2];
    tls.read_exact(&mut buf).await.expect("read");
    server.await.expect("server");
}
