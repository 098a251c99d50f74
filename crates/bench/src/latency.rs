//! The latency summary of a workload: nearest-rank percentiles of every answered request.

use std::time::Duration;

/// p50, p90, p99 and the maximum of a set of latencies, in milliseconds.
///
/// Percentiles are nearest-rank: the `p`th percentile of `n` sorted values is the value at
/// rank `ceil(p/100 * n)` (from 1), so it is always one of the measured values, and p100 is
/// the maximum. An empty set summarizes to zeros.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct LatencySummary {
    /// How many latencies were summarized.
    pub count: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
}

impl LatencySummary {
    /// Summarizes `latencies` (in any order).
    pub fn of(latencies: &[Duration]) -> Self {
        let mut sorted = latencies.to_vec();
        sorted.sort_unstable();
        Self {
            count: sorted.len() as u64,
            p50_ms: ms(percentile(&sorted, 50)),
            p90_ms: ms(percentile(&sorted, 90)),
            p99_ms: ms(percentile(&sorted, 99)),
            max_ms: ms(sorted.last().copied().unwrap_or_default()),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The nearest-rank `p`th percentile (1 ≤ p ≤ 100) of `sorted` (ascending); zero when empty.
pub(crate) fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let n = sorted.len();
    // Rank from 1, `ceil(p * n / 100)` in integers (no float rounding at exact ranks).
    let rank = (p.saturating_mul(n)).div_ceil(100).clamp(1, n.max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn empty_summarizes_to_zeros() {
        assert_eq!(LatencySummary::of(&[]), LatencySummary::default());
    }

    #[test]
    fn one_value_is_every_percentile() {
        let s = LatencySummary::of(&millis(&[7]));
        assert_eq!(s.count, 1);
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (7.0, 7.0, 7.0, 7.0)
        );
    }

    #[test]
    fn nearest_rank_on_one_to_a_hundred_in_any_order() {
        // 100, 99, ..., 1 ms: the pth percentile is p ms exactly.
        let v: Vec<u64> = (1..=100).rev().collect();
        let s = LatencySummary::of(&millis(&v));
        assert_eq!(s.count, 100);
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
    }

    #[test]
    fn small_sets_round_the_rank_up() {
        // Four values: p50 is rank 2, p90 and p99 rank 4 (the maximum).
        let s = LatencySummary::of(&millis(&[40, 10, 30, 20]));
        assert_eq!(
            (s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms),
            (20.0, 40.0, 40.0, 40.0)
        );
        // Ten values: p90 is rank 9, p99 rank 10.
        let v: Vec<u64> = (1..=10).collect();
        let s = LatencySummary::of(&millis(&v));
        assert_eq!((s.p50_ms, s.p90_ms, s.p99_ms), (5.0, 9.0, 10.0));
    }

    #[test]
    fn one_slow_request_in_a_thousand_shows_at_the_maximum_only() {
        let mut v = vec![2u64; 999];
        v.push(500);
        let s = LatencySummary::of(&millis(&v));
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (2.0, 2.0, 500.0));
        // Eleven slow ones reach p99 (rank 990 of 1000 is the 990th value).
        let mut v = vec![2u64; 989];
        v.extend([500u64; 11]);
        assert_eq!(LatencySummary::of(&millis(&v)).p99_ms, 500.0);
    }

    #[test]
    fn sub_millisecond_latencies_keep_their_fraction() {
        let s = LatencySummary::of(&[Duration::from_micros(250), Duration::from_micros(1500)]);
        assert_eq!((s.p50_ms, s.max_ms), (0.25, 1.5));
    }
}
