//! A fake auth server: a real rustls server (certificate from a CA the test chooses) that
//! answers `GetClusterCACerts` with the lists the test gives, one per call (the last one
//! repeats), and counts the calls. Stands in for a machine in the middle, or for a cluster
//! in a state the real server does not reach on its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::StreamBody;
use hyper::body::{Bytes, Frame};
use machine_id_mint::{CaKeys, PrivateKey, Suite};
use machine_id_proto::v1;
use machine_id_types::AUTH_SERVER_NAME;
use prost::Message as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A cluster's CA set made for a test (only the TLS CA is used).
pub fn new_ca() -> CaKeys {
    CaKeys::generate(
        "example.com",
        Suite::Default,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap()
}

/// The running fake server.
pub struct FakeServer {
    pub addr: String,
    calls: Arc<AtomicUsize>,
}

impl FakeServer {
    /// Serves on `127.0.0.1:0` a certificate for [`AUTH_SERVER_NAME`] signed by `signer`,
    /// answering the `n`th `GetClusterCACerts` with `answers[n]` (DER lists).
    pub async fn start(signer: &CaKeys, answers: Vec<Vec<Vec<u8>>>) -> Self {
        let key = PrivateKey::generate(Suite::Default).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let cert = signer
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
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::from_pem_slice(key.to_pem().as_bytes()).unwrap(),
        )
        .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let calls = Arc::new(AtomicUsize::new(0));
        let answers = Arc::new(answers);
        let counter = calls.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, answers, counter) =
                    (acceptor.clone(), answers.clone(), counter.clone());
                tokio::spawn(async move {
                    // A client that refuses our certificate ends the handshake: nothing to do.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |_req| {
                        let n = counter.fetch_add(1, Ordering::SeqCst);
                        let list = answers
                            .get(n)
                            .or(answers.last())
                            .cloned()
                            .unwrap_or_default();
                        async move { Ok::<_, std::convert::Infallible>(grpc_reply(list)) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
                });
            }
        });
        Self { addr, calls }
    }

    /// How many calls were answered.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

type ReplyBody = StreamBody<
    tokio_stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>,
>;

/// A gRPC reply carrying `tls_ca_certs`: one length-prefixed message, then `grpc-status: 0`.
fn grpc_reply(tls_ca_certs: Vec<Vec<u8>>) -> http::Response<ReplyBody> {
    let message = v1::GetClusterCaCertsResponse { tls_ca_certs }.encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    framed.extend_from_slice(&message);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = vec![
        Ok(Frame::data(Bytes::from(framed))),
        Ok(Frame::trailers(trailers)),
    ];
    http::Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(tokio_stream::iter(frames)))
        .unwrap()
}
