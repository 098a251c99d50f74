//! Starting and stopping the auth server: the store, the cluster's CAs and default roles, the
//! admin identity, the TLS listener and the gRPC services (counted by the metrics layer), and
//! the diagnostics listener when one is configured.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use machine_id_mint::{CaKeys, CaPin, CaSigner, PrivateKey, Suite, cert_der_to_pem};
use machine_id_store::Revision;
use machine_id_store::{Backend, Op, SqliteBackend, StoreError};
use machine_id_types::{
    ADMIN_IDENTITY_DIR, ADMIN_ROLE, ADMIN_USER, Identity, PROXY_SSH_ALPN, default_roles,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::authorities::Authorities;
use crate::cache::{CachedBackend, FeedHealth};
use crate::config::AuthConfig;
use crate::core::{Core, IamJoin, Limits};
use crate::error::{AuthError, Result};
use crate::files::{self, ADMIN_CAS_FILE, ADMIN_CERT_FILE, ADMIN_KEY_FILE};
use crate::limits::{ConnLimiter, IdleIo};
use crate::state::{self, CA_KEY, CLUSTER_NAME_KEY, ClusterInfo, State};
use crate::storage::{self, StorageConfig};
use crate::tls;

/// The store's file name in the data directory.
pub const BACKEND_FILE: &str = "backend.db";
/// The file in the data directory that a running auth server (and the offline commands)
/// hold an exclusive `flock` on.
pub const LOCK_FILE: &str = "auth-server.lock";
/// How long a start waits for the cache's first load before serving (reads go to the store
/// until it is loaded).
const CACHE_LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often audit events dropped by the rate limit are summarized when their address sends
/// nothing more.
const AUDIT_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts auth servers. See [`AuthServer::start`].
#[derive(Debug)]
pub struct AuthServer;

impl AuthServer {
    /// Starts an auth server: opens (or creates) the store in `config.data_dir`, creates the
    /// cluster on first start (CAs, default roles, cluster name, in one transaction, so two
    /// racing first starts cannot both win) or loads it, writes the admin identity for `tctl`
    /// to `DATA_DIR/admin/`, binds `config.listen_addr` and serves gRPC over TLS until
    /// [`RunningAuthServer::shutdown`].
    ///
    /// The data directory is held with an exclusive `flock` on [`LOCK_FILE`] until the server
    /// stops, so a second server or an offline command (`auth-server locks rm`) cannot use it
    /// meanwhile. Before anything is created, the server checks that it is not about to make
    /// a new cluster next to an existing admin identity (a lost `backend.db`), and that the
    /// private files it reads (the admin key, the store) are not open to group or others
    /// (fixed to 0600 with a warning, refused when that fails). `token`-method tokens stored
    /// in plaintext by an older version are rewritten hashed.
    ///
    /// # Errors
    ///
    /// [`AuthError::ClusterNameMismatch`] when the data directory belongs to another cluster,
    /// [`AuthError::DataDirInUse`] when another process holds it, [`AuthError::StoreMissing`]
    /// when the store is missing or empty but the admin identity exists,
    /// [`AuthError::InsecureFile`] for a private file open to others that cannot be fixed,
    /// [`AuthError::Listen`] when the address cannot be bound, [`AuthError::Diag`] when
    /// [`AuthConfig::diag_addr`] cannot, and store, file and CA errors.
    pub async fn start(config: AuthConfig) -> Result<RunningAuthServer> {
        config.validate()?;
        files::ensure_private_dir(&config.data_dir, false)?;
        let data_dir_lock = files::lock_data_dir(
            &config.data_dir,
            "an auth server is already running on it; stop it first (one data directory serves one auth server)",
        )?;
        let admin_dir = config.data_dir.join(ADMIN_IDENTITY_DIR);
        let admin_exists = admin_identity_exists(&admin_dir);
        let store = match &config.storage {
            StorageConfig::Sqlite => {
                let db = config.data_dir.join(BACKEND_FILE);
                if admin_exists && !db.exists() {
                    return Err(store_missing(&config, &admin_dir, "missing"));
                }
                files::ensure_private_file(&db, "store (it holds the cluster's CA keys)")?;
                open_store(&db).await?
            }
            StorageConfig::Postgres { conn_string } => storage::open_postgres(conn_string).await?,
        };
        // Every store call is timed, beneath the cache (so only calls that reach the store).
        let metrics = crate::metrics::Metrics::new();
        let backend = crate::metrics::InstrumentedBackend::wrap(store.clone(), metrics.clone());
        let state = State::uncached(backend);
        if admin_exists && state.backend.get(CLUSTER_NAME_KEY).await?.is_none() {
            return Err(store_missing(&config, &admin_dir, "empty"));
        }
        let (ca_keys, ca_revision, first_start) = init_cluster(&state, &config).await?;
        state::migrate_plaintext_tokens(&state).await?;
        state::migrate_events_to_log(&state).await?;
        let signer = Arc::new(ca_keys.signer()?);
        let server_tls = tls::ServerTls::new(
            &signer,
            config.suite,
            config.clock.clone(),
            config.listen_addr,
        )?;
        let extra_alpn: &[&str] = if config.proxy_enabled {
            &[PROXY_SSH_ALPN]
        } else {
            &[]
        };
        let tls = server_tls.server_config(extra_alpn)?;
        let cas = Arc::new(Authorities::new(
            ca_revision,
            ca_keys,
            signer.clone(),
            server_tls,
        ));
        let listener = bind_listener(config.listen_addr).map_err(|cause| AuthError::Listen {
            addr: config.listen_addr,
            cause,
        })?;
        let local_addr = listener.local_addr().map_err(|cause| AuthError::Listen {
            addr: config.listen_addr,
            cause,
        })?;
        let proxy_listener = match (config.proxy_enabled, config.proxy_listen_addr) {
            (true, Some(addr)) => {
                Some(bind_listener(addr).map_err(|cause| AuthError::Listen { addr, cause })?)
            }
            _ => None,
        };
        let proxy_local_addr = match &proxy_listener {
            Some(l) => Some(l.local_addr().map_err(|cause| AuthError::Listen {
                addr: local_addr,
                cause,
            })?),
            None => None,
        };
        let proxy_public_addr = if config.proxy_enabled {
            Some(
                config
                    .proxy_public_addr
                    .clone()
                    .unwrap_or_else(|| proxy_local_addr.unwrap_or(local_addr).to_string()),
            )
        } else {
            None
        };
        write_admin_identity(&admin_dir, &signer, config.suite, &config)?;

        for e in &config.extra_sts_endpoints {
            if e.scheme == machine_id_join::iam::Scheme::Http && !e.is_loopback() {
                tracing::warn!(endpoint = %e, "extra STS endpoint uses plain HTTP: bots' signed requests (session tokens included) cross the network in clear; use https:// unless a TLS-terminating proxy sits on this host's side");
            } else {
                tracing::info!(endpoint = %e, "extra STS endpoint allowed for iam joins");
            }
        }
        let cache = CachedBackend::start(state.backend.clone(), CACHE_LOAD_TIMEOUT).await;
        let feed_health = cache.health();
        let lock_feed = cache.lock_feed();
        let ca_feed = cache.ca_feed();
        let state = State {
            backend: Arc::new(cache),
            uncached: state.uncached,
        };
        let diag = match &config.diag_addr {
            Some(addr) => {
                let diag = crate::diag::Diag {
                    metrics: metrics.clone(),
                    feed: feed_health.clone(),
                    store,
                };
                Some(crate::diag::bind(addr, diag).await?)
            }
            None => None,
        };
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let core = Arc::new(Core {
            shutdown: shutdown_rx.clone(),
            lock_index: crate::revocation::LockIndex::new(&lock_feed, feed_health.clone()),
            lock_feed,
            state,
            cas: cas.clone(),
            cluster_name: config.cluster_name.clone(),
            clock: config.clock.clone(),
            limits: Limits {
                default_cert_ttl: config.default_cert_ttl,
                max_renewable_ttl: config.max_renewable_ttl,
                default_token_ttl: config.default_token_ttl,
                default_host_cert_ttl: config.default_host_cert_ttl,
                max_token_ttl: config.max_token_ttl,
                idle_timeout: config.idle_timeout,
                default_rotation_grace_period: config.default_rotation_grace_period,
            },
            proxy_public_addr: proxy_public_addr.clone(),
            iam: IamJoin {
                allow: machine_id_join::iam::StsAllowList::aws_default()
                    .with_extra(config.extra_sts_endpoints.iter().cloned()),
                sts: machine_id_join::iam::StsClient::new(config.sts_timeout),
                challenges: machine_id_join::iam::ChallengeLedger::new(),
            },
            last_event_nanos: Mutex::new(0),
            audit_limiter: crate::limits::AuditLimiter::new(
                config.audit_burst_per_ip,
                config.audit_events_per_minute_per_ip,
            ),
        });
        let flush_core = core.clone();
        let mut background = vec![
            tokio::spawn(crate::rotation::follow_store(
                core.clone(),
                ca_feed,
                shutdown_rx.clone(),
            )),
            tokio::spawn(crate::rotation::auto_rotate(
                core.clone(),
                config.rotation_check_interval,
                shutdown_rx.clone(),
            )),
            tokio::spawn(follow_admin_identity(
                cas.clone(),
                admin_dir.clone(),
                config.clone(),
                shutdown_rx.clone(),
            )),
        ];
        let proxy_core = config.proxy_enabled.then(|| core.clone());
        let routes = crate::service::routes(core);

        let (conn_tx, conn_rx) = mpsc::channel::<std::io::Result<GrpcConn>>(64);
        let acceptor = TlsAcceptor::from(tls);
        let conn_limits = ConnLimits {
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            unauthenticated: ConnLimiter::new(config.max_unauthenticated_connections_per_ip),
            metrics: metrics.clone(),
        };
        let accept = tokio::spawn(accept_loop(
            listener,
            acceptor.clone(),
            conn_tx.clone(),
            proxy_core.clone(),
            shutdown_rx.clone(),
            conn_limits.clone(),
        ));
        let proxy_accept = proxy_listener.map(|l| {
            tokio::spawn(accept_loop(
                l,
                acceptor,
                conn_tx,
                proxy_core,
                shutdown_rx.clone(),
                conn_limits,
            ))
        });
        if config.audit_retention.is_zero() {
            tracing::info!(
                "audit retention is off (auth_service.audit_retention: 0): every event is kept"
            );
        } else {
            background.push(tokio::spawn(crate::retention::run(
                flush_core.clone(),
                crate::retention::Retention {
                    keep: config.audit_retention,
                    interval: config.audit_retention_interval,
                },
                shutdown_rx.clone(),
            )));
        }
        let audit_flush = tokio::spawn(flush_dropped_audit(flush_core, shutdown_rx.clone()));
        let diag_local_addr = diag.as_ref().map(|(addr, _)| *addr);
        let diag = diag.map(|(_, serving)| {
            let mut stop = shutdown_rx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = serving => {}
                    _ = stop.wait_for(|v| *v) => {}
                }
            })
        });
        let mut stop = shutdown_rx;
        let serve = tokio::spawn(
            tonic::transport::Server::builder()
                .layer(crate::metrics::MetricsLayer(metrics))
                .layer(crate::admission::AdmissionLayer::new(
                    config.max_in_flight_requests,
                ))
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::ReceiverStream::new(conn_rx),
                    async move {
                        let _ = stop.wait_for(|v| *v).await;
                    },
                ),
        );
        tracing::info!(
            addr = %local_addr,
            cluster = %config.cluster_name,
            first_start,
            data_dir = %config.data_dir.display(),
            store = %StoreLocation::of(&config).store,
            proxy = %proxy_public_addr.as_deref().unwrap_or("disabled"),
            proxy_listen = %proxy_local_addr.map_or_else(|| "shared with the auth port".to_string(), |a| a.to_string()),
            "auth server started"
        );
        Ok(RunningAuthServer {
            local_addr,
            diag_local_addr,
            diag,
            proxy_local_addr,
            proxy_public_addr,
            proxy_accept,
            cluster_name: config.cluster_name,
            cas,
            admin_dir,
            first_start,
            shutdown: ShutdownHandle {
                tx: Arc::new(shutdown_tx),
            },
            serve,
            accept,
            audit_flush,
            background,
            feed_health,
            _data_dir_lock: data_dir_lock,
        })
    }
}

/// Whether `dir` holds an admin identity (its key or certificate).
fn admin_identity_exists(dir: &Path) -> bool {
    dir.join(ADMIN_KEY_FILE).exists() || dir.join(ADMIN_CERT_FILE).exists()
}

fn store_missing(config: &AuthConfig, admin_dir: &Path, state: &'static str) -> AuthError {
    let loc = StoreLocation::of(config);
    AuthError::StoreMissing {
        data_dir: config.data_dir.clone(),
        store: loc.store,
        admin_dir: admin_dir.to_path_buf(),
        state,
        remedy: loc.remedy,
    }
}

/// How messages name the store a configuration uses.
struct StoreLocation {
    /// `the data directory D` / `the PostgreSQL database S`, for a cluster mismatch.
    holder: String,
    /// The store alone: the SQLite file or the database (no password).
    store: String,
    /// What else the operator can point the server at.
    other: &'static str,
    /// What restores an emptied store.
    remedy: String,
}

impl StoreLocation {
    fn of(config: &AuthConfig) -> Self {
        match &config.storage {
            StorageConfig::Sqlite => Self {
                holder: format!("the data directory {}", config.data_dir.display()),
                store: config.data_dir.join(BACKEND_FILE).display().to_string(),
                other: "data directory",
                remedy: format!(
                    "restore {} from a backup",
                    config.data_dir.join(BACKEND_FILE).display()
                ),
            },
            StorageConfig::Postgres { conn_string } => Self {
                holder: format!("the PostgreSQL database {conn_string}"),
                store: format!("PostgreSQL {conn_string}"),
                other: "database",
                remedy: "point storage.conn_string at the cluster's database, or copy the cluster into this one with auth-server backend clone".into(),
            },
        }
    }
}

/// Opens the SQLite store at `db` and makes it and its WAL files 0600 (SQLite creates a new
/// database with the umask's mode; the directory is 0700 already).
pub(crate) async fn open_store(db: &Path) -> Result<Arc<dyn Backend>> {
    let path = db.to_path_buf();
    let backend: Arc<dyn Backend> = Arc::new(
        tokio::task::spawn_blocking(move || SqliteBackend::open(&path))
            .await
            .map_err(|e| AuthError::Internal(format!("store open task failed: {e}")))??,
    );
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.as_os_str().to_os_string();
        p.push(suffix);
        files::restrict_to_owner(Path::new(&p))?;
    }
    Ok(backend)
}

/// Writes the summaries of audit events dropped by the rate limit every
/// [`AUDIT_FLUSH_INTERVAL`], and once more at shutdown.
async fn flush_dropped_audit(core: Arc<Core>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(AUDIT_FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = shutdown.wait_for(|v| *v) => true,
            _ = tick.tick() => false,
        };
        core.flush_dropped_audit().await;
        if stop {
            break;
        }
    }
}

/// Loads the cluster from the store, or creates it on first start. Returns the CA keys, the
/// store revision they were read at, and whether this start created the cluster.
async fn init_cluster(state: &State, config: &AuthConfig) -> Result<(CaKeys, Revision, bool)> {
    for _ in 0..2 {
        if let Some((info, _)) = state.get::<ClusterInfo>(CLUSTER_NAME_KEY).await? {
            if info.cluster_name != config.cluster_name {
                let loc = StoreLocation::of(config);
                return Err(AuthError::ClusterNameMismatch {
                    configured: config.cluster_name.clone(),
                    stored: info.cluster_name,
                    store: loc.holder,
                    other: loc.other,
                });
            }
            let item = state.backend.get(CA_KEY).await?.ok_or_else(|| {
                AuthError::Internal(format!(
                    "the store {} names cluster {:?} but holds no certificate authorities at {CA_KEY}; it is damaged: restore it from a backup",
                    StoreLocation::of(config).store,
                    info.cluster_name
                ))
            })?;
            let keys = CaKeys::from_bytes(&item.value)?;
            return Ok((keys, item.revision, false));
        }
        let cluster = config.cluster_name.clone();
        let suite = config.suite;
        let now = config.clock.now();
        let keys = tokio::task::spawn_blocking(move || CaKeys::generate(&cluster, suite, now))
            .await
            .map_err(|e| AuthError::Internal(format!("CA generation task failed: {e}")))??;
        let info = ClusterInfo {
            cluster_name: config.cluster_name.clone(),
            created: now,
        };
        let mut ops = vec![
            Op::Create {
                key: CLUSTER_NAME_KEY.into(),
                value: state::encode(&info)?,
            },
            Op::Create {
                key: CA_KEY.into(),
                value: keys.to_bytes(),
            },
        ];
        for role in default_roles() {
            ops.push(Op::Create {
                key: state::role_key(&role.metadata.name),
                value: state::encode(&role)?,
            });
        }
        match state.backend.atomic_write(ops).await {
            Ok(revision) => {
                tracing::info!(cluster = %config.cluster_name, suite = ?config.suite, "created cluster: certificate authorities and default roles");
                return Ok((keys, revision, true));
            }
            // Another auth server created the cluster first: load what it wrote.
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AuthError::Internal(
        "the cluster could not be created or loaded; retry".into(),
    ))
}

/// Writes `key`, `tlscert` and `tlscacerts` of the admin identity to `dir`. The key is kept
/// across starts (so a `tctl` reading the files mid-write never pairs a new key with an old
/// certificate); the certificate is issued afresh.
fn write_admin_identity(
    dir: &Path,
    signer: &CaSigner,
    suite: Suite,
    config: &AuthConfig,
) -> Result<()> {
    files::ensure_private_dir(dir, true)?;
    let key_path = dir.join(ADMIN_KEY_FILE);
    files::ensure_private_file(&key_path, "admin identity's private key")?;
    let existing = if key_path.exists() {
        let pem = files::read_text_bounded(&key_path, "a private key")?;
        match PrivateKey::from_pem(&pem) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(path = %key_path.display(), error = %e, "the admin identity's key cannot be read; writing a new one");
                None
            }
        }
    } else {
        None
    };
    let key = match existing {
        Some(k) => k,
        None => {
            let k = PrivateKey::generate(suite)?;
            files::write_atomic(&key_path, k.to_pem().as_bytes())?;
            k
        }
    };
    let now = config.clock.now();
    let identity = Identity {
        username: ADMIN_USER.into(),
        roles: vec![ADMIN_ROLE.into()],
        logins: vec![],
        traits: Default::default(),
        renewable: false,
        generation: 0,
        impersonator: None,
        disallow_reissue: false,
        cluster: config.cluster_name.clone(),
        expires: now + config.admin_cert_ttl,
    };
    let cert = signer.sign_user_tls_cert(&key.public_key(), &identity, now)?;
    let cas: String = signer
        .trusted_tls_certs()
        .iter()
        .map(|der| cert_der_to_pem(der))
        .collect();
    files::write_atomic(&dir.join(ADMIN_CAS_FILE), cas.as_bytes())?;
    files::write_atomic(
        &dir.join(ADMIN_CERT_FILE),
        cert_der_to_pem(&cert).as_bytes(),
    )?;
    tracing::info!(dir = %dir.display(), "wrote the admin identity for tctl");
    Ok(())
}

/// Writes the admin identity again after every change of the CAs (a rotation phase), so
/// `tctl` trusts what the server presents and holds a certificate the server accepts.
async fn follow_admin_identity(
    cas: Arc<Authorities>,
    dir: PathBuf,
    config: AuthConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut changed = cas.subscribe();
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|v| *v) => return,
            r = changed.changed() => if r.is_err() { return },
        }
        let signer = cas.signer();
        let (dir2, config2) = (dir.clone(), config.clone());
        let written = tokio::task::spawn_blocking(move || {
            write_admin_identity(&dir2, &signer, config2.suite, &config2)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot write the admin identity after a CA change; tctl on this host may fail until the next start");
            }
            Err(e) => tracing::error!(error = %e, "the admin identity task failed"),
        }
    }
}

/// A gRPC connection: TLS over TCP, closed when idle.
type GrpcConn = IdleIo<TlsStream<TcpStream>>;

/// The per-connection limits every listener applies.
#[derive(Debug, Clone)]
struct ConnLimits {
    handshake_timeout: std::time::Duration,
    idle_timeout: std::time::Duration,
    unauthenticated: Arc<ConnLimiter>,
    /// Where accepted connections are counted.
    metrics: Arc<crate::metrics::Metrics>,
}

/// Accepts TCP connections until shutdown; each TLS handshake runs in its own task with a
/// timeout, so a slow or failing client never stalls the loop. A connection that chose ALPN
/// [`PROXY_SSH_ALPN`] goes to the SSH proxy (when `proxy` is set), every other to gRPC.
///
/// Each source IP may have at most `limits.unauthenticated` connections in handshake or
/// open without a client certificate; more are closed at once. gRPC connections are closed
/// after `limits.idle_timeout` without a byte either way.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    conns: mpsc::Sender<std::io::Result<GrpcConn>>,
    proxy: Option<Arc<Core>>,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnLimits,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|v| *v) => break,
            a = listener.accept() => a,
        };
        let (tcp, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Typically out of file descriptors: back off briefly instead of spinning.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        limits.metrics.connection_accepted();
        let Some(permit) = limits.unauthenticated.try_acquire(remote.ip()) else {
            if let Some(refused) = limits.unauthenticated.note_refusal() {
                tracing::warn!(remote = %remote, limit = limits.unauthenticated.max_per_ip(), refused, "refusing connection: too many connections from this address are in their TLS handshake or have no client certificate (limits.max_unauthenticated_connections_per_ip); at most one such line per 10s, `refused` counts them");
            }
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        let proxy = proxy.clone();
        let limits = limits.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let session = tls.get_ref().1;
                    // A verified client certificate takes the connection out of the
                    // unauthenticated count; without one it counts for its whole life.
                    let permit = session.peer_certificates().is_none().then_some(permit);
                    if session.alpn_protocol() == Some(PROXY_SSH_ALPN.as_bytes()) {
                        if let Some(core) = proxy {
                            let certs = session
                                .peer_certificates()
                                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect());
                            // The proxy bounds its own wait for the target line; a relaying
                            // session is not idle-closed.
                            crate::proxy::serve(core, tls, certs, remote).await;
                        }
                        drop(permit);
                        return;
                    }
                    let conn = IdleIo::new(tls, limits.idle_timeout, remote, permit);
                    let _ = conns.send(Ok(conn)).await;
                }
                Ok(Err(e)) => tracing::debug!(remote = %remote, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(remote = %remote, "TLS handshake timed out"),
            }
        });
    }
    tracing::debug!("accept loop stopped");
}

/// Stops a running auth server from anywhere (e.g. a signal handler).
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    tx: Arc<watch::Sender<bool>>,
}

impl ShutdownHandle {
    /// Asks the server to stop: no new connections; calls in flight finish.
    pub fn shutdown(&self) {
        let _ = self.tx.send(true);
    }
}

/// A started auth server.
#[derive(Debug)]
pub struct RunningAuthServer {
    local_addr: SocketAddr,
    cluster_name: String,
    cas: Arc<Authorities>,
    admin_dir: PathBuf,
    first_start: bool,
    proxy_local_addr: Option<SocketAddr>,
    proxy_public_addr: Option<String>,
    proxy_accept: Option<JoinHandle<()>>,
    diag_local_addr: Option<SocketAddr>,
    diag: Option<JoinHandle<()>>,
    shutdown: ShutdownHandle,
    serve: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    accept: JoinHandle<()>,
    audit_flush: JoinHandle<()>,
    /// Following the stored CAs, automatic rotation, the admin identity, audit retention.
    background: Vec<JoinHandle<()>>,
    feed_health: Arc<FeedHealth>,
    /// The data directory's lock, released when the server is dropped.
    _data_dir_lock: std::fs::File,
}

impl RunningAuthServer {
    /// The address it listens on (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The proxy's own listener address, when it has one (else it shares the auth port).
    pub fn proxy_local_addr(&self) -> Option<SocketAddr> {
        self.proxy_local_addr
    }

    /// The proxy address Ping returns (`None`: the proxy is disabled).
    pub fn proxy_public_addr(&self) -> Option<&str> {
        self.proxy_public_addr.as_deref()
    }

    /// The diagnostics listener's address (`/healthz`, `/readyz`, `/metrics`), when
    /// [`AuthConfig::diag_addr`] asked for one.
    pub fn diag_addr(&self) -> Option<SocketAddr> {
        self.diag_local_addr
    }

    /// The cluster name.
    pub fn cluster_name(&self) -> &str {
        &self.cluster_name
    }

    /// The CA pins (`sha256:<hex>`) over every trusted TLS CA certificate (two during a
    /// rotation of the TLS CA, the active one first).
    pub fn ca_pins(&self) -> Vec<CaPin> {
        self.cas
            .signer()
            .trusted_tls_certs()
            .iter()
            .filter_map(|der| CaPin::from_cert_der(der).ok())
            .collect()
    }

    /// Where the admin identity for `tctl` was written (`DATA_DIR/admin`).
    pub fn admin_identity_dir(&self) -> &Path {
        &self.admin_dir
    }

    /// Whether this start created the cluster (CAs and default roles).
    pub fn first_start(&self) -> bool {
        self.first_start
    }

    /// Whether the store's change feed is up (the cache loaded), and its lag.
    pub fn feed_health(&self) -> &FeedHealth {
        &self.feed_health
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Stops the server and waits until it has stopped.
    pub async fn shutdown(self) -> Result<()> {
        self.shutdown.shutdown();
        self.wait().await
    }

    /// Waits until the server stops (after a [`ShutdownHandle::shutdown`], or on a fatal
    /// error).
    pub async fn wait(self) -> Result<()> {
        let served = self
            .serve
            .await
            .map_err(|e| AuthError::Internal(format!("server task failed: {e}")))?;
        // The serve loop ends on shutdown; make sure the accept loop does too.
        self.shutdown.shutdown();
        let _ = self.accept.await;
        if let Some(p) = self.proxy_accept {
            let _ = p.await;
        }
        let _ = self.audit_flush.await;
        for t in self.background {
            let _ = t.await;
        }
        if let Some(d) = self.diag {
            let _ = d.await;
        }
        served.map_err(|e| AuthError::Internal(format!("gRPC server failed: {e}")))?;
        tracing::info!(addr = %self.local_addr, "auth server stopped");
        Ok(())
    }
}

/// Connections the kernel queues for a listener before `accept` (capped by
/// `net.core.somaxconn`). Tokio's default, 128, drops SYNs when a few hundred bots connect at
/// once (after an outage, say), and each dropped SYN costs its client a one-second
/// retransmission; the accept loops drain the queue quickly, so a deep one costs nothing.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as tokio sets it).
fn bind_listener(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
