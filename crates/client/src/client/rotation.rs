//! CA rotation: moving a CA through its phases (`tctl auth rotate`), reading the CAs with
//! their rotation status (`tctl status`, `tctl get cert_authorities`), and following them as
//! they change (tbot).

use super::{Client, convert_all, secs};
use crate::error::{ClientError, Result};
use machine_id_proto::v1;
use machine_id_types::{CertAuthority, RotationPhase};
use std::time::Duration;

/// What `tctl auth rotate` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotateRequest {
    /// `user`, `host`, `tls` or `all`.
    pub ca_type: String,
    /// The phase to move to; `None` with a grace period starts an automatic rotation.
    pub phase: Option<RotationPhase>,
    /// Manual mode: the operator moves every phase.
    pub manual: bool,
    /// The grace period; zero replaces the keys at once. `None`: manual rotations have none,
    /// automatic ones the server's default.
    pub grace_period: Option<Duration>,
}

/// A stream of the cluster's CAs: the current set at once, then again after every change,
/// from [`Client::watch_cert_authorities`].
#[derive(Debug)]
pub struct CaWatch {
    stream: tonic::Streaming<v1::CertAuthorities>,
    addr: String,
}

impl CaWatch {
    /// The next set of CAs; `Ok(None)` when the server ended the stream (it is shutting
    /// down), an error when the connection broke. Either way, watch again to go on.
    pub async fn next(&mut self) -> Result<Option<Vec<CertAuthority>>> {
        match self.stream.message().await {
            Ok(Some(m)) => convert_all(m.cert_authorities).map(Some),
            Ok(None) => Ok(None),
            Err(s) => Err(ClientError::from_status(s, &self.addr)),
        }
    }
}

impl Client {
    /// Moves the CAs of `request.ca_type` to a phase (or starts an automatic rotation) and
    /// returns them as they are after it. The server refuses a phase that does not follow
    /// the current one, naming the allowed ones; never retried after it was sent, since a
    /// phase change must happen once.
    pub async fn rotate_ca(&self, request: &RotateRequest) -> Result<Vec<CertAuthority>> {
        let wire = v1::RotateCaRequest {
            ca_type: request.ca_type.clone(),
            phase: request
                .phase
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            manual: request.manual,
            grace_period_seconds: request.grace_period.map(secs),
        };
        let r = self
            .write("RotateCA", |mut c| {
                let wire = wire.clone();
                async move { c.auth.rotate_ca(wire).await }
            })
            .await?;
        convert_all(r.cert_authorities)
    }

    /// The cluster's CAs (user, host, tls): public keys and rotation status.
    pub async fn get_cert_authorities(&self) -> Result<Vec<CertAuthority>> {
        let r = self
            .read("GetCertAuthorities", |mut c| async move {
                c.auth
                    .get_cert_authorities(v1::GetCertAuthoritiesRequest {})
                    .await
            })
            .await?;
        convert_all(r.cert_authorities)
    }

    /// Opens a watch on the cluster's CAs (see [`CaWatch`]), on the first auth server that
    /// answers.
    pub async fn watch_cert_authorities(&self) -> Result<CaWatch> {
        let addr = std::sync::Mutex::new(String::new());
        let addr_ref = &addr;
        let stream = self
            .read("WatchCertAuthorities", |mut c| async move {
                if let Ok(mut a) = addr_ref.lock() {
                    a.clone_from(&c.addr);
                }
                c.auth
                    .watch_cert_authorities(v1::GetCertAuthoritiesRequest {})
                    .await
            })
            .await?;
        let addr = addr.into_inner().unwrap_or_default();
        Ok(CaWatch { stream, addr })
    }
}
