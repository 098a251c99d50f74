//! Tokens and their allow rules.

use machine_id_types::{JoinMethod, ProvisionToken};
use time::OffsetDateTime;

use crate::JoinError;
use crate::iam::{CallerIdentity, IamError};

/// Checks an `iam` token before any AWS work: unexpired at `now`, join method `iam`, role
/// `Bot` with a bot name. Returns the bare bot name.
pub fn check_token(token: &ProvisionToken, now: OffsetDateTime) -> Result<String, JoinError> {
    if let Some(exp) = token.metadata.expires.filter(|e| *e <= now) {
        return Err(JoinError::TokenExpired {
            expired: exp
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| exp.to_string()),
        });
    }
    if token.spec.join_method != JoinMethod::Iam {
        return Err(JoinError::WrongMethod {
            token_method: token.spec.join_method,
            used: JoinMethod::Iam,
        });
    }
    match (&token.spec.bot_name, token.allows_bot()) {
        (Some(bot), true) => Ok(bot.clone()),
        _ => Err(JoinError::NotABotToken),
    }
}

/// The index of the first allow rule of `token` that `id` matches: `aws_account` exactly,
/// `aws_arn` as a glob anchored at both ends; a rule with both needs both.
///
/// A rule with neither field matches nothing (such a rule fails token validation anyway).
pub fn match_rules(token: &ProvisionToken, id: &CallerIdentity) -> Result<usize, IamError> {
    let found = token.spec.allow.iter().position(|rule| {
        if rule.aws_account.is_none() && rule.aws_arn.is_none() {
            return false;
        }
        rule.aws_account.as_ref().is_none_or(|a| *a == id.account)
            && rule.aws_arn.as_ref().is_none_or(|p| glob_match(p, &id.arn))
    });
    match found {
        Some(i) => {
            tracing::debug!(token = %token.metadata.name, rule = i, arn = %id.arn, "IAM join matched an allow rule");
            Ok(i)
        }
        None => Err(IamError::NoMatchingRule {
            arn: id.arn.clone(),
            account: id.account.clone(),
            token: token.metadata.name.clone(),
        }),
    }
}

/// Whether `s` matches `pattern` as a whole: `*` any run (also empty), `?` one character.
/// Everything else is literal, compared by character (no escapes, no classes).
///
/// The classic iterative matcher with one backtrack point (the last `*`): at most
/// `len(pattern) × len(s)` steps, never exponential.
pub fn glob_match(pattern: &str, s: &str) -> bool {
    glob_match_counting(pattern, s).0
}

/// [`glob_match`], and how many steps (turns of its loop) it took: what the tests hold to the
/// `len(pattern) × len(s)` bound without timing anything.
fn glob_match_counting(pattern: &str, s: &str) -> (bool, usize) {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    let (mut pi, mut si) = (0, 0);
    let mut steps = 0;
    // Where the last `*` was, and where in `s` its run currently ends.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        steps += 1;
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, si));
                pi += 1;
            }
            Some(&c) if c == '?' || c == s[si] => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                // Let the last `*` swallow one more character and retry after it.
                Some((sp, ss)) => {
                    star = Some((sp, ss + 1));
                    pi = sp + 1;
                    si = ss + 1;
                }
                None => return (false, steps),
            },
        }
    }
    (p[pi..].iter().all(|&c| c == '*'), steps)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use machine_id_types::{Metadata, TokenRule, TokenSpec};

    use super::*;

    #[test]
    fn glob_anchoring_and_wildcards() {
        let cases = [
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("abc", "xabc", false),
            ("", "", true),
            ("", "a", false),
            ("*", "", true),
            ("*", "anything", true),
            ("a*", "a", true),
            ("a*", "ba", false),
            ("*a", "ba", true),
            ("*a", "ab", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("a?c", "abbc", false),
            ("?", "é", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a**b", "ab", true),
            ("*x*", "abxcd", true),
            ("a.b", "aXb", false),
            ("[ab]", "a", false),
            ("[ab]", "[ab]", true),
            (
                "arn:aws:sts::111111111111:assumed-role/bot-*/i-*",
                "arn:aws:sts::111111111111:assumed-role/bot-ci/i-0123",
                true,
            ),
            (
                "arn:aws:sts::111111111111:assumed-role/bot-*/i-*",
                "arn:aws:sts::222222222222:assumed-role/bot-ci/i-0123",
                false,
            ),
            (
                "arn:aws:sts::111111111111:assumed-role/bot-*",
                "arn:aws:sts::111111111111:assumed-role/other/bot-x",
                false,
            ),
        ];
        for (p, s, want) in cases {
            assert_eq!(glob_match(p, s), want, "{p:?} vs {s:?}");
        }
    }

    #[test]
    fn glob_pathological_patterns_take_at_most_pattern_times_subject_steps() {
        // Patterns that make a backtracking matcher exponential: the step count (not the
        // wall clock) stays within the documented `len(pattern) × len(s)` bound.
        let s = "a".repeat(10_000);
        let many_stars_b = format!("{}b", "*a".repeat(50));
        for (p, want) in [
            ("a*a*a*a*a*a*a*a*b", false),
            ("a*a*a*a*a*a*a*a*", true),
            (many_stars_b.as_str(), false),
            ("*b", false),
        ] {
            let (matched, steps) = glob_match_counting(p, &s);
            assert_eq!(matched, want, "{p:?}");
            assert_eq!(glob_match(p, &s), want, "{p:?}");
            let bound = (p.chars().count() + 1) * (s.len() + 1);
            assert!(steps <= bound, "{p:?}: {steps} steps, bound {bound}");
        }
        // A plain match is linear: one step per character of the subject.
        assert_eq!(glob_match_counting(&s, &s), (true, s.len()));
    }

    fn token(rules: &[(Option<&str>, Option<&str>)]) -> ProvisionToken {
        ProvisionToken {
            metadata: Metadata::named("iam-token"),
            spec: TokenSpec {
                roles: vec!["Bot".into()],
                join_method: JoinMethod::Iam,
                bot_name: Some("robot".into()),
                allow: rules
                    .iter()
                    .map(|(a, r)| TokenRule {
                        aws_account: a.map(Into::into),
                        aws_arn: r.map(Into::into),
                    })
                    .collect(),
            },
        }
    }

    fn id(account: &str, arn: &str) -> CallerIdentity {
        CallerIdentity {
            account: account.into(),
            arn: arn.into(),
            user_id: "AROAEXAMPLE:i-1".into(),
        }
    }

    const ARN: &str = "arn:aws:sts::111111111111:assumed-role/bot/i-1";

    #[test]
    fn rules_by_account_arn_both_and_order() {
        let me = id("111111111111", ARN);
        assert_eq!(
            match_rules(&token(&[(Some("111111111111"), None)]), &me),
            Ok(0)
        );
        assert_eq!(
            match_rules(
                &token(&[(None, Some("arn:aws:sts::*:assumed-role/bot/*"))]),
                &me
            ),
            Ok(0)
        );
        assert_eq!(
            match_rules(&token(&[(Some("111111111111"), Some("*/bot/*"))]), &me),
            Ok(0)
        );
        // A refusal is "no rule matched", not any error.
        let no_match = |t: &ProvisionToken| {
            let r = match_rules(t, &me);
            assert!(matches!(r, Err(IamError::NoMatchingRule { .. })), "{r:?}");
        };
        // Both must hold.
        no_match(&token(&[(Some("222222222222"), Some("*/bot/*"))]));
        no_match(&token(&[(Some("111111111111"), Some("*/other/*"))]));
        // Account is exact, not a glob or prefix.
        no_match(&token(&[(Some("11111111111*"), None)]));
        no_match(&token(&[(Some("11111111111"), None)]));
        // First match wins.
        let t = token(&[
            (Some("222222222222"), None),
            (None, Some("*/bot/*")),
            (Some("111111111111"), None),
        ]);
        assert_eq!(match_rules(&t, &me), Ok(1));
        // A rule with neither field matches nothing.
        no_match(&token(&[(None, None)]));
    }

    #[test]
    fn no_match_names_arn_and_token() {
        let me = id("111111111111", ARN);
        let e = match_rules(&token(&[(Some("222222222222"), None)]), &me).unwrap_err();
        assert_eq!(
            e,
            IamError::NoMatchingRule {
                arn: ARN.into(),
                account: "111111111111".into(),
                token: "iam-token".into()
            }
        );
        let m = e.to_string();
        assert!(m.contains("instance did not match any allow rules"), "{m}");
        assert!(m.contains(ARN) && m.contains("iam-token"), "{m}");
    }

    #[test]
    fn token_checks() {
        let now = time::macros::datetime!(2026-01-01 00:00 UTC);
        let t = token(&[(Some("111111111111"), None)]);
        assert_eq!(check_token(&t, now).unwrap(), "robot");

        let mut expired = t.clone();
        expired.metadata.expires = Some(now);
        assert!(matches!(
            check_token(&expired, now),
            Err(JoinError::TokenExpired { .. })
        ));

        let mut wrong = t.clone();
        wrong.spec.join_method = JoinMethod::Token;
        assert_eq!(
            check_token(&wrong, now),
            Err(JoinError::WrongMethod {
                token_method: JoinMethod::Token,
                used: JoinMethod::Iam
            })
        );

        let mut no_bot = t.clone();
        no_bot.spec.bot_name = None;
        assert_eq!(check_token(&no_bot, now), Err(JoinError::NotABotToken));
        let mut no_role = t;
        no_role.spec.roles.clear();
        assert_eq!(check_token(&no_role, now), Err(JoinError::NotABotToken));
    }
}
