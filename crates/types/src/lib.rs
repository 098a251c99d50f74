//! Domain types of Machine ID, shared by every other crate.
//!
//! - Resources an operator manages with `tctl`: [`Role`], [`ProvisionToken`], [`User`],
//!   [`Node`], [`Lock`], each with [`Metadata`]; a [`Resource`] is any one of them, read from
//!   and written to the YAML (or JSON) documents of the reference guide by [`parse_resources`]
//!   and [`Resource::to_yaml`].
//! - [`Bot`]: the view of a bot (its user and role pair).
//! - [`Identity`]: what a certificate says about its holder (user, roles, logins, renewable,
//!   generation, impersonator, ...), minted into certificates by `machine-id-mint`.
//! - [`AuditEvent`]: one entry of the audit log.
//! - [`Rotation`]: the phases of a CA rotation ([`RotationPhase`]) and the rules between them.
//! - [`Clock`]: where time comes from; tests use [`FakeClock`] to move it.
//! - [`duration`]: Go-style durations (`1h`, `30m`, `1h30m0s`) as the CLI and YAML write them.
//!
//! This crate does no I/O and knows nothing of gRPC.
//!
//! ```
//! use machine_id_types::{parse_resources, Resource};
//! let yaml = "kind: role\nversion: v5\nmetadata:\n  name: dev\nspec:\n  allow:\n    logins: [root]\n";
//! let docs = parse_resources(yaml, "dev.yaml").unwrap();
//! let Resource::Role(role) = &docs[0] else { panic!() };
//! assert_eq!(role.spec.allow.logins, vec!["root".to_string()]);
//! ```
#![forbid(unsafe_code)]

mod clock;
pub mod duration;
mod error;
mod event;
mod identity;
mod lock;
mod node;
mod resource;
mod role;
mod rotation;
pub mod table;
mod token;
mod user;

pub use clock::{Clock, FakeClock, SystemClock};
pub use error::{ResourceError, TypesError};
pub use event::{AuditEvent, event_types};
pub use identity::{
    ADMIN_IDENTITY_DIR, ADMIN_ROLE, ADMIN_USER, AUTH_SERVER_NAME, Identity, PROXY_SSH_ALPN,
};
pub use lock::{Lock, LockSpec, LockTarget};
pub use node::{Node, NodeSpec};
pub use resource::{Metadata, Resource, ResourceKind, parse_resources};
pub use role::{
    ALL_VERBS, INTERNAL_LOGINS, ImpersonateConditions, LabelValues, Role, RoleConditions,
    RoleOptions, RoleSpec, Rule, check_login, default_roles, glob_match,
};
pub use rotation::{
    CaPublicKeys, CaType, CertAuthority, CertAuthoritySpec, KeyStep, Rotation, RotationError,
    RotationMode, RotationPhase, RotationSchedule, RotationState,
};
pub use token::{JoinMethod, ProvisionToken, SYSTEM_ROLE_BOT, TokenRule, TokenSpec};
pub use user::{
    BOT_LABEL, Bot, GENERATION_LABEL, LastRenewal, User, UserSpec, bot_role_name, bot_user_name,
};

/// The name of the default cluster CA kinds, as `tctl auth export --type` names them.
pub mod ca_kind {
    /// The SSH user CA: signs users' SSH certificates; sshd trusts it.
    pub const USER: &str = "user";
    /// The SSH host CA: signs nodes' host certificates; clients trust it in known_hosts.
    pub const HOST: &str = "host";
    /// The TLS CA: signs X.509 client and server certificates.
    pub const TLS: &str = "tls";
}
