//! Embedding the bot in a service: certificates in memory, and an mTLS gRPC call to the auth
//! server made with the bot's `rustls::ClientConfig`.
//!
//! ```text
//! cargo run -p machine-id-bot --example embed -- AUTH_ADDR TOKEN CA_PIN
//! ```
//!
//! It joins with the token (checking the CA pin), prints the identity of its output
//! certificate, then calls `GetRole` for each of that certificate's roles over a TLS
//! connection that presents it. The server lets a caller read only the roles its verified
//! certificate holds, so the answer shows the server authenticated the bot's certificate;
//! any refusal makes the example fail.

use std::sync::Arc;

use anyhow::Context as _;
use machine_id_bot::Bot;
use machine_id_proto::v1::GetByNameRequest;
use machine_id_proto::v1::auth_service_client::AuthServiceClient;
use rustls_pki_types::ServerName;
use tonic::transport::Endpoint;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: embed AUTH_ADDR TOKEN CA_PIN";
    let addr = args.next().context(usage)?;
    let token = args.next().context(usage)?;
    let pin = args.next().context(usage)?;

    let bot = Bot::builder()
        .auth_server(&addr)
        .token(&token)
        .ca_pins(vec![pin])
        .memory_storage()
        .memory_destination(vec![])
        .build()?;
    bot.renew().await?;
    let runner = tokio::spawn({
        let bot = bot.clone();
        async move { bot.run().await }
    });

    let identity = bot.current_identity().context("no identity after renew")?;
    println!(
        "identity: user={} roles=[{}] impersonator={} expires={}",
        identity.username,
        identity.roles.join(","),
        identity.impersonator.as_deref().unwrap_or("-"),
        identity.expires
    );

    let mut config = bot.rustls_client_config()?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let dial = addr.clone();
    let connector = tower::service_fn(move |_uri: http::Uri| {
        let tls = tls.clone();
        let dial = dial.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(dial.as_str()).await?;
            let name = ServerName::try_from(machine_id_bot::AUTH_SERVER_NAME)
                .map_err(std::io::Error::other)?;
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_with_connector(connector)
        .await
        .context("mTLS connection to the auth server")?;
    let mut auth = AuthServiceClient::new(channel);
    for role in &identity.roles {
        let got = auth
            .get_role(GetByNameRequest { name: role.clone() })
            .await
            .with_context(|| format!("GetRole {role} over mTLS"))?
            .into_inner();
        let name = got.metadata.map(|m| m.name).unwrap_or_default();
        println!(
            "the server authenticated us as {} and let us read our role {name}",
            identity.username
        );
    }

    bot.stop();
    runner.await??;
    Ok(())
}
