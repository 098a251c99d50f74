//! The diagnostics endpoints of the auth server on `diag_addr` (plain HTTP, served by
//! `machine_id_diag`): `/healthz` (200 while the process serves), `/readyz` (200 only while
//! the store answers and every change feed is up, else 503 with one line naming what is
//! down) and `/metrics` ([`Metrics`] in the Prometheus text format). Also the health of
//! change feeds, [`FeedHealth`], which each feed sets and `/readyz` reads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use machine_id_diag::{Handler, Reply};
use machine_id_store::Backend;

use crate::metrics::Metrics;
use crate::state::CLUSTER_NAME_KEY;

/// How long `/readyz` waits for the store to answer.
pub(crate) const READY_STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// The health of one change feed (a store watch that keeps something in this server
/// current): up while its watch is open. A feed sets it down the moment its watch stream
/// ends and up again once a new watch is open; `/readyz` is 503 while any feed is down.
///
/// [`Self::set_lag`] records how far the feed trails the store (time from a write to its
/// arrival, e.g. measured by a heartbeat key the feed's owner writes and watches for), shown
/// as `auth_server_feed_lag_seconds`; a feed that never measures it shows none.
#[derive(Debug, Clone)]
pub(crate) struct FeedHealth {
    inner: Arc<FeedState>,
}

#[derive(Debug)]
struct FeedState {
    name: &'static str,
    up: AtomicBool,
    /// Nanoseconds, `u64::MAX` while never measured.
    lag_nanos: AtomicU64,
}

impl FeedHealth {
    /// Marks the feed up (a watch is open) or down (its watch ended, none open yet).
    pub(crate) fn set_up(&self, up: bool) {
        let was = self.inner.up.swap(up, Ordering::Relaxed);
        if was != up {
            tracing::info!(feed = self.inner.name, up, "change feed state changed");
        }
    }

    /// Whether the feed is up.
    pub(crate) fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// Records the feed's latest measured lag.
    #[allow(dead_code)] // The cache heartbeat (issue 11) sets it; nothing in this crate yet.
    pub(crate) fn set_lag(&self, lag: Duration) {
        let nanos = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX - 1);
        self.inner.lag_nanos.store(nanos, Ordering::Relaxed);
    }
}

/// One feed's state at one moment, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FeedStatus {
    /// The feed's name (`locks`).
    pub(crate) name: &'static str,
    /// Whether it is up.
    pub(crate) up: bool,
    /// Its last measured lag.
    pub(crate) lag: Option<Duration>,
}

/// The server's change feeds. Registering takes a lock; reading a feed's state does not.
#[derive(Debug, Clone, Default)]
pub(crate) struct Feeds {
    list: Arc<Mutex<Vec<FeedHealth>>>,
}

impl Feeds {
    /// Adds the feed `name`, down until it says it is up.
    pub(crate) fn register(&self, name: &'static str) -> FeedHealth {
        let feed = FeedHealth {
            inner: Arc::new(FeedState {
                name,
                up: AtomicBool::new(false),
                lag_nanos: AtomicU64::new(u64::MAX),
            }),
        };
        self.list
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(feed.clone());
        feed
    }

    /// Every feed's state.
    pub(crate) fn snapshot(&self) -> Vec<FeedStatus> {
        let list = self.list.lock().unwrap_or_else(PoisonError::into_inner);
        list.iter()
            .map(|f| {
                let lag = f.inner.lag_nanos.load(Ordering::Relaxed);
                FeedStatus {
                    name: f.inner.name,
                    up: f.is_up(),
                    lag: (lag != u64::MAX).then(|| Duration::from_nanos(lag)),
                }
            })
            .collect()
    }
}

/// What the endpoints read.
#[derive(Debug, Clone)]
pub(crate) struct Diag {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) feeds: Feeds,
    /// The store itself (not the instrumented one: probes do not count as store latency).
    pub(crate) store: Arc<dyn Backend>,
}

impl Diag {
    /// `None` when ready, else one line naming each part that is down.
    pub(crate) async fn not_ready(&self) -> Option<String> {
        let mut down = Vec::new();
        // TODO(ping): use Backend::ping once the trait has it.
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
        for f in self.feeds.snapshot() {
            if !f.up {
                down.push(format!(
                    "feed {}: down (its store watch ended and no new one is open yet)",
                    f.name
                ));
            }
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
            "/metrics" => Reply::metrics(self.metrics.render(&self.feeds.snapshot())),
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
