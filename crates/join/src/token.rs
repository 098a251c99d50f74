//! The `token` join method: a single-use secret.

use crate::JoinError;
use machine_id_types::{JoinMethod, ProvisionToken};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

/// A join token secret. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// Wraps a secret read from a flag, env var or file (trimmed).
    pub fn new(s: impl AsRef<str>) -> Self {
        Self(s.as_ref().trim().to_string())
    }

    /// The secret itself, for sending to the server.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(<redacted>)")
    }
}

/// A fresh token: 32 lowercase hex characters (128 random bits).
pub fn generate() -> TokenSecret {
    use rand::RngCore;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    TokenSecret(hex::encode(b))
}

/// The server half: checks the `presented` secret against the `stored` token (found by the
/// caller under the secret's hash) and returns the bare bot name it admits.
///
/// Checks, in order: the secret equals the token's name (constant time), the token has not
/// expired at `now`, it is a `token`-method token, it allows role `Bot` and names a bot. The
/// caller must then consume the token with compare-and-swap and treat a lost race as
/// [`JoinError::TokenNotFound`].
pub fn verify(
    stored: &ProvisionToken,
    presented: &str,
    now: OffsetDateTime,
) -> Result<String, JoinError> {
    let same: bool = stored
        .metadata
        .name
        .as_bytes()
        .ct_eq(presented.as_bytes())
        .into();
    if !same {
        return Err(JoinError::TokenNotFound);
    }
    if let Some(exp) = stored.metadata.expires.filter(|e| *e <= now) {
        return Err(JoinError::TokenExpired {
            expired: exp
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
        });
    }
    if stored.spec.join_method != JoinMethod::Token {
        return Err(JoinError::WrongMethod {
            token_method: stored.spec.join_method,
            used: JoinMethod::Token,
        });
    }
    match (&stored.spec.bot_name, stored.allows_bot()) {
        (Some(bot), true) => Ok(bot.clone()),
        _ => Err(JoinError::NotABotToken),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;
    use machine_id_types::{Metadata, TokenSpec};
    use std::time::Duration;

    fn token(name: &str, method: JoinMethod, expires: Option<OffsetDateTime>) -> ProvisionToken {
        ProvisionToken {
            metadata: Metadata {
                expires,
                ..Metadata::named(name)
            },
            spec: TokenSpec {
                roles: vec!["Bot".into()],
                join_method: method,
                bot_name: Some("robot".into()),
                allow: vec![],
            },
        }
    }

    #[test]
    fn generated_tokens_are_32_hex_and_distinct() {
        let a = generate();
        assert_eq!(a.expose().len(), 32);
        assert!(
            a.expose()
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, generate());
        assert!(!format!("{a:?}").contains(a.expose()));
    }

    #[test]
    fn verify_checks_everything() {
        let now = OffsetDateTime::now_utc();
        let t = token(
            "abc",
            JoinMethod::Token,
            Some(now + Duration::from_secs(60)),
        );
        assert_eq!(verify(&t, "abc", now).unwrap(), "robot");
        assert_eq!(verify(&t, "abd", now), Err(JoinError::TokenNotFound));
        assert!(matches!(
            verify(&t, "abc", now + Duration::from_secs(61)),
            Err(JoinError::TokenExpired { .. })
        ));
        let iam = token("abc", JoinMethod::Iam, None);
        assert!(matches!(
            verify(&iam, "abc", now),
            Err(JoinError::WrongMethod { .. })
        ));
        let mut nobot = token("abc", JoinMethod::Token, None);
        nobot.spec.roles = vec!["Node".into()];
        assert_eq!(verify(&nobot, "abc", now), Err(JoinError::NotABotToken));
    }
}
