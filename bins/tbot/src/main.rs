//! `tbot`: the Machine ID bot. Argument parsing, logging, signals and exit codes over
//! `machine-id-bot`; no logic another program would need.
//!
//! Errors print as one `ERROR: <message>` line on stderr with exit code 1; usage errors exit 2.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use machine_id_bot::config::{parse_duration, parse_join_method};
use machine_id_bot::{Bot, BotBuilder, BotConfig, Overrides};
use machine_id_destination::{InitAcls, SymlinkPolicy, UnixUser, init_acls};

/// Join a Machine ID cluster and keep short-lived SSH and X.509 certificates fresh in a
/// destination directory.
#[derive(Debug, Parser)]
#[command(name = "tbot", version, about)]
struct Cli {
    /// Log debug messages.
    #[arg(short = 'd', long, global = true)]
    debug: bool,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Join (or reuse the stored identity), write the destination, and keep renewing.
    Start(StartArgs),
    /// Print the YAML configuration the flags (and -c file) amount to.
    Configure(StartArgs),
    /// Prepare a destination directory so a reader user can read what the bot user writes.
    Init(InitArgs),
    /// Connect through the cluster's proxy (ssh_config's ProxyCommand).
    Proxy(ProxyArgs),
}

#[derive(Debug, Args)]
struct ProxyArgs {
    /// The destination whose certificate (key, tlscert, tlscacerts) authenticates.
    #[arg(long)]
    destination_dir: PathBuf,
    /// The destination's symlink policy (the generated ssh_config passes it when it is not
    /// the default).
    #[arg(long, default_value = "try-secure")]
    symlinks: SymlinkPolicy,
    /// The proxy, host:port, or a comma-separated list tried in turn.
    #[arg(long)]
    proxy: String,
    #[command(subcommand)]
    protocol: ProxyProtocol,
}

#[derive(Debug, Subcommand)]
enum ProxyProtocol {
    /// Relay stdin/stdout to a node's sshd: `ssh --cluster=NAME USER@HOST:PORT`.
    Ssh {
        /// The cluster the node belongs to (its suffix is stripped from HOST).
        #[arg(long)]
        cluster: String,
        /// `user@node.cluster:port`, as ssh's `%r@%h:%p`.
        target: String,
    },
}

#[derive(Debug, Args)]
struct StartArgs {
    /// A YAML config file (v1); flags override its values.
    #[arg(short = 'c', long)]
    config: Option<PathBuf>,

    /// Where the bot keeps its own identity [default: /var/lib/teleport/bot].
    #[arg(long)]
    data_dir: Option<PathBuf>,

    /// Where the output certificates and ssh_config are written.
    #[arg(long)]
    destination_dir: Option<PathBuf>,

    /// The join token, or a path to a file holding it; for --join-method=iam, the iam
    /// token's name (no secret).
    #[arg(long, env = "TELEPORT_BOT_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// How to join: token (single-use secret, then renewals) or iam (a signed AWS
    /// sts:GetCallerIdentity request from the credentials of this machine; every renewal
    /// joins again).
    #[arg(long, value_parser = parse_join_method)]
    join_method: Option<machine_id_bot::config::JoinMethod>,

    /// A CA pin (`sha256:<hex>`) as printed by `tctl bots add`; repeat the flag or give a
    /// comma-separated list for several (during a CA rotation `tctl status` shows two).
    #[arg(long = "ca-pin", value_delimiter = ',')]
    ca_pins: Vec<String>,

    /// A PEM file of the cluster's CA certificates, instead of --ca-pin.
    #[arg(long)]
    ca_path: Option<PathBuf>,

    /// The auth server, host:port; for several servers of one cluster, repeat the flag or
    /// give a comma-separated list (a:3025,b:3025): the bot moves to the next when one cannot
    /// be reached.
    #[arg(long, env = "TELEPORT_AUTH_SERVER")]
    auth_server: Vec<String>,

    /// The lifetime of the certificates [default: 60m].
    #[arg(long, value_parser = parse_duration)]
    certificate_ttl: Option<Duration>,

    /// The time between renewals [default: 20m].
    #[arg(long, value_parser = parse_duration)]
    renewal_interval: Option<Duration>,

    /// Write the outputs once and exit.
    #[arg(long)]
    oneshot: bool,

    /// Serve /livez, /readyz and /metrics on this host:port.
    #[arg(long)]
    diag_addr: Option<String>,

    /// Without a CA pin or CA path, trust whatever CA the auth server presents (testing only).
    #[arg(long)]
    insecure: bool,
}

#[derive(Debug, Args)]
struct InitArgs {
    /// The destination directory to prepare.
    #[arg(long)]
    destination_dir: PathBuf,
    /// The user tbot runs as.
    #[arg(long)]
    bot_user: String,
    /// The user that reads the outputs.
    #[arg(long)]
    reader_user: String,
    /// The directory's owner, `user[:group]` (default: the bot user).
    #[arg(long)]
    owner: Option<String>,
    /// Remove the files of an existing set first.
    #[arg(long)]
    clean: bool,
    /// Symlink policy for the destination path.
    #[arg(long, default_value = "try-secure")]
    symlinks: SymlinkPolicy,
}

fn init_logging(debug: bool, format: LogFormat) {
    init_logging_level(if debug { "debug" } else { "info" }, format);
}

fn init_logging_level(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The config file (if any) with the flags applied over it.
fn effective_config(args: StartArgs) -> anyhow::Result<BotConfig> {
    let mut config = match &args.config {
        Some(path) => BotConfig::load(path)?,
        None => BotConfig::default(),
    };
    let from_file = args.config.is_some();
    let changed = config.apply(Overrides {
        auth_server: (!args.auth_server.is_empty()).then(|| args.auth_server.join(",")),
        certificate_ttl: args.certificate_ttl,
        renewal_interval: args.renewal_interval,
        oneshot: args.oneshot,
        join_method: args.join_method,
        token: args.token,
        ca_pins: args.ca_pins,
        ca_path: args.ca_path,
        data_dir: args.data_dir,
        destination_dir: args.destination_dir,
        insecure: args.insecure,
        diag_addr: args.diag_addr,
    });
    if from_file {
        for field in changed {
            tracing::info!(field, "a command-line flag overrides the config file");
        }
    }
    Ok(config)
}

async fn start(args: StartArgs) -> anyhow::Result<()> {
    let config = effective_config(args)?;
    config.validate()?;
    if config.destinations.is_empty() {
        anyhow::bail!(
            "no destination; pass --destination-dir=/opt/machine-id (or destinations: in the config)"
        );
    }
    let bot = BotBuilder::from_config(&config)?.build()?;
    if let Some(addr) = &config.diag_addr {
        let (_, serve) = machine_id_bot::serve_diag(bot.clone(), addr).await?;
        tokio::spawn(serve);
    }
    spawn_signal_handlers(&bot)?;
    bot.run().await?;
    Ok(())
}

/// SIGHUP and SIGUSR1 renew now; SIGINT and SIGTERM stop cleanly.
fn spawn_signal_handlers(bot: &Bot) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, stop) in [
        (SignalKind::hangup(), false),
        (SignalKind::user_defined1(), false),
        (SignalKind::interrupt(), true),
        (SignalKind::terminate(), true),
    ] {
        let mut sig = signal(kind).context("installing a signal handler")?;
        let bot = bot.clone();
        tokio::spawn(async move {
            while sig.recv().await.is_some() {
                if stop {
                    tracing::info!("signal received: stopping");
                    bot.stop();
                } else {
                    tracing::info!("signal received: renewing now");
                    bot.renew_now();
                }
            }
        });
    }
    Ok(())
}

fn configure(args: StartArgs) -> anyhow::Result<()> {
    let mut config = effective_config(args)?;
    if config.storage.directory.is_none() && config.storage.memory.is_none() {
        config.storage.directory = config.storage.data_dir();
    }
    print!("{}", config.to_yaml()?);
    Ok(())
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let init = InitAcls {
        destination_dir: args.destination_dir,
        bot_user: UnixUser::lookup(&args.bot_user)?,
        reader_user: UnixUser::lookup(&args.reader_user)?,
        owner: args
            .owner
            .as_deref()
            .map(UnixUser::parse_owner)
            .transpose()?,
        clean: args.clean,
        symlinks: args.symlinks,
    };
    init_acls(&init)?;
    println!(
        "Prepared {} for bot user {} and reader user {}.",
        init.destination_dir.display(),
        args.bot_user,
        args.reader_user
    );
    Ok(())
}

async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let ProxyProtocol::Ssh { cluster, target } = args.protocol;
    tracing::debug!(cluster = %cluster, target = %target, "proxy ssh");
    machine_id_bot::enlarge_stdio_pipes();
    machine_id_bot::proxy_ssh(
        &args.destination_dir,
        args.symlinks,
        &args.proxy,
        &target,
        tokio::io::stdin(),
        tokio::io::stdout(),
    )
    .await?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Under ssh, stderr is the user's terminal: the proxy logs only warnings unless -d.
    let quiet_proxy = matches!(cli.command, Command::Proxy(_)) && !cli.debug;
    if quiet_proxy {
        init_logging_level("warn", cli.log_format);
    } else {
        init_logging(cli.debug, cli.log_format);
    }
    let result = match cli.command {
        Command::Start(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| rt.block_on(start(args))),
        Command::Proxy(args) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
            .and_then(|rt| {
                let result = rt.block_on(proxy(args));
                // The read of stdin sits on a blocking thread until ssh writes again; when the
                // proxy ended the connection (a lock, the node went away), exit now instead of
                // waiting for it.
                rt.shutdown_background();
                result
            }),
        Command::Configure(args) => configure(args),
        Command::Init(args) => init(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ERROR: {e:#}");
            ExitCode::FAILURE
        }
    }
}
