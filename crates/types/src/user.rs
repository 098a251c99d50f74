//! Users and bots: a bot's user, its roles and traits, the generation counter and the last renewal record.

use crate::resource::envelope_serde;
use crate::role::validate_name;
use crate::{Metadata, ResourceKind, TypesError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The label a bot's user and role carry, holding the bare bot name.
pub const BOT_LABEL: &str = "teleport.internal/bot";
/// The label holding a bot user's certificate generation counter.
pub const GENERATION_LABEL: &str = "generation";

/// `bot-<name>`: the user (and role) name of bot `name`.
pub fn bot_user_name(bot: &str) -> String {
    format!("bot-{bot}")
}

/// `bot-<name>`: a bot's role has the same name as its user.
pub fn bot_role_name(bot: &str) -> String {
    bot_user_name(bot)
}

/// A user: its roles and traits. Every bot has one, `bot-<name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// Name and labels (bots: [`BOT_LABEL`] and [`GENERATION_LABEL`]).
    pub metadata: Metadata,
    /// Roles and traits.
    pub spec: UserSpec,
}
envelope_serde!(User, UserSpec, ResourceKind::User);

/// A user's roles and traits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Traits, e.g. `logins: [root]`, expanded into `{{internal.logins}}`.
    #[serde(default)]
    pub traits: BTreeMap<String, Vec<String>>,
    /// The last renewal of a bot's identity, which the server answers again (same
    /// generation, nothing moved) when the bot retries exactly that request after losing the
    /// answer. Kept by the auth server; not on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_renewal: Option<LastRenewal>,
}

/// What identifies a bot's last renewal: the certificate it was made with and the key it
/// certified (SHA-256, lowercase hex), and the generation it moved the bot to.
///
/// A renewal presenting generation `generation - 1` from the certificate `parent` for the
/// key `public_key` is a retry of this one, not a replay: the original holder alone has that
/// key's private half (the bot writes it down before asking), so answering it again gives
/// nobody anything new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LastRenewal {
    /// SHA-256 of the DER X.509 certificate the renewal was authenticated with.
    pub parent: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo of the key it certified.
    pub public_key: String,
    /// The generation the renewal issued.
    pub generation: u64,
}

impl User {
    /// Checks the name, the generation label and the `logins` trait (each a valid login, see
    /// [`crate::check_login`]).
    pub fn validate(&self) -> Result<(), TypesError> {
        for l in self.logins() {
            crate::role::check_login(l).map_err(|m| TypesError::Invalid {
                kind: "user",
                name: self.metadata.name.clone(),
                field: "spec.traits.logins".into(),
                message: m,
            })?;
        }
        validate_name(&self.metadata.name).map_err(|m| TypesError::Invalid {
            kind: "user",
            name: self.metadata.name.clone(),
            field: "metadata.name".into(),
            message: m,
        })?;
        if let Some(g) = self.metadata.labels.get(GENERATION_LABEL)
            && g.parse::<u64>().is_err()
        {
            return Err(TypesError::Invalid {
                kind: "user",
                name: self.metadata.name.clone(),
                field: format!("metadata.labels.{GENERATION_LABEL}"),
                message: format!("{g:?} is not a number"),
            });
        }
        Ok(())
    }

    /// The bare bot name if this is a bot's user.
    pub fn bot_name(&self) -> Option<&str> {
        self.metadata.labels.get(BOT_LABEL).map(String::as_str)
    }

    /// The certificate generation counter (0 before the first join).
    pub fn generation(&self) -> u64 {
        self.metadata
            .labels
            .get(GENERATION_LABEL)
            .and_then(|g| g.parse().ok())
            .unwrap_or(0)
    }

    /// Sets the generation counter.
    pub fn set_generation(&mut self, generation: u64) {
        self.metadata
            .labels
            .insert(GENERATION_LABEL.into(), generation.to_string());
    }

    /// The `logins` trait.
    pub fn logins(&self) -> &[String] {
        self.spec
            .traits
            .get("logins")
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// A bot as `tctl bots ls` shows it: the bot's name, its user, and the roles it may
/// impersonate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bot {
    /// The bare bot name (`robot`).
    pub name: String,
    /// Its user (`bot-robot`).
    pub user_name: String,
    /// The roles its outputs may carry.
    pub roles: Vec<String>,
    /// Whether the bot's user is locked.
    #[serde(default)]
    pub locked: bool,
}
