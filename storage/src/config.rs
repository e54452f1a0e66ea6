//! Store configuration.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::listener::{EvictionListener, Listener};
use crate::store::Store;

/// Default capacity: 64 MiB.
pub const DEFAULT_CAPACITY_BYTES: usize = 64 << 20;
/// Default longest key: 4 KiB.
pub const DEFAULT_MAX_KEY_LEN: usize = 4096;
/// Default maximum number of tags per entry.
pub const DEFAULT_MAX_TAGS: usize = 32;
/// Default longest tag: 256 bytes.
pub const DEFAULT_MAX_TAG_LEN: usize = 256;

/// Smallest capacity per shard when the shard count is left to the default.
/// 500 entries in 8 shards left small queues of one or two entries and cost
/// 0.1-0.2 points of hit ratio on the real trace of `benches/hit_ratio.rs`.
const MIN_SHARD_BYTES: usize = 128 << 10;

/// Settings for a [`Store`]. Every setter has a safe default.
///
/// ```
/// use hydracache_storage::StoreConfig;
/// use std::time::Duration;
///
/// let store = StoreConfig::new()
///     .capacity_bytes(8 << 20)
///     .default_ttl(Duration::from_secs(60))
///     .build();
/// assert_eq!(store.stats().capacity_bytes, 8 << 20);
/// ```
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub(crate) capacity_bytes: usize,
    pub(crate) max_entry_bytes: Option<usize>,
    pub(crate) max_key_len: usize,
    pub(crate) max_tags: usize,
    pub(crate) max_tag_len: usize,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) shards: Option<usize>,
    pub(crate) clock: Clock,
    pub(crate) listener: Option<Listener>,
    pub(crate) hash_seed: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            capacity_bytes: DEFAULT_CAPACITY_BYTES,
            max_entry_bytes: None,
            max_key_len: DEFAULT_MAX_KEY_LEN,
            max_tags: DEFAULT_MAX_TAGS,
            max_tag_len: DEFAULT_MAX_TAG_LEN,
            default_ttl: None,
            shards: None,
            clock: Clock::Monotonic,
            listener: None,
            hash_seed: None,
        }
    }
}

impl StoreConfig {
    /// The defaults: 64 MiB, no default TTL, 4 KiB keys, 32 tags of up to 256 bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Upper bound on the bytes charged for all entries (key + value + tag
    /// references + a fixed per-entry overhead).
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.capacity_bytes = bytes;
        self
    }

    /// Largest single entry accepted. Default: a quarter of the capacity.
    /// Values above the capacity are clamped to it.
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = Some(bytes);
        self
    }

    /// Longest key accepted (at most 65,535).
    pub fn max_key_len(mut self, len: usize) -> Self {
        self.max_key_len = len.min(u16::MAX as usize);
        self
    }

    /// Most tags one entry may carry (at most 255).
    pub fn max_tags(mut self, count: usize) -> Self {
        self.max_tags = count.min(u8::MAX as usize);
        self
    }

    /// Longest tag accepted.
    pub fn max_tag_len(mut self, len: usize) -> Self {
        self.max_tag_len = len;
        self
    }

    /// TTL for entries written without one.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = Some(ttl);
        self
    }

    /// Number of independently locked shards for writes and eviction
    /// (rounded up to a power of two). Default: 4 x the available cores,
    /// between 4 and 64, but no more than one per 128 KiB of capacity, so a
    /// small store keeps queues long enough for its eviction policy to
    /// work. One shard gives exact global S3-FIFO order.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards.max(1));
        self
    }

    /// Seeds the store's key hash (shard choice, index, eviction state)
    /// instead of a random seed per store, so that the same operations make
    /// the same eviction decisions: for tests and reproducible benchmarks.
    /// A store facing untrusted keys keeps the random seed, since keys
    /// chosen to collide under a known seed make long index probes.
    pub fn hash_seed(mut self, seed: u64) -> Self {
        self.hash_seed = Some(seed);
        self
    }

    /// The clock used for expiry.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Reports every entry the store removes (evicted, expired, invalidated,
    /// removed or flushed) to `listener`, with its cause. See
    /// [`EvictionListener`] for when it is called.
    pub fn eviction_listener(mut self, listener: Arc<dyn EvictionListener>) -> Self {
        self.listener = Some(Listener(listener));
        self
    }

    /// Builds the store.
    pub fn build(self) -> Store {
        Store::new(self)
    }

    pub(crate) fn effective_max_entry(&self) -> usize {
        self.max_entry_bytes
            .unwrap_or(self.capacity_bytes / 4)
            .min(self.capacity_bytes)
            .min(u32::MAX as usize)
    }

    pub(crate) fn effective_shards(&self) -> usize {
        match self.shards {
            Some(n) => n.next_power_of_two(),
            None => {
                let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
                let by_cores = (cores * 4).clamp(4, 64).next_power_of_two();
                // Largest power of two not above the capacity's share.
                let by_capacity = (self.capacity_bytes / MIN_SHARD_BYTES).max(1);
                by_cores.min(1 << by_capacity.ilog2())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_stores_get_fewer_shards_unless_told() {
        let small = StoreConfig::new().capacity_bytes(100 << 10);
        assert_eq!(small.effective_shards(), 1);
        let medium = StoreConfig::new().capacity_bytes(300 << 10);
        assert_eq!(medium.effective_shards(), 2);
        let large = StoreConfig::new();
        assert!(large.effective_shards() >= 4);
        assert_eq!(small.shards(6).effective_shards(), 8);
    }
}
