//! The server's side of the `iam` join method: the challenge, the checks of the signed
//! `sts:GetCallerIdentity` request, the call to STS and the token's allow rules. The checks
//! themselves live in [`machine_id_join::iam`]; this module holds the order, the state
//! (token, user, locks), the audit events and the certificates.

use std::time::Duration;

use machine_id_join::iam::{self, CallerIdentity, Challenge, IamError};
use machine_id_types::{JoinMethod, ProvisionToken, User, bot_user_name, event_types};
use serde_json::json;

use super::{Core, IssuedCerts, lock_message};
use crate::error::{AuthError, Result};
use crate::state;

/// A RegisterUsingIAMMethod request, the answer to one challenge. Its `Debug` leaves out
/// the signed request, which carries the bot's AWS session token.
#[derive(Clone)]
pub(crate) struct IamJoinRequest {
    /// The name of the `iam` join token (not a secret).
    pub token: String,
    /// The DER SubjectPublicKeyInfo of the key to certify.
    pub public_key: Vec<u8>,
    /// The certificates' requested lifetime; `None` for the default.
    pub ttl: Option<Duration>,
    /// The signed `sts:GetCallerIdentity` HTTP request, as the bot would send it to STS.
    pub sts_identity_request: Vec<u8>,
}

impl std::fmt::Debug for IamJoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IamJoinRequest")
            .field("token", &self.token)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The longest token name the server looks up.
const MAX_TOKEN_NAME: usize = 253;

/// What a failed IAM join knew when it failed, for the audit event.
#[derive(Default)]
struct Known {
    user: Option<String>,
    caller: Option<CallerIdentity>,
}

/// How an IAM refusal reaches the client: transient STS trouble as retryable, malformed
/// requests as invalid arguments, everything else as a denial.
fn iam_error(e: IamError) -> AuthError {
    if e.is_retryable() {
        AuthError::Unavailable(e.to_string())
    } else {
        AuthError::AccessDenied(e.to_string())
    }
}

impl Core {
    /// A fresh challenge for one IAM join attempt.
    pub fn iam_challenge(&self) -> Result<Challenge> {
        self.iam
            .challenges
            .issue(self.clock.now())
            .map_err(iam_error)
    }

    /// RegisterUsingIAMMethod, after the challenge was sent: checks the signed request, asks
    /// STS who signed it, matches the token's rules and issues the bot's certificates (not
    /// renewable, generation 0: an IAM bot joins again at every renewal). The token stays.
    pub async fn register_using_iam(
        &self,
        challenge: &Challenge,
        req: IamJoinRequest,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<IssuedCerts> {
        let remote_ip = remote.map(|a| a.ip());
        let remote = remote.map(|a| a.to_string()).unwrap_or_default();
        let mut known = Known::default();
        match self.join_with_iam(challenge, &req, &mut known).await {
            Ok((certs, user, caller)) => {
                tracing::info!(user = %user, token = %req.token, arn = %caller.arn, remote = %remote, "bot joined with iam");
                self.audit(
                    event_types::BOT_JOIN,
                    Some(&user),
                    true,
                    format!(
                        "{user} joined with iam token {:?} as {}",
                        req.token, caller.arn
                    ),
                    json!({
                        "method": "iam", "token": req.token, "aws_account": caller.account,
                        "aws_arn": caller.arn, "remote_addr": remote,
                    }),
                )
                .await;
                Ok(certs)
            }
            Err(e) => {
                let arn = known.caller.as_ref().map(|c| c.arn.clone());
                tracing::info!(token = %req.token, arn = ?arn, remote = %remote, error = %e, "iam join refused");
                self.audit_unauthenticated(
                    remote_ip,
                    event_types::JOIN_FAILED,
                    known.user.as_deref(),
                    e.to_string(),
                    json!({
                        "method": "iam", "token": req.token,
                        "aws_account": known.caller.as_ref().map(|c| c.account.clone()),
                        "aws_arn": arn, "remote_addr": remote,
                    }),
                )
                .await;
                Err(e)
            }
        }
    }

    async fn join_with_iam(
        &self,
        challenge: &Challenge,
        req: &IamJoinRequest,
        known: &mut Known,
    ) -> Result<(IssuedCerts, String, CallerIdentity)> {
        let now = self.clock.now();
        // The challenge is spent first, even by a request that does not parse: whatever
        // fails below, this attempt is over. A malformed request is told so, not that its
        // challenge is missing.
        let signed = iam::parse_signed_request(&req.sts_identity_request);
        let redeemed = self.iam.challenges.redeem(
            challenge,
            signed.as_ref().ok().and_then(|r| r.challenge()),
            now,
        );
        let signed = signed.map_err(iam_error)?;
        redeemed.map_err(iam_error)?;
        if req.token.is_empty() {
            return Err(AuthError::InvalidArgument(
                "a join token name is required; pass the iam token's name (--token=iam-token)"
                    .into(),
            ));
        }
        let not_found = || {
            AuthError::AccessDenied(format!(
                "the join token {:?} does not exist; create it with tctl create -f iam-token.yaml (tctl tokens ls shows the tokens)",
                req.token
            ))
        };
        if req.token.len() > MAX_TOKEN_NAME {
            return Err(not_found());
        }
        let subject = Self::subject_key(&req.public_key)?;
        let (token, _) = self
            .state
            .get::<ProvisionToken>(&state::token_key(&req.token))
            .await?
            .ok_or_else(not_found)?;
        // A token-method record holds no name (it is stored hashed); finding it under the
        // hash of the presented name is enough for check_token to name the wrong method.
        if token.spec.join_method == JoinMethod::Iam && token.metadata.name != req.token {
            return Err(not_found());
        }
        let bot =
            iam::check_token(&token, now).map_err(|e| AuthError::AccessDenied(e.to_string()))?;
        let user_name = bot_user_name(&bot);
        known.user = Some(user_name.clone());

        let verified =
            iam::check_signed_request(&signed, challenge, &self.iam.allow).map_err(iam_error)?;

        let missing_bot = || {
            AuthError::AccessDenied(format!(
                "the join token names bot {bot:?}, which does not exist (deleted?); create it with tctl bots add {bot} --token={} --roles=...",
                req.token
            ))
        };
        let (user, _) = self
            .state
            .get::<User>(&state::user_key(&user_name))
            .await?
            .ok_or_else(missing_bot)?;
        if user.bot_name() != Some(bot.as_str()) {
            return Err(missing_bot());
        }
        if let Some(lock) = self
            .lock_for(&user_name, &user.spec.roles, now, now)
            .await?
        {
            return Err(AuthError::AccessDenied(lock_message(&user_name, &lock)));
        }

        let caller = self
            .iam
            .sts
            .get_caller_identity(&verified)
            .await
            .map_err(iam_error)?;
        known.caller = Some(caller.clone());
        let rule = iam::match_rules(&token, &caller).map_err(iam_error)?;
        tracing::debug!(token = %req.token, rule, arn = %caller.arn, "iam allow rule matched");

        // Not renewable, no generation: every renewal is a fresh join.
        let (certs, _) = self
            .issue_bot_certs(&subject, &user, None, req.ttl, self.clock.now())
            .await?;
        Ok((certs, user_name, caller))
    }
}
