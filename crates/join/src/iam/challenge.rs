//! Challenges: one per attempt, short-lived, spent on first use.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use rand::RngCore;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::iam::IamError;

/// How long a challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);

/// How many challenges a ledger holds before it refuses to issue more (see
/// [`ChallengeLedger::with_capacity`]).
pub const DEFAULT_LEDGER_CAPACITY: usize = 100_000;

/// A challenge: 32 random bytes, base64 (standard alphabet) without padding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Challenge(String);

impl Challenge {
    /// The text that goes into the `X-Teleport-Challenge` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// 32 fresh random bytes from the operating system.
    fn random() -> Self {
        let mut b = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut b);
        Self(base64::engine::general_purpose::STANDARD_NO_PAD.encode(b))
    }
}

impl std::fmt::Display for Challenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    issued: OffsetDateTime,
    spent: bool,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Challenges in the order issued, for pruning from the front.
    order: VecDeque<(OffsetDateTime, String)>,
}

/// The challenges issued recently, so that each is answered once and in time, and a challenge
/// of another attempt is told apart from one that was never issued.
///
/// Entries live for twice [`CHALLENGE_TTL`] (so a late answer is still called expired or
/// reused rather than unknown) and are pruned as new challenges are issued; at most
/// `capacity` are held, after which [`issue`](Self::issue) refuses with a retryable error.
#[derive(Debug)]
pub struct ChallengeLedger {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl Default for ChallengeLedger {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_LEDGER_CAPACITY)
    }
}

impl ChallengeLedger {
    /// An empty ledger holding at most [`DEFAULT_LEDGER_CAPACITY`] challenges.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty ledger holding at most `capacity` challenges.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    /// How many challenges the ledger holds (spent ones included, until pruned).
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the ledger holds no challenge.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the maps consistent (every mutation is a
        // single insert or remove), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh challenge issued at `now`.
    pub fn issue(&self, now: OffsetDateTime) -> Result<Challenge, IamError> {
        let mut inner = self.lock();
        let horizon = now - 2 * CHALLENGE_TTL;
        while let Some((issued, _)) = inner.order.front() {
            if *issued >= horizon {
                break;
            }
            if let Some((_, key)) = inner.order.pop_front() {
                inner.entries.remove(&key);
            }
        }
        if inner.entries.len() >= self.capacity {
            tracing::warn!(
                capacity = self.capacity,
                "IAM challenge ledger full; refusing new join attempts until old ones expire"
            );
            return Err(IamError::ChallengeLedgerFull {
                capacity: self.capacity,
            });
        }
        let challenge = Challenge::random();
        inner.entries.insert(
            challenge.0.clone(),
            Entry {
                issued: now,
                spent: false,
            },
        );
        inner.order.push_back((now, challenge.0.clone()));
        Ok(challenge)
    }

    /// Spends `expected` (the challenge of this attempt) and checks the one the request
    /// carries: missing, expired, already spent, a challenge of another attempt, or wrong.
    ///
    /// The expected challenge is spent whatever the outcome: one attempt per challenge.
    pub fn redeem(
        &self,
        expected: &Challenge,
        presented: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(), IamError> {
        let mut inner = self.lock();
        let Some(entry) = inner.entries.get_mut(&expected.0) else {
            return Err(IamError::ChallengeUnknown);
        };
        let before = *entry;
        entry.spent = true;
        let Some(presented) = presented else {
            return Err(IamError::ChallengeMissing);
        };
        if before.spent {
            return Err(IamError::ChallengeReused);
        }
        let age = now - before.issued;
        if age > CHALLENGE_TTL {
            return Err(IamError::ChallengeExpired {
                age_secs: age.whole_seconds(),
                ttl_secs: CHALLENGE_TTL.as_secs(),
            });
        }
        if !bool::from(presented.as_bytes().ct_eq(expected.0.as_bytes())) {
            return Err(if inner.entries.contains_key(presented) {
                IamError::ChallengeOfAnotherAttempt
            } else {
                IamError::ChallengeWrong
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    fn t0() -> OffsetDateTime {
        time::macros::datetime!(2026-01-01 00:00 UTC)
    }

    #[test]
    fn challenge_shape() {
        let l = ChallengeLedger::new();
        let c = l.issue(t0()).unwrap();
        assert_eq!(c.as_str().len(), 43);
        assert!(!c.as_str().contains('='));
        let raw = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(c.as_str())
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert_ne!(c, l.issue(t0()).unwrap());
    }

    #[test]
    fn good_then_reused() {
        let l = ChallengeLedger::new();
        let c = l.issue(t0()).unwrap();
        l.redeem(&c, Some(c.as_str()), t0() + Duration::from_secs(59))
            .unwrap();
        let e = l.redeem(&c, Some(c.as_str()), t0()).unwrap_err();
        assert_eq!(e, IamError::ChallengeReused);
        assert!(e.to_string().contains("reused"), "{e}");
    }

    #[test]
    fn missing_spends_the_challenge() {
        let l = ChallengeLedger::new();
        let c = l.issue(t0()).unwrap();
        let e = l.redeem(&c, None, t0()).unwrap_err();
        assert_eq!(e, IamError::ChallengeMissing);
        assert!(
            e.to_string().contains("no X-Teleport-Challenge header"),
            "{e}"
        );
        assert_eq!(
            l.redeem(&c, Some(c.as_str()), t0()).unwrap_err(),
            IamError::ChallengeReused
        );
    }

    #[test]
    fn expired() {
        let l = ChallengeLedger::new();
        let c = l.issue(t0()).unwrap();
        let e = l
            .redeem(&c, Some(c.as_str()), t0() + Duration::from_secs(61))
            .unwrap_err();
        assert_eq!(
            e,
            IamError::ChallengeExpired {
                age_secs: 61,
                ttl_secs: 60
            }
        );
        assert!(e.to_string().contains("expired"), "{e}");
        assert!(e.to_string().contains("retry the join"), "{e}");
    }

    #[test]
    fn wrong_and_another_attempts() {
        let l = ChallengeLedger::new();
        let mine = l.issue(t0()).unwrap();
        let theirs = l.issue(t0()).unwrap();
        let e = l.redeem(&mine, Some(theirs.as_str()), t0()).unwrap_err();
        assert_eq!(e, IamError::ChallengeOfAnotherAttempt);
        assert!(e.to_string().contains("another join attempt"), "{e}");
        // Mine is spent now; theirs still works.
        l.redeem(&theirs, Some(theirs.as_str()), t0()).unwrap();

        let c = l.issue(t0()).unwrap();
        let e = l.redeem(&c, Some("bogus"), t0()).unwrap_err();
        assert_eq!(e, IamError::ChallengeWrong);
        assert!(e.to_string().contains("wrong challenge"), "{e}");
    }

    #[test]
    fn unknown_challenge() {
        let l = ChallengeLedger::new();
        let other = ChallengeLedger::new().issue(t0()).unwrap();
        assert_eq!(
            l.redeem(&other, Some(other.as_str()), t0()).unwrap_err(),
            IamError::ChallengeUnknown
        );
    }

    #[test]
    fn pruned_and_bounded() {
        let l = ChallengeLedger::with_capacity(3);
        let old = l.issue(t0()).unwrap();
        l.issue(t0()).unwrap();
        l.issue(t0() + Duration::from_secs(60)).unwrap();
        let e = l.issue(t0() + Duration::from_secs(60)).unwrap_err();
        assert_eq!(e, IamError::ChallengeLedgerFull { capacity: 3 });
        assert!(e.is_retryable());
        assert!(e.to_string().contains("retry"), "{e}");
        // Two TTLs later the first two are pruned.
        let later = t0() + Duration::from_secs(121);
        l.issue(later).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(
            l.redeem(&old, Some(old.as_str()), later).unwrap_err(),
            IamError::ChallengeUnknown
        );
    }

    #[test]
    fn ledger_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<ChallengeLedger>();
    }
}
