//! Test harness: a server on 127.0.0.1:0 in a temp dir with a fake clock, and clients.

use std::path::Path;
use std::sync::Arc;

use machine_id_auth::{AuthConfig, AuthServer, RunningAuthServer, StorageConfig};
use machine_id_mint::{PrivateKey, Suite, cert_der_to_pem, parse_tls_identity};
use machine_id_proto::v1::{
    self, auth_service_client::AuthServiceClient, join_service_client::JoinServiceClient,
};
use machine_id_types::{AUTH_SERVER_NAME, FakeClock, Identity};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub use machine_id_types::Clock;

pub const CLUSTER: &str = "example.com";

pub struct TestServer {
    pub server: Option<RunningAuthServer>,
    pub dir: tempfile::TempDir,
    pub clock: Arc<FakeClock>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_on(StorageConfig::Sqlite).await
    }

    /// A server on `storage` in a data directory of its own.
    pub async fn start_on(storage: StorageConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(FakeClock::new(time::OffsetDateTime::now_utc()));
        let server = start_with(dir.path(), clock.clone(), CLUSTER, storage)
            .await
            .unwrap();
        Self {
            server: Some(server),
            dir,
            clock,
        }
    }

    pub fn server(&self) -> &RunningAuthServer {
        self.server.as_ref().unwrap()
    }

    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        let s = start_in(self.dir.path(), self.clock.clone(), CLUSTER)
            .await
            .unwrap();
        self.server = Some(s);
    }

    fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.server().admin_identity_dir().join("tlscacerts")).unwrap()
    }

    async fn channel(&self, identity: Option<tonic::transport::Identity>) -> Channel {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca_pem()))
            .domain_name(AUTH_SERVER_NAME);
        if let Some(id) = identity {
            tls = tls.identity(id);
        }
        Endpoint::from_shared(format!("https://{}", self.server().local_addr()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A client with the admin identity written to the data dir.
    pub async fn admin(&self) -> AuthServiceClient<Channel> {
        let dir = self.server().admin_identity_dir();
        let cert = std::fs::read_to_string(dir.join("tlscert")).unwrap();
        let key = std::fs::read_to_string(dir.join("key")).unwrap();
        AuthServiceClient::new(
            self.channel(Some(tonic::transport::Identity::from_pem(cert, key)))
                .await,
        )
    }

    /// A client without a certificate.
    pub async fn anonymous(&self) -> (AuthServiceClient<Channel>, JoinServiceClient<Channel>) {
        let ch = self.channel(None).await;
        (
            AuthServiceClient::new(ch.clone()),
            JoinServiceClient::new(ch),
        )
    }

    /// A client presenting `id`'s certificate.
    pub async fn client(&self, id: &BotIdentity) -> AuthServiceClient<Channel> {
        let cert = cert_der_to_pem(&id.certs.tls_cert);
        AuthServiceClient::new(
            self.channel(Some(tonic::transport::Identity::from_pem(
                cert,
                id.key.to_pem(),
            )))
            .await,
        )
    }

    /// Creates bot `name` with `roles` and `logins` as admin; returns the token.
    pub async fn add_bot(&self, name: &str, roles: &[&str], logins: &[&str]) -> String {
        let resp = self
            .admin()
            .await
            .create_bot(v1::CreateBotRequest {
                name: name.into(),
                roles: roles.iter().map(|s| s.to_string()).collect(),
                logins: logins.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        resp.token_name
    }

    /// Joins with `token` over a fresh connection.
    pub async fn join(&self, token: &str) -> Result<BotIdentity, tonic::Status> {
        let (_, mut join) = self.anonymous().await;
        join_with(&mut join, token).await
    }
}

pub async fn start_in(
    dir: &Path,
    clock: Arc<FakeClock>,
    cluster: &str,
) -> Result<RunningAuthServer, machine_id_auth::AuthError> {
    start_with(dir, clock, cluster, StorageConfig::Sqlite).await
}

/// Starts a server with its data directory in `dir` on `storage`.
pub async fn start_with(
    dir: &Path,
    clock: Arc<FakeClock>,
    cluster: &str,
    storage: StorageConfig,
) -> Result<RunningAuthServer, machine_id_auth::AuthError> {
    let mut config = AuthConfig::new(dir.join("data"), cluster, "127.0.0.1:0".parse().unwrap());
    config.clock = clock;
    config.storage = storage;
    // Automatic rotations are checked often, so tests that move the fake clock see them soon.
    config.rotation_check_interval = std::time::Duration::from_millis(100);
    // Retention passes run as often, for tests that move the clock past it.
    config.audit_retention_interval = std::time::Duration::from_millis(100);
    AuthServer::start(config).await
}

/// A key and the certificates issued to it.
pub struct BotIdentity {
    pub key: PrivateKey,
    pub certs: v1::Certs,
}

impl BotIdentity {
    pub fn identity(&self) -> Identity {
        parse_tls_identity(&self.certs.tls_cert).unwrap()
    }
}

pub fn new_key() -> PrivateKey {
    PrivateKey::generate(Suite::Default).unwrap()
}

pub async fn join_with(
    join: &mut JoinServiceClient<Channel>,
    token: &str,
) -> Result<BotIdentity, tonic::Status> {
    let key = new_key();
    let certs = join
        .register_using_token(v1::RegisterUsingTokenRequest {
            token: token.into(),
            public_key: key.public_key().to_spki_der(),
            ttl_seconds: 0,
        })
        .await?
        .into_inner();
    Ok(BotIdentity { key, certs })
}

/// Renews (or impersonates `roles`) with the identity behind `client`.
pub async fn generate(
    client: &mut AuthServiceClient<Channel>,
    roles: &[&str],
    ttl_seconds: u64,
) -> Result<BotIdentity, tonic::Status> {
    generate_for(client, &new_key(), roles, ttl_seconds).await
}

/// [`generate`] for a given key (a retry of a renewal sends the same key again).
pub async fn generate_for(
    client: &mut AuthServiceClient<Channel>,
    key: &PrivateKey,
    roles: &[&str],
    ttl_seconds: u64,
) -> Result<BotIdentity, tonic::Status> {
    let key = PrivateKey::from_pem(&key.to_pem()).unwrap();
    let certs = client
        .generate_user_certs(v1::GenerateUserCertsRequest {
            public_key: key.public_key().to_spki_der(),
            ttl_seconds,
            role_requests: roles.iter().map(|s| s.to_string()).collect(),
        })
        .await?
        .into_inner();
    Ok(BotIdentity { key, certs })
}

pub async fn events(
    admin: &mut AuthServiceClient<Channel>,
    event_type: &str,
) -> Vec<v1::AuditEvent> {
    admin
        .search_events(v1::SearchEventsRequest {
            event_type: event_type.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events
}

#[track_caller]
pub fn assert_code<T>(r: Result<T, tonic::Status>, code: tonic::Code, needle: &str) -> String {
    let Err(e) = r else {
        panic!("expected an error with code {code:?}, got success")
    };
    assert_eq!(e.code(), code, "{e:?}");
    assert!(
        e.message().contains(needle),
        "message {:?} does not contain {needle:?}",
        e.message()
    );
    e.message().to_string()
}

/// Makes lock `name` on `user` or `role` with `message` as the admin.
pub async fn lock(
    ts: &TestServer,
    name: &str,
    user: Option<&str>,
    role: Option<&str>,
    message: &str,
) {
    ts.admin()
        .await
        .upsert_lock(v1::UpsertLockRequest {
            lock: Some(v1::Lock {
                metadata: Some(v1::Metadata {
                    name: name.into(),
                    ..Default::default()
                }),
                target_user: user.map(str::to_string),
                target_role: role.map(str::to_string),
                message: message.into(),
                created: None,
                issued_before: None,
            }),
            create_only: true,
        })
        .await
        .unwrap();
}
