//! Back-pressure: at most `limits.max_in_flight_requests` gRPC calls are served at once; a
//! call beyond that is answered `UNAVAILABLE` at once, before any work, instead of queueing
//! without bound behind the others (where every caller would wait longer and longer, time
//! out, and retry into a queue that never drains).
//!
//! A call holds its place from the moment it arrives until its response body is finished or
//! dropped, so a bidirectional join (RegisterUsingIAMMethod, which waits on STS) holds one
//! for its whole exchange. `WatchCertAuthorities` streams hold none: a bot keeps one open for
//! its life, and they would otherwise fill every place.
//!
//! The refusal is certain not to have run anything, so any client may retry it unchanged;
//! tbot does, after its jittered backoff, which spreads a herd's retries over time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The calls exempt from the limit: long-lived streams.
const EXEMPT: &[&str] = &["/machineid.v1.AuthService/WatchCertAuthorities"];

/// How often an overload is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// The layer that admits calls; shares one count of places across connections.
#[derive(Debug, Clone)]
pub(crate) struct AdmissionLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    places: Arc<Semaphore>,
    max: usize,
    started: Instant,
    /// Milliseconds after `started` of the last overload log line, and how many were refused
    /// since.
    last_log_ms: AtomicU64,
    refused_since_log: AtomicU64,
}

impl AdmissionLayer {
    /// At most `max` calls at once.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            shared: Arc::new(Shared {
                places: Arc::new(Semaphore::new(max)),
                max,
                started: Instant::now(),
                last_log_ms: AtomicU64::new(0),
                refused_since_log: AtomicU64::new(0),
            }),
        }
    }
}

impl<S> tower::Layer<S> for AdmissionLayer {
    type Service = Admission<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Admission {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Admits calls to `S` while places are free; see the module's doc.
#[derive(Debug, Clone)]
pub(crate) struct Admission<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl Shared {
    fn refused(&self, path: &str) {
        let n = self.refused_since_log.fetch_add(1, Ordering::Relaxed) + 1;
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_log_ms.load(Ordering::Relaxed);
        let every = u64::try_from(LOG_EVERY.as_millis()).unwrap_or(1000);
        if (last == 0 || now.saturating_sub(last) >= every)
            && self
                .last_log_ms
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.refused_since_log.store(0, Ordering::Relaxed);
            tracing::warn!(
                max_in_flight = self.max,
                refused = n,
                last = path,
                "overloaded: calls beyond limits.max_in_flight_requests are answered UNAVAILABLE (clients retry with backoff)"
            );
        }
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for Admission<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    RB: Body + Unpin + Default + Send + 'static,
{
    type Response = http::Response<Admitted<RB>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path();
        let place = if EXEMPT.contains(&path) {
            None
        } else {
            match self.shared.places.clone().try_acquire_owned() {
                Ok(place) => Some(place),
                Err(_) => {
                    self.shared.refused(path);
                    let status = tonic::Status::unavailable(format!(
                        "the auth server is overloaded ({} calls in progress, limits.max_in_flight_requests); nothing was done: retry after a backoff",
                        self.shared.max
                    ));
                    return Box::pin(std::future::ready(Ok(status.into_http())));
                }
            }
        };
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|inner| Admitted { inner, place }))
        })
    }
}

/// A response body that holds its call's place until it is finished or dropped.
#[derive(Debug, Default)]
pub(crate) struct Admitted<B> {
    inner: B,
    place: Option<OwnedSemaphorePermit>,
}

impl<B: Body + Unpin> Body for Admitted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if frame.is_none() || this.inner.is_end_stream() {
            this.place = None;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
