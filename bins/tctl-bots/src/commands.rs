//! One function per command: call the client, format the answer.

use crate::output::{json, minutes_until, print, render, rfc3339, time_or_never};
use crate::{
    AuthCommand, BotsAdd, BotsCommand, Cli, Command, EventsCommand, Format, LocksCommand,
    NodesCommand, TokensCommand,
};
use anyhow::{Context, Result, anyhow, bail};
use machine_id_client::{CaPin, Client, ClientIdentity, ca_pins};
use machine_id_types::{
    Bot, JoinMethod, Lock, Metadata, Node, NodeSpec, ProvisionToken, Resource, ResourceKind,
    ca_kind, duration, parse_resources,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;

/// Runs one command.
pub(crate) async fn run(cli: Cli) -> Result<()> {
    let client = connect(&cli).await?;
    let addr = cli.auth_server.as_str();
    match cli.command {
        Command::Status { format } => status(&client, format).await,
        Command::Get { resource, format } => get(&client, &resource, format).await,
        Command::Create { force, file } => create(&client, &file, force).await,
        Command::Rm { resource } => rm(&client, &resource).await,
        Command::Bots(cmd) => match cmd {
            BotsCommand::Add(args) => bots_add(&client, addr, args).await,
            BotsCommand::Ls(f) => bots_ls(&client, f.format).await,
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
        },
        Command::Tokens(cmd) => match cmd {
            TokensCommand::Add {
                kind,
                bot,
                ttl,
                format,
            } => tokens_add(&client, addr, &kind, bot.as_deref(), &ttl, format).await,
            TokensCommand::Ls(f) => tokens_ls(&client, f.format).await,
            TokensCommand::Rm { name } => {
                client.delete_token(&name).await?;
                print(&format!("Token {name:?} has been deleted.\n"))
            }
        },
        Command::Nodes(cmd) => match cmd {
            NodesCommand::Add {
                name,
                addr,
                labels,
                format,
            } => nodes_add(&client, name, addr, &labels, format).await,
            NodesCommand::Ls(f) => nodes_ls(&client, f.format).await,
        },
        Command::Auth(cmd) => match cmd {
            AuthCommand::Export { kind } => auth_export(&client, &kind).await,
            AuthCommand::Sign {
                host,
                format,
                out,
                ttl,
            } => auth_sign(&client, &host, &format, &out, &ttl).await,
        },
        Command::Locks(cmd) => match cmd {
            LocksCommand::Ls(f) => locks_ls(&client, f.format).await,
            LocksCommand::Rm { id } => {
                client.delete_lock(&id).await?;
                print(&format!("Lock {id:?} has been deleted.\n"))
            }
        },
        Command::Events(EventsCommand::Ls {
            kind,
            limit,
            format,
        }) => events_ls(&client, kind.as_deref(), limit, format).await,
    }
}

/// The longest host certificate the auth server signs (one year); a longer `--ttl` would be
/// cut silently, so it is refused here.
const MAX_HOST_CERT_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
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

// ---- status ----

/// `SHA256:AB:CD:...` over a certificate's DER, as `openssl x509 -fingerprint -sha256` prints.
fn cert_fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    let hex = hex::encode_upper(sha2::Sha256::digest(der));
    let pairs: Vec<&str> = (0..hex.len())
        .step_by(2)
        .filter_map(|i| hex.get(i..i + 2))
        .collect();
    format!("SHA256:{}", pairs.join(":"))
}

fn ssh_fingerprints(lines: &[String]) -> Result<Vec<String>> {
    lines
        .iter()
        .map(|l| machine_id_mint::ssh_fingerprint(l).map_err(anyhow::Error::from))
        .collect()
}

async fn pins(client: &Client) -> Result<Vec<CaPin>> {
    let cas = client.get_cluster_ca_certs().await?;
    Ok(ca_pins(&cas)?)
}

async fn status(client: &Client, format: Format) -> Result<()> {
    if format == Format::Yaml {
        bail!("tctl status prints text or json; use --format=text or --format=json");
    }
    let ping = client.ping().await?;
    let pins = pins(client).await?;
    let user = ssh_fingerprints(&client.export_ca(ca_kind::USER).await?.ssh_public_keys)?;
    let host = ssh_fingerprints(&client.export_ca(ca_kind::HOST).await?.ssh_public_keys)?;
    let tls: Vec<String> = client
        .export_ca(ca_kind::TLS)
        .await?
        .tls_certs
        .iter()
        .map(|d| cert_fingerprint(d))
        .collect();
    let pins: Vec<String> = pins.iter().map(ToString::to_string).collect();
    if format == Format::Json {
        return print(&json(&json!({
            "cluster_name": ping.cluster_name,
            "server_version": ping.server_version,
            "proxy_public_addr": ping.proxy_public_addr,
            "auth_server": client.addr(),
            "ca_pins": pins,
            "ca_fingerprints": {"user": user, "host": host, "tls": tls},
        })));
    }
    let mut out = format!(
        "Cluster:         {}\nVersion:         {}\nAuth server:     {}\n",
        ping.cluster_name,
        ping.server_version,
        client.addr()
    );
    if let Some(p) = &ping.proxy_public_addr {
        out.push_str(&format!("Proxy:           {p}\n"));
    }
    for p in &pins {
        out.push_str(&format!("CA pin:          {p}\n"));
    }
    out.push_str("CA fingerprints:\n");
    for f in &user {
        out.push_str(&format!("  user (SSH):    {f}\n"));
    }
    for f in &host {
        out.push_str(&format!("  host (SSH):    {f}\n"));
    }
    for f in &tls {
        out.push_str(&format!("  tls (X.509):   {f}\n"));
    }
    print(&out)
}

// ---- get ----

/// What `tctl get` and `tctl rm` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Resource(ResourceKind),
    Bot,
}

fn parse_target(s: &str) -> Result<(Target, Option<String>)> {
    let (kind, name) = match s.split_once('/') {
        Some((k, n)) if !n.is_empty() => (k, Some(n.to_string())),
        Some((k, _)) => (k, None),
        None => (s, None),
    };
    let target = match kind.trim_end_matches('s') {
        "bot" => Target::Bot,
        _ => Target::Resource(ResourceKind::parse(kind).ok_or_else(|| {
            anyhow!(
                "unknown resource kind {kind:?}; expected one of roles, tokens, bots, nodes, locks, users (e.g. roles or roles/access)"
            )
        })?),
    };
    Ok((target, name))
}

fn role_rows(roles: &[machine_id_types::Role]) -> String {
    let rows: Vec<[String; 4]> = roles.iter().map(|r| r.text_row()).collect();
    render(
        [
            "Role",
            "Allowed to login as",
            "Node Labels",
            "Access to resources",
        ],
        &rows,
    )
}

fn token_type(t: &ProvisionToken) -> String {
    let roles = t.spec.roles.join(",");
    match t.spec.join_method {
        JoinMethod::Token => roles,
        m => format!("{roles} ({m})"),
    }
}

fn token_rows(tokens: &[ProvisionToken]) -> String {
    let rows: Vec<[String; 4]> = tokens
        .iter()
        .map(|t| {
            [
                t.metadata.name.clone(),
                token_type(t),
                t.spec.bot_name.clone().unwrap_or_default(),
                time_or_never(t.metadata.expires),
            ]
        })
        .collect();
    render(["Token", "Type", "Bot", "Expiry Time (UTC)"], &rows)
}

fn node_rows(nodes: &[Node]) -> String {
    let rows: Vec<[String; 3]> = nodes
        .iter()
        .map(|n| {
            [
                n.spec.hostname.clone(),
                n.spec.addr.clone(),
                n.labels_text(),
            ]
        })
        .collect();
    render(["Node Name", "Address", "Labels"], &rows)
}

fn lock_rows(locks: &[Lock]) -> String {
    let rows: Vec<[String; 4]> = locks
        .iter()
        .map(|l| {
            [
                l.metadata.name.clone(),
                l.target_text(),
                l.spec.message.clone(),
                time_or_never(l.metadata.expires),
            ]
        })
        .collect();
    render(["ID", "Target", "Message", "Expires"], &rows)
}

fn bot_rows(bots: &[Bot]) -> String {
    let rows: Vec<[String; 3]> = bots
        .iter()
        .map(|b| {
            let user = if b.locked {
                format!("{} (locked)", b.user_name)
            } else {
                b.user_name.clone()
            };
            [b.name.clone(), user, b.roles.join(",")]
        })
        .collect();
    render(["Bot", "User", "Roles"], &rows)
}

fn user_rows(users: &[machine_id_types::User]) -> String {
    let rows: Vec<[String; 2]> = users
        .iter()
        .map(|u| [u.metadata.name.clone(), u.spec.roles.join(",")])
        .collect();
    render(["User", "Roles"], &rows)
}

/// Prints resources in `format`; `single` prints one object/document rather than a list.
fn print_resources(resources: &[Resource], format: Format, single: bool) -> Result<()> {
    match format {
        Format::Yaml => print(
            &resources
                .iter()
                .map(Resource::to_yaml)
                .collect::<Vec<_>>()
                .join("---\n"),
        ),
        Format::Json => {
            let values: Vec<serde_json::Value> = resources.iter().map(Resource::to_json).collect();
            match (single, values.as_slice()) {
                (true, [one]) => print(&json(one)),
                _ => print(&json(&serde_json::Value::Array(values))),
            }
        }
        Format::Text => {
            let mut roles = Vec::new();
            let mut tokens = Vec::new();
            let mut users = Vec::new();
            let mut nodes = Vec::new();
            let mut locks = Vec::new();
            for r in resources {
                match r {
                    Resource::Role(x) => roles.push(x.clone()),
                    Resource::Token(x) => tokens.push(x.clone()),
                    Resource::User(x) => users.push(x.clone()),
                    Resource::Node(x) => nodes.push(x.clone()),
                    Resource::Lock(x) => locks.push(x.clone()),
                }
            }
            // `resources` holds one kind; an empty list still prints its header.
            let text = match resources.first().map(Resource::kind) {
                Some(ResourceKind::Token) => token_rows(&tokens),
                Some(ResourceKind::User) => user_rows(&users),
                Some(ResourceKind::Node) => node_rows(&nodes),
                Some(ResourceKind::Lock) => lock_rows(&locks),
                _ => role_rows(&roles),
            };
            print(&text)
        }
    }
}

fn print_bots(bots: &[Bot], format: Format, single: bool) -> Result<()> {
    match format {
        Format::Text => print(&bot_rows(bots)),
        Format::Json => {
            let v = if single && bots.len() == 1 {
                serde_json::to_value(&bots[0])?
            } else {
                serde_json::to_value(bots)?
            };
            print(&json(&v))
        }
        Format::Yaml => print(
            &bots
                .iter()
                .map(serde_norway::to_string)
                .collect::<Result<Vec<_>, _>>()?
                .join("---\n"),
        ),
    }
}

async fn get(client: &Client, what: &str, format: Option<Format>) -> Result<()> {
    let (target, name) = parse_target(what)?;
    let single = name.is_some();
    let format = format.unwrap_or(if single { Format::Yaml } else { Format::Text });
    let kind = match target {
        Target::Bot => {
            let bots = match &name {
                Some(n) => vec![client.get_bot(n).await?],
                None => client.list_bots().await?,
            };
            return print_bots(&bots, format, single);
        }
        Target::Resource(kind) => kind,
    };
    let resources: Vec<Resource> = match (kind, name.as_deref()) {
        (ResourceKind::Role, Some(n)) => vec![Resource::Role(client.get_role(n).await?)],
        (ResourceKind::Role, None) => client
            .list_roles()
            .await?
            .into_iter()
            .map(Resource::Role)
            .collect(),
        (ResourceKind::Token, Some(n)) => vec![Resource::Token(client.get_token(n).await?)],
        (ResourceKind::Token, None) => client
            .list_tokens()
            .await?
            .into_iter()
            .map(Resource::Token)
            .collect(),
        (ResourceKind::User, Some(n)) => vec![Resource::User(client.get_user(n).await?)],
        (ResourceKind::User, None) => client
            .list_users()
            .await?
            .into_iter()
            .map(Resource::User)
            .collect(),
        (ResourceKind::Node, Some(n)) => vec![Resource::Node(find_node(client, n).await?)],
        (ResourceKind::Node, None) => client
            .list_nodes()
            .await?
            .into_iter()
            .map(Resource::Node)
            .collect(),
        (ResourceKind::Lock, Some(n)) => vec![Resource::Lock(find_lock(client, n).await?)],
        (ResourceKind::Lock, None) => client
            .list_locks()
            .await?
            .into_iter()
            .map(Resource::Lock)
            .collect(),
    };
    if resources.is_empty() && format == Format::Text {
        // Print the header of the kind asked for.
        return print(&match kind {
            ResourceKind::Role => role_rows(&[]),
            ResourceKind::Token => token_rows(&[]),
            ResourceKind::User => user_rows(&[]),
            ResourceKind::Node => node_rows(&[]),
            ResourceKind::Lock => lock_rows(&[]),
        });
    }
    print_resources(&resources, format, single)
}

/// A node by id, or by hostname when exactly one node has it.
async fn find_node(client: &Client, id_or_name: &str) -> Result<Node> {
    match client.get_node(id_or_name).await {
        Ok(n) => Ok(n),
        Err(e) if e.is_not_found() => {
            let mut matches: Vec<Node> = client
                .list_nodes()
                .await?
                .into_iter()
                .filter(|n| n.spec.hostname == id_or_name)
                .collect();
            match matches.len() {
                1 => Ok(matches.remove(0)),
                0 => Err(anyhow!("node {id_or_name:?} not found (by id or name)")),
                n => Err(anyhow!(
                    "{n} nodes are named {id_or_name:?}; use the node's id (tctl get nodes --format=yaml shows it)"
                )),
            }
        }
        Err(e) => Err(e.into()),
    }
}

async fn find_lock(client: &Client, id: &str) -> Result<Lock> {
    client
        .list_locks()
        .await?
        .into_iter()
        .find(|l| l.metadata.name == id)
        .ok_or_else(|| anyhow!("lock {id:?} not found"))
}

// ---- create / rm ----

async fn exists(client: &Client, r: &Resource) -> Result<bool> {
    let found = match r {
        Resource::Role(x) => client.get_role(&x.metadata.name).await.map(|_| ()),
        Resource::Token(x) => client.get_token(&x.metadata.name).await.map(|_| ()),
        Resource::Node(x) => client.get_node(&x.metadata.name).await.map(|_| ()),
        Resource::Lock(x) => {
            return Ok(client
                .list_locks()
                .await?
                .iter()
                .any(|l| l.metadata.name == x.metadata.name));
        }
        Resource::User(x) => client.get_user(&x.metadata.name).await.map(|_| ()),
    };
    match found {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// How a resource is named in messages: the token secret is not repeated.
fn describe(r: &Resource) -> String {
    match r {
        Resource::Token(t) if t.spec.join_method == JoinMethod::Token => {
            format!(
                "token for bot {:?}",
                t.spec.bot_name.clone().unwrap_or_default()
            )
        }
        _ => format!("{} {:?}", r.kind(), r.name()),
    }
}

async fn create(client: &Client, file: &Path, force: bool) -> Result<()> {
    let text = String::from_utf8(read_bounded(file, MAX_RESOURCE_FILE, "a resource file")?)
        .map_err(|_| {
            anyhow!(
                "{} is not UTF-8 text; expected YAML resources",
                file.display()
            )
        })?;
    let resources = parse_resources(&text, &file.display().to_string())?;
    // Check everything before writing anything, so a refused document leaves nothing half
    // done.
    let mut existing = Vec::with_capacity(resources.len());
    for (i, r) in resources.iter().enumerate() {
        if let Resource::User(_) = r {
            bail!(
                "{}: document {}: kind: user resources are managed by the auth server; create a bot with tctl bots add",
                file.display(),
                i + 1
            );
        }
        let found = exists(client, r).await?;
        if found && !force {
            bail!(
                "{} already exists; use -f or --force to overwrite it",
                describe(r)
            );
        }
        existing.push(found);
    }
    let mut out = String::new();
    for (r, found) in resources.into_iter().zip(existing) {
        let what = describe(&r);
        let create_only = !force;
        match r {
            Resource::Role(x) => client.upsert_role(x, create_only).await.map(|_| ()),
            Resource::Token(x) => client.upsert_token(x, create_only).await.map(|_| ()),
            Resource::Node(x) => client.upsert_node(x, create_only).await.map(|_| ()),
            Resource::Lock(x) => client.upsert_lock(x, create_only).await.map(|_| ()),
            // Refused above, before any write.
            Resource::User(_) => Ok(()),
        }
        .map_err(|e| {
            if e.is_already_exists() {
                anyhow!("{what} already exists; use -f or --force to overwrite it")
            } else {
                anyhow::Error::from(e).context(format!("cannot write {what}"))
            }
        })?;
        let verb = if found { "updated" } else { "created" };
        out.push_str(&format!("{what} has been {verb}\n"));
    }
    print(&out)
}

async fn rm(client: &Client, what: &str) -> Result<()> {
    let (target, name) = parse_target(what)?;
    let name =
        name.ok_or_else(|| anyhow!("name the resource to delete as KIND/NAME, e.g. roles/dev"))?;
    let message = match target {
        Target::Bot => {
            client.delete_bot(&name).await?;
            format!("Bot {name:?} deleted successfully.\n")
        }
        Target::Resource(kind) => {
            match kind {
                ResourceKind::Role => client.delete_role(&name).await?,
                ResourceKind::Token => client.delete_token(&name).await?,
                ResourceKind::Node => {
                    let node = find_node(client, &name).await?;
                    client.delete_node(node.id()).await?
                }
                ResourceKind::Lock => client.delete_lock(&name).await?,
                ResourceKind::User => bail!(
                    "users are managed by the auth server; delete a bot's user with tctl bots rm NAME"
                ),
            }
            format!("{kind} {name:?} has been deleted\n")
        }
    };
    print(&message)
}

// ---- bots and tokens ----

/// The join instructions `bots add` and `tokens add` print.
struct JoinInstructions<'a> {
    token: &'a str,
    expires: Option<OffsetDateTime>,
    join_method: JoinMethod,
    pins: &'a [CaPin],
    addr: &'a str,
}

impl JoinInstructions<'_> {
    fn lifetime(&self) -> String {
        match self.expires {
            Some(t) => format!(
                "This token will expire in {} minutes.",
                minutes_until(t, OffsetDateTime::now_utc())
            ),
            None => "This token does not expire.".to_string(),
        }
    }

    fn tbot_start(&self) -> String {
        let mut lines = vec![
            "tbot start".to_string(),
            "   --destination-dir=./tbot-user".to_string(),
            format!("   --token={}", self.token),
        ];
        if self.join_method != JoinMethod::Token {
            lines.push(format!("   --join-method={}", self.join_method));
        }
        for p in self.pins {
            lines.push(format!("   --ca-pin={p}"));
        }
        lines.push(format!("   --auth-server={}", self.addr));
        lines.join(" \\\n")
    }

    fn text(&self) -> String {
        let lifetime = self.lifetime();
        format!(
            "The bot token: {token}\n\
             {lifetime}\n\
             \n\
             Optionally, if running the bot under an isolated user account, first initialize\n\
             the data directory by running the following command as root:\n\
             \n\
             > tbot init \\\n   --destination-dir=./tbot-user \\\n   --bot-user=tbot \\\n   --reader-user=alice\n\
             \n\
             ...and then run the bot as the bot user:\n\
             \n\
             > {start}\n\
             \n\
             Please note:\n\
             \n\
             \x20 - The ./tbot-user destination directory can be changed as desired.\n\
             \x20 - /var/lib/teleport/bot must be accessible to the bot user, or --data-dir\n\
             \x20   must be set to a directory accessible to the bot user.\n\
             \x20 - {lifetime}\n\
             \x20 - {addr} must be reachable from the machine the bot runs on.\n",
            token = self.token,
            start = self.tbot_start(),
            addr = self.addr,
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "token": self.token,
            "token_expires": self.expires.map(rfc3339),
            "token_ttl_minutes": self.expires.map(|t| minutes_until(t, OffsetDateTime::now_utc())),
            "join_method": self.join_method.as_str(),
            "ca_pins": self.pins.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "auth_server": self.addr,
            "tbot_start": self.tbot_start(),
        })
    }
}

async fn bots_add(client: &Client, addr: &str, args: BotsAdd) -> Result<()> {
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

async fn bots_ls(client: &Client, format: Format) -> Result<()> {
    print_bots(&client.list_bots().await?, format, false)
}

async fn tokens_add(
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

async fn tokens_ls(client: &Client, format: Format) -> Result<()> {
    let tokens: Vec<Resource> = client
        .list_tokens()
        .await?
        .into_iter()
        .map(Resource::Token)
        .collect();
    if tokens.is_empty() && format == Format::Text {
        return print(&token_rows(&[]));
    }
    print_resources(&tokens, format, false)
}

// ---- nodes ----

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>> {
    labels
        .iter()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    anyhow!("invalid label {l:?}; write labels as key=value,key2=value2")
                })
        })
        .collect()
}

async fn nodes_add(
    client: &Client,
    name: String,
    addr: String,
    labels: &[String],
    format: Format,
) -> Result<()> {
    let node = Node {
        metadata: Metadata {
            labels: parse_labels(labels)?,
            ..Metadata::named(uuid::Uuid::new_v4().to_string())
        },
        spec: NodeSpec {
            addr,
            hostname: name,
        },
    };
    node.validate()?;
    let node = client.upsert_node(node, true).await?;
    match format {
        Format::Json => print(&json(&Resource::Node(node).to_json())),
        Format::Yaml => print(&Resource::Node(node).to_yaml()),
        Format::Text => print(&format!(
            "Node {:?} ({}) has been added with id {}.\n",
            node.spec.hostname,
            node.spec.addr,
            node.id()
        )),
    }
}

async fn nodes_ls(client: &Client, format: Format) -> Result<()> {
    let nodes = client.list_nodes().await?;
    match format {
        Format::Text => print(&node_rows(&nodes)),
        _ => print_resources(
            &nodes.into_iter().map(Resource::Node).collect::<Vec<_>>(),
            format,
            false,
        ),
    }
}

// ---- auth ----

async fn auth_export(client: &Client, kind: &str) -> Result<()> {
    match kind {
        ca_kind::USER => {
            let ca = client.export_ca(ca_kind::USER).await?;
            let mut out = String::new();
            for line in &ca.ssh_public_keys {
                out.push_str(line.trim());
                out.push('\n');
            }
            print(&out)
        }
        ca_kind::HOST => {
            let cluster = client.ping().await?.cluster_name;
            let ca = client.export_ca(ca_kind::HOST).await?;
            let mut out = String::new();
            for line in &ca.ssh_public_keys {
                out.push_str(&format!(
                    "@cert-authority *.{cluster},{cluster} {} type=host\n",
                    line.trim()
                ));
            }
            print(&out)
        }
        ca_kind::TLS => {
            let ca = client.export_ca(ca_kind::TLS).await?;
            let out: String = ca
                .tls_certs
                .iter()
                .map(|d| machine_id_mint::cert_der_to_pem(d))
                .collect();
            print(&out)
        }
        other => {
            bail!("unknown CA type {other:?}; expected --type=user, --type=host or --type=tls")
        }
    }
}

/// Writes `contents` to `path` atomically (the old file stays whole if anything fails), then
/// gives it `mode`; a private file is never readable by others, not even for a moment.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    machine_id_destination::write_private_file(path, contents.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    if mode != 0o600 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    }
    Ok(())
}

fn with_suffix(prefix: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    s.into()
}

async fn auth_sign(
    client: &Client,
    hosts: &[String],
    format: &str,
    out: &Path,
    ttl: &str,
) -> Result<()> {
    if format != "openssh" {
        bail!("unsupported format {format:?}; only --format=openssh is supported");
    }
    let hosts: Vec<String> = hosts.iter().filter(|h| !h.is_empty()).cloned().collect();
    if hosts.is_empty() {
        bail!("--host needs at least one host name");
    }
    for h in &hosts {
        if let Some(c) = h
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || *c == ',')
        {
            bail!(
                "--host: invalid host name {h:?}: {c:?} is not allowed; host names (the certificate's principals) have no spaces, commas or control characters"
            );
        }
    }
    let ttl = parse_ttl(ttl)?;
    if ttl.is_zero() || ttl > MAX_HOST_CERT_TTL {
        bail!(
            "--ttl: {} is out of bounds for a host certificate; use a value from 1s to {} (one year)",
            machine_id_types::duration::format(ttl),
            machine_id_types::duration::format(MAX_HOST_CERT_TTL)
        );
    }
    // The key is made here and never leaves this machine; only its public half is sent.
    let key = machine_id_mint::PrivateKey::generate(machine_id_mint::Suite::Default)?;
    let public = key.public_key().to_openssh();
    let signed = client.sign_host_cert(&public, &hosts, ttl).await?;
    let pub_path = with_suffix(out, ".pub");
    let cert_path = with_suffix(out, "-cert.pub");
    write_file(out, &key.to_pem(), 0o600)?;
    write_file(&pub_path, &format!("{public}\n"), 0o644)?;
    write_file(&cert_path, &format!("{}\n", signed.ssh_cert.trim()), 0o644)?;
    print(&format!(
        "The credentials have been written to {}, {}, {}\n",
        out.display(),
        pub_path.display(),
        cert_path.display()
    ))
}

// ---- locks, events ----

async fn locks_ls(client: &Client, format: Format) -> Result<()> {
    let locks = client.list_locks().await?;
    match format {
        Format::Text => print(&lock_rows(&locks)),
        _ => print_resources(
            &locks.into_iter().map(Resource::Lock).collect::<Vec<_>>(),
            format,
            false,
        ),
    }
}

async fn events_ls(client: &Client, kind: Option<&str>, limit: u32, format: Format) -> Result<()> {
    let events = client.search_events(kind, limit, None).await?;
    match format {
        Format::Json => print(&json(&serde_json::to_value(&events)?)),
        Format::Yaml => print(&serde_norway::to_string(&events)?),
        Format::Text => {
            let rows: Vec<[String; 5]> = events
                .iter()
                .map(|e| {
                    [
                        rfc3339(e.time),
                        e.event_type.clone(),
                        e.user.clone().unwrap_or_default(),
                        if e.success { "success" } else { "failure" }.to_string(),
                        e.message.clone(),
                    ]
                })
                .collect();
            print(&render(
                ["Time", "Event", "User", "Result", "Message"],
                &rows,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(
            parse_target("roles/access").unwrap(),
            (Target::Resource(ResourceKind::Role), Some("access".into()))
        );
        assert_eq!(parse_target("bots").unwrap(), (Target::Bot, None));
        assert!(parse_target("clusters").is_err());
    }

    #[test]
    fn tbot_start_command_is_exact() {
        let pin = CaPin::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        let i = JoinInstructions {
            token: "t0k",
            expires: None,
            join_method: JoinMethod::Iam,
            pins: std::slice::from_ref(&pin),
            addr: "127.0.0.1:3025",
        };
        assert_eq!(
            i.tbot_start(),
            format!(
                "tbot start \\\n   --destination-dir=./tbot-user \\\n   --token=t0k \\\n   --join-method=iam \\\n   --ca-pin={pin} \\\n   --auth-server=127.0.0.1:3025"
            )
        );
    }

    #[test]
    fn labels_parse() {
        let l = parse_labels(&["env=prod".into(), "a=b=c".into()]).unwrap();
        assert_eq!(l["a"], "b=c");
        assert!(parse_labels(&["nope".into()]).is_err());
    }
}
