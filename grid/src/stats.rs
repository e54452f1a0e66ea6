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
#[non_exhaustive]
pub struct GridStats {
    /// Reads that found a value.
    pub hits: u64,
    /// Of [`GridStats::hits`], those that found a near copy: a value of a
    /// key another node owns, kept here from the owner's reply, a put
    /// stored at the owner, or a load this node ran under the owner's
    /// lease. On a client every kept value is one.
    pub near_hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// Loader runs on this node (one per single-flight group; in a grid,
    /// one per lease this node held, or per load it ran without the owner).
    /// A miss that the key's owner answered runs no loader and is not one.
    pub loads: u64,
    /// Loader runs on this node that failed or panicked (another node's
    /// failed load, reported here as `LoadFailedOn`, is not one).
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
    /// Entries removed by an invalidation: of their key or a flush at once,
    /// of one of their tags when reclaimed.
    pub evicted_invalidated: u64,
    /// Events delivered to the subscriber ring.
    pub events_published: u64,
    /// Events dropped for subscribers that fell behind.
    pub subscriber_lag: u64,
}

impl GridStats {
    /// Reads: hits + misses.
    pub fn total_requests(&self) -> u64 {
        self.hits + self.misses
    }

    /// hits / (hits + misses); `None` before the first read.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// assert_eq!(grid.stats().hit_ratio(), None);
    /// grid.put("k", 1u8, Default::default()).await.unwrap();
    /// let _ = grid.get::<u8>("k").await;
    /// let _ = grid.get::<u8>("other").await;
    /// assert_eq!(grid.stats().total_requests(), 2);
    /// assert_eq!(grid.stats().hit_ratio(), Some(0.5));
    /// # });
    /// ```
    pub fn hit_ratio(&self) -> Option<f64> {
        let reads = self.total_requests();
        (reads > 0).then(|| self.hits as f64 / reads as f64)
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
            near_hits: store.near_hits,
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
#[non_exhaustive]
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
    /// How long loads took, from the loader's start (or the request to the
    /// key's owner, in a grid) to the outcome reaching the callers.
    pub load_latency: crate::LatencySnapshot,
}

impl GridDiagnostics {
    /// Reads: hits + misses ([`GridStats::total_requests`]).
    pub fn total_requests(&self) -> u64 {
        self.stats.total_requests()
    }

    /// [`GridStats::hit_ratio`]: `None` before the first read.
    pub fn hit_ratio(&self) -> Option<f64> {
        self.stats.hit_ratio()
    }

    /// True if the cache holds no entry.
    ///
    /// ```
    /// let grid = hydracache::Grid::local().build();
    /// assert!(grid.diagnostics().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }
}
