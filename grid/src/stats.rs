//! Grid statistics.

use std::sync::atomic::{AtomicU64, Ordering};

use hydracache_storage::StoreStats;

/// Counters the grid keeps on top of the store's (all on miss, load and
/// invalidation paths; hits are counted by the store's striped counters).
#[derive(Default)]
pub(crate) struct GridCounters {
    pub(crate) loads: AtomicU64,
    pub(crate) load_errors: AtomicU64,
    pub(crate) joins: AtomicU64,
    pub(crate) stale_loads: AtomicU64,
    pub(crate) invalidations: AtomicU64,
}

impl GridCounters {
    pub(crate) fn bump(cell: &AtomicU64) {
        cell.fetch_add(1, Ordering::Relaxed);
    }
}

/// A snapshot of the grid's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GridStats {
    /// Reads that found a value.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Loader runs (one per single-flight group).
    pub loads: u64,
    /// Loader runs that failed or panicked.
    pub load_errors: u64,
    /// Callers that joined a load already in flight instead of starting one.
    pub single_flight_joins: u64,
    /// Loads whose result was not cached because an invalidation raced them.
    pub stale_loads_discarded: u64,
    /// Invalidation calls (key, tag, remove, flush).
    pub invalidations: u64,
    /// Entries evicted for capacity.
    pub evicted_capacity: u64,
    /// Expired entries reclaimed.
    pub evicted_expired: u64,
    /// Entries reclaimed after invalidation.
    pub evicted_invalidated: u64,
    /// Events delivered to the subscriber ring.
    pub events_published: u64,
    /// Events dropped for subscribers that fell behind.
    pub subscriber_lag: u64,
}

impl GridStats {
    /// hits / (hits + misses); 0 with no reads.
    ///
    /// ```
    /// let s = hydracache::GridStats { hits: 9, misses: 1, ..Default::default() };
    /// assert_eq!(s.hit_ratio(), 0.9);
    /// ```
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }

    /// load_errors / loads; 0 with no loads.
    pub fn load_error_ratio(&self) -> f64 {
        if self.loads == 0 {
            0.0
        } else {
            self.load_errors as f64 / self.loads as f64
        }
    }

    /// Evictions of every reason.
    pub fn evictions(&self) -> u64 {
        self.evicted_capacity + self.evicted_expired + self.evicted_invalidated
    }

    pub(crate) fn from_parts(
        store: &StoreStats,
        c: &GridCounters,
        published: u64,
        lagged: u64,
    ) -> Self {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        GridStats {
            hits: store.hits,
            misses: store.misses,
            loads: get(&c.loads),
            load_errors: get(&c.load_errors),
            single_flight_joins: get(&c.joins),
            stale_loads_discarded: get(&c.stale_loads),
            invalidations: get(&c.invalidations),
            evicted_capacity: store.evicted_capacity,
            evicted_expired: store.evicted_expired,
            evicted_invalidated: store.evicted_invalidated,
            events_published: published,
            subscriber_lag: lagged,
        }
    }
}

/// Stats plus the store's gauges and the grid's moving parts.
#[derive(Clone, Debug, PartialEq)]
pub struct GridDiagnostics {
    /// The counters.
    pub stats: GridStats,
    /// Resident entries.
    pub entries: u64,
    /// Bytes charged against the capacity.
    pub bytes: u64,
    /// The capacity in bytes.
    pub capacity_bytes: u64,
    /// Distinct tags in use.
    pub tags: u64,
    /// Loads in flight.
    pub loads_in_flight: usize,
    /// Event subscribers.
    pub subscribers: usize,
    /// The codec the grid stores values with.
    pub codec: &'static str,
}
