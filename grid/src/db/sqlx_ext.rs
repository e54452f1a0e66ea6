//! Running a `sqlx::query_as` query through a descriptor:
//! `descriptor.fetch_one(&pool, query)`, or from the query's side with
//! [`SqlxQueryExt`]: `query.cached(descriptor).fetch_one(&pool)`.

use sqlx::query::QueryAs;
use sqlx::{Database, Executor, FromRow, IntoArguments, Pool};

use crate::codec::{CacheValue, Codec};
use crate::db::error::DbCacheError;
#[cfg(doc)]
use crate::db::tx::CacheTransaction;

/// The pool a cached fetch runs its query on, by value (`pool.clone()`) or
/// by reference (`&pool`). The query runs as a task of its own, so that a
/// caller that gives up does not cancel it for the callers waiting on the
/// same load, and the task owns a pool handle (a cheap clone).
pub trait IntoPool<DB: Database> {
    /// The owned pool handle.
    fn into_pool(self) -> Pool<DB>;
}

impl<DB: Database> IntoPool<DB> for Pool<DB> {
    fn into_pool(self) -> Pool<DB> {
        self
    }
}

impl<DB: Database> IntoPool<DB> for &Pool<DB> {
    fn into_pool(self) -> Pool<DB> {
        self.clone()
    }
}
use crate::db::query::CachedQuery;

impl<'a, T, C> CachedQuery<'a, T, C>
where
    T: CacheValue<C> + Send + Unpin,
    C: Codec,
{
    /// The one row `query` returns, cached. A query that finds no row fails
    /// with `sqlx::Error::RowNotFound` and caches nothing (use
    /// [`fetch_optional`](Self::fetch_optional) to cache absence).
    ///
    /// The query runs on `pool` (`pool.clone()` or `&pool`: the load is its
    /// own task), only on a miss. The SQL must be `&'static str` and bound values owned, since
    /// the query moves into that task.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// let (n,): (i64,) = db.named("answer").key("answer")
    ///     .fetch_one(pool.clone(), sqlx::query_as("select ? * 2").bind(21))
    ///     .await?;
    /// assert_eq!(n, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn fetch_one<DB, A>(
        self,
        pool: impl IntoPool<DB>,
        query: QueryAs<'static, DB, T, A>,
    ) -> Result<T, DbCacheError>
    where
        DB: Database,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        T: for<'r> FromRow<'r, DB::Row>,
        A: IntoArguments<'static, DB> + Send + 'static,
    {
        let pool = pool.into_pool();
        self.fetch_with(move || async move { query.fetch_one(&pool).await })
            .await
    }

    /// The row `query` returns, or `None`, cached — `None` included
    /// (negative caching, with the descriptor's
    /// [`negative_ttl`](Self::negative_ttl) if set).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// let nobody: Option<(i64,)> = db.entity("user", 7).negative_ttl(Duration::from_secs(5))
    ///     .fetch_optional(&pool, sqlx::query_as("select 1 where 0"))
    ///     .await?;
    /// assert_eq!(nobody, None);
    /// assert!(db.grid().contains_key("app:user:7").await); // the absence is cached
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn fetch_optional<DB, A>(
        self,
        pool: impl IntoPool<DB>,
        query: QueryAs<'static, DB, T, A>,
    ) -> Result<Option<T>, DbCacheError>
    where
        DB: Database,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        T: for<'r> FromRow<'r, DB::Row>,
        A: IntoArguments<'static, DB> + Send + 'static,
        Option<T>: CacheValue<C>,
    {
        let pool = pool.into_pool();
        self.fetch_optional_with(move || async move { query.fetch_optional(&pool).await })
            .await
    }

    /// Every row `query` returns, cached — an empty result included
    /// (negative caching, with the descriptor's
    /// [`negative_ttl`](Self::negative_ttl) if set).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// let rows: Vec<(i64,)> = db.collection("numbers")
    ///     .fetch_all(&pool, sqlx::query_as("select 1 union all select 2"))
    ///     .await?;
    /// assert_eq!(rows, [(1,), (2,)]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn fetch_all<DB, A>(
        self,
        pool: impl IntoPool<DB>,
        query: QueryAs<'static, DB, T, A>,
    ) -> Result<Vec<T>, DbCacheError>
    where
        DB: Database,
        for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
        T: for<'r> FromRow<'r, DB::Row>,
        A: IntoArguments<'static, DB> + Send + 'static,
        Vec<T>: CacheValue<C>,
    {
        let pool = pool.into_pool();
        self.fetch_all_with(move || async move { query.fetch_all(&pool).await })
            .await
    }
}

impl<'a, T, C> CachedQuery<'a, T, C>
where
    T: CacheValue<C> + Send + Unpin,
    C: Codec,
{
    /// [`fetch_one`](Self::fetch_one) on any executor (`&pool`, a `&mut`
    /// connection) with a query that may borrow (`.bind(&name)`, SQL built
    /// at run time). On a miss the query runs in this caller: callers that
    /// join the load wait for it, and if this caller is dropped before the
    /// query ends they get `DbCacheError::Cache(CacheError::Cancelled)`
    /// (nothing is cached). The result is cached: for a read inside a
    /// transaction use [`CacheTransaction::fetch_one`], which knows whether
    /// the transaction wrote.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
    /// let db = hydracache::db::DbCache::new(hydracache::Grid::local().build(), "app");
    /// let name = String::from("Ada");
    /// let mut conn = pool.acquire().await?;
    /// let (greeting,): (String,) = db.named("greet").key(format!("greet:{name}"))
    ///     .fetch_one_in(&mut *conn, sqlx::query_as("select 'hello ' || ?").bind(&name))
    ///     .await?;
    /// assert_eq!(greeting, "hello Ada");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn fetch_one_in<'e, 'q: 'e, DB, X, A>(
        self,
        executor: X,
        query: QueryAs<'q, DB, T, A>,
    ) -> Result<T, DbCacheError>
    where
        DB: Database,
        X: Executor<'e, Database = DB> + 'e,
        T: for<'r> FromRow<'r, DB::Row> + 'e,
        A: IntoArguments<'q, DB> + 'q,
    {
        self.run_inline(|_| false, true, move || query.fetch_one(executor))
            .await
    }

    /// [`fetch_optional`](Self::fetch_optional) on any executor with a
    /// query that may borrow; see [`fetch_one_in`](Self::fetch_one_in).
    pub async fn fetch_optional_in<'e, 'q: 'e, DB, X, A>(
        self,
        executor: X,
        query: QueryAs<'q, DB, T, A>,
    ) -> Result<Option<T>, DbCacheError>
    where
        DB: Database,
        X: Executor<'e, Database = DB> + 'e,
        T: for<'r> FromRow<'r, DB::Row> + 'e,
        A: IntoArguments<'q, DB> + 'q,
        Option<T>: CacheValue<C>,
    {
        self.retyped::<Option<T>>()
            .run_inline(
                |v: &Option<T>| v.is_none(),
                true,
                move || query.fetch_optional(executor),
            )
            .await
    }

    /// [`fetch_all`](Self::fetch_all) on any executor with a query that may
    /// borrow; see [`fetch_one_in`](Self::fetch_one_in).
    pub async fn fetch_all_in<'e, 'q: 'e, DB, X, A>(
        self,
        executor: X,
        query: QueryAs<'q, DB, T, A>,
    ) -> Result<Vec<T>, DbCacheError>
    where
        DB: Database,
        X: Executor<'e, Database = DB> + 'e,
        T: for<'r> FromRow<'r, DB::Row> + 'e,
        A: IntoArguments<'q, DB> + 'q,
        Vec<T>: CacheValue<C>,
    {
        self.retyped::<Vec<T>>()
            .run_inline(
                |v: &Vec<T>| v.is_empty(),
                true,
                move || query.fetch_all(executor),
            )
            .await
    }
}

/// Caching from the query's side, in sqlx's method-chain style:
/// `sqlx::query_as(..).bind(..).cached(descriptor).fetch_one(&pool)`.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hydracache::db::{DbCache, SqlxQueryExt};
///
/// let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
/// let db = DbCache::new(hydracache::Grid::local().build(), "app");
/// let (n,): (i64,) = sqlx::query_as("select ? + 1")
///     .bind(41)
///     .cached(db.named("plus-one").key("plus-one:41"))
///     .fetch_one(&pool)
///     .await?;
/// assert_eq!(n, 42);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub trait SqlxQueryExt<DB: Database, O, A>: Sized {
    /// Pairs the query with a descriptor; run it with `fetch_one`,
    /// `fetch_optional` or `fetch_all`.
    fn cached<C: Codec>(self, descriptor: CachedQuery<'_, O, C>) -> CachedQueryAs<'_, DB, O, A, C>;
}

impl<DB: Database, O, A> SqlxQueryExt<DB, O, A> for QueryAs<'static, DB, O, A> {
    fn cached<C: Codec>(self, descriptor: CachedQuery<'_, O, C>) -> CachedQueryAs<'_, DB, O, A, C> {
        CachedQueryAs {
            query: self,
            descriptor,
        }
    }
}

/// A `sqlx::query_as` query paired with its descriptor ([`SqlxQueryExt::cached`]).
#[must_use = "a cached query does nothing until it is fetched"]
pub struct CachedQueryAs<'a, DB: Database, O, A, C: Codec> {
    query: QueryAs<'static, DB, O, A>,
    descriptor: CachedQuery<'a, O, C>,
}

impl<'a, DB, O, A, C> CachedQueryAs<'a, DB, O, A, C>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    O: for<'r> FromRow<'r, DB::Row> + CacheValue<C> + Send + Unpin,
    A: IntoArguments<'static, DB> + Send + 'static,
    C: Codec,
{
    /// [`CachedQuery::fetch_one`].
    pub async fn fetch_one(self, pool: impl IntoPool<DB>) -> Result<O, DbCacheError> {
        self.descriptor.fetch_one(pool, self.query).await
    }

    /// [`CachedQuery::fetch_optional`].
    pub async fn fetch_optional(self, pool: impl IntoPool<DB>) -> Result<Option<O>, DbCacheError>
    where
        Option<O>: CacheValue<C>,
    {
        self.descriptor.fetch_optional(pool, self.query).await
    }

    /// [`CachedQuery::fetch_all`].
    pub async fn fetch_all(self, pool: impl IntoPool<DB>) -> Result<Vec<O>, DbCacheError>
    where
        Vec<O>: CacheValue<C>,
    {
        self.descriptor.fetch_all(pool, self.query).await
    }
}
