//! One shard's eviction state: S3-FIFO over the entries of the shard's key
//! index, with a frequency sketch deciding which keys returning from the
//! ghost list may displace an entry of the main queue.
//!
//! The queues are linked lists through the entries' headers. A link names
//! an entry by its slot in the key index (`table.rs`), which holds the
//! entry's block, so the shard keeps nothing per entry of its own. Slot
//! numbers change only when the index is rebuilt; the rebuild says where
//! each entry went and the shard renumbers every link ([`Shard::renumber`])
//! before anything reads them.
//!
//! S3-FIFO keeps two FIFO queues and a ghost list. New entries enter the
//! small queue (2% of the shard's bytes, 1% after a window in which none of
//! its entries was read: `SmallShare`); when they reach its head they
//! move to the main queue if they were read since insertion, and are evicted
//! otherwise, leaving their key in the ghost list. The main queue is a
//! CLOCK: an entry at its head with a non-zero frequency is reinserted at the
//! tail with the frequency decremented; the first one found at zero is the
//! main queue's victim.
//!
//! Three additions to the paper's algorithm:
//!
//! - While the store has room (nothing needs evicting), new entries go
//!   straight to the main queue: there is nothing to protect yet, and the
//!   first entries then stay put instead of draining through the small
//!   queue. This is what keeps a loop larger than the cache from missing on
//!   every request: FIFO order evicts a loop in exactly the order it comes
//!   back.
//! - Those entries are on probation: once the shard has evicted 16 times as
//!   many entries as it holds since the last of them was placed, any of them
//!   that reaches the main queue's head without having been read is evicted
//!   ahead of everything else. Otherwise a store that is written and rarely
//!   read would keep its first contents forever (the main queue only evicts
//!   when something is promoted into it) instead of its most recent ones.
//! - A key that comes back while it is in the ghost list is a candidate for
//!   the main queue. If the main queue is below its share it is admitted;
//!   otherwise its estimated frequency must beat that of the main queue's
//!   victim (ties go to the victim, as in TinyLFU), else it enters the small
//!   queue like a new key. Without this, on a loop every returning key would
//!   push out a resident one that is needed just as often.
//!
//! The frequencies come from a count-min sketch (`sketch.rs`) that records
//! an access when a key is inserted and when the CLOCK passes over an entry
//! that was read since it was last examined (its frequency byte is non-zero).
//! Hits themselves record nothing: a hit only sets the frequency byte in the
//! entry, so reads never touch this structure; it is changed under the
//! shard's mutex by writers and evictors.

use std::hash::BuildHasher;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use foldhash::fast::FixedState;

use crate::entry::{Borrowed, EntryPtr, Header};
use crate::ghost::Ghost;
use crate::sketch::Sketch;
use crate::store::entry_charge;
use crate::table::{Occupancy, Table, MAX_SLOTS};

/// End of a list. Slot indices are below it; the top bit of an entry's next
/// link (`Header::next`) says which queue it is on.
const NIL: u32 = 0x7FFF_FFFF;
const MAIN_BIT: u32 = 1 << 31;
/// Top bit of an entry's previous link (`Header::prev`): the entry entered
/// the main queue while the store was filling and has not been seen read
/// since.
const UNPROVEN_BIT: u32 = 1 << 31;

/// Share of a shard's bytes the small (probationary) queue may hold before
/// eviction takes from it, in permille. 2% beat the paper's 10% (and the 3%
/// used before) on the traces of `benches/hit_ratio.rs` taken together
/// (docs/benchmarks.md).
const SMALL_PERMILLE: usize = 20;
/// The small queue's share after a window in which nothing it held was read
/// (see [`SmallShare`]). A fixed 1% lost 1.6 points on the real trace at 500
/// entries; only when the small queue proves useless is it worth shrinking.
const SMALL_PERMILLE_UNREAD: usize = 10;
/// Small-queue evictions per window of [`SmallShare`], per resident entry.
const SMALL_WINDOW_TURNOVERS: usize = 2;
/// Keys one generation of the ghost list takes, relative to the shard's
/// resident entries; the ghost remembers one to two generations. 270% (up
/// from 50%, then 150% and 220%) lets keys whose reuse distance is a little
/// longer than the cache, as in the real block trace, come back as
/// main-queue candidates; 300% let a loop's returning keys push out its
/// resident prefix (docs/benchmarks.md).
const GHOST_PERCENT: usize = 270;
/// Sketch counters per row for each resident entry (rounded up to a power
/// of two). The sketch counts every key inserted, not only the resident
/// ones; at one counter per entry collisions blurred the frequencies that
/// admission compares. Four (as Caffeine and moka size theirs) gained up to
/// 1 point on every trace of `benches/hit_ratio.rs`.
const SKETCH_COUNTERS_PER_ENTRY: usize = 4;
/// Probation of entries placed in the main queue while the store was
/// filling: once the shard has made this many evictions per resident entry
/// since the last such placement, those never read are evicted first.
const PROBATION_TURNOVERS: u64 = 16;

/// The small queue's share, adapted to whether it earns its room: over each
/// window of `SMALL_WINDOW_TURNOVERS` x resident entries evicted unread from
/// the small queue, if none of its entries was read (promoted to main) the
/// next window gives it [`SMALL_PERMILLE_UNREAD`], otherwise
/// [`SMALL_PERMILLE`]. On a loop longer than the cache no entry is read
/// while in the small queue, so its room goes to the main queue, which holds
/// keys that are read.
struct SmallShare {
    permille: usize,
    evicted: usize,
    promoted: bool,
}

impl SmallShare {
    fn new() -> Self {
        SmallShare {
            permille: SMALL_PERMILLE,
            evicted: 0,
            promoted: false,
        }
    }

    /// An entry of the small queue was read and moves to main.
    fn promoted(&mut self) {
        self.promoted = true;
    }

    /// An entry of the small queue was evicted unread; `resident` is the
    /// shard's entry count.
    fn evicted_unread(&mut self, resident: usize) {
        self.evicted += 1;
        if self.evicted >= SMALL_WINDOW_TURNOVERS * resident {
            self.permille = if self.promoted {
                SMALL_PERMILLE
            } else {
                SMALL_PERMILLE_UNREAD
            };
            self.evicted = 0;
            self.promoted = false;
        }
    }

    /// Whether a small queue of `small` bytes out of `total` is at or over
    /// its share.
    fn full(&self, small: usize, total: usize) -> bool {
        small * 1000 >= total * self.permille
    }
}

/// Which queue a node is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Queue {
    Small,
    Main,
}

struct List {
    head: u32,
    tail: u32,
    len: usize,
    bytes: usize,
}

impl List {
    fn new() -> Self {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
            bytes: 0,
        }
    }
}

/// A fill that is in progress for a key of this shard.
pub(crate) struct Pending {
    pub(crate) id: u64,
    pub(crate) key: Box<[u8]>,
    pub(crate) stale: bool,
}

/// What the evictor should do with the node at a queue head.
pub(crate) enum Victim {
    /// Remove this entry (it was not read while it was in its queue, or it
    /// is expired or invalidated).
    Evict(u32),
    /// Nothing left to evict.
    Empty,
}

/// The mutable state of one shard.
pub(crate) struct Shard {
    /// This shard's key index, whose slots the links name.
    table: NonNull<Table>,
    small: List,
    main: List,
    ghost: Ghost,
    sketch: Sketch,
    /// The store's key hasher (same seed), for the hash of a resident key.
    hasher: FixedState,
    pub(crate) pending: Vec<Pending>,
    /// Occupancy of this shard's key index (`table.rs`), which only the
    /// holder of this shard's mutex writes.
    pub(crate) index: Occupancy,
    sweep_cursor: usize,
    unproven: usize,
    since_fill: u64,
    small_share: SmallShare,
}

// SAFETY: `table` is a non-owning reference to a `Table`, which is Send +
// Sync, read only under the shard's mutex.
unsafe impl Send for Shard {}

impl Shard {
    /// # Safety
    /// `table` is the index of this shard's keys and outlives the shard's
    /// use: every method reads it, under the shard's mutex.
    pub(crate) unsafe fn new(hasher: FixedState, table: &Table) -> Self {
        Shard {
            table: NonNull::from(table),
            small: List::new(),
            main: List::new(),
            ghost: Ghost::new(),
            sketch: Sketch::new(),
            hasher,
            pending: Vec::new(),
            index: Occupancy::default(),
            sweep_cursor: 0,
            unproven: 0,
            since_fill: 0,
            small_share: SmallShare::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.small.len + self.main.len
    }

    /// The key index whose slots the links name.
    #[inline]
    fn table(&self) -> &Table {
        // SAFETY: `Shard::new`'s contract.
        unsafe { self.table.as_ref() }
    }

    /// Links the entry the key index just stored in `slot` (`hash` is its
    /// key's hash, `charge` its charge) and records the access in the
    /// sketch. It goes to the main queue while the store is `filling` (has
    /// room without evicting), or if its key is in the ghost list and wins
    /// admission; otherwise to the small queue.
    pub(crate) fn link(
        &mut self,
        slot: u32,
        charge: usize,
        hash: u64,
        filling: bool,
        is_dead: impl Fn(&EntryPtr) -> bool,
    ) {
        debug_assert!((slot as usize) < MAX_SLOTS && slot != NIL);
        self.sketch
            .ensure((self.len() + 1) * SKETCH_COUNTERS_PER_ENTRY);
        self.sketch.increment(hash);
        let queue = if filling || (self.ghost.contains(hash) && self.admit(hash, charge, &is_dead))
        {
            Queue::Main
        } else {
            Queue::Small
        };
        let links = self.links(slot);
        let prev = if filling { NIL | UNPROVEN_BIT } else { NIL };
        links.prev.store(prev, Ordering::Relaxed);
        links.next.store(NIL, Ordering::Relaxed);
        self.push_tail(slot, queue, charge);
        if filling {
            self.unproven += 1;
            self.since_fill = 0;
        }
    }

    /// The key index was rebuilt: `moved[old]` is the new slot of the entry
    /// that was in slot `old`. Rewrites every link, the queues' ends and
    /// the sweep cursor; `unlinked` is the slot of the entry whose insert
    /// rebuilt the index, which has no links yet. Call before any other
    /// method reads a link.
    pub(crate) fn renumber(&mut self, moved: &[u32], unlinked: u32) {
        let map = |link: u32| {
            if link == NIL {
                NIL
            } else {
                let to = moved[link as usize];
                debug_assert_ne!(to, crate::table::MOVED_NOWHERE, "a link to an empty slot");
                to
            }
        };
        let table = self.table();
        for slot in 0..table.slot_count() as u32 {
            let Some(raw) = table.block_at(slot).filter(|_| slot != unlinked) else {
                continue;
            };
            // SAFETY: under the shard lock; a block in the index is alive.
            let links = unsafe { raw.as_ref() };
            let prev = links.prev.load(Ordering::Relaxed);
            links.prev.store(
                (prev & UNPROVEN_BIT) | map(prev & !UNPROVEN_BIT),
                Ordering::Relaxed,
            );
            let next = links.next.load(Ordering::Relaxed);
            links
                .next
                .store((next & MAIN_BIT) | map(next & !MAIN_BIT), Ordering::Relaxed);
        }
        for list in [&mut self.small, &mut self.main] {
            list.head = map(list.head);
            list.tail = map(list.tail);
        }
        self.sweep_cursor = self.sweep_cursor * self.table().slot_count() / moved.len().max(1);
    }

    /// The slot of a linked entry: its predecessor's next link, or the
    /// head of its queue (an entry keeps no slot of its own).
    pub(crate) fn slot_of(&self, entry: &EntryPtr) -> u32 {
        let links = entry.header();
        let prev = links.prev.load(Ordering::Relaxed) & !UNPROVEN_BIT;
        let slot = if prev != NIL {
            self.next(prev)
        } else if links.next.load(Ordering::Relaxed) & MAIN_BIT != 0 {
            self.main.head
        } else {
            self.small.head
        };
        debug_assert_eq!(self.table().block_at(slot), Some(entry.as_raw()));
        slot
    }

    /// Whether a key returning from the ghost list enters the main queue.
    fn admit(&mut self, hash: u64, charge: usize, is_dead: &impl Fn(&EntryPtr) -> bool) -> bool {
        // Main below its share: eviction takes from the small queue even
        // with the candidate in main, so no resident entry is displaced.
        let total = self.small.bytes + self.main.bytes + charge;
        if self.small_share.full(self.small.bytes, total) {
            return true;
        }
        let Some(victim) = self.main_victim(is_dead) else {
            return true;
        };
        // SAFETY: under the shard lock; the victim is linked.
        let victim = unsafe { self.entry_at(victim) };
        if is_dead(&victim) {
            return true;
        }
        let victim_hash = self.hasher.hash_one(victim.key());
        self.sketch.estimate(hash) > self.sketch.estimate(victim_hash)
    }

    /// Unlinks the entry in `slot`; returns its charge. Call while the key
    /// index still holds it there.
    pub(crate) fn unlink(&mut self, slot: u32) -> usize {
        // SAFETY: under the shard lock; the slot is linked.
        let charge = entry_charge(&*unsafe { self.entry_at(slot) });
        self.prove(slot);
        self.detach(slot, charge);
        charge
    }

    /// Records that the entry in `slot` is being evicted for capacity: if it
    /// is on the small queue, its key joins the ghost list.
    pub(crate) fn remember(&mut self, slot: u32) {
        if self.queue(slot) == Queue::Small {
            // SAFETY: under the shard lock; the slot is linked.
            let hash = self.hasher.hash_one(unsafe { self.entry_at(slot) }.key());
            let per_generation = self.len() * GHOST_PERCENT / 100;
            self.ghost.insert(hash, per_generation);
        }
    }

    /// The entry in a slot, if it is linked.
    ///
    /// # Safety
    /// Call under the shard lock, and use the entry only while it is in the
    /// index (linked).
    pub(crate) unsafe fn entry(&self, slot: u32) -> Option<Borrowed<'_>> {
        self.table()
            .block_at(slot)
            // SAFETY: forwarded from the caller.
            .map(|raw| unsafe { Borrowed::new(raw) })
    }

    /// The entry in a slot that is known to be linked.
    ///
    /// # Safety
    /// As [`Shard::entry`].
    unsafe fn entry_at(&self, slot: u32) -> Borrowed<'_> {
        // SAFETY: forwarded from the caller.
        unsafe { self.entry(slot) }.expect("linked")
    }

    /// Records in the sketch that the entry was read since the CLOCK last
    /// looked at it.
    fn credit(&mut self, slot: u32) {
        // SAFETY: under the shard lock; the slot is linked.
        let hash = self.hasher.hash_one(unsafe { self.entry_at(slot) }.key());
        self.sketch.increment(hash);
    }

    /// Picks the next victim, promoting and rotating as S3-FIFO says.
    /// `is_dead(entry)` short-cuts expired or invalidated entries to eviction.
    pub(crate) fn next_victim(&mut self, is_dead: impl Fn(&EntryPtr) -> bool) -> Victim {
        self.since_fill += 1;
        if self.unproven > 0 && self.since_fill >= PROBATION_TURNOVERS * self.len() as u64 {
            if let Some(slot) = self.unproven_victim() {
                return Victim::Evict(slot);
            }
        }
        // Each pass either returns or moves one node from small to main, so
        // the loop ends.
        loop {
            let total = self.small.bytes + self.main.bytes;
            let from_small = self.small.len > 0
                && (self.small_share.full(self.small.bytes, total) || self.main.len == 0);
            if !from_small {
                return match self.main_victim(&is_dead) {
                    Some(slot) => Victim::Evict(slot),
                    None => Victim::Empty,
                };
            }
            let slot = self.small.head;
            // SAFETY: under the shard lock; the head of a non-empty list is linked.
            let entry = unsafe { self.entry_at(slot) };
            if is_dead(&entry) {
                return Victim::Evict(slot);
            }
            if entry.header().freq() == 0 {
                let resident = self.len();
                self.small_share.evicted_unread(resident);
                return Victim::Evict(slot);
            }
            entry.header().set_freq(0);
            let charge = entry_charge(&entry);
            self.small_share.promoted();
            self.credit(slot);
            self.detach(slot, charge);
            self.push_tail(slot, Queue::Main, charge);
        }
    }

    /// Advances the main queue's CLOCK to its victim: the first entry at the
    /// head that is dead or was not read since the CLOCK last passed it.
    /// Entries passed over are reinserted at the tail with their frequency
    /// decremented, and credited in the sketch.
    fn main_victim(&mut self, is_dead: &impl Fn(&EntryPtr) -> bool) -> Option<u32> {
        // Bounded: each rotation lowers a frequency (max 3); concurrent hits
        // can raise them again, so stop after a few rounds regardless.
        let mut budget = 4 * self.main.len + 4;
        loop {
            let slot = self.main.head;
            if slot == NIL {
                return None;
            }
            // SAFETY: under the shard lock; the head of a list is linked.
            let entry = unsafe { self.entry_at(slot) };
            if is_dead(&entry) {
                return Some(slot);
            }
            let f = entry.header().freq();
            if f == 0 || budget == 0 {
                return Some(slot);
            }
            budget -= 1;
            self.rotate(slot, f);
        }
    }

    /// Moves a main-queue entry that was read (`freq` = `f` > 0) from the
    /// head to the tail: one CLOCK step.
    fn rotate(&mut self, slot: u32, f: u8) {
        // SAFETY: under the shard lock; the slot is linked.
        let entry = unsafe { self.entry_at(slot) };
        entry.header().set_freq(f - 1);
        self.credit(slot);
        self.prove(slot);
        // Moving within one list leaves its byte count unchanged.
        self.detach(slot, 0);
        self.push_tail(slot, Queue::Main, 0);
    }

    fn prove(&mut self, slot: u32) {
        if self.unproven(slot) {
            self.links(slot)
                .prev
                .fetch_and(!UNPROVEN_BIT, Ordering::Relaxed);
            self.unproven -= 1;
        }
    }

    /// The probation of entries placed in the main queue while the store was
    /// filling: looks at the main queue's head and returns it if it is such
    /// an entry and was never read. If it was read, it is rotated like any
    /// read entry and is no longer on probation.
    fn unproven_victim(&mut self) -> Option<u32> {
        loop {
            let slot = self.main.head;
            if slot == NIL || !self.unproven(slot) {
                return None;
            }
            // SAFETY: under the shard lock; the head of a list is linked.
            let f = unsafe { self.entry_at(slot) }.header().freq();
            if f == 0 {
                return Some(slot);
            }
            // Each pass proves one entry, so the loop ends.
            self.rotate(slot, f);
        }
    }

    /// Returns up to `budget` linked slots starting at the sweep cursor,
    /// advancing it cyclically over the key index's slots (looking at up to
    /// twice `budget` slots: at least half of them hold an entry, unless
    /// the shard has been shrinking).
    pub(crate) fn sweep_slots(&mut self, budget: usize, out: &mut Vec<u32>) {
        let n = self.table().slot_count();
        let start = out.len();
        for _ in 0..budget.saturating_mul(2).min(n) {
            let slot = self.sweep_cursor % n;
            self.sweep_cursor = (slot + 1) % n;
            if self.table().block_at(slot as u32).is_some() {
                out.push(slot as u32);
                if out.len() - start == budget {
                    break;
                }
            }
        }
    }

    /// All linked slots (for flush).
    pub(crate) fn linked_slots(&self) -> Vec<u32> {
        let table = self.table();
        (0..table.slot_count() as u32)
            .filter(|&s| table.block_at(s).is_some())
            .collect()
    }

    /// Forgets the ghost list and the frequencies (after a flush).
    pub(crate) fn clear_history(&mut self) {
        self.ghost.clear();
        self.sketch.clear();
    }

    /// Heap bytes of this shard's bookkeeping.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.ghost.heap_bytes()
            + self.sketch.heap_bytes()
            + self.pending.capacity() * std::mem::size_of::<Pending>()
    }

    fn list(&mut self, q: Queue) -> &mut List {
        match q {
            Queue::Small => &mut self.small,
            Queue::Main => &mut self.main,
        }
    }

    fn push_tail(&mut self, slot: u32, q: Queue, charge: usize) {
        let list = self.list(q);
        let old_tail = list.tail;
        list.tail = slot;
        if list.head == NIL {
            list.head = slot;
        }
        list.len += 1;
        list.bytes += charge;
        if old_tail != NIL {
            self.set_next(old_tail, slot);
        }
        self.set_prev(slot, old_tail);
        let next = match q {
            Queue::Small => NIL,
            Queue::Main => NIL | MAIN_BIT,
        };
        self.links(slot).next.store(next, Ordering::Relaxed);
    }

    fn detach(&mut self, slot: u32, charge: usize) {
        let (prev, next, q) = (self.prev(slot), self.next(slot), self.queue(slot));
        if prev != NIL {
            self.set_next(prev, next);
        }
        if next != NIL {
            self.set_prev(next, prev);
        }
        let list = self.list(q);
        if list.head == slot {
            list.head = next;
        }
        if list.tail == slot {
            list.tail = prev;
        }
        list.len -= 1;
        list.bytes -= charge;
    }
}

/// The queue links of linked slots, kept in their entries' headers.
impl Shard {
    /// The header of a linked slot's entry.
    #[inline]
    fn links(&self, slot: u32) -> &Header {
        let raw = self.table().block_at(slot).expect("linked");
        // SAFETY: the shard's methods run under its mutex, and a linked
        // slot's block is in the key index, so alive.
        unsafe { raw.as_ref() }
    }

    #[inline]
    fn next(&self, slot: u32) -> u32 {
        self.links(slot).next.load(Ordering::Relaxed) & !MAIN_BIT
    }

    #[inline]
    fn set_next(&self, slot: u32, next: u32) {
        let link = &self.links(slot).next;
        link.store(
            (link.load(Ordering::Relaxed) & MAIN_BIT) | next,
            Ordering::Relaxed,
        );
    }

    #[inline]
    fn prev(&self, slot: u32) -> u32 {
        self.links(slot).prev.load(Ordering::Relaxed) & !UNPROVEN_BIT
    }

    #[inline]
    fn set_prev(&self, slot: u32, prev: u32) {
        let link = &self.links(slot).prev;
        link.store(
            (link.load(Ordering::Relaxed) & UNPROVEN_BIT) | prev,
            Ordering::Relaxed,
        );
    }

    #[inline]
    fn unproven(&self, slot: u32) -> bool {
        self.links(slot).prev.load(Ordering::Relaxed) & UNPROVEN_BIT != 0
    }

    #[inline]
    fn queue(&self, slot: u32) -> Queue {
        if self.links(slot).next.load(Ordering::Relaxed) & MAIN_BIT != 0 {
            Queue::Main
        } else {
            Queue::Small
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_small_queue_shrinks_after_a_window_without_reads_and_grows_back_on_one() {
        let mut share = SmallShare::new();
        assert!(share.full(20, 1000) && !share.full(19, 1000));
        for _ in 0..SMALL_WINDOW_TURNOVERS * 100 - 1 {
            share.evicted_unread(100);
        }
        assert!(!share.full(19, 1000), "unchanged before the window ends");
        share.evicted_unread(100);
        assert!(share.full(10, 1000) && !share.full(9, 1000));
        share.promoted();
        for _ in 0..SMALL_WINDOW_TURNOVERS * 100 {
            share.evicted_unread(100);
        }
        assert!(share.full(20, 1000) && !share.full(19, 1000));
    }
}
