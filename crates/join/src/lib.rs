//! Join methods: how a bot proves it may join a cluster. Each method is a matched pair, the
//! bot's half that builds the proof and the server's half that verifies it against a
//! [`ProvisionToken`](machine_id_types::ProvisionToken); neither half knows anything of gRPC.
//!
//! - [`token`]: a single-use secret. The bot presents it; the server checks the stored
//!   token in constant time and the caller deletes it with compare-and-swap, so one token
//!   admits one bot even under concurrency.
//!
//! ```
//! use machine_id_join::token;
//! use machine_id_types::{Metadata, ProvisionToken, TokenSpec};
//! let secret = token::generate();
//! let stored = ProvisionToken {
//!     metadata: Metadata::named(secret.expose()),
//!     spec: TokenSpec { roles: vec!["Bot".into()], bot_name: Some("robot".into()), ..Default::default() },
//! };
//! let now = time::OffsetDateTime::now_utc();
//! assert_eq!(token::verify(&stored, secret.expose(), now).unwrap(), "robot");
//! ```
#![forbid(unsafe_code)]

use machine_id_types::JoinMethod;
use thiserror::Error;

pub mod iam;
pub mod token;

/// Why a join was refused. Messages say what to do.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinError {
    /// No such token (never existed, already used, or deleted).
    #[error(
        "the join token is not valid: it does not exist, was already used, or was deleted; ask an administrator for a new one (tctl bots add or tctl tokens add)"
    )]
    TokenNotFound,
    /// The token has expired.
    #[error(
        "the join token expired at {expired}; ask an administrator for a new one (tctl tokens add --type=bot --bot=NAME)"
    )]
    TokenExpired {
        /// When it expired (RFC 3339).
        expired: String,
    },
    /// The token is for another join method.
    #[error(
        "the join token is for join method {token_method}, but the bot used {used}; start tbot with --join-method={token_method}"
    )]
    WrongMethod {
        /// The token's method.
        token_method: JoinMethod,
        /// The method the bot used.
        used: JoinMethod,
    },
    /// The token does not allow role Bot or names no bot.
    #[error("the join token does not allow bots to join (it needs roles: [Bot] and a bot_name)")]
    NotABotToken,
}

/// `sha256` hex of a token: what may be stored or logged in place of the secret itself.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
