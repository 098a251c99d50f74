//! The gRPC layer: converts wire messages to domain types (validating them; see
//! [`convert`]), calls [`Core`] and converts its results back. With [`convert`] and the
//! proxy, the only code of this crate that names the generated `machine_id_proto` types
//! (`tests/tests/invariants.rs` checks it). Ping, GetClusterCACerts and RegisterUsingToken
//! need no client certificate; every other call authenticates the caller by its verified
//! client certificate first.

use std::sync::Arc;

use machine_id_proto::v1::{
    self,
    auth_service_server::{AuthService, AuthServiceServer},
    join_service_server::{JoinService, JoinServiceServer},
};
use machine_id_types::{Lock, Node, ProvisionToken, Role};
use tonic::{Request, Response, Status};

use crate::core::{Caller, Core, EventQuery, RotateCa};
use crate::error::AuthError;
use crate::metrics::{self, Flag};

mod convert;

/// The gRPC services (`AuthService` and `JoinService`) over `core`, to serve.
pub(crate) fn routes(core: Arc<Core>) -> tonic::service::Routes {
    let api = Api { core };
    tonic::service::Routes::new(AuthServiceServer::new(api.clone()))
        .add_service(JoinServiceServer::new(api))
}

/// Implements both services over one [`Core`].
#[derive(Debug, Clone)]
struct Api {
    core: Arc<Core>,
}

type R<T> = Result<Response<T>, Status>;

fn ok<T>(v: T) -> R<T> {
    Ok(Response::new(v))
}

fn invalid(e: impl std::fmt::Display) -> Status {
    AuthError::InvalidArgument(e.to_string()).into()
}

fn required<T>(v: Option<T>, what: &str) -> Result<T, Status> {
    v.ok_or_else(|| invalid(format!("{what} is required")))
}

impl Api {
    async fn caller<T>(&self, req: &Request<T>, method: &str) -> Result<Caller, Status> {
        let certs = req.peer_certs();
        let caller = self
            .core
            .authenticate(certs.as_deref().map(Vec::as_slice), method)
            .await;
        // Authentication refuses a known caller only for a lock in force on it.
        if let Err(AuthError::AccessDenied(_)) = &caller {
            metrics::mark(req.extensions(), Flag::Locked);
        }
        Ok(caller?)
    }
}

#[tonic::async_trait]
impl JoinService for Api {
    async fn register_using_token(
        &self,
        req: Request<v1::RegisterUsingTokenRequest>,
    ) -> R<v1::Certs> {
        let remote = req.remote_addr();
        ok(self
            .core
            .register_using_token(req.into_inner().into(), remote)
            .await?
            .into())
    }

    type RegisterUsingIAMMethodStream =
        tokio_stream::wrappers::ReceiverStream<Result<v1::RegisterUsingIamMethodResponse, Status>>;

    async fn register_using_iam_method(
        &self,
        req: Request<tonic::Streaming<v1::RegisterUsingIamMethodRequest>>,
    ) -> R<Self::RegisterUsingIAMMethodStream> {
        use v1::register_using_iam_method_response::Response as Msg;
        let remote = req.remote_addr();
        let mut inbound = req.into_inner();
        let challenge = self.core.iam_challenge()?;
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let core = self.core.clone();
        tokio::spawn(async move {
            let send = |m: Result<Msg, Status>| {
                tx.send(m.map(|response| v1::RegisterUsingIamMethodResponse {
                    response: Some(response),
                }))
            };
            if send(Ok(Msg::Challenge(challenge.as_str().to_string())))
                .await
                .is_err()
            {
                return;
            }
            // One attempt per challenge: the first message is the only one read. A client
            // that never answers is cut off when the challenge would have expired anyway.
            let first =
                tokio::time::timeout(machine_id_join::iam::CHALLENGE_TTL, inbound.message());
            let reply = match first.await {
                Err(_) => Err(invalid(
                    "no signed request arrived within the challenge's lifetime (1 minute); retry the join",
                )),
                Ok(Err(status)) => Err(status),
                Ok(Ok(None)) => Err(invalid(
                    "the client closed the stream without sending the signed sts:GetCallerIdentity request",
                )),
                Ok(Ok(Some(msg))) => core
                    .register_using_iam(&challenge, msg.into(), remote)
                    .await
                    .map(|certs| Msg::Certs(certs.into()))
                    .map_err(Status::from),
            };
            let _ = send(reply).await;
        });
        ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

#[tonic::async_trait]
impl AuthService for Api {
    async fn ping(&self, _req: Request<v1::PingRequest>) -> R<v1::PingResponse> {
        ok(v1::PingResponse {
            cluster_name: self.core.cluster_name.clone(),
            proxy_public_addr: self.core.proxy_public_addr.clone().unwrap_or_default(),
            server_version: env!("CARGO_PKG_VERSION").to_string(),
        })
    }

    async fn get_cluster_ca_certs(
        &self,
        _req: Request<v1::GetClusterCaCertsRequest>,
    ) -> R<v1::GetClusterCaCertsResponse> {
        ok(v1::GetClusterCaCertsResponse {
            tls_ca_certs: self.core.tls_ca_certs(),
        })
    }

    async fn generate_user_certs(
        &self,
        req: Request<v1::GenerateUserCertsRequest>,
    ) -> R<v1::Certs> {
        if req.get_ref().role_requests.is_empty() {
            metrics::mark(req.extensions(), Flag::Renewal);
        }
        let c = self.caller(&req, "GenerateUserCerts").await?;
        ok(self
            .core
            .generate_user_certs(&c, req.into_inner().into())
            .await?
            .into())
    }

    async fn generate_bot_certs(
        &self,
        req: Request<v1::GenerateBotCertsRequest>,
    ) -> R<v1::GenerateBotCertsResponse> {
        if !req.get_ref().identity_public_key.is_empty() {
            metrics::mark(req.extensions(), Flag::Renewal);
        }
        let c = self.caller(&req, "GenerateBotCerts").await?;
        ok(self
            .core
            .generate_bot_certs(&c, req.into_inner().into())
            .await?
            .into())
    }

    async fn get_role(&self, req: Request<v1::GetByNameRequest>) -> R<v1::Role> {
        let c = self.caller(&req, "GetRole").await?;
        ok(self.core.get_role(&c, &req.get_ref().name).await?.into())
    }

    async fn list_roles(&self, req: Request<v1::ListRequest>) -> R<v1::ListRolesResponse> {
        let c = self.caller(&req, "ListRoles").await?;
        let roles = self.core.list_roles(&c).await?;
        ok(v1::ListRolesResponse {
            roles: roles.into_iter().map(Into::into).collect(),
        })
    }

    async fn upsert_role(&self, req: Request<v1::UpsertRoleRequest>) -> R<v1::Role> {
        let c = self.caller(&req, "UpsertRole").await?;
        let r = req.into_inner();
        let role = Role::try_from(required(r.role, "role")?).map_err(invalid)?;
        ok(self.core.upsert_role(&c, role, r.create_only).await?.into())
    }

    async fn delete_role(&self, req: Request<v1::GetByNameRequest>) -> R<v1::DeleteResponse> {
        let c = self.caller(&req, "DeleteRole").await?;
        self.core.delete_role(&c, &req.get_ref().name).await?;
        ok(v1::DeleteResponse {})
    }

    async fn get_token(&self, req: Request<v1::GetByNameRequest>) -> R<v1::Token> {
        let c = self.caller(&req, "GetToken").await?;
        ok(self.core.get_token(&c, &req.get_ref().name).await?.into())
    }

    async fn list_tokens(&self, req: Request<v1::ListRequest>) -> R<v1::ListTokensResponse> {
        let c = self.caller(&req, "ListTokens").await?;
        let tokens = self.core.list_tokens(&c).await?;
        ok(v1::ListTokensResponse {
            tokens: tokens.into_iter().map(Into::into).collect(),
        })
    }

    async fn upsert_token(&self, req: Request<v1::UpsertTokenRequest>) -> R<v1::Token> {
        let c = self.caller(&req, "UpsertToken").await?;
        let r = req.into_inner();
        let token = ProvisionToken::try_from(required(r.token, "token")?).map_err(invalid)?;
        ok(self
            .core
            .upsert_token(&c, token, r.create_only)
            .await?
            .into())
    }

    async fn delete_token(&self, req: Request<v1::GetByNameRequest>) -> R<v1::DeleteResponse> {
        let c = self.caller(&req, "DeleteToken").await?;
        self.core.delete_token(&c, &req.get_ref().name).await?;
        ok(v1::DeleteResponse {})
    }

    async fn get_user(&self, req: Request<v1::GetByNameRequest>) -> R<v1::User> {
        let c = self.caller(&req, "GetUser").await?;
        ok(self.core.get_user(&c, &req.get_ref().name).await?.into())
    }

    async fn list_users(&self, req: Request<v1::ListRequest>) -> R<v1::ListUsersResponse> {
        let c = self.caller(&req, "ListUsers").await?;
        let users = self.core.list_users(&c).await?;
        ok(v1::ListUsersResponse {
            users: users.into_iter().map(Into::into).collect(),
        })
    }

    async fn create_bot(&self, req: Request<v1::CreateBotRequest>) -> R<v1::CreateBotResponse> {
        let c = self.caller(&req, "CreateBot").await?;
        ok(self
            .core
            .create_bot(&c, req.into_inner().into())
            .await?
            .into())
    }

    async fn get_bot(&self, req: Request<v1::GetByNameRequest>) -> R<v1::Bot> {
        let c = self.caller(&req, "GetBot").await?;
        ok(self.core.get_bot(&c, &req.get_ref().name).await?.into())
    }

    async fn list_bots(&self, req: Request<v1::ListRequest>) -> R<v1::ListBotsResponse> {
        let c = self.caller(&req, "ListBots").await?;
        let bots = self.core.list_bots(&c).await?;
        ok(v1::ListBotsResponse {
            bots: bots.into_iter().map(Into::into).collect(),
        })
    }

    async fn delete_bot(&self, req: Request<v1::GetByNameRequest>) -> R<v1::DeleteResponse> {
        let c = self.caller(&req, "DeleteBot").await?;
        self.core.delete_bot(&c, &req.get_ref().name).await?;
        ok(v1::DeleteResponse {})
    }

    async fn lock_bot(&self, req: Request<v1::LockBotRequest>) -> R<v1::Lock> {
        let c = self.caller(&req, "LockBot").await?;
        ok(self
            .core
            .lock_bot(&c, req.into_inner().into())
            .await?
            .into())
    }

    async fn get_node(&self, req: Request<v1::GetByNameRequest>) -> R<v1::Node> {
        let c = self.caller(&req, "GetNode").await?;
        ok(self.core.get_node(&c, &req.get_ref().name).await?.into())
    }

    async fn list_nodes(&self, req: Request<v1::ListRequest>) -> R<v1::ListNodesResponse> {
        let c = self.caller(&req, "ListNodes").await?;
        let nodes = self.core.list_nodes(&c).await?;
        ok(v1::ListNodesResponse {
            nodes: nodes.into_iter().map(Into::into).collect(),
        })
    }

    async fn upsert_node(&self, req: Request<v1::UpsertNodeRequest>) -> R<v1::Node> {
        let c = self.caller(&req, "UpsertNode").await?;
        let r = req.into_inner();
        let node = Node::try_from(required(r.node, "node")?).map_err(invalid)?;
        ok(self.core.upsert_node(&c, node, r.create_only).await?.into())
    }

    async fn delete_node(&self, req: Request<v1::GetByNameRequest>) -> R<v1::DeleteResponse> {
        let c = self.caller(&req, "DeleteNode").await?;
        self.core.delete_node(&c, &req.get_ref().name).await?;
        ok(v1::DeleteResponse {})
    }

    async fn list_locks(&self, req: Request<v1::ListRequest>) -> R<v1::ListLocksResponse> {
        let c = self.caller(&req, "ListLocks").await?;
        let locks = self.core.list_locks(&c).await?;
        ok(v1::ListLocksResponse {
            locks: locks.into_iter().map(Into::into).collect(),
        })
    }

    async fn upsert_lock(&self, req: Request<v1::UpsertLockRequest>) -> R<v1::Lock> {
        let c = self.caller(&req, "UpsertLock").await?;
        let r = req.into_inner();
        let lock = Lock::try_from(required(r.lock, "lock")?).map_err(invalid)?;
        ok(self.core.upsert_lock(&c, lock, r.create_only).await?.into())
    }

    async fn delete_lock(&self, req: Request<v1::GetByNameRequest>) -> R<v1::DeleteResponse> {
        let c = self.caller(&req, "DeleteLock").await?;
        self.core.delete_lock(&c, &req.get_ref().name).await?;
        ok(v1::DeleteResponse {})
    }

    async fn export_ca(&self, req: Request<v1::ExportCaRequest>) -> R<v1::ExportCaResponse> {
        let c = self.caller(&req, "ExportCA").await?;
        ok(self
            .core
            .export_ca(&c, &req.get_ref().ca_type)
            .await?
            .into())
    }

    async fn rotate_ca(&self, req: Request<v1::RotateCaRequest>) -> R<v1::RotateCaResponse> {
        let c = self.caller(&req, "RotateCA").await?;
        let r = req.into_inner();
        let phase = match r.phase.trim() {
            "" => None,
            p => Some(p.parse().map_err(invalid)?),
        };
        let request = RotateCa {
            ca_type: r.ca_type,
            phase,
            manual: r.manual,
            grace_period: r.grace_period_seconds.map(std::time::Duration::from_secs),
        };
        let cas = self.core.rotate_ca(&c, request).await?;
        ok(v1::RotateCaResponse {
            cert_authorities: cas.into_iter().map(Into::into).collect(),
        })
    }

    async fn get_cert_authorities(
        &self,
        req: Request<v1::GetCertAuthoritiesRequest>,
    ) -> R<v1::CertAuthorities> {
        let c = self.caller(&req, "GetCertAuthorities").await?;
        let cas = self.core.get_cert_authorities(&c).await?;
        ok(v1::CertAuthorities {
            cert_authorities: cas.into_iter().map(Into::into).collect(),
        })
    }

    type WatchCertAuthoritiesStream =
        tokio_stream::wrappers::ReceiverStream<Result<v1::CertAuthorities, Status>>;

    async fn watch_cert_authorities(
        &self,
        req: Request<v1::GetCertAuthoritiesRequest>,
    ) -> R<Self::WatchCertAuthoritiesStream> {
        let c = self.caller(&req, "WatchCertAuthorities").await?;
        self.core.authorize_ca_watch(&c).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let core = self.core.clone();
        let mut changed = core.cas.subscribe();
        let mut stop = core.shutdown.clone();
        tokio::spawn(async move {
            loop {
                changed.mark_unchanged();
                let msg = v1::CertAuthorities {
                    cert_authorities: core
                        .cert_authorities()
                        .into_iter()
                        .map(Into::into)
                        .collect(),
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                // Ends when the caller hangs up or the server stops.
                tokio::select! {
                    r = changed.changed() => if r.is_err() { return },
                    () = tx.closed() => return,
                    _ = stop.wait_for(|v| *v) => return,
                }
            }
        });
        ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    async fn sign_host_cert(
        &self,
        req: Request<v1::SignHostCertRequest>,
    ) -> R<v1::SignHostCertResponse> {
        let c = self.caller(&req, "SignHostCert").await?;
        ok(self
            .core
            .sign_host_cert(&c, req.into_inner().into())
            .await?
            .into())
    }

    async fn search_events(
        &self,
        req: Request<v1::SearchEventsRequest>,
    ) -> R<v1::SearchEventsResponse> {
        let c = self.caller(&req, "SearchEvents").await?;
        let query = EventQuery::try_from(req.into_inner())?;
        ok(self.core.search_events(&c, query).await?.into())
    }
}
