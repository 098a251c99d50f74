//! One module per command group; each calls the client and formats the answer. This module
//! dispatches a parsed command and holds what the groups share: connecting with the admin
//! identity, bounded file reads, TTL parsing and the CA pins. `auth rotate`'s flags are
//! checked before connecting.

mod auth;
mod bench;
mod bots;
mod cas;
mod events;
mod instructions;
mod locks;
mod nodes;
mod resources;
mod rotate;
mod status;
mod tables;
mod tokens;

use crate::{AuthCommand, Cli, Command, EventsCommand};
use anyhow::{Context, Result, bail};
use machine_id_client::{CaPin, Client, ClientIdentity, ca_pins};
use machine_id_types::duration;
use std::path::Path;
use std::time::Duration;

/// Runs one command.
pub(crate) async fn run(cli: Cli) -> Result<()> {
    // `tctl auth rotate` checks its flags before connecting, so a mistake is reported
    // without sending anything (with the CAs' phases, when the mistake was the phase).
    if let Command::Auth(AuthCommand::Rotate(args)) = &cli.command
        && let Err(e) = rotate::check(args)
    {
        return Err(rotate::explain(e, &cli).await);
    }
    // So does `tctl bench`: a bad number is reported before connecting.
    if let Command::Bench(args) = &cli.command {
        bench::config(args)?;
    }
    let client = connect(&cli).await?;
    let addr = cli.auth_server.as_str();
    match cli.command {
        Command::Status { format } => status::status(&client, format).await,
        Command::Get { resource, format } => resources::get(&client, &resource, format).await,
        Command::Create { force, file } => resources::create(&client, &file, force).await,
        Command::Rm { resource } => resources::rm(&client, &resource).await,
        Command::Bots(cmd) => bots::run(&client, addr, cmd).await,
        Command::Tokens(cmd) => tokens::run(&client, addr, cmd).await,
        Command::Nodes(cmd) => nodes::run(&client, cmd).await,
        Command::Auth(cmd) => auth::run(&client, cmd).await,
        Command::Locks(cmd) => locks::run(&client, cmd).await,
        Command::Events(EventsCommand::Ls(args)) => events::ls(&client, &args).await,
        Command::Bench(args) => {
            bench::run(&client, addr, &bench::config(&args)?, args.format).await
        }
    }
}

/// The most `tctl create` reads from a resource file (4 MiB).
const MAX_RESOURCE_FILE: u64 = 4 * 1024 * 1024;
/// The most each file of an identity directory may hold (1 MiB).
const MAX_IDENTITY_FILE: u64 = 1024 * 1024;

/// `4 MiB`, `512 KiB`, `100 bytes`.
fn size_text(n: u64) -> String {
    if n >= 1024 * 1024 && n.is_multiple_of(1024 * 1024) {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} bytes")
    }
}

/// Reads `path` through a reader that stops after `limit + 1` bytes (so neither a huge file
/// nor an endless one like `/dev/zero` is read whole); refuses a file over `limit`, naming
/// the file, its size and the limit. `what` says what the file is for.
fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let declared = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
    let mut data = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if data.len() as u64 > limit {
        let size = match declared {
            Some(n) if n > limit => format!("{n} bytes"),
            _ => format!("more than {limit} bytes"),
        };
        bail!(
            "{} is too large for {what}: {size}, over the limit of {limit} bytes ({}); is this the right file?",
            path.display(),
            size_text(limit)
        );
    }
    Ok(data)
}

async fn connect(cli: &Cli) -> Result<Client> {
    let dir = &cli.identity;
    // The files are checked through a bounded reader first, so an identity directory
    // holding something huge (or endless) is refused before it is loaded.
    for name in [
        machine_id_client::files::KEY,
        machine_id_client::files::TLS_CERT,
        machine_id_client::files::TLS_CA_CERTS,
    ] {
        let path = dir.join(name);
        if path.exists() {
            read_bounded(&path, MAX_IDENTITY_FILE, "an identity file")?;
        }
    }
    let identity = ClientIdentity::load(dir).with_context(|| {
        format!(
            "cannot load the admin identity from {} (set --identity or TCTL_IDENTITY to the auth server's DATA_DIR/admin)",
            dir.display()
        )
    })?;
    Ok(Client::connect(&cli.auth_server, &identity).await?)
}

fn parse_ttl(s: &str) -> Result<Duration> {
    Ok(duration::parse(s)?)
}

/// The pins of the cluster's CAs, as `tbot start --ca-pin` takes them.
async fn pins(client: &Client) -> Result<Vec<CaPin>> {
    let cas = client.get_cluster_ca_certs().await?;
    Ok(ca_pins(&cas)?)
}
