//! The bot's health in numbers: the renewal counters, the [`Status`] they add up to with the
//! expiry of the certificates, and the readiness rule `/readyz` applies.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counts of renewal attempts, for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    renewals: AtomicU64,
    failures: AtomicU64,
    last_ok: AtomicBool,
}

impl Counters {
    /// Counts one renewal attempt.
    pub(crate) fn record(&self, ok: bool) {
        if ok {
            self.renewals.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        self.last_ok.store(ok, Ordering::Relaxed);
    }
}

/// What the failover of the bot's auth server list contributes to its [`Status`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AuthHealth {
    /// Moves to another auth server.
    pub(crate) failovers: u64,
    /// Attempts made again.
    pub(crate) retries: u64,
}

/// What the bot's own identity contributes to its [`Status`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct IdentityHealth {
    /// Unix seconds the bot's identity expires, once it holds one obtained by this process.
    pub(crate) expires: Option<i64>,
    /// Whether it holds a renewed identity it could not save.
    pub(crate) unsaved: bool,
}

/// A numbers-only view of the bot's health, for diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Successful renewals (identity and every output) since start.
    pub renewals: u64,
    /// Failed renewal attempts since start.
    pub failures: u64,
    /// Whether the last attempt succeeded.
    pub last_ok: bool,
    /// Seconds until the earliest output certificate expires (negative: expired; `None`:
    /// no certificate known yet: none written by this process, and no destination held a
    /// set at start).
    pub seconds_until_expiry: Option<i64>,
    /// Seconds until the bot's own identity expires.
    pub identity_seconds_until_expiry: Option<i64>,
    /// Whether the bot holds a renewed identity of its own that it could not save (a full or
    /// read-only data directory): outputs keep being renewed from it, the bot identity is
    /// not renewed again until it is saved. See [`Bot::identity_save_error`](crate::Bot::identity_save_error).
    pub identity_unsaved: bool,
    /// How many times a connection or call of the bot moved on to another auth server of
    /// its list because one could not be reached (or answered `UNAVAILABLE`). A renewal that
    /// succeeded after a failover counts here, not in `failures`.
    pub auth_failovers: u64,
    /// How many times a dial or call to the auth servers was made again after a failure
    /// that allowed it (see `machine_id_client::Client`), whatever the server.
    pub auth_retries: u64,
    /// Renewals the CA rotation follower asked for (each renews the identity and every
    /// output).
    pub ca_rotation_renewals: u64,
    /// Whether the watch on the cluster's CAs is open; `None` while it does not run
    /// (oneshot, or before the first renewal). A watch that is reconnecting does not make
    /// the bot unready: renewals on the schedule go on.
    pub ca_watch_up: Option<bool>,
    /// Whether the outputs hold valid certificates, the bot's identity is saved, and either
    /// the last renewal succeeded or the certificates are far (more than half their TTL)
    /// from expiry.
    pub ready: bool,
}

/// Why the bot is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// A renewed identity could not be saved (the save error says more).
    Unsaved,
    /// No output certificate is known.
    NoCertificates,
    /// The earliest output certificate has expired.
    Expired,
    /// The certificates are within half their TTL of expiry and the last renewal did not
    /// succeed (`attempted`: whether any renewal was tried yet).
    NearExpiry {
        /// Whether a renewal was attempted.
        attempted: bool,
    },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unsaved => "the renewed bot identity could not be saved",
            Self::NoCertificates => {
                "no valid certificates: none written yet, and no destination held a set at start"
            }
            Self::Expired => "the output certificates have expired",
            Self::NearExpiry { attempted: true } => {
                "the last renewal failed and the certificates are near expiry (less than half their TTL left)"
            }
            Self::NearExpiry { attempted: false } => {
                "the certificates found at start are near expiry (less than half their TTL left) and no renewal has succeeded yet"
            }
        })
    }
}

impl Status {
    /// The status from the counters, the outputs' and the identity's expiry and the auth
    /// servers' failover counts, at `now` (Unix seconds), for certificates of `ttl_secs`.
    pub(crate) fn new(
        counters: &Counters,
        outputs_expire: Option<i64>,
        identity: IdentityHealth,
        auth: AuthHealth,
        now: i64,
        ttl_secs: i64,
    ) -> Self {
        let renewals = counters.renewals.load(Ordering::Relaxed);
        let failures = counters.failures.load(Ordering::Relaxed);
        let last_ok = counters.last_ok.load(Ordering::Relaxed);
        let seconds_until_expiry = outputs_expire.map(|t| t - now);
        let verdict = judge(
            identity.unsaved,
            seconds_until_expiry,
            last_ok,
            renewals + failures > 0,
            ttl_secs,
        );
        Self {
            renewals,
            failures,
            last_ok,
            seconds_until_expiry,
            identity_seconds_until_expiry: identity.expires.map(|t| t - now),
            identity_unsaved: identity.unsaved,
            auth_failovers: auth.failovers,
            auth_retries: auth.retries,
            ca_rotation_renewals: 0,
            ca_watch_up: None,
            ready: verdict.is_ok(),
        }
    }

    /// The status with the CA rotation follower's numbers.
    pub(crate) fn with_ca_watch(mut self, renewals: u64, up: Option<bool>) -> Self {
        self.ca_rotation_renewals = renewals;
        self.ca_watch_up = up;
        self
    }
}

/// The readiness rule: the identity is saved, and the outputs' certificates are unexpired
/// and either the last renewal succeeded or more than half of `ttl_secs` is left.
pub(crate) fn judge(
    unsaved: bool,
    seconds_until_expiry: Option<i64>,
    last_ok: bool,
    attempted: bool,
    ttl_secs: i64,
) -> Result<(), NotReady> {
    if unsaved {
        return Err(NotReady::Unsaved);
    }
    match seconds_until_expiry {
        None => Err(NotReady::NoCertificates),
        Some(s) if s <= 0 => Err(NotReady::Expired),
        Some(s) if !last_ok && s <= ttl_secs / 2 => Err(NotReady::NearExpiry { attempted }),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readiness_rule() {
        let ttl = 3600;
        // Renewed: ready until expiry.
        assert_eq!(judge(false, Some(10), true, true, ttl), Ok(()));
        assert_eq!(
            judge(false, Some(0), true, true, ttl),
            Err(NotReady::Expired)
        );
        // Last renewal failed: ready only while more than half the TTL is left.
        assert_eq!(judge(false, Some(1801), false, true, ttl), Ok(()));
        assert_eq!(
            judge(false, Some(1800), false, true, ttl),
            Err(NotReady::NearExpiry { attempted: true })
        );
        assert_eq!(
            judge(false, Some(-5), false, true, ttl),
            Err(NotReady::Expired)
        );
        // At start, certificates found on disk count the same way.
        assert_eq!(judge(false, Some(3000), false, false, ttl), Ok(()));
        assert_eq!(
            judge(false, Some(60), false, false, ttl),
            Err(NotReady::NearExpiry { attempted: false })
        );
        assert_eq!(
            judge(false, None, false, false, ttl),
            Err(NotReady::NoCertificates)
        );
        // An unsaved identity is never ready.
        assert_eq!(
            judge(true, Some(3000), true, true, ttl),
            Err(NotReady::Unsaved)
        );
    }
}
