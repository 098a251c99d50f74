//! What a bench found: one [`WorkloadReport`] per workload, the setup and the minting figure
//! measured in the same run.

use std::collections::BTreeMap;

use machine_id_client::ClientError;
use serde::Serialize;

use crate::LatencySummary;

/// How often one kind of failure happened, with its first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorCount {
    /// How many failed attempts were of this kind.
    pub count: u64,
    /// The message of the first one.
    pub first: String,
}

/// The figures of one workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadReport {
    /// The workload's name (`renew`, `cycle`, ...).
    pub workload: String,
    /// The bots worked.
    pub bots: usize,
    /// The workers.
    pub concurrency: usize,
    /// The seconds timed: from the workers' start to the end of the last request (for
    /// `join`, the sum of the windows in which the tokens made beforehand were used).
    pub seconds: f64,
    /// Requests answered (a renewal retried unchanged until answered counts once).
    pub requests: u64,
    /// `requests / seconds`.
    pub requests_per_second: f64,
    /// How many of the requests renewed a bot identity, each moving its generation by one.
    pub renewals: u64,
    /// Latency of each answered request, from its first attempt (retries included).
    #[serde(flatten)]
    pub latency: LatencySummary,
    /// Failed attempts, retried or not.
    pub errors: u64,
    /// The failed attempts by kind (`unavailable`, `permission_denied`, ...).
    pub error_kinds: BTreeMap<String, ErrorCount>,
    /// Bots dropped from the bench in this workload after a refusal that retrying cannot
    /// change, or a renewal that stayed unanswered (renewing from an identity the server may
    /// have moved past would lock the bot).
    pub bots_dropped: u64,
    /// The locks in the cluster after the workload.
    pub locks: usize,
    /// The auth server's CPU time (user + system) per request, ms, with `--server-pid`.
    pub server_cpu_ms_per_request: Option<f64>,
    /// The auth server's store commits (`auth_server_store_commits_total`) per request, with
    /// `--diag-addr` and a server that exports the counter.
    pub store_commits_per_request: Option<f64>,
    /// This process's CPU time per request, ms (it shares the machine with the server when
    /// run on it).
    pub client_cpu_ms_per_request: Option<f64>,
    /// Certificates this process signs per second on one core (see [`BenchReport`]).
    pub mint_certs_per_second: f64,
}

/// The bots the bench set up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetupReport {
    /// Bots created by this run.
    pub created: usize,
    /// Bots of an earlier run with the same prefix, joined again with a new token.
    pub reused: usize,
    /// Seconds the setup took (not part of any workload).
    pub seconds: f64,
}

/// Everything a bench found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// The bots' setup.
    pub setup: SetupReport,
    /// Certificates signed per second in this process, on one core, with the default suite
    /// (an Ed25519 SSH user certificate and a P-256 X.509 certificate alternately, what a
    /// renewal signs), measured before the workloads: what the machine's crypto alone allows.
    pub mint_certs_per_second: f64,
    /// One report per workload, in the order run.
    pub workloads: Vec<WorkloadReport>,
}

/// Failed attempts by kind, as they happen.
#[derive(Debug, Default, Clone)]
pub(crate) struct ErrorTally {
    pub(crate) kinds: BTreeMap<String, ErrorCount>,
}

impl ErrorTally {
    /// Counts one failure of `kind`.
    pub(crate) fn record(&mut self, kind: &str, message: impl FnOnce() -> String) {
        match self.kinds.get_mut(kind) {
            Some(c) => c.count += 1,
            None => {
                let first = message();
                tracing::debug!(kind, error = %first, "a request failed");
                self.kinds
                    .insert(kind.to_string(), ErrorCount { count: 1, first });
            }
        }
    }

    /// Counts one failed call.
    pub(crate) fn client(&mut self, e: &ClientError) {
        self.record(&error_kind(e), || e.to_string());
    }

    /// Adds `other`'s counts (its first messages only for kinds not seen here).
    pub(crate) fn merge(&mut self, other: ErrorTally) {
        for (kind, c) in other.kinds {
            self.kinds
                .entry(kind)
                .and_modify(|mine| mine.count += c.count)
                .or_insert(c);
        }
    }

    /// All failures.
    pub(crate) fn total(&self) -> u64 {
        self.kinds.values().map(|c| c.count).sum()
    }
}

/// A short name for the kind of a failed call.
pub(crate) fn error_kind(e: &ClientError) -> String {
    let k = match e {
        ClientError::Unavailable { .. } | ClientError::AllUnavailable { .. } => "unavailable",
        ClientError::PermissionDenied(_) => "permission_denied",
        ClientError::Unauthenticated(_) => "unauthenticated",
        ClientError::NotFound(_) => "not_found",
        ClientError::AlreadyExists(_) => "already_exists",
        ClientError::InvalidArgument(_) => "invalid_argument",
        ClientError::Aborted(_) => "aborted",
        ClientError::Upstream { .. } => "upstream",
        ClientError::CertificateRejected { .. } => "certificate_rejected",
        ClientError::UntrustedServer { .. } => "untrusted_server",
        ClientError::IdentityExpired { .. } => "identity_expired",
        ClientError::PinMismatch { .. }
        | ClientError::RotationNeedsBothPins { .. }
        | ClientError::CaExpired { .. } => "ca_pin",
        ClientError::Convert(_) => "bad_answer",
        ClientError::Server { code, .. } => return snake(code),
        _ => "client",
    };
    k.to_string()
}

/// `ResourceExhausted` → `resource_exhausted`.
fn snake(code: &str) -> String {
    let mut s = String::with_capacity(code.len() + 4);
    for (i, c) in code.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                s.push('_');
            }
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_counted_with_their_first_message() {
        let mut t = ErrorTally::default();
        t.client(&ClientError::Aborted("first race".into()));
        t.client(&ClientError::Aborted("second race".into()));
        t.client(&ClientError::Server {
            code: "ResourceExhausted".into(),
            message: "busy".into(),
        });
        let mut other = ErrorTally::default();
        other.client(&ClientError::Aborted("other worker".into()));
        other.client(&ClientError::PermissionDenied("locked".into()));
        t.merge(other);
        assert_eq!(t.total(), 5);
        let aborted = &t.kinds["aborted"];
        assert_eq!(aborted.count, 3);
        assert!(aborted.first.starts_with("first race"), "{}", aborted.first);
        assert_eq!(t.kinds["resource_exhausted"].count, 1);
        assert_eq!(t.kinds["permission_denied"].first, "access denied: locked");
    }
}
