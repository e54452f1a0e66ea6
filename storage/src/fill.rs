//! Stale-fill protection: a ticket taken before a value is loaded, redeemed
//! when the value arrives, refused if the key or one of its tags was touched
//! in between.

use std::sync::Arc;

use crate::entry::TagRef;
use crate::store::Inner;

/// What happened to a completed fill.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillOutcome {
    /// The value was stored.
    Stored,
    /// The key or one of its tags was invalidated, written, removed or
    /// flushed after the fill began; the value was not stored.
    Stale,
}

/// A snapshot of what a fill depends on, from [`crate::Store::begin_fill`].
/// Dropping it abandons the fill.
///
/// ```
/// use hydracache_storage::{Expiry, FillOutcome, Store};
///
/// let store = Store::default();
/// let ticket = store.begin_fill(b"user:1", &["users"]).unwrap();
/// store.invalidate_tag(b"users"); // an update raced the load
/// let outcome = store.complete_fill(ticket, &String::from("old row"), Expiry::Default).unwrap();
/// assert_eq!(outcome, FillOutcome::Stale);
/// assert!(!store.contains_key(b"user:1"));
/// ```
pub struct FillTicket {
    inner: Arc<Inner>,
    pub(crate) id: u64,
    shard: usize,
    pub(crate) key: Box<[u8]>,
    pub(crate) tags: Vec<TagRef>,
    pub(crate) near: bool,
}

impl FillTicket {
    pub(crate) fn new(
        inner: Arc<Inner>,
        id: u64,
        shard: usize,
        key: Box<[u8]>,
        tags: Vec<TagRef>,
    ) -> Self {
        FillTicket {
            inner,
            id,
            shard,
            key,
            tags,
            near: false,
        }
    }

    /// Marks the fill as a near copy: a value another node owns, kept here.
    /// The entry it stores counts its hits in [`crate::StoreStats::near_hits`]
    /// (as well as in `hits`). A later write of the key that is not marked
    /// stores an ordinary entry.
    ///
    /// ```
    /// use hydracache_storage::{Expiry, Store};
    ///
    /// let store = Store::default();
    /// let ticket = store.begin_fill(b"user:1", &["users"]).unwrap().near_copy();
    /// store.complete_fill(ticket, &String::from("Ada"), Expiry::Default).unwrap();
    /// store.get::<String>(b"user:1").unwrap();
    /// assert_eq!((store.stats().hits, store.stats().near_hits), (1, 1));
    ///
    /// store.insert(b"user:1", &String::from("Ada"), Expiry::Default, &["users"]).unwrap();
    /// store.get::<String>(b"user:1").unwrap();
    /// assert_eq!((store.stats().hits, store.stats().near_hits), (2, 1));
    /// ```
    pub fn near_copy(mut self) -> Self {
        self.near = true;
        self
    }

    /// True if completing the fill now would be refused.
    pub fn is_stale(&self) -> bool {
        self.inner.pending_is_stale(self.shard, self.id, &self.tags)
    }

    /// The key being filled.
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

impl std::fmt::Debug for FillTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FillTicket")
            .field("id", &self.id)
            .field("key", &String::from_utf8_lossy(&self.key))
            .finish()
    }
}

impl Drop for FillTicket {
    fn drop(&mut self) {
        self.inner.drop_pending(self.shard, self.id);
        for tag in &self.tags {
            self.inner.tags.release(tag);
        }
    }
}
