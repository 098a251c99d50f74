//! Integration tests of the client against a real auth server started in-process on
//! `127.0.0.1:0`.
#![allow(clippy::unwrap_used, missing_docs)] // tests

mod calls;
mod failover;
mod fake_server;
mod pins;
mod resources;
mod rotation;

use machine_id_auth::{AuthConfig, AuthServer, RunningAuthServer};
use machine_id_client::{Client, ClientIdentity};
use std::sync::Arc;

/// A running auth server with its data dir; shut down when the test's runtime ends.
pub struct TestServer {
    pub server: RunningAuthServer,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut AuthConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = AuthConfig::new(
            dir.path().join("data"),
            "example.com",
            "127.0.0.1:0".parse().unwrap(),
        );
        tweak(&mut config);
        let server = AuthServer::start(config).await.unwrap();
        let addr = server.local_addr().to_string();
        Self {
            server,
            addr,
            _dir: dir,
        }
    }

    pub fn admin_identity(&self) -> ClientIdentity {
        ClientIdentity::load(self.server.admin_identity_dir()).unwrap()
    }

    pub async fn admin(&self) -> Client {
        Client::connect(&self.addr, &self.admin_identity())
            .await
            .unwrap()
    }
}

/// A clock set `ago` in the past, for minting certificates that have already expired.
pub fn clock_in_past(ago: std::time::Duration) -> Arc<machine_id_types::FakeClock> {
    Arc::new(machine_id_types::FakeClock::new(
        time::OffsetDateTime::now_utc() - ago,
    ))
}
