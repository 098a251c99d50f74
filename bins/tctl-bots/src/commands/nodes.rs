//! `tctl nodes`: register an OpenSSH node and list nodes.

use super::tables::print_resources;
use crate::output::{json, print};
use crate::{Format, NodesCommand};
use anyhow::{Result, anyhow};
use machine_id_client::Client;
use machine_id_types::{Metadata, Node, NodeSpec, Resource, ResourceKind};
use std::collections::BTreeMap;

/// Runs one `tctl nodes` command.
pub(super) async fn run(client: &Client, cmd: NodesCommand) -> Result<()> {
    match cmd {
        NodesCommand::Add {
            name,
            addr,
            labels,
            format,
        } => add(client, name, addr, &labels, format).await,
        NodesCommand::Ls(f) => {
            let nodes = client.list_resources(ResourceKind::Node).await?;
            print_resources(ResourceKind::Node, &nodes, f.format, false)
        }
    }
}

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

async fn add(
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    #[test]
    fn labels_parse() {
        let l = parse_labels(&["env=prod".into(), "a=b=c".into()]).unwrap();
        assert_eq!(l["a"], "b=c");
        assert!(parse_labels(&["nope".into()]).is_err());
    }
}
