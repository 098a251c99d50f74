//! What a bench runs: the workloads, the fleet of bots, the workers, how long, and where the
//! server's costs can be read.

use std::time::Duration;

use crate::BenchError;

/// One kind of load, as a bot makes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Workload {
    /// First joins: a new single-use token per join (made beforehand, not timed), CA-pin
    /// bootstrap, a connection verified by the pinned CAs, `RegisterUsingToken`.
    Join,
    /// Renewals of the bot identity as tbot renews: a new key and a new mTLS connection with
    /// the current identity each time, `GenerateUserCerts` for the new key.
    Renew,
    /// Whole tbot cycles as tbot makes them: one new mTLS connection with the current
    /// identity and one `GenerateBotCerts` call that renews it and returns one output's
    /// impersonated certificates with the cluster's proxy address and host CA keys.
    Cycle,
    /// An output's impersonated certificates over a connection each bot keeps open.
    Output,
    /// An output's impersonated certificates over a new mTLS connection each time.
    OutputNewConn,
}

impl Workload {
    /// Every workload, in the order `all` runs them. Joins come first: a join resets a bot's
    /// generation, so the renewals counted afterwards are exactly the generation's advance.
    pub const ALL: [Workload; 5] = [
        Workload::Join,
        Workload::Renew,
        Workload::Cycle,
        Workload::Output,
        Workload::OutputNewConn,
    ];

    /// The name `--workload` takes and the reports print.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Join => "join",
            Workload::Renew => "renew",
            Workload::Cycle => "cycle",
            Workload::Output => "output",
            Workload::OutputNewConn => "output-new-conn",
        }
    }

    /// Whether each request renews the bot identity (moves its generation by one).
    pub fn renews(self) -> bool {
        matches!(self, Workload::Renew | Workload::Cycle)
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The role every bench bot may impersonate (the cluster's default `access` role).
pub const BENCH_ROLE: &str = "access";

/// What a bench runs. Check it with [`BenchConfig::validate`] before connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchConfig {
    /// The bots to create (or reuse) and join: `<prefix>-0` to `<prefix>-<bots-1>`.
    pub bots: usize,
    /// The workers; worker `w` owns bots `w`, `w + concurrency`, ... and works them in turn.
    pub concurrency: usize,
    /// How long each workload runs.
    pub duration: Duration,
    /// The workloads, run one after the other in this order.
    pub workloads: Vec<Workload>,
    /// The bots' name prefix.
    pub prefix: String,
    /// The auth server's process id on this machine, to read its CPU time.
    pub server_pid: Option<u32>,
    /// The auth server's diagnostics address (`host:port`), to read its store commits.
    pub diag_addr: Option<String>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            bots: 100,
            concurrency: 8,
            duration: Duration::from_secs(10),
            workloads: Workload::ALL.to_vec(),
            prefix: "bench".into(),
            server_pid: None,
            diag_addr: None,
        }
    }
}

impl BenchConfig {
    /// Checks the settings make a bench: at least one bot and one worker, no more workers
    /// than bots, a duration, a workload, a prefix that makes bot names.
    pub fn validate(&self) -> Result<(), BenchError> {
        if self.bots == 0 {
            return Err(BenchError::Zero { flag: "bots" });
        }
        if self.concurrency == 0 {
            return Err(BenchError::Zero {
                flag: "concurrency",
            });
        }
        if self.concurrency > self.bots {
            return Err(BenchError::ConcurrencyOverBots {
                bots: self.bots,
                concurrency: self.concurrency,
            });
        }
        if self.duration.is_zero() {
            return Err(BenchError::ZeroDuration);
        }
        if self.workloads.is_empty() {
            return Err(BenchError::NoWorkload);
        }
        let invalid = |message: &str| BenchError::InvalidPrefix {
            prefix: self.prefix.clone(),
            message: message.into(),
        };
        if self.prefix.is_empty() {
            return Err(invalid("it is empty"));
        }
        if self.prefix.len() > 64 {
            return Err(invalid("it is longer than 64 characters"));
        }
        if !self
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid("it holds a character bot names cannot"));
        }
        Ok(())
    }

    /// The name of bot `i`.
    pub fn bot_name(&self, i: usize) -> String {
        format!("{}-{i}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        BenchConfig::default().validate().expect("valid");
    }

    #[test]
    fn each_mistake_names_its_flag() {
        let with = |f: fn(&mut BenchConfig)| {
            let mut c = BenchConfig::default();
            f(&mut c);
            c.validate().expect_err("invalid").to_string()
        };
        let m = with(|c| {
            c.bots = 4;
            c.concurrency = 8;
        });
        assert!(m.contains("--concurrency 8 is more than --bots 4"), "{m}");
        assert!(m.contains("raise --bots to at least 8"), "{m}");
        assert!(with(|c| c.bots = 0).contains("--bots must be at least 1"));
        assert!(with(|c| c.concurrency = 0).contains("--concurrency must be at least 1"));
        assert!(
            with(|c| c.duration = Duration::ZERO).contains("--duration must be more than zero")
        );
        assert!(with(|c| c.workloads.clear()).contains("no workload"));
        assert!(with(|c| c.prefix = "a b".into()).contains("invalid --prefix \"a b\""));
        assert!(with(|c| c.prefix.clear()).contains("it is empty"));
    }

    #[test]
    fn bot_names_carry_the_prefix() {
        let c = BenchConfig {
            prefix: "load".into(),
            ..BenchConfig::default()
        };
        assert_eq!(c.bot_name(7), "load-7");
    }
}
