//! Locks: what a lock targets (a user, a role, certificates issued before a time) and whether it
//! applies to a caller now.

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
    /// When set, the lock holds only certificates issued before this instant (whole
    /// seconds): how deleting a bot revokes its unexpired certificates without locking a
    /// bot later created under the same name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub issued_before: Option<OffsetDateTime>,
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

    /// Whether the lock is in force at `now` for `user` holding `roles` with a certificate
    /// issued at `issued` (for a certificate about to be issued: `now`).
    pub fn applies_to(
        &self,
        user: &str,
        roles: &[String],
        issued: OffsetDateTime,
        now: OffsetDateTime,
    ) -> bool {
        if self.metadata.is_expired(now) {
            return false;
        }
        if self.spec.issued_before.is_some_and(|t| issued >= t) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(user: Option<&str>, role: Option<&str>) -> Lock {
        Lock {
            metadata: Metadata::named("l"),
            spec: LockSpec {
                target: LockTarget {
                    user: user.map(str::to_string),
                    role: role.map(str::to_string),
                },
                ..LockSpec::default()
            },
        }
    }

    #[test]
    fn applies_to_its_user_or_role_until_it_expires() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(10_000);
        let roles = vec!["access".to_string(), "ops".to_string()];
        let by_user = lock(Some("bot-robot"), None);
        assert!(by_user.applies_to("bot-robot", &[], now, now));
        assert!(!by_user.applies_to("bot-other", &roles, now, now));
        let by_role = lock(None, Some("ops"));
        assert!(by_role.applies_to("anyone", &roles, now, now));
        assert!(!by_role.applies_to("anyone", &roles[..1], now, now));
        let mut expiring = by_user.clone();
        expiring.metadata.expires = Some(now);
        assert!(!expiring.applies_to("bot-robot", &[], now, now));
        assert!(expiring.applies_to("bot-robot", &[], now, now - time::Duration::SECOND));
    }

    #[test]
    fn issued_before_holds_only_older_certificates() {
        let t = OffsetDateTime::UNIX_EPOCH + time::Duration::days(10_000);
        let mut l = lock(Some("bot-robot"), None);
        l.spec.issued_before = Some(t);
        let later = t + time::Duration::hours(1);
        assert!(l.applies_to("bot-robot", &[], t - time::Duration::SECOND, later));
        assert!(!l.applies_to("bot-robot", &[], t, later));
        assert!(!l.applies_to("bot-robot", &[], later, later));
    }

    #[test]
    fn a_user_lock_matches_the_user_name_exactly_and_never_as_a_role() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(10_000);
        let l = lock(Some("bot-robot"), None);
        assert!(!l.applies_to("bot-robot2", &[], now, now));
        assert!(!l.applies_to("bot-robo", &[], now, now));
        assert!(!l.applies_to("BOT-ROBOT", &[], now, now));
        // A role named like the user is not the user.
        assert!(!l.applies_to("someone", &["bot-robot".to_string()], now, now));
        // The user is held whatever roles it holds.
        assert!(l.applies_to("bot-robot", &["access".to_string()], now, now));
    }

    #[test]
    fn a_role_lock_holds_every_holder_of_exactly_that_role() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(10_000);
        let l = lock(None, Some("access"));
        for user in ["bot-robot", "bot-other", "alice"] {
            assert!(l.applies_to(user, &["editor".into(), "access".into()], now, now));
        }
        assert!(!l.applies_to("bot-robot", &[], now, now));
        assert!(!l.applies_to("bot-robot", &["access2".into(), "acces".into()], now, now));
        // The user's name is not a role.
        assert!(!l.applies_to("access", &[], now, now));
    }

    #[test]
    fn a_lock_on_a_user_and_a_role_holds_either() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(10_000);
        let l = lock(Some("bot-robot"), Some("ops"));
        assert!(l.applies_to("bot-robot", &[], now, now));
        assert!(l.applies_to("bot-other", &["ops".into()], now, now));
        assert!(!l.applies_to("bot-other", &["access".into()], now, now));
    }

    #[test]
    fn a_lock_without_a_target_holds_no_one() {
        // validate() refuses it; applies_to must not treat "no target" as "everyone".
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(10_000);
        let l = lock(None, None);
        assert!(l.validate().is_err());
        assert!(!l.applies_to("", &[], now, now));
        assert!(!l.applies_to("bot-robot", &["access".into()], now, now));
    }

    #[test]
    fn an_expired_lock_holds_no_one_from_its_expiry_on() {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(10_000);
        let roles = vec!["ops".to_string()];
        for mut l in [lock(Some("bot-robot"), None), lock(None, Some("ops"))] {
            l.metadata.expires = Some(now - time::Duration::hours(1));
            assert!(!l.applies_to("bot-robot", &roles, now, now));
            // Nor for a certificate issued while it was in force.
            assert!(!l.applies_to("bot-robot", &roles, now - time::Duration::hours(2), now));
            // An hour earlier it held.
            let then = now - time::Duration::hours(1) - time::Duration::SECOND;
            assert!(l.applies_to("bot-robot", &roles, then, then));
        }
    }

    #[test]
    fn issued_before_applies_to_role_locks_too_and_expiry_still_wins() {
        let t = OffsetDateTime::UNIX_EPOCH + time::Duration::days(10_000);
        let roles = vec!["ops".to_string()];
        let mut l = lock(None, Some("ops"));
        l.spec.issued_before = Some(t);
        let old = t - time::Duration::SECOND;
        assert!(l.applies_to("bot-robot", &roles, old, t));
        assert!(!l.applies_to("bot-robot", &roles, t, t));
        // A certificate about to be issued (issued = now) after the cut-off is free.
        let later = t + time::Duration::MINUTE;
        assert!(!l.applies_to("bot-robot", &roles, later, later));
        l.metadata.expires = Some(later);
        assert!(!l.applies_to("bot-robot", &roles, old, later));
    }
}
