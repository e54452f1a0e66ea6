//! `QueryCachePolicy`: how one query is cached, reusable across call sites.

use std::borrow::Cow;
use std::fmt::Display;
use std::time::Duration;

use crate::db::entity::{entity_key, CacheEntity};
use crate::options::{CacheOptions, TagSet, Ttl};

/// How one query is cached: its diagnostic name, key, tags, TTL, the TTL
/// of its negative results, and the entity it reads. Build it once and use
/// it wherever the query runs ([`crate::db::DbCache::cached_with`]), or with
/// the [`query_cache_policy!`](crate::db::query_cache_policy) macro.
///
/// The key is either explicit ([`key`](Self::key)) or `entity:id`
/// ([`entity`](Self::entity) + [`id`](Self::id)), which also tags the entry
/// `entity:id`. A policy with an entity but no id is a template: give each
/// call its id with `.id(..)` (a cheap clone).
///
/// ```
/// use hydracache::db::QueryCachePolicy;
/// use std::time::Duration;
///
/// let load_user = QueryCachePolicy::named("load-user")
///     .entity("user")
///     .collection_tag("users")
///     .ttl(Duration::from_secs(60));
///
/// let p = load_user.clone().id(42);
/// assert_eq!(p.cache_key().as_deref(), Some("user:42"));
/// assert_eq!(p.tag_set().iter().collect::<Vec<_>>(), ["user:42", "users"]);
/// assert_eq!(load_user.cache_key(), None); // a template: no id yet
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryCachePolicy {
    name: Cow<'static, str>,
    key: Option<String>,
    entity: Option<Cow<'static, str>>,
    id: Option<String>,
    tags: TagSet,
    ttl: Ttl,
    negative_ttl: Option<Duration>,
}

impl QueryCachePolicy {
    /// A policy named `name` (a diagnostic label: it names the query in
    /// [`crate::db::DbCache::query_stats`] and in errors). No key yet, no
    /// tags, the grid's default TTL.
    pub fn named(name: impl Into<Cow<'static, str>>) -> Self {
        QueryCachePolicy {
            name: name.into(),
            key: None,
            entity: None,
            id: None,
            tags: TagSet::new(),
            ttl: Ttl::Default,
            negative_ttl: None,
        }
    }

    /// Renames the policy.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// An explicit key (relative to the cache's namespace). Takes
    /// precedence over `entity:id`.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The entity this query reads, e.g. `"user"`: with an [`id`](Self::id)
    /// the key and a tag are `user:<id>`.
    pub fn entity(mut self, entity: impl Into<Cow<'static, str>>) -> Self {
        self.entity = Some(entity.into());
        self
    }

    /// The entity name of `E` ([`CacheEntity::ENTITY`]).
    ///
    /// ```
    /// use hydracache::db::{HydraCacheEntity, QueryCachePolicy};
    /// #[derive(HydraCacheEntity)]
    /// #[hydracache(entity = "order", collection = "orders", id = u64)]
    /// struct Order;
    ///
    /// let p = QueryCachePolicy::named("load-order").entity_of::<Order>().id(9);
    /// assert_eq!(p.cache_key().as_deref(), Some("order:9"));
    /// ```
    pub fn entity_of<E: CacheEntity>(self) -> Self {
        self.entity(E::ENTITY)
    }

    /// Entity `E` with `id`: key and tag `E::cache_key(&id)`.
    ///
    /// ```
    /// use hydracache::db::{HydraCacheEntity, QueryCachePolicy};
    /// #[derive(HydraCacheEntity)]
    /// #[hydracache(entity = "user", id = i64)]
    /// struct User;
    ///
    /// let p = QueryCachePolicy::named("load-user").for_cache_entity::<User>(42);
    /// assert_eq!(p.cache_key().as_deref(), Some("user:42"));
    /// ```
    pub fn for_cache_entity<E: CacheEntity>(self, id: E::Id) -> Self {
        self.entity_of::<E>().id(id)
    }

    /// The id of the entity (formatted with `Display`).
    pub fn id(mut self, id: impl Display) -> Self {
        self.id = Some(id.to_string());
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

    /// Adds a broader tag, e.g. `"users"` on a query for one user, so that
    /// invalidating the collection drops this entry too.
    pub fn collection_tag(self, tag: impl Into<String>) -> Self {
        self.tag(tag)
    }

    /// Results live this long.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Ttl::After(ttl);
        self
    }

    /// Results live until invalidated or evicted, even if the grid has a default TTL.
    pub fn no_ttl(mut self) -> Self {
        self.ttl = Ttl::Never;
        self
    }

    /// Negative results — `None` from `fetch_optional`, an empty `Vec` from
    /// `fetch_all` — live this long. Without it they get the same TTL as
    /// other results.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.negative_ttl = Some(ttl);
        self
    }

    /// The diagnostic name.
    pub fn query_name(&self) -> &str {
        &self.name
    }

    /// The key (relative to the cache's namespace): the explicit key, or
    /// `entity:id`; `None` if the policy has neither.
    pub fn cache_key(&self) -> Option<String> {
        if let Some(k) = &self.key {
            return Some(k.clone());
        }
        self.entity_tag()
    }

    /// The tags: `entity:id` if the policy has both, then the tags added.
    pub fn tag_set(&self) -> TagSet {
        let mut tags = TagSet::new();
        if let Some(t) = self.entity_tag() {
            tags.insert(t);
        }
        for t in self.tags.iter() {
            tags.insert(t);
        }
        tags
    }

    /// The TTL setting.
    pub fn ttl_setting(&self) -> Ttl {
        self.ttl
    }

    /// The TTL of negative results, if set apart.
    pub fn negative_ttl_setting(&self) -> Option<Duration> {
        self.negative_ttl
    }

    /// The grid options a load with this policy uses.
    pub fn cache_options(&self) -> CacheOptions {
        let opts = CacheOptions::new().tag_set(self.tag_set());
        match self.ttl {
            Ttl::Default => opts,
            Ttl::Never => opts.no_ttl(),
            Ttl::After(d) => opts.ttl(d),
        }
    }

    fn entity_tag(&self) -> Option<String> {
        match (&self.entity, &self.id) {
            (Some(e), Some(id)) => Some(entity_key(e, id)),
            _ => None,
        }
    }
}

/// A policy by reference is cloned, so a template stays for the next call:
/// [`crate::db::DbCache::cached_with`] takes both.
impl From<&QueryCachePolicy> for QueryCachePolicy {
    fn from(policy: &QueryCachePolicy) -> Self {
        policy.clone()
    }
}
