//! Resource limits on what unauthenticated peers can make the server hold or write:
//!
//! - [`ConnLimiter`]: at most N connections per source IP that are still in their TLS
//!   handshake or finished it without a client certificate (joins, pings, CA fetches and
//!   anything still anonymous). A connection over the cap is closed at once, with a log line.
//! - [`IdleIo`]: a connection wrapper that fails the connection when no byte moved in either
//!   direction for the idle timeout, so idle TLS connections do not pile up.
//! - [`AuditLimiter`]: a token bucket per source IP for audit events caused by
//!   unauthenticated callers (failed joins, anonymous proxy refusals). What it refuses is
//!   counted and written later as one `audit.dropped` event per address, never lost without
//!   a trace.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How many source addresses the audit limiter tracks before it folds new ones into one
/// shared bucket.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// Counts the unauthenticated connections of each source IP. See the module docs.
#[derive(Debug)]
pub(crate) struct ConnLimiter {
    max_per_ip: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
    /// Refusals not yet logged, and when the last log line was written.
    refusals: Mutex<(u64, Option<Instant>)>,
}

/// At most one log line about refused connections per this interval (a flood of refused
/// connections must not become a flood of log lines).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// One counted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl ConnLimiter {
    /// A limiter allowing `max_per_ip` connections per source IP.
    pub(crate) fn new(max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_per_ip,
            counts: Mutex::new(HashMap::new()),
            refusals: Mutex::new((0, None)),
        })
    }

    /// The cap.
    pub(crate) fn max_per_ip(&self) -> usize {
        self.max_per_ip
    }

    /// Counts one refused connection; returns how many refusals the log line due now should
    /// report (the first refusal, then at most one line per [`REFUSAL_LOG_INTERVAL`]).
    pub(crate) fn note_refusal(&self) -> Option<u64> {
        let mut r = self.refusals.lock().unwrap_or_else(|p| p.into_inner());
        r.0 += 1;
        let now = Instant::now();
        if r.1.is_some_and(|last| now < last + REFUSAL_LOG_INTERVAL) {
            return None;
        }
        r.1 = Some(now);
        Some(std::mem::take(&mut r.0))
    }

    /// A place for one more connection from `ip`, or `None` when `ip` is at the cap.
    pub(crate) fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Option<ConnPermit> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return None;
        }
        *n += 1;
        Some(ConnPermit {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut counts = self
            .limiter
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A connection that fails with [`io::ErrorKind::TimedOut`] once no byte was read or written
/// for `timeout`; it also carries the connection's [`ConnPermit`], if any, for its life.
///
/// The deadline is pushed forward lazily: activity only records an instant, and the timer is
/// re-armed when it fires early, so busy connections cost no timer operations per read.
pub(crate) struct IdleIo<S> {
    inner: S,
    timeout: Duration,
    last_activity: Instant,
    timer: Pin<Box<Sleep>>,
    remote: SocketAddr,
    _permit: Option<ConnPermit>,
}

impl<S> std::fmt::Debug for IdleIo<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleIo")
            .field("remote", &self.remote)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<S> IdleIo<S> {
    /// Wraps `inner` (the connection from `remote`).
    pub(crate) fn new(
        inner: S,
        timeout: Duration,
        remote: SocketAddr,
        permit: Option<ConnPermit>,
    ) -> Self {
        let now = Instant::now();
        Self {
            inner,
            timeout,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + timeout)),
            remote,
            _permit: permit,
        }
    }

    /// `Ready(error)` once the connection has been idle for the timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last_activity + self.timeout;
            if deadline <= Instant::now() {
                tracing::debug!(remote = %self.remote, idle_timeout_secs = self.timeout.as_secs_f64(), "closing an idle connection");
                return Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for longer than the idle timeout",
                ));
            }
            // Activity since the timer was armed: re-arm for the real deadline (and poll it
            // once more so it registers the waker).
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl<S> IdleIo<S> {
    /// What a write returns once the inner stream answered `polled`: bytes written count as
    /// activity; a write that cannot proceed waits on the idle timer, since a peer that
    /// reads nothing is as idle as one that sends nothing.
    fn after_write(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match polled {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last_activity = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.last_activity = Instant::now();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => this.poll_idle(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after_write(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.poll_idle(cx).map(Err),
            ready => ready,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for IdleIo<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// What [`AuditLimiter::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Write the event; `dropped_before` events of this address were dropped since the last
    /// summary (write a summary first).
    Yes {
        /// Events dropped and not yet summarized.
        dropped_before: u64,
    },
    /// Drop the event; `first` is true for the first drop since the last summary (log it).
    No {
        /// Whether this is the first drop since the last summary.
        first: bool,
    },
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: OffsetDateTime,
    dropped: u64,
}

/// A token bucket per source IP for audit events of unauthenticated callers. Time comes from
/// the caller (the server's clock), so tests move it with a fake clock.
#[derive(Debug)]
pub(crate) struct AuditLimiter {
    burst: f64,
    per_second: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// The shared bucket for addresses beyond [`MAX_TRACKED_ADDRESSES`].
const OVERFLOW: IpAddr = IpAddr::V6(Ipv6Addr::UNSPECIFIED);

impl AuditLimiter {
    /// `burst` events at once per address, refilled at `per_minute` events a minute.
    pub(crate) fn new(burst: u32, per_minute: u32) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute) / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, b: &mut Bucket, now: OffsetDateTime) {
        let elapsed = (now - b.last).as_seconds_f64().max(0.0);
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
        b.last = now;
    }

    /// Whether an event from `ip` may be written at `now`.
    pub(crate) fn admit(&self, ip: IpAddr, now: OffsetDateTime) -> Admit {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let mut key = ip;
        if !buckets.contains_key(&ip) && buckets.len() >= MAX_TRACKED_ADDRESSES {
            // Forget addresses whose bucket is full again and that owe no summary.
            let (burst, rate) = (self.burst, self.per_second);
            buckets.retain(|_, b| {
                let elapsed = (now - b.last).as_seconds_f64().max(0.0);
                b.dropped > 0 || b.tokens + elapsed * rate < burst
            });
            if buckets.len() >= MAX_TRACKED_ADDRESSES {
                key = OVERFLOW;
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            dropped: 0,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            let dropped_before = std::mem::take(&mut bucket.dropped);
            Admit::Yes { dropped_before }
        } else {
            bucket.dropped += 1;
            Admit::No {
                first: bucket.dropped == 1,
            }
        }
    }

    /// Takes the counts of dropped events not yet summarized, per address (the shared
    /// overflow bucket reports `::`).
    pub(crate) fn take_dropped(&self) -> Vec<(IpAddr, u64)> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets
            .iter_mut()
            .filter(|(_, b)| b.dropped > 0)
            .map(|(ip, b)| (*ip, std::mem::take(&mut b.dropped)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    #[test]
    fn conn_limiter_caps_per_ip_and_frees_on_drop() {
        let l = ConnLimiter::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.try_acquire(a).unwrap();
        let _p2 = l.try_acquire(a).unwrap();
        assert!(l.try_acquire(a).is_none());
        assert!(l.try_acquire(b).is_some());
        drop(p1);
        assert!(l.try_acquire(a).is_some());
    }

    #[test]
    fn audit_bucket_refills_with_the_clock_and_counts_drops() {
        let l = AuditLimiter::new(2, 60);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t = OffsetDateTime::now_utc();
        assert_eq!(l.admit(ip, t), Admit::Yes { dropped_before: 0 });
        assert_eq!(l.admit(ip, t), Admit::Yes { dropped_before: 0 });
        assert_eq!(l.admit(ip, t), Admit::No { first: true });
        assert_eq!(l.admit(ip, t), Admit::No { first: false });
        // One event a second: after a second, one more is admitted and reports the drops.
        let t1 = t + Duration::from_secs(1);
        assert_eq!(l.admit(ip, t1), Admit::Yes { dropped_before: 2 });
        assert_eq!(l.admit(ip, t1), Admit::No { first: true });
        assert_eq!(l.take_dropped(), vec![(ip, 1)]);
        assert!(l.take_dropped().is_empty());
    }
}
