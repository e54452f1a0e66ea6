//! Database result caching for sqlx (feature `sqlx`).
//!
//! The database client stays in charge of pools, transactions, queries and
//! row mapping; this module owns the cache boundary: where a result lives
//! (key, tags, TTL), running the query once on a miss however many callers
//! miss together, and invalidating what a write makes stale — after the
//! commit, or when Postgres says so.
//!
//! | item | idea |
//! |---|---|
//! | [`DbCache`] | a grid plus a key namespace; makes descriptors, invalidates |
//! | [`CachedQuery`] | one query's key, tags, TTL and negative TTL; `fetch_one` / `fetch_optional` / `fetch_all` / `fetch_with` |
//! | [`SqlxQueryExt`] | `sqlx::query_as(..).cached(descriptor).fetch_one(&pool)` |
//! | [`Result`] | `Result<T, DbCacheError>` |
//! | [`QueryCachePolicy`], [`query_cache_policy!`] | a descriptor reusable across call sites |
//! | [`CacheEntity`], [`HydraCacheEntity`] | entity metadata: name, collection tag, id type |
//! | [`CacheTransaction`], [`DbCache::write`] | invalidation that follows commits |
//! | `PgInvalidationListener` (feature `sqlx-postgres`) | LISTEN/NOTIFY-driven invalidation with recovery after a dropped connection |
//! | [`DbCacheError`] | what a cached query or write fails with |
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use hydracache::db::{DbCache, HydraCacheEntity};
//! use hydracache::Grid;
//!
//! #[derive(sqlx::FromRow, HydraCacheEntity, Clone, Debug)]
//! #[derive(hydracache::rkyv::Archive, hydracache::rkyv::Serialize, hydracache::rkyv::Deserialize)]
//! #[rkyv(crate = hydracache::rkyv)]
//! #[hydracache(entity = "user", collection = "users", id = i64)]
//! struct User { id: i64, name: String }
//!
//! let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
//! sqlx::query("create table users (id integer primary key, name text not null)").execute(&pool).await?;
//! sqlx::query("insert into users values (42, 'Ada')").execute(&pool).await?;
//!
//! let db = DbCache::new(Grid::local().build(), "app");
//! let load = || db.for_entity::<User>(42)
//!     .fetch_one(&pool, sqlx::query_as("select id, name from users where id = ?").bind(42));
//! assert_eq!(load().await?.name, "Ada");          // miss: the query runs
//! assert_eq!(load().await?.name, "Ada");          // hit: it does not
//!
//! db.write(&pool, async |tx| {
//!     sqlx::query("update users set name = 'Grace' where id = 42").execute(&mut **tx).await?;
//!     tx.invalidate_entity::<User>(&42);         // applied after the commit
//!     Ok::<_, sqlx::Error>(())
//! }).await?;
//! assert_eq!(load().await?.name, "Grace");        // reloaded
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! The patterns (entity vs collection keys, negative caching, write paths,
//! NOTIFY) are described in docs/database.md.

mod cache;
mod entity;
mod error;
mod invalidations;
#[cfg(feature = "sqlx-postgres")]
mod listener;
mod payload;
mod policy;
mod query;
mod sqlx_ext;
mod stats;
mod tx;
mod value;

pub use cache::DbCache;
pub use entity::CacheEntity;
pub use error::{DbCacheError, SharedQueryError};
pub use hydracache_macros::{query_cache_policy, HydraCacheEntity};
pub use invalidations::InvalidationSet;
#[cfg(feature = "sqlx-postgres")]
pub use listener::{
    notify, notify_trigger_sql, ListenerStatus, PgInvalidationListener, PgListenerHandle, Recovery,
    DEFAULT_CHANNEL, NOTIFY_FUNCTION_SQL,
};
pub use payload::{NotifyPayload, PayloadError};
pub use policy::QueryCachePolicy;
pub use query::CachedQuery;
pub use sqlx_ext::{CachedQueryAs, IntoPool, SqlxQueryExt};
pub use stats::QueryStats;
pub use tx::CacheTransaction;

/// The result of a cached query or write: `Result<User>` is
/// `Result<User, DbCacheError>` (with `sqlx::Error` as the query's error).
pub type Result<T, E = DbCacheError> = std::result::Result<T, E>;

/// sqlx, re-exported so that the version this crate was built with is at hand.
pub use sqlx;
