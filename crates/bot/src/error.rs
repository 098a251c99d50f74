//! The crate's one error type.

use std::path::PathBuf;

use machine_id_client::ClientError;
use machine_id_destination::DestinationError;

/// Everything the bot can fail with. Messages are lower-case, name the cause and, where a
/// person can act, say what to do. They never include keys, tokens or certificate bodies.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BotError {
    /// The configuration file or flags are not valid.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The configuration file could not be read or parsed.
    #[error("cannot read the config file {path}: {message}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What went wrong (for YAML: the line and field).
        message: String,
    },

    /// The token file named by `--token` could not be read.
    #[error(
        "cannot read the token file {path}: {source}; pass the token itself or a readable file"
    )]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// A file the user pointed tbot at (token, CA file, config) is larger than any such file
    /// can be; it was not read whole.
    #[error(
        "the {what} {} is {}, more than the {limit}-byte limit for a {what}; {fix}",
        path.display(),
        crate::bounded::size_text(*size, *limit)
    )]
    FileTooLarge {
        /// "token file", "CA file" or "config file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Its size, when known (not for pipes and devices).
        size: Option<u64>,
        /// The limit in bytes.
        limit: u64,
        /// What to do.
        fix: &'static str,
    },

    /// A destination and the data directory overlap, so writing one would destroy the other.
    #[error(
        "destination {} {relation} the data directory {}: tbot replaces the destination's files and keeps its own identity in the data directory, so the two must not overlap; choose a --destination-dir outside --data-dir and the data directory outside every destination (e.g. --data-dir=/var/lib/teleport/bot --destination-dir=/opt/machine-id)",
        destination.display(),
        data_dir.display()
    )]
    Overlap {
        /// The destination, as given.
        destination: PathBuf,
        /// The data directory, as given.
        data_dir: PathBuf,
        /// "is", "lies inside" or "contains".
        relation: &'static str,
    },

    /// Neither a CA pin nor a CA file was given and `insecure` is off.
    #[error(
        "no CA pin or CA path given, so the auth server cannot be authenticated; pass --ca-pin=sha256:... as printed by `tctl bots add` (or `tctl status`), or set onboarding.ca_path; --insecure skips the check (testing only)"
    )]
    NoTrustAnchor,

    /// The bot has no usable identity and no token to join with.
    #[error(
        "no token to join with and no valid identity in {storage}; create a token with `tctl bots add` and pass it with --token"
    )]
    NoToken {
        /// Where the identity was looked for.
        storage: String,
    },

    /// The stored identity expired and the token cannot join again.
    #[error(
        "the bot's identity expired at {expired} and joining again failed ({cause}); a bot whose certificates lapse must join again with a fresh token: `tctl bots add` (or `tctl tokens add`) and restart tbot with the new --token"
    )]
    IdentityExpired {
        /// When it expired (RFC 3339).
        expired: String,
        /// Why joining again failed.
        cause: String,
    },

    /// The cluster's CAs were rotated while the bot was offline: the server rejects the
    /// bot's certificate, or the bot cannot verify the server's. Only a new join fixes it.
    #[error(
        "the cluster's certificate authorities were rotated while this bot was offline ({detail}); join again with a new token: `tctl tokens add --type=bot --bot={bot}` (or `tctl bots add` for a new bot), then restart tbot with --token=<the new token> (the join replaces the stale identity in {storage})"
    )]
    CaRotatedWhileOffline {
        /// What the bot saw.
        detail: String,
        /// The bot's name.
        bot: String,
        /// Where the bot keeps its identity.
        storage: String,
    },

    /// The join was refused (bad, expired or used token, wrong method).
    #[error("joining the cluster failed: {0}")]
    JoinRefused(String),

    /// The bot cannot build its AWS proof for an `iam` join: no credentials found, or the
    /// credentials service failed.
    #[error("cannot prove the AWS identity for the iam join: {0}")]
    Aws(machine_id_join::iam::IamError),

    /// The server refuses this bot: locked or deleted.
    #[error("the auth server refuses this bot: {0}")]
    Refused(String),

    /// A call to the auth server failed.
    #[error(transparent)]
    Client(#[from] ClientError),

    /// A destination could not be written.
    #[error(transparent)]
    Destination(#[from] DestinationError),

    /// The data directory could not be read or written.
    #[error("data directory {path}: {message}")]
    DataDir {
        /// The directory or file.
        path: PathBuf,
        /// What went wrong and what to do.
        message: String,
    },

    /// Another tbot holds the data directory.
    #[error(
        "data directory {path} is in use by another tbot (it holds the lock on {path}/lock); run one tbot per data directory, or give this one its own --data-dir"
    )]
    DataDirLocked {
        /// The directory.
        path: PathBuf,
    },

    /// A certificate or key the server sent (or one stored) is not usable.
    #[error("invalid {what}: {message}")]
    Invalid {
        /// Which artifact.
        what: String,
        /// What is wrong.
        message: String,
    },

    /// The bot was asked to stop.
    #[error("stopped")]
    Stopped,

    /// Anything else that went wrong locally (a thread that panicked, a listener that failed).
    #[error("{0}")]
    Internal(String),
}

impl BotError {
    /// Whether the loop may retry after this error (a server that cannot be reached now, a
    /// lost race, a full disk); other errors end [`Bot::run`](crate::Bot::run).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Client(e) => e.is_retryable() || matches!(e, ClientError::Server { .. }),
            // Full disks, concurrent readers and interrupted writes clear up; a symlink
            // refused, a read-only or unwritable path needs a person.
            Self::Destination(e) => matches!(
                e,
                DestinationError::DiskFull { .. }
                    | DestinationError::Busy { .. }
                    | DestinationError::InterruptedWrite { .. }
                    | DestinationError::Incomplete { .. }
                    | DestinationError::Io { .. }
            ),
            Self::DataDir { .. } => true,
            // A metadata service that hiccuped may answer next time; missing credentials
            // need a person.
            Self::Aws(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Maps an error of a call made with the bot's own identity: a denial means the bot is
/// locked or deleted, which no retry can fix.
pub(crate) fn refusal(e: ClientError) -> BotError {
    match e {
        ClientError::PermissionDenied(m) | ClientError::Unauthenticated(m) => BotError::Refused(m),
        other => BotError::Client(other),
    }
}

/// The result type of this crate.
pub type Result<T, E = BotError> = std::result::Result<T, E>;
