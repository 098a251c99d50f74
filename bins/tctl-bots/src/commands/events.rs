//! `tctl events ls`: one page of the audit log (the newest events that match), oldest first,
//! and how to see older ones when more match.

use crate::output::{json, print, render, rfc3339};
use crate::{EventsLs, Format};
use anyhow::{Result, bail};
use machine_id_client::{Client, EventSearch};

/// `tctl events ls`.
pub(super) async fn ls(client: &Client, args: &EventsLs) -> Result<()> {
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since >= until
    {
        bail!(
            "--since ({}) is not before --until ({}): no event can match; swap them or widen the window",
            rfc3339(since),
            rfc3339(until)
        );
    }
    let search = EventSearch {
        event_type: args.kind.clone(),
        since: args.since,
        until: args.until,
        limit: args.limit,
        page: args.page.clone(),
    };
    let page = client.search_events_page(&search).await?;
    let events = &page.events;
    match args.format {
        Format::Json => print(&json(&serde_json::to_value(events)?))?,
        Format::Yaml => print(&serde_norway::to_string(events)?)?,
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
            ))?;
        }
    }
    if let Some(next) = &page.next_page {
        let note = more_note(args, events.len(), next);
        // Text output says it with the table; json and yaml keep stdout parseable.
        match args.format {
            Format::Text => print(&note)?,
            Format::Json | Format::Yaml => eprint!("{note}"),
        }
    }
    Ok(())
}

/// What to say when older events match than the `shown` ones.
fn more_note(args: &EventsLs, shown: usize, next: &str) -> String {
    let mut again = String::from("tctl events ls");
    if let Some(kind) = &args.kind {
        again.push_str(&format!(" --type={kind}"));
    }
    if let Some(since) = args.since {
        again.push_str(&format!(" --since={}", rfc3339_exact(since)));
    }
    if let Some(until) = args.until {
        again.push_str(&format!(" --until={}", rfc3339_exact(until)));
    }
    if args.limit > 0 {
        again.push_str(&format!(" --limit={}", args.limit));
    }
    if args.format != Format::Text {
        again.push_str(match args.format {
            Format::Json => " --format=json",
            _ => " --format=yaml",
        });
    }
    format!(
        "\nOlder events match too: these are the newest {shown}. For the next {shown}, run:\n  \
         {again} --page={next}\nor narrow the search with --since/--until/--type, or raise --limit (at most 10000).\n"
    )
}

/// RFC 3339 with the nanoseconds kept, so the repeated command has the same window.
fn rfc3339_exact(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
