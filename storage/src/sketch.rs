//! A compact frequency sketch: a count-min sketch of 4-bit counters, one per
//! shard, that estimates how often a key was requested recently. It only
//! changes under the shard's mutex (on inserts and evictions), never on a hit.
//!
//! Four rows of `width` counters, 16 counters to a `u64`. A key increments
//! one counter per row (only the rows holding the current minimum:
//! conservative update, which keeps collisions from inflating estimates);
//! its estimate is the smallest of the four. Counters saturate at 15. After
//! `10 x width` increments every counter is halved, so old popularity fades
//! and the estimate tracks the recent past.

/// Rows of the sketch; each uses a different multiplier on the key hash.
const ROWS: usize = 4;
const SEEDS: [u64; ROWS] = [
    0x9E37_79B9_7F4A_7C15,
    0xC2B2_AE3D_27D4_EB4F,
    0x1656_67B1_9E37_79F9,
    0xD6E8_FEB8_6659_FD93,
];
/// Smallest width (counters per row).
const MIN_WIDTH: usize = 64;
/// Increments between two halvings, per counter of a row.
const SAMPLE_FACTOR: usize = 10;
/// Largest counter value.
const MAX: u64 = 15;

pub(crate) struct Sketch {
    /// `ROWS * width / 16` words; row `r` occupies words `r * width / 16 ..`.
    table: Box<[u64]>,
    /// log2 of the width.
    shift: u32,
    additions: usize,
}

impl Sketch {
    pub(crate) fn new() -> Self {
        Sketch {
            table: Box::new([]),
            shift: 0,
            additions: 0,
        }
    }

    fn width(&self) -> usize {
        if self.table.is_empty() {
            0
        } else {
            1 << self.shift
        }
    }

    /// Grows the sketch to at least `counters` counters per row. Growing forgets the counts (they cannot be rehashed); it
    /// happens a logarithmic number of times while a shard fills.
    pub(crate) fn ensure(&mut self, counters: usize) {
        if counters <= self.width() {
            return;
        }
        let width = counters.next_power_of_two().max(MIN_WIDTH);
        self.shift = width.trailing_zeros();
        self.table = vec![0u64; ROWS * width / 16].into_boxed_slice();
        self.additions = 0;
    }

    /// Counter `(word, bit offset)` of `hash` in row `r`.
    #[inline]
    fn index(&self, hash: u64, r: usize) -> (usize, u32) {
        let i = (hash.wrapping_mul(SEEDS[r]) >> (64 - self.shift)) as usize;
        let counter = (r << self.shift) + i;
        (counter / 16, (counter % 16) as u32 * 4)
    }

    /// Estimated recent requests of the key with this hash (0..=15).
    pub(crate) fn estimate(&self, hash: u64) -> u8 {
        if self.table.is_empty() {
            return 0;
        }
        (0..ROWS)
            .map(|r| {
                let (w, b) = self.index(hash, r);
                (self.table[w] >> b) & MAX
            })
            .min()
            .unwrap_or(0) as u8
    }

    /// Records one request of the key with this hash.
    pub(crate) fn increment(&mut self, hash: u64) {
        if self.table.is_empty() {
            return;
        }
        let min = u64::from(self.estimate(hash));
        if min == MAX {
            return;
        }
        for r in 0..ROWS {
            let (w, b) = self.index(hash, r);
            if (self.table[w] >> b) & MAX == min {
                self.table[w] += 1 << b;
            }
        }
        self.additions += 1;
        if self.additions >= SAMPLE_FACTOR << self.shift {
            self.halve();
        }
    }

    fn halve(&mut self) {
        for w in self.table.iter_mut() {
            *w = (*w >> 1) & 0x7777_7777_7777_7777;
        }
        self.additions /= 2;
    }

    /// Forgets every count.
    pub(crate) fn clear(&mut self) {
        self.table.fill(0);
        self.additions = 0;
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        self.table.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(i: u64) -> u64 {
        i.wrapping_mul(0xA076_1D64_78BD_642F).rotate_left(17) ^ i
    }

    #[test]
    fn counts_saturate_and_halve() {
        let mut s = Sketch::new();
        s.ensure(1000);
        assert_eq!(s.estimate(hash(1)), 0);
        for n in 1..=20u8 {
            s.increment(hash(1));
            assert_eq!(s.estimate(hash(1)), n.min(15));
        }
        s.halve();
        assert_eq!(s.estimate(hash(1)), 7);
    }

    #[test]
    fn frequent_keys_stand_out_of_many_rare_ones() {
        let mut s = Sketch::new();
        s.ensure(1024);
        for round in 0..4 {
            for k in 0..1000u64 {
                s.increment(hash(k));
                if k < 50 {
                    s.increment(hash(k));
                    s.increment(hash(k));
                }
                let _ = round;
            }
        }
        let hot = (0..50).filter(|&k| s.estimate(hash(k)) >= 8).count();
        let cold = (50..1000).filter(|&k| s.estimate(hash(k)) >= 8).count();
        assert!(hot >= 48, "{hot}");
        assert!(cold <= 20, "{cold}");
    }
}
