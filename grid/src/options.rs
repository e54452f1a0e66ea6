//! Per-call options: TTL and tags.

use std::fmt::Display;
use std::time::Duration;

use crate::key::KEY_SEPARATOR;

/// A set of tags, deduplicated, in insertion order. Pass it by value to
/// [`CacheOptions::tag_set`] or as `tags = ..` to [`crate::cacheable!`].
///
/// ```
/// use hydracache::TagSet;
/// let tags = TagSet::new().tenant(7).entity("user", 42).tag("profiles").tag("profiles");
/// assert_eq!(tags.iter().collect::<Vec<_>>(), ["tenant:7", "user:42", "profiles"]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TagSet(Vec<String>);

impl TagSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tag (ignored if already present).
    pub fn insert(&mut self, tag: impl Into<String>) {
        let tag = tag.into();
        if !self.0.contains(&tag) {
            self.0.push(tag);
        }
    }

    /// Adds a tag (builder form of [`TagSet::insert`]).
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.insert(tag);
        self
    }

    /// Adds the tenant's tag, `tenant:<id>`: invalidating it drops every
    /// entry of that tenant.
    pub fn tenant(self, tenant: impl Display) -> Self {
        self.tag(format!("tenant{KEY_SEPARATOR}{tenant}"))
    }

    /// Adds one entity's tag, `<entity>:<id>` (e.g. `user:42`).
    pub fn entity(self, entity: impl Display, id: impl Display) -> Self {
        self.tag(format!("{entity}{KEY_SEPARATOR}{id}"))
    }

    /// The tags.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True if there are no tags.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn as_slice(&self) -> &[String] {
        &self.0
    }
}

impl IntoIterator for TagSet {
    type Item = String;
    type IntoIter = std::vec::IntoIter<String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<S: Into<String>> FromIterator<S> for TagSet {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut set = TagSet::new();
        for t in iter {
            set.insert(t);
        }
        set
    }
}

/// How long an entry lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ttl {
    /// The grid's default TTL (or forever if none is set).
    #[default]
    Default,
    /// Forever (until evicted or invalidated).
    Never,
    /// This long after it is stored.
    After(Duration),
}

/// Options for a write or a load: TTL and tags.
///
/// ```
/// use hydracache::CacheOptions;
/// use std::time::Duration;
///
/// let opts = CacheOptions::new().ttl(Duration::from_secs(60)).tags(["users", "user:42"]);
/// assert_eq!(opts.tag_names().len(), 2);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheOptions {
    pub(crate) ttl: Ttl,
    pub(crate) tags: TagSet,
}

impl CacheOptions {
    /// Default TTL, no tags.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expire this long after the write.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Ttl::After(ttl);
        self
    }

    /// Never expire, even if the grid has a default TTL.
    pub fn no_ttl(mut self) -> Self {
        self.ttl = Ttl::Never;
        self
    }

    /// Adds one tag.
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

    /// Adds every tag of a [`TagSet`].
    ///
    /// ```
    /// use hydracache::{CacheOptions, TagSet};
    /// let opts = CacheOptions::new().tag_set(TagSet::new().tenant(7).entity("user", 42));
    /// assert_eq!(opts.tag_names().iter().collect::<Vec<_>>(), ["tenant:7", "user:42"]);
    /// ```
    pub fn tag_set(self, set: TagSet) -> Self {
        self.tags(set)
    }

    /// The tags these options carry.
    pub fn tag_names(&self) -> &TagSet {
        &self.tags
    }

    /// The TTL setting.
    pub fn ttl_setting(&self) -> Ttl {
        self.ttl
    }

    pub(crate) fn expiry(&self) -> hydracache_storage::Expiry {
        match self.ttl {
            Ttl::Default => hydracache_storage::Expiry::Default,
            Ttl::Never => hydracache_storage::Expiry::Never,
            Ttl::After(d) => hydracache_storage::Expiry::After(d),
        }
    }
}
