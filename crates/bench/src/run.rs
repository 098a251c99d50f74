//! The bench from start to end: checks, minting figure, setup, then each workload timed with
//! the server's costs read around it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use machine_id_client::{Client, ClientError, ca_pins};
use machine_id_join::token::TokenSecret;
use tokio::sync::Barrier;

use crate::fleet::{self, BenchBot, JoinTrust};
use crate::probe::{Cost, Probe};
use crate::report::{BenchReport, SetupReport, WorkloadReport};
use crate::workload::{self, Tally};
use crate::{BenchConfig, BenchError, LatencySummary, Workload};

/// The fewest certificate pairs the minting figure signs.
const MIN_MINT_PAIRS: usize = 1000;
/// The longest join window: tokens for about this long are made before each window.
const JOIN_WINDOW: Duration = Duration::from_secs(2);
/// The most tokens one worker gets per join window.
const MAX_TOKENS_PER_WORKER: usize = 5000;

/// What the bench is doing, for a person watching.
#[derive(Debug)]
#[non_exhaustive]
pub enum Progress<'a> {
    /// The minting figure is measured.
    Minting,
    /// The bots are being created (or reused) and joined.
    SettingUp {
        /// How many.
        bots: usize,
    },
    /// The bots are ready.
    SetUp(&'a SetupReport),
    /// A workload starts.
    Running {
        /// Which.
        workload: Workload,
        /// For how long.
        duration: Duration,
    },
    /// A workload ended.
    Finished(&'a WorkloadReport),
}

/// Runs the bench `config` describes against the auth server(s) `auth_server` (as
/// `--auth-server` takes them), creating its bots and tokens with `admin`, which must hold
/// the admin identity. `progress` hears what happens.
///
/// The bots are left in the cluster (a later run with the same prefix reuses them); the
/// join tokens it made and did not use are deleted.
pub async fn run(
    admin: &Client,
    auth_server: &str,
    config: &BenchConfig,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<BenchReport, BenchError> {
    config.validate()?;
    // Rights first, so an identity that may not manage bots is told so before anything runs.
    match admin.get_bot(&config.bot_name(0)).await {
        Ok(_) | Err(ClientError::NotFound(_)) => {}
        Err(ClientError::PermissionDenied(message)) => {
            return Err(BenchError::NotAdmin { message });
        }
        Err(cause) => {
            return Err(BenchError::Admin {
                what: "looking for the bots of an earlier run".into(),
                cause: Box::new(cause),
            });
        }
    }
    let probe = Probe::new(config.server_pid, config.diag_addr.clone()).await?;
    let cas = admin
        .get_cluster_ca_certs()
        .await
        .map_err(|cause| BenchError::Admin {
            what: "fetching the cluster's CA certificates".into(),
            cause: Box::new(cause),
        })?;
    let pins = ca_pins(&cas).map_err(|cause| BenchError::Admin {
        what: "pinning the cluster's CA certificates".into(),
        cause: Box::new(cause),
    })?;
    let trust = JoinTrust {
        pins: Arc::new(pins),
    };

    progress(Progress::Minting);
    let mint = crate::mint::certs_per_second(config.bots.max(MIN_MINT_PAIRS)).await?;

    progress(Progress::SettingUp { bots: config.bots });
    let (mut shards, setup) = fleet::set_up(admin, config, auth_server, &trust).await?;
    progress(Progress::SetUp(&setup));

    let mut reports = Vec::new();
    for &w in &config.workloads {
        progress(Progress::Running {
            workload: w,
            duration: config.duration,
        });
        let (back, tally, cost, seconds) = match w {
            Workload::Join => run_joins(admin, config, &probe, &trust, shards).await?,
            _ => run_timed(w, config, &probe, shards).await?,
        };
        shards = back;
        let locks = admin
            .list_locks()
            .await
            .map_err(|cause| BenchError::Admin {
                what: "listing the locks after the workload".into(),
                cause: Box::new(cause),
            })?
            .len();
        let report = report(w, config, tally, cost, seconds, locks, mint);
        progress(Progress::Finished(&report));
        reports.push(report);
    }
    Ok(BenchReport {
        setup,
        mint_certs_per_second: mint,
        workloads: reports,
    })
}

fn report(
    w: Workload,
    config: &BenchConfig,
    tally: Tally,
    cost: Cost,
    seconds: f64,
    locks: usize,
    mint: f64,
) -> WorkloadReport {
    let (server_cpu, client_cpu, commits) = cost.per_request(tally.requests);
    WorkloadReport {
        workload: w.name().to_string(),
        bots: config.bots,
        concurrency: config.concurrency,
        seconds,
        requests: tally.requests,
        requests_per_second: if seconds > 0.0 {
            tally.requests as f64 / seconds
        } else {
            0.0
        },
        renewals: tally.renewals,
        latency: LatencySummary::of(&tally.latencies),
        errors: tally.errors.total(),
        error_kinds: tally.errors.kinds,
        bots_dropped: tally.dropped,
        locks,
        server_cpu_ms_per_request: server_cpu,
        store_commits_per_request: commits,
        client_cpu_ms_per_request: client_cpu,
        mint_certs_per_second: mint,
    }
}

type Ran = (Vec<Vec<BenchBot>>, Tally, Cost, f64);

/// Runs workload `w` (not `join`) from one worker per shard for the configured duration.
async fn run_timed(
    w: Workload,
    config: &BenchConfig,
    probe: &Probe,
    shards: Vec<Vec<BenchBot>>,
) -> Result<Ran, BenchError> {
    let n = shards.len();
    let ready = Arc::new(Barrier::new(n + 1));
    let start = Arc::new(Barrier::new(n + 1));
    let workers: Vec<_> = shards
        .into_iter()
        .map(|bots| {
            tokio::spawn(workload::work(
                w,
                bots,
                ready.clone(),
                start.clone(),
                config.duration,
            ))
        })
        .collect();
    ready.wait().await;
    let before = probe.read().await;
    start.wait().await;
    let started = Instant::now();
    let mut shards = Vec::with_capacity(n);
    let mut tally = Tally::default();
    for worker in workers {
        let (bots, t) = worker
            .await
            .map_err(|e| BenchError::Internal(format!("a {w} worker: {e}")))?;
        shards.push(bots);
        tally.merge(t);
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = probe.read().await;
    let mut cost = Cost::default();
    cost.add(before, after, true);
    Ok((shards, tally, cost, seconds))
}

/// Runs first joins in windows: before each (untimed) the admin makes one token per join
/// the window is expected to hold, then the workers join with them until they are used up
/// or the duration is; the windows' times add up to the duration.
async fn run_joins(
    admin: &Client,
    config: &BenchConfig,
    probe: &Probe,
    trust: &JoinTrust,
    mut shards: Vec<Vec<BenchBot>>,
) -> Result<Ran, BenchError> {
    let mut remaining = config.duration;
    let mut per_worker = 4usize;
    let mut cursors = vec![0usize; shards.len()];
    let mut tally = Tally::default();
    let mut cost = Cost::default();
    let mut seconds = 0.0;
    let mut first = true;
    while !remaining.is_zero() {
        let tokens = make_tokens(admin, &shards, &mut cursors, per_worker).await?;
        if tokens.iter().all(Vec::is_empty) {
            break; // every bot was dropped
        }
        let before = probe.read().await;
        let started = Instant::now();
        let deadline = started + remaining;
        let workers: Vec<_> = shards
            .into_iter()
            .zip(tokens)
            .map(|(bots, tokens)| {
                tokio::spawn(workload::join_window(bots, tokens, trust.clone(), deadline))
            })
            .collect();
        let mut back = Vec::with_capacity(workers.len());
        let mut window = Tally::default();
        let mut unused: Vec<TokenSecret> = Vec::new();
        for worker in workers {
            let (bots, t, left) = worker
                .await
                .map_err(|e| BenchError::Internal(format!("a join worker: {e}")))?;
            back.push(bots);
            window.merge(t);
            unused.extend(left);
        }
        let elapsed = started.elapsed();
        let after = probe.read().await;
        cost.add(before, after, first);
        first = false;
        shards = back;
        seconds += elapsed.as_secs_f64();
        remaining = remaining.saturating_sub(elapsed);
        // Enough tokens for the next window at this window's rate.
        let rate = window.requests as f64 / elapsed.as_secs_f64().max(1e-3);
        let next = rate * remaining.min(JOIN_WINDOW).as_secs_f64() / shards.len() as f64;
        per_worker = (next.ceil() as usize).clamp(1, MAX_TOKENS_PER_WORKER);
        tally.merge(window);
        for token in unused {
            if let Err(e) = admin.delete_token(token.expose()).await {
                tracing::warn!(error = %e, "cannot delete an unused join token; it expires within the hour");
            }
        }
    }
    Ok((shards, tally, cost, seconds))
}

/// `per_worker` new tokens for each worker, for its live bots in turn (from `cursors`),
/// made by the admin (one task per worker).
async fn make_tokens(
    admin: &Client,
    shards: &[Vec<BenchBot>],
    cursors: &mut [usize],
    per_worker: usize,
) -> Result<Vec<Vec<(usize, TokenSecret)>>, BenchError> {
    let mut tasks = Vec::with_capacity(shards.len());
    for (bots, cursor) in shards.iter().zip(cursors.iter_mut()) {
        let live: Vec<(usize, String)> = bots
            .iter()
            .enumerate()
            .filter(|(_, b)| b.dropped.is_none())
            .map(|(i, b)| (i, b.name.clone()))
            .collect();
        let mut plan = Vec::new();
        if !live.is_empty() {
            for _ in 0..per_worker {
                plan.push(live[*cursor % live.len()].clone());
                *cursor += 1;
            }
        }
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::with_capacity(plan.len());
            for (i, name) in plan {
                let token =
                    fleet::make_token(&admin, &name)
                        .await
                        .map_err(|cause| BenchError::Admin {
                            what: format!("making a join token for bot {name}"),
                            cause: Box::new(cause),
                        })?;
                tokens.push((i, token));
            }
            Ok::<_, BenchError>(tokens)
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(
            t.await
                .map_err(|e| BenchError::Internal(format!("a token task: {e}")))??,
        );
    }
    Ok(out)
}
