//! A strict reader of the text format, for tests and tools that check an endpoint: every
//! line must be a `# HELP`, a `# TYPE`, another comment, or a well-formed sample of the
//! family declared last; a family is declared once, its samples form one group, a series
//! appears once, counters are non-negative, and a histogram's buckets are cumulative, end
//! with `+Inf` and agree with its `_count`.

use std::collections::HashSet;

use super::{canonical, distinct_names};

/// A line that breaks the format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}: {text:?}")]
pub struct ParseError {
    /// The line number (from 1).
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// The line.
    pub text: String,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's name (`x_bucket`, `x_sum`, `x_count` for a histogram `x`).
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

/// A metric family: its `# TYPE`, `# HELP` and samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family's name.
    pub name: String,
    /// `counter`, `gauge`, `histogram`, `summary` or `untyped`.
    pub kind: String,
    /// The `# HELP` text, unescaped.
    pub help: Option<String>,
    /// The samples, in order.
    pub samples: Vec<Sample>,
}

/// A whole page, parsed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Scrape {
    /// The families in the order they appeared.
    pub families: Vec<Family>,
}

impl Scrape {
    /// The family `name`.
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The value of the sample `name` whose labels are exactly `labels` (in any order).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: std::collections::BTreeMap<&str, &str> = labels.iter().copied().collect();
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .find(|s| s.name == name && canonical(&s.labels) == want)
            .map(|s| s.value)
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A value as the format writes floats.
fn parse_float(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ if s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c))
            && s.chars().any(|c| c.is_ascii_digit()) =>
        {
            s.parse().ok()
        }
        _ => None,
    }
}

/// Label pairs in the order written.
type Labels = Vec<(String, String)>;

/// Reads the label set starting after `{`; returns the labels and the rest after `}`.
fn parse_labels(mut rest: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches(' ');
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').ok_or("a label without `=`")?;
        let name = rest[..eq].trim();
        if !is_label_name(name) {
            return Err(format!("invalid label name {name:?}"));
        }
        rest = rest[eq + 1..].trim_start_matches(' ');
        rest = rest
            .strip_prefix('"')
            .ok_or("a label value must be in double quotes")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("an unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("an invalid escape in a label value".into()),
                },
                Some((_, '\n')) => return Err("a raw newline in a label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        rest = rest[end + 1..].trim_start_matches(' ');
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("labels must be separated by `,`".into());
        }
    }
}

/// The family a sample called `name` belongs to, given the family declared last.
fn belongs(sample: &str, family: &Family) -> bool {
    if family.kind == "histogram" {
        ["_bucket", "_sum", "_count"]
            .iter()
            .any(|s| sample.strip_suffix(s) == Some(family.name.as_str()))
    } else if family.kind == "summary" {
        sample == family.name
            || ["_sum", "_count"]
                .iter()
                .any(|s| sample.strip_suffix(s) == Some(family.name.as_str()))
    } else {
        sample == family.name
    }
}

/// A HELP text with its escapes (a doubled backslash, backslash-n) resolved.
fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            other => {
                out.push('\\');
                out.extend(other);
            }
        }
    }
    out
}

/// Parses `text` strictly; see the module's doc for the rules.
pub fn parse(text: &str) -> Result<Scrape, ParseError> {
    let mut scrape = Scrape::default();
    let mut typed: HashSet<String> = HashSet::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut series: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(ParseError {
            line: text.lines().count(),
            message: "the page must end with a newline".into(),
            text: text.lines().last().unwrap_or_default().into(),
        });
    }
    for (n, line) in text.lines().enumerate() {
        let err = |message: String| ParseError {
            line: n + 1,
            message,
            text: line.to_string(),
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !is_metric_name(name) {
                        return Err(err(format!("invalid metric name {name:?}")));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(err(format!("unknown type {kind:?}")));
                    }
                    if !typed.insert(name.to_string()) {
                        return Err(err(format!("a second TYPE for {name}")));
                    }
                    match scrape.families.last_mut() {
                        Some(f) if f.name == name && f.kind.is_empty() => f.kind = kind.into(),
                        _ if helped.contains(name) => {
                            return Err(err(format!(
                                "the TYPE of {name} does not follow its HELP"
                            )));
                        }
                        _ => scrape.families.push(Family {
                            name: name.into(),
                            kind: kind.into(),
                            help: None,
                            samples: Vec::new(),
                        }),
                    }
                }
                (Some("HELP"), Some(name), help) => {
                    if !is_metric_name(name) {
                        return Err(err(format!("invalid metric name {name:?}")));
                    }
                    if !helped.insert(name.to_string()) {
                        return Err(err(format!("a second HELP for {name}")));
                    }
                    let help = unescape_help(help.unwrap_or_default());
                    match scrape.families.last_mut() {
                        Some(f) if f.name == name && f.samples.is_empty() => f.help = Some(help),
                        _ if typed.contains(name) => {
                            return Err(err(format!(
                                "the HELP of {name} is away from its family's group"
                            )));
                        }
                        // The kind is filled in by the TYPE line that must follow.
                        _ => scrape.families.push(Family {
                            name: name.into(),
                            kind: String::new(),
                            help: Some(help),
                            samples: Vec::new(),
                        }),
                    }
                }
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("a sample without a value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(err(format!("invalid metric name {name:?}")));
        }
        let (labels, rest) = match line[name_end..].strip_prefix('{') {
            Some(after) => parse_labels(after).map_err(err)?,
            None => (Vec::new(), &line[name_end..]),
        };
        if !distinct_names(labels.iter().map(|(k, _)| k.as_str())) {
            return Err(err("a label named twice".into()));
        }
        let mut fields = rest.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_float)
            .ok_or_else(|| err("a missing or invalid value".into()))?;
        if let Some(ts) = fields.next()
            && ts.parse::<i64>().is_err()
        {
            return Err(err(format!("an invalid timestamp {ts:?}")));
        }
        if fields.next().is_some() {
            return Err(err("text after the timestamp".into()));
        }
        let family = match scrape.families.last_mut() {
            Some(f) if !f.kind.is_empty() && belongs(name, f) => f,
            _ => {
                return Err(err(format!(
                    "sample {name} outside its family's group (no TYPE line right before its samples)"
                )));
            }
        };
        // A counter is never negative, nor NaN.
        if family.kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("a counter below zero".into()));
        }
        let mut key_labels = labels.clone();
        key_labels.sort();
        if !series.insert((name.to_string(), key_labels)) {
            return Err(err("a series that appeared before".into()));
        }
        family.samples.push(Sample {
            name: name.into(),
            labels,
            value,
        });
    }
    for f in &scrape.families {
        if f.kind.is_empty() {
            return Err(ParseError {
                line: 0,
                message: format!("HELP for {} without a TYPE line", f.name),
                text: String::new(),
            });
        }
        if f.kind == "histogram" {
            check_histogram(f)?;
        }
    }
    Ok(scrape)
}

/// Checks each series of a histogram family: buckets increase with `le`, are cumulative,
/// end with `+Inf`, which equals `_count`; `_sum` is present.
fn check_histogram(f: &Family) -> Result<(), ParseError> {
    let err = |message: String| ParseError {
        line: 0,
        message: format!("histogram {}: {message}", f.name),
        text: String::new(),
    };
    let without_le = |s: &Sample| {
        let mut l: Vec<_> = s
            .labels
            .iter()
            .filter(|(k, _)| k != "le")
            .cloned()
            .collect();
        l.sort();
        l
    };
    let mut sets: Vec<Vec<(String, String)>> = Vec::new();
    for s in &f.samples {
        let l = without_le(s);
        if !sets.contains(&l) {
            sets.push(l);
        }
    }
    for set in sets {
        let set = &set;
        let of = |suffix: &str| {
            let name = format!("{}{suffix}", f.name);
            f.samples
                .iter()
                .filter(move |s| s.name == name && without_le(s) == *set)
        };
        let mut last: Option<(f64, f64)> = None;
        for b in of("_bucket") {
            let le = b
                .labels
                .iter()
                .find(|(k, _)| k == "le")
                .and_then(|(_, v)| parse_float(v))
                .ok_or_else(|| err("a bucket without a numeric le".into()))?;
            if let Some((prev_le, prev_count)) = last {
                if le <= prev_le {
                    return Err(err(format!("le {le} after {prev_le}")));
                }
                if b.value < prev_count {
                    return Err(err(format!(
                        "bucket le={le} holds fewer than the one before"
                    )));
                }
            }
            last = Some((le, b.value));
        }
        let Some((last_le, inf)) = last else {
            return Err(err("a series without buckets".into()));
        };
        if last_le != f64::INFINITY {
            return Err(err("the last bucket is not le=\"+Inf\"".into()));
        }
        let count: Vec<f64> = of("_count").map(|s| s.value).collect();
        if count != [inf] {
            return Err(err(format!(
                "_count {count:?} does not equal the +Inf bucket {inf}"
            )));
        }
        if of("_sum").count() != 1 {
            return Err(err("no single _sum".into()));
        }
    }
    Ok(())
}
