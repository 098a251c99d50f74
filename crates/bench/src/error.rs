//! What can stop a bench before or between workloads. Failures of single requests during a
//! workload are not errors of the bench: they are counted in the report, by kind.

use machine_id_client::ClientError;

/// Why a bench could not run (or could not go on).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// `--bots` or `--concurrency` is zero.
    #[error("--{flag} must be at least 1")]
    Zero {
        /// The flag (`bots`, `concurrency`).
        flag: &'static str,
    },

    /// More workers than bots: a bot never renews concurrently with itself, so each worker
    /// needs bots of its own.
    #[error(
        "--concurrency {concurrency} is more than --bots {bots}: each worker needs a bot of its own, since a bot never renews concurrently with itself; raise --bots to at least {concurrency} or lower --concurrency"
    )]
    ConcurrencyOverBots {
        /// `--bots`.
        bots: usize,
        /// `--concurrency`.
        concurrency: usize,
    },

    /// A zero duration measures nothing.
    #[error("--duration must be more than zero, e.g. --duration 10s")]
    ZeroDuration,

    /// No workload was asked for.
    #[error(
        "no workload to run; pass --workload renew, cycle, output, output-new-conn, join or all"
    )]
    NoWorkload,

    /// The bot name prefix cannot make bot names.
    #[error(
        "invalid --prefix {prefix:?}: {message}; use letters, digits, '-', '_' or '.', e.g. --prefix bench"
    )]
    InvalidPrefix {
        /// What was given.
        prefix: String,
        /// What is wrong.
        message: String,
    },

    /// The identity tctl uses may not create bots.
    #[error(
        "the identity tctl uses may not manage bots ({message}); tctl bench creates bots and tokens, so it needs the auth server's admin identity: pass --identity DATA_DIR/admin"
    )]
    NotAdmin {
        /// The server's refusal.
        message: String,
    },

    /// A bot left by an earlier run with the same prefix cannot join again (it is locked,
    /// for example after a generation mismatch).
    #[error(
        "bot {bot:?}, left by an earlier run with --prefix {prefix}, cannot join again: {message}; remove its locks (tctl locks ls, tctl locks rm ID) or the bots of that run (tctl bots rm {bot}, ...), or use another --prefix"
    )]
    StaleBot {
        /// The bot.
        bot: String,
        /// The prefix of its run.
        prefix: String,
        /// The server's refusal.
        message: String,
    },

    /// Creating or joining one of the bench's bots failed.
    #[error("setting up bot {bot:?}: {cause}")]
    Setup {
        /// The bot.
        bot: String,
        /// What the client said (in the message, not a separate cause, so it is not
        /// printed twice).
        cause: Box<ClientError>,
    },

    /// `--server-pid` names no process whose CPU times can be read here.
    #[error(
        "cannot read the CPU times of process {pid} ({path}: {message}); --server-pid must be the auth server's process id on this machine"
    )]
    ServerPid {
        /// The process id given.
        pid: u32,
        /// The file read.
        path: String,
        /// Why it could not be read.
        message: String,
    },

    /// `--diag-addr` does not serve the auth server's metrics.
    #[error(
        "cannot read metrics from http://{addr}/metrics: {message}; --diag-addr must be the auth server's diagnostics address (auth-server start --diag-addr HOST:PORT)"
    )]
    Diag {
        /// The address given.
        addr: String,
        /// What went wrong.
        message: String,
    },

    /// A call the bench itself makes with the admin identity (listing locks, making join
    /// tokens) failed.
    #[error("{what}: {cause}")]
    Admin {
        /// What the bench was doing.
        what: String,
        /// What the client said (in the message, not a separate cause).
        cause: Box<ClientError>,
    },

    /// Key generation or certificate minting failed in this process.
    #[error("{0}")]
    Mint(#[from] machine_id_mint::MintError),

    /// A worker task ended abnormally (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}
