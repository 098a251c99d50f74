//! `tctl bots`: add (printing join instructions), ls, rm and lock.

use super::instructions::JoinInstructions;
use super::tables::print_bots;
use super::{parse_ttl, pins};
use crate::output::{json, print, time_or_never};
use crate::{BotsAdd, BotsCommand, Format};
use anyhow::{Result, anyhow, bail};
use machine_id_client::Client;

/// Runs one `tctl bots` command against the auth server at `addr`.
pub(super) async fn run(client: &Client, addr: &str, cmd: BotsCommand) -> Result<()> {
    match cmd {
        BotsCommand::Add(args) => add(client, addr, args).await,
        BotsCommand::Ls(f) => print_bots(&client.list_bots().await?, f.format, false),
        BotsCommand::Rm { name } => {
            client.delete_bot(&name).await?;
            print(&format!("Bot {name:?} deleted successfully.\n"))
        }
        BotsCommand::Lock { name, message, ttl } => {
            let ttl = ttl.as_deref().map(parse_ttl).transpose()?;
            let lock = client.lock_bot(&name, &message, ttl).await?;
            print(&format!(
                "Bot {name:?} has been locked (lock {:?}, {}, expires: {}).\n",
                lock.metadata.name,
                lock.target_text(),
                time_or_never(lock.metadata.expires)
            ))
        }
    }
}

async fn add(client: &Client, addr: &str, args: BotsAdd) -> Result<()> {
    let ttl = parse_ttl(&args.ttl)?;
    let roles: Vec<String> = args.roles.into_iter().filter(|r| !r.is_empty()).collect();
    if roles.is_empty() {
        bail!("--roles needs at least one role, e.g. --roles=access");
    }
    let logins: Vec<String> = args.logins.into_iter().filter(|l| !l.is_empty()).collect();
    for l in &logins {
        machine_id_types::check_login(l).map_err(|m| anyhow!("--logins: {m}"))?;
    }
    let created = client
        .create_bot(&args.name, &roles, &logins, args.token.as_deref(), ttl)
        .await?;
    let pins = pins(client).await?;
    let instructions = JoinInstructions {
        token: created.token.expose(),
        expires: created.token_expires,
        join_method: created.join_method,
        pins: &pins,
        addr,
    };
    match args.format {
        Format::Json => {
            let mut v = instructions.json();
            v["bot"] = serde_json::to_value(&created.bot)?;
            print(&json(&v))
        }
        Format::Text => print(&instructions.text()),
        Format::Yaml => bail!("tctl bots add prints text or json"),
    }
}
