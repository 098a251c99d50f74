//! `tctl tokens`: add a bot join token (printing join instructions), ls and rm.

use super::instructions::JoinInstructions;
use super::tables::print_resources;
use super::{parse_ttl, pins};
use crate::output::{json, print};
use crate::{Format, TokensCommand};
use anyhow::{Result, anyhow, bail};
use machine_id_client::Client;
use machine_id_types::{JoinMethod, ProvisionToken, Resource, ResourceKind};
use serde_json::json;
use time::OffsetDateTime;

/// Runs one `tctl tokens` command against the auth server at `addr`.
pub(super) async fn run(client: &Client, addr: &str, cmd: TokensCommand) -> Result<()> {
    match cmd {
        TokensCommand::Add {
            kind,
            bot,
            ttl,
            format,
        } => add(client, addr, &kind, bot.as_deref(), &ttl, format).await,
        TokensCommand::Ls(f) => {
            let tokens = client.list_resources(ResourceKind::Token).await?;
            print_resources(ResourceKind::Token, &tokens, f.format, false)
        }
        TokensCommand::Rm { name } => {
            client.delete_token(&name).await?;
            print(&format!("Token {name:?} has been deleted.\n"))
        }
    }
}

async fn add(
    client: &Client,
    addr: &str,
    kind: &str,
    bot: Option<&str>,
    ttl: &str,
    format: Format,
) -> Result<()> {
    if kind != "bot" {
        bail!("unsupported token type {kind:?}; only --type=bot is supported");
    }
    let bot = bot.ok_or_else(|| anyhow!("--type=bot needs --bot=NAME"))?;
    let ttl = parse_ttl(ttl)?;
    // The bot must exist; its name is checked by the server.
    client.get_bot(bot).await?;
    let secret = machine_id_join::token::generate();
    let expires = OffsetDateTime::now_utc() + ttl;
    let token = ProvisionToken::bot_join(secret.expose(), bot, expires);
    let stored = client.upsert_token(token, true).await?;
    let pins = pins(client).await?;
    let instructions = JoinInstructions {
        token: secret.expose(),
        expires: stored.metadata.expires,
        join_method: JoinMethod::Token,
        pins: &pins,
        addr,
    };
    match format {
        Format::Json => {
            let mut v = instructions.json();
            v["bot_name"] = json!(bot);
            print(&json(&v))
        }
        Format::Text => print(&instructions.text()),
        Format::Yaml => print(&Resource::Token(stored).to_yaml()),
    }
}
