//! `DbCacheError`: what a cached query or a cached write can fail with.

use std::error::Error as StdError;
use std::fmt;

use crate::error::CacheError;

/// Why a cached query or write failed. `E` is the loader's error type:
/// `sqlx::Error` for [`fetch_one`](crate::db::CachedQuery::fetch_one) and
/// friends, whatever your closure returns for
/// [`fetch_with`](crate::db::CachedQuery::fetch_with). Nothing is cached
/// when a query fails.
///
/// **Who gets the original error.** Concurrent misses for one key run the
/// query once (single-flight). The call whose query ran gets its error
/// unchanged, by value, in [`DbCacheError::Database`]. The calls that waited
/// on that same query get [`DbCacheError::Shared`]: the error's message and
/// its classification (row not found, SQLSTATE code), because `sqlx::Error`
/// cannot be cloned. Code that matches on the error should use the
/// accessors that work for both: [`DbCacheError::is_row_not_found`],
/// [`DbCacheError::database_code`].
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hydracache::db::{DbCache, DbCacheError};
///
/// let db = DbCache::new(hydracache::Grid::local().build(), "app");
/// let err = db
///     .named::<u64>("count-users")
///     .key("users:count")
///     .fetch_with(|| async { Err::<u64, _>(sqlx::Error::RowNotFound) })
///     .await
///     .unwrap_err();
/// assert!(matches!(err, DbCacheError::Database(sqlx::Error::RowNotFound)));
/// assert!(err.is_row_not_found());
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbCacheError<E = sqlx::Error> {
    /// This call ran the query (or the write) and it failed: the error as
    /// the database client or your closure returned it.
    #[error(transparent)]
    Database(E),
    /// The query failed on a load that another concurrent call started;
    /// this call waited on it and shares its outcome. The next call runs
    /// the query again.
    #[error(transparent)]
    Shared(SharedQueryError),
    /// The descriptor has no cache key: set one with `.key(..)`, or build
    /// the descriptor with `entity`, `collection` or `for_entity`.
    #[error("query {query:?} has no cache key: set one with .key(..), or use entity(..), collection(..) or for_entity(..)")]
    MissingKey {
        /// The query's name.
        query: String,
    },
    /// The cache refused the call: an over-long key, too many tags, a
    /// value that does not encode or decode with the grid's codec, a
    /// panicking loader, or a runtime shutting down. The query result, if
    /// there was one, was not cached.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// The transaction committed, but invalidating the cache afterwards
    /// failed (only possible when invalidations leave the process, in a
    /// grid). The entries may be stale until their TTL: retry the
    /// invalidation.
    #[error("the transaction committed, but invalidating the cache failed (entries may be stale until their TTL; retry the invalidation): {0}")]
    InvalidationAfterCommit(CacheError),
}

impl<E> DbCacheError<E> {
    /// The original error, if this call ran the failing query.
    pub fn database_error(&self) -> Option<&E> {
        match self {
            DbCacheError::Database(e) => Some(e),
            _ => None,
        }
    }

    /// The original error, by value, if this call ran the failing query.
    pub fn into_database_error(self) -> Option<E> {
        match self {
            DbCacheError::Database(e) => Some(e),
            _ => None,
        }
    }
}

impl<E: StdError + 'static> DbCacheError<E> {
    /// True if the query failed because it found no row (`sqlx::Error::RowNotFound`,
    /// from `fetch_one`), whether this call ran it or shared it.
    pub fn is_row_not_found(&self) -> bool {
        match self {
            DbCacheError::Database(e) => classify(e).row_not_found,
            DbCacheError::Shared(s) => s.row_not_found,
            _ => false,
        }
    }

    /// The database's SQLSTATE code (e.g. `"23505"` for a unique violation)
    /// if the query failed with a database error, whether this call ran it
    /// or shared it.
    pub fn database_code(&self) -> Option<String> {
        match self {
            DbCacheError::Database(e) => classify(e).database_code,
            DbCacheError::Shared(s) => s.database_code.clone(),
            _ => None,
        }
    }
}

/// A failed query's error as the calls that shared it see it: the same
/// message, and what kind of failure it was. See [`DbCacheError`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedQueryError {
    message: String,
    row_not_found: bool,
    database_code: Option<String>,
}

impl SharedQueryError {
    pub(crate) fn from_error<E: StdError + 'static>(e: &E) -> Self {
        let c = classify(e);
        SharedQueryError {
            message: e.to_string(),
            row_not_found: c.row_not_found,
            database_code: c.database_code,
        }
    }

    /// The original error's message (its `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True if the query found no row (`sqlx::Error::RowNotFound`).
    pub fn is_row_not_found(&self) -> bool {
        self.row_not_found
    }

    /// The database's SQLSTATE code, if it was a database error.
    pub fn database_code(&self) -> Option<&str> {
        self.database_code.as_deref()
    }
}

impl fmt::Display for SharedQueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for SharedQueryError {}

struct Class {
    row_not_found: bool,
    database_code: Option<String>,
}

/// What kind of failure `e` is, looking through to a `sqlx::Error` if it is one.
fn classify<E: StdError + 'static>(e: &E) -> Class {
    let e: &(dyn StdError + 'static) = e;
    match e.downcast_ref::<sqlx::Error>() {
        Some(sqlx::Error::RowNotFound) => Class {
            row_not_found: true,
            database_code: None,
        },
        Some(sqlx::Error::Database(db)) => Class {
            row_not_found: false,
            database_code: db.code().map(|c| c.into_owned()),
        },
        _ => Class {
            row_not_found: false,
            database_code: None,
        },
    }
}
