//! The Machine ID auth server as a library: the cluster's certificate authorities, RBAC,
//! token joins, renewal with the generation counter, role impersonation, resource CRUD and
//! the audit log, served as gRPC over TLS.
//!
//! - [`AuthConfig`]: what the server needs (data dir, cluster name, listen address, CA suite,
//!   clock, TTLs); [`FileConfig`] is the YAML file of the daemon.
//! - [`AuthServer::start`] opens the SQLite store in the data dir, creates or loads the
//!   cluster, writes the admin identity for `tctl` to `DATA_DIR/admin/` (`key`, `tlscert`,
//!   `tlscacerts`), and serves `machineid.v1.AuthService` and `machineid.v1.JoinService`;
//!   it returns a [`RunningAuthServer`] (address, cluster name, CA pins, shutdown).
//! - [`rbac`]: the rules deciding what an identity may do.
//! - [`keys`]: where everything lives in the store.
//!
//! Inside, the layers run one way: `server` (listeners, TLS, start and stop) serves
//! `service` (the gRPC services: wire messages in, domain values out, and back), which calls
//! `core` (the rules, by concern, knowing nothing of the wire); `proxy` is the SSH proxy
//! listener; `state` the store's key layout and codecs.
//!
//! Every call but Ping, GetClusterCACerts and RegisterUsingToken needs a client certificate
//! from the cluster's TLS CA; the caller's identity is read from it, locks are checked, then
//! its roles' rules. Errors become gRPC statuses with messages written for people
//! ([`AuthError::code`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), machine_id_auth::AuthError> {
//! use machine_id_auth::{AuthConfig, AuthServer};
//! let config = AuthConfig::new("/var/lib/machine-id", "example.com", "127.0.0.1:3025".parse().unwrap());
//! let server = AuthServer::start(config).await?;
//! println!("listening on {} with CA pin {}", server.local_addr(), server.ca_pins()[0]);
//! server.shutdown().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod admission;
mod authorities;
mod cache;
mod config;
mod core;
mod diag;
mod error;
mod files;
mod limits;
mod metrics;
pub mod offline;
mod proxy;
pub mod rbac;
mod retention;
mod revocation;
mod rotation;
mod server;
mod service;
mod state;
mod storage;
mod tls;

pub use cache::FeedHealth;
pub use config::{
    AuthConfig, AuthServiceConfig, ConfigError, DEFAULT_AUDIT_RETENTION, DEFAULT_DATA_DIR,
    DEFAULT_LISTEN_ADDR, FileConfig, JoinServiceConfig, LimitsConfig, MAX_CERT_TTL_CEILING,
    MAX_TOKEN_TTL_CEILING, ProxyServiceConfig,
};
pub use error::AuthError;
pub use files::{ADMIN_CAS_FILE, ADMIN_CERT_FILE, ADMIN_KEY_FILE, FileTooLarge, MAX_FILE_SIZE};
pub use machine_id_join::iam::StsEndpoint;
pub use server::{
    AuthServer, BACKEND_FILE, LISTEN_BACKLOG, LOCK_FILE, RunningAuthServer, ShutdownHandle,
};
pub use storage::{
    ConnString, STORAGE_CONN_STRING_ENV, StorageConfig, StorageFileConfig, StorageKind,
};

/// The store key layout.
pub mod keys {
    pub use crate::state::{
        CA_KEY, CLUSTER_NAME_KEY, ClusterInfo, EVENTS, LOCKS, NODES, ROLES, TOKENS, USERS,
        event_key, lock_key, node_key, role_key, token_key, user_key,
    };
}
