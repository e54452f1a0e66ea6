//! One shard's eviction state: S3-FIFO over a slab of nodes.
//!
//! S3-FIFO keeps two FIFO queues and a ghost list. New entries enter the
//! small queue (3% of the shard's bytes); when they reach its head they
//! move to the main queue if they were read since insertion, and are evicted
//! otherwise, leaving their key fingerprint in the ghost list. A key that
//! comes back while its fingerprint is in the ghost list goes straight to the
//! main queue. The main queue is a CLOCK: an entry at its head with a non-zero
//! frequency is reinserted at the tail with the frequency decremented.
//!
//! A hit only sets the frequency byte in the entry, so reads never touch this
//! structure; it is changed under the shard's mutex by writers and evictors.

use std::collections::{HashMap, VecDeque};
use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use foldhash::fast::FixedState;

use crate::entry::{EntryPtr, Header};

pub(crate) const NIL: u32 = u32::MAX;

/// Share of a shard's bytes the small (probationary) queue may hold before
/// eviction takes from it. 3% beat the paper's 10% on every trace of
/// `benches/hit_ratio.rs` (docs/benchmarks.md).
const SMALL_PERCENT: usize = 3;
/// Size of the ghost list relative to the shard's resident entries. Half
/// the size was the best compromise between zipf traces and loops.
const GHOST_PERCENT: usize = 50;

/// Which queue a node is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Queue {
    Small,
    Main,
    Free,
}

struct Node {
    /// Non-owning: the map owns the block; a node is unlinked in the same
    /// critical section that removes its entry from the map.
    entry: Option<NonNull<Header>>,
    prev: u32,
    next: u32,
    charge: u32,
    queue: Queue,
}

#[derive(Default)]
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

/// Key fingerprints recently evicted from the small queue.
struct Ghost {
    fifo: VecDeque<u32>,
    counts: HashMap<u32, u16, FixedState>,
}

impl Ghost {
    fn new() -> Self {
        Ghost {
            fifo: VecDeque::new(),
            counts: HashMap::with_hasher(FixedState::default()),
        }
    }

    fn contains(&self, fp: u32) -> bool {
        self.counts.contains_key(&fp)
    }

    fn push(&mut self, fp: u32, cap: usize) {
        while self.fifo.len() >= cap.max(1) {
            let Some(old) = self.fifo.pop_front() else {
                break;
            };
            if let Some(c) = self.counts.get_mut(&old) {
                *c -= 1;
                if *c == 0 {
                    self.counts.remove(&old);
                }
            }
        }
        self.fifo.push_back(fp);
        *self.counts.entry(fp).or_insert(0) += 1;
    }

    fn clear(&mut self) {
        self.fifo.clear();
        self.counts.clear();
    }

    fn heap_bytes(&self) -> usize {
        self.fifo.capacity() * 4 + self.counts.capacity() * 7
    }
}

/// What the evictor should do with the node at a queue head.
pub(crate) enum Victim {
    /// Remove this entry (it was not read while it was in its queue).
    Evict(u32),
    /// Nothing left to evict.
    Empty,
}

/// The mutable state of one shard.
pub(crate) struct Shard {
    nodes: Vec<Node>,
    free: u32,
    small: List,
    main: List,
    ghost: Ghost,
    pub(crate) pending: Vec<Pending>,
    sweep_cursor: usize,
}

// SAFETY: the raw pointers are non-owning references to blocks that are Send
// + Sync; they are only dereferenced under the shard's mutex.
unsafe impl Send for Shard {}

impl Shard {
    pub(crate) fn new() -> Self {
        Shard {
            nodes: Vec::new(),
            free: NIL,
            small: List::new(),
            main: List::new(),
            ghost: Ghost::new(),
            pending: Vec::new(),
            sweep_cursor: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.small.len + self.main.len
    }

    /// Links a new entry at the tail of the small queue, or of the main
    /// queue if its key was recently evicted from the small queue.
    pub(crate) fn link(&mut self, entry: &EntryPtr, charge: usize, fingerprint: u32) -> u32 {
        let queue = if self.ghost.contains(fingerprint) {
            Queue::Main
        } else {
            Queue::Small
        };
        let node = Node {
            entry: Some(entry.as_raw()),
            prev: NIL,
            next: NIL,
            charge: charge.min(u32::MAX as usize) as u32,
            queue,
        };
        let slot = if self.free != NIL {
            let slot = self.free;
            self.free = self.nodes[slot as usize].next;
            self.nodes[slot as usize] = node;
            slot
        } else {
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        };
        self.push_tail(slot, queue);
        entry.header().slot.store(slot, Ordering::Relaxed);
        slot
    }

    /// Unlinks a node and frees its slot; returns its charge.
    pub(crate) fn unlink(&mut self, slot: u32) -> usize {
        self.detach(slot);
        let node = &mut self.nodes[slot as usize];
        let charge = node.charge as usize;
        node.entry = None;
        node.queue = Queue::Free;
        node.next = self.free;
        self.free = slot;
        charge
    }

    /// Records that the entry in `slot` was evicted for capacity from the
    /// small queue: its fingerprint joins the ghost list.
    pub(crate) fn remember(&mut self, slot: u32, fingerprint: u32) {
        if self.nodes[slot as usize].queue == Queue::Small {
            // The ghost remembers GHOST_PERCENT of as many keys as the shard
            // holds (it is full when it evicts).
            let cap = ((self.main.len + self.small.len) * GHOST_PERCENT / 100).max(16);
            self.ghost.push(fingerprint, cap);
        }
    }

    /// The entry in a linked slot.
    ///
    /// # Safety
    /// Call under the shard lock; the entry is in the map while linked.
    pub(crate) unsafe fn entry(&self, slot: u32) -> Option<&EntryPtr> {
        self.nodes[slot as usize]
            .entry
            .as_ref()
            // SAFETY: forwarded from the caller.
            .map(|raw| unsafe { EntryPtr::from_raw(raw) })
    }

    /// Picks the next victim, promoting and rotating as S3-FIFO says.
    /// `is_dead(entry)` short-cuts expired or invalidated entries to eviction.
    pub(crate) fn next_victim(&mut self, is_dead: impl Fn(&EntryPtr) -> bool) -> Victim {
        // Bounded: each rotation lowers a frequency (max 3) or moves a node
        // from small to main once.
        let mut budget = 4 * self.len() + 4;
        while budget > 0 {
            budget -= 1;
            let total = self.small.bytes + self.main.bytes;
            let from_small = self.small.len > 0
                && (self.small.bytes * 100 >= total * SMALL_PERCENT || self.main.len == 0);
            let slot = if from_small {
                self.small.head
            } else {
                self.main.head
            };
            if slot == NIL {
                return Victim::Empty;
            }
            // SAFETY: we are under the shard lock and the node is linked.
            let entry = unsafe {
                EntryPtr::from_raw(self.nodes[slot as usize].entry.as_ref().expect("linked"))
            };
            if is_dead(entry) {
                return Victim::Evict(slot);
            }
            let freq = &entry.header().freq;
            let f = freq.load(Ordering::Relaxed);
            if from_small {
                if f > 0 {
                    freq.store(0, Ordering::Relaxed);
                    self.detach(slot);
                    self.push_tail(slot, Queue::Main);
                    continue;
                }
                return Victim::Evict(slot);
            }
            if f > 0 {
                freq.store(f - 1, Ordering::Relaxed);
                self.detach(slot);
                self.push_tail(slot, Queue::Main);
                continue;
            }
            return Victim::Evict(slot);
        }
        // Every entry was hot; evict the main head regardless.
        match (self.main.head, self.small.head) {
            (NIL, NIL) => Victim::Empty,
            (NIL, s) => Victim::Evict(s),
            (m, _) => Victim::Evict(m),
        }
    }

    /// Returns up to `budget` linked slots starting at the sweep cursor,
    /// advancing it cyclically over the slab.
    pub(crate) fn sweep_slots(&mut self, budget: usize, out: &mut Vec<u32>) {
        let n = self.nodes.len();
        if n == 0 {
            return;
        }
        for _ in 0..budget.min(n) {
            let slot = self.sweep_cursor % n;
            self.sweep_cursor = (slot + 1) % n;
            if self.nodes[slot].entry.is_some() {
                out.push(slot as u32);
            }
        }
    }

    /// All linked slots (for flush).
    pub(crate) fn linked_slots(&self) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|&s| self.nodes[s as usize].entry.is_some())
            .collect()
    }

    /// Forgets the ghost history (after a flush).
    pub(crate) fn clear_ghost(&mut self) {
        self.ghost.clear();
    }

    /// Heap bytes of this shard's bookkeeping.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.ghost.heap_bytes()
            + self.pending.capacity() * std::mem::size_of::<Pending>()
    }

    fn list(&mut self, q: Queue) -> &mut List {
        match q {
            Queue::Small => &mut self.small,
            Queue::Main => &mut self.main,
            Queue::Free => unreachable!("free nodes are on no list"),
        }
    }

    fn push_tail(&mut self, slot: u32, q: Queue) {
        let charge = self.nodes[slot as usize].charge as usize;
        let list = self.list(q);
        let old_tail = list.tail;
        list.tail = slot;
        if list.head == NIL {
            list.head = slot;
        }
        list.len += 1;
        list.bytes += charge;
        if old_tail != NIL {
            self.nodes[old_tail as usize].next = slot;
        }
        let node = &mut self.nodes[slot as usize];
        node.prev = old_tail;
        node.next = NIL;
        node.queue = q;
    }

    fn detach(&mut self, slot: u32) {
        let (prev, next, q, charge) = {
            let n = &self.nodes[slot as usize];
            (n.prev, n.next, n.queue, n.charge as usize)
        };
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        }
        if next != NIL {
            self.nodes[next as usize].prev = prev;
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
