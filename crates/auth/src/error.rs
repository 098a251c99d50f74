//! The auth server's error type and its mapping to gRPC statuses.

use std::path::PathBuf;

use machine_id_mint::MintError;
use machine_id_store::StoreError;
use tonic::{Code, Status};

use crate::config::ConfigError;

/// Why the auth server refused a call or could not start.
///
/// Messages are for people: `tctl` prints them as they are, so each says what went wrong and,
/// where someone can act, what to do. None carries a secret, key or certificate body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The caller presented no usable certificate (none, expired, another cluster's).
    /// gRPC `UNAUTHENTICATED`.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this (RBAC, lock, generation mismatch, bad token).
    /// gRPC `PERMISSION_DENIED`.
    #[error("{0}")]
    AccessDenied(String),
    /// The named resource does not exist. gRPC `NOT_FOUND`.
    #[error("{0}")]
    NotFound(String),
    /// The named resource exists already. gRPC `ALREADY_EXISTS`.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is malformed. gRPC `INVALID_ARGUMENT`.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request is well formed but the cluster's state forbids it (e.g. deleting a role a
    /// bot uses). gRPC `FAILED_PRECONDITION`.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A service the server depends on (AWS STS) failed or did not answer in time; retrying
    /// later may succeed. gRPC `UNAVAILABLE`.
    #[error("{0}")]
    Unavailable(String),
    /// A concurrent change won a compare-and-swap; retrying may succeed. gRPC `ABORTED`.
    #[error("{0}")]
    Retryable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Minting or parsing certificates failed on the server's side.
    #[error("certificate authority error: {0}")]
    Mint(MintError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file or directory could not be read or written.
    #[error("{path}: {what}: {cause}")]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause (in the message, not an error source, so it is printed once).
        cause: std::io::Error,
    },
    /// The store belongs to another cluster.
    #[error(
        "cluster name mismatch: the configuration says {configured:?} but {store} holds cluster {stored:?}; start with --cluster-name={stored} (or the same name in the config file), or use another {other}"
    )]
    ClusterNameMismatch {
        /// The name the configuration asked for.
        configured: String,
        /// The name stored.
        stored: String,
        /// Where: `the data directory /var/lib/machine-id` or `the PostgreSQL database ...`.
        store: String,
        /// What to use instead: `data directory` or `database`.
        other: &'static str,
    },
    /// A file the server reads is over its size limit.
    #[error(transparent)]
    FileTooLarge(#[from] crate::files::FileTooLarge),
    /// A private file (a key, the store) is readable by others and cannot be fixed.
    #[error(
        "the {what} {path} (mode {mode:04o}) {problem}; run `chmod 600 {path}` as the file's owner, or chown it to the user running auth-server"
    )]
    InsecureFile {
        /// The file.
        path: PathBuf,
        /// What the file is (`admin identity's private key`, `store`).
        what: &'static str,
        /// Its mode.
        mode: u32,
        /// What is wrong with it.
        problem: String,
    },
    /// The admin identity exists but the store is missing or empty: starting would create a
    /// new cluster and orphan every bot.
    #[error(
        "refusing to start: the data directory {data_dir} holds an admin identity ({admin_dir}) but its store {store} is {state}, so starting would create a new cluster with new certificate authorities and every existing bot and node would stop working; {remedy}, or, to really start a new cluster, move {admin_dir} away first"
    )]
    StoreMissing {
        /// The data directory.
        data_dir: PathBuf,
        /// The store: the SQLite file, or the PostgreSQL database (no password).
        store: String,
        /// The admin identity directory.
        admin_dir: PathBuf,
        /// `missing` or `empty`.
        state: &'static str,
        /// What restores the cluster.
        remedy: String,
    },
    /// The store could not be opened or reached at start.
    #[error("cannot open the store ({store}): {cause}")]
    StorageOpen {
        /// The store (no password).
        store: String,
        /// Why.
        cause: StoreError,
    },
    /// Another process (a running auth server, or an offline command) holds the data
    /// directory.
    #[error(
        "the data directory {data_dir} is in use by another process ({lock_file} is locked): {hint}"
    )]
    DataDirInUse {
        /// The data directory.
        data_dir: PathBuf,
        /// The lock file.
        lock_file: PathBuf,
        /// What to do.
        hint: &'static str,
    },
    /// The listener could not be bound.
    #[error(
        "cannot listen on {addr}: {cause}; is another auth server running there? pick another address with --auth-listen"
    )]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause (in the message, not an error source, so it is printed once).
        cause: std::io::Error,
    },
    /// The diagnostics listener (`diag_addr`) could not be bound.
    #[error("diagnostics listener (--diag-addr): {0}")]
    Diag(#[from] machine_id_diag::DiagError),
    /// Building the TLS configuration failed.
    #[error("tls setup failed: {0}")]
    Tls(String),
    /// A server-side fault that the caller cannot fix.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<MintError> for AuthError {
    fn from(e: MintError) -> Self {
        Self::Mint(e)
    }
}

impl AuthError {
    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::AccessDenied(_) => Code::PermissionDenied,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::InvalidArgument(_) | Self::Config(_) => Code::InvalidArgument,
            Self::FailedPrecondition(_)
            | Self::ClusterNameMismatch { .. }
            | Self::StoreMissing { .. }
            | Self::StorageOpen { .. }
            | Self::DataDirInUse { .. } => Code::FailedPrecondition,
            Self::Retryable(_) => Code::Aborted,
            Self::Unavailable(_) => Code::Unavailable,
            Self::Store(StoreError::Conflict { .. }) => Code::Aborted,
            Self::Store(StoreError::NotFound { .. }) => Code::NotFound,
            Self::Store(StoreError::AlreadyExists { .. }) => Code::AlreadyExists,
            Self::Store(_) => Code::Unavailable,
            Self::Mint(_)
            | Self::Io { .. }
            | Self::FileTooLarge(_)
            | Self::InsecureFile { .. }
            | Self::Listen { .. }
            | Self::Diag(_)
            | Self::Tls(_)
            | Self::Internal(_) => Code::Internal,
        }
    }
}

/// The status metadata key that marks an error of a service behind the auth server.
pub const UPSTREAM_METADATA: &str = "x-machine-id-upstream";

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Self {
        let code = e.code();
        let message = match &e {
            AuthError::Store(StoreError::Conflict { .. }) => {
                "the resource was changed concurrently; retry".to_string()
            }
            _ => e.to_string(),
        };
        if code == Code::Internal || code == Code::Unavailable {
            tracing::error!(error = %e, "call failed on the server side");
        }
        let mut status = Status::new(code, message);
        if matches!(e, AuthError::Unavailable(_)) {
            // Tells clients the auth server answered and a service behind it failed, so they
            // do not report the auth server itself as unreachable.
            status.metadata_mut().insert(
                UPSTREAM_METADATA,
                tonic::metadata::MetadataValue::from_static("sts"),
            );
        }
        status
    }
}

/// Shorthand.
pub(crate) type Result<T, E = AuthError> = std::result::Result<T, E>;
