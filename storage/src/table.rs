//! The key index of one shard: an open-addressing table whose slots hold
//! the entry blocks' pointers themselves, so a hit is one probe and one
//! block (the key is compared in the block).
//!
//! ```text
//! slot (8 bytes):  block address (16-aligned) | 4-bit hash fragment
//!                  0 = empty, 1 = tombstone
//! ```
//!
//! Readers take no lock and write nothing: they load the current slot array
//! and probe linearly from the key's home slot until they find the key or an
//! empty slot, skipping slots whose fragment differs without touching their
//! block. Writers hold the shard's mutex (the caller's obligation, stated on
//! each method), so there is one writer per table at a time. A removed block
//! and a replaced slot array are retired to the store's `seize` collector
//! and freed once every reader that could have loaded them has left.
//!
//! Why readers never miss a key that stays present: a key's slot does not
//! move while it is present, and a slot between its home and its place only
//! goes from occupied to tombstone and back, never to empty (only a rebuild
//! makes empty slots, into a fresh array that is published whole). Why
//! probes end: at most 3/4 of the slots are occupied or tombstones, and a
//! retired array is never written again.
//!
//! Size: when 3/4 of the slots are in use (live or tombstone), the table is
//! rebuilt without the tombstones at twice as many slots as it has live
//! entries (at least 16), whatever that number is: slot counts are not
//! powers of two, and a key's home slot is the high half of its hash scaled
//! to the slot count (a multiply and a shift, as cheap as a mask). Right
//! after a rebuild half the slots are live, and the next rebuild comes after
//! at least half as many inserts as there are live entries, so rebuilds are
//! amortised. A table that is not shrinking keeps between 1/2 and 3/4 of its
//! slots live: 10.7 to 16 bytes per entry (a power-of-two table doubling at
//! 3/4 ranges from 1/4 to 3/4 live, 10.7 to 32 bytes).

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, Ordering};

use seize::{Collector, Guard};

use crate::entry::{Borrowed, EntryPtr, Header, VALUE_ALIGN};

/// Low address bits free in a block pointer (blocks are 16-byte aligned).
const FRAGMENT_MASK: usize = VALUE_ALIGN - 1;
/// A removed entry's slot. Below any block address, and not empty.
const TOMBSTONE: usize = 1;
/// Slots of a new table.
const MIN_SLOTS: usize = 16;
/// Most slots a table has: slot numbers stay below 2^31, so that the
/// shard's queue links (`shard.rs`), which name entries by their slot here,
/// keep their top bit for flags.
pub(crate) const MAX_SLOTS: usize = 1 << 31;
/// In the map a rebuild returns: the old slot held no entry.
pub(crate) const MOVED_NOWHERE: u32 = u32::MAX;

/// What [`Table::insert`] did: the slot the entry took and, if the table
/// was rebuilt on the way, the new slot of every entry by its old slot.
/// Slot numbers change only at a rebuild: a key keeps its slot while it is
/// present, and a replaced key's new block takes the old one's.
pub(crate) struct Inserted {
    pub(crate) slot: u32,
    pub(crate) moved: Option<Box<[u32]>>,
}

/// One slot array. Replaced whole (never resized in place), so a reader
/// that loaded it can finish its probe in it.
struct Slots {
    slots: Box<[AtomicPtr<u8>]>,
}

impl Slots {
    fn new(len: usize) -> Box<Slots> {
        assert!(
            (MIN_SLOTS..MAX_SLOTS).contains(&len),
            "key index of {len} slots"
        );
        Box::new(Slots {
            slots: (0..len).map(|_| AtomicPtr::new(ptr::null_mut())).collect(),
        })
    }

    /// The slot after `i` on a probe sequence (linear, wrapping).
    #[inline]
    fn next(&self, i: usize) -> usize {
        let i = i + 1;
        if i == self.slots.len() {
            0
        } else {
            i
        }
    }
}

/// Where a key is, or where it would go.
enum Probe {
    /// The key is in this slot, holding this block.
    Found(usize, NonNull<Header>),
    /// Not present; this is the first free (empty or tombstone) slot on
    /// its probe sequence.
    Vacant(usize),
}

/// Writer-side occupancy of a table, kept in the shard (under its mutex)
/// so that readers' cache lines are not written on every insert.
#[derive(Default)]
pub(crate) struct Occupancy {
    live: usize,
    used: usize,
}

/// The index of one shard. See the module documentation.
pub(crate) struct Table {
    current: AtomicPtr<Slots>,
}

/// The first slot probed for `hash` in a table of `len` slots.
#[inline]
fn home(hash: u64, len: usize) -> usize {
    // The shard index takes the hash's low bits; the slot takes the high
    // half, scaled to `len` (< 2^32): `floor(high / 2^32 * len)`.
    (((hash >> 32) * len as u64) >> 32) as usize
}

#[inline]
fn fragment(hash: u64) -> usize {
    (hash >> 28) as usize & FRAGMENT_MASK
}

/// `a == b`, without a call to `memcmp` for keys of up to 16 bytes (most
/// cache keys): two overlapping word compares. The call and its dispatch
/// cost about as much as the rest of the probe.
#[inline(always)]
fn same_key(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Loads of the first and last `W` bytes (overlapping when n < 2W).
    macro_rules! ends {
        ($t:ty, $w:expr) => {{
            let head = |s: &[u8]| <$t>::from_ne_bytes(s[..$w].try_into().unwrap());
            let tail = |s: &[u8]| <$t>::from_ne_bytes(s[n - $w..].try_into().unwrap());
            head(a) == head(b) && tail(a) == tail(b)
        }};
    }
    match n {
        0 => true,
        1..=3 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..=7 => ends!(u32, 4),
        8..=16 => ends!(u64, 8),
        _ => a == b,
    }
}

/// A view of a block the table holds.
///
/// # Safety
/// `raw` must point to a live block for as long as the result is used.
#[inline]
unsafe fn view<'a>(raw: NonNull<Header>) -> Borrowed<'a> {
    // SAFETY: forwarded from this function's contract.
    unsafe { Borrowed::new(raw) }
}

impl Table {
    pub(crate) fn new() -> Table {
        Table {
            current: AtomicPtr::new(Box::into_raw(Slots::new(MIN_SLOTS))),
        }
    }

    /// The live block stored under `key`, if any, valid while `guard` is.
    /// Takes no lock and writes nothing.
    #[inline]
    pub(crate) fn get<'g>(
        &self,
        hash: u64,
        key: &[u8],
        guard: &'g impl Guard,
    ) -> Option<Borrowed<'g>> {
        // SAFETY: the array pointer is never null, and `guard` keeps a
        // retired array alive until it is dropped.
        let slots = unsafe { &*guard.protect(&self.current, Ordering::Acquire) };
        let fragment = fragment(hash);
        let mut i = home(hash, slots.slots.len());
        loop {
            // Acquire: pairs with the writer's Release store, so the block's
            // contents written before it was published are visible.
            let value = guard.protect(&slots.slots[i], Ordering::Acquire);
            let addr = value.addr();
            if addr == 0 {
                return None;
            }
            if addr & FRAGMENT_MASK == fragment && addr > FRAGMENT_MASK {
                let raw = value.map_addr(|a| a & !FRAGMENT_MASK).cast::<Header>();
                // SAFETY: a slot holds a block address or a marker below 16;
                // the block was live when loaded and `guard` keeps it from
                // being freed (blocks are retired to the same collector).
                let entry = unsafe { view::<'g>(NonNull::new_unchecked(raw)) };
                if same_key(entry.key(), key) {
                    return Some(entry);
                }
            }
            i = slots.next(i);
        }
    }

    /// Finds `key` for a writer.
    fn probe(slots: &Slots, hash: u64, key: &[u8]) -> Probe {
        let fragment = fragment(hash);
        let mut i = home(hash, slots.slots.len());
        let mut vacant = None;
        loop {
            let value = slots.slots[i].load(Ordering::Relaxed);
            let addr = value.addr();
            if addr == 0 {
                return Probe::Vacant(vacant.unwrap_or(i));
            }
            if addr == TOMBSTONE {
                vacant.get_or_insert(i);
            } else if addr & FRAGMENT_MASK == fragment {
                let raw = value.map_addr(|a| a & !FRAGMENT_MASK).cast::<Header>();
                // SAFETY: under the shard lock, a stored block is live.
                let entry = unsafe { view(NonNull::new_unchecked(raw)) };
                if entry.key() == key {
                    return Probe::Found(i, entry.as_raw());
                }
            }
            i = slots.next(i);
        }
    }

    /// Stores `entry` under its key, replacing (and retiring) the block
    /// stored there before. `hash_of` recomputes a stored key's hash when
    /// the table is rebuilt. Returns the slot it took and, if the table was
    /// rebuilt first, where every entry went (see [`Inserted`]).
    ///
    /// # Safety
    /// The caller holds the shard's mutex (the only writer), `occupancy` is
    /// this table's, and `collector` is the one readers' guards come from.
    pub(crate) unsafe fn insert(
        &self,
        occupancy: &mut Occupancy,
        hash: u64,
        entry: EntryPtr,
        collector: &Collector,
        hash_of: impl Fn(&[u8]) -> u64,
    ) -> Inserted {
        // SAFETY: only the lock holder replaces the array.
        let mut slots = unsafe { &*self.current.load(Ordering::Acquire) };
        let mut probe = Self::probe(slots, hash, entry.key());
        let mut moved = None;
        if let Probe::Vacant(i) = probe {
            let tombstone = slots.slots[i].load(Ordering::Relaxed).addr() == TOMBSTONE;
            if !tombstone && (occupancy.used + 1) * 4 > slots.slots.len() * 3 {
                // SAFETY: forwarded from this method's contract.
                let (fresh, map) = unsafe { self.rebuild(occupancy, collector, &hash_of) };
                slots = fresh;
                moved = Some(map);
                probe = Self::probe(slots, hash, entry.key());
            }
        }
        let value = entry
            .as_raw()
            .as_ptr()
            .cast::<u8>()
            .map_addr(|a| a | fragment(hash));
        std::mem::forget(entry); // the table now owns this count
        let slot = match probe {
            Probe::Found(i, old) => {
                // Release: the new block's contents before its address.
                slots.slots[i].store(value, Ordering::Release);
                // SAFETY: `old` is no longer reachable from the table.
                unsafe { retire_block(collector, old) };
                i
            }
            Probe::Vacant(i) => {
                if slots.slots[i].load(Ordering::Relaxed).addr() != TOMBSTONE {
                    occupancy.used += 1;
                }
                occupancy.live += 1;
                slots.slots[i].store(value, Ordering::Release);
                i
            }
        };
        Inserted {
            slot: slot as u32,
            moved,
        }
    }

    /// The block in `slot`, if the slot holds one (not empty, not a
    /// tombstone). For the writer: call under the shard's mutex, and use
    /// the block only while it is in the table.
    #[inline]
    pub(crate) fn block_at(&self, slot: u32) -> Option<NonNull<Header>> {
        // SAFETY: only the lock holder replaces the array, and the caller
        // holds the lock.
        let slots = unsafe { &*self.current.load(Ordering::Acquire) };
        let value = slots.slots[slot as usize].load(Ordering::Relaxed);
        if value.addr() <= FRAGMENT_MASK {
            return None;
        }
        NonNull::new(value.map_addr(|a| a & !FRAGMENT_MASK).cast::<Header>())
    }

    /// Slots of the current array (live, tombstones and empty). For the
    /// writer, under the shard's mutex.
    pub(crate) fn slot_count(&self) -> usize {
        // SAFETY: as in `block_at`.
        unsafe { &*self.current.load(Ordering::Acquire) }
            .slots
            .len()
    }

    /// Removes the block stored under `key` (retiring it: readers that hold
    /// it keep reading it). Returns whether there was one.
    ///
    /// # Safety
    /// As for [`Table::insert`].
    pub(crate) unsafe fn remove(
        &self,
        occupancy: &mut Occupancy,
        hash: u64,
        key: &[u8],
        collector: &Collector,
    ) -> bool {
        // SAFETY: only the lock holder replaces the array.
        let slots = unsafe { &*self.current.load(Ordering::Acquire) };
        match Self::probe(slots, hash, key) {
            Probe::Found(i, old) => {
                // Relaxed is enough: a reader that sees the tombstone reads
                // nothing through it.
                slots.slots[i].store(ptr::without_provenance_mut(TOMBSTONE), Ordering::Relaxed);
                occupancy.live -= 1;
                // SAFETY: `old` is no longer reachable from the table.
                unsafe { retire_block(collector, old) };
                true
            }
            Probe::Vacant(_) => false,
        }
    }

    /// Publishes a fresh array holding the live entries in twice as many
    /// slots and retires the old one. Returns the array and, for each old
    /// slot, the new slot of its entry ([`MOVED_NOWHERE`] for a slot that
    /// held none).
    ///
    /// # Safety
    /// As for [`Table::insert`].
    unsafe fn rebuild(
        &self,
        occupancy: &mut Occupancy,
        collector: &Collector,
        hash_of: &impl Fn(&[u8]) -> u64,
    ) -> (&Slots, Box<[u32]>) {
        let old_ptr = self.current.load(Ordering::Acquire);
        // SAFETY: only the lock holder replaces the array.
        let old = unsafe { &*old_ptr };
        let fresh = Slots::new((occupancy.live * 2).max(MIN_SLOTS));
        let mut moved = vec![MOVED_NOWHERE; old.slots.len()].into_boxed_slice();
        for (from, slot) in old.slots.iter().enumerate() {
            let value = slot.load(Ordering::Relaxed);
            if value.addr() <= FRAGMENT_MASK {
                continue;
            }
            let raw = value.map_addr(|a| a & !FRAGMENT_MASK).cast::<Header>();
            // SAFETY: under the shard lock, a stored block is live.
            let hash = hash_of(unsafe { view(NonNull::new_unchecked(raw)) }.key());
            let mut i = home(hash, fresh.slots.len());
            while !fresh.slots[i].load(Ordering::Relaxed).is_null() {
                i = fresh.next(i);
            }
            fresh.slots[i].store(value, Ordering::Relaxed);
            moved[from] = i as u32;
        }
        occupancy.used = occupancy.live;
        let fresh = Box::into_raw(fresh);
        // Release: the array's contents before its address.
        self.current.store(fresh, Ordering::Release);
        // SAFETY: the old array is unreachable for new readers; it came from
        // `Box::into_raw`, and current readers are protected by their guards.
        unsafe { collector.retire(old_ptr, seize::reclaim::boxed) };
        // SAFETY: just published; only this writer replaces it.
        (unsafe { &*fresh }, moved)
    }

    /// Heap bytes of the slot array.
    pub(crate) fn heap_bytes(&self) -> usize {
        // SAFETY: called under the shard lock or with exclusive access.
        let slots = unsafe { &*self.current.load(Ordering::Acquire) };
        std::mem::size_of::<Slots>() + slots.slots.len() * std::mem::size_of::<AtomicPtr<u8>>()
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: exclusive access: no reader or writer is left.
        let slots = unsafe { Box::from_raw(*self.current.get_mut()) };
        for slot in slots.slots.iter() {
            let value = slot.load(Ordering::Relaxed);
            if value.addr() > FRAGMENT_MASK {
                let raw = value.map_addr(|a| a & !FRAGMENT_MASK).cast::<Header>();
                // SAFETY: the table owns one count of every stored block.
                drop(unsafe { EntryPtr::from_owned_raw(NonNull::new_unchecked(raw)) });
            }
        }
    }
}

/// Hands the table's count of a block to the collector, which drops it once
/// no reader can hold the block.
///
/// # Safety
/// `raw` is a block the table owned one count of and no longer references.
unsafe fn retire_block(collector: &Collector, raw: NonNull<Header>) {
    unsafe fn reclaim(raw: *mut Header, _: &Collector) {
        // SAFETY: retired once, with the table's count.
        drop(unsafe { EntryPtr::from_owned_raw(NonNull::new_unchecked(raw)) });
    }
    // SAFETY: forwarded from this function's contract.
    unsafe { collector.retire(raw.as_ptr(), reclaim) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::NEVER;

    fn block(key: &[u8]) -> EntryPtr {
        EntryPtr::new(key, b"value", Vec::new(), NEVER, 0, false)
    }

    struct Fixture {
        table: Table,
        occupancy: Occupancy,
        collector: Collector,
        hash_of: fn(&[u8]) -> u64,
    }

    impl Fixture {
        fn new(hash_of: fn(&[u8]) -> u64) -> Self {
            Fixture {
                table: Table::new(),
                occupancy: Occupancy::default(),
                collector: Collector::new(),
                hash_of,
            }
        }

        fn insert(&mut self, key: &[u8]) -> Inserted {
            let hash = (self.hash_of)(key);
            // SAFETY: the fixture is the only writer; guards come from its collector.
            unsafe {
                self.table.insert(
                    &mut self.occupancy,
                    hash,
                    block(key),
                    &self.collector,
                    self.hash_of,
                )
            }
        }

        fn key_at(&self, slot: u32) -> Option<Vec<u8>> {
            let raw = self.table.block_at(slot)?;
            // SAFETY: the fixture holds the block in its table.
            Some(unsafe { view(raw) }.key().to_vec())
        }

        fn remove(&mut self, key: &[u8]) -> bool {
            let hash = (self.hash_of)(key);
            // SAFETY: as in `insert`.
            unsafe {
                self.table
                    .remove(&mut self.occupancy, hash, key, &self.collector)
            }
        }

        fn contains(&self, key: &[u8]) -> bool {
            let guard = self.collector.enter();
            self.table
                .get((self.hash_of)(key), key, &guard)
                .is_some_and(|e| e.key() == key)
        }

        fn slots(&self) -> usize {
            // SAFETY: no writer runs concurrently.
            unsafe { &*self.table.current.load(Ordering::Acquire) }
                .slots
                .len()
        }
    }

    fn good_hash(key: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&foldhash::fast::FixedState::with_seed(7), key)
    }

    /// Every key lands on the same home slot with the same fragment.
    fn constant_hash(_: &[u8]) -> u64 {
        0x0123_4567_89ab_cdef
    }

    #[test]
    fn keys_are_equal_exactly_when_their_bytes_are() {
        let samples: Vec<Vec<u8>> = (0..=40)
            .flat_map(|n| {
                let base: Vec<u8> = (0..n as u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
                let mut variants = vec![base.clone()];
                for i in 0..n {
                    let mut v = base.clone();
                    v[i] ^= 1;
                    variants.push(v);
                }
                variants
            })
            .collect();
        for a in &samples {
            for b in &samples {
                assert_eq!(same_key(a, b), a == b, "{a:?} vs {b:?}");
            }
        }
    }

    fn key(i: usize) -> Vec<u8> {
        format!("key:{i}").into_bytes()
    }

    #[test]
    fn finds_what_it_holds_and_nothing_else_as_it_grows() {
        let mut t = Fixture::new(good_hash);
        for i in 0..10_000 {
            t.insert(&key(i));
        }
        assert_eq!(t.occupancy.live, 10_000);
        assert!(t.occupancy.used * 4 <= t.slots() * 3, "at most 3/4 used");
        assert!(t.slots() <= 10_000 * 2, "at least 1/2 live while growing");
        assert!((0..10_000).all(|i| t.contains(&key(i))));
        assert!((10_000..20_000).all(|i| !t.contains(&key(i))));
    }

    #[test]
    fn every_key_is_found_at_the_slot_its_insert_named_across_rebuilds() {
        let mut t = Fixture::new(good_hash);
        let mut at: Vec<u32> = Vec::new();
        let mut rebuilds = 0;
        for i in 0..5_000 {
            let inserted = t.insert(&key(i));
            if let Some(moved) = inserted.moved {
                rebuilds += 1;
                for slot in at.iter_mut() {
                    *slot = moved[*slot as usize];
                    assert_ne!(*slot, MOVED_NOWHERE, "a present key was not moved");
                }
            }
            at.push(inserted.slot);
        }
        assert!(rebuilds > 5, "{rebuilds} rebuilds");
        for (i, &slot) in at.iter().enumerate() {
            assert_eq!(t.key_at(slot), Some(key(i)));
        }
        // A replaced key keeps its slot; a removed one leaves its slot empty
        // of blocks (a tombstone).
        assert_eq!(t.insert(&key(7)).slot, at[7]);
        assert!(t.remove(&key(8)));
        assert_eq!(t.key_at(at[8]), None);
        let live = (0..t.table.slot_count() as u32)
            .filter(|&s| t.key_at(s).is_some())
            .count();
        assert_eq!(live, 4_999);
    }

    #[test]
    fn replacing_a_key_keeps_one_slot() {
        let mut t = Fixture::new(good_hash);
        t.insert(b"a");
        t.insert(b"a");
        assert_eq!(t.occupancy.live, 1);
        assert_eq!(t.occupancy.used, 1);
        assert!(t.contains(b"a"));
        assert!(t.remove(b"a"));
        assert!(!t.contains(b"a"));
        assert!(!t.remove(b"a"));
    }

    #[test]
    fn removals_leave_tombstones_that_inserts_reuse_and_rebuilds_clear() {
        let mut t = Fixture::new(good_hash);
        for i in 0..1_000 {
            t.insert(&key(i));
        }
        let slots = t.slots();
        for i in 0..1_000 {
            assert!(t.remove(&key(i)));
        }
        assert_eq!(t.occupancy.live, 0);
        // Churn through many distinct keys with 1,000 live at a time: the
        // table rebuilds in place rather than growing.
        for i in 1_000..100_000 {
            t.insert(&key(i));
            if i >= 2_000 {
                assert!(t.remove(&key(i - 1_000)));
            }
        }
        assert_eq!(t.occupancy.live, 1_000);
        assert!((99_000..100_000).all(|i| t.contains(&key(i))));
        assert!(t.slots() <= 2_000, "{} slots, was {slots}", t.slots());
        assert!(t.occupancy.used * 4 <= t.slots() * 3);
    }

    #[test]
    fn the_slot_count_follows_the_live_entries_down_as_well_as_up() {
        let mut t = Fixture::new(good_hash);
        for i in 0..10_000 {
            t.insert(&key(i));
        }
        assert!(t.slots() > 10_000);
        // Keep 100 of them, then churn: the next rebuild sizes the table
        // for the 100 that are live, not for the 10,000 it once held.
        for i in 100..10_000 {
            assert!(t.remove(&key(i)));
        }
        let mut i = 10_000;
        while t.slots() > 2 * 101 && i < 200_000 {
            t.insert(&key(i));
            assert!(t.remove(&key(i)));
            i += 1;
        }
        assert!(t.slots() <= 2 * 101, "{} slots for 100 live", t.slots());
        assert_eq!(t.occupancy.live, 100);
        assert!((0..100).all(|i| t.contains(&key(i))));
        assert!((100..i).all(|i| !t.contains(&key(i))));
    }

    #[test]
    fn home_slots_cover_every_slot_of_any_length() {
        for len in [16usize, 17, 24, 1_000, 65_537] {
            assert_eq!(home(0, len), 0);
            assert_eq!(home(u64::MAX, len), len - 1);
            let mut seen = vec![false; len];
            for h in 0..len as u64 * 4 {
                seen[home(h.wrapping_mul(0x9E37_79B9_7F4A_7C15), len)] = true;
            }
            let hit = seen.iter().filter(|&&s| s).count();
            assert!(hit * 10 >= len * 9, "{hit} of {len} slots reached");
        }
    }

    #[test]
    fn keys_that_all_collide_are_told_apart_by_their_bytes() {
        let mut t = Fixture::new(constant_hash);
        for i in 0..200 {
            t.insert(&key(i));
        }
        for i in (0..200).step_by(2) {
            assert!(t.remove(&key(i)));
        }
        for i in 0..200 {
            assert_eq!(t.contains(&key(i)), i % 2 == 1, "key {i}");
        }
        for i in (0..200).step_by(2) {
            t.insert(&key(i));
        }
        assert!((0..200).all(|i| t.contains(&key(i))));
        assert_eq!(t.occupancy.live, 200);
    }

    #[test]
    fn a_reader_keeps_a_removed_block_readable_until_it_leaves() {
        let mut t = Fixture::new(good_hash);
        t.insert(b"k");
        let Fixture {
            table,
            mut occupancy,
            collector,
            ..
        } = t;
        let guard = collector.enter();
        let seen = table.get(good_hash(b"k"), b"k", &guard).unwrap().as_raw();
        // The writer runs on another thread and retires the block.
        std::thread::scope(|s| {
            s.spawn(|| {
                let _writer = collector.enter();
                // SAFETY: this thread is the only writer.
                assert!(unsafe { table.remove(&mut occupancy, good_hash(b"k"), b"k", &collector) });
            });
        });
        // SAFETY: `guard` was active when the block was loaded.
        assert_eq!(unsafe { Borrowed::new(seen) }.key(), b"k");
        assert!(table.get(good_hash(b"k"), b"k", &guard).is_none());
        drop(guard);
    }
}
