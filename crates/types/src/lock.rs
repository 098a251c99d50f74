use crate::resource::envelope_serde;
use crate::role::validate_name;
use crate::{Metadata, ResourceKind, TypesError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// A lock: while it is in force, its target can make no authenticated call and gets no
/// certificate. `metadata.expires` ends it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lock {
    /// Id and expiry.
    pub metadata: Metadata,
    /// Target and reason.
    pub spec: LockSpec,
}
envelope_serde!(Lock, LockSpec, ResourceKind::Lock);

/// What a lock targets and why.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockSpec {
    /// Whom it locks.
    pub target: LockTarget,
    /// Why, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When it was made.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub created: Option<OffsetDateTime>,
}

/// A lock's target.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockTarget {
    /// A user name (a bot's user is `bot-<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A role name: everyone holding it is locked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

impl Lock {
    /// Checks the id and that the lock targets something.
    pub fn validate(&self) -> Result<(), TypesError> {
        validate_name(&self.metadata.name).map_err(|m| TypesError::Invalid {
            kind: "lock",
            name: self.metadata.name.clone(),
            field: "metadata.name".into(),
            message: m,
        })?;
        if self.spec.target.user.is_none() && self.spec.target.role.is_none() {
            return Err(TypesError::Invalid {
                kind: "lock",
                name: self.metadata.name.clone(),
                field: "spec.target".into(),
                message: "a lock needs a target user or role".into(),
            });
        }
        Ok(())
    }

    /// Whether the lock is in force at `now` for `user` holding `roles`.
    pub fn applies_to(&self, user: &str, roles: &[String], now: OffsetDateTime) -> bool {
        if self.metadata.is_expired(now) {
            return false;
        }
        let t = &self.spec.target;
        t.user.as_deref() == Some(user) || t.role.as_ref().is_some_and(|r| roles.contains(r))
    }

    /// The target as `user=NAME` or `role=NAME`.
    pub fn target_text(&self) -> String {
        let t = &self.spec.target;
        let mut parts = Vec::new();
        if let Some(u) = &t.user {
            parts.push(format!("user={u}"));
        }
        if let Some(r) = &t.role {
            parts.push(format!("role={r}"));
        }
        parts.join(",")
    }
}
