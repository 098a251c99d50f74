//! `tctl bench`: the flags into a [`BenchConfig`] (checked before connecting), progress on
//! stderr, and the reports as a table or JSON lines. The load itself is `machine_id_bench`.

use crate::output::{print, render};
use crate::{BenchArgs, BenchFormat, BenchWorkload};
use anyhow::{Context, Result};
use machine_id_bench::{BenchConfig, BenchReport, Progress, Workload, WorkloadReport};
use machine_id_client::Client;

/// The bench `args` describe, checked.
pub(super) fn config(args: &BenchArgs) -> Result<BenchConfig> {
    let duration = super::parse_ttl(&args.duration)
        .with_context(|| format!("--duration {:?}", args.duration))?;
    let workloads = match args.workload {
        BenchWorkload::Renew => vec![Workload::Renew],
        BenchWorkload::Cycle => vec![Workload::Cycle],
        BenchWorkload::Output => vec![Workload::Output],
        BenchWorkload::OutputNewConn => vec![Workload::OutputNewConn],
        BenchWorkload::Join => vec![Workload::Join],
        BenchWorkload::All => Workload::ALL.to_vec(),
    };
    let config = BenchConfig {
        bots: args.bots,
        concurrency: args.concurrency,
        duration,
        workloads,
        prefix: args.prefix.clone(),
        server_pid: args.server_pid,
        diag_addr: args.diag_addr.clone(),
    };
    config.validate()?;
    Ok(config)
}

/// Runs the bench against `addr` with the admin `client` and prints what it found.
pub(super) async fn run(
    client: &Client,
    addr: &str,
    config: &BenchConfig,
    format: BenchFormat,
) -> Result<()> {
    let text = format == BenchFormat::Text;
    let progress = |p: Progress<'_>| {
        if text {
            progress_line(&p);
        }
    };
    let report = machine_id_bench::run(client, addr, config, &progress).await?;
    match format {
        BenchFormat::Json => {
            let mut out = String::new();
            for w in &report.workloads {
                out.push_str(&serde_json::to_string(w)?);
                out.push('\n');
            }
            print(&out)
        }
        BenchFormat::Text => print(&table(addr, config, &report)),
    }
}

/// Progress for a person, on stderr.
fn progress_line(p: &Progress<'_>) {
    let line = match p {
        Progress::Minting => "measuring minting in this process...".to_string(),
        Progress::SettingUp { bots } => format!("setting up {bots} bots..."),
        Progress::SetUp(s) => format!(
            "{} bots created, {} reused, joined in {:.2} s",
            s.created, s.reused, s.seconds
        ),
        Progress::Running { workload, duration } => {
            format!("running {workload} for {} s...", duration.as_secs_f64())
        }
        Progress::Finished(_) => return,
        _ => return,
    };
    eprintln!("{line}");
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.decimals$}"))
}

fn row(w: &WorkloadReport) -> [String; 10] {
    [
        w.workload.clone(),
        format!("{:.1}", w.requests_per_second),
        format!("{:.2}", w.latency.p50_ms),
        format!("{:.2}", w.latency.p90_ms),
        format!("{:.2}", w.latency.p99_ms),
        format!("{:.2}", w.latency.max_ms),
        w.errors.to_string(),
        w.locks.to_string(),
        opt(w.server_cpu_ms_per_request, 3),
        opt(w.store_commits_per_request, 3),
    ]
}

/// The report as a person reads it: what ran, the table, the errors by kind, the minting
/// figure.
fn table(addr: &str, config: &BenchConfig, report: &BenchReport) -> String {
    let mut out = format!(
        "tctl bench against {addr}: {} bots ({}-0 to {}-{}), {} workers, {} s per workload\n\n",
        config.bots,
        config.prefix,
        config.prefix,
        config.bots - 1,
        config.concurrency,
        config.duration.as_secs_f64(),
    );
    let rows: Vec<[String; 10]> = report.workloads.iter().map(row).collect();
    out.push_str(&render(
        [
            "Workload",
            "Req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "Max ms",
            "Errors",
            "Locks",
            "Server CPU ms/req",
            "Commits/req",
        ],
        &rows,
    ));
    for w in &report.workloads {
        for (kind, c) in &w.error_kinds {
            out.push_str(&format!(
                "{}: {} {kind} error(s), the first: {}\n",
                w.workload, c.count, c.first
            ));
        }
        if w.bots_dropped > 0 {
            out.push_str(&format!(
                "{}: {} bot(s) dropped from the bench (refused, or a renewal stayed unanswered)\n",
                w.workload, w.bots_dropped
            ));
        }
    }
    out.push_str(&format!(
        "\nMinting in this process, one core: {:.0} certificates/s (a renewal signs 2).\n",
        report.mint_certs_per_second
    ));
    if config.server_pid.is_none() || config.diag_addr.is_none() {
        out.push_str(
            "Server CPU needs --server-pid; commits need --diag-addr and a server that exports auth_server_store_commits_total.\n",
        );
    }
    out
}
