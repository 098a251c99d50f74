//! `tctl`: the Machine ID admin tool. Argument parsing, output formatting and exit codes over
//! `machine-id-client`; no logic another program would need.
//!
//! Errors print as `ERROR: <message>` on stderr with exit code 1; usage errors exit 2.
#![forbid(unsafe_code)]

mod commands;
mod output;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

/// Administer a Machine ID cluster: roles, bots, tokens, nodes, locks, CAs and the audit log.
#[derive(Debug, Parser)]
#[command(name = "tctl", version, about)]
pub(crate) struct Cli {
    /// The auth server, host:port; for several servers of one cluster, repeat the flag or
    /// give a comma-separated list (a:3025,b:3025), tried in turn.
    #[arg(
        long,
        env = "TELEPORT_AUTH_SERVER",
        default_value = "127.0.0.1:3025",
        global = true
    )]
    auth_server: String,

    /// The admin identity directory (key, tlscert, tlscacerts) the auth server writes.
    #[arg(
        long,
        env = "TCTL_IDENTITY",
        default_value = "/var/lib/machine-id/admin",
        global = true
    )]
    identity: PathBuf,

    /// Log debug messages to stderr.
    #[arg(short = 'd', long, global = true)]
    debug: bool,

    #[command(subcommand)]
    command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// For people: tables and sentences.
    Text,
    /// YAML resource documents (`---`-separated), as `tctl create` reads them.
    Yaml,
    /// JSON, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Show the cluster name, CA pins, CA fingerprints and each CA's rotation state.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// Show resources: KIND (roles, tokens, bots, nodes, locks, users, cert_authorities) or
    /// KIND/NAME.
    Get {
        /// `roles`, `roles/NAME`, `tokens`, `bots`, `nodes`, `locks`, `users`,
        /// `cert_authorities` (`cas`), `cert_authority/user`, ...
        resource: String,
        /// Output format (default: text for a list, yaml for one resource).
        #[arg(long, value_enum)]
        format: Option<Format>,
    },
    /// Create resources from a YAML file (role, token, node, lock; several documents allowed).
    Create {
        /// Overwrite resources that exist.
        #[arg(short = 'f', long)]
        force: bool,
        /// The YAML file.
        file: PathBuf,
    },
    /// Delete a resource: KIND/NAME.
    Rm {
        /// `roles/NAME`, `tokens/NAME`, `nodes/ID`, `locks/ID`, `bots/NAME`.
        resource: String,
    },
    /// Manage bots.
    #[command(subcommand)]
    Bots(BotsCommand),
    /// Manage join tokens.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Manage SSH nodes.
    #[command(subcommand)]
    Nodes(NodesCommand),
    /// Export CAs, sign host certificates and rotate CAs.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Manage locks.
    #[command(subcommand)]
    Locks(LocksCommand),
    /// Read the audit log.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Load the auth server as a fleet of tbots would and measure it: creates (or reuses)
    /// and joins --bots bots, then runs each workload from --concurrency workers for
    /// --duration and prints requests/s, latency percentiles, errors, locks, and the
    /// server's CPU and store commits per request where it can read them.
    Bench(BenchArgs),
}

/// `tctl bench`. The numbers are checked by the command before connecting.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The bots to create (or reuse from an earlier run with the same --prefix) and join.
    #[arg(long, default_value_t = 100)]
    pub bots: usize,
    /// Workers; each owns --bots/--concurrency bots and makes one request at a time.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// How long each workload runs (e.g. 10s, 1m).
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// What to run: renew (bot identity renewals, a new connection each), cycle (whole tbot
    /// cycles: renewal + one output), output (output certificates over a kept connection),
    /// output-new-conn (over a new connection each), join (first joins, a token each), or
    /// all of them in turn.
    #[arg(long, value_enum, default_value = "all")]
    pub workload: BenchWorkload,
    /// The bots' names are PREFIX-0, PREFIX-1, ...
    #[arg(long, default_value = "bench")]
    pub prefix: String,
    /// The auth server's process id on this machine: report its CPU time per request.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The auth server's diagnostics address (auth-server --diag-addr): report its store
    /// commits (fsyncs) per request.
    #[arg(long, value_name = "HOST:PORT")]
    pub diag_addr: Option<String>,
    /// Output format: a table, or one JSON object per workload and line.
    #[arg(long, value_enum, default_value = "text")]
    pub format: BenchFormat,
}

/// `tctl bench --workload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchWorkload {
    /// Bot identity renewals.
    Renew,
    /// Whole tbot cycles.
    Cycle,
    /// Output certificates over a kept connection.
    Output,
    /// Output certificates over a new connection each.
    OutputNewConn,
    /// First joins.
    Join,
    /// Every workload in turn: join, renew, cycle, output, output-new-conn.
    All,
}

/// `tctl bench --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BenchFormat {
    /// A table for people.
    Text,
    /// One JSON object per workload, one per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BotsCommand {
    /// Create a bot and a token it joins with.
    Add(BotsAdd),
    /// List bots.
    Ls(FormatArg),
    /// Delete a bot (its user, role and tokens).
    Rm {
        /// The bot's name.
        name: String,
    },
    /// Lock a bot: it can make no call and get no certificate until the lock is removed.
    Lock {
        /// The bot's name.
        name: String,
        /// Why, for people.
        #[arg(long, default_value = "")]
        message: String,
        /// How long the lock lasts (default: until removed).
        #[arg(long)]
        ttl: Option<String>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct BotsAdd {
    /// The bot's name; its user and role are bot-NAME.
    pub name: String,
    /// Roles the bot may impersonate, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub roles: Vec<String>,
    /// The bot's logins trait, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub logins: Vec<String>,
    /// Join with this existing token (e.g. an iam token) instead of a fresh one.
    #[arg(long)]
    pub token: Option<String>,
    /// Lifetime of the fresh token.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokensCommand {
    /// Create a join token.
    Add {
        /// The token type; only `bot`.
        #[arg(long = "type")]
        kind: String,
        /// The bot the token admits.
        #[arg(long)]
        bot: Option<String>,
        /// Lifetime.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// List join tokens.
    Ls(FormatArg),
    /// Delete a join token.
    Rm {
        /// The token.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum NodesCommand {
    /// Register an OpenSSH node.
    Add {
        /// The name users address the node by.
        #[arg(long)]
        name: String,
        /// host:port of its sshd.
        #[arg(long)]
        addr: String,
        /// Labels, k=v,k2=v2.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
    /// List nodes.
    Ls(FormatArg),
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// Print a CA: user (TrustedUserCAKeys line), host (known_hosts line) or tls (PEM).
    Export {
        /// user, host or tls.
        #[arg(long = "type")]
        kind: String,
    },
    /// Generate a host key here and have the host CA sign it for OpenSSH's sshd.
    Sign {
        /// Host names, comma-separated (the server adds `NAME.<cluster>`).
        #[arg(long, value_delimiter = ',', required = true)]
        host: Vec<String>,
        /// Output format; only openssh.
        #[arg(long, default_value = "openssh")]
        format: String,
        /// Where to write: PREFIX (private key), PREFIX.pub, PREFIX-cert.pub.
        #[arg(long)]
        out: PathBuf,
        /// Certificate lifetime.
        #[arg(long, default_value = "12h")]
        ttl: String,
    },
    /// Rotate CAs: move a manual rotation to a phase (`--manual --phase=PHASE`), or start an
    /// automatic one (`--grace-period=DUR`).
    Rotate(RotateArgs),
}

/// `tctl auth rotate`. The flags are checked by the command (not by the parser) so every
/// mistake is an `ERROR:` line naming the allowed values, with exit code 1.
#[derive(Debug, Args)]
pub(crate) struct RotateArgs {
    /// The CAs to rotate: user, host, tls or all.
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// The phase to move to (with --manual): init, update_clients, update_servers, standby
    /// or rollback.
    #[arg(long)]
    pub phase: Option<String>,
    /// A manual rotation: the operator moves every phase with --phase.
    #[arg(long)]
    pub manual: bool,
    /// Start an automatic rotation: the auth servers move to update_clients, update_servers
    /// and standby at thirds of this period (e.g. 48h). 0 replaces the keys at once.
    #[arg(long)]
    pub grace_period: Option<String>,
    /// Do not ask for confirmation (of --grace-period=0).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Output format: text, or the CAs as they are after the change (yaml, json).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LocksCommand {
    /// List locks.
    Ls(FormatArg),
    /// Delete a lock.
    Rm {
        /// The lock's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// List the newest audit events that match, oldest first.
    ///
    /// When more match than shown, text output says so after the table (json and yaml
    /// output on stderr) with the `--page` value that shows the next, older ones.
    Ls(EventsLs),
}

/// `tctl events ls`.
#[derive(Debug, Args)]
pub(crate) struct EventsLs {
    /// Only events of this type (e.g. bot.create).
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Only events at or after this time: a duration back from now (`30m`, `24h`) or an
    /// RFC 3339 time (`2025-01-31T12:00:00Z`).
    #[arg(long, value_name = "DUR|RFC3339", value_parser = time_or_ago)]
    pub since: Option<time::OffsetDateTime>,
    /// Only events before this time: a duration back from now or an RFC 3339 time.
    #[arg(long, value_name = "DUR|RFC3339", value_parser = time_or_ago)]
    pub until: Option<time::OffsetDateTime>,
    /// At most this many, the newest (0: the server's default, 1000; at most 10000).
    #[arg(long, default_value_t = 0)]
    pub limit: u32,
    /// The next, older page of the same search: the value a previous run printed.
    #[arg(long)]
    pub page: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// An RFC 3339 time, or a Go-style duration (`90m`, `24h`) back from now.
fn time_or_ago(s: &str) -> Result<time::OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &Rfc3339) {
        return Ok(t);
    }
    match machine_id_types::duration::parse(s) {
        Ok(d) => time::Duration::try_from(d)
            .ok()
            .and_then(|d| time::OffsetDateTime::now_utc().checked_sub(d))
            .ok_or_else(|| format!("{s} reaches too far back")),
        Err(_) => Err(format!(
            "{s:?} is neither a duration back from now (30m, 24h, 720h) nor an RFC 3339 time \
             (2025-01-31T12:00:00Z)"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(machine_id_cli::join_repeated_flag(
        std::env::args_os(),
        &["--auth-server"],
    ));
    machine_id_cli::init_logging(cli.debug);
    machine_id_cli::run(commands::run(cli))
}
