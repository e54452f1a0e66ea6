//! Counters striped over cache-padded cells so that concurrent hits on
//! different threads never write the same cache line; they are summed on read.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use crate::listener::EvictionCause;

/// One stripe of counters.
#[derive(Default)]
pub(crate) struct Stripe {
    /// Hits on entries that are not near copies (`[0]`) and on near copies
    /// (`[1]`): a hit increments the one its entry's near-copy bit indexes,
    /// so counting them apart costs no extra write and no branch.
    pub(crate) hits: [AtomicU64; 2],
    pub(crate) misses: AtomicU64,
    pub(crate) inserts: AtomicU64,
    pub(crate) evicted_capacity: AtomicU64,
    pub(crate) evicted_expired: AtomicU64,
    pub(crate) evicted_invalidated: AtomicU64,
    pub(crate) stale_fills: AtomicU64,
}

pub(crate) struct Counters {
    stripes: Box<[CachePadded<Stripe>]>,
}

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

impl Counters {
    pub(crate) fn new(stripes: usize) -> Self {
        Counters {
            stripes: (0..stripes.next_power_of_two())
                .map(|_| CachePadded::new(Stripe::default()))
                .collect(),
        }
    }

    /// The calling thread's stripe.
    #[inline]
    pub(crate) fn local(&self) -> &Stripe {
        let mut i = STRIPE.with(Cell::get);
        if i == usize::MAX {
            i = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed);
            STRIPE.with(|s| s.set(i));
        }
        &self.stripes[i & (self.stripes.len() - 1)]
    }

    #[inline]
    pub(crate) fn add(cell: &AtomicU64, n: u64) {
        cell.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn evicted(&self, cause: EvictionCause) {
        let s = self.local();
        let cell = match cause {
            EvictionCause::Capacity => &s.evicted_capacity,
            EvictionCause::Expired => &s.evicted_expired,
            EvictionCause::Invalidated => &s.evicted_invalidated,
        };
        Self::add(cell, 1);
    }

    pub(crate) fn sum(&self, f: impl Fn(&Stripe) -> &AtomicU64) -> u64 {
        self.stripes
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }
}

/// A snapshot of the store's counters and gauges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Reads that found a live entry (near copies included).
    pub hits: u64,
    /// Of [`StoreStats::hits`], those that found a near copy: an entry
    /// stored through a fill marked with [`crate::FillTicket::near_copy`]
    /// (in a grid, a copy of a key another node owns).
    pub near_hits: u64,
    /// Reads that found nothing, or an expired or invalidated entry.
    pub misses: u64,
    /// Successful writes (new keys and replacements).
    pub inserts: u64,
    /// Entries removed to stay within capacity.
    pub evicted_capacity: u64,
    /// Expired entries reclaimed.
    pub evicted_expired: u64,
    /// Entries removed by key or tag invalidation, removal or flush.
    pub evicted_invalidated: u64,
    /// Fills refused because something they depended on was invalidated.
    pub stale_fills: u64,
    /// Entries resident (including expired ones not yet reclaimed).
    pub entries: u64,
    /// Bytes charged against the capacity.
    pub bytes: u64,
    /// The configured capacity in bytes.
    pub capacity_bytes: u64,
    /// Distinct tags held by entries or pending fills.
    pub tags: u64,
}

impl StoreStats {
    /// hits / (hits + misses), or 0 when there were no reads.
    ///
    /// ```
    /// let s = hydracache_storage::StoreStats { hits: 3, misses: 1, ..Default::default() };
    /// assert_eq!(s.hit_ratio(), 0.75);
    /// ```
    pub fn hit_ratio(&self) -> f64 {
        let reads = self.hits + self.misses;
        if reads == 0 {
            0.0
        } else {
            self.hits as f64 / reads as f64
        }
    }

    /// Evictions of every reason.
    pub fn evictions(&self) -> u64 {
        self.evicted_capacity + self.evicted_expired + self.evicted_invalidated
    }
}
