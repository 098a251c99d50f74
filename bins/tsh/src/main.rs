//! `tsh`: the Machine ID user tool. `tsh ls` lists the nodes an identity may reach, with the
//! certificates `tbot` writes to a destination directory. Argument parsing, output formatting
//! and exit codes over `machine-id-client`; the auth server decides which nodes are shown.
//!
//! Errors print as `ERROR: <message>` on stderr with exit code 1; usage errors exit 2.
#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use machine_id_client::{Client, ClientIdentity, files};
use machine_id_types::{Node, table};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Use a Machine ID cluster with an identity `tbot` keeps fresh.
#[derive(Debug, Parser)]
#[command(name = "tsh", version, about)]
struct Cli {
    /// The identity directory: a tbot destination (`key`, `tlscert`, `tlscacerts`).
    #[arg(short = 'i', long, value_name = "DIR", global = true)]
    identity: Option<PathBuf>,

    /// The auth server, host:port (the proxy shares its port, hence the alias `--proxy`);
    /// for several servers of one cluster, repeat the flag or give a comma-separated list.
    #[arg(
        long,
        visible_alias = "proxy",
        value_name = "HOST:PORT",
        env = "TELEPORT_AUTH_SERVER",
        default_value = "127.0.0.1:3025",
        global = true
    )]
    auth_server: String,

    /// Log debug messages to stderr.
    #[arg(short = 'd', long, global = true)]
    debug: bool,

    #[command(subcommand)]
    command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// A table for people.
    Text,
    /// A JSON array of `{name, id, addr, labels}`, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the nodes the identity may reach.
    Ls {
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(machine_id_cli::join_repeated_flag(
        std::env::args_os(),
        &["--auth-server", "--proxy"],
    ));
    machine_id_cli::init_logging(cli.debug);
    let Some(identity) = cli.identity.clone() else {
        // A usage error: clap prints it and exits 2.
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "no identity given; pass -i/--identity DIR, the --destination-dir tbot writes to",
            )
            .exit()
    };
    machine_id_cli::run(run(&cli, &identity))
}

async fn run(cli: &Cli, identity: &Path) -> Result<()> {
    match cli.command {
        Command::Ls { format } => {
            let client = connect(&cli.auth_server, identity).await?;
            let mut nodes = client.list_nodes().await?;
            nodes.sort_by(|a, b| (&a.spec.hostname, a.id()).cmp(&(&b.spec.hostname, b.id())));
            print(&match format {
                Format::Text => node_table(&nodes),
                Format::Json => node_json(&nodes),
            })
        }
    }
}

/// Loads the identity in `dir` and connects to `addr` with it.
async fn connect(addr: &str, dir: &Path) -> Result<Client> {
    if !dir.is_dir() {
        bail!(
            "identity directory {} does not exist or is not a directory; pass -i/--identity the --destination-dir tbot writes to (it holds {}, {}, {})",
            dir.display(),
            files::KEY,
            files::TLS_CERT,
            files::TLS_CA_CERTS
        );
    }
    let identity = ClientIdentity::load(dir)
        .with_context(|| format!("cannot load the identity in {}", dir.display()))?;
    Ok(Client::connect(addr, &identity).await?)
}

/// `Node Name | Address | Labels`, as `tctl nodes ls` prints it.
fn node_table(nodes: &[Node]) -> String {
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
    table::render(["Node Name", "Address", "Labels"], &rows)
}

/// A pretty JSON array of `{name, id, addr, labels}` with a trailing newline.
fn node_json(nodes: &[Node]) -> String {
    let value: Vec<serde_json::Value> = nodes
        .iter()
        .map(|n| {
            serde_json::json!({
                "name": n.spec.hostname,
                "id": n.id(),
                "addr": n.spec.addr,
                "labels": n.metadata.labels,
            })
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&value).unwrap_or_default();
    s.push('\n');
    s
}

/// Writes `text` to stdout. A closed pipe (`tsh ls | head -1`) is not an error.
fn print(text: &str) -> Result<()> {
    Ok(machine_id_cli::print(text)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use machine_id_types::{Metadata, NodeSpec};

    fn node(id: &str, name: &str, labels: &[(&str, &str)]) -> Node {
        Node {
            metadata: Metadata {
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Metadata::named(id)
            },
            spec: NodeSpec {
                addr: "127.0.0.1:2201".into(),
                hostname: name.into(),
            },
        }
    }

    #[test]
    fn table_sorts_labels_and_pads() {
        let t = node_table(&[node("id-a", "node-a", &[("team", "x"), ("env", "dev")])]);
        assert_eq!(
            t,
            "Node Name Address        Labels\n\
             --------- -------------- --------------\n\
             node-a    127.0.0.1:2201 env=dev,team=x\n"
        );
    }

    #[test]
    fn json_has_name_id_addr_labels() {
        let v: serde_json::Value =
            serde_json::from_str(&node_json(&[node("id-a", "node-a", &[("env", "dev")])])).unwrap();
        assert_eq!(
            v,
            serde_json::json!([{
                "name": "node-a",
                "id": "id-a",
                "addr": "127.0.0.1:2201",
                "labels": {"env": "dev"},
            }])
        );
    }

    #[test]
    fn cli_parses_flags_before_and_after_ls() {
        let cli = Cli::try_parse_from(["tsh", "-i", "/d", "ls", "--proxy", "h:1"]).unwrap();
        assert_eq!(cli.identity.as_deref(), Some(Path::new("/d")));
        assert_eq!(cli.auth_server, "h:1");
        let cli = Cli::try_parse_from(["tsh", "ls", "--identity=/d", "--format=json"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Ls {
                format: Format::Json
            }
        ));
        Cli::command().debug_assert();
    }
}
