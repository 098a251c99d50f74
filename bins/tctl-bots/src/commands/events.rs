//! `tctl events ls`: the audit log, oldest first.

use crate::Format;
use crate::output::{json, print, render, rfc3339};
use anyhow::Result;
use machine_id_client::Client;

/// `tctl events ls`: events of `kind` (all when `None`), at most `limit` (0: the server's
/// default).
pub(super) async fn ls(
    client: &Client,
    kind: Option<&str>,
    limit: u32,
    format: Format,
) -> Result<()> {
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
