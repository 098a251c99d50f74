//! `renew-load`: a renewal load against a running auth server, as tbot renews (a new mTLS
//! connection per renewal, a new key each time, each renewal retried unchanged until
//! answered). Creates `--bots` bots with the admin identity, joins them, then `--concurrency`
//! workers renew them for `--seconds` and the figures are printed as one JSON line:
//! renewals/s, p50/p90/p99/max latency in ms, errors, and the locks in the cluster after.
//!
//! `tests/bench-renew.sh` runs it against two builds in alternating rounds; the issue-13 `tctl
//! bench` will grow out of it.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use machine_id_client::{Certs, Client, ClientIdentity};
use machine_id_mint::{PrivateKey, Suite};

struct Args {
    auth_server: String,
    identity: String,
    bots: usize,
    concurrency: usize,
    seconds: u64,
    prefix: String,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        auth_server: "127.0.0.1:3025".into(),
        identity: String::new(),
        bots: 100,
        concurrency: 8,
        seconds: 10,
        prefix: "load".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--auth-server" => a.auth_server = value()?,
            "--identity" => a.identity = value()?,
            "--bots" => a.bots = value()?.parse()?,
            "--concurrency" => a.concurrency = value()?.parse()?,
            "--seconds" => a.seconds = value()?.parse()?,
            "--prefix" => a.prefix = value()?,
            other => bail!(
                "unknown flag {other}; usage: renew-load --auth-server ADDR --identity ADMIN_DIR [--bots N] [--concurrency C] [--seconds S] [--prefix NAME]"
            ),
        }
    }
    if a.identity.is_empty() {
        bail!("--identity ADMIN_DIR is required (the auth server's data dir/admin)");
    }
    if a.bots < a.concurrency || a.concurrency == 0 {
        bail!("--bots must be at least --concurrency, which must be at least 1");
    }
    Ok(a)
}

fn key() -> Result<PrivateKey> {
    PrivateKey::generate(Suite::Default).context("generating a key")
}

struct Bot {
    key: PrivateKey,
    certs: Certs,
}

impl Bot {
    fn identity(&self) -> Result<ClientIdentity> {
        Ok(ClientIdentity::from_parts(
            &self.key.to_pem(),
            self.certs.tls_cert.clone(),
            self.certs.tls_ca_certs.clone(),
        )?)
    }
}

/// Renews `bot` once, retrying the same request until answered; returns the latency of the
/// answered attempt and the number of failed attempts.
async fn renew(addr: &str, bot: &mut Bot) -> Result<(Duration, u64)> {
    let next = key()?;
    let spki = next.public_key().to_spki_der();
    let mut errors = 0;
    loop {
        let start = Instant::now();
        let attempt = async {
            let client = Client::connect(addr, &bot.identity()?).await?;
            anyhow::Ok(
                client
                    .generate_user_certs(&spki, Duration::ZERO, &[])
                    .await?,
            )
        };
        match attempt.await {
            Ok(certs) => {
                let took = start.elapsed();
                *bot = Bot { key: next, certs };
                return Ok((took, errors));
            }
            Err(e) => {
                errors += 1;
                if errors > 100 {
                    return Err(e.context("100 failed attempts in a row"));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = parse_args()?;
    let admin_id = ClientIdentity::load(&a.identity)?;
    let cas = admin_id.ca_certs().to_vec();
    let admin = Client::connect(&a.auth_server, &admin_id).await?;
    // Bots are created and joined a few at a time.
    let mut bots = Vec::with_capacity(a.bots);
    let joiner = Client::connect_with_cas(&a.auth_server, &cas).await?;
    for i in 0..a.bots {
        let name = format!("{}-{i}", a.prefix);
        let created = admin
            .create_bot(&name, &["access".to_string()], &[], None, Duration::ZERO)
            .await
            .with_context(|| format!("creating bot {name}"))?;
        let k = key()?;
        let certs = joiner
            .register_using_token(
                &created.token,
                &k.public_key().to_spki_der(),
                Duration::ZERO,
            )
            .await
            .with_context(|| format!("joining bot {name}"))?;
        bots.push(Bot { key: k, certs });
    }
    // Worker w owns bots w, w+C, ...: no two workers renew one bot at once.
    let mut shares: Vec<Vec<Bot>> = (0..a.concurrency).map(|_| Vec::new()).collect();
    for (i, b) in bots.into_iter().enumerate() {
        shares[i % a.concurrency].push(b);
    }
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    let workers: Vec<_> = shares
        .into_iter()
        .map(|mut mine| {
            let addr = a.auth_server.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut i = 0;
                while Instant::now() < deadline {
                    let n = mine.len();
                    let (took, e) = renew(&addr, &mut mine[i % n]).await?;
                    lat.push(took);
                    errors += e;
                    i += 1;
                }
                anyhow::Ok((lat, errors))
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await??;
        lat.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    lat.sort();
    let locks = admin.list_locks().await?.len();
    println!(
        "{}",
        serde_json::json!({
            "bots": a.bots,
            "concurrency": a.concurrency,
            "seconds": elapsed,
            "renewals": lat.len(),
            "renewals_per_second": lat.len() as f64 / elapsed,
            "p50_ms": percentile(&lat, 0.50),
            "p90_ms": percentile(&lat, 0.90),
            "p99_ms": percentile(&lat, 0.99),
            "max_ms": percentile(&lat, 1.0),
            "errors": errors,
            "locks": locks,
        })
    );
    Ok(())
}
