//! `Grid::local()`: the single-process builder.

use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::Duration;

use hydracache_storage::{Clock, StoreConfig};

use crate::codec::{Codec, Rkyv};
use crate::events::EventBus;
use crate::grid::{Grid, GridInner, SWEEP_BUDGET, SWEEP_PERIOD};
use crate::single_flight::Flights;
use crate::stats::GridCounters;

/// Default capacity of a local grid: 64 MiB.
pub const DEFAULT_CAPACITY_BYTES: usize = 64 << 20;
/// Default number of events buffered per subscriber before it lags.
pub const DEFAULT_EVENT_BUFFER: usize = 1024;

/// Builds a single-process grid. Every setting has a sensible default.
///
/// ```
/// use hydracache::{Grid, Postcard};
/// use std::time::Duration;
///
/// let grid = Grid::local()
///     .max_capacity_bytes(256 << 20)
///     .max_entry_bytes(1 << 20)
///     .default_ttl(Duration::from_secs(300))
///     .event_buffer_capacity(4096)
///     .codec::<Postcard>()
///     .build();
/// assert_eq!(grid.diagnostics().codec, "postcard");
/// ```
#[derive(Clone, Debug)]
pub struct LocalBuilder<C: Codec = Rkyv> {
    store: StoreConfig,
    default_ttl: Option<Duration>,
    capacity: usize,
    max_entry: Option<usize>,
    event_buffer: usize,
    access_events: bool,
    _codec: PhantomData<C>,
}

impl LocalBuilder {
    pub(crate) fn new() -> Self {
        LocalBuilder {
            store: StoreConfig::new(),
            default_ttl: None,
            capacity: DEFAULT_CAPACITY_BYTES,
            max_entry: None,
            event_buffer: DEFAULT_EVENT_BUFFER,
            access_events: false,
            _codec: PhantomData,
        }
    }
}

impl<C: Codec> LocalBuilder<C> {
    /// Capacity in bytes (keys, values, tags and per-entry overhead). Default 64 MiB.
    pub fn max_capacity_bytes(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Largest single entry accepted. Default: a quarter of the capacity.
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry = Some(bytes);
        self
    }

    /// TTL of entries written without one. Default: none (live until evicted).
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.store = self.store.default_ttl(ttl);
        self.default_ttl = Some(ttl);
        self
    }

    /// Events buffered for each subscriber before it starts to lag. Default 1024.
    pub fn event_buffer_capacity(mut self, events: usize) -> Self {
        self.event_buffer = events;
        self
    }

    /// Publish hit and miss events to `subscribe_access` listeners. Off by
    /// default; even when on, reads build events only while someone listens.
    pub fn enable_access_events(mut self, on: bool) -> Self {
        self.access_events = on;
        self
    }

    /// Longest key accepted (bytes). Default 4096.
    pub fn max_key_len(mut self, len: usize) -> Self {
        self.store = self.store.max_key_len(len);
        self
    }

    /// Seeds the store's key hash instead of drawing a random seed, so the
    /// same operations make the same shard, index and eviction decisions:
    /// for tests and reproducible benchmarks. Keep the random seed where
    /// keys come from untrusted callers: keys chosen to collide under a
    /// known seed make long index probes.
    ///
    /// ```
    /// let grid = hydracache::Grid::local().hash_seed(7).build();
    /// # drop(grid);
    /// ```
    pub fn hash_seed(mut self, seed: u64) -> Self {
        self.store = self.store.hash_seed(seed);
        self
    }

    /// The clock used for expiry (tests use a manual clock).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.store = self.store.clock(clock);
        self
    }

    /// Chooses the codec values are stored with.
    pub fn codec<C2: Codec>(self) -> LocalBuilder<C2> {
        LocalBuilder {
            store: self.store,
            default_ttl: self.default_ttl,
            capacity: self.capacity,
            max_entry: self.max_entry,
            event_buffer: self.event_buffer,
            access_events: self.access_events,
            _codec: PhantomData,
        }
    }

    /// Builds the grid. Inside a Tokio runtime this also starts a background
    /// task that reclaims expired and invalidated entries every second; it
    /// stops when the last handle is dropped.
    pub fn build(self) -> Grid<C> {
        let events = Arc::new(EventBus::new(self.event_buffer, self.access_events));
        let mut store = self
            .store
            .capacity_bytes(self.capacity)
            .eviction_listener(events.clone());
        if let Some(max) = self.max_entry {
            store = store.max_entry_bytes(max);
        }
        let inner = Arc::new_cyclic(|weak: &Weak<GridInner>| GridInner {
            store: store.build(),
            flights: Flights::default(),
            events,
            counters: GridCounters::default(),
            load_latency: Default::default(),
            membership: tokio::sync::broadcast::channel(crate::events::MEMBERSHIP_BUFFER).0,
            remote: std::sync::OnceLock::new(),
            codec_name: C::NAME,
            stamps: Default::default(),
            default_ttl: self.default_ttl,
            sweeper: spawn_sweeper(weak.clone()),
        });
        Grid::from_inner(inner)
    }
}

fn spawn_sweeper(weak: Weak<GridInner>) -> Option<tokio::task::AbortHandle> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let task = handle.spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(inner) = weak.upgrade() else { break };
            inner.store.sweep(SWEEP_BUDGET);
        }
    });
    Some(task.abort_handle())
}
