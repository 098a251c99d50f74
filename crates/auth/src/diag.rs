//! The diagnostics endpoints of the auth server on `diag_addr` (plain HTTP, served by
//! `machine_id_diag`): `/healthz` (200 while the process serves), `/readyz` (200 only while
//! the store answers and every change feed is up, else 503 with one line naming what is
//! down) and `/metrics` ([`Metrics`] in the Prometheus text format). The feed's health is
//! the cache's [`FeedHealth`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use machine_id_diag::{Handler, Reply};
use machine_id_store::Backend;

use crate::cache::FeedHealth;
use crate::metrics::Metrics;
use crate::state::CLUSTER_NAME_KEY;

/// How long `/readyz` waits for the store to answer.
pub(crate) const READY_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the endpoints read.
#[derive(Debug, Clone)]
pub(crate) struct Diag {
    pub(crate) metrics: Arc<Metrics>,
    /// The change feed behind the caches (up while its store watch is open and the cache
    /// loaded; its lag and losses).
    pub(crate) feed: Arc<FeedHealth>,
    /// The store itself (not the instrumented one: probes do not count as store latency).
    pub(crate) store: Arc<dyn Backend>,
}

impl Diag {
    /// `None` when ready, else one line naming each part that is down.
    pub(crate) async fn not_ready(&self) -> Option<String> {
        let mut down = Vec::new();
        // A read of a real record, not `Backend::ping`: SQLite's ping (`SELECT 1`) reads no
        // table, so it passes while another process holds the database's locks.
        match tokio::time::timeout(READY_STORE_TIMEOUT, self.store.get(CLUSTER_NAME_KEY)).await {
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => down.push(format!(
                "store: the cluster record {CLUSTER_NAME_KEY} is missing"
            )),
            Ok(Err(e)) => down.push(format!("store: {e}")),
            Err(_) => down.push(format!(
                "store: no answer within {}s",
                READY_STORE_TIMEOUT.as_secs()
            )),
        }
        if !self.feed.is_up() {
            down.push(
                "feed: down (the store's change feed was lost and the caches are not reloaded yet)"
                    .to_string(),
            );
        }
        (!down.is_empty()).then(|| down.join("; ").replace('\n', " "))
    }
}

impl Handler for Diag {
    async fn respond(&self, path: &str) -> Reply {
        match path {
            "/healthz" => Reply::text(200, "ok\n"),
            "/readyz" => match self.not_ready().await {
                None => Reply::text(200, "ready\n"),
                Some(why) => Reply::text(503, format!("not ready: {why}\n")),
            },
            "/metrics" => Reply::metrics(
                self.metrics
                    .render(&self.feed, self.store.durable_commits()),
            ),
            _ => Reply::not_found(),
        }
    }
}

/// Binds `addr` and returns the bound address and the serving future (see
/// [`machine_id_diag::serve`]).
pub(crate) async fn bind(
    addr: &str,
    diag: Diag,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static), machine_id_diag::DiagError> {
    let (local, serving) = machine_id_diag::serve(addr, diag).await?;
    tracing::info!(addr = %local, "diagnostics listening (/healthz, /readyz, /metrics)");
    Ok((local, serving))
}

#[cfg(test)]
mod tests;
