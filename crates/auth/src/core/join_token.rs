//! The `token` join method, server half: a single-use bot token is exchanged for the bot's
//! first renewable identity (generation 1). The token is consumed and the bot's generation
//! counter reset in one compare-and-swap transaction, so exactly one of any number of
//! concurrent joins with one token succeeds.

use std::time::Duration;

use machine_id_join::JoinError;
use machine_id_store::{Op, StoreError};
use machine_id_types::{JoinMethod, ProvisionToken, User, bot_user_name, event_types};
use serde_json::json;
use time::OffsetDateTime;

use super::{Core, IssuedCerts, lock_message, token_ref};
use crate::error::{AuthError, Result};
use crate::state;

/// How many times a join retries a lost compare-and-swap on the bot's user.
const JOIN_CAS_ATTEMPTS: usize = 5;

/// A RegisterUsingToken request. Its `Debug` shows the token only as its hash prefix.
#[derive(Clone)]
pub(crate) struct TokenJoinRequest {
    /// The join token's secret, as `tctl bots add` printed it.
    pub token: String,
    /// The DER SubjectPublicKeyInfo of the key to certify.
    pub public_key: Vec<u8>,
    /// The certificates' requested lifetime; `None` for the default.
    pub ttl: Option<Duration>,
}

impl std::fmt::Debug for TokenJoinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenJoinRequest")
            .field("token", &token_ref(&self.token))
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// RegisterUsingToken: exchanges a single-use bot token for the bot's first renewable
    /// identity (generation 1).
    pub async fn register_using_token(
        &self,
        req: TokenJoinRequest,
        remote: Option<std::net::SocketAddr>,
    ) -> Result<IssuedCerts> {
        let token_ref = token_ref(&req.token);
        let remote_ip = remote.map(|a| a.ip());
        let remote = remote.map(|a| a.to_string()).unwrap_or_default();
        // The `bot.join` event commits with the token's consumption (join_with_token).
        match self.join_with_token(&req, &token_ref, &remote).await {
            Ok((certs, user)) => {
                tracing::info!(user = %user, token = %token_ref, remote = %remote, "bot joined");
                Ok(certs)
            }
            Err((e, user)) => {
                tracing::info!(token = %token_ref, remote = %remote, error = %e, "join refused");
                self.audit_unauthenticated(
                    remote_ip,
                    event_types::JOIN_FAILED,
                    user.as_deref(),
                    e.to_string(),
                    json!({ "method": "token", "token": token_ref, "remote_addr": remote }),
                )
                .await;
                Err(e)
            }
        }
    }

    async fn join_with_token(
        &self,
        req: &TokenJoinRequest,
        token_ref: &str,
        remote: &str,
    ) -> std::result::Result<(IssuedCerts, String), (AuthError, Option<String>)> {
        let no_user = |e: AuthError| (e, None);
        if req.token.is_empty() {
            return Err(no_user(AuthError::InvalidArgument(
                "a join token is required; pass the one tctl bots add printed (--token)".into(),
            )));
        }
        if req.token.len() > 1024 {
            return Err(no_user(AuthError::AccessDenied(
                JoinError::TokenNotFound.to_string(),
            )));
        }
        let subject = Self::subject_key(&req.public_key).map_err(no_user)?;
        let token_key = state::token_key(&req.token);
        let now = self.clock.now();
        let (token, mut token_rev) = self
            .state
            .get::<ProvisionToken>(&token_key)
            .await
            .map_err(no_user)?
            .ok_or_else(|| {
                no_user(AuthError::AccessDenied(
                    JoinError::TokenNotFound.to_string(),
                ))
            })?;
        let bot = self
            .verify_token(&token_key, token, &req.token, now)
            .map_err(no_user)?;
        let user_name = bot_user_name(&bot);
        let with_user = |e: AuthError| (e, Some(user_name.clone()));
        let user_key = state::user_key(&user_name);
        let missing_bot = || {
            AuthError::AccessDenied(format!(
                "the join token names bot {bot:?}, which does not exist (deleted?); create it with tctl bots add {bot} --roles=..."
            ))
        };
        let (mut user, mut user_rev) = self
            .state
            .get::<User>(&user_key)
            .await
            .map_err(with_user)?
            .ok_or_else(|| with_user(missing_bot()))?;
        if user.bot_name() != Some(bot.as_str()) {
            return Err(with_user(missing_bot()));
        }
        if let Some(lock) = self
            .lock_for(&user_name, &user.spec.roles, now, now)
            .await
            .map_err(with_user)?
        {
            return Err(with_user(AuthError::AccessDenied(lock_message(
                &user_name, &lock,
            ))));
        }
        // Consume the token, reset the generation counter and write the `bot.join` event in
        // one transaction: exactly one of any number of concurrent joins with one token
        // commits, and it is in the audit log as soon as it has.
        let event = self.audit_record(
            event_types::BOT_JOIN,
            Some(&user_name),
            true,
            format!("{user_name} joined with a token"),
            json!({ "method": "token", "token": token_ref, "generation": 1, "remote_addr": remote }),
        );
        let mut committed = false;
        for _ in 0..JOIN_CAS_ATTEMPTS {
            user.set_generation(1);
            user.spec.last_renewal = None;
            let ops = vec![
                Op::CompareAndDelete {
                    key: token_key.clone(),
                    revision: token_rev,
                },
                Op::CompareAndSwap {
                    key: user_key.clone(),
                    revision: user_rev,
                    value: state::encode(&user).map_err(with_user)?,
                },
            ];
            let events = event.iter().cloned().collect();
            match self.state.backend.write_with_events(ops, events).await {
                Ok(_) => {
                    committed = true;
                    break;
                }
                Err(StoreError::NotFound { key }) if key == token_key => {
                    return Err(with_user(AuthError::AccessDenied(
                        JoinError::TokenNotFound.to_string(),
                    )));
                }
                // The record changed without being consumed (the startup migration rewrote
                // it hashed, or an admin updated it): check it again at its new revision. A
                // consumed token is gone, so this never admits a second join.
                Err(StoreError::Conflict { key }) if key == token_key => {
                    let (t, r) = self
                        .state
                        .get::<ProvisionToken>(&token_key)
                        .await
                        .map_err(with_user)?
                        .ok_or_else(|| {
                            with_user(AuthError::AccessDenied(
                                JoinError::TokenNotFound.to_string(),
                            ))
                        })?;
                    if self
                        .verify_token(&token_key, t, &req.token, now)
                        .map_err(with_user)?
                        != bot
                    {
                        return Err(with_user(AuthError::AccessDenied(
                            JoinError::TokenNotFound.to_string(),
                        )));
                    }
                    token_rev = r;
                }
                Err(StoreError::Conflict { key }) if key == user_key => {
                    let (u, r) = self
                        .state
                        .get::<User>(&user_key)
                        .await
                        .map_err(with_user)?
                        .ok_or_else(|| with_user(missing_bot()))?;
                    user = u;
                    user_rev = r;
                }
                Err(StoreError::NotFound { key }) if key == user_key => {
                    return Err(with_user(missing_bot()));
                }
                Err(e) => return Err(with_user(e.into())),
            }
        }
        if !committed {
            return Err(with_user(AuthError::Retryable(
                "the bot's user kept changing concurrently; retry the join".into(),
            )));
        }
        let (certs, _) = self
            .issue_bot_certs(&subject, &user, Some(1), req.ttl, now)
            .await
            .map_err(with_user)?;
        Ok((certs, user_name))
    }

    /// Checks the record stored at `key` (the hash of `presented`) against the presented
    /// secret: expiry, method, role Bot and bot name (`machine_id_join::token::verify`). A
    /// hashed record holds no secret to compare: finding it under the hash of `presented` is
    /// the proof, so the check runs on the record with the presented secret as its name.
    fn verify_token(
        &self,
        key: &str,
        mut token: ProvisionToken,
        presented: &str,
        now: OffsetDateTime,
    ) -> Result<String> {
        if token.spec.join_method == JoinMethod::Token && !state::holds_secret(key, &token) {
            token.metadata.name = presented.to_string();
        }
        machine_id_join::token::verify(&token, presented, now)
            .map_err(|e| AuthError::AccessDenied(e.to_string()))
    }
}
