//! The load generator behind `tctl bench`: it loads a running auth server exactly as a
//! fleet of tbot processes would, and measures what each kind of request costs.
//!
//! - [`BenchConfig`]: how many bots (`<prefix>-0` ...), how many workers, how long, which
//!   [`Workload`]s, and where the server's costs can be read (`--server-pid` for its CPU time
//!   from `/proc/PID/stat`, `--diag-addr` for its store commits from the Prometheus counter
//!   [`STORE_COMMITS_METRIC`]).
//! - [`run`]: checks the admin identity's rights, measures the minting figure (certificates
//!   this process signs per second on one core, the crypto bound to read the table against),
//!   creates the bots (or reuses those of an earlier run with the same prefix, joining them
//!   again with new tokens) and joins them, then runs each workload from the workers for the
//!   duration and returns a [`BenchReport`]: per workload a [`WorkloadReport`] with
//!   requests/s, a [`LatencySummary`], errors by kind, the locks in the cluster afterwards
//!   and, where readable, the server's CPU time and store commits per request.
//!
//! **Invariants.** Every request is made as tbot makes it: a renewal is a new key and a new
//! mutual-TLS connection as the current identity; a cycle is one such connection and one
//! `GenerateBotCerts` call that renews and gets one output's certificates for the key the
//! output keeps, every role the bot may impersonate; a join bootstraps trust from the
//! CA pins. Each bot's current identity lives with exactly one worker, which makes one
//! request at a time, so a bot never renews concurrently with itself and never from a stale
//! generation; workers share nothing a tbot process would not share (not even failover
//! state). Failed attempts are counted by kind, never hidden: the only retry is tbot's, the
//! same request sent again unchanged (a join is never retried: its token is single-use);
//! a bot the server refuses, or whose renewal stays unanswered, is dropped from the bench
//! rather than renewed from an identity the server may have moved past. Nothing is timed
//! that tbot would not wait for: setup and the joins' tokens are made outside the timed
//! windows, and their server costs are not counted.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use machine_id_bench::{BenchConfig, Workload};
//! use machine_id_client::{Client, ClientIdentity};
//! let admin = Client::connect("127.0.0.1:3025", &ClientIdentity::load("/var/lib/machine-id/admin")?).await?;
//! let config = BenchConfig { bots: 100, concurrency: 16, workloads: vec![Workload::Renew], ..BenchConfig::default() };
//! let report = machine_id_bench::run(&admin, "127.0.0.1:3025", &config, &|_| {}).await?;
//! for w in &report.workloads {
//!     println!("{}: {:.0}/s, p99 {:.1} ms", w.workload, w.requests_per_second, w.latency.p99_ms);
//! }
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod config;
mod error;
mod fleet;
mod latency;
mod mint;
mod probe;
mod report;
mod run;
mod workload;

pub use config::{BENCH_ROLE, BenchConfig, Workload};
pub use error::BenchError;
pub use latency::LatencySummary;
pub use probe::STORE_COMMITS_METRIC;
pub use report::{BenchReport, ErrorCount, SetupReport, WorkloadReport};
pub use run::{Progress, run};
