//! `auth-server`: the Machine ID auth server daemon, a thin layer over `machine-id-auth`.
//!
//! `auth-server start [--config FILE] [--data-dir DIR] [--cluster-name NAME]
//! [--auth-listen ADDR] [--proxy-listen ADDR] [--proxy-public-addr HOST:PORT] [--no-proxy]
//! [--extra-sts-endpoint URL ...] [--diag-addr HOST:PORT] [-d] [--log-format text|json]`.
//! Flags override the config file.
//! Logs go to stderr; once serving, one line goes to stdout: `auth server ready on ADDR`.
//!
//! Storage: SQLite in the data directory by default; `--storage-conn-string` (or
//! `MACHINE_ID_STORAGE_CONN_STRING`, or `storage:` in the config) names a PostgreSQL database
//! several auth servers share. `auth-server backend clone --from CONFIG --to CONFIG` copies a
//! cluster between stores.
//!
//! Recovery on the stopped server's data directory (refused while a server runs on it):
//! `auth-server locks ls [--data-dir DIR | --config FILE]` and
//! `auth-server locks rm NAME [--data-dir DIR | --config FILE]`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use machine_id_auth::offline::{OfflineDataDir, StoreTarget, clone_cluster};
use machine_id_auth::{
    AuthConfig, AuthServer, DEFAULT_DATA_DIR, DEFAULT_LISTEN_ADDR, FileConfig,
    STORAGE_CONN_STRING_ENV, StsEndpoint,
};

fn parse_sts_endpoint(s: &str) -> Result<StsEndpoint, String> {
    StsEndpoint::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Parser)]
#[command(name = "auth-server", version, about = "Machine ID auth server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the auth server.
    Start(StartArgs),
    /// Recovery: list or remove locks in a stopped auth server's data directory (for when no
    /// admin can reach the server, e.g. a lock refuses the admin identity).
    #[command(subcommand)]
    Locks(LocksCommand),
    /// Move a cluster between stores.
    #[command(subcommand)]
    Backend(BackendCommand),
}

#[derive(Debug, Subcommand)]
enum BackendCommand {
    /// Copy a whole cluster (CAs, roles, bots and their generation counters, tokens, nodes,
    /// locks, the audit log) from the store one config names to the (empty) store another
    /// names: SQLite to PostgreSQL or back. Stop the cluster's auth servers first.
    Clone {
        /// The config of the auth server whose cluster to copy.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The config naming the empty store to copy into.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Debug logging.
        #[arg(short = 'd', long)]
        debug: bool,
    },
}

#[derive(Debug, Subcommand)]
enum LocksCommand {
    /// List the locks stored in the data directory.
    Ls(OfflineArgs),
    /// Remove a lock from the data directory.
    Rm {
        /// The lock's name (its id, as `auth-server locks ls` shows it).
        name: String,
        #[command(flatten)]
        dir: OfflineArgs,
    },
}

/// Where the stopped server's data directory is.
#[derive(Debug, clap::Args)]
struct OfflineArgs {
    /// The auth server's YAML configuration file (its data_dir is used).
    #[arg(short = 'c', long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The data directory [default: from the config, else /var/lib/machine-id].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Debug logging.
    #[arg(short = 'd', long)]
    debug: bool,
}

impl OfflineArgs {
    fn data_dir(&self) -> Result<PathBuf> {
        let from_file = match &self.config {
            Some(path) => FileConfig::load(path)?.data_dir,
            None => None,
        };
        Ok(self
            .data_dir
            .clone()
            .or(from_file)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct StartArgs {
    /// YAML configuration file.
    #[arg(short = 'c', long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (store and admin identity) [default: /var/lib/machine-id].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Cluster name [default: from the config, else the host name].
    #[arg(long, value_name = "NAME")]
    cluster_name: Option<String>,
    /// Address to listen on, ip:port [default: 127.0.0.1:3025].
    #[arg(long, value_name = "ADDR")]
    auth_listen: Option<SocketAddr>,
    /// A listener of its own for the SSH proxy, ip:port (it always shares the auth port too,
    /// chosen by ALPN).
    #[arg(long, value_name = "ADDR")]
    proxy_listen: Option<SocketAddr>,
    /// The proxy address clients are told to use (ssh_config, known_hosts), host:port
    /// [default: the proxy listener's, else the auth listener's address].
    #[arg(long, value_name = "HOST:PORT")]
    proxy_public_addr: Option<String>,
    /// Run without the SSH proxy.
    #[arg(long, conflicts_with_all = ["proxy_listen", "proxy_public_addr"])]
    no_proxy: bool,
    /// An STS endpoint the iam join method may use besides the real AWS ones, with its
    /// scheme (`https://sts.internal.example.com`, or `http://127.0.0.1:5000` for tests);
    /// repeatable, added to join_service.extra_sts_endpoints of the config file.
    #[arg(long = "extra-sts-endpoint", value_name = "URL", value_parser = parse_sts_endpoint)]
    extra_sts_endpoints: Vec<StsEndpoint>,
    /// Serve diagnostics over plain HTTP on host:port: /healthz (200 while serving), /readyz
    /// (200 only while the store answers and the change feed is up, else 503 naming the part
    /// that is down) and /metrics (Prometheus text) [default: auth_service.diag_addr of the
    /// config, else none].
    #[arg(long, value_name = "HOST:PORT")]
    diag_addr: Option<String>,
    /// The PostgreSQL database several auth servers share (a postgresql:// URI or libpq
    /// words); storage.type becomes postgresql. Better given through the environment, so
    /// that its password is not on the command line.
    #[arg(long, value_name = "CONN", env = STORAGE_CONN_STRING_ENV, hide_env_values = true)]
    storage_conn_string: Option<String>,
    /// Debug logging.
    #[arg(short = 'd', long)]
    debug: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn init_logging(debug: bool, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // Debug for our crates only: the HTTP/2 and TLS stacks are too chatty to be useful.
    let default = if debug {
        "info,auth_server=debug,machine_id_auth=debug,machine_id_store=debug,machine_id_mint=debug,machine_id_join=debug"
    } else {
        "info"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Merges the flags over the config file over the defaults; logs each flag that overrides the
/// file.
fn resolve(args: &StartArgs) -> Result<AuthConfig> {
    let file = match &args.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    fn pick<T: Clone + std::fmt::Debug>(
        field: &str,
        flag: &Option<T>,
        file: &Option<T>,
    ) -> Option<T> {
        if let (Some(f), Some(c)) = (flag, file) {
            tracing::info!(field, flag = ?f, config = ?c, "flag overrides the config file");
        }
        flag.clone().or_else(|| file.clone())
    }
    let data_dir = pick("data_dir", &args.data_dir, &file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let cluster_name = match pick(
        "auth_service.cluster_name",
        &args.cluster_name,
        &file.auth_service.cluster_name,
    ) {
        Some(n) => n,
        None => hostname::get()
            .context("no cluster name given and the host name cannot be read; pass --cluster-name")?
            .into_string()
            .map_err(|_| anyhow::anyhow!("the host name is not UTF-8; pass --cluster-name"))?,
    };
    let listen_addr = match pick(
        "auth_service.listen_addr",
        &args.auth_listen,
        &file.auth_service.listen_addr,
    ) {
        Some(a) => a,
        None => DEFAULT_LISTEN_ADDR
            .parse()
            .context("default listen address")?,
    };
    let mut config = AuthConfig::new(data_dir, cluster_name, listen_addr);
    config.storage = file
        .storage
        .resolve(args.storage_conn_string.as_deref())
        .map_err(|m| anyhow::anyhow!(m))?;
    file.apply_limits(&mut config);
    if let Some(suite) = file.auth_service.ca_suite {
        config.suite = suite;
    }
    config.diag_addr = pick(
        "auth_service.diag_addr",
        &args.diag_addr,
        &file.auth_service.diag_addr,
    );
    config.proxy_enabled = !args.no_proxy && file.proxy_service.enabled != Some(false);
    config.proxy_listen_addr = pick(
        "proxy_service.listen_addr",
        &args.proxy_listen,
        &file.proxy_service.listen_addr,
    );
    config.proxy_public_addr = pick(
        "proxy_service.public_addr",
        &args.proxy_public_addr,
        &file.proxy_service.public_addr,
    );
    if let Some(public) = &config.proxy_public_addr
        && public
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
    {
        anyhow::bail!(
            "proxy public address {public:?} is not host:port; pass e.g. --proxy-public-addr=proxy.example.com:3080"
        );
    }
    // FileConfig::parse checked every URL already.
    config.extra_sts_endpoints = file
        .join_service
        .extra_sts_endpoints
        .iter()
        .filter_map(|u| StsEndpoint::parse(u).ok())
        .chain(args.extra_sts_endpoints.iter().cloned())
        .collect();
    config.validate()?;
    Ok(config)
}

async fn start(args: StartArgs) -> Result<()> {
    let config = resolve(&args)?;
    let data_dir = config.data_dir.clone();
    let server = AuthServer::start(config).await.with_context(|| {
        format!(
            "cannot start the auth server (data dir {})",
            data_dir.display()
        )
    })?;
    let pins: Vec<String> = server.ca_pins().iter().map(ToString::to_string).collect();
    tracing::info!(
        addr = %server.local_addr(),
        cluster = %server.cluster_name(),
        ca_pin = %pins.join(","),
        admin_identity = %server.admin_identity_dir().display(),
        "auth server listening"
    );
    if let Some(proxy) = server.proxy_public_addr() {
        tracing::info!(
            public_addr = %proxy,
            listen = %server.proxy_local_addr().map_or_else(|| format!("{} (shared, ALPN)", server.local_addr()), |a| a.to_string()),
            "SSH proxy listening"
        );
    }
    // The handlers are in place before the ready line: a SIGTERM right after it stops the
    // server cleanly instead of killing it.
    let signals = Signals::new();
    println!("auth server ready on {}", server.local_addr());

    let handle = server.shutdown_handle();
    tokio::spawn(async move {
        match signals {
            Ok(mut s) => {
                let name = s.wait().await;
                tracing::info!(signal = name, "stopping");
            }
            Err(e) => tracing::error!(error = %e, "cannot listen for signals; stopping"),
        }
        handle.shutdown();
    });
    server.wait().await?;
    Ok(())
}

/// SIGINT and SIGTERM, listened for from creation on.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// The name of the first signal to arrive.
    async fn wait(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// The data directory and storage a config file names (for `backend clone`).
fn store_target(path: &std::path::Path) -> Result<StoreTarget> {
    let file = FileConfig::load(path)?;
    let storage = file
        .storage
        .resolve(None)
        .map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
    Ok(StoreTarget {
        data_dir: file
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        storage,
    })
}

/// `auth-server backend clone`.
async fn backend(cmd: BackendCommand) -> Result<()> {
    let BackendCommand::Clone { from, to, .. } = cmd;
    let report = clone_cluster(&store_target(&from)?, &store_target(&to)?)
        .await
        .context("backend clone failed; the target was left as it was")?;
    let keys: Vec<String> = report
        .keys
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    println!(
        "Copied cluster {:?}: {} keys ({}) and {} audit events. Start the auth servers with {} now.",
        report.cluster_name,
        report.keys.values().sum::<usize>(),
        keys.join(", "),
        report.events,
        to.display()
    );
    Ok(())
}

/// `auth-server locks ls|rm` on a stopped server's data directory.
async fn locks(cmd: LocksCommand) -> Result<()> {
    let args = match &cmd {
        LocksCommand::Ls(a) | LocksCommand::Rm { dir: a, .. } => a,
    };
    let data_dir = args.data_dir()?;
    let dir = OfflineDataDir::open(&data_dir)
        .await
        .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?;
    match &cmd {
        LocksCommand::Ls(_) => {
            let locks = dir.list_locks().await?;
            let rows: Vec<[String; 4]> = locks
                .iter()
                .map(|l| {
                    [
                        l.metadata.name.clone(),
                        l.target_text(),
                        l.spec.message.clone(),
                        l.metadata.expires.map_or_else(
                            || "never".to_string(),
                            |t| {
                                t.format(&time::format_description::well_known::Rfc3339)
                                    .unwrap_or_default()
                            },
                        ),
                    ]
                })
                .collect();
            print!(
                "{}",
                machine_id_types::table::render(["ID", "Target", "Message", "Expires"], &rows)
            );
        }
        LocksCommand::Rm { name, .. } => {
            let lock = dir.remove_lock(name).await?;
            println!(
                "Lock {name:?} ({}) has been removed from {}; start the auth server again.",
                lock.target_text(),
                data_dir.display()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (debug, format) = match &cli.command {
        Command::Start(args) => (args.debug, args.log_format),
        Command::Locks(LocksCommand::Ls(a) | LocksCommand::Rm { dir: a, .. }) => {
            (a.debug, LogFormat::Text)
        }
        Command::Backend(BackendCommand::Clone { debug, .. }) => (*debug, LogFormat::Text),
    };
    init_logging(debug, format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async {
        match cli.command {
            Command::Start(args) => start(args).await,
            Command::Locks(cmd) => locks(cmd).await,
            Command::Backend(cmd) => backend(cmd).await,
        }
    };
    match rt.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
