//! The ghost list: which keys were evicted from the small queue recently.
//!
//! S3-FIFO only ever asks "was this key evicted from the small queue not
//! long ago?", so the ghost is kept as two generations of Bloom filters
//! rather than a list of fingerprints: evicted keys are added to the current
//! generation; when it has taken `per_generation` keys the older one is
//! cleared and becomes the current one. A key is in the ghost if either
//! generation holds it, which covers the last `per_generation` to
//! `2 x per_generation` evictions. At 16 to 32 bits per key of a
//! generation (the bit count is rounded up to a power of two), two
//! generations of 2.7 times the shard's entries (`shard.rs`) cost 11 to 22
//! bytes per resident entry; a fingerprint FIFO and its count map covering
//! as many keys would cost about three times that. The price is false positives, under 1% with three bits per key; a
//! false positive makes a new key a candidate for the main queue, where it
//! skips the probation of the small queue if it beats the main queue's victim
//! (see `shard.rs`). With 8 bits per key (about 3% false positives) that cost
//! up to 0.7 points of hit ratio on the zipf traces at the smallest cache
//! size of `benches/hit_ratio.rs`; 16 bits cost nothing measurable.

/// Bits set per key.
const HASHES: usize = 3;
const SEEDS: [u64; HASHES] = [
    0xA076_1D64_78BD_642F,
    0xE703_7ED1_A0B4_28DB,
    0x8EBC_6AF0_9C88_C6E3,
];
/// Filter bits per key of a generation's capacity (before rounding up to a
/// power of two).
const BITS_PER_KEY: usize = 16;
/// Fewest keys a generation holds.
const MIN_GENERATION: usize = 8;

pub(crate) struct Ghost {
    /// `filters[current]` takes new keys; the other is the older generation.
    filters: [Box<[u64]>; 2],
    current: usize,
    /// Keys added to the current generation.
    added: usize,
    /// Keys the current generation takes before the next rotation.
    per_generation: usize,
}

impl Ghost {
    pub(crate) fn new() -> Self {
        Ghost {
            filters: [Box::new([]), Box::new([])],
            current: 0,
            added: 0,
            per_generation: 0,
        }
    }

    /// The word index and mask of each of the key's bits in a filter of
    /// `words` words (a power of two).
    #[inline]
    fn positions(words: usize, hash: u64) -> [(usize, u64); HASHES] {
        let shift = 64 - (words * 64).trailing_zeros();
        SEEDS.map(|seed| {
            let bit = (hash.wrapping_mul(seed) >> shift) as usize;
            (bit / 64, 1u64 << (bit % 64))
        })
    }

    fn holds(filter: &[u64], hash: u64) -> bool {
        !filter.is_empty()
            && Self::positions(filter.len(), hash)
                .iter()
                .all(|&(w, m)| filter[w] & m != 0)
    }

    /// True if the key with this hash was added not long ago (or, rarely,
    /// a false positive).
    pub(crate) fn contains(&self, hash: u64) -> bool {
        Self::holds(&self.filters[0], hash) || Self::holds(&self.filters[1], hash)
    }

    /// Adds a key. `remember` is how many recent keys the ghost should cover
    /// at least; a generation takes that many keys.
    pub(crate) fn insert(&mut self, hash: u64, remember: usize) {
        if self.added >= self.per_generation {
            self.rotate(remember.max(MIN_GENERATION));
        }
        let filter = &mut self.filters[self.current];
        for (w, m) in Self::positions(filter.len(), hash) {
            filter[w] |= m;
        }
        self.added += 1;
    }

    /// Starts a new generation sized for `keys` keys, dropping the oldest.
    fn rotate(&mut self, keys: usize) {
        let words = (keys * BITS_PER_KEY)
            .next_power_of_two()
            .div_ceil(64)
            .max(1);
        let older = 1 - self.current;
        if self.filters[older].len() == words {
            self.filters[older].fill(0);
        } else {
            self.filters[older] = vec![0u64; words].into_boxed_slice();
        }
        self.current = older;
        self.added = 0;
        self.per_generation = keys;
    }

    pub(crate) fn clear(&mut self) {
        *self = Ghost::new();
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        (self.filters[0].len() + self.filters[1].len()) * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> u64 {
        (i ^ 0x5555)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29)
    }

    #[test]
    fn remembers_between_one_and_two_generations() {
        let mut g = Ghost::new();
        for i in 0..3000 {
            g.insert(hash(i), 1000);
        }
        // Generations: 0..1000, 1000..2000, 2000..3000 (current).
        assert!((1000..3000).all(|i| g.contains(hash(i))));
        let stale = (0..1000).filter(|&i| g.contains(hash(i))).count();
        let unseen = (10_000..11_000).filter(|&i| g.contains(hash(i))).count();
        assert!(stale < 80, "{stale}");
        assert!(unseen < 80, "{unseen}");
        g.clear();
        assert!(!g.contains(hash(2999)));
        assert_eq!(g.heap_bytes(), 0);
    }
}
