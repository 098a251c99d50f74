//! The connection to an auth server and the calls that make or renew an identity: CA-pin
//! bootstrap, mutual-TLS and CA-only connections, Ping, joins (token and `iam`) and
//! renewals. The other calls are in the submodules, by concern: [`resources`] (CRUD of
//! roles, tokens, users, nodes and locks) and [`admin`] (bots, CA export, host certificates,
//! the audit log).

mod admin;
mod resources;
mod rotation;

pub use admin::{CreatedBot, EventPage, EventSearch, ExportedCa, HostCert};
pub use rotation::{CaWatch, RotateRequest};

use crate::addrs::AuthAddrs;
use crate::error::{ClientError, Result};
use crate::failover::{self, Failed, Retry};
use crate::identity::{ClientIdentity, cert_facts};
use crate::tls;
use machine_id_join::iam::IamError;
use machine_id_join::token::TokenSecret;
use machine_id_mint::CaPin;
use machine_id_proto::v1;
use machine_id_proto::v1::auth_service_client::AuthServiceClient;
use machine_id_proto::v1::join_service_client::JoinServiceClient;
use machine_id_types::{Clock, SystemClock};
use std::sync::{Arc, Mutex, PoisonError};
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

/// One output of a [`Client::generate_bot_certs`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRequest {
    /// The output's key: DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
    /// The requested lifetime; zero for the server's default. The server caps it, and the
    /// output never outlives the identity it is issued under.
    pub ttl: Duration,
    /// The roles to impersonate; empty for every role the bot may impersonate.
    pub roles: Vec<String>,
}

/// An output's certificates from [`Client::generate_bot_certs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputCerts {
    /// The certificates.
    pub certs: Certs,
    /// The roles they carry (the resolved list when none were asked for).
    pub roles: Vec<String>,
}

/// The answer of [`Client::generate_bot_certs`]: a whole tbot cycle.
#[derive(Debug)]
pub struct BotCerts {
    /// The renewed identity's certificates, when a renewal was asked for.
    pub identity: Option<Certs>,
    /// Per requested output, in order: its certificates, or why the server refused it.
    pub outputs: Vec<Result<OutputCerts>>,
    /// The cluster name.
    pub cluster_name: String,
    /// `host:port` of the proxy, when the cluster has one.
    pub proxy_public_addr: Option<String>,
    /// Every trusted host CA key, OpenSSH lines, active first (for known_hosts).
    pub host_ca_keys: Vec<String>,
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

/// CA-pin bootstrap: fetches the cluster's CA certificates from an auth server of `addrs`
/// without verifying it, checks them against `pins`, and returns the CAs to verify the
/// server against from then on.
///
/// Every CA the server sent matches a pin: they are trusted as they are. During a TLS CA
/// rotation the server sends every CA the cluster trusts (two), and an operator may give
/// only one pin (a config written before the rotation). Then at least one CA must match a
/// pin (constant time; none of the matching ones expired), and a second connection to the
/// same server verifies it against the pinned CAs only and fetches the list again: only an
/// answer over that verified connection is trusted, whole. An unpinned CA from the
/// unauthenticated first answer is never trusted (a machine in the middle could add its
/// own). Our auth servers present, during a rotation, a cross-certificate between the old
/// and the new TLS CA, so either pin alone verifies them in every phase; a server whose
/// certificate no pinned CA verifies gets [`ClientError::RotationNeedsBothPins`], which says
/// to pass both pins `tctl status` shows.
///
/// The servers are tried in turn while they cannot be reached; a server that answers with
/// CAs matching no pin ends the bootstrap (it is not skipped for the next one). A mismatch
/// means the CA was rotated or this is not the intended server; the error says so and points
/// at `tctl status`.
pub async fn bootstrap_ca_certs(
    addrs: impl Into<AuthAddrs>,
    pins: &[CaPin],
) -> Result<Vec<Vec<u8>>> {
    bootstrap_ca_certs_with_clock(addrs, pins, &SystemClock).await
}

/// [`bootstrap_ca_certs`] judging the CAs' expiry by `clock` (the bot passes its own).
pub async fn bootstrap_ca_certs_with_clock(
    addrs: impl Into<AuthAddrs>,
    pins: &[CaPin],
    clock: &dyn Clock,
) -> Result<Vec<Vec<u8>>> {
    if pins.is_empty() {
        return Err(ClientError::NoPins);
    }
    let addrs = addrs.into();
    let (addr, cas) = fetch_cas_unverified(&addrs).await?;
    let pinned = check_pins(&addr, &cas, pins, clock.now())?;
    if pinned.len() == cas.len() {
        tracing::debug!(addr, cas = cas.len(), "cluster CAs match the CA pins");
        return Ok(cas);
    }
    // Some CA matches no pin (a rotation): ask again over TLS verified by the pinned CAs.
    let verified = fetch_cas_verified(&addr, &pinned)
        .await
        .map_err(|e| match e {
            ClientError::UntrustedServer { .. } => {
                let all = ca_pins(&cas).unwrap_or_default();
                let list = |ps: &[CaPin], sep: &str| {
                    ps.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(sep)
                };
                ClientError::RotationNeedsBothPins {
                    addr: addr.clone(),
                    cluster_pins: list(&all, ", "),
                    given: list(pins, ", "),
                    both: list(&all, ","),
                }
            }
            other => other,
        })?;
    // The verified answer must still hold a pinned CA (it is what authenticated the server).
    let still = check_pins(&addr, &verified, pins, clock.now())?;
    tracing::info!(
        addr,
        pinned = still.len(),
        cas = verified.len(),
        "the cluster trusts more TLS CAs than the pins cover (a CA rotation): trusting the list the server sent over TLS verified by the pinned CAs"
    );
    Ok(verified)
}

/// Fetches the CA list again from `addr`, over TLS that verifies the server against `cas`.
async fn fetch_cas_verified(addr: &str, cas: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
    let channel = tls::channel(addr, tls::cas_config(cas)?).await?;
    Ok(AuthServiceClient::new(channel)
        .get_cluster_ca_certs(v1::GetClusterCaCertsRequest {})
        .await
        .map_err(|s| match Failed::call(s, addr) {
            Failed::NotSent(e) | Failed::Ambiguous(e) | Failed::Final(e) => e,
        })?
        .into_inner()
        .tls_ca_certs)
}

/// Fetches the cluster's CA certificates from an auth server of `addrs` (the first that
/// answers) WITHOUT verifying the server: whoever answers on that address is trusted. Only
/// for `tbot --insecure` on a test cluster; everything else uses [`bootstrap_ca_certs`] with
/// pins.
pub async fn fetch_ca_certs_unverified(addrs: impl Into<AuthAddrs>) -> Result<Vec<Vec<u8>>> {
    let addrs = addrs.into();
    let (addr, cas) = fetch_cas_unverified(&addrs).await?;
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

/// The pins of the CAs an auth server of `addrs` presents, fetched WITHOUT verifying the
/// server. Only for explaining a failure (did the cluster's CAs change while a bot was
/// offline?); never a reason to trust anything.
pub async fn cluster_ca_pins_unverified(addrs: impl Into<AuthAddrs>) -> Result<Vec<CaPin>> {
    let (_, cas) = fetch_cas_unverified(&addrs.into()).await?;
    ca_pins(&cas)
}

/// The one unauthenticated call, over TLS that verifies nothing: what it returns must be
/// checked (pins) or explicitly trusted (`--insecure`) before use. Returns the address that
/// answered with what it said.
async fn fetch_cas_unverified(addrs: &AuthAddrs) -> Result<(String, Vec<Vec<u8>>)> {
    let config = tls::unverified_config()?;
    let start = addrs.preferred_index();
    failover::run(addrs, start, Retry::Always, "GetClusterCACerts", |i, _| {
        let addr = addrs.as_slice().get(i).cloned().unwrap_or_default();
        let config = config.clone();
        async move {
            let channel = tls::channel(&addr, config).await.map_err(Failed::dial)?;
            let cas = AuthServiceClient::new(channel)
                .get_cluster_ca_certs(v1::GetClusterCaCertsRequest {})
                .await
                .map_err(|s| Failed::call(s, &addr))?
                .into_inner()
                .tls_ca_certs;
            Ok((addr, cas))
        }
    })
    .await
}

/// Checks the CAs against the pins: at least one must match a pin, and none that matches may
/// be expired at `now`. Returns the matching ones (DER), in the server's order.
fn check_pins(
    addr: &str,
    cas: &[Vec<u8>],
    pins: &[CaPin],
    now: OffsetDateTime,
) -> Result<Vec<Vec<u8>>> {
    if cas.is_empty() {
        return Err(ClientError::BadCertificate {
            what: format!("cluster CAs from {addr}"),
            message: "the server presented no CA certificate".into(),
        });
    }
    let mut matched = Vec::new();
    let mut unmatched = Vec::new();
    for (i, der) in cas.iter().enumerate() {
        let what = format!("cluster CA {} from {addr}", i + 1);
        let pin = CaPin::from_cert_der(der).map_err(|e| ClientError::BadCertificate {
            what: what.clone(),
            message: e.to_string(),
        })?;
        // Every pin is compared (constant time each), whichever matches.
        if !pins.iter().fold(false, |found, p| p.matches(&pin) | found) {
            unmatched.push(pin.to_string());
            continue;
        }
        let (_, not_after) = cert_facts(der, &what)?;
        if not_after <= now {
            return Err(ClientError::CaExpired {
                addr: addr.to_string(),
                pin: pin.to_string(),
                not_after: not_after.format(&Rfc3339).unwrap_or_default(),
            });
        }
        matched.push(der.clone());
    }
    if matched.is_empty() {
        return Err(ClientError::PinMismatch {
            addr: addr.to_string(),
            presented: unmatched.join(", "),
            expected: pins
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(matched)
}

/// A connection to the auth servers of one cluster, with typed calls.
///
/// Cheap to clone: clones share one HTTP/2 connection (to whichever server of the list
/// answers) and move to another server together.
///
/// # Failover
///
/// Given several addresses ([`AuthAddrs`]), connecting tries them in turn, starting at the
/// one that answered last, each with a bounded connect timeout (10 s); a call that fails
/// because its server cannot be reached moves to the next address with jittered backoff
/// (50 ms doubling up to 2 s), each address at most twice per call, and when all fail the
/// error ([`ClientError::AllUnavailable`]) names every address with what it said. A single
/// address gets one attempt, as before. Which calls are sent again:
///
/// - **After any transport failure** (the server cannot have acted, or the connection broke
///   mid-call, or it answered `UNAVAILABLE`): the reads (`ping`, `get_*`, `list_*`,
///   `find_node`, `get_cluster_ca_certs`, `export_ca`, `search_events`,
///   `search_events_page`); `upsert_*` that
///   replace (`create_only == false`); `sign_host_cert` (a new certificate; a retry leaves a
///   second audit event); and [`Client::generate_user_certs`], both impersonation (nothing is
///   stored) and the renewal of the caller's own identity for a key other than the one its
///   certificate holds: the server records the last renewal and answers that exact request
///   (same certificate, same new key) again on any server of the cluster, without moving the
///   generation again.
/// - **Only when the server cannot have acted** (the connection could not be made, or the
///   server answered `UNAVAILABLE`): the writes that must not happen twice:
///   `register_using_token` (consumes the single-use token), `create_bot`, `lock_bot`,
///   `upsert_*` with `create_only`, `delete_*`, a renewal for the key the certificate already
///   holds (never retriable on the server, so a retry would lock the bot), and
///   `register_using_iam` once the signed proof was sent (until then, opening the stream and
///   reading the challenge are retried).
///
/// A `Client` presents the identity it was connected with for its whole life: **after a
/// renewal, connect a new `Client` with the renewed identity.** The server reads the
/// generation from the certificate of the connection, so a second renewal from the old
/// certificate is a replay of a stale generation, and the server locks the bot for it. A
/// `Client` therefore refuses, without sending anything, a renewal for another key once one
/// of its renewals succeeded ([`ClientError::IdentityRenewed`]); the same request again (a
/// retry whose answer was lost) is still sent, and the server answers it again.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    addrs: AuthAddrs,
    tls: Arc<rustls::ClientConfig>,
    /// The DER SubjectPublicKeyInfo the identity's certificate holds (mutual TLS only).
    own_key: Option<Vec<u8>>,
    conn: Mutex<Conn>,
    /// The key of the renewal of the caller's own identity that succeeded on this client,
    /// if any: the identity it presents is stale from then on.
    renewed_for: std::sync::Mutex<Option<Vec<u8>>>,
}

/// One HTTP/2 connection to address `index` of the list.
#[derive(Clone)]
pub(crate) struct Conn {
    index: usize,
    addr: String,
    pub(crate) auth: AuthServiceClient<Channel>,
    pub(crate) join: JoinServiceClient<Channel>,
}

impl Conn {
    async fn dial(
        index: usize,
        addr: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Self, Failed> {
        let channel = tls::channel(addr, config).await.map_err(Failed::dial)?;
        Ok(Self {
            index,
            addr: addr.to_string(),
            auth: AuthServiceClient::new(channel.clone()),
            join: JoinServiceClient::new(channel),
        })
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addrs", &self.inner.addrs)
            .field("connected_to", &self.addr())
            .finish_non_exhaustive()
    }
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
    /// Dials the first server of `addrs` that answers (from the preferred one on).
    async fn open(
        addrs: AuthAddrs,
        tls: Arc<rustls::ClientConfig>,
        own_key: Option<Vec<u8>>,
    ) -> Result<Self> {
        let start = addrs.preferred_index();
        let conn = failover::run(&addrs, start, Retry::Always, "connect", |i, _| {
            let addr = addrs.as_slice().get(i).cloned().unwrap_or_default();
            let tls = tls.clone();
            async move { Conn::dial(i, &addr, tls).await }
        })
        .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                addrs,
                tls,
                own_key,
                conn: Mutex::new(conn),
                renewed_for: std::sync::Mutex::new(None),
            }),
        })
    }

    /// Connects with mutual TLS to an auth server of `addrs` (one address, a comma-separated
    /// list, or an [`AuthAddrs`]): presents `identity` and verifies the server against the
    /// identity's CAs. An expired identity is refused here, before dialing, with a message
    /// that names the certificate and what to do. See [`Client`] for the failover rules.
    pub async fn connect(addrs: impl Into<AuthAddrs>, identity: &ClientIdentity) -> Result<Self> {
        Self::connect_with_clock(addrs, identity, &SystemClock).await
    }

    /// [`Client::connect`] judging the identity's expiry by `clock` (the bot passes its own).
    pub async fn connect_with_clock(
        addrs: impl Into<AuthAddrs>,
        identity: &ClientIdentity,
        clock: &dyn Clock,
    ) -> Result<Self> {
        identity.check_valid_at(clock.now())?;
        let own_key = x509_parser::parse_x509_certificate(identity.cert_der())
            .ok()
            .map(|(_, c)| c.tbs_certificate.subject_pki.raw.to_vec());
        let client = Self::open(addrs.into(), tls::identity_config(identity)?, own_key).await?;
        tracing::debug!(
            addr = %client.addr(),
            user = identity.username(),
            "connected to the auth server"
        );
        Ok(client)
    }

    /// Connects without a client certificate to an auth server of `addrs`, verifying the
    /// server against `cas` (DER); for the join calls, Ping and the CA fetch.
    pub async fn connect_with_cas(addrs: impl Into<AuthAddrs>, cas: &[Vec<u8>]) -> Result<Self> {
        let client = Self::open(addrs.into(), tls::cas_config(cas)?, None).await?;
        tracing::debug!(
            addr = %client.addr(),
            "connected to the auth server without a client certificate"
        );
        Ok(client)
    }

    /// The address of the server this client is connected to now.
    pub fn addr(&self) -> String {
        self.current().addr
    }

    /// The addresses this client may use, with their shared failover state.
    pub fn addrs(&self) -> &AuthAddrs {
        &self.inner.addrs
    }

    fn current(&self) -> Conn {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A new connection to address `index`, which clones use from now on.
    async fn reconnect(&self, index: usize) -> Result<Conn, Failed> {
        let addr = self
            .inner
            .addrs
            .as_slice()
            .get(index)
            .cloned()
            .unwrap_or_default();
        let conn = Conn::dial(index, &addr, self.inner.tls.clone()).await?;
        *self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = conn.clone();
        Ok(conn)
    }

    /// Runs a unary call `f` with failover (see [`Client`]): the current connection first,
    /// then a new one to the next address after each failure `retry` allows.
    pub(crate) async fn call<T, F, Fut>(&self, retry: Retry, what: &str, f: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let first = self.current();
        let (first, f) = (&first, &f);
        failover::run(
            &self.inner.addrs,
            first.index,
            retry,
            what,
            |index, k| async move {
                let conn = if k == 0 {
                    first.clone()
                } else {
                    self.reconnect(index).await?
                };
                let addr = conn.addr.clone();
                f(conn)
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(|s| Failed::call(s, &addr))
            },
        )
        .await
    }

    /// [`Client::call`] for reads and idempotent writes.
    pub(crate) async fn read<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(Retry::Always, what, f).await
    }

    /// [`Client::call`] for writes that must not happen twice.
    pub(crate) async fn write<T, F, Fut>(&self, what: &str, f: F) -> Result<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call(Retry::NotSentOnly, what, f).await
    }

    /// The cluster name, proxy address and server version.
    pub async fn ping(&self) -> Result<PingInfo> {
        let r = self
            .read("Ping", |mut c| async move {
                c.auth.ping(v1::PingRequest {}).await
            })
            .await?;
        Ok(PingInfo {
            cluster_name: r.cluster_name,
            proxy_public_addr: Some(r.proxy_public_addr).filter(|a| !a.is_empty()),
            server_version: r.server_version,
        })
    }

    /// The TLS CA certificates the cluster presents for joining (DER); CA pins are over these.
    pub async fn get_cluster_ca_certs(&self) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .read("GetClusterCACerts", |mut c| async move {
                c.auth
                    .get_cluster_ca_certs(v1::GetClusterCaCertsRequest {})
                    .await
            })
            .await?
            .tls_ca_certs)
    }

    /// Joins with a bot token: certificates for `public_key_der` (DER SubjectPublicKeyInfo),
    /// valid for `ttl` (zero: the server's default). Sent again to another server only when
    /// the first cannot have acted: the token is single-use.
    pub async fn register_using_token(
        &self,
        token: &TokenSecret,
        public_key_der: &[u8],
        ttl: Duration,
    ) -> Result<Certs> {
        let request = v1::RegisterUsingTokenRequest {
            token: token.expose().to_string(),
            public_key: public_key_der.to_vec(),
            ttl_seconds: secs(ttl),
        };
        let r = self
            .write("RegisterUsingToken", |mut c| {
                let request = request.clone();
                async move { c.join.register_using_token(request).await }
            })
            .await?;
        Ok(r.into())
    }

    /// Joins with the `iam` method: opens the stream, hands the server's challenge to `sign`,
    /// which returns the serialized, SigV4-signed `sts:GetCallerIdentity` request carrying it
    /// (see [`machine_id_join::iam::sign_identity_request`]), sends that with the token name
    /// and `public_key_der`, and returns the (not renewable) certificates. Opening the stream
    /// and reading the challenge fail over like a read; once the proof is sent, nothing is
    /// sent again.
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
        let unexpected = |what: &str| -> ClientError {
            ClientError::Convert(machine_id_proto::ConvertError {
                what: "iam join stream",
                message: what.to_string(),
            })
        };
        let (addr, tx, mut inbound, challenge) = self
            .read("RegisterUsingIAMMethod", |mut c| async move {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let mut inbound = c
                    .join
                    .register_using_iam_method(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                let first = inbound.message().await?;
                Ok(tonic::Response::new((c.addr, tx, inbound, first)))
            })
            .await?;
        let status = |s: tonic::Status| ClientError::from_status(s, &addr);
        let challenge = match challenge {
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
        match inbound.message().await.map_err(status)? {
            Some(v1::RegisterUsingIamMethodResponse {
                response: Some(Msg::Certs(c)),
            }) => Ok(c.into()),
            Some(_) => Err(unexpected("sent something else than certificates")),
            None => Err(unexpected("ended without certificates")),
        }
    }

    /// Renews the caller's own identity (`role_requests` empty) or gets role-impersonated
    /// certificates (`role_requests` set) for `public_key_der`.
    ///
    /// Both are sent again after an ambiguous failure, to the same or another server of the
    /// cluster, byte for byte: impersonation stores nothing, and the server answers a
    /// repeated renewal (same certificate, same new key) again without moving the
    /// generation. A renewal for the key the certificate already holds is the exception: it
    /// is sent again only when the server cannot have acted. To retry a renewal later (after
    /// this call failed, or after a restart), send the same key again from the same
    /// identity; tbot keeps that key on disk as pending until the renewal is saved.
    ///
    /// Once a renewal succeeded on this client, a renewal for another key is refused here
    /// with [`ClientError::IdentityRenewed`] (see [`Client`]): connect a new client with the
    /// renewed identity.
    pub async fn generate_user_certs(
        &self,
        public_key_der: &[u8],
        ttl: Duration,
        role_requests: &[String],
    ) -> Result<Certs> {
        let request = v1::GenerateUserCertsRequest {
            public_key: public_key_der.to_vec(),
            ttl_seconds: secs(ttl),
            role_requests: role_requests.to_vec(),
        };
        let renewal = role_requests.is_empty().then_some(public_key_der);
        let retry = self.renewal_retry(renewal)?;
        let r = self
            .call(retry, "GenerateUserCerts", |mut c| {
                let request = request.clone();
                async move { c.auth.generate_user_certs(request).await }
            })
            .await?;
        self.renewed(renewal);
        Ok(r.into())
    }

    /// One tbot cycle in one call: renews this client's identity for `renew`'s key and
    /// lifetime (`None`: no renewal, for an identity that is not renewable) and gets every
    /// output's certificates, issued under the renewed identity, with the cluster name, the
    /// proxy address and the host CA keys that ssh_config and known_hosts need.
    ///
    /// A refused output (a role it may not impersonate) is answered with its error in
    /// [`BotCerts::outputs`]: it stops neither the renewal nor the other outputs. The call is
    /// sent again after an ambiguous failure as [`Client::generate_user_certs`]'s renewal is,
    /// and the same rule holds once a renewal succeeded: connect a new client with the
    /// renewed identity. A server from before this call answers
    /// [`ClientError::is_unimplemented`].
    pub async fn generate_bot_certs(
        &self,
        renew: Option<(&[u8], Duration)>,
        outputs: &[OutputRequest],
    ) -> Result<BotCerts> {
        let request = v1::GenerateBotCertsRequest {
            identity_public_key: renew.map(|(k, _)| k.to_vec()).unwrap_or_default(),
            identity_ttl_seconds: renew.map(|(_, t)| secs(t)).unwrap_or_default(),
            outputs: outputs
                .iter()
                .map(|o| v1::OutputCertsRequest {
                    public_key: o.public_key_der.clone(),
                    ttl_seconds: secs(o.ttl),
                    role_requests: o.roles.clone(),
                })
                .collect(),
        };
        let renewal = renew.map(|(k, _)| k);
        let retry = self.renewal_retry(renewal)?;
        let r = self
            .call(retry, "GenerateBotCerts", |mut c| {
                let request = request.clone();
                async move { c.auth.generate_bot_certs(request).await }
            })
            .await?;
        self.renewed(renewal);
        if r.outputs.len() != outputs.len() {
            return Err(ClientError::Server {
                code: "Internal".into(),
                message: format!(
                    "the auth server answered {} outputs for {} requested",
                    r.outputs.len(),
                    outputs.len()
                ),
            });
        }
        if renew.is_some() && r.identity.is_none() {
            return Err(ClientError::Server {
                code: "Internal".into(),
                message: "the auth server answered a renewal without certificates".into(),
            });
        }
        let addr = self.addr();
        Ok(BotCerts {
            identity: r.identity.map(Into::into),
            outputs: r
                .outputs
                .into_iter()
                .map(|o| {
                    use v1::output_certs_result::Result as Outcome;
                    match o.result {
                        Some(Outcome::Certs(c)) => Ok(OutputCerts {
                            certs: c.into(),
                            roles: o.roles,
                        }),
                        Some(Outcome::Error(e)) => Err(ClientError::from_status(
                            tonic::Status::new(tonic::Code::from(e.code), e.message),
                            &addr,
                        )),
                        None => Err(ClientError::Server {
                            code: "Internal".into(),
                            message: "the auth server answered an output with nothing".into(),
                        }),
                    }
                })
                .collect(),
            cluster_name: r.cluster_name,
            proxy_public_addr: (!r.proxy_public_addr.is_empty()).then_some(r.proxy_public_addr),
            host_ca_keys: r.host_ca_keys,
        })
    }

    /// How a call that renews this client's identity for `renewal` (`None`: no renewal) is
    /// retried, or [`ClientError::IdentityRenewed`] when this client renewed for another key.
    fn renewal_retry(&self, renewal: Option<&[u8]>) -> Result<Retry> {
        let Some(key) = renewal else {
            return Ok(Retry::Always);
        };
        if self.renewed_for().is_some_and(|k| k != key) {
            return Err(ClientError::IdentityRenewed);
        }
        Ok(if self.inner.own_key.as_deref() == Some(key) {
            Retry::NotSentOnly
        } else {
            Retry::Always
        })
    }

    /// Records a successful renewal for `renewal`'s key (nothing for `None`).
    fn renewed(&self, renewal: Option<&[u8]>) {
        if let Some(key) = renewal
            && self.inner.own_key.is_some()
        {
            *self
                .inner
                .renewed_for
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(key.to_vec());
        }
    }

    fn renewed_for(&self) -> Option<Vec<u8>> {
        self.inner
            .renewed_for
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
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
