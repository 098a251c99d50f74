//! Formatting helpers: times, tables, JSON and YAML, stdout that tolerates a closed pipe.

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

/// Prints `items` as YAML documents (`---`-separated) when `yaml`, else as JSON: one object
/// when `single` and there is one, an array otherwise.
pub(crate) fn print_serialized<T: serde::Serialize>(
    items: &[T],
    yaml: bool,
    single: bool,
) -> anyhow::Result<()> {
    if yaml {
        return print(
            &items
                .iter()
                .map(serde_norway::to_string)
                .collect::<Result<Vec<_>, _>>()?
                .join("---\n"),
        );
    }
    let v = match items {
        [one] if single => serde_json::to_value(one)?,
        _ => serde_json::to_value(items)?,
    };
    print(&json(&v))
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
