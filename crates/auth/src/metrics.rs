//! The auth server's numbers for `/metrics`: gRPC calls by method and code, joins, renewals,
//! refusals, store latency, accepted connections and the process start time, kept in atomics
//! (no lock on any request), and their Prometheus text.
//!
//! Calls are counted in one place, [`MetricsLayer`] (`metrics/grpc.rs`) around the gRPC
//! services, once each call's status is known; the service layer only marks what the wire
//! does not show (a renewal, a refusal by a lock) on the request through [`mark`]. Store
//! calls are timed by [`InstrumentedBackend`] (`metrics/store.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use machine_id_diag::prometheus::{Exposition, Kind, LabeledCounter};

use crate::cache::FeedHealth;

mod grpc;
mod store;

pub(crate) use grpc::{Flag, MetricsLayer, mark};
pub(crate) use store::InstrumentedBackend;

/// The outcome classes of joins and renewals (see [`result_of`]).
const RESULTS: &[&str] = &["ok", "denied", "failed"];
/// Why a call was refused.
const REASONS: &[&str] = &["permission_denied", "locked", "unauthenticated"];
/// The join methods, by gRPC method.
const JOIN_METHODS: &[&str] = &["token", "iam"];

/// Every number `/metrics` shows, shared by the gRPC layer, the store wrapper and the accept
/// loops of one server.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// When the process started serving, Unix seconds.
    started: f64,
    grpc: grpc::GrpcCounts,
    /// Per join method ([`JOIN_METHODS`]), per result.
    joins: [LabeledCounter; 2],
    renewals: LabeledCounter,
    refusals: LabeledCounter,
    store: store::StoreTimings,
    connections: AtomicU64,
}

impl Metrics {
    /// Zeroed counters, started now.
    pub(crate) fn new() -> Arc<Self> {
        let started = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Arc::new(Self {
            started,
            grpc: grpc::GrpcCounts::new(),
            joins: [LabeledCounter::new(RESULTS), LabeledCounter::new(RESULTS)],
            renewals: LabeledCounter::new(RESULTS),
            refusals: LabeledCounter::new(REASONS),
            store: store::StoreTimings::new(),
            connections: AtomicU64::new(0),
        })
    }

    /// Counts one accepted TCP connection (any listener, before TLS).
    pub(crate) fn connection_accepted(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one finished gRPC call of `method` (an index of [`grpc::METHODS`], or past its
    /// end for an unknown path) with status `code`, and what `flags` marked on it.
    fn record_call(&self, method: usize, code: tonic::Code, flags: u8) {
        self.grpc.inc(method, code);
        let result = result_of(code);
        match grpc::METHODS.get(method) {
            Some((_, "RegisterUsingToken")) => self.joins[0].inc(result),
            Some((_, "RegisterUsingIAMMethod")) => self.joins[1].inc(result),
            _ => {}
        }
        if flags & Flag::Renewal as u8 != 0 {
            self.renewals.inc(result);
        }
        match code {
            tonic::Code::PermissionDenied if flags & Flag::Locked as u8 != 0 => {
                self.refusals.inc(1);
            }
            tonic::Code::PermissionDenied => self.refusals.inc(0),
            tonic::Code::Unauthenticated => self.refusals.inc(2),
            _ => {}
        }
    }

    /// The Prometheus text of every metric, with the change feed's `feed` and the store's
    /// durable commits (`None`: the store does not count them).
    pub(crate) fn render(&self, feed: &FeedHealth, store_commits: Option<u64>) -> String {
        let mut e = Exposition::new();
        e.family(
            "auth_server_grpc_requests_total",
            Kind::Counter,
            "gRPC calls handled, by service, method and status code (only combinations seen so far are listed).",
        );
        for (service, method, code, n) in self.grpc.read() {
            e.sample(
                "auth_server_grpc_requests_total",
                &[("service", service), ("method", method), ("code", code)],
                n,
            );
        }
        e.family(
            "auth_server_joins_total",
            Kind::Counter,
            "Join attempts by join method and result: ok, denied (refused: bad token, rules, locks, bad request) or failed (server or upstream error, cancelled).",
        );
        for (method, counter) in JOIN_METHODS.iter().zip(&self.joins) {
            for (result, n) in counter.read() {
                e.sample(
                    "auth_server_joins_total",
                    &[("method", method), ("result", result)],
                    n,
                );
            }
        }
        e.family(
            "auth_server_renewals_total",
            Kind::Counter,
            "Renewals of a bot's own identity (GenerateUserCerts without role requests, GenerateBotCerts with an identity key), by result as for joins.",
        );
        for (result, n) in self.renewals.read() {
            e.sample("auth_server_renewals_total", &[("result", result)], n);
        }
        e.family(
            "auth_server_refusals_total",
            Kind::Counter,
            "Calls refused: locked (a lock in force on the caller), permission_denied (any other PERMISSION_DENIED: rules, bad tokens, generation mismatches), unauthenticated (no usable certificate).",
        );
        for (reason, n) in self.refusals.read() {
            e.sample("auth_server_refusals_total", &[("reason", reason)], n);
        }
        self.store.render(&mut e);
        if let Some(commits) = store_commits {
            e.single(
                "auth_server_store_commits_total",
                Kind::Counter,
                "Durable commits (each one fsync) of the embedded SQLite store since start; concurrent writes share commits, so per request this falls below one under load.",
                commits,
            );
        }
        e.single(
            "auth_server_feed_up",
            Kind::Gauge,
            "1 while the store's change feed has a watch open and the caches are loaded, 0 from the moment it is lost until they are reloaded.",
            u8::from(feed.is_up()),
        );
        e.single(
            "auth_server_feed_lag_seconds",
            Kind::Gauge,
            "Last measured lag of the change feed: from one of this server's writes returning to its change arriving through the store's watch (0 until measured).",
            feed.lag().as_secs_f64(),
        );
        e.single(
            "auth_server_feed_losses_total",
            Kind::Counter,
            "Times the change feed was lost (and the caches reset and reloaded) since start.",
            feed.losses(),
        );
        e.single(
            "auth_server_connections_accepted_total",
            Kind::Counter,
            "TCP connections accepted on the auth and proxy listeners (before TLS and limits).",
            self.connections.load(Ordering::Relaxed),
        );
        e.single(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the auth server since the Unix epoch, in seconds.",
            self.started,
        );
        e.finish()
    }
}

/// The index in [`RESULTS`] of a call's outcome: `ok`; `denied` for the codes of a refusal
/// or a bad request (the caller must change something); `failed` for the rest (server,
/// store or upstream errors, cancellations, conflicts to retry).
fn result_of(code: tonic::Code) -> usize {
    use tonic::Code;
    match code {
        Code::Ok => 0,
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::ResourceExhausted
        | Code::Unauthenticated => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests;
