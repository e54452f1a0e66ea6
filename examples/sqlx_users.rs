//! Database result caching with sqlx on an embedded SQLite database (no
//! setup): a load that runs the query, hits that do not, a concurrent burst
//! that runs it once, an update that invalidates after its commit, a
//! reload, and a cached "no such user".
//!
//! Run with `cargo run --release --example sqlx_users`.

use std::time::{Duration, Instant};

use hydracache::db::{DbCache, HydraCacheEntity};
use hydracache::rkyv::{self, Archive, Deserialize, Serialize};
use hydracache::Grid;
use sqlx::sqlite::SqlitePoolOptions;

/// A row: sqlx maps it, rkyv stores it, the derive names its cache keys.
#[derive(sqlx::FromRow, HydraCacheEntity, Archive, Serialize, Deserialize, Debug, Clone)]
#[rkyv(crate = rkyv)]
#[hydracache(entity = "user", collection = "users", id = i64)]
struct User {
    id: i64,
    name: String,
    email: String,
}

const SELECT_USER: &str = "select id, name, email from users where id = ?";

async fn load_user(
    db: &DbCache,
    pool: &sqlx::SqlitePool,
    id: i64,
) -> Result<Option<User>, hydracache::db::DbCacheError> {
    db.for_entity::<User>(id)
        .ttl(Duration::from_secs(60))
        .negative_ttl(Duration::from_secs(5))
        .fetch_optional(pool, sqlx::query_as(SELECT_USER).bind(id))
        .await
}

fn loads(db: &DbCache) -> u64 {
    db.query_stats().iter().map(|s| s.loads).sum()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One connection: an in-memory SQLite database lives in its connection.
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect("sqlite::memory:")
        .await?;
    sqlx::raw_sql(
        "create table users (id integer primary key, name text not null, email text not null);
         insert into users values (42, 'Ada', 'ada@example.com');",
    )
    .execute(&pool)
    .await?;

    let grid = Grid::local().max_capacity_bytes(64 << 20).build();
    let db = DbCache::new(grid.clone(), "app");

    println!("1. load user 42: a miss, the query runs");
    let t = Instant::now();
    let ada = load_user(&db, &pool, 42).await?.expect("seeded");
    println!(
        "   {ada:?} in {:?}, queries so far: {}",
        t.elapsed(),
        loads(&db)
    );

    println!("2. load it again: a hit, no query");
    let t = Instant::now();
    let again = load_user(&db, &pool, 42).await?.expect("cached");
    println!(
        "   {} in {:?}, queries so far: {}",
        again.name,
        t.elapsed(),
        loads(&db)
    );
    assert_eq!(loads(&db), 1);

    println!("3. 100 concurrent loads after an invalidation: one query between them");
    db.invalidate_entity::<User>(&42).await?;
    let callers: Vec<_> = (0..100)
        .map(|_| {
            let (db, pool) = (db.clone(), pool.clone());
            tokio::spawn(async move { load_user(&db, &pool, 42).await })
        })
        .collect();
    for c in callers {
        c.await??;
    }
    println!("   queries so far: {}", loads(&db));
    assert_eq!(loads(&db), 2);

    println!("4. update the row in a transaction; the cache is invalidated after the commit");
    db.write(&pool, async |tx| {
        sqlx::query("update users set name = 'Ada Lovelace' where id = 42")
            .execute(&mut **tx)
            .await?;
        tx.invalidate_entity::<User>(&42); // user:42 and users, once committed
        Ok::<_, sqlx::Error>(())
    })
    .await?;
    println!(
        "   cached after commit: {}",
        grid.contains_key("app:user:42").await
    );

    println!("5. reload: the query runs and reads the committed row");
    let updated = load_user(&db, &pool, 42).await?.expect("still there");
    println!("   {} (queries so far: {})", updated.name, loads(&db));
    assert_eq!(updated.name, "Ada Lovelace");

    println!("6. a user that does not exist: the absence is cached for 5 s");
    let before = loads(&db);
    for _ in 0..3 {
        assert!(load_user(&db, &pool, 7).await?.is_none());
    }
    println!("   3 lookups of user 7, queries: {}", loads(&db) - before);
    assert_eq!(loads(&db) - before, 1);

    let s = &db.query_stats()[0];
    println!(
        "\nquery {:?}: {} hits, {} misses ({} ran the query, the others shared a query in flight)",
        s.name, s.hits, s.misses, s.loads
    );
    Ok(())
}
