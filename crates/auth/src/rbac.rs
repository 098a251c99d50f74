//! Role-based access control: which verbs an identity may use on which resource kinds, and
//! which roles it may impersonate.
//!
//! - The admin identity (role [`ADMIN_ROLE`]) may do everything.
//! - Anyone else gets what the rules of their roles allow, and a deny rule of any of their
//!   roles wins over every allow. Role names in an identity that name no stored role grant
//!   nothing (the caller passes only the roles it found).
//! - A bot's own role (`bot-<name>`, made by CreateBot) allows reading cert authorities and
//!   impersonating the bot's roles, nothing else; renewal is checked by the certificate
//!   rules, not here.

use machine_id_types::{ADMIN_ROLE, Identity, Role};

use crate::error::AuthError;

/// Resource kinds rules name.
pub mod kind {
    /// Roles.
    pub const ROLE: &str = "role";
    /// Join tokens.
    pub const TOKEN: &str = "token";
    /// Bots (user + role pairs).
    pub const BOT: &str = "bot";
    /// Users.
    pub const USER: &str = "user";
    /// Nodes.
    pub const NODE: &str = "node";
    /// Locks.
    pub const LOCK: &str = "lock";
    /// Audit events.
    pub const EVENT: &str = "event";
    /// Certificate authorities (export).
    pub const CERT_AUTHORITY: &str = "cert_authority";
    /// Host certificates (signing).
    pub const HOST_CERT: &str = "host_cert";
}

/// A verb of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// List every resource of a kind.
    List,
    /// Create one.
    Create,
    /// Read one.
    Read,
    /// Overwrite one.
    Update,
    /// Delete one.
    Delete,
}

impl Verb {
    /// The verb as rules write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Create => "create",
            Self::Read => "read",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// Whether an identity holding `roles` (the stored roles it names) may use `verb` on
/// `resource`. `is_admin` short-circuits.
pub fn allowed(is_admin: bool, roles: &[Role], resource: &str, verb: Verb) -> bool {
    if is_admin {
        return true;
    }
    let v = verb.as_str();
    if roles.iter().any(|r| {
        r.spec
            .deny
            .rules
            .iter()
            .any(|rule| rule.matches(resource, v))
    }) {
        return false;
    }
    roles.iter().any(|r| {
        r.spec
            .allow
            .rules
            .iter()
            .any(|rule| rule.matches(resource, v))
    })
}

/// Whether an identity holding `roles` may reach a node labelled `labels`: some role's
/// `allow.node_labels` match (`'*': '*'` matches every node) and no role's `deny.node_labels`
/// do. The admin reaches every node.
pub fn node_allowed(
    is_admin: bool,
    roles: &[Role],
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    if is_admin {
        return true;
    }
    if roles.iter().any(|r| r.spec.deny.matches_labels(labels)) {
        return false;
    }
    roles.iter().any(|r| r.spec.allow.matches_labels(labels))
}

/// Checks [`allowed`] for `identity`, with a message naming the user, verb and resource.
pub fn check(
    identity: &Identity,
    roles: &[Role],
    resource: &str,
    verb: Verb,
) -> Result<(), AuthError> {
    if allowed(identity.is_admin(), roles, resource, verb) {
        Ok(())
    } else {
        Err(AuthError::AccessDenied(format!(
            "access denied: user {:?} with roles [{}] may not {} {}; an administrator can grant it with a rule in one of the user's roles",
            identity.username,
            identity.roles.join(", "),
            verb.as_str(),
            plural(resource),
        )))
    }
}

fn plural(resource: &str) -> String {
    match resource {
        kind::CERT_AUTHORITY => "cert authorities".into(),
        kind::HOST_CERT => "host certificates".into(),
        other => format!("{other}s"),
    }
}

/// Checks that `roles` (the caller's stored roles) let it impersonate every role of
/// `requested`; returns the first one it may not. The admin may impersonate any role, never
/// [`ADMIN_ROLE`] itself.
pub fn check_impersonation<'a>(
    is_admin: bool,
    roles: &[Role],
    requested: &'a [String],
) -> Result<(), &'a str> {
    for want in requested {
        if want == ADMIN_ROLE || want.starts_with('@') {
            return Err(want);
        }
        if is_admin {
            continue;
        }
        let denied = roles.iter().any(|r| {
            r.spec
                .deny
                .impersonate
                .as_ref()
                .is_some_and(|i| i.roles.iter().any(|x| x == want || x == "*"))
        });
        let granted = roles.iter().any(|r| {
            r.spec
                .allow
                .impersonate
                .as_ref()
                .is_some_and(|i| i.roles.iter().any(|x| x == want))
        });
        if denied || !granted {
            return Err(want);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use machine_id_types::{ImpersonateConditions, RoleConditions, RoleSpec, Rule, default_roles};

    fn role(name: &str, allow: Vec<Rule>, deny: Vec<Rule>) -> Role {
        Role::new(
            name,
            RoleSpec {
                allow: RoleConditions {
                    rules: allow,
                    ..Default::default()
                },
                deny: RoleConditions {
                    rules: deny,
                    ..Default::default()
                },
                ..Default::default()
            },
        )
    }

    #[test]
    fn admin_may_do_everything() {
        assert!(allowed(true, &[], kind::TOKEN, Verb::Delete));
        assert!(allowed(true, &[], "anything", Verb::List));
    }

    #[test]
    fn no_roles_grant_nothing() {
        for v in [
            Verb::List,
            Verb::Create,
            Verb::Read,
            Verb::Update,
            Verb::Delete,
        ] {
            assert!(!allowed(false, &[], kind::ROLE, v));
        }
    }

    #[test]
    fn rules_grant_verbs_on_resources() {
        let roles = default_roles();
        let editor = roles.iter().find(|r| r.metadata.name == "editor").cloned();
        let editor = vec![editor.expect("editor exists")];
        assert!(allowed(false, &editor, kind::TOKEN, Verb::List));
        assert!(allowed(false, &editor, kind::ROLE, Verb::Create));
        assert!(!allowed(false, &editor, kind::EVENT, Verb::List));
        let auditor = vec![
            roles
                .iter()
                .find(|r| r.metadata.name == "auditor")
                .cloned()
                .expect("auditor"),
        ];
        assert!(allowed(false, &auditor, kind::EVENT, Verb::List));
        assert!(!allowed(false, &auditor, kind::EVENT, Verb::Delete));
        assert!(!allowed(false, &auditor, kind::TOKEN, Verb::List));
    }

    #[test]
    fn wildcards_match() {
        let r = vec![role("all", vec![Rule::new(&["*"], &["*"])], vec![])];
        assert!(allowed(false, &r, kind::LOCK, Verb::Update));
        assert!(allowed(false, &r, kind::HOST_CERT, Verb::Create));
    }

    #[test]
    fn deny_wins_across_roles() {
        let roles = vec![
            role("all", vec![Rule::new(&["*"], &["*"])], vec![]),
            role(
                "no-tokens",
                vec![],
                vec![Rule::new(&["token"], &["list", "read"])],
            ),
        ];
        assert!(!allowed(false, &roles, kind::TOKEN, Verb::List));
        assert!(!allowed(false, &roles, kind::TOKEN, Verb::Read));
        assert!(allowed(false, &roles, kind::TOKEN, Verb::Create));
        assert!(allowed(false, &roles, kind::NODE, Verb::List));
    }

    #[test]
    fn check_message_names_user_verb_and_resource() {
        let id = Identity {
            username: "bot-robot".into(),
            roles: vec!["bot-robot".into()],
            logins: vec![],
            traits: Default::default(),
            renewable: true,
            generation: 1,
            impersonator: None,
            disallow_reissue: false,
            cluster: "c".into(),
            expires: time::OffsetDateTime::UNIX_EPOCH,
        };
        let e = check(&id, &[], kind::TOKEN, Verb::List).expect_err("denied");
        let s = e.to_string();
        assert!(s.contains("bot-robot") && s.contains("list tokens"), "{s}");
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    }

    #[test]
    fn impersonation_needs_a_grant_and_deny_wins() {
        let mut bot = role("bot-robot", vec![], vec![]);
        bot.spec.allow.impersonate = Some(ImpersonateConditions {
            roles: vec!["access".into(), "editor".into()],
            users: vec![],
        });
        let roles = vec![bot.clone()];
        let req = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_impersonation(false, &roles, &req(&["access"])),
            Ok(())
        );
        assert_eq!(
            check_impersonation(false, &roles, &req(&["access", "editor"])),
            Ok(())
        );
        let r = req(&["access", "auditor"]);
        assert_eq!(check_impersonation(false, &roles, &r), Err("auditor"));
        let r = req(&["@admin"]);
        assert_eq!(check_impersonation(false, &roles, &r), Err("@admin"));
        assert_eq!(check_impersonation(true, &[], &r), Err("@admin"));
        assert_eq!(check_impersonation(true, &[], &req(&["auditor"])), Ok(()));
        let mut no_editor = role("no-editor", vec![], vec![]);
        no_editor.spec.deny.impersonate = Some(ImpersonateConditions {
            roles: vec!["editor".into()],
            users: vec![],
        });
        let r = req(&["editor"]);
        assert_eq!(
            check_impersonation(false, &[bot, no_editor], &r),
            Err("editor")
        );
    }
}
