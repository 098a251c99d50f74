//! The Prometheus text exposition format (version 0.0.4): [`Exposition`] writes it,
//! [`Histogram`] counts observations into fixed buckets with atomics (cheap enough for every
//! request), and [`parse`] reads it back strictly (for tests and tools that check an
//! endpoint: every rule of the format that a scraper relies on is an error, not a guess).

use std::collections::{BTreeMap, HashSet};
use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod parse;

pub use parse::{Family, ParseError, Sample, Scrape, parse};

/// The content type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type, as its `# TYPE` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets on restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted into cumulative buckets, with `_sum` and `_count`.
    Histogram,
}

impl Kind {
    /// The word on the `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A page of the text format being written: call [`Self::family`] once per metric, then its
/// samples, then the next family.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty page.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the family `name`: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
        self
    }

    /// One sample line: `name{labels} value`.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl Display,
    ) -> &mut Self {
        self.out.push_str(name);
        write_labels(&mut self.out, labels, None);
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family and one sample without labels, for the common single-value metric.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) -> &mut Self {
        self.family(name, kind, help);
        self.sample(name, &[], value)
    }

    /// The samples of one histogram series (`name_bucket` for every bound and `+Inf`,
    /// `name_sum`, `name_count`); the family line is [`Self::family`]'s with
    /// [`Kind::Histogram`].
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        h: &HistogramSnapshot,
    ) -> &mut Self {
        let bucket = format!("{name}_bucket");
        for (bound, count) in h.bounds.iter().zip(&h.cumulative) {
            self.out.push_str(&bucket);
            write_labels(&mut self.out, labels, Some(&format_float(*bound)));
            let _ = writeln!(self.out, " {count}");
        }
        self.out.push_str(&bucket);
        write_labels(&mut self.out, labels, Some("+Inf"));
        let _ = writeln!(self.out, " {}", h.count);
        self.sample(&format!("{name}_sum"), labels, format_float(h.sum_seconds));
        self.sample(&format!("{name}_count"), labels, h.count)
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

/// `{a="x",b="y"}` (nothing when there are no labels), with `le` last when given.
fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let mut first = true;
    for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
        if !first {
            out.push(',');
        }
        first = false;
        let _ = write!(out, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
}

/// A float as the format writes it (`+Inf`, `-Inf`, `NaN`, else the shortest decimal that
/// reads back the same).
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

/// Latency bounds in seconds from 0.5 ms to 10 s, for store and request timings.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Durations counted into fixed buckets: [`Self::observe`] is a handful of relaxed atomic
/// additions and no lock, so it can sit on every request.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), plus one for over the last bound.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// A histogram over `bounds` (seconds, increasing).
    pub fn new(bounds: &'static [f64]) -> Self {
        debug_assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "bounds must increase"
        );
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Counts one observation of `d`.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.partition_point(|b| *b < secs);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The counts so far, cumulative as the format wants them.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(self.bounds.len());
        for c in &self.counts[..self.bounds.len()] {
            running += c.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let over = self.counts[self.bounds.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            count: running + over,
            sum_seconds: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64(),
        }
    }
}

/// A [`Histogram`] read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// The bucket bounds (seconds).
    pub bounds: &'static [f64],
    /// Observations at or under each bound.
    pub cumulative: Vec<u64>,
    /// Every observation (the `+Inf` bucket).
    pub count: u64,
    /// Their sum, in seconds.
    pub sum_seconds: f64,
}

/// Counts per label value: a fixed list of values known up front, each with an atomic
/// counter, for labels whose values a caller cannot choose (so no lock and no unbounded
/// growth).
#[derive(Debug)]
pub struct LabeledCounter {
    values: &'static [&'static str],
    counts: Box<[AtomicU64]>,
}

impl LabeledCounter {
    /// A counter for each of `values`.
    pub fn new(values: &'static [&'static str]) -> Self {
        Self {
            values,
            counts: values.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Adds one to the counter of `values[index]` (an index past the end is ignored).
    pub fn inc(&self, index: usize) {
        if let Some(c) = self.counts.get(index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Each value with its count.
    pub fn read(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.values
            .iter()
            .zip(self.counts.iter())
            .map(|(v, c)| (*v, c.load(Ordering::Relaxed)))
    }
}

/// Checks that `labels` name no label twice (used by the parser and debug assertions).
fn distinct_names<'a>(labels: impl Iterator<Item = &'a str>) -> bool {
    let mut seen = HashSet::new();
    labels.into_iter().all(|l| seen.insert(l))
}

/// Labels in a canonical order, for comparing series.
fn canonical(labels: &[(String, String)]) -> BTreeMap<&str, &str> {
    labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

#[cfg(test)]
mod tests;
