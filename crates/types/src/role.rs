//! Roles: allow/deny conditions (logins, node labels, impersonation, resource rules), their
//! validation and login trait expansion.

use crate::resource::envelope_serde;
use crate::{Metadata, ResourceKind, TypesError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The login template that expands to the user's `logins` trait.
pub const INTERNAL_LOGINS: &str = "{{internal.logins}}";

/// The verbs a rule may grant.
pub const ALL_VERBS: [&str; 5] = ["list", "create", "read", "update", "delete"];

/// A role: what its holders may log in as, which nodes they may reach, which resources they
/// may touch, and which roles they may impersonate.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    /// Name and labels.
    pub metadata: Metadata,
    /// The rules.
    pub spec: RoleSpec,
}
envelope_serde!(Role, RoleSpec, ResourceKind::Role);

/// A role's allow and deny conditions and options.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// What the role grants.
    #[serde(default)]
    pub allow: RoleConditions,
    /// What the role denies; deny wins over any allow.
    #[serde(default)]
    pub deny: RoleConditions,
    /// Options.
    #[serde(default)]
    pub options: RoleOptions,
}

/// A label value in `node_labels`: one glob or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LabelValues {
    /// `env: prod`
    One(String),
    /// `env: [prod, staging]`
    Many(Vec<String>),
}

impl LabelValues {
    /// The values as a slice.
    pub fn values(&self) -> &[String] {
        match self {
            Self::One(v) => std::slice::from_ref(v),
            Self::Many(v) => v,
        }
    }
}

/// One set of conditions (the allow or the deny side of a role).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleConditions {
    /// OS logins (SSH principals); may hold `{{internal.logins}}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logins: Vec<String>,
    /// Node labels: `'*': '*'` matches every node; values are globs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, LabelValues>,
    /// Resource rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Roles the holder may impersonate (bots use this for their outputs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impersonate: Option<ImpersonateConditions>,
}

/// Which roles may be impersonated.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImpersonateConditions {
    /// Role names.
    #[serde(default)]
    pub roles: Vec<String>,
    /// User names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
}

/// A rule: verbs on resources. `*` matches any resource or verb.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Resource kinds (`role`, `token`, `bot`, `user`, `node`, `lock`, `event`,
    /// `cert_authority`, `host_cert`) or `*`.
    pub resources: Vec<String>,
    /// Verbs (`list`, `create`, `read`, `update`, `delete`) or `*`.
    pub verbs: Vec<String>,
}

impl Rule {
    /// A rule granting `verbs` on `resources`.
    pub fn new(resources: &[&str], verbs: &[&str]) -> Self {
        Self {
            resources: resources.iter().map(|s| s.to_string()).collect(),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Whether the rule covers `verb` on `resource`.
    pub fn matches(&self, resource: &str, verb: &str) -> bool {
        self.resources.iter().any(|r| r == "*" || r == resource)
            && self.verbs.iter().any(|v| v == "*" || v == verb)
    }
}

/// Role options.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleOptions {
    /// The longest certificate a holder of this role may get.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::duration::serde_opt"
    )]
    pub max_session_ttl: Option<Duration>,
    /// Whether SSH certificates permit port forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_forwarding: Option<bool>,
    /// Whether SSH certificates permit agent forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_agent: Option<bool>,
}

/// Matches `text` against a glob where `*` is any run of characters and `?` one character,
/// anchored at both ends.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

impl RoleConditions {
    /// Whether these conditions' `node_labels` match a node with `labels`: every key of the
    /// condition must match (key `*` with value `*` matches any node).
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        if self.node_labels.is_empty() {
            return false;
        }
        self.node_labels.iter().all(|(k, vals)| {
            if k == "*" {
                return vals.values().iter().any(|v| v == "*");
            }
            labels
                .get(k)
                .is_some_and(|actual| vals.values().iter().any(|v| glob_match(v, actual)))
        })
    }
}

impl Role {
    /// A role with `metadata.name = name` and the given spec.
    pub fn new(name: impl Into<String>, spec: RoleSpec) -> Self {
        Self {
            metadata: Metadata::named(name),
            spec,
        }
    }

    /// Checks the name and rules.
    pub fn validate(&self) -> Result<(), TypesError> {
        let invalid = |field: &str, message: &str| TypesError::Invalid {
            kind: "role",
            name: self.metadata.name.clone(),
            field: field.to_string(),
            message: message.to_string(),
        };
        validate_name(&self.metadata.name).map_err(|m| invalid("metadata.name", &m))?;
        for (side, cond) in [("allow", &self.spec.allow), ("deny", &self.spec.deny)] {
            for (i, rule) in cond.rules.iter().enumerate() {
                if rule.resources.is_empty() || rule.verbs.is_empty() {
                    return Err(invalid(
                        &format!("spec.{side}.rules[{i}]"),
                        "a rule needs at least one resource and one verb",
                    ));
                }
                for v in &rule.verbs {
                    if v != "*" && !ALL_VERBS.contains(&v.as_str()) {
                        return Err(invalid(
                            &format!("spec.{side}.rules[{i}].verbs"),
                            &format!(
                                "unknown verb {v:?}; expected one of list, create, read, update, delete or *"
                            ),
                        ));
                    }
                }
            }
            for l in &cond.logins {
                check_login(l).map_err(|m| invalid(&format!("spec.{side}.logins"), &m))?;
            }
        }
        Ok(())
    }

    /// The logins this role allows for a user with `logins_trait`, with `{{internal.logins}}`
    /// expanded, minus what the role denies.
    pub fn expanded_logins(&self, logins_trait: &[String]) -> Vec<String> {
        let expand = |list: &[String]| -> Vec<String> {
            let mut out = Vec::new();
            for l in list {
                if l == INTERNAL_LOGINS {
                    out.extend(logins_trait.iter().cloned());
                } else if !l.contains("{{") {
                    out.push(l.clone());
                }
            }
            out
        };
        let deny = expand(&self.spec.deny.logins);
        expand(&self.spec.allow.logins)
            .into_iter()
            .filter(|l| !deny.contains(l))
            .collect()
    }

    /// The row of `tctl get roles --format=text`: name, logins, node labels, rules.
    pub fn text_row(&self) -> [String; 4] {
        let a = &self.spec.allow;
        let labels: Vec<String> = a
            .node_labels
            .iter()
            .map(|(k, v)| {
                if k == "*" && v.values().iter().any(|v| v == "*") {
                    "<all nodes>".to_string()
                } else {
                    format!("{k}={}", v.values().join(","))
                }
            })
            .collect();
        let rules: Vec<String> = a
            .rules
            .iter()
            .map(|r| format!("{}:{}", r.resources.join(","), r.verbs.join(",")))
            .collect();
        [
            self.metadata.name.clone(),
            a.logins.join(","),
            labels.join(","),
            rules.join(","),
        ]
    }
}

/// Checks a login (an SSH principal, or the `{{internal.logins}}` template): non-empty, at
/// most 255 bytes, no whitespace, commas or control characters (a principal with one could
/// not be written into `ssh_config`, sshd's principals files or a certificate request
/// unambiguously). The error names the bad value, escaped.
pub fn check_login(login: &str) -> Result<(), String> {
    if login.is_empty() {
        return Err("invalid login \"\": a login cannot be empty".into());
    }
    if login.len() > 255 {
        return Err(format!(
            "invalid login {:?}...: longer than 255 bytes",
            login.chars().take(32).collect::<String>()
        ));
    }
    if let Some(c) = login
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == ',')
    {
        return Err(format!(
            "invalid login {login:?}: {c:?} is not allowed; logins have no spaces, commas or control characters"
        ));
    }
    Ok(())
}

/// Checks a resource name: non-empty, at most 253 bytes, letters, digits and `-_.@:`,
/// not starting with `@` (reserved for built-in identities).
pub(crate) fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("missing; every resource needs a name".into());
    }
    if name.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    if name.starts_with('@') {
        return Err("names starting with @ are reserved".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c)))
    {
        return Err(format!(
            "invalid character {c:?} in {name:?}; use letters, digits, '-', '_', '.' and ':'"
        ));
    }
    Ok(())
}

/// The roles every new cluster starts with: `access`, `editor`, `auditor`.
pub fn default_roles() -> Vec<Role> {
    let all_nodes = BTreeMap::from([("*".to_string(), LabelValues::One("*".into()))]);
    let crud = ["list", "create", "read", "update", "delete"];
    vec![
        Role::new(
            "access",
            RoleSpec {
                allow: RoleConditions {
                    logins: vec![INTERNAL_LOGINS.to_string()],
                    node_labels: all_nodes,
                    rules: vec![Rule::new(&["event"], &["list", "read"])],
                    impersonate: None,
                },
                options: RoleOptions {
                    max_session_ttl: Some(Duration::from_secs(30 * 3600)),
                    ..RoleOptions::default()
                },
                ..RoleSpec::default()
            },
        ),
        Role::new(
            "editor",
            RoleSpec {
                allow: RoleConditions {
                    rules: vec![Rule::new(
                        &[
                            "user",
                            "role",
                            "token",
                            "bot",
                            "node",
                            "lock",
                            "cert_authority",
                        ],
                        &crud,
                    )],
                    ..RoleConditions::default()
                },
                options: RoleOptions {
                    max_session_ttl: Some(Duration::from_secs(8 * 3600)),
                    ..RoleOptions::default()
                },
                ..RoleSpec::default()
            },
        ),
        Role::new(
            "auditor",
            RoleSpec {
                allow: RoleConditions {
                    rules: vec![Rule::new(&["event"], &["list", "read"])],
                    ..RoleConditions::default()
                },
                options: RoleOptions {
                    max_session_ttl: Some(Duration::from_secs(30 * 3600)),
                    ..RoleOptions::default()
                },
                ..RoleSpec::default()
            },
        ),
    ]
}

#[cfg(test)]
mod tests {

    #[test]
    fn logins_refuse_spaces_commas_and_control_characters() {
        assert!(super::check_login("root").is_ok());
        assert!(super::check_login("{{internal.logins}}").is_ok());
        for (bad, shown) in [
            ("a b", "\"a b\": ' '"),
            ("a,b", "\"a,b\": ','"),
            ("root\u{7}", "\"root\\u{7}\": '\\u{7}'"),
            ("ro\not", "\"ro\\not\": '\\n'"),
        ] {
            let e = super::check_login(bad).unwrap_err();
            assert!(
                e.starts_with(&format!("invalid login {shown} is not allowed")),
                "{e}"
            );
        }
        assert!(super::check_login("").is_err());
        let mut r = Role::new("dev", RoleSpec::default());
        r.spec.deny.logins = vec!["x\ty".into()];
        let e = r.validate().unwrap_err().to_string();
        assert!(
            e.starts_with("invalid role \"dev\": field spec.deny.logins: invalid login \"x\\ty\""),
            "{e}"
        );
    }

    use super::*;

    #[test]
    fn globs_are_anchored() {
        assert!(glob_match(
            "arn:aws:sts::1:assumed-role/r/i-*",
            "arn:aws:sts::1:assumed-role/r/i-123"
        ));
        assert!(!glob_match("role/i-*", "xrole/i-1"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("abc", "abcd"));
    }

    #[test]
    fn logins_expand_and_deny_wins() {
        let mut r = default_roles().remove(0);
        assert_eq!(r.expanded_logins(&[]), Vec::<String>::new());
        r.spec.allow.logins.push("root".into());
        r.spec.deny.logins.push("ubuntu".into());
        assert_eq!(
            r.expanded_logins(&["ubuntu".into(), "ci".into()]),
            vec!["ci".to_string(), "root".to_string()]
        );
    }

    #[test]
    fn labels_match() {
        let access = default_roles().remove(0);
        assert!(access.spec.allow.matches_labels(&BTreeMap::new()));
        let cond = RoleConditions {
            node_labels: BTreeMap::from([(
                "env".into(),
                LabelValues::Many(vec!["prod".into(), "stag*".into()]),
            )]),
            ..Default::default()
        };
        let l = |v: &str| BTreeMap::from([("env".to_string(), v.to_string())]);
        assert!(cond.matches_labels(&l("prod")));
        assert!(cond.matches_labels(&l("staging")));
        assert!(!cond.matches_labels(&l("dev")));
        assert!(!cond.matches_labels(&BTreeMap::new()));
    }

    #[test]
    fn role_yaml_round_trip() {
        for role in default_roles() {
            let yaml = crate::Resource::Role(role.clone()).to_yaml();
            let back = crate::parse_resources(&yaml, "t").unwrap();
            assert_eq!(back, vec![crate::Resource::Role(role)], "{yaml}");
        }
    }

    #[test]
    fn text_row() {
        let access = default_roles().remove(0);
        assert_eq!(
            access.text_row(),
            [
                "access".to_string(),
                "{{internal.logins}}".into(),
                "<all nodes>".into(),
                "event:list,read".into()
            ]
        );
    }
}
