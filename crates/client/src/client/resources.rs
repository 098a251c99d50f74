//! The resource calls: get, list, upsert and delete of roles, join tokens, users, nodes and
//! locks, typed per kind and generic over [`ResourceKind`], and finding a node by host name.
//!
//! The typed methods are the wire calls; the generic ones dispatch on the kind, so a program
//! that handles any resource (`tctl get`, `tctl create`, `tctl rm`) needs no match of its own.

use super::{Client, convert_all};
use crate::error::{ClientError, Result};
use crate::failover::Retry;
use machine_id_proto::v1;
use machine_id_types::{Lock, Node, ProvisionToken, Resource, ResourceKind, Role, User};

/// Why users cannot be written through the generic calls.
const USERS_ARE_SERVER_MANAGED: &str =
    "users are managed by the auth server; a bot's user comes and goes with the bot";

/// A replacing upsert may be sent again after any transport failure; a create-only one only
/// when the server cannot have acted (a retry of one that went through would be refused as
/// existing).
fn upsert_retry(create_only: bool) -> Retry {
    if create_only {
        Retry::NotSentOnly
    } else {
        Retry::Always
    }
}

fn by_name(name: &str) -> v1::GetByNameRequest {
    v1::GetByNameRequest {
        name: name.to_string(),
    }
}

impl Client {
    // ---- any kind ----

    /// One resource of `kind`, by its name (a node's or a lock's id). The server has no call
    /// for one lock, so a lock is found in the list; a missing one is
    /// [`ClientError::NotFound`] like any other.
    pub async fn get_resource(&self, kind: ResourceKind, name: &str) -> Result<Resource> {
        Ok(match kind {
            ResourceKind::Role => Resource::Role(self.get_role(name).await?),
            ResourceKind::Token => Resource::Token(self.get_token(name).await?),
            ResourceKind::User => Resource::User(self.get_user(name).await?),
            ResourceKind::Node => Resource::Node(self.get_node(name).await?),
            ResourceKind::Lock => Resource::Lock(
                self.list_locks()
                    .await?
                    .into_iter()
                    .find(|l| l.metadata.name == name)
                    .ok_or_else(|| ClientError::NotFound(format!("lock {name:?} not found")))?,
            ),
        })
    }

    /// Every resource of `kind`.
    pub async fn list_resources(&self, kind: ResourceKind) -> Result<Vec<Resource>> {
        fn wrap<T>(items: Vec<T>, f: fn(T) -> Resource) -> Vec<Resource> {
            items.into_iter().map(f).collect()
        }
        Ok(match kind {
            ResourceKind::Role => wrap(self.list_roles().await?, Resource::Role),
            ResourceKind::Token => wrap(self.list_tokens().await?, Resource::Token),
            ResourceKind::User => wrap(self.list_users().await?, Resource::User),
            ResourceKind::Node => wrap(self.list_nodes().await?, Resource::Node),
            ResourceKind::Lock => wrap(self.list_locks().await?, Resource::Lock),
        })
    }

    /// Whether a resource of `kind` named `name` exists (see [`Client::get_resource`]).
    pub async fn resource_exists(&self, kind: ResourceKind, name: &str) -> Result<bool> {
        match self.get_resource(kind, name).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Creates or (unless `create_only`) replaces a resource, returning it as stored. Users
    /// are the auth server's to write: a user is refused with [`ClientError::InvalidArgument`]
    /// before anything is sent.
    pub async fn upsert_resource(&self, resource: Resource, create_only: bool) -> Result<Resource> {
        Ok(match resource {
            Resource::Role(x) => Resource::Role(self.upsert_role(x, create_only).await?),
            Resource::Token(x) => Resource::Token(self.upsert_token(x, create_only).await?),
            Resource::Node(x) => Resource::Node(self.upsert_node(x, create_only).await?),
            Resource::Lock(x) => Resource::Lock(self.upsert_lock(x, create_only).await?),
            Resource::User(_) => {
                return Err(ClientError::InvalidArgument(
                    USERS_ARE_SERVER_MANAGED.to_string(),
                ));
            }
        })
    }

    /// Deletes the resource of `kind` named `name` (a node's or a lock's id). Users are the
    /// auth server's to delete: refused with [`ClientError::InvalidArgument`] before anything
    /// is sent.
    pub async fn delete_resource(&self, kind: ResourceKind, name: &str) -> Result<()> {
        match kind {
            ResourceKind::Role => self.delete_role(name).await,
            ResourceKind::Token => self.delete_token(name).await,
            ResourceKind::Node => self.delete_node(name).await,
            ResourceKind::Lock => self.delete_lock(name).await,
            ResourceKind::User => Err(ClientError::InvalidArgument(
                USERS_ARE_SERVER_MANAGED.to_string(),
            )),
        }
    }

    // ---- roles ----

    /// One role.
    pub async fn get_role(&self, name: &str) -> Result<Role> {
        let r = self
            .read("GetRole", |mut c| async move {
                c.auth.get_role(by_name(name)).await
            })
            .await;
        Ok(r?.try_into()?)
    }

    /// Every role.
    pub async fn list_roles(&self) -> Result<Vec<Role>> {
        let r = self
            .read("ListRoles", |mut c| async move {
                c.auth.list_roles(v1::ListRequest {}).await
            })
            .await;
        convert_all(r?.roles)
    }

    /// Creates or (unless `create_only`) replaces a role.
    pub async fn upsert_role(&self, role: Role, create_only: bool) -> Result<Role> {
        let request = v1::UpsertRoleRequest {
            role: Some(role.into()),
            create_only,
        };
        let r = self
            .call(upsert_retry(create_only), "UpsertRole", |mut c| {
                let request = request.clone();
                async move { c.auth.upsert_role(request).await }
            })
            .await;
        Ok(r?.try_into()?)
    }

    /// Deletes a role.
    pub async fn delete_role(&self, name: &str) -> Result<()> {
        let r = self
            .write("DeleteRole", |mut c| async move {
                c.auth.delete_role(by_name(name)).await
            })
            .await;
        r.map(drop)
    }

    // ---- tokens ----

    /// One join token.
    pub async fn get_token(&self, name: &str) -> Result<ProvisionToken> {
        let r = self
            .read("GetToken", |mut c| async move {
                c.auth.get_token(by_name(name)).await
            })
            .await;
        Ok(r?.try_into()?)
    }

    /// Every join token.
    pub async fn list_tokens(&self) -> Result<Vec<ProvisionToken>> {
        let r = self
            .read("ListTokens", |mut c| async move {
                c.auth.list_tokens(v1::ListRequest {}).await
            })
            .await;
        convert_all(r?.tokens)
    }

    /// Creates or (unless `create_only`) replaces a join token.
    pub async fn upsert_token(
        &self,
        token: ProvisionToken,
        create_only: bool,
    ) -> Result<ProvisionToken> {
        let request = v1::UpsertTokenRequest {
            token: Some(token.into()),
            create_only,
        };
        let r = self
            .call(upsert_retry(create_only), "UpsertToken", |mut c| {
                let request = request.clone();
                async move { c.auth.upsert_token(request).await }
            })
            .await;
        Ok(r?.try_into()?)
    }

    /// Deletes a join token.
    pub async fn delete_token(&self, name: &str) -> Result<()> {
        let r = self
            .write("DeleteToken", |mut c| async move {
                c.auth.delete_token(by_name(name)).await
            })
            .await;
        r.map(drop)
    }

    // ---- users ----

    /// One user.
    pub async fn get_user(&self, name: &str) -> Result<User> {
        let r = self
            .read("GetUser", |mut c| async move {
                c.auth.get_user(by_name(name)).await
            })
            .await;
        Ok(r?.try_into()?)
    }

    /// Every user.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let r = self
            .read("ListUsers", |mut c| async move {
                c.auth.list_users(v1::ListRequest {}).await
            })
            .await;
        convert_all(r?.users)
    }

    // ---- nodes ----

    /// One node, by id.
    pub async fn get_node(&self, id: &str) -> Result<Node> {
        let r = self
            .read("GetNode", |mut c| async move {
                c.auth.get_node(by_name(id)).await
            })
            .await;
        Ok(r?.try_into()?)
    }

    /// A node by id or, when no node has that id, by host name when exactly one node has it.
    /// None is [`ClientError::NotFound`]; several are [`ClientError::InvalidArgument`], as
    /// the name does not say which one is meant.
    pub async fn find_node(&self, id_or_hostname: &str) -> Result<Node> {
        match self.get_node(id_or_hostname).await {
            Err(e) if e.is_not_found() => {}
            found => return found,
        }
        let mut matches: Vec<Node> = self
            .list_nodes()
            .await?
            .into_iter()
            .filter(|n| n.spec.hostname == id_or_hostname)
            .collect();
        match matches.len() {
            1 => Ok(matches.remove(0)),
            0 => Err(ClientError::NotFound(format!(
                "node {id_or_hostname:?} not found (by id or name)"
            ))),
            n => Err(ClientError::InvalidArgument(format!(
                "{n} nodes are named {id_or_hostname:?}; use the node's id (tctl get nodes --format=yaml shows it)"
            ))),
        }
    }

    /// Every node.
    pub async fn list_nodes(&self) -> Result<Vec<Node>> {
        let r = self
            .read("ListNodes", |mut c| async move {
                c.auth.list_nodes(v1::ListRequest {}).await
            })
            .await;
        convert_all(r?.nodes)
    }

    /// Creates or (unless `create_only`) replaces a node.
    pub async fn upsert_node(&self, node: Node, create_only: bool) -> Result<Node> {
        let request = v1::UpsertNodeRequest {
            node: Some(node.into()),
            create_only,
        };
        let r = self
            .call(upsert_retry(create_only), "UpsertNode", |mut c| {
                let request = request.clone();
                async move { c.auth.upsert_node(request).await }
            })
            .await;
        Ok(r?.try_into()?)
    }

    /// Deletes a node, by id.
    pub async fn delete_node(&self, id: &str) -> Result<()> {
        let r = self
            .write("DeleteNode", |mut c| async move {
                c.auth.delete_node(by_name(id)).await
            })
            .await;
        r.map(drop)
    }

    // ---- locks ----

    /// Every lock.
    pub async fn list_locks(&self) -> Result<Vec<Lock>> {
        let r = self
            .read("ListLocks", |mut c| async move {
                c.auth.list_locks(v1::ListRequest {}).await
            })
            .await;
        convert_all(r?.locks)
    }

    /// Creates or (unless `create_only`) replaces a lock.
    pub async fn upsert_lock(&self, lock: Lock, create_only: bool) -> Result<Lock> {
        let request = v1::UpsertLockRequest {
            lock: Some(lock.into()),
            create_only,
        };
        let r = self
            .call(upsert_retry(create_only), "UpsertLock", |mut c| {
                let request = request.clone();
                async move { c.auth.upsert_lock(request).await }
            })
            .await;
        Ok(r?.try_into()?)
    }

    /// Deletes a lock, by id.
    pub async fn delete_lock(&self, id: &str) -> Result<()> {
        let r = self
            .write("DeleteLock", |mut c| async move {
                c.auth.delete_lock(by_name(id)).await
            })
            .await;
        r.map(drop)
    }
}
