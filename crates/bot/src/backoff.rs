//! Capped exponential backoff with full jitter, for retrying failed renewals.

use std::time::Duration;

/// Delays between retries: the `n`th retry waits a random time in `[cap_n / 2, cap_n]`
/// where `cap_n = min(max, base * 2^n)` ("equal jitter": never zero, never above the cap,
/// and a fleet of bots spreads out instead of retrying in lockstep).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, never waits longer than `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The cap of the next delay (before jitter).
    pub fn next_cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The next delay, with jitter drawn from `rng`.
    pub fn next_with(&mut self, rng: &mut impl rand::Rng) -> Duration {
        let cap = self.next_cap();
        self.attempt = self.attempt.saturating_add(1);
        let half = cap / 2;
        let span = cap.saturating_sub(half).as_millis();
        let span = u64::try_from(span).unwrap_or(u64::MAX);
        let extra = if span == 0 {
            0
        } else {
            rng.gen_range(0..=span)
        };
        half + Duration::from_millis(extra)
    }

    /// The next delay, with jitter from the thread's RNG.
    pub fn next_delay(&mut self) -> Duration {
        self.next_with(&mut rand::thread_rng())
    }

    /// How many delays were handed out since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grows_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let caps: Vec<u64> = (0..10)
            .map(|_| {
                let c = b.next_cap().as_secs();
                b.next_delay();
                c
            })
            .collect();
        assert_eq!(caps, [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        b.reset();
        assert_eq!(b.next_cap(), Duration::from_secs(1));
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn jitter_stays_within_half_and_cap() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut b = Backoff::new(Duration::from_secs(8), Duration::from_secs(8));
            let d = b.next_with(&mut rng);
            assert!(
                d >= Duration::from_secs(4) && d <= Duration::from_secs(8),
                "{d:?}"
            );
            seen.insert(d.as_millis());
        }
        assert!(seen.len() > 50, "jitter spreads the delays");
    }

    #[test]
    fn never_overflows() {
        let mut b = Backoff::new(
            Duration::from_secs(u64::MAX / 4),
            Duration::from_secs(u64::MAX / 2),
        );
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(u64::MAX / 2));
        }
    }
}
