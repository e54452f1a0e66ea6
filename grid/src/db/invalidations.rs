//! `InvalidationSet`: the keys and tags a write makes stale.

use std::fmt::Display;

use crate::db::entity::{entity_key, CacheEntity};
use crate::options::TagSet;

/// Keys and tags to invalidate together, e.g. after a write commits
/// ([`crate::db::CacheTransaction`]) or when a NOTIFY payload arrives
/// ([`crate::db::NotifyPayload`]). Keys are relative to the
/// [`crate::db::DbCache`]'s namespace; tags are grid-wide.
///
/// ```
/// use hydracache::db::InvalidationSet;
///
/// let set = InvalidationSet::new().entity("user", 42).tag("users").key("stats:today");
/// assert_eq!(set.tag_set().iter().collect::<Vec<_>>(), ["user:42", "users"]);
/// assert_eq!(set.keys(), ["stats:today"]);
/// assert!(!set.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvalidationSet {
    keys: Vec<String>,
    tags: TagSet,
    flush: bool,
}

impl InvalidationSet {
    /// Nothing to invalidate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key (relative to the cache's namespace).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.add_key(key);
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.insert(tag);
        self
    }

    /// Adds several tags.
    pub fn tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        for t in tags {
            self.tags.insert(t);
        }
        self
    }

    /// Adds the tag of one entity, `entity:id` (it covers the entity's own
    /// entries, whatever their keys).
    pub fn entity(mut self, entity: &str, id: impl Display) -> Self {
        self.tags.insert(entity_key(entity, &id));
        self
    }

    /// Adds what a write to entity `E` with `id` makes stale: its tag and
    /// its collection tag.
    ///
    /// ```
    /// use hydracache::db::{HydraCacheEntity, InvalidationSet};
    ///
    /// #[derive(HydraCacheEntity)]
    /// #[hydracache(entity = "user", collection = "users", id = i64)]
    /// struct User;
    ///
    /// let set = InvalidationSet::new().entity_write::<User>(&7);
    /// assert_eq!(set.tag_set().iter().collect::<Vec<_>>(), ["user:7", "users"]);
    /// ```
    pub fn entity_write<E: CacheEntity>(mut self, id: &E::Id) -> Self {
        self.tags.insert(E::cache_tag(id));
        if let Some(tag) = E::collection_tag() {
            self.tags.insert(tag);
        }
        self
    }

    /// Invalidates everything the applying [`crate::db::DbCache`] stored —
    /// its namespace, not the whole grid (every key and tag is then moot).
    pub fn flush(mut self) -> Self {
        self.flush = true;
        self
    }

    /// Adds a key in place.
    pub fn add_key(&mut self, key: impl Into<String>) {
        let key = key.into();
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Adds a tag in place.
    pub fn add_tag(&mut self, tag: impl Into<String>) {
        self.tags.insert(tag);
    }

    /// Adds every key and tag of `other` (and its flush) in place.
    pub fn extend(&mut self, other: InvalidationSet) {
        for k in other.keys {
            self.add_key(k);
        }
        for t in other.tags.iter() {
            self.tags.insert(t);
        }
        self.flush |= other.flush;
    }

    /// The keys (relative to the cache's namespace).
    pub fn keys(&self) -> &[String] {
        &self.keys
    }

    /// The tags.
    pub fn tag_set(&self) -> &TagSet {
        &self.tags
    }

    /// True if this set flushes (the applying cache's namespace).
    pub fn is_flush(&self) -> bool {
        self.flush
    }

    /// True if there is nothing to invalidate.
    pub fn is_empty(&self) -> bool {
        !self.flush && self.keys.is_empty() && self.tags.is_empty()
    }
}
