//! The identity a certificate carries (user, roles, logins, generation, expiry) and the fixed names
//! of the cluster: the admin user and role, the auth server name, the proxy ALPN.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The user name of the auth server's built-in admin identity (used by `tctl`).
pub const ADMIN_USER: &str = "admin";
/// The built-in role of the admin identity: it may do everything. Names starting with `@`
/// cannot be created as resources, so only the auth server can grant it.
pub const ADMIN_ROLE: &str = "@admin";

/// What a certificate says about its holder. The auth server mints it into SSH and X.509
/// certificates; it reads it back from a verified client certificate to authorize a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The user (`bot-robot`).
    pub username: String,
    /// Role names.
    pub roles: Vec<String>,
    /// SSH principals / OS logins.
    pub logins: Vec<String>,
    /// User traits at issue time.
    #[serde(default)]
    pub traits: BTreeMap<String, Vec<String>>,
    /// Whether the holder may renew this identity.
    pub renewable: bool,
    /// The generation counter (renewable bot identities).
    pub generation: u64,
    /// Who impersonated this identity (`bot-robot` on a bot's output certificates).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonator: Option<String>,
    /// Whether certificates may not be re-issued from this one.
    pub disallow_reissue: bool,
    /// The cluster name.
    pub cluster: String,
    /// When the certificate stops being valid.
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
}

impl Identity {
    /// Whether this is the auth server's admin identity.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    /// The bare bot name if this identity is a bot's own (`bot-robot` → `robot`).
    pub fn bot_name(&self) -> Option<&str> {
        self.username.strip_prefix("bot-")
    }
}

/// The DNS name every auth server certificate carries and every client verifies, whatever
/// address it dialed (so `127.0.0.1:3025`, a host name and a load balancer all work).
pub const AUTH_SERVER_NAME: &str = "auth.machine-id.cluster.local";

/// The ALPN protocol that selects the SSH proxy route on the auth server's TLS port (TLS
/// routing: gRPC is `h2`). After the handshake the client sends one line, the target
/// `node[.cluster]:port`; the proxy answers `OK` or `ERR <message>` on one line and, after
/// `OK`, relays raw bytes to the node's sshd both ways.
pub const PROXY_SSH_ALPN: &str = "teleport-proxy-ssh";

/// Where the auth server writes the admin identity `tctl` uses, under its data dir.
pub const ADMIN_IDENTITY_DIR: &str = "admin";
