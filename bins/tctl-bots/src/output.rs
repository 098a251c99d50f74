//! Formatting helpers: times, tables, stdout that tolerates a closed pipe.

use machine_id_types::table;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Writes `text` to stdout. A closed pipe (`tctl get roles | head -1`) is not an error.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    Ok(machine_id_cli::print(text)?)
}

/// Pretty JSON with a trailing newline.
pub(crate) fn json(value: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}

/// RFC 3339, or `never`.
pub(crate) fn time_or_never(t: Option<OffsetDateTime>) -> String {
    t.map(rfc3339).unwrap_or_else(|| "never".to_string())
}

/// RFC 3339 in UTC, whole seconds.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0)
        .unwrap_or(t)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Whole minutes from `now` until `t`, rounded to the nearest minute (a one-hour token made a
/// moment ago lives 60 minutes), never negative.
pub(crate) fn minutes_until(t: OffsetDateTime, now: OffsetDateTime) -> i64 {
    ((t - now).whole_seconds() + 30).div_euclid(60).max(0)
}

/// A table (see `machine_id_types::table`).
pub(crate) fn render<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    table::render(header, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn minutes_round_to_nearest() {
        let now = OffsetDateTime::now_utc();
        assert_eq!(minutes_until(now + Duration::from_secs(3600), now), 60);
        assert_eq!(minutes_until(now + Duration::from_secs(3599), now), 60);
        assert_eq!(minutes_until(now - Duration::from_secs(10), now), 0);
    }
}
