//! `CachedQuery`: a query descriptor (where the result lives, how long,
//! which tags) and the load path every fetch goes through.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hydracache_storage::Expiry;

use crate::codec::{CacheValue, Codec};
use crate::db::cache::DbCache;
use crate::db::entity::CacheEntity;
use crate::db::error::{DbCacheError, SharedQueryError};
use crate::db::policy::QueryCachePolicy;
use crate::db::stats::Counters;
use crate::db::value::Stored;
use crate::error::CacheError;

/// One query's caching: built by [`DbCache::cached`], [`DbCache::named`],
/// [`DbCache::entity`], [`DbCache::collection`], [`DbCache::for_entity`] or
/// [`DbCache::cached_with`], refined with the builder methods, and run with
/// a fetch: [`fetch_one`](Self::fetch_one), [`fetch_optional`](Self::fetch_optional),
/// [`fetch_all`](Self::fetch_all) for a `sqlx::query_as` query, or
/// [`fetch_with`](Self::fetch_with) for anything else (`query_as!`,
/// repository calls, several queries).
///
/// On a hit the value comes from the cache and no query runs. On a miss
/// the query runs once however many callers miss together, its result is
/// cached with the descriptor's key, tags and TTL, and an invalidation of
/// that key or a tag while it runs keeps the (possibly stale) result out of
/// the cache. A failed query caches nothing; see [`DbCacheError`] for who
/// gets its error.
///
/// The `*_with` fetches and the pool fetches run the query as its own task
/// (so a caller that gives up does not cancel it for the others): what the
/// loader captures must be `Send + 'static` — an owned pool handle, owned
/// bind values, `&'static str` SQL. The `_in` fetches
/// ([`fetch_one_in`](Self::fetch_one_in)) run it in the caller instead, on
/// any executor and with a query that borrows.
#[must_use = "a query descriptor does nothing until it is fetched"]
pub struct CachedQuery<'a, T, C: Codec> {
    cache: &'a DbCache<C>,
    policy: QueryCachePolicy,
    _t: PhantomData<fn() -> T>,
}

impl<'a, T, C: Codec> std::fmt::Debug for CachedQuery<'a, T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedQuery")
            .field("namespace", &self.cache.namespace())
            .field("policy", &self.policy)
            .finish()
    }
}

impl<'a, T: CacheValue<C>, C: Codec> CachedQuery<'a, T, C> {
    pub(crate) fn new(cache: &'a DbCache<C>, policy: QueryCachePolicy) -> Self {
        CachedQuery {
            cache,
            policy,
            _t: PhantomData,
        }
    }

    /// Renames the query (its diagnostic label).
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.policy = self.policy.name(name);
        self
    }

    /// The key (relative to the cache's namespace).
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.policy = self.policy.key(key);
        self
    }

    /// The entity id, for a descriptor built from a policy template.
    pub fn id(mut self, id: impl Display) -> Self {
        self.policy = self.policy.id(id);
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.policy = self.policy.tag(tag);
        self
    }

    /// Adds several tags.
    pub fn tags<S: Into<String>>(mut self, tags: impl IntoIterator<Item = S>) -> Self {
        self.policy = self.policy.tags(tags);
        self
    }

    /// Adds a broader tag (e.g. `"users"` on a query for one user).
    pub fn collection_tag(mut self, tag: impl Into<String>) -> Self {
        self.policy = self.policy.collection_tag(tag);
        self
    }

    /// Adds the collection tag of entity `E`, if it has one.
    pub fn collection_of<E: CacheEntity>(mut self) -> Self {
        if let Some(tag) = E::collection_tag() {
            self = self.collection_tag(tag);
        }
        self
    }

    /// The result lives this long.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.policy = self.policy.ttl(ttl);
        self
    }

    /// The result lives until invalidated or evicted.
    pub fn no_ttl(mut self) -> Self {
        self.policy = self.policy.no_ttl();
        self
    }

    /// Negative results (`None`, an empty `Vec`) live this long.
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.policy = self.policy.negative_ttl(ttl);
        self
    }

    /// The policy this descriptor caches with.
    pub fn policy(&self) -> &QueryCachePolicy {
        &self.policy
    }

    /// The result of `loader` (`query_as!`, a repository call, several
    /// queries), cached. The closure is called only on a miss, and only by
    /// the caller that runs the load.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
    /// let p = pool.clone();
    /// let total: i64 = db
    ///     .collection::<i64>("users:count")
    ///     .fetch_with(move || async move {
    ///         sqlx::query_scalar("select 40 + 2").fetch_one(&p).await
    ///     })
    ///     .await?;
    /// assert_eq!(total, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn fetch_with<F, Fut, E>(self, loader: F) -> Result<T, DbCacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: StdError + Send + Sync + 'static,
    {
        self.run(|_| false, loader).await
    }

    /// Alias of [`fetch_with`](Self::fetch_with), the name policies read well with:
    /// `db.cached_with::<User>(policy).load(..)`.
    pub async fn load<F, Fut, E>(self, loader: F) -> Result<T, DbCacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: StdError + Send + Sync + 'static,
    {
        self.fetch_with(loader).await
    }

    /// [`fetch_with`](Self::fetch_with) for a loader that may find nothing:
    /// `None` is cached too (negative caching, with the
    /// [`negative_ttl`](Self::negative_ttl) if set).
    pub async fn fetch_optional_with<F, Fut, E>(
        self,
        loader: F,
    ) -> Result<Option<T>, DbCacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>> + Send + 'static,
        E: StdError + Send + Sync + 'static,
        Option<T>: CacheValue<C>,
    {
        self.retyped::<Option<T>>()
            .run(|v: &Option<T>| v.is_none(), loader)
            .await
    }

    /// [`fetch_with`](Self::fetch_with) for a loader of many rows: an empty
    /// `Vec` is cached too (negative caching, with the
    /// [`negative_ttl`](Self::negative_ttl) if set).
    pub async fn fetch_all_with<F, Fut, E>(self, loader: F) -> Result<Vec<T>, DbCacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<T>, E>> + Send + 'static,
        E: StdError + Send + Sync + 'static,
        Vec<T>: CacheValue<C>,
    {
        self.retyped::<Vec<T>>()
            .run(|v: &Vec<T>| v.is_empty(), loader)
            .await
    }

    pub(crate) fn retyped<U>(self) -> CachedQuery<'a, U, C> {
        CachedQuery {
            cache: self.cache,
            policy: self.policy,
            _t: PhantomData,
        }
    }

    /// The load path of every fetch.
    ///
    /// Hit: one read of the grid. Miss: `load` with the policy's options;
    /// the loader runs only in the caller that leads the load, as a task of
    /// its own. Its original error is parked in `mine` (only this caller
    /// holds the other end) and the grid carries a [`SharedQueryError`] to
    /// the callers that joined the load.
    pub(crate) async fn run<F, Fut, E>(
        self,
        negative: fn(&T) -> bool,
        loader: F,
    ) -> Result<T, DbCacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: StdError + Send + Sync + 'static,
    {
        let (key, counters) = match self.look_up()? {
            Looked::Hit(hit) => return Ok(hit),
            Looked::Miss(key, counters) => (key, counters),
        };
        let mine: Arc<Mutex<Option<E>>> = Arc::new(Mutex::new(None));
        let negative_expiry = self.policy.negative_ttl_setting().map(Expiry::After);
        let (load_counters, slot) = (Arc::clone(&counters), Arc::clone(&mine));
        let loader = move || {
            load_counters.load();
            wrapped(loader(), negative, negative_expiry, slot)
        };
        // Straight to the miss path: the lookup above already counted the miss.
        let result = Box::pin(self.cache.grid().load::<Stored<T>, _, _, SharedQueryError>(
            &key,
            self.cache.options_for(&self.policy),
            loader,
        ))
        .await;
        settle::<T, C, E>(result, &counters, &mine)
    }

    /// [`run`](Self::run) with the loader run by this caller, so it may
    /// borrow (a `&mut` connection, a query binding a `&str`). Callers that
    /// join the load wait for this one; if it is cancelled they get an
    /// error ([`DbCacheError::Cache`] with `CacheError::Cancelled`), never
    /// a hang. With `store` false the result is not cached.
    pub(crate) async fn run_inline<F, Fut, E>(
        self,
        negative: fn(&T) -> bool,
        store: bool,
        loader: F,
    ) -> Result<T, DbCacheError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: StdError + Send + Sync + 'static,
    {
        let (key, counters) = match self.look_up()? {
            Looked::Hit(hit) => return Ok(hit),
            Looked::Miss(key, counters) => (key, counters),
        };
        let mine: Arc<Mutex<Option<E>>> = Arc::new(Mutex::new(None));
        let negative_expiry = self.policy.negative_ttl_setting().map(Expiry::After);
        let (load_counters, slot) = (Arc::clone(&counters), Arc::clone(&mine));
        let loader = move || {
            load_counters.load();
            wrapped(loader(), negative, negative_expiry, slot)
        };
        let result = Box::pin(
            self.cache
                .grid()
                .load_inline::<Stored<T>, _, _, SharedQueryError>(
                    &key,
                    self.cache.options_for(&self.policy),
                    store,
                    loader,
                ),
        )
        .await;
        settle::<T, C, E>(result, &counters, &mine)
    }

    /// The policy's key and a first read of it (counted).
    fn look_up<E>(&self) -> Result<Looked<T>, DbCacheError<E>> {
        let counters = self.cache.registry().counters(self.policy.query_name());
        let Some(key) = self.policy.cache_key() else {
            counters.error();
            return Err(DbCacheError::MissingKey {
                query: self.policy.query_name().to_string(),
            });
        };
        let key = self.cache.full_key(&key);
        match self.cache.grid().get_now::<T>(&key) {
            Ok(Some(hit)) => {
                counters.hit();
                Ok(Looked::Hit(hit))
            }
            Ok(None) => {
                counters.miss();
                Ok(Looked::Miss(key, counters))
            }
            Err(e) => {
                // The key holds another type: the caller's mistake, and the
                // entry stays for the readers of its own type.
                counters.error();
                Err(DbCacheError::Cache(e))
            }
        }
    }
}

/// What the first read found.
enum Looked<T> {
    Hit(T),
    Miss(String, Arc<Counters>),
}

/// A loader's future as the grid runs it: its value wrapped with the
/// negative TTL, its error parked in `mine` and shared as a
/// [`SharedQueryError`].
async fn wrapped<T, E, Fut>(
    fut: Fut,
    negative: fn(&T) -> bool,
    negative_expiry: Option<Expiry>,
    mine: Arc<Mutex<Option<E>>>,
) -> Result<Stored<T>, SharedQueryError>
where
    Fut: Future<Output = Result<T, E>>,
    E: StdError + Send + Sync + 'static,
{
    match fut.await {
        Ok(value) => {
            let expiry = if negative(&value) {
                negative_expiry
            } else {
                None
            };
            Ok(Stored::new(value, expiry))
        }
        Err(e) => {
            let shared = SharedQueryError::from_error(&e);
            *mine.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            Err(shared)
        }
    }
}

/// The caller's result from the grid's: the loader's own error if this
/// caller ran it, the shared one if it joined.
fn settle<T, C, E>(
    result: Result<Stored<T>, CacheError>,
    counters: &Counters,
    mine: &Mutex<Option<E>>,
) -> Result<T, DbCacheError<E>>
where
    T: CacheValue<C>,
    C: Codec,
    E: StdError + Send + Sync + 'static,
{
    match result {
        Ok(stored) => stored.into_value().map_err(|e| {
            counters.error();
            DbCacheError::Cache(e)
        }),
        Err(e) => {
            counters.error();
            let original = mine.lock().unwrap_or_else(|p| p.into_inner()).take();
            Err(match (original, e) {
                (Some(original), _) => DbCacheError::Database(original),
                (None, CacheError::Load(load)) => match load.downcast_ref::<SharedQueryError>() {
                    Some(shared) => DbCacheError::Shared(shared.clone()),
                    None => DbCacheError::Cache(CacheError::Load(load)),
                },
                (None, e) => DbCacheError::Cache(e),
            })
        }
    }
}
