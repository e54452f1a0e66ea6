//! A cached `fetch_one` hit against the same query run uncached, on SQLite
//! in memory and on Postgres (when DATABASE_URL is set), side by side in
//! one process, printing the ratio.
//!
//! ```sh
//! cargo bench -p hydracache --features sqlx-postgres,sqlx-sqlite --bench db
//! DATABASE_URL=postgres://user:pass@127.0.0.1:5432/db cargo bench -p hydracache --features sqlx-postgres,sqlx-sqlite --bench db
//! ```
//!
//! Each subject runs for a fixed time per round; rounds alternate between
//! subjects (so drift on a shared machine hits all of them), and the median
//! round is reported. Keys cycle over 1,000 rows, every one cached before
//! the cached rounds start, so every cached call is a hit.

use std::future::Future;
use std::hint::black_box;
use std::str::FromStr;
use std::time::{Duration, Instant};

use hydracache::db::DbCache;
use hydracache::rkyv::{self, Archive, Deserialize, Serialize};
use hydracache::Grid;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Connection, Database, Executor, IntoArguments, Pool};

const ROWS: i64 = 1_000;
const ROUNDS: usize = 7;
const ROUND: Duration = Duration::from_millis(300);

#[derive(sqlx::FromRow, Archive, Serialize, Deserialize, Clone, Debug)]
#[rkyv(crate = rkyv)]
struct User {
    id: i64,
    name: String,
    email: String,
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        println!("cached fetch_one hit vs the uncached query, {ROWS} rows, median of {ROUNDS} rounds of {ROUND:?}\n");
        println!("{:<10} {:<28} {:>12} {:>14}", "database", "subject", "ns/op", "ops/s");
        sqlite().await;
        postgres().await;
    });
}

async fn sqlite() {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    sqlx::query(
        "create table users (id integer primary key, name text not null, email text not null)",
    )
    .execute(&pool)
    .await
    .unwrap();
    seed(&pool, "insert into users values (?, ?, ?)").await;
    compare(
        "sqlite",
        &pool,
        "select id, name, email from users where id = ?",
    )
    .await;
}

async fn postgres() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        println!("{:<10} skipped: DATABASE_URL is not set", "postgres");
        return;
    };
    let schema = format!("bench_{}", std::process::id());
    let base = PgConnectOptions::from_str(&url).expect("DATABASE_URL is a postgres:// URL");
    let mut admin = sqlx::PgConnection::connect_with(&base).await.unwrap();
    sqlx::raw_sql(&format!(
        "create schema {schema}; create table {schema}.users (id bigint primary key, name text not null, email text not null)"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(base.options([("search_path", schema.as_str())]))
        .await
        .unwrap();
    seed(&pool, "insert into users values ($1, $2, $3)").await;
    compare(
        "postgres",
        &pool,
        "select id, name, email from users where id = $1",
    )
    .await;
    pool.close().await;
    sqlx::raw_sql(&format!("drop schema {schema} cascade"))
        .execute(&mut admin)
        .await
        .unwrap();
}

async fn seed<DB>(pool: &Pool<DB>, insert: &'static str)
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for id in 0..ROWS {
        sqlx::query(insert)
            .bind(id)
            .bind(format!("user {id}"))
            .bind(format!("user{id}@example.com"))
            .execute(pool)
            .await
            .unwrap();
    }
}

async fn compare<DB>(label: &str, pool: &Pool<DB>, select: &'static str)
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> <DB as Database>::Arguments<'q>: IntoArguments<'q, DB>,
    <DB as Database>::Arguments<'static>: Send,
    User: for<'r> sqlx::FromRow<'r, DB::Row>,
    i64: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    let db = DbCache::new(Grid::local().max_capacity_bytes(64 << 20).build(), "bench");
    let cached = |id: i64| {
        db.entity::<User>("user", id)
            .fetch_one(pool, sqlx::query_as(select).bind(id))
    };
    for id in 0..ROWS {
        cached(id).await.unwrap();
    }
    let uncached = |id: i64| sqlx::query_as::<_, User>(select).bind(id).fetch_one(pool);
    let grid_get = |id: i64| {
        let grid = db.grid().clone();
        async move { grid.get::<User>(&format!("bench:user:{id}")).await }
    };

    let mut rounds = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        rounds[0].push(round(|id| async move { black_box(cached(id).await.unwrap()) }).await);
        rounds[1].push(round(|id| async move { black_box(uncached(id).await.unwrap()) }).await);
        rounds[2].push(round(|id| async move { black_box(grid_get(id).await.unwrap()) }).await);
    }
    let [hit, query, get] = rounds.map(median);
    let loads: u64 = db.query_stats().iter().map(|s| s.loads).sum();
    assert_eq!(loads, ROWS as u64, "every measured cached call was a hit");

    row(label, "cached fetch_one (hit)", hit);
    row(label, "uncached query", query);
    row(label, "grid.get (no db layer)", get);
    println!(
        "{label:<10} ratio: a cached hit is {:.0}x faster than the query ({:.2}x the cost of a bare grid.get)\n",
        query / hit,
        hit / get
    );
}

/// ns per call of `op` over one round.
async fn round<F, Fut, T>(mut op: F) -> f64
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = T>,
{
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < ROUND {
        for _ in 0..64 {
            black_box(op((n % ROWS as u64) as i64).await);
            n += 1;
        }
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn row(label: &str, subject: &str, ns: f64) {
    println!("{label:<10} {subject:<28} {ns:>12.0} {:>14.0}", 1e9 / ns);
}
