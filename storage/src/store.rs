//! The store: per shard a key index (table.rs) holding the entry blocks and
//! the eviction state; the tag registry; counters. Reads are lock-free; every
//! change to a key happens under the mutex of the key's shard, so the index
//! and the shard's queues always agree.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_utils::CachePadded;
use foldhash::fast::{FixedState, RandomState};
use seize::{Collector, Guard, LocalGuard};

use crate::clock::Clock;
use crate::config::StoreConfig;
use crate::entry::{block_size, Borrowed, EntryPtr, TagRef, NEVER};
use crate::error::StoreError;
use crate::fill::{FillOutcome, FillTicket};
use crate::listener::{EvictionCause, Evictions};
use crate::shard::{Pending, Shard, Victim};
use crate::stats::{Counters, StoreStats};
use crate::table::Table;
use crate::tags::{lock, TagRegistry};
use crate::value::{self, EntryRef, StoreValue};

/// Bytes charged per entry on top of its block (header, tag references, key,
/// alignment padding and value), covering the worst case of what the store
/// allocates for it elsewhere: its 8-byte slot in the shard's key index (at
/// least half of the slots are live while the index grows, 16 bytes per
/// entry; 32 covers an index whose entries fell by half since it was last
/// rebuilt; the eviction queues link entries through their headers by
/// their index slots, so they cost nothing more), and the entry's share of
/// the frequency sketch (8 to 16 bytes: four rows of four 4-bit counters
/// per entry, rounded up to a power of two) and of the ghost list (two
/// generations of 2.7 keys per entry at 16 to 32 bits a key: 11 to 22
/// bytes): 70, rounded up to 72. The allocator's own headers and size-class
/// rounding are not included. `tests/memory.rs` measures the real figure
/// against this constant.
pub const ENTRY_OVERHEAD: usize = 72;

/// Bytes charged per tag reference on top of the tag name: the 16-byte
/// reference in the entry block plus the registry's share for a tag no other
/// entry uses (its shared state and table slot). Shared tags cost less than
/// this, so the charge errs on the safe side.
pub const TAG_OVERHEAD: usize = 72;

/// Blocks a thread retires (replaced or removed) before it hands them to
/// reclamation together, at least: the collector hands a batch over only
/// once it holds an entry for each thread inside a guard, so the store
/// sizes it to twice the machine's threads when that is more
/// ([`retire_batch`]).
const RETIRE_BATCH: usize = 64;
/// Charge from which a replaced or evicted entry's block is handed to
/// reclamation at once rather than with this thread's next batch of
/// retired blocks: a batch of smaller ones holds back about 1 MiB per
/// thread. (A hand-over can still wait, for a batch with fewer entries than
/// there are threads inside guards at that moment, until the batch fills.)
const FLUSH_BYTES: usize = 16 << 10;

/// The collector's batch size: [`RETIRE_BATCH`], or twice the machine's
/// threads if that is more.
fn retire_batch() -> usize {
    std::thread::available_parallelism().map_or(RETIRE_BATCH, |n| RETIRE_BATCH.max(2 * n.get()))
}

/// Slots examined by the incremental sweep on every write.
const SWEEP_PER_WRITE: usize = 2;

/// An empty tag list, for writes without tags.
pub const NO_TAGS: &[&[u8]] = &[];

/// When an entry expires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Expiry {
    /// The store's default TTL (or never, if none is configured).
    #[default]
    Default,
    /// Never.
    Never,
    /// This long after the write.
    After(Duration),
}

pub(crate) struct Inner {
    /// Each shard's key index; written under that shard's mutex. Apart from
    /// the mutexes, so that readers' lines are not written by lockers.
    tables: Box<[CachePadded<Table>]>,
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    /// Reclaims removed blocks and replaced slot arrays once no reader
    /// holds them.
    collector: Collector,
    hasher: FixedState,
    pub(crate) tags: TagRegistry,
    counters: Counters,
    used: AtomicUsize,
    entries: AtomicUsize,
    next_fill: AtomicU64,
    config: StoreConfig,
    max_entry: usize,
    /// The clock's lag ([`Clock::max_lag_ms`]): how far ahead of the
    /// clock's reading the time may be. Hits treat entries as expired that
    /// much early.
    hit_slack: u64,
}

/// A thread-safe in-memory store of archived values with a byte capacity,
/// S3-FIFO eviction, TTLs and tag invalidation. Cloning shares the store.
///
/// ```
/// use hydracache_storage::{Expiry, Store};
/// use std::time::Duration;
///
/// let store = Store::default();
/// store
///     .insert(b"user:42", &String::from("Ada"), Expiry::After(Duration::from_secs(60)), &["users"])
///     .unwrap();
/// assert_eq!(store.get::<String>(b"user:42").unwrap().as_deref(), Some("Ada"));
/// store.invalidate_tag(b"users");
/// assert_eq!(store.get::<String>(b"user:42").unwrap(), None);
/// ```
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl Default for Store {
    fn default() -> Self {
        StoreConfig::default().build()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Store {
    /// A store with the given configuration (see [`StoreConfig::build`]).
    pub fn new(config: StoreConfig) -> Store {
        let shards = config.effective_shards();
        // One hasher for shard choice, the index and the eviction state,
        // seeded per store: the index probes linearly, so keys chosen to
        // collide under a known seed would make long probes.
        let seed = config
            .hash_seed
            .unwrap_or_else(|| RandomState::default().hash_one(0x5eed_u64));
        let hasher = FixedState::with_seed(seed);
        let tables: Box<[CachePadded<Table>]> = (0..shards)
            .map(|_| CachePadded::new(Table::new()))
            .collect();
        // SAFETY: each shard reads its own table, whose address does not
        // change (a boxed slice moved into `Inner`), and `Inner` drops the
        // shards' users with itself; a shard has no drop glue that reads it.
        let shard_states = tables
            .iter()
            .map(|table| CachePadded::new(Mutex::new(unsafe { Shard::new(hasher.clone(), table) })))
            .collect();
        Store {
            inner: Arc::new(Inner {
                tables,
                // Retired blocks are handed to reclamation in batches of
                // RETIRE_BATCH per thread: each hand-over is a process-wide
                // memory barrier (see `evict_slot`).
                collector: Collector::new().batch_size(retire_batch()),
                shards: shard_states,
                hasher,
                tags: TagRegistry::new(shards),
                counters: Counters::new(shards.max(8)),
                used: AtomicUsize::new(0),
                entries: AtomicUsize::new(0),
                next_fill: AtomicU64::new(1),
                max_entry: config.effective_max_entry(),
                hit_slack: config.clock.max_lag_ms(),
                config,
            }),
        }
    }

    // ---- writes ---------------------------------------------------------

    /// Archives `value` and stores it under `key` with the given expiry and
    /// tags, replacing any previous value. Reads back as `T` skip validation.
    pub fn insert<T: StoreValue>(
        &self,
        key: &[u8],
        value: &T,
        expiry: Expiry,
        tags: &[impl AsRef<[u8]>],
    ) -> Result<(), StoreError> {
        self.check_key(key)?;
        self.check_tags(tags)?;
        let bytes = value::encode(value)?;
        self.write_new(key, &bytes, value::type_tag::<T>(), expiry, tags)
    }

    /// Stores bytes this process archived as `T` (for example with
    /// [`crate::encode`]) without re-encoding them.
    pub fn insert_archived<T: StoreValue>(
        &self,
        key: &[u8],
        archived: &[u8],
        expiry: Expiry,
        tags: &[impl AsRef<[u8]>],
    ) -> Result<(), StoreError> {
        self.check_key(key)?;
        self.check_tags(tags)?;
        value::validate::<T>(archived)?;
        self.write_new(key, archived, value::type_tag::<T>(), expiry, tags)
    }

    /// Stores bytes of unknown shape (for example a peer's value in transit).
    /// Every typed read of them is validated.
    pub fn insert_bytes(
        &self,
        key: &[u8],
        bytes: &[u8],
        expiry: Expiry,
        tags: &[impl AsRef<[u8]>],
    ) -> Result<(), StoreError> {
        self.check_key(key)?;
        self.check_tags(tags)?;
        self.write_new(key, bytes, 0, expiry, tags)
    }

    /// Stores bytes that came from outside the process after validating them
    /// as an archive of `T` (bytecheck). Invalid bytes are refused with
    /// [`StoreError::Decode`] and nothing changes.
    pub fn insert_validated<T: StoreValue>(
        &self,
        key: &[u8],
        bytes: &[u8],
        expiry: Expiry,
        tags: &[impl AsRef<[u8]>],
    ) -> Result<(), StoreError> {
        self.insert_archived::<T>(key, bytes, expiry, tags)
    }

    /// Removes `key`. Returns true if an entry was removed. A fill of the key
    /// that is in progress will not be stored.
    pub fn remove(&self, key: &[u8]) -> bool {
        let inner = &*self.inner;
        let guard = inner.collector.enter();
        let mut evictions = inner.evictions();
        let hash = inner.hasher.hash_one(key);
        let idx = inner.shard_of_hash(hash);
        let mut shard = lock(&inner.shards[idx]);
        mark_pending_stale(&mut shard, key, None);
        let removed = match inner.tables[idx].get(hash, key, &guard) {
            Some(entry) => {
                let slot = shard.slot_of(&entry);
                inner.evict_slot(
                    &mut shard,
                    slot,
                    &guard,
                    EvictionCause::Invalidated,
                    &mut evictions,
                );
                true
            }
            None => false,
        };
        drop(shard);
        evictions.report();
        removed
    }

    /// Makes every entry carrying `tag` unreadable at once (one atomic
    /// increment); their memory is reclaimed by the sweep or by eviction.
    /// Fills in progress that depend on the tag will not be stored.
    /// Returns false if no entry or fill used the tag.
    pub fn invalidate_tag(&self, tag: &[u8]) -> bool {
        self.inner.tags.invalidate(tag)
    }

    /// [`Store::invalidate_tag`] for several tags.
    pub fn invalidate_tags(&self, tags: &[impl AsRef<[u8]>]) -> usize {
        tags.iter()
            .filter(|t| self.invalidate_tag(t.as_ref()))
            .count()
    }

    /// Removes every entry; fills in progress will not be stored.
    pub fn flush(&self) {
        let inner = &*self.inner;
        let guard = inner.collector.enter();
        let mut evictions = inner.evictions();
        for shard in inner.shards.iter() {
            let mut shard = lock(shard);
            for p in shard.pending.iter_mut() {
                p.stale = true;
            }
            for slot in shard.linked_slots() {
                inner.evict_slot(
                    &mut shard,
                    slot,
                    &guard,
                    EvictionCause::Invalidated,
                    &mut evictions,
                );
            }
            shard.clear_history();
            drop(shard);
            // Shard by shard: at most one shard's keys are held at a time.
            evictions.report();
        }
    }

    /// Reclaims expired and invalidated entries without anyone reading them:
    /// examines up to `max_per_shard` entries of each shard, continuing where
    /// the previous sweep stopped. Returns how many were reclaimed. Writes do
    /// a little of this on their own; call it periodically when writes are
    /// rare.
    pub fn sweep(&self, max_per_shard: usize) -> usize {
        let inner = &*self.inner;
        let guard = inner.collector.enter();
        let now = inner.config.clock.now_ms();
        let mut slots = Vec::new();
        let mut evictions = inner.evictions();
        inner
            .shards
            .iter()
            .map(|shard| {
                let mut shard = lock(shard);
                let swept = inner.sweep_shard(
                    &mut shard,
                    max_per_shard,
                    now,
                    &guard,
                    &mut slots,
                    &mut evictions,
                );
                drop(shard);
                evictions.report();
                swept
            })
            .sum()
    }

    // ---- fills ----------------------------------------------------------

    /// Snapshots what a fill of `key` with `tags` depends on, before the
    /// value is loaded. [`Store::complete_fill`] stores the loaded value only
    /// if neither the key nor any of the tags was invalidated (or written,
    /// removed or flushed) since.
    pub fn begin_fill(
        &self,
        key: &[u8],
        tags: &[impl AsRef<[u8]>],
    ) -> Result<FillTicket, StoreError> {
        self.check_key(key)?;
        self.check_tags(tags)?;
        let inner = &self.inner;
        let id = inner.next_fill.fetch_add(1, Ordering::Relaxed);
        let shard = inner.shard_of(key);
        let tag_refs: Vec<TagRef> = tags
            .iter()
            .map(|t| inner.tags.acquire(t.as_ref()))
            .collect();
        lock(&inner.shards[shard]).pending.push(Pending {
            id,
            key: key.into(),
            stale: false,
        });
        Ok(FillTicket::new(
            Arc::clone(inner),
            id,
            shard,
            key.into(),
            tag_refs,
        ))
    }

    /// Stores the loaded value for a fill unless it went stale.
    pub fn complete_fill<T: StoreValue>(
        &self,
        ticket: FillTicket,
        value: &T,
        expiry: Expiry,
    ) -> Result<FillOutcome, StoreError> {
        let bytes = value::encode(value)?;
        self.complete_fill_with(ticket, &bytes, value::type_tag::<T>(), expiry)
    }

    /// [`Store::complete_fill`] for bytes already archived as `T`; they are
    /// validated first, as in [`Store::insert_archived`].
    pub fn complete_fill_archived<T: StoreValue>(
        &self,
        ticket: FillTicket,
        archived: &[u8],
        expiry: Expiry,
    ) -> Result<FillOutcome, StoreError> {
        value::validate::<T>(archived)?;
        self.complete_fill_with(ticket, archived, value::type_tag::<T>(), expiry)
    }

    /// [`Store::complete_fill`] for bytes of unknown shape (as in
    /// [`Store::insert_bytes`]): every typed read of them is validated.
    pub fn complete_fill_bytes(
        &self,
        ticket: FillTicket,
        bytes: &[u8],
        expiry: Expiry,
    ) -> Result<FillOutcome, StoreError> {
        self.complete_fill_with(ticket, bytes, 0, expiry)
    }

    /// The one fill path. `type_tag` must be 0 or the tag of a type the bytes
    /// were encoded or validated as: reads trust it.
    fn complete_fill_with(
        &self,
        mut ticket: FillTicket,
        bytes: &[u8],
        type_tag: u64,
        expiry: Expiry,
    ) -> Result<FillOutcome, StoreError> {
        let inner = &*self.inner;
        let tag_bytes = ticket.tags.iter().map(|t| t.state.name().len()).sum();
        inner.check_size(ticket.tags.len(), tag_bytes, ticket.key.len(), bytes.len())?;
        let tags = std::mem::take(&mut ticket.tags);
        let key = std::mem::take(&mut ticket.key);
        let near = ticket.near;
        let stored = inner.write(&key, bytes, type_tag, expiry, tags, Some(ticket.id), near);
        Ok(if stored {
            FillOutcome::Stored
        } else {
            FillOutcome::Stale
        })
    }

    // ---- reads ----------------------------------------------------------

    /// Copies the value for `key` out as `T`. `Ok(None)` on a miss (absent,
    /// expired or invalidated). If the stored bytes are not a valid `T` the
    /// entry is dropped and [`StoreError::Decode`] returned.
    #[inline]
    pub fn get<T: StoreValue>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        let inner = &*self.inner;
        let guard = inner.collector.enter();
        let Some(entry) = inner.lookup(key, &guard) else {
            return Ok(None);
        };
        match value::decode::<T>(entry.value(), entry.header().type_tag) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                self.remove_if_same(&entry);
                Err(e)
            }
        }
    }

    /// A zero-copy guard over the live entry for `key`, or `None` on a miss.
    #[inline(always)]
    pub fn get_ref(&self, key: &[u8]) -> Option<EntryRef<'_>> {
        let inner = &*self.inner;
        let guard = inner.collector.enter();
        let raw = inner.lookup(key, &guard)?.as_raw();
        Some(EntryRef {
            _guard: guard,
            raw,
            clock: &inner.config.clock,
        })
    }

    /// True if `key` has a live entry (agrees with [`Store::get`]). Does not
    /// count as a hit or miss and does not change eviction order.
    pub fn contains_key(&self, key: &[u8]) -> bool {
        let inner = &*self.inner;
        let guard = inner.collector.enter();
        let hash = inner.hasher.hash_one(key);
        inner.tables[inner.shard_of_hash(hash)]
            .get(hash, key, &guard)
            .is_some_and(|e| e.is_live_at(inner.read_now(&e), inner.tags.epoch()))
    }

    // ---- introspection --------------------------------------------------

    /// Counters and gauges.
    pub fn stats(&self) -> StoreStats {
        let inner = &*self.inner;
        let c = &inner.counters;
        StoreStats {
            hits: c.sum(|s| &s.hits[0]) + c.sum(|s| &s.hits[1]),
            near_hits: c.sum(|s| &s.hits[1]),
            misses: c.sum(|s| &s.misses),
            inserts: c.sum(|s| &s.inserts),
            evicted_capacity: c.sum(|s| &s.evicted_capacity),
            evicted_expired: c.sum(|s| &s.evicted_expired),
            evicted_invalidated: c.sum(|s| &s.evicted_invalidated),
            stale_fills: c.sum(|s| &s.stale_fills),
            entries: inner.entries.load(Ordering::Relaxed) as u64,
            bytes: inner.used.load(Ordering::Relaxed) as u64,
            capacity_bytes: inner.config.capacity_bytes as u64,
            tags: inner.tags.len() as u64,
        }
    }

    /// Number of resident entries.
    pub fn len(&self) -> usize {
        self.inner.entries.load(Ordering::Relaxed)
    }

    /// True if no entry is resident.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes charged against the capacity.
    pub fn bytes(&self) -> usize {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// The store's clock.
    pub fn clock(&self) -> &Clock {
        &self.inner.config.clock
    }

    /// Bytes a write of this shape would be charged: its block (header,
    /// tag references, key, padding, value) plus [`ENTRY_OVERHEAD`], plus
    /// [`TAG_OVERHEAD`] - 16 and the name length for every tag
    /// (`tag_bytes` is the sum of the tag names' lengths).
    pub fn charge_for(
        tag_count: usize,
        tag_bytes: usize,
        key_len: usize,
        value_len: usize,
    ) -> usize {
        block_size(tag_count, key_len, value_len)
            + ENTRY_OVERHEAD
            + tag_count * (TAG_OVERHEAD - 16)
            + tag_bytes
    }

    /// Heap bytes used by bookkeeping outside the entry blocks (key index
    /// slots, queue nodes, ghost lists, frequency sketches, tag registry).
    pub fn bookkeeping_bytes(&self) -> usize {
        let inner = &*self.inner;
        inner
            .shards
            .iter()
            .zip(inner.tables.iter())
            .map(|(s, t)| {
                let shard = lock(s);
                // Under the shard's mutex: the index is not being replaced.
                shard.heap_bytes() + t.heap_bytes()
            })
            .sum::<usize>()
            + inner.tags.heap_bytes()
    }

    // ---- internals ------------------------------------------------------

    fn check_key(&self, key: &[u8]) -> Result<(), StoreError> {
        if key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        let max = self.inner.config.max_key_len;
        if key.len() > max {
            return Err(StoreError::KeyTooLong {
                len: key.len(),
                max,
            });
        }
        Ok(())
    }

    fn check_tags(&self, tags: &[impl AsRef<[u8]>]) -> Result<(), StoreError> {
        let cfg = &self.inner.config;
        if tags.len() > cfg.max_tags {
            return Err(StoreError::TooManyTags {
                count: tags.len(),
                max: cfg.max_tags,
            });
        }
        for t in tags {
            let len = t.as_ref().len();
            if len == 0 || len > cfg.max_tag_len {
                return Err(StoreError::BadTag {
                    len,
                    max: cfg.max_tag_len,
                });
            }
        }
        Ok(())
    }

    fn write_new(
        &self,
        key: &[u8],
        bytes: &[u8],
        type_tag: u64,
        expiry: Expiry,
        tags: &[impl AsRef<[u8]>],
    ) -> Result<(), StoreError> {
        let inner = &*self.inner;
        let tag_bytes = tags.iter().map(|t| t.as_ref().len()).sum();
        inner.check_size(tags.len(), tag_bytes, key.len(), bytes.len())?;
        let tag_refs = tags
            .iter()
            .map(|t| inner.tags.acquire(t.as_ref()))
            .collect();
        inner.write(key, bytes, type_tag, expiry, tag_refs, None, false);
        Ok(())
    }

    /// Drops `entry` if it is still the one stored under its key.
    fn remove_if_same(&self, entry: &EntryPtr) {
        let inner = &*self.inner;
        let guard = inner.collector.enter();
        let mut evictions = inner.evictions();
        let hash = inner.hasher.hash_one(entry.key());
        let idx = inner.shard_of_hash(hash);
        let mut shard = lock(&inner.shards[idx]);
        if let Some(current) = inner.tables[idx].get(hash, entry.key(), &guard) {
            if current.as_raw() == entry.as_raw() {
                let slot = shard.slot_of(&current);
                inner.evict_slot(
                    &mut shard,
                    slot,
                    &guard,
                    EvictionCause::Invalidated,
                    &mut evictions,
                );
            }
        }
        drop(shard);
        evictions.report();
    }
}

/// The charge of a stored entry, recomputed from its block (the same
/// figure its write added to the byte counter).
pub(crate) fn entry_charge(entry: &EntryPtr) -> usize {
    let tag_bytes = entry.tags().iter().map(|t| t.state.name().len()).sum();
    Store::charge_for(
        entry.tags().len(),
        tag_bytes,
        entry.key().len(),
        entry.value().len(),
    )
}

fn mark_pending_stale(shard: &mut Shard, key: &[u8], except: Option<u64>) {
    for p in shard.pending.iter_mut() {
        if &*p.key == key && Some(p.id) != except {
            p.stale = true;
        }
    }
}

impl Inner {
    /// Shard index of a key.
    #[inline]
    fn shard_of(&self, key: &[u8]) -> usize {
        self.shard_of_hash(self.hasher.hash_one(key))
    }

    #[inline]
    fn shard_of_hash(&self, hash: u64) -> usize {
        (hash as usize) & (self.shards.len() - 1)
    }

    /// The time a read compares `entry`'s expiry with: the clock's reading
    /// plus its lag, the latest time the reading may stand for. An entry
    /// that expires within the lag is not returned, so a hit does not
    /// return an entry whose TTL has passed while the coarse clock lags by
    /// no more than its bound (see clock.rs). Writes, sweeps and the TTL
    /// left use the reading itself: for them an entry kept a few
    /// milliseconds longer is harmless.
    #[inline]
    fn read_now(&self, entry: &EntryPtr) -> u64 {
        if entry.header().expires_at() == NEVER {
            0
        } else {
            self.config.clock.now_ms() + self.hit_slack
        }
    }

    /// The hit path: one index probe, an expiry check, a tag check (one
    /// load of the store's tag epoch; the tags' generations only if a tag
    /// was invalidated since a reader last checked this entry), a relaxed
    /// frequency bump and a striped counter (the thread's stripe's hits or
    /// near hits, indexed by the near-copy bit read with the frequency).
    #[inline(always)]
    fn lookup<'g>(&self, key: &[u8], guard: &'g LocalGuard<'_>) -> Option<Borrowed<'g>> {
        let stripe = self.counters.local();
        let hash = self.hasher.hash_one(key);
        let epoch = self.tags.epoch();
        match self.tables[self.shard_of_hash(hash)].get(hash, key, guard) {
            Some(entry) if entry.is_live_at(self.read_now(&entry), epoch) => {
                Counters::add(&stripe.hits[entry.header().record_hit()], 1);
                Some(entry)
            }
            _ => {
                Counters::add(&stripe.misses, 1);
                None
            }
        }
    }

    fn check_size(
        &self,
        tag_count: usize,
        tag_bytes: usize,
        key_len: usize,
        value_len: usize,
    ) -> Result<(), StoreError> {
        let size = Store::charge_for(tag_count, tag_bytes, key_len, value_len);
        if size > self.max_entry {
            return Err(StoreError::EntryTooLarge {
                size,
                max: self.max_entry,
            });
        }
        Ok(())
    }

    fn expires_at(&self, expiry: Expiry) -> u64 {
        let ttl = match expiry {
            Expiry::Default => self.config.default_ttl,
            Expiry::Never => None,
            Expiry::After(d) => Some(d),
        };
        match ttl {
            None => NEVER,
            Some(d) => self
                .config
                .clock
                .now_ms()
                .saturating_add(d.as_millis().min(u64::MAX as u128) as u64)
                .min(NEVER - 1),
        }
    }

    /// Stores an entry; with `fill`, only if that fill is not stale. Returns
    /// whether it was stored. Sizes were checked by the caller. `near`: the
    /// entry is a near copy.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        key: &[u8],
        bytes: &[u8],
        type_tag: u64,
        expiry: Expiry,
        tags: Vec<TagRef>,
        fill: Option<u64>,
        near: bool,
    ) -> bool {
        let hash = self.hasher.hash_one(key);
        let shard_idx = self.shard_of_hash(hash);
        let entry = EntryPtr::new(key, bytes, tags, self.expires_at(expiry), type_tag, near);
        let charge = entry_charge(&entry);
        let guard = self.collector.enter();
        let mut shard = lock(&self.shards[shard_idx]);
        if let Some(id) = fill {
            let pending_stale = shard
                .pending
                .iter()
                .find(|p| p.id == id)
                .is_none_or(|p| p.stale);
            if pending_stale || !entry.tags().iter().all(TagRef::is_current) {
                drop(shard);
                self.release_tags(&entry);
                Counters::add(&self.counters.local().stale_fills, 1);
                return false;
            }
        }
        mark_pending_stale(&mut shard, key, fill);
        // A large replaced block is handed to reclamation at once, as a
        // large evicted one is (`evict_slot`).
        let mut flush = false;
        if let Some(old) = self.tables[shard_idx].get(hash, key, &guard) {
            let slot = shard.slot_of(&old);
            self.release_tags(&old);
            flush = self.unlink(&mut shard, slot) >= FLUSH_BYTES;
        }
        // While the store has room for this entry nothing is evicted, and
        // the shard places it in the main queue (see shard.rs).
        let filling = self.used.load(Ordering::Relaxed) + charge <= self.config.capacity_bytes;
        let now = self.config.clock.now_ms();
        let raw = entry.as_raw();
        // SAFETY: we hold the shard's mutex; the index belongs to this shard
        // and its readers' guards come from this collector.
        let inserted = unsafe {
            self.tables[shard_idx].insert(&mut shard.index, hash, entry, &self.collector, |k| {
                self.hasher.hash_one(k)
            })
        };
        if let Some(moved) = inserted.moved {
            shard.renumber(&moved, inserted.slot);
            // The index was rebuilt and its old slot array retired: hand it
            // to reclamation now rather than with this thread's next batch
            // of retired blocks, which may be far off in a store that only
            // grows. Rebuilds are rare enough for the barrier a flush costs.
            flush = true;
        }
        if flush {
            guard.flush();
        }
        let epoch = self.tags.epoch();
        shard.link(inserted.slot, charge, hash, filling, |e| {
            !e.is_live_at(now, epoch)
        });
        debug_assert!(
            self.tables[shard_idx]
                .get(hash, key, &guard)
                .map(|k| k.as_raw())
                == Some(raw)
        );
        self.used.fetch_add(charge, Ordering::Relaxed);
        self.entries.fetch_add(1, Ordering::Relaxed);
        Counters::add(&self.counters.local().inserts, 1);

        let mut scratch = Vec::new();
        let mut evictions = self.evictions();
        self.sweep_shard(
            &mut shard,
            SWEEP_PER_WRITE,
            now,
            &guard,
            &mut scratch,
            &mut evictions,
        );
        // Evict from our own shard first (we hold its lock), then from the
        // others; the new entry is last in line, so it goes only if it is alone.
        while self.over_capacity() && shard.len() > 1 {
            if !self.evict_one(&mut shard, now, &guard, &mut evictions) {
                break;
            }
        }
        drop(shard);
        let n = self.shards.len();
        let mut i = shard_idx;
        let mut idle_rounds = 0;
        while self.over_capacity() && idle_rounds < n {
            i = (i + 1) & (n - 1);
            let mut other = lock(&self.shards[i]);
            if self.evict_one(&mut other, now, &guard, &mut evictions) {
                idle_rounds = 0;
            } else {
                idle_rounds += 1;
            }
        }
        evictions.report();
        true
    }

    fn over_capacity(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.config.capacity_bytes
    }

    fn evict_one(
        &self,
        shard: &mut Shard,
        now: u64,
        guard: &LocalGuard<'_>,
        evictions: &mut Evictions<'_>,
    ) -> bool {
        let epoch = self.tags.epoch();
        match shard.next_victim(|e| !e.is_live_at(now, epoch)) {
            Victim::Empty => false,
            Victim::Evict(slot) => {
                // SAFETY: under the shard lock, slot is linked.
                let cause = match unsafe { shard.entry(slot) } {
                    Some(e) if e.header().expires_at() <= now => EvictionCause::Expired,
                    Some(e) if !e.tags().iter().all(TagRef::is_current) => {
                        EvictionCause::Invalidated
                    }
                    _ => {
                        shard.remember(slot);
                        EvictionCause::Capacity
                    }
                };
                self.evict_slot(shard, slot, guard, cause, evictions);
                true
            }
        }
    }

    fn sweep_shard(
        &self,
        shard: &mut Shard,
        budget: usize,
        now: u64,
        guard: &LocalGuard<'_>,
        scratch: &mut Vec<u32>,
        evictions: &mut Evictions<'_>,
    ) -> usize {
        scratch.clear();
        shard.sweep_slots(budget, scratch);
        let epoch = self.tags.epoch();
        let mut reclaimed = 0;
        for &slot in scratch.iter() {
            // SAFETY: under the shard lock; sweep_slots returns linked slots.
            let Some(entry) = (unsafe { shard.entry(slot) }) else {
                continue;
            };
            // Live entries (most) are told apart without loading their
            // tags' generations unless a tag was invalidated since a reader
            // last checked them.
            if entry.is_live_at(now, epoch) {
                continue;
            }
            if entry.header().expires_at() <= now {
                self.evict_slot(shard, slot, guard, EvictionCause::Expired, evictions);
                reclaimed += 1;
            } else if !entry.tags().iter().all(TagRef::is_current) {
                self.evict_slot(shard, slot, guard, EvictionCause::Invalidated, evictions);
                reclaimed += 1;
            }
        }
        reclaimed
    }

    /// The collector for one operation's removals (see listener.rs).
    #[inline]
    fn evictions(&self) -> Evictions<'_> {
        Evictions::new(self.config.listener.as_ref())
    }

    /// Removes the entry in `slot` from the map and the shard, counts it and
    /// records it for the listener.
    fn evict_slot(
        &self,
        shard: &mut Shard,
        slot: u32,
        guard: &LocalGuard<'_>,
        cause: EvictionCause,
        evictions: &mut Evictions<'_>,
    ) {
        // SAFETY: under the shard lock, slot is linked, entry is in the index.
        let Some(raw) = (unsafe { shard.entry(slot) }).map(|e| e.as_raw()) else {
            return;
        };
        // SAFETY: the block stays readable until `guard` (and every other
        // guard that saw it) is released, even once removed below.
        let entry = unsafe { Borrowed::new(raw) };
        self.release_tags(&entry);
        evictions.record(entry.key(), cause);
        // Unlinked while the index still holds it: the links name slots.
        let charge = self.unlink(shard, slot);
        let hash = self.hasher.hash_one(entry.key());
        // SAFETY: we hold this shard's mutex (the key's shard: the slot is
        // linked in it), and guards come from this collector.
        let removed = unsafe {
            self.tables[self.shard_of_hash(hash)].remove(
                &mut shard.index,
                hash,
                entry.key(),
                &self.collector,
            )
        };
        debug_assert!(removed);
        self.counters.evicted(cause);
        // The block is freed once this thread's batch of retired blocks
        // fills (`Collector::batch_size` in `Store::new`) and no reader
        // holds it. A large one is handed over at once, so that a few big
        // values cannot hold memory far past the capacity; small ones wait
        // for the batch, because a flush is a process-wide memory barrier
        // (the `membarrier` system call, an interrupt to every core running
        // this process), which made each eviction cost several
        // microseconds.
        if charge >= FLUSH_BYTES {
            guard.flush();
        }
    }

    /// Unlinks the entry in `slot` and uncounts it; returns its charge.
    fn unlink(&self, shard: &mut Shard, slot: u32) -> usize {
        let charge = shard.unlink(slot);
        self.used.fetch_sub(charge, Ordering::Relaxed);
        self.entries.fetch_sub(1, Ordering::Relaxed);
        charge
    }

    pub(crate) fn release_tags(&self, entry: &EntryPtr) {
        for tag in entry.tags() {
            self.tags.release(tag);
        }
    }

    pub(crate) fn drop_pending(&self, shard: usize, id: u64) {
        let mut shard = lock(&self.shards[shard]);
        if let Some(i) = shard.pending.iter().position(|p| p.id == id) {
            shard.pending.swap_remove(i);
        }
    }

    pub(crate) fn pending_is_stale(&self, shard: usize, id: u64, tags: &[TagRef]) -> bool {
        let shard = lock(&self.shards[shard]);
        shard
            .pending
            .iter()
            .find(|p| p.id == id)
            .is_none_or(|p| p.stale)
            || !tags.iter().all(TagRef::is_current)
    }
}
