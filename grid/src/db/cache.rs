//! `DbCache`: the cache boundary between sqlx and the grid.

use std::fmt::Display;
use std::sync::Arc;

use crate::codec::{CacheValue, Codec, Rkyv};
use crate::db::entity::CacheEntity;
use crate::db::invalidations::InvalidationSet;
use crate::db::policy::QueryCachePolicy;
use crate::db::query::CachedQuery;
use crate::db::stats::{QueryStats, Registry};
use crate::error::CacheError;
use crate::grid::Grid;
use crate::key::KEY_SEPARATOR;

/// Query-result caching for sqlx over a [`Grid`]. Cheap to clone.
///
/// The database client stays in charge of pools, transactions, queries
/// and row mapping; `DbCache` decides where a result lives in the cache
/// (key, tags, TTL), runs the query on a miss — once, however many callers
/// miss together — and invalidates what a write makes stale.
///
/// Keys live in the cache's namespace (`namespace:key`), so two `DbCache`s
/// with different namespaces never share entries; tags are grid-wide, so
/// invalidating `user:42` reaches every namespace.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hydracache::db::DbCache;
/// use hydracache::Grid;
///
/// #[derive(sqlx::FromRow, hydracache::rkyv::Archive, hydracache::rkyv::Serialize, hydracache::rkyv::Deserialize, Clone, Debug, PartialEq)]
/// #[rkyv(crate = hydracache::rkyv)]
/// struct User { id: i64, name: String }
///
/// let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
/// sqlx::query("create table users (id integer primary key, name text not null)").execute(&pool).await?;
/// sqlx::query("insert into users values (42, 'Ada')").execute(&pool).await?;
///
/// let db = DbCache::new(Grid::local().build(), "app");
/// let user: User = db
///     .entity::<User>("user", 42)
///     .fetch_one(&pool, sqlx::query_as("select id, name from users where id = ?").bind(42))
///     .await?;
/// assert_eq!(user.name, "Ada");
/// assert!(db.grid().contains_key("app:user:42").await);
///
/// db.invalidate_tag("user:42").await?;
/// assert!(!db.grid().contains_key("app:user:42").await);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct DbCache<C: Codec = Rkyv> {
    grid: Grid<C>,
    ns: Arc<str>,
    /// `namespace:*`, carried by every entry this cache stores.
    ns_tag: Arc<str>,
    stats: Arc<Registry>,
}

impl<C: Codec> Clone for DbCache<C> {
    fn clone(&self) -> Self {
        DbCache {
            grid: self.grid.clone(),
            ns: Arc::clone(&self.ns),
            ns_tag: Arc::clone(&self.ns_tag),
            stats: Arc::clone(&self.stats),
        }
    }
}

impl<C: Codec> std::fmt::Debug for DbCache<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbCache")
            .field("namespace", &self.ns)
            .finish_non_exhaustive()
    }
}

impl<C: Codec> DbCache<C> {
    /// A database cache over `grid` whose keys live in `namespace`.
    ///
    /// ```
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// assert_eq!(db.full_key("user:42"), "app:user:42");
    /// ```
    pub fn new(grid: Grid<C>, namespace: impl AsRef<str>) -> Self {
        let ns = namespace.as_ref();
        DbCache {
            grid,
            ns: Arc::from(ns),
            ns_tag: Arc::from(format!("{ns}{KEY_SEPARATOR}*")),
            stats: Arc::default(),
        }
    }

    /// The grid behind this cache.
    pub fn grid(&self) -> &Grid<C> {
        &self.grid
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// The tag every result this cache stores carries, `namespace:*`:
    /// [`DbCache::flush`] invalidates it.
    ///
    /// ```
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// assert_eq!(db.namespace_tag(), "app:*");
    /// ```
    pub fn namespace_tag(&self) -> &str {
        &self.ns_tag
    }

    /// The grid options a load with `policy` uses: the policy's, plus the
    /// namespace tag.
    pub(crate) fn options_for(&self, policy: &QueryCachePolicy) -> crate::CacheOptions {
        policy.cache_options().tag(&*self.ns_tag)
    }

    /// The grid key of `key` in this namespace (`namespace:key`).
    pub fn full_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.ns.len() + 1 + key.len());
        full.push_str(&self.ns);
        full.push(KEY_SEPARATOR);
        full.push_str(key);
        full
    }

    // ---- query descriptors ------------------------------------------------

    /// A query with full control: set `.key(..)`, `.tag(..)`, `.ttl(..)`
    /// yourself. Its name is `"cached"` until [`CachedQuery::name`] renames it.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// let n: i64 = db
    ///     .cached::<i64>()
    ///     .key("users:count")
    ///     .tag("users")
    ///     .ttl(Duration::from_secs(30))
    ///     .fetch_with(|| async { Ok::<_, sqlx::Error>(3) })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(n, 3);
    /// # });
    /// ```
    pub fn cached<T: CacheValue<C>>(&self) -> CachedQuery<'_, T, C> {
        CachedQuery::new(self, QueryCachePolicy::named("cached"))
    }

    /// A query named `name` (a diagnostic label, see [`DbCache::query_stats`]);
    /// give it a key with `.key(..)`.
    pub fn named<T: CacheValue<C>>(
        &self,
        name: impl Into<std::borrow::Cow<'static, str>>,
    ) -> CachedQuery<'_, T, C> {
        CachedQuery::new(self, QueryCachePolicy::named(name))
    }

    /// A query for one entity: key and tag `entity:id` (e.g. `user:42`),
    /// named after the entity.
    ///
    /// ```
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// let q = db.entity::<String>("user", 42);
    /// assert_eq!(q.policy().cache_key().as_deref(), Some("user:42"));
    /// assert_eq!(q.policy().tag_set().iter().collect::<Vec<_>>(), ["user:42"]);
    /// ```
    pub fn entity<T: CacheValue<C>>(
        &self,
        entity: &str,
        id: impl Display,
    ) -> CachedQuery<'_, T, C> {
        let policy = QueryCachePolicy::named(entity.to_string())
            .entity(entity.to_string())
            .id(id);
        CachedQuery::new(self, policy)
    }

    /// A query over a collection: key and tag `name` (e.g. `users`).
    ///
    /// ```
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// let q = db.collection::<Vec<String>>("users");
    /// assert_eq!(q.policy().cache_key().as_deref(), Some("users"));
    /// assert_eq!(q.policy().tag_set().iter().collect::<Vec<_>>(), ["users"]);
    /// ```
    pub fn collection<T: CacheValue<C>>(&self, name: &str) -> CachedQuery<'_, T, C> {
        let policy = QueryCachePolicy::named(name.to_string())
            .key(name)
            .tag(name);
        CachedQuery::new(self, policy)
    }

    /// A query for entity `E` with `id`, from its [`CacheEntity`] metadata:
    /// key and tag `E::cache_key(&id)`, named after the entity.
    ///
    /// ```
    /// use hydracache::db::{DbCache, HydraCacheEntity};
    ///
    /// #[derive(HydraCacheEntity, hydracache::rkyv::Archive, hydracache::rkyv::Serialize, hydracache::rkyv::Deserialize, Clone)]
    /// #[rkyv(crate = hydracache::rkyv)]
    /// #[hydracache(entity = "user", collection = "users", id = i64)]
    /// struct User { id: i64 }
    ///
    /// let db = DbCache::new(hydracache::Grid::local().build(), "app");
    /// let q = db.for_entity::<User>(42);
    /// assert_eq!(q.policy().cache_key().as_deref(), Some("user:42"));
    /// ```
    pub fn for_entity<E: CacheEntity + CacheValue<C>>(&self, id: E::Id) -> CachedQuery<'_, E, C> {
        let policy = QueryCachePolicy::named(E::ENTITY).for_cache_entity::<E>(id);
        CachedQuery::new(self, policy)
    }

    /// A query cached as `policy` says: pass it by value, or by reference
    /// to keep a template (it is then cloned); add to it per call, e.g.
    /// `.id(..)` on a template.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::db::{query_cache_policy, DbCache};
    ///
    /// let load_user = query_cache_policy!(name = "load-user", entity = "user", tag = "users", ttl_secs = 60);
    /// let db = DbCache::new(hydracache::Grid::local().build(), "app");
    /// let name: String = db
    ///     .cached_with::<String>(&load_user) // a template, kept for the next call
    ///     .id(42)
    ///     .load(|| async { Ok::<_, sqlx::Error>("Ada".to_string()) })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(name, "Ada");
    /// assert!(db.grid().contains_key("app:user:42").await);
    /// # });
    /// ```
    pub fn cached_with<T: CacheValue<C>>(
        &self,
        policy: impl Into<QueryCachePolicy>,
    ) -> CachedQuery<'_, T, C> {
        CachedQuery::new(self, policy.into())
    }

    // ---- invalidation ----------------------------------------------------

    /// Invalidates `key` in this namespace.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// db.grid().put("app:k", 1u8, Default::default()).await.unwrap();
    /// db.invalidate_key("k").await.unwrap();
    /// assert!(!db.grid().contains_key("app:k").await);
    /// # });
    /// ```
    pub async fn invalidate_key(&self, key: &str) -> Result<(), CacheError> {
        self.grid.invalidate_key(&self.full_key(key)).await
    }

    /// Invalidates every entry tagged `tag` (grid-wide).
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), CacheError> {
        self.grid.invalidate_tag(tag).await
    }

    /// Invalidates every entry carrying any of `tags` (grid-wide).
    pub async fn invalidate_tags<S: AsRef<str>>(
        &self,
        tags: impl IntoIterator<Item = S>,
    ) -> Result<(), CacheError> {
        self.grid.invalidate_tags(tags).await
    }

    /// Invalidates what a write to entity `E` with `id` makes stale: its
    /// tag (`user:42`) and its collection tag (`users`), if it has one.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::{db::{DbCache, HydraCacheEntity}, CacheOptions};
    /// #[derive(HydraCacheEntity)]
    /// #[hydracache(entity = "user", collection = "users", id = i64)]
    /// struct User;
    ///
    /// let db = DbCache::new(hydracache::Grid::local().build(), "app");
    /// db.grid().put("app:users", 2u8, CacheOptions::new().tag("users")).await.unwrap();
    /// db.invalidate_entity::<User>(&42).await.unwrap();
    /// assert!(!db.grid().contains_key("app:users").await);
    /// # });
    /// ```
    pub async fn invalidate_entity<E: CacheEntity>(&self, id: &E::Id) -> Result<(), CacheError> {
        self.grid
            .invalidate_tags(std::iter::once(E::cache_tag(id)).chain(E::collection_tag()))
            .await
    }

    /// Invalidates every result this cache stored — its namespace only;
    /// other namespaces and the rest of the grid keep their entries.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// let app = hydracache::db::DbCache::new(grid.clone(), "app");
    /// let _: u8 = app.named("one").key("one").fetch_with(|| async { Ok::<_, sqlx::Error>(1) }).await.unwrap();
    /// grid.put("other", 2u8, Default::default()).await.unwrap();
    /// app.flush().await.unwrap();
    /// assert!(!grid.contains_key("app:one").await);
    /// assert!(grid.contains_key("other").await);
    /// # });
    /// ```
    pub async fn flush(&self) -> Result<(), CacheError> {
        self.grid.invalidate_tag(&self.ns_tag).await
    }

    /// Applies an [`InvalidationSet`]: its flush (of this namespace, see
    /// [`DbCache::flush`]), or its tags and then its keys.
    pub async fn invalidate(&self, set: &InvalidationSet) -> Result<(), CacheError> {
        if set.is_flush() {
            return self.flush().await;
        }
        if !set.tag_set().is_empty() {
            self.grid.invalidate_tags(set.tag_set().iter()).await?;
        }
        for key in set.keys() {
            self.invalidate_key(key).await?;
        }
        Ok(())
    }

    // ---- introspection ---------------------------------------------------

    /// Counters per query name, sorted by name.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// for _ in 0..3 {
    ///     let _: u32 = db.named("answer").key("answer")
    ///         .fetch_with(|| async { Ok::<_, sqlx::Error>(42) }).await.unwrap();
    /// }
    /// let s = &db.query_stats()[0];
    /// assert_eq!((s.name.as_str(), s.hits, s.misses, s.loads), ("answer", 2, 1, 1));
    /// # });
    /// ```
    pub fn query_stats(&self) -> Vec<QueryStats> {
        self.stats.snapshot()
    }

    pub(crate) fn registry(&self) -> &Registry {
        &self.stats
    }
}
