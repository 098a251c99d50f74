//! Join tokens: the join methods, a token's roles and allow rules, and the one constructor of a
//! bot's join token.

use crate::resource::envelope_serde;
use crate::role::validate_name;
use crate::{Metadata, ResourceKind, TypesError};
use serde::{Deserialize, Serialize};

/// The system role a bot's join token must allow.
pub const SYSTEM_ROLE_BOT: &str = "Bot";

/// How a bot proves it may join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JoinMethod {
    /// A single-use secret token.
    #[default]
    Token,
    /// A signed AWS `sts:GetCallerIdentity` request.
    Iam,
}

impl JoinMethod {
    /// `token` or `iam`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Iam => "iam",
        }
    }
}

impl std::fmt::Display for JoinMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for JoinMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "token" => Ok(Self::Token),
            "iam" => Ok(Self::Iam),
            _ => Err(format!("unknown join method {s:?}; expected token or iam")),
        }
    }
}

/// A join token. For the `token` method the name is the secret; for `iam` it is a plain name
/// and the allow rules decide who may join.
#[derive(Debug, Clone, PartialEq)]
pub struct ProvisionToken {
    /// The name (the secret, for the `token` method) and expiry.
    pub metadata: Metadata,
    /// Roles, method and rules.
    pub spec: TokenSpec,
}
envelope_serde!(ProvisionToken, TokenSpec, ResourceKind::Token);

/// A token's roles, join method and rules.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// System roles the token grants; bots need `Bot`.
    pub roles: Vec<String>,
    /// The join method.
    #[serde(default)]
    pub join_method: JoinMethod,
    /// The bare bot name (`robot`, whose user is `bot-robot`), for role `Bot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bot_name: Option<String>,
    /// Allow rules for the `iam` method; the first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<TokenRule>,
}

/// One allow rule of an IAM token.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRule {
    /// The AWS account id, matched exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_account: Option<String>,
    /// The caller ARN, a glob anchored at both ends (`*` any run, `?` one char).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_arn: Option<String>,
}

impl ProvisionToken {
    /// The single-use `token`-method join token for bot `bot_name`, named by its `secret` and
    /// expiring at `expires`: the one rule for a bot's token, used by the server's
    /// `CreateBot` and by `tctl tokens add --type=bot`.
    pub fn bot_join(secret: &str, bot_name: &str, expires: time::OffsetDateTime) -> Self {
        ProvisionToken {
            metadata: Metadata {
                expires: Some(expires),
                ..Metadata::named(secret)
            },
            spec: TokenSpec {
                roles: vec![SYSTEM_ROLE_BOT.to_string()],
                join_method: JoinMethod::Token,
                bot_name: Some(bot_name.to_string()),
                allow: vec![],
            },
        }
    }

    /// Whether the token grants the `Bot` system role.
    pub fn allows_bot(&self) -> bool {
        self.spec
            .roles
            .iter()
            .any(|r| r.eq_ignore_ascii_case(SYSTEM_ROLE_BOT))
    }

    /// Checks the token's rules: role `Bot` requires `bot_name`; `iam` requires at least one
    /// allow rule; each rule needs `aws_account` or `aws_arn`.
    pub fn validate(&self) -> Result<(), TypesError> {
        let invalid = |field: &str, message: &str| TypesError::Invalid {
            kind: "token",
            name: if self.spec.join_method == JoinMethod::Token {
                "<redacted>".into()
            } else {
                self.metadata.name.clone()
            },
            field: field.to_string(),
            message: message.to_string(),
        };
        validate_name(&self.metadata.name).map_err(|m| invalid("metadata.name", &m))?;
        if self.spec.roles.is_empty() {
            return Err(invalid(
                "spec.roles",
                "missing; a bot token needs roles: [Bot]",
            ));
        }
        if let Some(r) = self
            .spec
            .roles
            .iter()
            .find(|r| !r.eq_ignore_ascii_case(SYSTEM_ROLE_BOT))
        {
            return Err(invalid(
                "spec.roles",
                &format!("unsupported system role {r:?}; only Bot is supported"),
            ));
        }
        if self.allows_bot() {
            match &self.spec.bot_name {
                None => {
                    return Err(invalid(
                        "spec.bot_name",
                        "missing; role Bot requires bot_name",
                    ));
                }
                Some(n) => validate_name(n).map_err(|m| invalid("spec.bot_name", &m))?,
            }
        }
        match self.spec.join_method {
            JoinMethod::Iam => {
                if self.spec.allow.is_empty() {
                    return Err(invalid(
                        "spec.allow",
                        "missing; the iam join method requires at least one allow rule",
                    ));
                }
                for (i, rule) in self.spec.allow.iter().enumerate() {
                    if rule.aws_account.is_none() && rule.aws_arn.is_none() {
                        return Err(invalid(
                            &format!("spec.allow[{i}]"),
                            "each rule needs aws_account or aws_arn",
                        ));
                    }
                }
            }
            JoinMethod::Token => {
                if !self.spec.allow.is_empty() {
                    return Err(invalid(
                        "spec.allow",
                        "allow rules apply to the iam join method only",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Resource, parse_resources};

    const IAM: &str = r#"
kind: token
version: v2
metadata: {name: iam-token, expires: "3000-01-01T00:00:00Z"}
spec:
  roles: [Bot]
  join_method: iam
  bot_name: robot
  allow:
  - aws_account: "111111111111"
    aws_arn: "arn:aws:sts::111111111111:assumed-role/teleport-bot-role/i-*"
"#;

    #[test]
    fn guide_iam_token_parses() {
        let r = parse_resources(IAM, "iam-token.yaml").unwrap();
        let Resource::Token(t) = &r[0] else { panic!() };
        assert_eq!(t.spec.bot_name.as_deref(), Some("robot"));
        assert_eq!(t.spec.allow.len(), 1);
        assert!(t.metadata.expires.is_some());
    }

    #[test]
    fn token_rules_are_checked() {
        let no_bot = IAM.replace("  bot_name: robot\n", "");
        assert_eq!(
            parse_resources(&no_bot, "f").unwrap_err().field,
            "spec.bot_name"
        );
        let no_rules = IAM.split("  allow:").next().unwrap().to_string();
        assert_eq!(
            parse_resources(&no_rules, "f").unwrap_err().field,
            "spec.allow"
        );
        let empty_rule = IAM.replace(
            "  - aws_account: \"111111111111\"\n    aws_arn:",
            "  - {}\n  - aws_arn:",
        );
        assert_eq!(
            parse_resources(&empty_rule, "f").unwrap_err().field,
            "spec.allow[0]"
        );
    }
}
