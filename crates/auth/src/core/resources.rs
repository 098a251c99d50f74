//! CRUD of the stored resource kinds: roles, tokens, users, nodes and locks, with the RBAC
//! check and audit event every write shares. Token secrets are never stored (see
//! [`state::token_record`]) nor returned.

use std::time::Duration;

use machine_id_join::token_hash;
use machine_id_store::StoreError;
use machine_id_types::{
    ADMIN_ROLE, ADMIN_USER, BOT_LABEL, JoinMethod, Lock, Node, ProvisionToken, Role, User,
    event_types,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use time::OffsetDateTime;

use super::{Caller, Core, not_found};
use crate::error::{AuthError, Result};
use crate::rbac::{self, Verb, kind};
use crate::state;

/// How a token is named in messages and events: IAM token names are not secret; the names of
/// `token`-method tokens are, so they are shown as `sha256:` and the hash prefix, the name
/// their stored record carries.
fn token_display(t: &ProvisionToken) -> String {
    match t.spec.join_method {
        JoinMethod::Token => state::token_display_name(&token_hash(&t.metadata.name)),
        _ => t.metadata.name.clone(),
    }
}

/// How long a token expiring at `expires` lives from `now`, or `None` for never.
fn token_lifetime(now: OffsetDateTime, expires: Option<OffsetDateTime>) -> Option<Duration> {
    expires.map(|e| Duration::try_from(e - now).unwrap_or(Duration::ZERO))
}

fn token_not_found() -> AuthError {
    AuthError::NotFound(
        "token not found: it does not exist, was already used, or was deleted; see tctl tokens ls"
            .into(),
    )
}

/// One stored kind with plain reads, as the shared read helpers need it.
struct Stored {
    /// Its RBAC resource, also its name in messages and key-name checks.
    resource: &'static str,
    /// Its store key of a name.
    key: fn(&str) -> String,
    /// The store prefix of all of them.
    prefix: &'static str,
    /// The command that shows the existing ones, for a not-found message.
    hint: &'static str,
}

const ROLES: Stored = Stored {
    resource: kind::ROLE,
    key: state::role_key,
    prefix: state::ROLES,
    hint: "tctl get roles",
};
const USERS: Stored = Stored {
    resource: kind::USER,
    key: state::user_key,
    prefix: state::USERS,
    hint: "tctl get users",
};
const NODES: Stored = Stored {
    resource: kind::NODE,
    key: state::node_key,
    prefix: state::NODES,
    hint: "tctl nodes ls",
};
const LOCKS: Stored = Stored {
    resource: kind::LOCK,
    key: state::lock_key,
    prefix: state::LOCKS,
    hint: "tctl locks ls",
};

impl Core {
    /// The stored `kind` named `name` (no RBAC check: the caller's method does it).
    async fn read<T: DeserializeOwned>(&self, kind: &Stored, name: &str) -> Result<T> {
        state::check_key_name(kind.resource, name)?;
        self.state
            .get::<T>(&(kind.key)(name))
            .await?
            .map(|(v, _)| v)
            .ok_or_else(|| not_found(kind.resource, name, kind.hint))
    }

    /// Every stored `kind`, by key, once `caller` may list them (`method` names the call).
    async fn list_all<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        method: &str,
        kind: &Stored,
    ) -> Result<Vec<T>> {
        self.authorize(caller, method, kind.resource, Verb::List)
            .await?;
        Ok(self
            .state
            .list::<T>(kind.prefix)
            .await?
            .into_iter()
            .map(|(v, _)| v)
            .collect())
    }

    /// Creates or overwrites the `kind` named `name` with `value` (see [`Self::upsert`]).
    async fn write<T: serde::Serialize>(
        &self,
        caller: &Caller,
        method: &str,
        kind: &Stored,
        name: &str,
        value: &T,
        create_only: bool,
    ) -> Result<()> {
        state::check_key_name(kind.resource, name)?;
        let key = (kind.key)(name);
        self.upsert(
            caller,
            method,
            kind.resource,
            &key,
            name,
            value,
            create_only,
        )
        .await
    }

    /// Deletes the `kind` named `name` (see [`Self::delete`]).
    async fn remove(&self, caller: &Caller, method: &str, kind: &Stored, name: &str) -> Result<()> {
        state::check_key_name(kind.resource, name)?;
        self.delete(
            caller,
            method,
            kind.resource,
            &(kind.key)(name),
            name,
            kind.hint,
        )
        .await
    }

    // ---------------------------------------------------------------- roles

    /// GetRole. Every caller may read the roles its own certificate holds (a bot reads its
    /// `bot-NAME` role to learn which roles it may impersonate); other roles need the rule.
    pub async fn get_role(&self, caller: &Caller, name: &str) -> Result<Role> {
        if !caller.identity.roles.iter().any(|r| r == name) {
            self.authorize(caller, "GetRole", kind::ROLE, Verb::Read)
                .await?;
        }
        self.read(&ROLES, name).await
    }

    /// ListRoles.
    pub async fn list_roles(&self, caller: &Caller) -> Result<Vec<Role>> {
        self.list_all(caller, "ListRoles", &ROLES).await
    }

    /// UpsertRole.
    pub async fn upsert_role(
        &self,
        caller: &Caller,
        role: Role,
        create_only: bool,
    ) -> Result<Role> {
        let name = role.metadata.name.clone();
        self.write(caller, "UpsertRole", &ROLES, &name, &role, create_only)
            .await?;
        Ok(role)
    }

    /// Creates or overwrites `value` at `key` with the RBAC and audit every kind shares.
    #[allow(clippy::too_many_arguments)] // one shared helper for five resource kinds
    async fn upsert<T: serde::Serialize>(
        &self,
        caller: &Caller,
        method: &str,
        resource: &str,
        key: &str,
        shown: &str,
        value: &T,
        create_only: bool,
    ) -> Result<()> {
        let exists = self.state.backend.get(key).await?.is_some();
        let verb = if exists && !create_only {
            Verb::Update
        } else {
            Verb::Create
        };
        self.authorize(caller, method, resource, verb).await?;
        let already = || {
            AuthError::AlreadyExists(format!(
                "{resource} {shown} already exists; use -f/--force to overwrite it"
            ))
        };
        if create_only {
            if exists {
                return Err(already());
            }
            self.state.create(key, value, already).await?;
        } else {
            self.state.put(key, value).await?;
        }
        tracing::info!(user = %caller.identity.username, kind = resource, name = %shown, "resource written");
        let event = if resource == kind::LOCK {
            event_types::LOCK_CREATE
        } else {
            event_types::RESOURCE_PUT
        };
        self.audit(
            event,
            Some(&caller.identity.username),
            true,
            format!(
                "{resource} {shown} {}",
                if exists { "updated" } else { "created" }
            ),
            json!({ "kind": resource, "name": shown }),
        )
        .await;
        Ok(())
    }

    /// Deletes `key` with the RBAC and audit every kind shares.
    async fn delete(
        &self,
        caller: &Caller,
        method: &str,
        resource: &str,
        key: &str,
        shown: &str,
        hint: &str,
    ) -> Result<()> {
        self.authorize(caller, method, resource, Verb::Delete)
            .await?;
        self.state
            .delete(key, || not_found(resource, shown, hint))
            .await?;
        tracing::info!(user = %caller.identity.username, kind = resource, name = %shown, "resource deleted");
        let event = if resource == kind::LOCK {
            event_types::LOCK_DELETE
        } else {
            event_types::RESOURCE_DELETE
        };
        self.audit(
            event,
            Some(&caller.identity.username),
            true,
            format!("{resource} {shown} deleted"),
            json!({ "kind": resource, "name": shown }),
        )
        .await;
        Ok(())
    }

    /// DeleteRole. Refused while a user holds the role or a bot may impersonate it.
    pub async fn delete_role(&self, caller: &Caller, name: &str) -> Result<()> {
        self.authorize(caller, "DeleteRole", kind::ROLE, Verb::Delete)
            .await?;
        state::check_key_name("role", name)?;
        let key = state::role_key(name);
        if self.state.backend.get(&key).await?.is_none() {
            return Err(not_found("role", name, "tctl get roles"));
        }
        for (u, _) in self.state.list::<User>(state::USERS).await? {
            if u.spec.roles.iter().any(|r| r == name) {
                let hint = match u.bot_name() {
                    Some(bot) => format!("delete the bot first (tctl bots rm {bot})"),
                    None => "remove the role from the user first".to_string(),
                };
                return Err(AuthError::FailedPrecondition(format!(
                    "role {name:?} is in use by user {:?}; {hint}",
                    u.metadata.name
                )));
            }
        }
        for (r, _) in self.state.list::<Role>(state::ROLES).await? {
            let Some(bot) = r.metadata.labels.get(BOT_LABEL) else {
                continue;
            };
            if r.spec
                .allow
                .impersonate
                .as_ref()
                .is_some_and(|i| i.roles.iter().any(|x| x == name))
            {
                return Err(AuthError::FailedPrecondition(format!(
                    "role {name:?} is in use by bot {bot:?}, which may impersonate it; delete the bot first (tctl bots rm {bot}) or add it again without this role"
                )));
            }
        }
        self.delete(
            caller,
            "DeleteRole",
            kind::ROLE,
            &key,
            name,
            "tctl get roles",
        )
        .await
    }

    // ---------------------------------------------------------------- tokens

    /// The stored token `name` refers to: the token named so (for a `token`-method token, the
    /// secret), else the secret token whose display name (`sha256:<hex prefix>`, as `tctl
    /// tokens ls` shows it) `name` is. Returns its key, its public view and its revision.
    async fn find_token(
        &self,
        name: &str,
    ) -> Result<Option<(String, ProvisionToken, machine_id_store::Revision)>> {
        state::check_key_name("token", name)?;
        let key = state::token_key(name);
        if let Some((t, rev)) = self.state.get::<ProvisionToken>(&key).await? {
            let public = state::public_token(&key, t);
            return Ok(Some((key, public, rev)));
        }
        if !name.starts_with(state::TOKEN_DISPLAY_PREFIX) {
            return Ok(None);
        }
        let mut found = Vec::new();
        for item in self.state.backend.range(state::TOKENS).await? {
            if !state::token_key_matches_display(&item.key, name) {
                continue;
            }
            let t: ProvisionToken = state::decode(&item.key, &item.value)?;
            if t.spec.join_method == JoinMethod::Token {
                found.push((
                    item.key.clone(),
                    state::public_token(&item.key, t),
                    item.revision,
                ));
            }
        }
        match found.len() {
            0 | 1 => Ok(found.pop()),
            n => Err(AuthError::InvalidArgument(format!(
                "{n} tokens start with {name:?}; give more hex characters of the hash"
            ))),
        }
    }

    /// GetToken: by name, or by the display name of a secret token. The secret of a
    /// `token`-method token is never returned: the store does not hold it.
    pub async fn get_token(&self, caller: &Caller, name: &str) -> Result<ProvisionToken> {
        self.authorize(caller, "GetToken", kind::TOKEN, Verb::Read)
            .await?;
        self.find_token(name)
            .await?
            .map(|(_, t, _)| t)
            .ok_or_else(token_not_found)
    }

    /// ListTokens: `token`-method tokens under their display names.
    pub async fn list_tokens(&self, caller: &Caller) -> Result<Vec<ProvisionToken>> {
        self.authorize(caller, "ListTokens", kind::TOKEN, Verb::List)
            .await?;
        let mut v = Vec::new();
        for item in self.state.backend.range(state::TOKENS).await? {
            let t: ProvisionToken = state::decode(&item.key, &item.value)?;
            v.push(state::public_token(&item.key, t));
        }
        v.sort_by(|a, b| {
            (a.metadata.expires, &a.metadata.name).cmp(&(b.metadata.expires, &b.metadata.name))
        });
        Ok(v)
    }

    /// UpsertToken. A `token`-method token is stored without its secret (see
    /// [`state::token_record`]) and may live at most the configured maximum; the token is
    /// returned as given, so its creator sees its secret this once.
    pub async fn upsert_token(
        &self,
        caller: &Caller,
        token: ProvisionToken,
        create_only: bool,
    ) -> Result<ProvisionToken> {
        state::check_key_name("token", &token.metadata.name)?;
        if token.spec.join_method == JoinMethod::Token {
            if token.metadata.name.starts_with(state::TOKEN_DISPLAY_PREFIX) {
                return Err(AuthError::InvalidArgument(format!(
                    "a token-method token's name is its secret, and names starting with {:?} are how stored tokens are shown (tctl get tokens), so it would be a secret everyone can read; choose another name, or use tctl tokens add",
                    state::TOKEN_DISPLAY_PREFIX
                )));
            }
            self.check_token_ttl(
                token_lifetime(self.clock.now(), token.metadata.expires),
                "metadata.expires",
            )?;
        }
        let key = state::token_key(&token.metadata.name);
        let shown = token_display(&token);
        let record = state::token_record(&token);
        self.upsert(
            caller,
            "UpsertToken",
            kind::TOKEN,
            &key,
            &shown,
            &record,
            create_only,
        )
        .await?;
        Ok(token)
    }

    /// DeleteToken: by name (the secret) or by the display name of a secret token.
    pub async fn delete_token(&self, caller: &Caller, name: &str) -> Result<()> {
        self.authorize(caller, "DeleteToken", kind::TOKEN, Verb::Delete)
            .await?;
        let (key, shown, rev) = match self.find_token(name).await? {
            Some((key, t, rev)) => (key, t.metadata.name, rev),
            None => return Err(token_not_found()),
        };
        match self.state.backend.compare_and_delete(&key, rev).await {
            Ok(()) => {}
            Err(StoreError::NotFound { .. }) => return Err(token_not_found()),
            Err(StoreError::Conflict { .. }) => {
                return Err(AuthError::Retryable(format!(
                    "token {shown} changed while it was being deleted; retry"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(user = %caller.identity.username, token = %shown, "token deleted");
        self.audit(
            event_types::RESOURCE_DELETE,
            Some(&caller.identity.username),
            true,
            format!("token {shown} deleted"),
            json!({ "kind": kind::TOKEN, "name": shown }),
        )
        .await;
        Ok(())
    }

    // ---------------------------------------------------------------- users

    /// GetUser.
    pub async fn get_user(&self, caller: &Caller, name: &str) -> Result<User> {
        self.authorize(caller, "GetUser", kind::USER, Verb::Read)
            .await?;
        self.read(&USERS, name).await
    }

    /// ListUsers.
    pub async fn list_users(&self, caller: &Caller) -> Result<Vec<User>> {
        self.list_all(caller, "ListUsers", &USERS).await
    }

    // ---------------------------------------------------------------- nodes

    /// GetNode.
    pub async fn get_node(&self, caller: &Caller, name: &str) -> Result<Node> {
        self.authorize(caller, "GetNode", kind::NODE, Verb::Read)
            .await?;
        self.read(&NODES, name).await
    }

    /// ListNodes: every node for the admin and for callers whose roles allow `node:list` by
    /// rule (`tctl nodes ls`); for every other authenticated caller (a bot's output
    /// certificate under `tsh ls`) only the nodes its roles reach by `node_labels`, which may
    /// be none. Never an access error: a caller learns of no node it may not reach.
    pub async fn list_nodes(&self, caller: &Caller) -> Result<Vec<Node>> {
        let is_admin = caller.identity.is_admin();
        let by_rule = rbac::allowed(is_admin, &caller.roles, kind::NODE, Verb::List);
        Ok(self
            .state
            .list::<Node>(NODES.prefix)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .filter(|n| by_rule || rbac::node_allowed(is_admin, &caller.roles, &n.metadata.labels))
            .collect())
    }

    /// UpsertNode.
    pub async fn upsert_node(
        &self,
        caller: &Caller,
        node: Node,
        create_only: bool,
    ) -> Result<Node> {
        let name = node.metadata.name.clone();
        self.write(caller, "UpsertNode", &NODES, &name, &node, create_only)
            .await?;
        Ok(node)
    }

    /// DeleteNode.
    pub async fn delete_node(&self, caller: &Caller, name: &str) -> Result<()> {
        self.remove(caller, "DeleteNode", &NODES, name).await
    }

    // ---------------------------------------------------------------- locks

    /// ListLocks.
    pub async fn list_locks(&self, caller: &Caller) -> Result<Vec<Lock>> {
        let mut v: Vec<Lock> = self.list_all(caller, "ListLocks", &LOCKS).await?;
        v.sort_by(|a, b| {
            (a.spec.created, &a.metadata.name).cmp(&(b.spec.created, &b.metadata.name))
        });
        Ok(v)
    }

    /// UpsertLock.
    pub async fn upsert_lock(
        &self,
        caller: &Caller,
        mut lock: Lock,
        create_only: bool,
    ) -> Result<Lock> {
        let name = lock.metadata.name.clone();
        state::check_key_name("lock", &name)?;
        let target = &lock.spec.target;
        if target.user.as_deref() == Some(ADMIN_USER) || target.role.as_deref() == Some(ADMIN_ROLE)
        {
            let msg = format!(
                "lock {name:?} targets the admin identity (user {ADMIN_USER:?}, role {ADMIN_ROLE:?}), which is refused: it would shut every administrator out, even from removing the lock; lock the bot, user or role that misbehaves instead"
            );
            self.audit_denied(&caller.identity.username, "UpsertLock", &msg)
                .await;
            return Err(AuthError::InvalidArgument(msg));
        }
        if lock.spec.created.is_none() {
            lock.spec.created = Some(self.clock.now());
        }
        self.write(caller, "UpsertLock", &LOCKS, &name, &lock, create_only)
            .await?;
        Ok(lock)
    }

    /// DeleteLock.
    pub async fn delete_lock(&self, caller: &Caller, name: &str) -> Result<()> {
        self.remove(caller, "DeleteLock", &LOCKS, name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use machine_id_types::Metadata;

    #[test]
    fn token_display_hides_secrets() {
        let t = ProvisionToken {
            metadata: Metadata::named("0123456789abcdef0123456789abcdef"),
            spec: machine_id_types::TokenSpec::default(),
        };
        assert!(!token_display(&t).contains("0123456789abcdef0123"));
    }
}
