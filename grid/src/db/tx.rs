//! Invalidation that follows commits: `CacheTransaction` records what a
//! write makes stale and invalidates it once the transaction has committed.

use std::error::Error as StdError;
use std::ops::{Deref, DerefMut};

use sqlx::query::QueryAs;
use sqlx::{Database, Executor, FromRow, IntoArguments, Pool, Transaction};

use crate::codec::{CacheValue, Codec, Rkyv};
use crate::db::cache::DbCache;
use crate::db::entity::CacheEntity;
use crate::db::error::DbCacheError;
use crate::db::invalidations::InvalidationSet;
use crate::db::query::CachedQuery;

/// A sqlx transaction that invalidates cache entries after it commits.
///
/// Run queries on it exactly as on a `sqlx::Transaction` (`&mut *tx` is
/// the connection), record what the write makes stale with the
/// `invalidate_*` methods, then:
///
/// - [`commit`](Self::commit): the transaction commits, *then* the
///   recorded keys and tags are invalidated. A reader that loaded the old
///   row before the commit either sees its entry invalidated or, if its
///   load was still running, has its result refused by the cache (an
///   invalidation wins over a load in flight); a reader after the
///   invalidation reads the committed row.
/// - [`rollback`](Self::rollback), or dropping it: the transaction rolls
///   back and nothing is invalidated.
/// - If the COMMIT itself fails: when the server refused it (a deferred
///   constraint, a serialization failure) the transaction did not commit
///   and nothing is invalidated; when the connection failed or was
///   terminated around it, the client cannot know the outcome and the
///   entries are invalidated anyway — a spurious reload is cheaper than a
///   stale read. Either way the commit's error is returned.
///
/// Reads inside the transaction go through the cache with
/// [`fetch_one`](Self::fetch_one), [`fetch_optional`](Self::fetch_optional)
/// and [`fetch_all`](Self::fetch_all): a hit is served from the cache; a
/// miss runs the query on the transaction and caches the rows only while
/// the transaction has recorded no invalidation. Once it has (it wrote),
/// what it reads may never commit, so those rows go to the caller and are
/// not cached. A write that records no invalidation is invisible to this
/// rule, as it is to the cache after the commit: record what you write.
/// A hit is the committed row the cache holds, not this transaction's own
/// change to it: to read your own writes, query the transaction directly.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hydracache::{db::DbCache, CacheOptions, Grid};
///
/// let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
/// sqlx::query("create table users (id integer primary key, name text)").execute(&pool).await?;
/// let db = DbCache::new(Grid::local().build(), "app");
/// db.grid().put("app:user:1", "old".to_string(), CacheOptions::new().tag("user:1")).await?;
///
/// let mut tx = db.begin(&pool).await?;
/// sqlx::query("insert into users values (1, 'Ada')").execute(&mut *tx).await?;
/// tx.invalidate_tag("user:1");
/// assert!(db.grid().contains_key("app:user:1").await); // not yet: not committed
/// tx.commit().await?;
/// assert!(!db.grid().contains_key("app:user:1").await);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct CacheTransaction<'c, DB: Database, C: Codec = Rkyv> {
    tx: Transaction<'c, DB>,
    cache: DbCache<C>,
    pending: InvalidationSet,
}

impl<'c, DB: Database, C: Codec> std::fmt::Debug for CacheTransaction<'c, DB, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheTransaction")
            .field("namespace", &self.cache.namespace())
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<C: Codec> DbCache<C> {
    /// Begins a transaction on `pool` whose recorded invalidations apply
    /// after it commits.
    pub async fn begin<DB: Database>(
        &self,
        pool: &Pool<DB>,
    ) -> Result<CacheTransaction<'static, DB, C>, sqlx::Error> {
        Ok(self.with_transaction(pool.begin().await?))
    }

    /// Wraps a transaction you began yourself (on a connection, or nested).
    pub fn with_transaction<'c, DB: Database>(
        &self,
        tx: Transaction<'c, DB>,
    ) -> CacheTransaction<'c, DB, C> {
        CacheTransaction {
            tx,
            cache: self.clone(),
            pending: InvalidationSet::new(),
        }
    }

    /// Runs `write` in a transaction on `pool`: commits and then
    /// invalidates what it recorded if it returns `Ok`, rolls back and
    /// invalidates nothing if it returns `Err` (its error comes back in
    /// [`DbCacheError::Database`]). See [`CacheTransaction`] for the
    /// guarantees.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::{db::DbCache, CacheOptions, Grid};
    ///
    /// let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
    /// sqlx::query("create table users (id integer primary key, name text)").execute(&pool).await?;
    /// let db = DbCache::new(Grid::local().build(), "app");
    /// db.grid().put("app:users", 0u32, CacheOptions::new().tag("users")).await?;
    ///
    /// let id: i64 = db
    ///     .write(&pool, async |tx| {
    ///         let (id,): (i64,) = sqlx::query_as("insert into users (name) values ('Ada') returning id")
    ///             .fetch_one(&mut **tx)
    ///             .await?;
    ///         tx.invalidate_tag("users").invalidate_tag(format!("user:{id}"));
    ///         Ok::<_, sqlx::Error>(id)
    ///     })
    ///     .await?;
    /// assert_eq!(id, 1);
    /// assert!(!db.grid().contains_key("app:users").await);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn write<DB, R, E, F>(&self, pool: &Pool<DB>, write: F) -> Result<R, DbCacheError<E>>
    where
        DB: Database,
        F: AsyncFnOnce(&mut CacheTransaction<'static, DB, C>) -> Result<R, E>,
        E: From<sqlx::Error> + StdError,
    {
        let mut tx = self
            .begin(pool)
            .await
            .map_err(|e| DbCacheError::Database(E::from(e)))?;
        match write(&mut tx).await {
            Ok(r) => {
                tx.commit_mapped(E::from).await?;
                Ok(r)
            }
            Err(e) => {
                // If the rollback itself fails the connection is closed, and
                // the server rolls back with it: nothing committed either way.
                let _ = tx.rollback().await;
                Err(DbCacheError::Database(e))
            }
        }
    }
}

impl<'c, DB: Database, C: Codec> CacheTransaction<'c, DB, C> {
    /// Invalidates `key` (in the cache's namespace) after the commit.
    pub fn invalidate_key(&mut self, key: impl Into<String>) -> &mut Self {
        self.pending.add_key(key);
        self
    }

    /// Invalidates `tag` after the commit.
    pub fn invalidate_tag(&mut self, tag: impl Into<String>) -> &mut Self {
        self.pending.add_tag(tag);
        self
    }

    /// Invalidates `tags` after the commit.
    pub fn invalidate_tags<S: Into<String>>(
        &mut self,
        tags: impl IntoIterator<Item = S>,
    ) -> &mut Self {
        for t in tags {
            self.pending.add_tag(t);
        }
        self
    }

    /// Invalidates entity `E` with `id` — its tag and its collection tag —
    /// after the commit.
    pub fn invalidate_entity<E: CacheEntity>(&mut self, id: &E::Id) -> &mut Self {
        self.pending.add_tag(E::cache_tag(id));
        if let Some(tag) = E::collection_tag() {
            self.pending.add_tag(tag);
        }
        self
    }

    /// Invalidates everything in `set` after the commit.
    pub fn invalidate(&mut self, set: InvalidationSet) -> &mut Self {
        self.pending.extend(set);
        self
    }

    /// What the commit will invalidate.
    pub fn pending(&self) -> &InvalidationSet {
        &self.pending
    }

    /// The one row `query` returns, read through the cache on this
    /// transaction's connection; cached only if the transaction has
    /// recorded no invalidation yet (see [`CacheTransaction`]). The query
    /// may borrow (`.bind(&name)`).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::{db::DbCache, Grid};
    ///
    /// let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
    /// sqlx::query("create table users (id integer primary key, name text)").execute(&pool).await?;
    /// let db = DbCache::new(Grid::local().build(), "app");
    /// let mut tx = db.begin(&pool).await?;
    /// sqlx::query("insert into users values (1, 'Ada')").execute(&mut *tx).await?;
    /// tx.invalidate_tag("user:1");
    /// let (name,): (String,) = tx
    ///     .fetch_one(db.entity("user", 1), sqlx::query_as("select name from users where id = ?").bind(1))
    ///     .await?;
    /// assert_eq!(name, "Ada");
    /// assert!(!db.grid().contains_key("app:user:1").await); // it wrote: not cached
    /// tx.rollback().await?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub async fn fetch_one<'q, T, A>(
        &mut self,
        descriptor: CachedQuery<'_, T, C>,
        query: QueryAs<'q, DB, T, A>,
    ) -> Result<T, DbCacheError>
    where
        for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
        T: CacheValue<C> + Send + Unpin + for<'r> FromRow<'r, DB::Row>,
        A: IntoArguments<'q, DB> + 'q,
    {
        let store = self.pending.is_empty();
        let conn: &mut DB::Connection = &mut self.tx;
        descriptor
            .run_inline(|_| false, store, move || query.fetch_one(conn))
            .await
    }

    /// [`fetch_one`](Self::fetch_one) for a row that may be missing;
    /// `None` is cached too under the same rule.
    pub async fn fetch_optional<'q, T, A>(
        &mut self,
        descriptor: CachedQuery<'_, T, C>,
        query: QueryAs<'q, DB, T, A>,
    ) -> Result<Option<T>, DbCacheError>
    where
        for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
        T: CacheValue<C> + Send + Unpin + for<'r> FromRow<'r, DB::Row>,
        Option<T>: CacheValue<C>,
        A: IntoArguments<'q, DB> + 'q,
    {
        let store = self.pending.is_empty();
        let conn: &mut DB::Connection = &mut self.tx;
        descriptor
            .retyped::<Option<T>>()
            .run_inline(
                |v: &Option<T>| v.is_none(),
                store,
                move || query.fetch_optional(conn),
            )
            .await
    }

    /// [`fetch_one`](Self::fetch_one) for many rows; an empty result is
    /// cached too under the same rule.
    pub async fn fetch_all<'q, T, A>(
        &mut self,
        descriptor: CachedQuery<'_, T, C>,
        query: QueryAs<'q, DB, T, A>,
    ) -> Result<Vec<T>, DbCacheError>
    where
        for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
        T: CacheValue<C> + Send + Unpin + for<'r> FromRow<'r, DB::Row>,
        Vec<T>: CacheValue<C>,
        A: IntoArguments<'q, DB> + 'q,
    {
        let store = self.pending.is_empty();
        let conn: &mut DB::Connection = &mut self.tx;
        descriptor
            .retyped::<Vec<T>>()
            .run_inline(
                |v: &Vec<T>| v.is_empty(),
                store,
                move || query.fetch_all(conn),
            )
            .await
    }

    /// The sqlx transaction.
    pub fn transaction(&mut self) -> &mut Transaction<'c, DB> {
        &mut self.tx
    }

    /// Commits, then invalidates what was recorded. See [`CacheTransaction`]
    /// for what happens when the commit fails.
    pub async fn commit(self) -> Result<(), DbCacheError> {
        self.commit_mapped(|e| e).await
    }

    /// Rolls back; nothing is invalidated.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }

    async fn commit_mapped<E>(
        self,
        map: impl FnOnce(sqlx::Error) -> E,
    ) -> Result<(), DbCacheError<E>> {
        let CacheTransaction { tx, cache, pending } = self;
        match tx.commit().await {
            Ok(()) => cache
                .invalidate(&pending)
                .await
                .map_err(DbCacheError::InvalidationAfterCommit),
            Err(e) => {
                if commit_outcome_unknown(&e) {
                    // Best effort: the commit's own error is what the caller needs.
                    let _ = cache.invalidate(&pending).await;
                }
                Err(DbCacheError::Database(map(e)))
            }
        }
    }
}

/// Whether a failed COMMIT may have committed all the same.
///
/// A server's error answer to COMMIT means it did not commit — unless the
/// error is about the connection going away (SQLSTATE class 08, connection
/// exception, or 57P, operator intervention: a terminated backend, a server
/// shutting down or crashing), which a backend can report at any moment,
/// the moment just after its commit reached the disk included. Any other
/// failure (I/O, a closed pool, a protocol error) leaves the outcome unknown.
fn commit_outcome_unknown(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => db
            .code()
            .is_none_or(|code| code.starts_with("08") || code.starts_with("57P")),
        _ => true,
    }
}

impl<'c, DB: Database, C: Codec> Deref for CacheTransaction<'c, DB, C> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<'c, DB: Database, C: Codec> DerefMut for CacheTransaction<'c, DB, C> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

#[cfg(all(test, feature = "sqlx-sqlite"))]
mod tests {
    use sqlx::sqlite::SqlitePoolOptions;

    use crate::db::{DbCache, DbCacheError};
    use crate::error::CacheError;
    use crate::test_remote::grid_with_failing_fan_out;

    #[tokio::test]
    async fn an_invalidation_that_fails_after_the_commit_is_reported_as_such() {
        let db = DbCache::new(grid_with_failing_fan_out(), "app");
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::query("create table t (x integer)")
            .execute(&pool)
            .await
            .unwrap();

        let mut tx = db.begin(&pool).await.unwrap();
        sqlx::query("insert into t values (1)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.invalidate_tag("t");
        let err = tx.commit().await.unwrap_err();
        assert!(
            matches!(
                err,
                DbCacheError::InvalidationAfterCommit(CacheError::Cancelled)
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("committed"), "{err}");

        let err = db
            .write(&pool, async |tx| {
                sqlx::query("insert into t values (2)")
                    .execute(&mut **tx)
                    .await?;
                tx.invalidate_key("k");
                Ok::<_, sqlx::Error>(())
            })
            .await
            .unwrap_err();
        assert!(
            matches!(err, DbCacheError::InvalidationAfterCommit(_)),
            "{err:?}"
        );

        let rows: i64 = sqlx::query_scalar("select count(*) from t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(rows, 2, "both writes committed");
    }
}
