//! `tctl locks`: list and delete locks.

use super::tables::print_resources;
use crate::LocksCommand;
use crate::output::print;
use anyhow::Result;
use machine_id_client::Client;
use machine_id_types::ResourceKind;

/// Runs one `tctl locks` command.
pub(super) async fn run(client: &Client, cmd: LocksCommand) -> Result<()> {
    match cmd {
        LocksCommand::Ls(f) => {
            let locks = client.list_resources(ResourceKind::Lock).await?;
            print_resources(ResourceKind::Lock, &locks, f.format, false)
        }
        LocksCommand::Rm { id } => {
            client.delete_lock(&id).await?;
            print(&format!("Lock {id:?} has been deleted.\n"))
        }
    }
}
