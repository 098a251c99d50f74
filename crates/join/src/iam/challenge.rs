//! Challenges: one per attempt, short-lived, spent on first use.

use std::time::Duration;

use time::OffsetDateTime;

use crate::iam::IamError;

/// How long a challenge may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);

/// A challenge: 32 random bytes, base64 (standard alphabet) without padding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Challenge(String);

impl Challenge {
    /// The text that goes into the `X-Teleport-Challenge` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The challenges issued recently, so that each is answered once and in time, and a challenge
/// of another attempt is told apart from one that was never issued.
#[derive(Debug, Default)]
pub struct ChallengeLedger {}

impl ChallengeLedger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh challenge issued at `now`.
    pub fn issue(&self, _now: OffsetDateTime) -> Result<Challenge, IamError> {
        Err(IamError::Unimplemented("ChallengeLedger::issue"))
    }

    /// Spends `expected` (the challenge of this attempt) and checks the one the request
    /// carries: missing, expired, already spent, a challenge of another attempt, or wrong.
    pub fn redeem(
        &self,
        _expected: &Challenge,
        _presented: Option<&str>,
        _now: OffsetDateTime,
    ) -> Result<(), IamError> {
        Err(IamError::Unimplemented("ChallengeLedger::redeem"))
    }
}
