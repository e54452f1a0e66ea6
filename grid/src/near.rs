//! Near copies: keeping another node's bytes for a key in this process's
//! store, and the stamps that tell whether an invalidation overtook them.
//!
//! A fetch from the owner is a race with invalidations arriving here: the
//! reply may carry a value that an invalidation applied here *while the
//! request was in flight* has already condemned. The tags of the value are
//! only known from the reply, so a fill ticket taken before sending cannot
//! name them. Instead the grid keeps stamps: one counter bumped by every tag
//! invalidation and flush, and 64 counters bumped by key invalidations and
//! writes (by a hash of the key). The reader snapshots the key's stamps
//! before sending, takes a fill ticket with the reply's tags when the reply
//! arrives, and keeps the copy only if the stamps are unchanged *after* the
//! ticket was taken:
//! - an invalidation that bumped a stamp before that check is seen, and the
//!   reply is dropped;
//! - one that bumps it after the check changes the store only after its bump
//!   (`GridInner::apply` bumps first), so after the ticket was taken, and the
//!   store refuses the fill (or hides the entry) by the ticket's rules.
//!
//! Every stamp access is `SeqCst`: the argument needs the bump, the ticket
//! and the check in one total order.
//!
//! A stamp also says whether this node kept copies when it was taken: a
//! process that has just started keeps none until every process that could
//! invalidate them sends it its invalidations (cluster/copy_gate.rs). Only
//! an operation that began after that keeps what it fetched, put or loaded;
//! one that began before still answers with the owner's value.

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hydracache_storage::{Expiry, FillOutcome, Store};

use crate::codec::{CacheValue, Codec};
use crate::error::CacheError;
use crate::grid::GridInner;
use crate::remote::{Fetched, Remote, RemoteEntry};

const KEY_STAMPS: usize = 64;

/// Counters bumped by invalidations, read around a remote fetch.
pub(crate) struct Stamps {
    all: AtomicU64,
    keys: [AtomicU64; KEY_STAMPS],
    copies: AtomicBool,
    /// A tag or flush invalidation applied here may not have reached every
    /// owner yet (set by the cluster runtime: cluster/settling.rs).
    unsettled: AtomicBool,
    /// This process's own tag and flush invalidations whose fan-out has
    /// not ended.
    own_unsettled: AtomicU64,
}

/// A snapshot of the stamps that concern one key. Two snapshots are equal
/// when no invalidation came between them, whatever they say of copies.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stamp {
    all: u64,
    key: u64,
    copies: bool,
}

impl PartialEq for Stamp {
    fn eq(&self, other: &Stamp) -> bool {
        self.all == other.all && self.key == other.key
    }
}

impl Eq for Stamp {}

impl Stamp {
    /// This node kept copies when the stamp was taken.
    pub(crate) fn keeps_copies(&self) -> bool {
        self.copies
    }

    /// Whether an operation that began under `other` may share the
    /// outcome of one that began under this stamp: no invalidation came
    /// between, and the copy gate said the same to both (a caller after the
    /// gate opened must not keep a reply to a request sent before).
    #[cfg(feature = "cluster")]
    pub(crate) fn same_flight(&self, other: &Stamp) -> bool {
        self == other && self.copies == other.copies
    }
}

impl Default for Stamps {
    fn default() -> Self {
        Stamps {
            all: AtomicU64::new(0),
            keys: std::array::from_fn(|_| AtomicU64::new(0)),
            copies: AtomicBool::new(false),
            unsettled: AtomicBool::new(false),
            own_unsettled: AtomicU64::new(0),
        }
    }
}

impl Stamps {
    fn slot(key: &str) -> usize {
        let h = BuildHasherDefault::<DefaultHasher>::default().hash_one(key);
        (h % KEY_STAMPS as u64) as usize
    }

    /// Before a key is invalidated or written.
    pub(crate) fn bump_key(&self, key: &str) {
        self.keys[Self::slot(key)].fetch_add(1, Ordering::SeqCst);
    }

    /// Before tags are invalidated or the store is flushed.
    pub(crate) fn bump_all(&self) {
        self.all.fetch_add(1, Ordering::SeqCst);
    }

    /// What concerns `key` now.
    pub(crate) fn of(&self, key: &str) -> Stamp {
        Stamp {
            all: self.all.load(Ordering::SeqCst),
            key: self.keys[Self::slot(key)].load(Ordering::SeqCst),
            copies: self.copies.load(Ordering::SeqCst)
                && !self.unsettled.load(Ordering::SeqCst)
                && self.own_unsettled.load(Ordering::SeqCst) == 0,
        }
    }

    /// Whether a tag or flush invalidation applied here may not have
    /// reached every owner yet: operations that begin meanwhile keep
    /// nothing (cluster/settling.rs).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn set_unsettled(&self, unsettled: bool) {
        self.unsettled.store(unsettled, Ordering::SeqCst);
    }

    /// One of this process's own tag or flush invalidations starts: until
    /// the guard drops (its fan-out ended), operations that begin keep
    /// nothing, since an owner may not have applied it yet.
    pub(crate) fn own_unsettled(&self) -> OwnUnsettled<'_> {
        self.own_unsettled.fetch_add(1, Ordering::SeqCst);
        OwnUnsettled(self)
    }

    /// Whether operations that begin from now on keep copies (set by the
    /// cluster runtime: see cluster/copy_gate.rs).
    #[cfg_attr(not(any(feature = "cluster", test)), allow(dead_code))]
    pub(crate) fn keep_copies(&self, keep: bool) {
        self.copies.store(keep, Ordering::SeqCst);
    }
}

/// See [`Stamps::own_unsettled`].
pub(crate) struct OwnUnsettled<'a>(&'a Stamps);

impl Drop for OwnUnsettled<'_> {
    fn drop(&mut self) {
        self.0.own_unsettled.fetch_sub(1, Ordering::SeqCst);
    }
}

impl GridInner {
    /// Keeps `entry`, fetched for `key` after `before` was taken, as a near
    /// copy: the owner's bytes, validated once here as `T` (so later hits on
    /// the copy read them as this process's own, with no check per read; bytes
    /// that fail are a typed error and nothing is stored), its remaining TTL
    /// and its tags. False if an invalidation overtook the reply (nothing is
    /// stored). True without storing when this node kept no copies yet as
    /// `before` was taken: the reply still answers the caller.
    pub(crate) fn keep_near_copy<T: CacheValue<C>, C: Codec>(
        &self,
        key: &str,
        before: Stamp,
        entry: &RemoteEntry,
    ) -> Result<bool, CacheError> {
        if !before.copies {
            return Ok(self.stamps.of(key) == before);
        }
        let ticket = self
            .store
            .begin_fill(key.as_bytes(), &entry.tags)?
            .near_copy();
        if self.stamps.of(key) != before {
            return Ok(false);
        }
        let expiry = match entry.ttl {
            Some(ttl) => Expiry::After(ttl),
            None => Expiry::Never,
        };
        let value = entry.value.as_ref().as_ref();
        let outcome = T::fill_encoded(&self.store, ticket, value, expiry)?;
        if outcome == FillOutcome::Stored {
            self.kept_near(key, &entry.tags, value.len());
        }
        Ok(outcome == FillOutcome::Stored)
    }

    /// A copy of `key`, which this node does not own, was stored: the
    /// runtime keeps a member's copies within their budget.
    pub(crate) fn kept_near(&self, key: &str, tags: &[String], value_len: usize) {
        if let Some(remote) = self.remote.get() {
            let tag_bytes = tags.iter().map(String::len).sum();
            let charged = Store::charge_for(tags.len(), tag_bytes, key.len(), value_len);
            remote.kept_near(key, charged);
        }
    }

    /// Asks the owner for `key` and keeps what it has as a near copy.
    /// `Ok(None)` when the owner has nothing, this node is the owner, no
    /// owner could be reached (and the grid serves locally), or an
    /// invalidation overtook the reply and left nothing here: a cache may
    /// always miss.
    pub(crate) async fn fetch_near<T: CacheValue<C>, C: Codec>(
        &self,
        remote: &dyn Remote,
        key: &str,
    ) -> Result<Option<T>, CacheError> {
        let before = self.stamps.of(key);
        let Fetched::Hit(entry) = remote.fetch(key).await? else {
            return Ok(None);
        };
        // Validated as `T` when kept (bytes that fail are a typed error and
        // are not kept). Not kept: an invalidation overtook the reply, or the
        // key was written here meanwhile — by a local write, or by another
        // caller keeping this same shared reply first. The store has the
        // answer then: that copy, the newer write, or nothing.
        if !self.keep_near_copy::<T, C>(key, before, &entry)? {
            return match self.store.get_ref(key.as_bytes()) {
                Some(stored) => T::read(&stored).map(Some),
                None => Ok(None),
            };
        }
        // The value comes from the reply, not from a read of the store,
        // which would count a local hit for what was a remote read.
        T::decode(entry.value.as_ref().as_ref()).map(Some)
    }

    /// The TTL to send with a value written with `expiry`.
    pub(crate) fn ttl_of(&self, expiry: Expiry) -> Option<Duration> {
        match expiry {
            Expiry::Default => self.default_ttl,
            Expiry::Never => None,
            Expiry::After(ttl) => Some(ttl),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventOrigin;
    use crate::invalidation::Invalidation;
    use crate::{Grid, Rkyv};

    fn entry(tags: &[&str]) -> RemoteEntry {
        let bytes = hydracache_storage::encode(&7u64).unwrap();
        RemoteEntry {
            value: Box::new(bytes.to_vec()),
            ttl: Some(Duration::from_secs(60)),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn a_reply_nothing_overtook_is_kept_with_its_tags_and_ttl() {
        let grid = Grid::local().build();
        let inner = &grid.inner;
        inner.stamps.keep_copies(true);
        let before = inner.stamps.of("k");
        assert!(inner
            .keep_near_copy::<u64, Rkyv>("k", before, &entry(&["t"]))
            .unwrap());
        let stored = inner.store.get_ref(b"k").unwrap();
        assert_eq!(stored.deserialize::<u64>().unwrap(), 7);
        assert!(stored.ttl_remaining().unwrap() <= Duration::from_secs(60));
        drop(stored);
        // The reply's tag applies to the copy.
        inner.apply(&Invalidation::Tags(vec!["t".into()]), EventOrigin::Local);
        assert!(!inner.store.contains_key(b"k"));
    }

    #[test]
    fn a_reply_overtaken_by_a_key_tag_or_flush_invalidation_is_not_kept() {
        let grid = Grid::local().build();
        let inner = &grid.inner;
        for inv in [
            Invalidation::Key("k".into()),
            Invalidation::Tags(vec!["t".into()]),
            Invalidation::Flush,
        ] {
            let before = inner.stamps.of("k");
            inner.apply(&inv, EventOrigin::Local);
            assert!(
                !inner
                    .keep_near_copy::<u64, Rkyv>("k", before, &entry(&["t"]))
                    .unwrap(),
                "{inv:?}"
            );
            assert!(!inner.store.contains_key(b"k"));
        }
    }

    #[test]
    fn a_reply_whose_bytes_fail_validation_is_a_typed_error_and_is_not_kept() {
        let grid = Grid::local().build();
        let inner = &grid.inner;
        inner.stamps.keep_copies(true);
        let before = inner.stamps.of("k");
        // An archived bool is its last byte, and 0xFF is neither false nor
        // true.
        let mut bad = entry(&["t"]);
        bad.value = Box::new(hydracache_storage::encode(&u64::MAX).unwrap().to_vec());
        let err = inner
            .keep_near_copy::<bool, Rkyv>("k", before, &bad)
            .unwrap_err();
        assert!(matches!(err, CacheError::Store(_)), "{err:?}");
        assert!(!inner.store.contains_key(b"k"));
    }

    #[test]
    fn a_reply_taken_before_the_node_kept_copies_answers_but_is_not_kept() {
        let grid = Grid::local().build();
        let inner = &grid.inner;
        let before = inner.stamps.of("k");
        // The gate opens while the reply is in flight: the reply still
        // stands, but the operation began before, so nothing is kept.
        inner.stamps.keep_copies(true);
        assert_eq!(inner.stamps.of("k"), before);
        assert!(inner
            .keep_near_copy::<u64, Rkyv>("k", before, &entry(&["t"]))
            .unwrap());
        assert!(!inner.store.contains_key(b"k"));
        // Overtaken all the same when an invalidation came between.
        inner.stamps.keep_copies(false);
        let before = inner.stamps.of("k");
        inner.apply(&Invalidation::Key("k".into()), EventOrigin::Local);
        assert!(!inner
            .keep_near_copy::<u64, Rkyv>("k", before, &entry(&["t"]))
            .unwrap());
        // Bytes that are not a `bool` are refused when decoded, kept or not.
        let mut bad = entry(&[]);
        bad.value = Box::new(hydracache_storage::encode(&u64::MAX).unwrap().to_vec());
        assert!(<bool as CacheValue<Rkyv>>::decode(bad.value.as_ref().as_ref()).is_err());
    }

    #[test]
    fn invalidations_of_other_tags_do_not_condemn_a_reply_they_overtook_by_key() {
        let grid = Grid::local().build();
        let inner = &grid.inner;
        // Key invalidations of other keys only collide by hash slot; pick a
        // key in another slot.
        let other = (0..)
            .map(|i| format!("other:{i}"))
            .find(|k| Stamps::slot(k) != Stamps::slot("k"))
            .unwrap();
        let before = inner.stamps.of("k");
        inner.apply(&Invalidation::Key(other), EventOrigin::Local);
        assert!(inner
            .keep_near_copy::<u64, Rkyv>("k", before, &entry(&[]))
            .unwrap());
    }
}
