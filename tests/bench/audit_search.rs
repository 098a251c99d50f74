//! `audit-search`: how long `search_events` takes on an SQLite store holding a large audit
//! log (issue 13). Fills the store at `--db` up to `--events` events (1,000,000 by default;
//! a file that already holds them is reused) through the bulk path
//! (`SqliteBackend::append_events`), with events shaped as the auth server writes them
//! (`AuditEvent` JSON, random UUID-like ids, times spread over the last `--days` days, the
//! type mix of a busy cluster: mostly `cert.create`, 0.1% `bot.lock`... see `TYPES`), then
//! times `--samples` runs of each search of 100 events and prints their medians and p90s:
//!
//! - `newest`: the newest 100 (what `tctl events ls --limit 100` asks);
//! - `by_type_common` / `by_type_rare`: the newest 100 of `cert.create` (~80%) and of
//!   `lock.create` (0.1%);
//! - `deep_page`: 100 events behind a cursor in the middle of the log;
//! - `window`: the newest 100 of a one-hour `since`/`until` window a week back.
//!
//! The filled file is an ordinary store: stop an auth server, point this at its
//! `DATA_DIR/backend.db`, start the server again and time `tctl events ls` against it.
//!
//!   audit-search --db PATH [--events 1000000] [--samples 200] [--days 30] [--fill-only]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use machine_id_store::{Backend, EventQuery, SqliteBackend, StoredEvent};
use machine_id_types::AuditEvent;
use time::OffsetDateTime;

/// The type mix, in thousandths: renewals dominate a busy cluster's log.
const TYPES: &[(&str, u64)] = &[
    ("cert.create", 800),
    ("bot.join", 100),
    ("resource.put", 50),
    ("access.denied", 30),
    ("bot.create", 19),
    ("lock.create", 1),
];

/// How many events one bulk append carries.
const BATCH: usize = 50_000;

/// splitmix64: a small, seeded generator, so every run fills the same log.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0x3fff | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    fn event_type(&mut self) -> &'static str {
        let mut pick = self.next() % 1000;
        for (t, share) in TYPES {
            if pick < *share {
                return t;
            }
            pick -= share;
        }
        TYPES[0].0
    }
}

struct Args {
    db: PathBuf,
    events: u64,
    samples: usize,
    days: u64,
    fill_only: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        db: PathBuf::new(),
        events: 1_000_000,
        samples: 200,
        days: 30,
        fill_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--db" => a.db = PathBuf::from(value()?),
            "--events" => a.events = value()?.parse()?,
            "--samples" => a.samples = value()?.parse()?,
            "--days" => a.days = value()?.parse()?,
            "--fill-only" => a.fill_only = true,
            other => bail!(
                "unknown flag {other}; use --db PATH [--events N] [--samples N] [--days N] [--fill-only]"
            ),
        }
    }
    if a.db.as_os_str().is_empty() {
        bail!("--db PATH is required (an SQLite store file; created when missing)");
    }
    if a.samples == 0 || a.days == 0 {
        bail!("--samples and --days must be at least 1");
    }
    Ok(a)
}

/// How many events the store holds (counted through the index, a page at a time).
async fn count(store: &SqliteBackend) -> Result<u64> {
    let mut query = EventQuery {
        limit: 100_000,
        ..EventQuery::default()
    };
    let mut n = 0u64;
    loop {
        let page = store.search_events(&query).await?;
        n += page.len() as u64;
        if page.len() < query.limit {
            return Ok(n);
        }
        query.after = page.last().map(StoredEvent::position);
    }
}

/// Appends `n` events spread evenly over the `days` before now, oldest first.
async fn fill(store: &SqliteBackend, n: u64, days: u64) -> Result<()> {
    let mut rng = Rng(n ^ 0x1234_5678);
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let span = i128::from(days) * 86_400 * 1_000_000_000;
    let step = span / i128::from(n.max(1));
    let started = Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..n {
        let nanos = now - span + step * i128::from(i);
        let time = OffsetDateTime::from_unix_timestamp_nanos(nanos)?;
        let event_type = rng.event_type();
        let bot = rng.next() % 10_000;
        let event = AuditEvent {
            id: rng.uuid(),
            time,
            event_type: event_type.to_string(),
            user: Some(format!("bot-robot{bot}")),
            success: event_type != "access.denied",
            message: format!("{event_type} for bot robot{bot}"),
            fields: serde_json::json!({ "bot": format!("robot{bot}"), "generation": i % 1000 })
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        batch.push(StoredEvent {
            time_nanos: i64::try_from(nanos)?,
            id: event.id.clone(),
            event_type: event_type.to_string(),
            data: serde_json::to_vec(&event)?,
        });
        if batch.len() == BATCH || i + 1 == n {
            store.append_events(std::mem::take(&mut batch)).await?;
        }
    }
    eprintln!(
        "filled {n} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Median and p90 of `samples` runs of `query`, in milliseconds; checks it returns `want`
/// events.
async fn time_query(
    store: &SqliteBackend,
    query: &EventQuery,
    samples: usize,
    want: usize,
) -> Result<(f64, f64)> {
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let got = store.search_events(query).await?;
        times.push(started.elapsed());
        if got.len() != want {
            bail!("expected {want} events, got {}", got.len());
        }
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(times[((times.len() as f64 - 1.0) * q).round() as usize]);
    Ok((at(0.5), at(0.9)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = args()?;
    let store = SqliteBackend::open(&a.db)?;
    let held = count(&store).await?;
    if held < a.events {
        if held > 0 {
            bail!(
                "{} holds {held} events, fewer than --events {}: use an empty or new file",
                a.db.display(),
                a.events
            );
        }
        fill(&store, a.events, a.days).await?;
    } else {
        eprintln!(
            "{} holds {held} events already; reusing them",
            a.db.display()
        );
    }
    if a.fill_only {
        return Ok(());
    }
    let newest = EventQuery {
        limit: 100,
        descending: true,
        ..EventQuery::default()
    };
    let typed = |t: &str| EventQuery {
        event_types: vec![t.to_string()],
        ..newest.clone()
    };
    // A cursor in the middle of the log: the newest event of the older half.
    let now = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let day = 86_400 * 1_000_000_000i128;
    let middle = i64::try_from(now - i128::from(a.days) * day / 2)?;
    let cursor = store
        .search_events(&EventQuery {
            until_nanos: Some(middle),
            ..EventQuery {
                limit: 1,
                ..newest.clone()
            }
        })
        .await?
        .first()
        .map(StoredEvent::position)
        .context("no event in the older half of the log")?;
    let deep = EventQuery {
        after: Some(cursor),
        ..newest.clone()
    };
    let week_ago = i64::try_from(now - 7 * day)?;
    let window = EventQuery {
        since_nanos: Some(week_ago),
        until_nanos: Some(week_ago + 3_600_000_000_000),
        ..newest.clone()
    };
    let cases = [
        ("newest", newest.clone()),
        ("by_type_common", typed("cert.create")),
        ("by_type_rare", typed("lock.create")),
        ("deep_page", deep),
        ("window", window),
    ];
    let mut json = vec![format!("\"events\":{}", held.max(a.events))];
    println!("search_events, limit 100, {} samples each:", a.samples);
    for (name, query) in cases {
        let plan = store.search_plan(&query).await?.join("; ");
        let (median, p90) = time_query(&store, &query, a.samples, 100).await?;
        println!("  {name:<15} median {median:7.3} ms  p90 {p90:7.3} ms  plan: {plan}");
        json.push(format!(
            "\"{name}\":{{\"median_ms\":{median:.3},\"p90_ms\":{p90:.3}}}"
        ));
    }
    println!("{{{}}}", json.join(","));
    Ok(())
}
