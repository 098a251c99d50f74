//! How resources and bots print: text tables, YAML documents or JSON.

use crate::Format;
use crate::output::{json, print, print_serialized, render, time_or_never};
use anyhow::Result;
use machine_id_types::{Bot, JoinMethod, Lock, Node, ProvisionToken, Resource, ResourceKind, User};

/// `roles,... (method)`, or just the roles for the `token` method.
fn token_type(t: &ProvisionToken) -> String {
    let roles = t.spec.roles.join(",");
    match t.spec.join_method {
        JoinMethod::Token => roles,
        m => format!("{roles} ({m})"),
    }
}

fn token_row(t: &ProvisionToken) -> [String; 4] {
    [
        t.metadata.name.clone(),
        token_type(t),
        t.spec.bot_name.clone().unwrap_or_default(),
        time_or_never(t.metadata.expires),
    ]
}

fn user_row(u: &User) -> [String; 2] {
    [u.metadata.name.clone(), u.spec.roles.join(",")]
}

fn node_row(n: &Node) -> [String; 3] {
    [
        n.spec.hostname.clone(),
        n.spec.addr.clone(),
        n.labels_text(),
    ]
}

fn lock_row(l: &Lock) -> [String; 4] {
    [
        l.metadata.name.clone(),
        l.target_text(),
        l.spec.message.clone(),
        time_or_never(l.metadata.expires),
    ]
}

fn bot_row(b: &Bot) -> [String; 3] {
    let user = if b.locked {
        format!("{} (locked)", b.user_name)
    } else {
        b.user_name.clone()
    };
    [b.name.clone(), user, b.roles.join(",")]
}

/// The rows `row` gives for the resources it knows (those of one kind).
fn rows<const N: usize>(
    resources: &[Resource],
    row: impl Fn(&Resource) -> Option<[String; N]>,
) -> Vec<[String; N]> {
    resources.iter().filter_map(row).collect()
}

/// The text table of `kind` over `resources`; with none, just the header.
pub(super) fn table(kind: ResourceKind, resources: &[Resource]) -> String {
    match kind {
        ResourceKind::Role => render(
            [
                "Role",
                "Allowed to login as",
                "Node Labels",
                "Access to resources",
            ],
            &rows(resources, |r| match r {
                Resource::Role(x) => Some(x.text_row()),
                _ => None,
            }),
        ),
        ResourceKind::Token => render(
            ["Token", "Type", "Bot", "Expiry Time (UTC)"],
            &rows(resources, |r| match r {
                Resource::Token(x) => Some(token_row(x)),
                _ => None,
            }),
        ),
        ResourceKind::User => render(
            ["User", "Roles"],
            &rows(resources, |r| match r {
                Resource::User(x) => Some(user_row(x)),
                _ => None,
            }),
        ),
        ResourceKind::Node => render(
            ["Node Name", "Address", "Labels"],
            &rows(resources, |r| match r {
                Resource::Node(x) => Some(node_row(x)),
                _ => None,
            }),
        ),
        ResourceKind::Lock => render(
            ["ID", "Target", "Message", "Expires"],
            &rows(resources, |r| match r {
                Resource::Lock(x) => Some(lock_row(x)),
                _ => None,
            }),
        ),
    }
}

/// Prints resources of `kind` in `format`; `single` prints one object/document rather than
/// a list.
pub(super) fn print_resources(
    kind: ResourceKind,
    resources: &[Resource],
    format: Format,
    single: bool,
) -> Result<()> {
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
        Format::Text => print(&table(kind, resources)),
    }
}

/// Prints bots in `format`; `single` prints one object/document rather than a list.
pub(super) fn print_bots(bots: &[Bot], format: Format, single: bool) -> Result<()> {
    match format {
        Format::Text => {
            let rows: Vec<[String; 3]> = bots.iter().map(bot_row).collect();
            print(&render(["Bot", "User", "Roles"], &rows))
        }
        Format::Json => print_serialized(bots, false, single),
        Format::Yaml => print_serialized(bots, true, single),
    }
}
