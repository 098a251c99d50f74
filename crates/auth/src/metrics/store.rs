//! Store latency: [`InstrumentedBackend`] wraps the server's `Arc<dyn Backend>` and times
//! every call into a fixed-bucket histogram per operation, counting backend failures.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use machine_id_diag::Histogram;
use machine_id_diag::prometheus::{Exposition, Kind, LATENCY_BUCKETS, LabeledCounter};
use machine_id_store::{Backend, EventQuery, Item, Op, Revision, StoreError, StoredEvent, Watcher};

use super::Metrics;

/// The operations timed, in the order of [`StoreTimings::latency`].
const OPS: &[&str] = &[
    "get",
    "create",
    "put",
    "compare_and_swap",
    "delete",
    "compare_and_delete",
    "range",
    "atomic_write",
    "watch",
    "ping",
    "append_event",
    "search_events",
    "write_with_events",
    "delete_events_before",
];

/// Per-operation latency and failure counts.
#[derive(Debug)]
pub(super) struct StoreTimings {
    latency: Vec<Histogram>,
    failures: LabeledCounter,
}

impl StoreTimings {
    pub(super) fn new() -> Self {
        Self {
            latency: OPS
                .iter()
                .map(|_| Histogram::new(LATENCY_BUCKETS))
                .collect(),
            failures: LabeledCounter::new(OPS),
        }
    }

    pub(super) fn render(&self, e: &mut Exposition) {
        e.family(
            "auth_server_store_operation_duration_seconds",
            Kind::Histogram,
            "Time the store took per call that reached it (beneath the caches), by operation, whatever its outcome (watch: opening the stream).",
        );
        for (op, h) in OPS.iter().zip(&self.latency) {
            e.histogram(
                "auth_server_store_operation_duration_seconds",
                &[("op", op)],
                &h.snapshot(),
            );
        }
        e.family(
            "auth_server_store_failures_total",
            Kind::Counter,
            "Store calls that failed in the backend (I/O, connection, corruption), by operation; not-found, already-exists and conflicts are outcomes, not failures.",
        );
        for (op, n) in self.failures.read() {
            e.sample("auth_server_store_failures_total", &[("op", op)], n);
        }
    }
}

/// A [`Backend`] that times every call of the one it wraps into [`Metrics`].
pub(crate) struct InstrumentedBackend {
    inner: Arc<dyn Backend>,
    metrics: Arc<Metrics>,
}

impl InstrumentedBackend {
    /// Wraps `inner`.
    pub(crate) fn wrap(inner: Arc<dyn Backend>, metrics: Arc<Metrics>) -> Arc<dyn Backend> {
        Arc::new(Self { inner, metrics })
    }

    async fn timed<T>(
        &self,
        op: usize,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let start = Instant::now();
        let result = call.await;
        let timings = &self.metrics.store;
        if let Some(h) = timings.latency.get(op) {
            h.observe(start.elapsed());
        }
        if matches!(result, Err(StoreError::Backend(_))) {
            timings.failures.inc(op);
        }
        result
    }
}

impl std::fmt::Debug for InstrumentedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The wrapped backend's own Debug (which redacts what it must).
        self.inner.fmt(f)
    }
}

#[async_trait]
impl Backend for InstrumentedBackend {
    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        self.timed(0, self.inner.get(key)).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        self.timed(1, self.inner.create(key, value)).await
    }

    async fn put(&self, key: &str, value: Vec<u8>) -> Result<Revision, StoreError> {
        self.timed(2, self.inner.put(key, value)).await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Revision,
        value: Vec<u8>,
    ) -> Result<Revision, StoreError> {
        self.timed(3, self.inner.compare_and_swap(key, expected, value))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.timed(4, self.inner.delete(key)).await
    }

    async fn compare_and_delete(&self, key: &str, expected: Revision) -> Result<(), StoreError> {
        self.timed(5, self.inner.compare_and_delete(key, expected))
            .await
    }

    async fn range(&self, prefix: &str) -> Result<Vec<Item>, StoreError> {
        self.timed(6, self.inner.range(prefix)).await
    }

    async fn atomic_write(&self, ops: Vec<Op>) -> Result<Revision, StoreError> {
        self.timed(7, self.inner.atomic_write(ops)).await
    }

    async fn watch(&self, prefix: &str) -> Result<Watcher, StoreError> {
        self.timed(8, self.inner.watch(prefix)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(9, self.inner.ping()).await
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn append_event(&self, event: StoredEvent) -> Result<(), StoreError> {
        self.timed(10, self.inner.append_event(event)).await
    }

    async fn search_events(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        self.timed(11, self.inner.search_events(query)).await
    }

    async fn write_with_events(
        &self,
        ops: Vec<Op>,
        events: Vec<StoredEvent>,
    ) -> Result<Revision, StoreError> {
        self.timed(12, self.inner.write_with_events(ops, events))
            .await
    }

    fn durable_commits(&self) -> Option<u64> {
        self.inner.durable_commits()
    }

    async fn delete_events_before(&self, before_nanos: i64, max: usize) -> Result<u64, StoreError> {
        self.timed(13, self.inner.delete_events_before(before_nanos, max))
            .await
    }
}
