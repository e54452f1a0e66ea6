//! Tag generations: invalidating a tag is one atomic increment, and every
//! entry that recorded an older generation of that tag stops being readable at
//! once. The registry only holds tags that some live entry or pending fill
//! uses, so its size is bounded by the store's contents, not by history.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_utils::CachePadded;
use foldhash::fast::FixedState;

use crate::entry::TagRef;

/// Shared state of one tag.
pub(crate) struct TagState {
    name: Box<[u8]>,
    generation: AtomicU64,
    /// Entries and pending fills that hold this tag; changed only under the
    /// registry shard's lock.
    users: AtomicUsize,
}

impl TagState {
    #[inline]
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn name(&self) -> &[u8] {
        &self.name
    }
}

/// Registry key: the shared state itself, hashed and compared by name, so a
/// tag's name is stored once.
struct TagKey(Arc<TagState>);

impl Borrow<[u8]> for TagKey {
    fn borrow(&self) -> &[u8] {
        &self.0.name
    }
}

impl Hash for TagKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.hash(state)
    }
}

impl PartialEq for TagKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for TagKey {}

type Shard = Mutex<HashSet<TagKey, FixedState>>;

/// Sharded registry of the tags in use.
pub(crate) struct TagRegistry {
    shards: Box<[Shard]>,
    hasher: FixedState,
    /// Bumped after every tag invalidation (after the tag's generation):
    /// while it has not moved, no tag changed, and readers skip the tags'
    /// own generations (see `EntryPtr::is_live_at`). Starts at 1.
    epoch: CachePadded<AtomicU64>,
}

impl TagRegistry {
    pub(crate) fn new(shards: usize) -> Self {
        TagRegistry {
            shards: (0..shards.next_power_of_two())
                .map(|_| Mutex::new(HashSet::with_hasher(FixedState::default())))
                .collect(),
            hasher: FixedState::with_seed(0x07a6_5eed),
            epoch: CachePadded::new(AtomicU64::new(1)),
        }
    }

    /// The store's tag epoch (Acquire: pairs with the Release bump in
    /// [`TagRegistry::invalidate`], so a reader that sees an epoch sees the
    /// generation bumps made before it).
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn shard(&self, name: &[u8]) -> &Shard {
        let h = std::hash::BuildHasher::hash_one(&self.hasher, name);
        &self.shards[(h as usize) & (self.shards.len() - 1)]
    }

    /// Registers one more user of `name` and returns a reference carrying the
    /// tag's current generation.
    pub(crate) fn acquire(&self, name: &[u8]) -> TagRef {
        let mut shard = lock(self.shard(name));
        let state = match shard.get(name) {
            Some(key) => Arc::clone(&key.0),
            None => {
                let state = Arc::new(TagState {
                    name: name.into(),
                    generation: AtomicU64::new(0),
                    users: AtomicUsize::new(0),
                });
                shard.insert(TagKey(Arc::clone(&state)));
                state
            }
        };
        state.users.fetch_add(1, Ordering::Relaxed);
        TagRef {
            generation: state.generation(),
            state,
        }
    }

    /// Drops one user of the tag; the tag leaves the registry with its last user.
    pub(crate) fn release(&self, tag: &TagRef) {
        let name = tag.state.name();
        let mut shard = lock(self.shard(name));
        if tag.state.users.fetch_sub(1, Ordering::Relaxed) == 1 {
            shard.remove(name);
        }
    }

    /// Advances the tag's generation. Returns false if no entry or pending
    /// fill uses the tag (then there is nothing to invalidate).
    pub(crate) fn invalidate(&self, name: &[u8]) -> bool {
        let shard = lock(self.shard(name));
        match shard.get(name) {
            Some(key) => {
                key.0.generation.fetch_add(1, Ordering::AcqRel);
                // After the generation: a reader that sees the new epoch
                // (Acquire) sees the new generation.
                self.epoch.fetch_add(1, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Number of tags in use.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// Heap bytes held by the registry (approximate: table slots, states, names).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = lock(s);
                s.capacity() * (std::mem::size_of::<TagKey>() + 1)
                    + s.iter().map(|k| k.0.name.len() + 56).sum::<usize>()
            })
            .sum()
    }
}

/// Locks a mutex, ignoring poisoning: every critical section in this crate
/// leaves its data consistent before anything that can panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidate_changes_generation_and_release_forgets() {
        let reg = TagRegistry::new(4);
        let a = reg.acquire(b"users");
        assert!(a.is_current());
        assert!(reg.invalidate(b"users"));
        assert!(!a.is_current());
        let b = reg.acquire(b"users");
        assert!(b.is_current());
        reg.release(&a);
        assert_eq!(reg.len(), 1);
        reg.release(&b);
        assert_eq!(reg.len(), 0);
        assert!(!reg.invalidate(b"users"));
    }

    #[test]
    fn the_epoch_moves_with_every_invalidation_and_only_then() {
        let reg = TagRegistry::new(4);
        let start = reg.epoch();
        let a = reg.acquire(b"a");
        assert_eq!(reg.epoch(), start);
        assert!(!reg.invalidate(b"unknown"));
        assert_eq!(reg.epoch(), start);
        assert!(reg.invalidate(b"a"));
        assert_eq!(reg.epoch(), start + 1);
        reg.release(&a);
    }
}
