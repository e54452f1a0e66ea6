//! Per-call options: TTL and tags.

use std::time::Duration;

/// A set of tags, deduplicated, in insertion order.
///
/// ```
/// use hydracache::TagSet;
/// let tags = TagSet::new().with("users").with("user:42").with("users");
/// assert_eq!(tags.iter().collect::<Vec<_>>(), ["users", "user:42"]);
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

    /// Builder form of [`TagSet::insert`].
    pub fn with(mut self, tag: impl Into<String>) -> Self {
        self.insert(tag);
        self
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
    pub fn tag_set(mut self, set: &TagSet) -> Self {
        for t in set.iter() {
            self.tags.insert(t);
        }
        self
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
