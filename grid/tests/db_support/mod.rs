//! Shared fixtures of the database tests: row types, a SQLite database
//! that counts the queries it runs, and a Postgres schema of its own per test.
#![allow(dead_code)]

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hydracache::db::HydraCacheEntity;
use hydracache::rkyv;
#[cfg(feature = "sqlx-postgres")]
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::SqlitePool;
#[cfg(feature = "sqlx-postgres")]
use sqlx::{Connection, PgPool};

/// A row type for the rkyv codec (the grid's default).
#[derive(
    sqlx::FromRow,
    HydraCacheEntity,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    Clone,
    Debug,
    PartialEq,
)]
#[rkyv(crate = hydracache::rkyv)]
#[hydracache(entity = "user", collection = "users", id = i64)]
pub struct User {
    pub id: i64,
    pub name: String,
}

/// The same row for the serde (Postcard) codec.
#[derive(
    sqlx::FromRow, HydraCacheEntity, serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq,
)]
#[hydracache(entity = "user", collection = "users", id = i64)]
pub struct SerdeUser {
    pub id: i64,
    pub name: String,
}

pub fn user(id: i64, name: &str) -> User {
    User {
        id,
        name: name.to_string(),
    }
}

/// An SQLite database with `users` (1 Ada, 2 Grace) on a pool of one
/// connection, and the number of statements run on the pool since.
pub struct Sqlite {
    pub pool: SqlitePool,
    queries: Arc<AtomicU64>,
}

impl Sqlite {
    /// An in-memory database (one connection: each connection to
    /// `sqlite::memory:` is a database of its own).
    pub async fn memory() -> Sqlite {
        Self::open(SqliteConnectOptions::from_str("sqlite::memory:").unwrap()).await
    }

    /// A database in a fresh file under the system's temp dir.
    pub async fn file(name: &str) -> Sqlite {
        let path = std::env::temp_dir().join(format!(
            "hydracache-{name}-{}-{}.db",
            std::process::id(),
            UNIQUE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        Self::open(
            SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true),
        )
        .await
    }

    async fn open(options: SqliteConnectOptions) -> Sqlite {
        let queries = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&queries);
        // Every statement run on the pool acquires its one idle connection:
        // counting acquisitions counts the queries that reach the database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .before_acquire(move |_, _| {
                counter.fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Ok(true) })
            })
            .connect_with(options)
            .await
            .unwrap();
        sqlx::raw_sql(
            "create table users (id integer primary key, name text not null);
             insert into users (id, name) values (1, 'Ada'), (2, 'Grace');",
        )
        .execute(&pool)
        .await
        .unwrap();
        Sqlite { pool, queries }
    }

    /// Statements run on the pool so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

#[cfg(feature = "sqlx-postgres")]
/// A Postgres schema of this test's own (tables `users` (1 Ada, 2 Grace)
/// and `audit`, sequence `reads`), on the server `DATABASE_URL` names.
pub struct Pg {
    pub pool: PgPool,
    /// Connect options with this schema on the search path.
    pub options: PgConnectOptions,
    pub schema: String,
}

#[cfg(feature = "sqlx-postgres")]
/// `SELECT` of one user that bumps the `reads` sequence each time it runs
/// on the server, whether it finds a row or not.
/// (The uncorrelated subquery is a one-time filter: it runs once per
/// execution, before any row is read.)
pub const PG_SELECT_USER: &str =
    "select id, name from users where (select nextval('reads')) > 0 and id = $1";
#[cfg(feature = "sqlx-postgres")]
/// `SELECT` of users with `name` (any number of rows), counted like [`PG_SELECT_USER`].
pub const PG_SELECT_USERS_NAMED: &str =
    "select id, name from users where (select nextval('reads')) > 0 and name = $1 order by id";

#[cfg(feature = "sqlx-postgres")]
/// The Postgres fixture, or `None` (with the reason printed) when
/// `DATABASE_URL` is unset outside CI. Under CI (`CI=true`) a missing
/// server is a failure.
pub async fn pg(test: &str) -> Option<Pg> {
    let url = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "DATABASE_URL is not set, and under CI the Postgres tests must run: \
                     .ci/run installs and starts Postgres and exports DATABASE_URL"
                );
            }
            eprintln!(
                "skipping {test}: DATABASE_URL is not set (run .ci/run, or export \
                 DATABASE_URL=postgres://user:password@127.0.0.1:5432/db)"
            );
            return None;
        }
    };
    let base = PgConnectOptions::from_str(&url).expect("DATABASE_URL is a postgres:// URL");
    let label: String = test
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(24)
        .collect();
    let schema = format!(
        "t_{}_{}_{}",
        label.to_lowercase(),
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = sqlx::PgConnection::connect_with(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to DATABASE_URL: {e}"));
    sqlx::raw_sql(&format!(
        "drop schema if exists {schema} cascade;
         create schema {schema};
         set search_path to {schema};
         create table users (id bigint primary key, name text not null);
         insert into users (id, name) values (1, 'Ada'), (2, 'Grace');
         create table audit (id bigint primary key, user_id bigint not null);
         create sequence reads;"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    let options = base.options([("search_path", schema.as_str())]);
    let pool = PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options.clone())
        .await
        .unwrap();
    Some(Pg {
        pool,
        options,
        schema,
    })
}

#[cfg(feature = "sqlx-postgres")]
impl Pg {
    /// How many times the counted queries ran on the server.
    pub async fn reads(&self) -> i64 {
        sqlx::query_scalar("select case when is_called then last_value else 0 end from reads")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Drops the schema.
    pub async fn cleanup(self) {
        sqlx::raw_sql(&format!("drop schema if exists {} cascade", self.schema))
            .execute(&self.pool)
            .await
            .unwrap();
        self.pool.close().await;
    }
}

/// Polls `check` until it holds, failing after 30 s (a bound on a wait,
/// not a timing assertion).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
