//! Tokens and their allow rules.

use machine_id_types::ProvisionToken;
use time::OffsetDateTime;

use crate::JoinError;
use crate::iam::{CallerIdentity, IamError};

/// Checks an `iam` token before any AWS work: unexpired at `now`, join method `iam`, role
/// `Bot` with a bot name. Returns the bare bot name.
pub fn check_token(_token: &ProvisionToken, _now: OffsetDateTime) -> Result<String, JoinError> {
    Err(JoinError::NotABotToken)
}

/// The index of the first allow rule of `token` that `id` matches: `aws_account` exactly,
/// `aws_arn` as a glob anchored at both ends; a rule with both needs both.
pub fn match_rules(_token: &ProvisionToken, _id: &CallerIdentity) -> Result<usize, IamError> {
    Err(IamError::Unimplemented("match_rules"))
}

/// Whether `s` matches `pattern` as a whole: `*` any run (also empty), `?` one character.
pub fn glob_match(_pattern: &str, _s: &str) -> bool {
    false
}
