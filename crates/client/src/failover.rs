//! The failover rule every dial and call follows: try the auth servers of an [`AuthAddrs`] in
//! turn, starting at the one that worked last, with jittered backoff and a bounded number of
//! attempts; move on only after a failure that allows it; and, when all fail, name every
//! address with what it said.
//!
//! A failure is one of three kinds ([`Failed`]):
//! - *not sent*: the server cannot have acted, because the connection could not be made (TCP
//!   refused or timed out, TLS handshake cut) or because the server itself answered
//!   `UNAVAILABLE`. Every call may be sent again, to any server.
//! - *ambiguous*: the connection broke or timed out after the request may have left. Only
//!   calls marked [`Retry::Always`] (reads, and writes the server answers idempotently) are
//!   sent again.
//! - *final*: anything else (refusals, not found, untrusted server, bad answer): returned at
//!   once, never retried here.
//!
//! A list of one address gets exactly one attempt, as before lists existed: a single
//! server's errors keep their wording, and the caller's own retry loop (tbot's backoff)
//! stays in charge.

use std::time::Duration;

use rand::Rng as _;

use crate::addrs::AuthAddrs;
use crate::error::{ClientError, Result};

/// Whether a call may be sent again after an ambiguous failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads and idempotent writes: after any transport failure.
    Always,
    /// Writes that must not happen twice: only when the server cannot have acted.
    NotSentOnly,
}

/// Why one attempt failed, and so whether another may be made.
#[derive(Debug)]
pub(crate) enum Failed {
    /// The server cannot have acted.
    NotSent(ClientError),
    /// The request may have reached the server.
    Ambiguous(ClientError),
    /// Not a failure of the server or the network: return it.
    Final(ClientError),
}

impl Failed {
    /// A failed dial: unreachable means nothing was sent; anything else (an untrusted
    /// server, a bad address) is final.
    pub(crate) fn dial(e: ClientError) -> Self {
        match e {
            e @ ClientError::Unavailable { .. } => Self::NotSent(e),
            e => Self::Final(e),
        }
    }

    /// A failed call's status from the server at `addr`.
    pub(crate) fn call(status: tonic::Status, addr: &str) -> Self {
        use tonic::Code;
        let code = status.code();
        let Some(source) = std::error::Error::source(&status) else {
            // The server's own answer.
            let e = ClientError::from_status(status, addr);
            return if code == Code::Unavailable {
                Self::NotSent(e)
            } else {
                Self::Final(e)
            };
        };
        // The server refused this side's certificate in the handshake (TLS 1.3 tells the
        // client only at its first read): no retry can change that.
        if let Some(alert) = crate::tls::rejected_certificate_alert(source) {
            return Self::Final(ClientError::CertificateRejected {
                addr: addr.to_string(),
                alert,
            });
        }
        // A failure of this side's transport: the dial (our connector's error inside) or the
        // connection afterwards.
        let dial_failed = chain(source).any(|e| {
            e.downcast_ref::<crate::tls::ConnectFailure>().is_some()
                || e.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        let transport = matches!(
            code,
            Code::Unavailable
                | Code::Unknown
                | Code::Cancelled
                | Code::Internal
                | Code::DeadlineExceeded
        );
        if !transport {
            return Self::Final(ClientError::from_status(status, addr));
        }
        let e = ClientError::Unavailable {
            addr: addr.to_string(),
            message: if dial_failed {
                crate::tls::error_chain(source)
            } else {
                format!(
                    "the connection failed during the call: {}",
                    crate::tls::error_chain(source)
                )
            },
        };
        if dial_failed {
            Self::NotSent(e)
        } else {
            Self::Ambiguous(e)
        }
    }
}

fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |e| e.source())
}

/// The first retry's delay cap; each further retry doubles it.
const RETRY_BASE: Duration = Duration::from_millis(50);
/// The longest delay between two attempts.
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How many times each address of a list is tried per dial or call.
const PASSES: usize = 2;

/// The wait before attempt `k` (`k >= 1`): random in `[cap / 2, cap]`, the cap doubling from
/// [`RETRY_BASE`] up to [`RETRY_MAX`].
fn delay(k: usize) -> Duration {
    let shift = u32::try_from(k.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(16);
    let cap = RETRY_BASE.saturating_mul(1 << shift).min(RETRY_MAX);
    let half = u64::try_from(cap.as_millis() / 2).unwrap_or(u64::MAX);
    Duration::from_millis(half + rand::thread_rng().gen_range(0..=half))
}

/// Runs `attempt(index, k)` for attempt `k` on address `index` of `addrs`, starting at
/// `start` and moving to the next address after each failure that `retry` allows, until one
/// succeeds or the attempts (each address [`PASSES`] times; one in all for a single address)
/// run out. The address that succeeded becomes the preferred one.
pub(crate) async fn run<T, F, Fut>(
    addrs: &AuthAddrs,
    start: usize,
    retry: Retry,
    what: &str,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut(usize, usize) -> Fut,
    Fut: Future<Output = std::result::Result<T, Failed>>,
{
    addrs.check()?;
    let n = addrs.len();
    let budget = if n <= 1 { 1 } else { n * PASSES };
    let mut failures: Vec<(String, String)> = Vec::new();
    for k in 0..budget {
        let index = (start + k) % n.max(1);
        let addr = addrs.as_slice().get(index).map_or("", String::as_str);
        if k > 0 {
            tokio::time::sleep(delay(k)).await;
            addrs.count_retry();
            if n > 1 {
                addrs.count_failover();
            }
            tracing::info!(addr, attempt = k + 1, what, "trying the next auth server");
        }
        let e = match attempt(index, k).await {
            Ok(v) => {
                addrs.set_preferred(index);
                return Ok(v);
            }
            Err(Failed::Final(e)) => return Err(e),
            Err(Failed::Ambiguous(e)) if retry == Retry::NotSentOnly => {
                tracing::warn!(addr, error = %e, what, "the call may have reached the auth server, so it is not sent again");
                return Err(e);
            }
            Err(Failed::NotSent(e) | Failed::Ambiguous(e)) => e,
        };
        if budget == 1 {
            return Err(e);
        }
        tracing::warn!(addr, error = %e, what, "auth server failed");
        let message = match e {
            ClientError::Unavailable { message, .. } => message,
            other => other.to_string(),
        };
        match failures.iter_mut().find(|(a, _)| a == addr) {
            Some(slot) => slot.1 = message,
            None => failures.push((addr.to_string(), message)),
        }
    }
    failures.sort_by_key(|(a, _)| addrs.as_slice().iter().position(|x| x == a));
    Err(ClientError::AllUnavailable {
        failures: failures
            .into_iter()
            .map(|(addr, message)| format!("{addr}: {message}"))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_jittered_and_capped() {
        for _ in 0..50 {
            let d = delay(1);
            assert!(d >= RETRY_BASE / 2 && d <= RETRY_BASE, "{d:?}");
            let d = delay(3);
            assert!(d >= RETRY_BASE * 2 && d <= RETRY_BASE * 4, "{d:?}");
            let d = delay(40);
            assert!(d >= RETRY_MAX / 2 && d <= RETRY_MAX, "{d:?}");
        }
    }

    #[test]
    fn server_unavailable_is_not_sent_and_other_answers_are_final() {
        let f = Failed::call(tonic::Status::unavailable("store down"), "a:1");
        assert!(matches!(f, Failed::NotSent(_)), "{f:?}");
        let f = Failed::call(tonic::Status::permission_denied("no"), "a:1");
        assert!(matches!(f, Failed::Final(_)), "{f:?}");
        let f = Failed::call(tonic::Status::unknown("odd"), "a:1");
        assert!(matches!(f, Failed::Final(_)), "{f:?}");
    }

    #[tokio::test]
    async fn one_address_gets_one_attempt_and_its_own_error() {
        let addrs = AuthAddrs::parse("a:1").unwrap_or_else(|e| panic!("{e}"));
        let mut calls = 0;
        let r: Result<()> = run(&addrs, 0, Retry::Always, "test", |_, _| {
            calls += 1;
            std::future::ready(Err(Failed::NotSent(ClientError::Unavailable {
                addr: "a:1".into(),
                message: "refused".into(),
            })))
        })
        .await;
        assert_eq!(calls, 1);
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            e,
            "cannot reach the auth server at a:1: refused; is it running?"
        );
    }

    #[tokio::test]
    async fn ambiguous_failures_end_calls_that_must_not_repeat() {
        let addrs = AuthAddrs::parse("a:1,b:1").unwrap_or_else(|e| panic!("{e}"));
        let mut calls = Vec::new();
        let r: Result<()> = run(&addrs, 0, Retry::NotSentOnly, "test", |i, _| {
            calls.push(i);
            std::future::ready(Err(Failed::Ambiguous(ClientError::Unavailable {
                addr: "a:1".into(),
                message: "reset".into(),
            })))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, [0]);
        assert_eq!(addrs.retries(), 0);
    }

    #[tokio::test]
    async fn every_address_is_tried_and_named() {
        let addrs = AuthAddrs::parse("a:1,b:1").unwrap_or_else(|e| panic!("{e}"));
        let mut calls = Vec::new();
        let r: Result<()> = run(&addrs, 1, Retry::Always, "test", |i, _| {
            calls.push(i);
            let addr = ["a:1", "b:1"][i];
            std::future::ready(Err(Failed::Ambiguous(ClientError::Unavailable {
                addr: addr.into(),
                message: format!("{addr} said no"),
            })))
        })
        .await;
        assert_eq!(calls, [1, 0, 1, 0]);
        let e = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.contains("a:1: a:1 said no") && e.contains("b:1: b:1 said no"),
            "{e}"
        );
        assert_eq!(addrs.failovers(), 3);
    }
}
