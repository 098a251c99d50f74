//! The connection to an auth server and the calls that make or renew an identity: CA-pin
//! bootstrap, mutual-TLS and CA-only connections, Ping, joins (token and `iam`) and
//! renewals. The other calls are in the submodules, by concern: [`resources`] (CRUD of
//! roles, tokens, users, nodes and locks) and [`admin`] (bots, CA export, host certificates,
//! the audit log).

mod admin;
mod resources;

pub use admin::{CreatedBot, ExportedCa, HostCert};

use crate::error::{ClientError, Result};
use crate::identity::{ClientIdentity, cert_facts};
use crate::tls;
use machine_id_join::iam::IamError;
use machine_id_join::token::TokenSecret;
use machine_id_mint::CaPin;
use machine_id_proto::v1;
use machine_id_proto::v1::auth_service_client::AuthServiceClient;
use machine_id_proto::v1::join_service_client::JoinServiceClient;
use machine_id_types::{Clock, SystemClock};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tonic::transport::Channel;

/// What `Ping` tells about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingInfo {
    /// The cluster name.
    pub cluster_name: String,
    /// `host:port` of the proxy, when the cluster has one.
    pub proxy_public_addr: Option<String>,
    /// The auth server's version.
    pub server_version: String,
}

/// Certificates issued to a key by a join or a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certs {
    /// The OpenSSH certificate line.
    pub ssh_cert: String,
    /// The X.509 certificate, DER.
    pub tls_cert: Vec<u8>,
    /// The TLS CA certificates to trust from now on, DER.
    pub tls_ca_certs: Vec<Vec<u8>>,
    /// The SSH CA public keys (user CA and host CA), OpenSSH lines.
    pub ssh_ca_keys: Vec<String>,
}

impl From<v1::Certs> for Certs {
    fn from(c: v1::Certs) -> Self {
        Self {
            ssh_cert: c.ssh_cert,
            tls_cert: c.tls_cert,
            tls_ca_certs: c.tls_ca_certs,
            ssh_ca_keys: c.ssh_ca_keys,
        }
    }
}

/// Parses `--ca-pin` values (`sha256:<hex>`).
pub fn parse_pins<S: AsRef<str>>(pins: &[S]) -> Result<Vec<CaPin>> {
    pins.iter()
        .map(|p| {
            CaPin::parse(p.as_ref()).map_err(|e| ClientError::InvalidPin {
                pin: p.as_ref().to_string(),
                message: e.to_string(),
            })
        })
        .collect()
}

/// The pin of each CA certificate (DER).
pub fn ca_pins(cas: &[Vec<u8>]) -> Result<Vec<CaPin>> {
    cas.iter()
        .enumerate()
        .map(|(i, der)| {
            CaPin::from_cert_der(der).map_err(|e| ClientError::BadCertificate {
                what: format!("cluster CA {}", i + 1),
                message: e.to_string(),
            })
        })
        .collect()
}

/// CA-pin bootstrap: fetches the cluster's CA certificates from the auth server at `addr`
/// without verifying it, checks every CA against `pins` (each must match one pin, constant
/// time; none may be expired), and returns the CAs to verify the server against from then on.
///
/// A mismatch means the CA was rotated or this is not the intended server; the error says so
/// and points at `tctl status`.
pub async fn bootstrap_ca_certs(addr: &str, pins: &[CaPin]) -> Result<Vec<Vec<u8>>> {
    bootstrap_ca_certs_with_clock(addr, pins, &SystemClock).await
}

/// [`bootstrap_ca_certs`] judging the CAs' expiry by `clock` (the bot passes its own).
pub async fn bootstrap_ca_certs_with_clock(
    addr: &str,
    pins: &[CaPin],
    clock: &dyn Clock,
) -> Result<Vec<Vec<u8>>> {
    if pins.is_empty() {
        return Err(ClientError::NoPins);
    }
    let cas = fetch_cas_unverified(addr).await?;
    check_pins(addr, &cas, pins, clock.now())?;
    tracing::debug!(addr, cas = cas.len(), "cluster CAs match the CA pins");
    Ok(cas)
}

/// Fetches the cluster's CA certificates from the auth server at `addr` WITHOUT verifying
/// the server: whoever answers on that address is trusted. Only for `tbot --insecure` on a
/// test cluster; everything else uses [`bootstrap_ca_certs`] with pins.
pub async fn fetch_ca_certs_unverified(addr: &str) -> Result<Vec<Vec<u8>>> {
    let cas = fetch_cas_unverified(addr).await?;
    if cas.is_empty() {
        return Err(ClientError::BadCertificate {
            what: format!("cluster CAs from {addr}"),
            message: "the server presented no CA certificate".into(),
        });
    }
    tracing::warn!(
        addr,
        cas = cas.len(),
        "trusting the cluster CAs the server presented without a pin"
    );
    Ok(cas)
}

/// The one unauthenticated call, over TLS that verifies nothing: what it returns must be
/// checked (pins) or explicitly trusted (`--insecure`) before use.
async fn fetch_cas_unverified(addr: &str) -> Result<Vec<Vec<u8>>> {
    let channel = tls::channel(addr, tls::unverified_config()?).await?;
    Ok(AuthServiceClient::new(channel)
        .get_cluster_ca_certs(v1::GetClusterCaCertsRequest {})
        .await
        .map_err(|s| ClientError::from_status(s, addr))?
        .into_inner()
        .tls_ca_certs)
}

/// Checks every CA against the pins and its validity at `now`.
fn check_pins(addr: &str, cas: &[Vec<u8>], pins: &[CaPin], now: OffsetDateTime) -> Result<()> {
    if cas.is_empty() {
        return Err(ClientError::BadCertificate {
            what: format!("cluster CAs from {addr}"),
            message: "the server presented no CA certificate".into(),
        });
    }
    for (i, der) in cas.iter().enumerate() {
        let what = format!("cluster CA {} from {addr}", i + 1);
        let pin = CaPin::from_cert_der(der).map_err(|e| ClientError::BadCertificate {
            what: what.clone(),
            message: e.to_string(),
        })?;
        // Every pin is compared (constant time each), whichever matches.
        let matched = pins.iter().fold(false, |found, p| p.matches(&pin) | found);
        if !matched {
            return Err(ClientError::PinMismatch {
                addr: addr.to_string(),
                presented: pin.to_string(),
                expected: pins
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let (_, not_after) = cert_facts(der, &what)?;
        if not_after <= now {
            return Err(ClientError::CaExpired {
                addr: addr.to_string(),
                pin: pin.to_string(),
                not_after: not_after.format(&Rfc3339).unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// A connection to an auth server, with typed calls.
///
/// Cheap to clone: clones share one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct Client {
    addr: String,
    auth: AuthServiceClient<Channel>,
    join: JoinServiceClient<Channel>,
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

/// The request naming one resource.
fn by_name(name: &str) -> v1::GetByNameRequest {
    v1::GetByNameRequest {
        name: name.to_string(),
    }
}

/// Converts every wire message of a list reply into its domain value; one bad message fails
/// the whole list.
fn convert_all<W, T>(items: Vec<W>) -> Result<Vec<T>>
where
    T: TryFrom<W, Error = machine_id_proto::ConvertError>,
{
    Ok(items
        .into_iter()
        .map(T::try_from)
        .collect::<std::result::Result<_, _>>()?)
}

impl Client {
    fn new(addr: &str, channel: Channel) -> Self {
        Self {
            addr: addr.to_string(),
            auth: AuthServiceClient::new(channel.clone()),
            join: JoinServiceClient::new(channel),
        }
    }

    /// Connects with mutual TLS: presents `identity` and verifies the server against the
    /// identity's CAs. An expired identity is refused here, before dialing, with a message that
    /// names the certificate and what to do.
    pub async fn connect(addr: &str, identity: &ClientIdentity) -> Result<Self> {
        Self::connect_with_clock(addr, identity, &SystemClock).await
    }

    /// [`Client::connect`] judging the identity's expiry by `clock` (the bot passes its own).
    pub async fn connect_with_clock(
        addr: &str,
        identity: &ClientIdentity,
        clock: &dyn Clock,
    ) -> Result<Self> {
        identity.check_valid_at(clock.now())?;
        let channel = tls::channel(addr, tls::identity_config(identity)?).await?;
        tracing::debug!(
            addr,
            user = identity.username(),
            "connected to the auth server"
        );
        Ok(Self::new(addr, channel))
    }

    /// Connects without a client certificate, verifying the server against `cas` (DER); for
    /// the join calls, Ping and the CA fetch.
    pub async fn connect_with_cas(addr: &str, cas: &[Vec<u8>]) -> Result<Self> {
        let channel = tls::channel(addr, tls::cas_config(cas)?).await?;
        tracing::debug!(
            addr,
            "connected to the auth server without a client certificate"
        );
        Ok(Self::new(addr, channel))
    }

    /// The address this client dials.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn status(&self, s: tonic::Status) -> ClientError {
        tracing::debug!(addr = %self.addr, code = ?s.code(), "call failed");
        ClientError::from_status(s, &self.addr)
    }

    /// The message of a unary call's reply, or its status as a [`ClientError`].
    fn reply<T>(&self, r: std::result::Result<tonic::Response<T>, tonic::Status>) -> Result<T> {
        r.map(tonic::Response::into_inner)
            .map_err(|s| self.status(s))
    }

    /// The cluster name, proxy address and server version.
    pub async fn ping(&self) -> Result<PingInfo> {
        let r = self
            .auth
            .clone()
            .ping(v1::PingRequest {})
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        Ok(PingInfo {
            cluster_name: r.cluster_name,
            proxy_public_addr: Some(r.proxy_public_addr).filter(|a| !a.is_empty()),
            server_version: r.server_version,
        })
    }

    /// The TLS CA certificates the cluster presents for joining (DER); CA pins are over these.
    pub async fn get_cluster_ca_certs(&self) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .auth
            .clone()
            .get_cluster_ca_certs(v1::GetClusterCaCertsRequest {})
            .await
            .map_err(|s| self.status(s))?
            .into_inner()
            .tls_ca_certs)
    }

    /// Joins with a bot token: certificates for `public_key_der` (DER SubjectPublicKeyInfo),
    /// valid for `ttl` (zero: the server's default).
    pub async fn register_using_token(
        &self,
        token: &TokenSecret,
        public_key_der: &[u8],
        ttl: Duration,
    ) -> Result<Certs> {
        let r = self
            .join
            .clone()
            .register_using_token(v1::RegisterUsingTokenRequest {
                token: token.expose().to_string(),
                public_key: public_key_der.to_vec(),
                ttl_seconds: secs(ttl),
            })
            .await
            .map_err(|s| self.status(s))?;
        Ok(r.into_inner().into())
    }

    /// Joins with the `iam` method: opens the stream, hands the server's challenge to `sign`,
    /// which returns the serialized, SigV4-signed `sts:GetCallerIdentity` request carrying it
    /// (see [`machine_id_join::iam::sign_identity_request`]), sends that with the token name
    /// and `public_key_der`, and returns the (not renewable) certificates.
    pub async fn register_using_iam<F, Fut>(
        &self,
        token: &str,
        public_key_der: &[u8],
        ttl: Duration,
        sign: F,
    ) -> Result<Certs>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<Vec<u8>, IamError>>,
    {
        use v1::register_using_iam_method_response::Response as Msg;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let mut inbound = self
            .join
            .clone()
            .register_using_iam_method(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| self.status(s))?
            .into_inner();
        let unexpected = |what: &str| -> ClientError {
            ClientError::Convert(machine_id_proto::ConvertError {
                what: "iam join stream",
                message: what.to_string(),
            })
        };
        let challenge = match inbound.message().await.map_err(|s| self.status(s))? {
            Some(v1::RegisterUsingIamMethodResponse {
                response: Some(Msg::Challenge(c)),
            }) => c,
            Some(_) => return Err(unexpected("sent something else than a challenge first")),
            None => return Err(unexpected("ended before the challenge")),
        };
        let sts_identity_request = sign(challenge).await.map_err(ClientError::IamProof)?;
        tx.send(v1::RegisterUsingIamMethodRequest {
            token: token.to_string(),
            public_key: public_key_der.to_vec(),
            ttl_seconds: secs(ttl),
            sts_identity_request,
        })
        .await
        .map_err(|_| unexpected("was closed by the server before the signed request"))?;
        match inbound.message().await.map_err(|s| self.status(s))? {
            Some(v1::RegisterUsingIamMethodResponse {
                response: Some(Msg::Certs(c)),
            }) => Ok(c.into()),
            Some(_) => Err(unexpected("sent something else than certificates")),
            None => Err(unexpected("ended without certificates")),
        }
    }

    /// Renews the caller's own identity (`role_requests` empty) or gets role-impersonated
    /// certificates (`role_requests` set) for `public_key_der`.
    pub async fn generate_user_certs(
        &self,
        public_key_der: &[u8],
        ttl: Duration,
        role_requests: &[String],
    ) -> Result<Certs> {
        let r = self
            .auth
            .clone()
            .generate_user_certs(v1::GenerateUserCertsRequest {
                public_key: public_key_der.to_vec(),
                ttl_seconds: secs(ttl),
                role_requests: role_requests.to_vec(),
            })
            .await
            .map_err(|s| self.status(s))?;
        Ok(r.into_inner().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_human_errors() {
        let e = ClientError::from_status(tonic::Status::not_found("role \"x\" not found"), "a:1");
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "role \"x\" not found");
        let e = ClientError::from_status(tonic::Status::aborted("conflict"), "a:1");
        assert!(e.is_retryable());
        let e = ClientError::from_status(tonic::Status::unavailable("refused"), "h:3025");
        assert_eq!(
            e.to_string(),
            "cannot reach the auth server at h:3025: refused; is it running?"
        );
    }
}
