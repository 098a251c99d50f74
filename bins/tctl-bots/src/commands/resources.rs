//! `tctl get`, `tctl create` and `tctl rm`: any resource kind (and bots), addressed as KIND or
//! KIND/NAME, through the client's generic resource calls. Certificate authorities
//! (`cert_authorities`, `cas`; KIND/NAME names a CA type) are read-only here: they change
//! only through `tctl auth rotate`.

use super::cas::{print_cas, sorted};
use super::tables::{print_bots, print_resources};
use super::{MAX_RESOURCE_FILE, read_bounded};
use crate::Format;
use crate::output::print;
use anyhow::{Result, anyhow, bail};
use machine_id_client::Client;
use machine_id_types::{CaType, JoinMethod, Resource, ResourceKind, parse_resources};
use std::path::Path;

/// What `tctl get` and `tctl rm` address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Resource(ResourceKind),
    Bot,
    CertAuthority,
}

/// The names `tctl get` takes for certificate authorities.
const CA_KINDS: [&str; 4] = ["cert_authority", "cert_authorities", "cas", "ca"];

/// Why a certificate authority is not written with `tctl create` or `tctl rm`.
const CA_READ_ONLY: &str = "certificate authorities are managed by the auth server and change only through a rotation: use tctl auth rotate --type=user|host|tls|all (see tctl auth rotate --help)";

fn parse_target(s: &str) -> Result<(Target, Option<String>)> {
    let (kind, name) = match s.split_once('/') {
        Some((k, n)) if !n.is_empty() => (k, Some(n.to_string())),
        Some((k, _)) => (k, None),
        None => (s, None),
    };
    let target = match kind.trim_end_matches('s') {
        _ if CA_KINDS.contains(&kind) => Target::CertAuthority,
        "bot" => Target::Bot,
        _ => Target::Resource(ResourceKind::parse(kind).ok_or_else(|| {
            anyhow!(
                "unknown resource kind {kind:?}; expected one of roles, tokens, bots, nodes, locks, users, cert_authorities (e.g. roles or roles/access)"
            )
        })?),
    };
    Ok((target, name))
}

/// `tctl get KIND[/NAME]`. A node is named by id or host name.
pub(super) async fn get(client: &Client, what: &str, format: Option<Format>) -> Result<()> {
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
        Target::CertAuthority => {
            let cas = sorted(client.get_cert_authorities().await?);
            let cas = match &name {
                Some(n) => {
                    let t: CaType = n.parse()?;
                    cas.into_iter().filter(|ca| ca.spec.ca_type == t).collect()
                }
                None => cas,
            };
            return print_cas(&cas, format, single);
        }
        Target::Resource(kind) => kind,
    };
    let resources = match (kind, name.as_deref()) {
        (ResourceKind::Node, Some(n)) => vec![Resource::Node(client.find_node(n).await?)],
        (kind, Some(n)) => vec![client.get_resource(kind, n).await?],
        (kind, None) => client.list_resources(kind).await?,
    };
    print_resources(kind, &resources, format, single)
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

/// `tctl create [-f] FILE`.
pub(super) async fn create(client: &Client, file: &Path, force: bool) -> Result<()> {
    let text = String::from_utf8(read_bounded(file, MAX_RESOURCE_FILE, "a resource file")?)
        .map_err(|_| {
            anyhow!(
                "{} is not UTF-8 text; expected YAML resources",
                file.display()
            )
        })?;
    refuse_cert_authorities(&text, file)?;
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
        let found = client.resource_exists(r.kind(), r.name()).await?;
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
        client.upsert_resource(r, !force).await.map_err(|e| {
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

/// Refuses a resource file holding a certificate authority (which `parse_resources` would
/// call an unknown kind), pointing at `tctl auth rotate`.
fn refuse_cert_authorities(text: &str, file: &Path) -> Result<()> {
    use serde::Deserialize;
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        // A document that does not parse is reported by `parse_resources`.
        let Ok(value) = serde_norway::Value::deserialize(doc) else {
            return Ok(());
        };
        if let Some(kind) = value.get("kind").and_then(|k| k.as_str())
            && CA_KINDS.contains(&kind)
        {
            bail!("{}: document {}: {CA_READ_ONLY}", file.display(), i + 1);
        }
    }
    Ok(())
}

/// `tctl rm KIND/NAME`. A node is named by id or host name.
pub(super) async fn rm(client: &Client, what: &str) -> Result<()> {
    let (target, name) = parse_target(what)?;
    let name =
        name.ok_or_else(|| anyhow!("name the resource to delete as KIND/NAME, e.g. roles/dev"))?;
    let message = match target {
        Target::CertAuthority => bail!("{CA_READ_ONLY}"),
        Target::Bot => {
            client.delete_bot(&name).await?;
            format!("Bot {name:?} deleted successfully.\n")
        }
        Target::Resource(kind) => {
            match kind {
                ResourceKind::User => bail!(
                    "users are managed by the auth server; delete a bot's user with tctl bots rm NAME"
                ),
                ResourceKind::Node => {
                    let node = client.find_node(&name).await?;
                    client.delete_node(node.id()).await?
                }
                kind => client.delete_resource(kind, &name).await?,
            }
            format!("{kind} {name:?} has been deleted\n")
        }
    };
    print(&message)
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
        for kind in CA_KINDS {
            assert_eq!(parse_target(kind).unwrap(), (Target::CertAuthority, None));
        }
        assert_eq!(
            parse_target("cert_authority/user").unwrap(),
            (Target::CertAuthority, Some("user".into()))
        );
    }

    #[test]
    fn a_cert_authority_file_is_refused_with_a_pointer_at_rotate() {
        let text = "kind: role\nversion: v1\nmetadata:\n  name: a\n---\nkind: cert_authority\nversion: v2\nmetadata:\n  name: example.com\n";
        let e = refuse_cert_authorities(text, Path::new("ca.yaml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("document 2"), "{e}");
        assert!(e.contains("tctl auth rotate"), "{e}");
        refuse_cert_authorities("kind: role\n", Path::new("r.yaml")).unwrap();
    }
}
