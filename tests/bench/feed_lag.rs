//! `feed-lag`: how long a write made through one auth server's store takes to reach another
//! server's change feed, on a real PostgreSQL database: two `PostgresBackend`s on one
//! database (as two auth servers have), `--samples` writes through the first (one at a time),
//! each timed from the start of the write to its event arriving on a watch of the second.
//! Prints one JSON line: samples, median, p90, p99 and max in milliseconds.
//!
//!   feed-lag --conn-string postgresql://... [--samples 1000]

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use machine_id_store::{Backend, PostgresBackend, WatchEvent};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let mut conn = String::new();
    let mut samples = 1000usize;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--conn-string" => conn = value()?,
            "--samples" => samples = value()?.parse()?,
            other => bail!("unknown flag {other}; use --conn-string URI [--samples N]"),
        }
    }
    if conn.is_empty() {
        bail!("--conn-string is required");
    }
    let a = PostgresBackend::connect(&conn).await?;
    let b = PostgresBackend::connect(&conn).await?;
    let mut watch = b.watch("/feed-lag/").await?;
    let mut lags = Vec::with_capacity(samples);
    for i in 0..samples {
        let key = format!("/feed-lag/{}", i % 16);
        let started = Instant::now();
        let revision = a.put(&key, i.to_le_bytes().to_vec()).await?;
        loop {
            let event = tokio::time::timeout(Duration::from_secs(10), watch.recv())
                .await
                .context("no event within 10 s")?
                .context("the watch ended")?;
            if let WatchEvent::Put(item) = event
                && item.revision == revision
            {
                break;
            }
        }
        lags.push(started.elapsed());
    }
    for i in 0..16 {
        let _ = a.delete(&format!("/feed-lag/{i}")).await;
    }
    lags.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| ms(lags[((lags.len() as f64 - 1.0) * q).round() as usize]);
    println!(
        "{{\"samples\":{},\"median_ms\":{:.3},\"p90_ms\":{:.3},\"p99_ms\":{:.3},\"max_ms\":{:.3}}}",
        lags.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        ms(*lags.last().context("no samples")?)
    );
    Ok(())
}
