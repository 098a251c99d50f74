//! The tbot engine as a library: join a Machine ID cluster with a single-use token, keep a
//! renewable identity, and keep writing short-lived, role-impersonated certificates to
//! destinations.
//!
//! - [`Bot`] (built with [`Bot::builder`] or [`BotBuilder::from_config`]) runs the loop:
//!   [`Bot::renew`] once, or [`Bot::run`] until [`Bot::stop`]; [`Bot::renew_now`] skips the
//!   wait. An embedding service reads [`Bot::current_identity`] and gets a
//!   [`rustls::ClientConfig`] that always presents the current certificate from
//!   [`Bot::rustls_client_config`].
//! - [`BotConfig`] is the v1 YAML config of `tbot` with [`Overrides`] for flags.
//! - [`Storage`] keeps the bot's own identity: a locked data directory or memory, replaced
//!   as one unit, with the pending key that makes a renewal retryable byte for byte (see
//!   [`storage`]).
//! - [`Backoff`]: capped exponential backoff with jitter for retries.
//! - [`serve_diag`]: `/livez`, `/readyz`, `/metrics`.
//! - [`proxy_ssh`]: the `ProxyCommand` of the generated `ssh_config` (`tbot proxy ssh`).
//! - [`BotError`]: every failure, with a message naming cause and fix.
//!
//! Inside, [`Bot`] is a thin handle over plain parts, each its own module: the builder's
//! settings, the onboarding of the bot's own identity (trust, join, renewal, the stored
//! identity), the outputs (impersonated certificates written to each destination), the CA
//! rotation follower (a watch on the cluster's CAs that renews everything when a rotation
//! changes what the bot must hold) and the metrics ([`Status`] and the readiness rule). The `iam` join's bot half is
//! `machine_id_join::iam::IamProver`.
//!
//! The join checks the cluster's CA against `sha256:` pins before trusting it (see
//! `machine_id_client::bootstrap_ca_certs`); after that every call is verified mutual TLS.
//! Renewal presents the bot's renewable identity, whose generation counter the server checks:
//! a replayed copy of an old identity gets the bot locked. A renewal is only ever sent from
//! the identity that is durably stored, with a key recorded as pending for it first, so a
//! retry after a lost answer or a crash is the same request and the server answers it
//! idempotently. Outputs are impersonated
//! certificates for the destination's roles: never renewable, never outliving the identity.
//!
//! ```no_run
//! # async fn run() -> Result<(), machine_id_bot::BotError> {
//! use machine_id_bot::Bot;
//! let bot = Bot::builder()
//!     .auth_server("127.0.0.1:3025")
//!     .token("0123456789abcdef0123456789abcdef")
//!     .ca_pins(vec!["sha256:0123...".into()])
//!     .memory_destination(vec!["access".into()])
//!     .build()?;
//! bot.renew().await?;
//! let config = bot.rustls_client_config()?;
//! # let _ = config;
//! tokio::spawn(async move { bot.run().await });
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod backoff;
mod bot;
mod bounded;
mod builder;
pub mod config;
mod diag;
mod error;
mod identity;
mod metrics;
mod onboarding;
mod outputs;
mod proxy;
mod rotation;
pub mod storage;
mod tls;

pub use backoff::Backoff;
pub use bot::Bot;
pub use bounded::{CA_FILE_LIMIT, CONFIG_FILE_LIMIT, TOKEN_FILE_LIMIT};
pub use builder::BotBuilder;
pub use config::{BotConfig, Overrides};
pub use diag::{metrics_text, serve_diag};
pub use error::{BotError, Result};
pub use identity::IssuedIdentity;
pub use metrics::Status;
pub use proxy::{enlarge_stdio_pipes, proxy_ssh, ssh_target};
pub use rotation::DEFAULT_CA_ROTATION_DEBOUNCE;
pub use storage::Storage;

#[doc(no_inline)]
pub use machine_id_destination::{MemoryDestination, SymlinkPolicy};
#[doc(no_inline)]
pub use machine_id_types::{AUTH_SERVER_NAME, Identity};
