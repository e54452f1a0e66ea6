//! Latency histograms the grid records on its slow paths (loads, requests
//! to peers, invalidation acknowledgements) and the actuator exposes.
//!
//! A record is a few relaxed atomic adds, no lock: prometheus-client's own
//! `Histogram` takes a mutex per observation, so the grid keeps its own
//! buckets and the actuator hands them to prometheus-client's encoder at
//! scrape time. The bucket bounds are fixed (50 µs to 10 s), wide enough for
//! a loader that queries a database and for a request over a WAN link.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in microseconds; one more bucket counts
/// what is above the last bound.
const BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A histogram of durations with fixed buckets, recorded without locks.
///
/// Every cell is a relaxed counter: a reader adds them up without needing
/// them to agree at one instant, so a snapshot taken during a record may
/// count the observation in its bucket and not yet in the sum (or the
/// reverse). The count is the sum of the buckets, so the two always agree.
pub(crate) struct Histogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub(crate) fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US.partition_point(|&bound| bound < us);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// What was recorded so far.
    pub(crate) fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_nanos: self.sum_nanos.load(Ordering::Relaxed),
        }
    }
}

/// A reading of a latency histogram: how many observations fell at or below
/// each bound, their count and their sum.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hydracache::CacheOptions;
/// let grid = hydracache::Grid::local().build();
/// grid.get_or_load("k", CacheOptions::new(), || async { Ok::<_, std::io::Error>(1u8) })
///     .await
///     .unwrap();
/// let loads = grid.diagnostics().load_latency;
/// assert_eq!(loads.count(), 1);
/// // Cumulative: the last bucket (10 s) holds every load that took less.
/// let (_, at_most_10s) = loads.buckets().last().unwrap();
/// assert!(at_most_10s <= loads.count());
/// # });
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    counts: [u64; BOUNDS_US.len() + 1],
    sum_nanos: u64,
}

impl LatencySnapshot {
    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The sum of every observation.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_nanos)
    }

    /// `(upper bound, observations at or below it)`, by increasing bound,
    /// cumulative as Prometheus buckets are; what lies above the last bound
    /// is counted only in [`count`](Self::count).
    pub fn buckets(&self) -> impl Iterator<Item = (Duration, u64)> + '_ {
        BOUNDS_US
            .iter()
            .zip(self.counts.iter())
            .scan(0u64, |total, (&bound, &n)| {
                *total += n;
                Some((Duration::from_micros(bound), *total))
            })
    }
}

impl LatencySnapshot {
    /// `(upper bound in seconds, observations in that bucket alone)`, the
    /// last bound infinite: what prometheus-client's encoder takes.
    #[cfg(feature = "actuator")]
    pub(crate) fn per_bucket(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        BOUNDS_US
            .iter()
            .map(|&us| us as f64 / 1e6)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let h = Histogram::default();
        h.record(Duration::from_micros(50)); // on the first bound
        h.record(Duration::from_micros(51)); // just above it
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60)); // above every bound
        let s = h.snapshot();
        assert_eq!(s.count(), 4);
        let buckets: Vec<_> = s.buckets().collect();
        assert_eq!(buckets[0], (Duration::from_micros(50), 1));
        assert_eq!(buckets[1], (Duration::from_micros(100), 2));
        assert_eq!(buckets[5], (Duration::from_micros(2_500), 2));
        assert_eq!(buckets[6], (Duration::from_millis(5), 3));
        assert_eq!(buckets.last(), Some(&(Duration::from_secs(10), 3)));
        assert_eq!(
            s.sum(),
            Duration::from_micros(50 + 51 + 3_000) + Duration::from_secs(60)
        );
    }

    #[test]
    fn an_empty_histogram_reads_zero_everywhere() {
        let s = Histogram::default().snapshot();
        assert_eq!(s.count(), 0);
        assert_eq!(s.sum(), Duration::ZERO);
        assert!(s.buckets().all(|(_, n)| n == 0));
        assert_eq!(s, LatencySnapshot::default());
    }
}
