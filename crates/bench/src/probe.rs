//! Reading the server's costs around a workload: CPU time from `/proc/PID/stat` (utime +
//! stime) and store commits from the auth server's Prometheus endpoint.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::BenchError;

/// The counter of durable store commits the auth server exports.
pub const STORE_COMMITS_METRIC: &str = "auth_server_store_commits_total";

/// The most a metrics page may hold.
const MAX_METRICS_PAGE: u64 = 16 * 1024 * 1024;
/// How long a metrics scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One reading of the costs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Reading {
    /// The server's CPU seconds so far.
    server_cpu: Option<f64>,
    /// This process's CPU seconds so far.
    own_cpu: Option<f64>,
    /// The server's store commits so far (None: no counter, or no `--diag-addr`).
    commits: Option<f64>,
}

/// What a workload cost, summed over its timed windows.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Cost {
    server_cpu: Option<f64>,
    own_cpu: Option<f64>,
    commits: Option<f64>,
}

fn delta(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(b? - a?)
}

fn add(sum: Option<f64>, d: Option<f64>, first: bool) -> Option<f64> {
    match (first, sum, d) {
        (true, _, d) => d,
        (false, Some(s), Some(d)) => Some(s + d),
        _ => None,
    }
}

impl Cost {
    /// Adds the window from `before` to `after`; `first` for the first window.
    pub(crate) fn add(&mut self, before: Reading, after: Reading, first: bool) {
        self.server_cpu = add(
            self.server_cpu,
            delta(before.server_cpu, after.server_cpu),
            first,
        );
        self.own_cpu = add(self.own_cpu, delta(before.own_cpu, after.own_cpu), first);
        self.commits = add(self.commits, delta(before.commits, after.commits), first);
    }

    /// Server CPU ms, client CPU ms and commits, each per request.
    pub(crate) fn per_request(&self, requests: u64) -> (Option<f64>, Option<f64>, Option<f64>) {
        if requests == 0 {
            return (None, None, None);
        }
        let n = requests as f64;
        (
            self.server_cpu.map(|s| s * 1000.0 / n),
            self.own_cpu.map(|s| s * 1000.0 / n),
            self.commits.map(|c| c / n),
        )
    }
}

/// Where the costs are read.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    server_pid: Option<u32>,
    diag_addr: Option<String>,
    ticks_per_second: f64,
}

impl Probe {
    /// Checks that what was asked for can be read: the server's `/proc/PID/stat`, the metrics
    /// page at `diag_addr` (the commit counter itself may be missing: then commits are
    /// reported as unknown).
    pub(crate) async fn new(
        server_pid: Option<u32>,
        diag_addr: Option<String>,
    ) -> Result<Self, BenchError> {
        let probe = Self {
            server_pid,
            diag_addr,
            ticks_per_second: rustix::param::clock_ticks_per_second() as f64,
        };
        if let Some(pid) = server_pid {
            let path = format!("/proc/{pid}/stat");
            cpu_seconds(&path, probe.ticks_per_second).map_err(|message| {
                BenchError::ServerPid {
                    pid,
                    path: path.clone(),
                    message,
                }
            })?;
        }
        if let Some(addr) = &probe.diag_addr {
            let commits = store_commits(addr)
                .await
                .map_err(|message| BenchError::Diag {
                    addr: addr.clone(),
                    message,
                })?;
            if commits.is_none() {
                tracing::info!(
                    addr = %addr,
                    metric = STORE_COMMITS_METRIC,
                    "the auth server does not export its store commits; they are reported as n/a"
                );
            }
        }
        Ok(probe)
    }

    /// Reads the costs so far. A reading that fails now (the server exited, its endpoint
    /// went away) is unknown, not an error: the workload's figure becomes n/a.
    pub(crate) async fn read(&self) -> Reading {
        let server_cpu = self.server_pid.and_then(|pid| {
            cpu_seconds(&format!("/proc/{pid}/stat"), self.ticks_per_second)
                .map_err(|e| tracing::warn!(pid, error = %e, "cannot read the server's CPU time"))
                .ok()
        });
        let own_cpu = cpu_seconds("/proc/self/stat", self.ticks_per_second).ok();
        let commits = match &self.diag_addr {
            Some(addr) => store_commits(addr)
                .await
                .map_err(|e| tracing::warn!(addr = %addr, error = %e, "cannot read the server's metrics"))
                .ok()
                .flatten(),
            None => None,
        };
        Reading {
            server_cpu,
            own_cpu,
            commits,
        }
    }
}

/// utime + stime of the process whose `stat` file is `path`, in seconds.
fn cpu_seconds(path: &str, ticks_per_second: f64) -> Result<f64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let ticks = parse_stat_cpu_ticks(&text).ok_or("not a /proc stat line")?;
    Ok(ticks as f64 / ticks_per_second)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field 2)
/// is in parentheses and may hold spaces and parentheses itself, so fields are counted after
/// the last `)`.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th and stime the 13th.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The sum of the store commit counter's samples at `addr`'s `/metrics`; `None` when the
/// server does not export it.
async fn store_commits(addr: &str) -> Result<Option<f64>, String> {
    let page = tokio::time::timeout(SCRAPE_TIMEOUT, http_get(addr, "/metrics"))
        .await
        .map_err(|_| format!("no answer within {} s", SCRAPE_TIMEOUT.as_secs()))??;
    let scrape = machine_id_diag::prometheus::parse(&page)
        .map_err(|e| format!("not Prometheus text: {e}"))?;
    Ok(scrape
        .family(STORE_COMMITS_METRIC)
        .map(|f| f.samples.iter().map(|s| s.value).sum()))
}

/// The body of `GET path` over HTTP/1.0 (so the answer is never chunked), if the status is
/// 200.
async fn http_get(addr: &str, path: &str) -> Result<String, String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    stream
        .take(MAX_METRICS_PAGE)
        .read_to_end(&mut raw)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP answer")?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("the answer was {status:?}"));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_fields_fourteen_and_fifteen() {
        let line = "4242 (auth server) S 1 4242 4242 0 -1 4194560 2880 0 0 0 1234 567 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(1234 + 567));
        // A name holding ") " does not shift the fields.
        let odd = "7 (a) b) R 1 7 7 0 -1 0 0 0 0 0 10 5 0 0 20 0 1 0 1 0 0";
        assert_eq!(parse_stat_cpu_ticks(odd), Some(15));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let ticks = rustix::param::clock_ticks_per_second() as f64;
        let s = cpu_seconds("/proc/self/stat", ticks).expect("own stat");
        assert!(s >= 0.0);
    }

    #[test]
    fn costs_sum_over_windows_and_unknown_stays_unknown() {
        let r = |cpu: f64, commits: Option<f64>| Reading {
            server_cpu: Some(cpu),
            own_cpu: Some(cpu / 2.0),
            commits,
        };
        let mut c = Cost::default();
        c.add(r(1.0, None), r(1.5, None), true);
        c.add(r(2.0, None), r(2.5, None), false);
        let (server, own, commits) = c.per_request(100);
        assert_eq!(server, Some(10.0));
        assert_eq!(own, Some(5.0));
        assert_eq!(commits, None);
        let mut c = Cost::default();
        c.add(r(0.0, Some(10.0)), r(0.0, Some(60.0)), true);
        assert_eq!(c.per_request(100).2, Some(0.5));
        assert_eq!(Cost::default().per_request(0), (None, None, None));
    }
}
