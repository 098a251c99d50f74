//! Bots: creating one (its role, its user and a join token in one transaction), reading
//! and listing them, deleting one (revoking every certificate it holds) and locking one.

use std::collections::BTreeMap;
use std::time::Duration;

use machine_id_store::{Op, StoreError};
use machine_id_types::{
    BOT_LABEL, Bot, GENERATION_LABEL, ImpersonateConditions, JoinMethod, Lock, LockSpec,
    LockTarget, Metadata, ProvisionToken, Role, RoleConditions, RoleSpec, Rule, User, UserSpec,
    bot_role_name, bot_user_name, event_types,
};
use serde_json::json;
use time::OffsetDateTime;

use super::{Caller, Core, add, dedup, not_found, rfc3339, token_ref};
use crate::error::{AuthError, Result};
use crate::rbac::{Verb, kind};
use crate::state;

/// A CreateBot request. No `Debug`: a named existing token may be a secret.
#[derive(Clone)]
pub(crate) struct CreateBot {
    /// The bot's name (surrounding white space is trimmed).
    pub name: String,
    /// The roles the bot may impersonate.
    pub roles: Vec<String>,
    /// The bot user's `logins` trait.
    pub logins: Vec<String>,
    /// An existing join token for the bot; `None` mints a fresh single-use one.
    pub token_name: Option<String>,
    /// The fresh token's lifetime; `None` for the configured default.
    pub token_ttl: Option<Duration>,
}

/// A created bot and how it joins. No `Debug`: `token_name` is the join secret.
#[derive(Clone)]
pub(crate) struct CreatedBot {
    /// The bot.
    pub bot: Bot,
    /// The join token's name: for a `token`-method token its secret, shown this once.
    pub token_name: String,
    /// When the join token expires, if ever.
    pub token_expires: Option<OffsetDateTime>,
    /// The join token's method.
    pub join_method: JoinMethod,
}

/// A LockBot request.
#[derive(Debug, Clone)]
pub(crate) struct LockBot {
    /// The bot to lock.
    pub name: String,
    /// Why; `None` says who locked it.
    pub message: Option<String>,
    /// How long the lock holds; `None` for until it is removed.
    pub ttl: Option<Duration>,
}

/// The role of bot `name`, impersonating `roles` and reading cert authorities.
fn bot_role(name: &str, roles: &[String]) -> Role {
    let mut metadata = Metadata::named(bot_role_name(name));
    metadata.description = Some(format!("Role of bot {name}"));
    metadata.labels.insert(BOT_LABEL.into(), name.into());
    Role {
        metadata,
        spec: RoleSpec {
            allow: RoleConditions {
                rules: vec![Rule::new(&[kind::CERT_AUTHORITY], &["read"])],
                impersonate: Some(ImpersonateConditions {
                    roles: roles.to_vec(),
                    users: vec![],
                }),
                ..RoleConditions::default()
            },
            ..RoleSpec::default()
        },
    }
}

/// The user of bot `name`: roles `[bot-<name>]`, labels bot and generation 0, traits logins.
fn bot_user(name: &str, logins: &[String]) -> User {
    let mut metadata = Metadata::named(bot_user_name(name));
    metadata.labels.insert(BOT_LABEL.into(), name.into());
    metadata.labels.insert(GENERATION_LABEL.into(), "0".into());
    User {
        metadata,
        spec: UserSpec {
            roles: vec![bot_role_name(name)],
            traits: BTreeMap::from([("logins".to_string(), logins.to_vec())]),
            last_renewal: None,
        },
    }
}

impl Core {
    /// CreateBot: checks the roles first, then creates the bot's role, user and (unless an
    /// existing token is named) a fresh single-use token in one transaction.
    pub async fn create_bot(&self, caller: &Caller, req: CreateBot) -> Result<CreatedBot> {
        self.authorize(caller, "CreateBot", kind::BOT, Verb::Create)
            .await?;
        let name = req.name.trim().to_string();
        if name.is_empty() {
            return Err(AuthError::InvalidArgument(
                "a bot name is required (tctl bots add NAME --roles=...)".into(),
            ));
        }
        state::check_key_name("bot", &name)?;
        let roles = dedup(&req.roles);
        // Every role must exist before anything is written.
        for r in &roles {
            state::check_key_name("role", r)
                .map_err(|_| AuthError::InvalidArgument(format!("invalid role name {r:?}")))?;
            if r.starts_with('@') || self.state.backend.get(&state::role_key(r)).await?.is_none() {
                let known: Vec<String> = self
                    .state
                    .list::<Role>(state::ROLES)
                    .await?
                    .into_iter()
                    .map(|(r, _)| r.metadata.name)
                    .filter(|n| !n.starts_with("bot-"))
                    .collect();
                return Err(AuthError::NotFound(format!(
                    "role {r:?} does not exist, so bot {name:?} was not created; create the role first (tctl create -f role.yaml) or use one of: {}",
                    known.join(", ")
                )));
            }
        }
        self.wait_out_deletion_locks(&bot_user_name(&name)).await?;
        let role = bot_role(&name, &roles);
        let user = bot_user(&name, &req.logins);
        role.validate()
            .map_err(|e| AuthError::InvalidArgument(e.to_string()))?;
        user.validate()
            .map_err(|e| AuthError::InvalidArgument(e.to_string()))?;
        let now = self.clock.now();
        let role_key = state::role_key(&role.metadata.name);
        let user_key = state::user_key(&user.metadata.name);
        let mut ops = vec![
            Op::Create {
                key: role_key.clone(),
                value: state::encode(&role)?,
            },
            Op::Create {
                key: user_key.clone(),
                value: state::encode(&user)?,
            },
        ];
        let (token_name, token_expires, join_method) = if let Some(tname) = &req.token_name {
            let tname = tname.as_str();
            state::check_key_name("token", tname)?;
            let (tok, _) = self
                .state
                .get::<ProvisionToken>(&state::token_key(tname))
                .await?
                .ok_or_else(|| {
                    AuthError::NotFound(format!(
                        "token {tname:?} not found, so bot {name:?} was not created; create it first (tctl create -f token.yaml)"
                    ))
                })?;
            if !tok.allows_bot() {
                return Err(AuthError::InvalidArgument(format!(
                    "token {tname:?} does not include role Bot; set spec.roles: [Bot] in the token"
                )));
            }
            if tok.spec.bot_name.as_deref() != Some(name.as_str()) {
                return Err(AuthError::InvalidArgument(format!(
                    "token {tname:?} is for bot {:?}, not {name:?}; set spec.bot_name: {name} in the token",
                    tok.spec.bot_name.as_deref().unwrap_or("")
                )));
            }
            if tok.metadata.is_expired(now) {
                return Err(AuthError::InvalidArgument(format!(
                    "token {tname:?} expired at {}; create a new one",
                    tok.metadata.expires.map(rfc3339).unwrap_or_default()
                )));
            }
            (
                tname.to_string(),
                tok.metadata.expires,
                tok.spec.join_method,
            )
        } else {
            let secret = machine_id_join::token::generate();
            let ttl = req.token_ttl.unwrap_or(self.limits.default_token_ttl);
            self.check_token_ttl(Some(ttl), "token_ttl")?;
            let expires = add(now, ttl);
            let token = ProvisionToken::bot_join(secret.expose(), &name, expires);
            // The secret is answered once, below, and never stored.
            ops.push(Op::Create {
                key: state::token_key(secret.expose()),
                value: state::encode(&state::token_record(&token))?,
            });
            (
                secret.expose().to_string(),
                Some(expires),
                JoinMethod::Token,
            )
        };
        match self.state.backend.atomic_write(ops).await {
            Ok(_) => {}
            Err(StoreError::AlreadyExists { key }) if key == role_key || key == user_key => {
                return Err(AuthError::AlreadyExists(format!(
                    "bot {name:?} already exists (its user or role bot-{name} exists); remove it first with tctl bots rm {name}"
                )));
            }
            Err(StoreError::AlreadyExists { .. }) => {
                return Err(AuthError::Retryable("token collision; retry".into()));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(user = %caller.identity.username, bot = %name, roles = %roles.join(","), join_method = %join_method, "bot created");
        self.audit(
            event_types::BOT_CREATE,
            Some(&caller.identity.username),
            true,
            format!("bot {name} created with roles [{}]", roles.join(", ")),
            json!({ "bot": name, "roles": roles, "join_method": join_method.as_str(), "token": token_ref(&token_name) }),
        )
        .await;
        Ok(CreatedBot {
            bot: Bot {
                name: name.clone(),
                user_name: bot_user_name(&name),
                roles,
                locked: false,
            },
            token_name,
            token_expires,
            join_method,
        })
    }

    /// The bot view of a bot user.
    async fn bot_of(
        &self,
        user: &User,
        locks: &[Lock],
        now: OffsetDateTime,
    ) -> Result<Option<Bot>> {
        let Some(name) = user.bot_name() else {
            return Ok(None);
        };
        let roles = match self
            .state
            .get::<Role>(&state::role_key(&bot_role_name(name)))
            .await?
        {
            Some((r, _)) => r
                .spec
                .allow
                .impersonate
                .map(|i| i.roles)
                .unwrap_or_default(),
            None => vec![],
        };
        Ok(Some(Bot {
            name: name.to_string(),
            user_name: user.metadata.name.clone(),
            roles,
            locked: locks
                .iter()
                .any(|l| l.applies_to(&user.metadata.name, &user.spec.roles, now, now)),
        }))
    }

    /// GetBot.
    pub async fn get_bot(&self, caller: &Caller, name: &str) -> Result<Bot> {
        self.authorize(caller, "GetBot", kind::BOT, Verb::Read)
            .await?;
        state::check_key_name("bot", name)?;
        let locks: Vec<Lock> = self
            .state
            .list::<Lock>(state::LOCKS)
            .await?
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        let user = self
            .state
            .get::<User>(&state::user_key(&bot_user_name(name)))
            .await?
            .map(|(u, _)| u);
        match user {
            Some(u) if u.bot_name() == Some(name) => self
                .bot_of(&u, &locks, self.clock.now())
                .await?
                .ok_or_else(|| not_found("bot", name, "tctl bots ls")),
            _ => Err(not_found("bot", name, "tctl bots ls")),
        }
    }

    /// ListBots.
    pub async fn list_bots(&self, caller: &Caller) -> Result<Vec<Bot>> {
        self.authorize(caller, "ListBots", kind::BOT, Verb::List)
            .await?;
        let locks: Vec<Lock> = self
            .state
            .list::<Lock>(state::LOCKS)
            .await?
            .into_iter()
            .map(|(l, _)| l)
            .collect();
        let now = self.clock.now();
        let mut out = Vec::new();
        for (u, _) in self.state.list::<User>(state::USERS).await? {
            if let Some(b) = self.bot_of(&u, &locks, now).await? {
                out.push(b);
            }
        }
        Ok(out)
    }

    /// A bot created again under a deleted bot's name must not fall under the lock that
    /// revoked the old bot's certificates: those locks hold certificates issued before the
    /// second the bot was deleted ended, so creation waits out that second (at most one).
    async fn wait_out_deletion_locks(&self, user: &str) -> Result<()> {
        let now = self.clock.now();
        let until = self
            .state
            .list::<Lock>(state::LOCKS)
            .await?
            .into_iter()
            .filter(|(l, _)| l.spec.target.user.as_deref() == Some(user))
            .filter_map(|(l, _)| l.spec.issued_before)
            .filter(|t| *t > now)
            .max();
        if let Some(t) = until {
            let wait = Duration::try_from(t - now)
                .unwrap_or_default()
                .min(Duration::from_secs(1));
            tracing::debug!(
                user,
                ?wait,
                "waiting out the second a bot of this name was deleted in"
            );
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// DeleteBot: the bot's user, role and `token`-method tokens, and a lock on every
    /// certificate issued to the bot so far (its user until its longest-lived certificate has
    /// expired, for certificates issued up to now), in one transaction. Other locks on the
    /// bot's user are kept (they are a record of an incident; remove them with DeleteLock).
    pub async fn delete_bot(&self, caller: &Caller, name: &str) -> Result<()> {
        self.authorize(caller, "DeleteBot", kind::BOT, Verb::Delete)
            .await?;
        state::check_key_name("bot", name)?;
        let user_name = bot_user_name(name);
        let user_key = state::user_key(&user_name);
        let (user, user_rev) = match self.state.get::<User>(&user_key).await? {
            Some((u, r)) if u.bot_name() == Some(name) => (u, r),
            _ => return Err(not_found("bot", name, "tctl bots ls")),
        };
        let now = self.clock.now();
        // Bot names are at most 249 characters; lock names 253.
        let short: String = name.chars().take(200).collect();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let lock_name = format!("bot-deleted-{short}-{}", &id[..8]);
        // Certificates carry whole seconds: everything issued up to now was issued before the
        // next whole second. None outlives the longest renewable TTL (outputs never outlive
        // the bot's own certificate).
        let issued_before = now.replace_nanosecond(0).unwrap_or(now) + time::Duration::SECOND;
        let lock = Lock {
            metadata: Metadata {
                expires: Some(add(
                    now,
                    self.limits.max_renewable_ttl + Duration::from_secs(120),
                )),
                ..Metadata::named(&lock_name)
            },
            spec: LockSpec {
                target: LockTarget {
                    user: Some(user_name.clone()),
                    role: None,
                },
                message: format!(
                    "bot {name:?} was deleted by {}: its certificates issued until then are revoked",
                    caller.identity.username
                ),
                created: Some(now),
                issued_before: Some(issued_before),
            },
        };
        let mut ops = vec![
            Op::CompareAndDelete {
                key: user_key,
                revision: user_rev,
            },
            Op::Create {
                key: state::lock_key(&lock_name),
                value: state::encode(&lock)?,
            },
        ];
        let role_key = state::role_key(&bot_role_name(name));
        if let Some((role, rev)) = self.state.get::<Role>(&role_key).await?
            && role.metadata.labels.get(BOT_LABEL).map(String::as_str) == Some(name)
        {
            ops.push(Op::CompareAndDelete {
                key: role_key,
                revision: rev,
            });
        }
        let mut tokens = 0;
        for item in self.state.backend.range(state::TOKENS).await? {
            let t: ProvisionToken = state::decode(&item.key, &item.value)?;
            if t.spec.join_method == JoinMethod::Token && t.spec.bot_name.as_deref() == Some(name) {
                tokens += 1;
                ops.push(Op::CompareAndDelete {
                    key: item.key,
                    revision: item.revision,
                });
            }
        }
        match self.state.backend.atomic_write(ops).await {
            Ok(_) => {}
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => {
                return Err(AuthError::Retryable(format!(
                    "bot {name:?} changed while it was being deleted (a join or renewal?); retry"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(user = %caller.identity.username, bot = %name, tokens, "bot deleted");
        self.audit(
            event_types::BOT_DELETE,
            Some(&caller.identity.username),
            true,
            format!("bot {name} deleted"),
            json!({ "bot": name, "user": user.metadata.name, "tokens_deleted": tokens, "lock": lock_name }),
        )
        .await;
        Ok(())
    }

    /// LockBot: locks the bot's user.
    pub async fn lock_bot(&self, caller: &Caller, req: LockBot) -> Result<Lock> {
        self.authorize(caller, "LockBot", kind::LOCK, Verb::Create)
            .await?;
        let name = req.name.as_str();
        state::check_key_name("bot", name)?;
        let user_name = bot_user_name(name);
        match self.state.get::<User>(&state::user_key(&user_name)).await? {
            Some((u, _)) if u.bot_name() == Some(name) => {}
            _ => return Err(not_found("bot", name, "tctl bots ls")),
        }
        let now = self.clock.now();
        let lock_name = uuid::Uuid::new_v4().to_string();
        let lock = Lock {
            metadata: Metadata {
                expires: req.ttl.map(|ttl| add(now, ttl)),
                ..Metadata::named(&lock_name)
            },
            spec: LockSpec {
                target: LockTarget {
                    user: Some(user_name.clone()),
                    role: None,
                },
                message: req
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("locked by {}", caller.identity.username)),
                created: Some(now),
                issued_before: None,
            },
        };
        self.state
            .create(&state::lock_key(&lock_name), &lock, || {
                AuthError::Retryable("lock id collision; retry".into())
            })
            .await?;
        tracing::info!(user = %caller.identity.username, bot = %name, lock = %lock_name, "bot locked");
        self.audit(
            event_types::LOCK_CREATE,
            Some(&caller.identity.username),
            true,
            format!("bot {name} locked: {}", lock.spec.message),
            json!({ "kind": kind::LOCK, "name": lock_name, "target": lock.target_text() }),
        )
        .await;
        Ok(lock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_role_and_user_follow_the_facts() {
        let r = bot_role("robot", &["access".into()]);
        assert_eq!(r.metadata.name, "bot-robot");
        assert!(r.validate().is_ok());
        assert_eq!(
            r.spec.allow.impersonate.as_ref().map(|i| i.roles.clone()),
            Some(vec!["access".to_string()])
        );
        assert!(crate::rbac::allowed(
            false,
            std::slice::from_ref(&r),
            kind::CERT_AUTHORITY,
            Verb::Read
        ));
        assert!(!crate::rbac::allowed(
            false,
            std::slice::from_ref(&r),
            kind::TOKEN,
            Verb::List
        ));
        let u = bot_user("robot", &["root".into()]);
        assert_eq!(u.metadata.name, "bot-robot");
        assert_eq!(u.spec.roles, vec!["bot-robot".to_string()]);
        assert_eq!(u.generation(), 0);
        assert_eq!(u.bot_name(), Some("robot"));
        assert_eq!(u.logins(), ["root".to_string()]);
        assert!(u.validate().is_ok());
    }
}
