//! End-to-end suites: the real `auth-server` on a free loopback port, driven by the real
//! `tctl`. Each test starts its own server; dropping it kills the process.
#![allow(clippy::unwrap_used, missing_docs)] // tests

mod auth;
mod bench;
mod bots;
mod diag;
mod failover;
mod iam;
mod iam_moto;
mod identity;
mod join;
mod limits;
mod nodes_locks_events;
mod roles;
mod rotation;
mod server_config;
mod tokens;
mod tsh;

/// The cells of each line of a `tctl` table, cut at the columns the dashes line marks.
pub fn table(text: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "not a table:\n{text}");
    let mut spans = Vec::new();
    let dashes = lines[1];
    let mut start = None;
    for (i, c) in dashes
        .char_indices()
        .chain(std::iter::once((dashes.len(), ' ')))
    {
        match (c, start) {
            ('-', None) => start = Some(i),
            (' ', Some(s)) => {
                spans.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, line)| {
            spans
                .iter()
                .enumerate()
                .map(|(n, &(s, e))| {
                    // The last column runs to the end of the line.
                    let e = if n + 1 == spans.len() { line.len() } else { e };
                    line.get(s.min(line.len())..e.min(line.len()))
                        .unwrap_or("")
                        .trim()
                        .to_string()
                })
                .collect()
        })
        .collect()
}

/// The rows (without the header) whose first cell is `first`.
pub fn rows_starting<'a>(t: &'a [Vec<String>], first: &str) -> Vec<&'a Vec<String>> {
    t.iter().skip(1).filter(|r| r[0] == first).collect()
}

/// The value of `--name=VALUE` in `text`.
pub fn flag_value(text: &str, name: &str) -> Option<String> {
    let key = format!("--{name}=");
    text.lines().find_map(|l| {
        let i = l.find(&key)?;
        Some(l[i + key.len()..].trim_end_matches('\\').trim().to_string())
    })
}
