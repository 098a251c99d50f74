//! The auth server's gRPC client: how `tctl` and `tbot` talk to a cluster.
//!
//! - [`ClientIdentity`]: a key, the X.509 certificate issued to it and the cluster's TLS CAs,
//!   loaded from an identity directory (`key`, `tlscert`, `tlscacerts`) or built in memory.
//! - [`AuthAddrs`]: the auth servers of a cluster (`"a:3025,b:3025"`, a list, or one address);
//!   every function that dials takes one (or a string, converted). Connections and calls move
//!   to the next server when one cannot be reached, with jittered backoff; [`Client`] says
//!   which calls are sent again after which failures.
//! - [`Client`]: a connection with typed calls that take and return `machine-id-types`
//!   values; wire messages are converted at this boundary with `TryFrom`, so a malformed
//!   answer never becomes a domain value.
//!   - [`Client::connect`]: mutual TLS with an identity (refused locally when it has expired).
//!   - [`Client::connect_with_cas`]: no client certificate, for joining.
//!   - Typed CRUD per resource kind ([`Client::get_role`], [`Client::list_nodes`], ...) and the
//!     same generic over [`machine_id_types::ResourceKind`] ([`Client::get_resource`],
//!     [`Client::list_resources`], [`Client::upsert_resource`], [`Client::delete_resource`]);
//!     [`Client::find_node`] finds a node by id or host name.
//!   - [`Client::generate_bot_certs`]: a tbot cycle in one call (the renewal and every
//!     output's certificates, with the proxy address and host CA keys the outputs need).
//! - [`bootstrap_ca_certs`]: CA-pin bootstrap for a first join: fetch the cluster CAs without
//!   verifying and check them against the `sha256:` pins; during a TLS CA rotation, when the
//!   pins cover only one of the two CAs, fetch them again over TLS verified by the pinned CA
//!   and trust only that answer.
//! - [`dial_proxy_ssh`]: a relay to a node's sshd through the cluster's SSH proxy (mutual
//!   TLS, ALPN [`machine_id_types::PROXY_SSH_ALPN`]), what `tbot proxy ssh` joins to ssh.
//! - [`ClientError`]: what went wrong, in words a person can act on; the server's own
//!   messages pass through.
//!
//! Every connection is TLS over TCP with ALPN `h2`, and the server is verified under the name
//! [`machine_id_types::AUTH_SERVER_NAME`] whatever address was dialed. TLS is rustls with the
//! ring provider only.
//!
//! ```no_run
//! # async fn run() -> Result<(), machine_id_client::ClientError> {
//! use machine_id_client::{Client, ClientIdentity};
//! let identity = ClientIdentity::load("/var/lib/machine-id/admin")?;
//! let client = Client::connect("127.0.0.1:3025", &identity).await?;
//! for role in client.list_roles().await? {
//!     println!("{}", role.metadata.name);
//! }
//! // Several auth servers of one cluster: no load balancer needed.
//! use machine_id_client::AuthAddrs;
//! let servers = AuthAddrs::parse("auth-a.example.com:3025,auth-b.example.com:3025")?;
//! let client = Client::connect(&servers, &identity).await?;
//! println!("connected to {}", client.addr());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod addrs;
mod client;
mod error;
mod failover;
mod identity;
mod proxy;
mod tls;

pub use addrs::AuthAddrs;
pub use client::{
    BotCerts, CaWatch, Certs, Client, CreatedBot, EventPage, EventSearch, ExportedCa, HostCert,
    OutputCerts, OutputRequest, PingInfo, RotateRequest, bootstrap_ca_certs,
    bootstrap_ca_certs_with_clock, ca_pins, cluster_ca_pins_unverified, fetch_ca_certs_unverified,
    parse_pins,
};
pub use error::{ClientError, Result};
pub use identity::{ClientIdentity, files};
pub use machine_id_mint::CaPin;
pub use proxy::{ProxyStream, dial_proxy_ssh};
