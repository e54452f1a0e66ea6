//! The HydraCache documentation's examples, written as its readers write
//! them, with only four mechanical renames: `HydraCache` -> `Grid`,
//! `hydracache_sqlx::` / `hydracache_db::` -> `hydracache::db::`,
//! `CacheResult<()>` -> `Result<(), Box<dyn Error>>`, and
//! `.max_capacity(n)` -> `.max_capacity_bytes(..)`.
//!
//! Where this library deliberately differs, the example is written the way
//! docs/migrating.md says, and a comment names the case.

use std::error::Error;
use std::time::Duration;

use hydracache::{
    cacheable, cacheable_infallible, CacheEventKind, CacheKeyBuilder, CacheOptions, Grid, Postcard,
    TagSet,
};
use serde::{Deserialize, Serialize};

type CacheResult<T> = Result<T, Box<dyn Error>>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

async fn load_user(id: u64) -> Result<User, std::io::Error> {
    Ok(User {
        id,
        name: "Ada".to_string(),
    })
}

// 1. Quick start.
#[tokio::test]
async fn quick_start() -> CacheResult<()> {
    // migrating.md, "serde values": a serde type names the Postcard codec.
    let cache = Grid::local()
        .codec::<Postcard>()
        .max_capacity_bytes(256 << 20)
        .default_ttl(Duration::from_secs(300))
        .build();

    let user: User = cache
        .get_or_load(
            "user:42",
            CacheOptions::new()
                .ttl(Duration::from_secs(60))
                .tags(["users", "user:42"]),
            || async { load_user(42).await },
        )
        .await?;
    assert_eq!(user.name, "Ada");

    cache.invalidate_tag("user:42").await?;
    assert!(!cache.contains_key("user:42").await);
    Ok(())
}

// 2. Reading and writing values.
#[tokio::test]
async fn put_get_and_remove() -> CacheResult<()> {
    let cache = Grid::local().max_capacity_bytes(64 << 20).build();

    // migrating.md, "&str values": text is stored as a `String`.
    cache
        .put("user:42", "Ada".to_string(), CacheOptions::new())
        .await?;
    let name: Option<String> = cache.get("user:42").await?;
    assert_eq!(name.as_deref(), Some("Ada"));

    cache
        .put(
            "visits",
            7u64,
            CacheOptions::new().ttl(Duration::from_secs(60)),
        )
        .await?;
    assert_eq!(cache.get::<u64>("visits").await?, Some(7));

    assert!(cache.remove("user:42").await?);
    assert_eq!(cache.get::<String>("user:42").await?, None);
    Ok(())
}

// 3. Keys and tags.
#[tokio::test]
async fn keys_and_tags() -> CacheResult<()> {
    let cache = Grid::local().build();
    let key = CacheKeyBuilder::new()
        .tenant(7)
        .entity("user", 42)
        .build_string();
    assert_eq!(key, "tenant:7:user:42");

    let tags = TagSet::new().tenant(7).entity("user", 42).tag("profiles");
    cache
        .put(&key, "Ada".to_string(), CacheOptions::new().tag_set(tags))
        .await?;
    assert!(cache.contains_key(&key).await);

    cache.invalidate_tag("tenant:7").await?;
    assert!(!cache.contains_key(&key).await);
    Ok(())
}

// 4. Typed caches.
#[tokio::test]
async fn typed_cache() -> CacheResult<()> {
    let cache = Grid::local().codec::<Postcard>().build();
    let users = cache.typed::<User>("user");
    let mut events = users.subscribe_key("42");

    let user = users
        .get_or_load("42", CacheOptions::new().tag("users"), || async {
            load_user(42).await
        })
        .await?;
    assert_eq!(user.id, 42);
    assert_eq!(users.get("42").await?, Some(user));

    let event = events.next_event().await?;
    assert_eq!(event.kind(), CacheEventKind::Stored);
    assert_eq!(event.key(), Some("user:42"));
    Ok(())
}

// 5. cacheable! with a loader closure and a tag set.
#[tokio::test]
async fn cacheable_macro() -> CacheResult<()> {
    let cache = Grid::local().codec::<Postcard>().build();
    let user: User = cacheable!(
        cache = cache,
        key = "user:42",
        tags = TagSet::new().entity("user", 42).tag("users"),
        ttl_secs = 60,
        load = || async { load_user(42).await },
    )
    .await?;
    assert_eq!(user.id, 42);
    assert!(cache.contains_key("user:42").await);
    Ok(())
}

// 6. cacheable! with a loader that owns what it captures.
#[tokio::test]
async fn cacheable_macro_with_a_move_closure() -> CacheResult<()> {
    let cache = Grid::local().codec::<Postcard>().build();
    let id = 7;
    let user: User = cacheable!(
        cache = cache,
        key = format!("user:{id}"),
        tag = "users",
        load = move || async move { load_user(id).await },
    )
    .await?;
    assert_eq!(user.id, 7);
    Ok(())
}

// 7. cacheable_infallible!
#[tokio::test]
async fn cacheable_infallible_macro() -> CacheResult<()> {
    let cache = Grid::local().build();
    let answer: u64 =
        cacheable_infallible!(cache = cache, key = "answer", load = || async { 42 },).await?;
    assert_eq!(answer, 42);
    Ok(())
}

// 8. Events.
#[tokio::test]
async fn events() -> CacheResult<()> {
    let cache = Grid::local().build();
    let mut subscription = cache.subscribe();

    cache
        .put(
            "user:42",
            "Ada".to_string(),
            CacheOptions::new().tag("users"),
        )
        .await?;
    cache.invalidate_tag("users").await?;

    let event = subscription.next_event().await?;
    assert!(event.kind() == CacheEventKind::Stored);
    assert_eq!(event.key(), Some("user:42"));
    let event = subscription.next_event().await?;
    assert_eq!(event.kind(), CacheEventKind::TagInvalidated);

    let mut tagged = cache.subscribe_tag("users");
    cache
        .put(
            "user:7",
            "Grace".to_string(),
            CacheOptions::new().tag("users"),
        )
        .await?;
    assert_eq!(tagged.next_event().await?.kind(), CacheEventKind::Stored);
    Ok(())
}

// 9. Listeners.
#[tokio::test]
async fn listeners() -> CacheResult<()> {
    let cache = Grid::local().build();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = cache.on_mutation(move |event| {
        let _ = tx.send(event.kind());
    });
    cache.put("k", 1u32, CacheOptions::new()).await?;
    assert_eq!(rx.recv().await, Some(CacheEventKind::Stored));

    listener.unsubscribe();
    cache.put("k", 2u32, CacheOptions::new()).await?;
    assert_eq!(
        rx.recv().await,
        None,
        "the callback (and its sender) is gone"
    );
    Ok(())
}

// 10. Diagnostics and stats.
#[tokio::test]
async fn diagnostics_and_stats() -> CacheResult<()> {
    let cache = Grid::local().build();
    let diagnostics = cache.diagnostics();
    assert!(diagnostics.is_empty());
    assert_eq!(diagnostics.total_requests(), 0);
    assert_eq!(diagnostics.hit_ratio(), None);

    cache.put("a", 1u8, CacheOptions::new()).await?;
    let _ = cache.get::<u8>("a").await?;
    let _ = cache.get::<u8>("b").await?;

    let diagnostics = cache.diagnostics();
    assert!(!diagnostics.is_empty());
    assert_eq!(diagnostics.total_requests(), 2);
    assert_eq!(diagnostics.hit_ratio(), Some(0.5));

    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses), (1, 1));
    assert_eq!(stats.total_requests(), 2);
    assert_eq!(stats.hit_ratio(), Some(0.5));
    Ok(())
}

#[cfg(feature = "sqlx-sqlite")]
mod sqlx_on_sqlite {
    use super::CacheResult;
    use hydracache::db::{CacheEntity, DbCache, HydraCacheEntity, QueryCachePolicy};
    use hydracache::{Grid, Postcard};
    use serde::{Deserialize, Serialize};
    use sqlx::sqlite::SqlitePoolOptions;
    use sqlx::SqlitePool;
    use std::time::Duration;

    #[derive(Clone, Debug, PartialEq, sqlx::FromRow, Serialize, Deserialize, HydraCacheEntity)]
    #[hydracache(entity = "user", collection = "users", id = i64)]
    struct User {
        id: i64,
        name: String,
    }

    async fn pool() -> SqlitePool {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::raw_sql(
            "create table users (id integer primary key, name text not null);
             insert into users values (42, 'Ada'), (7, 'Grace');",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool
    }

    fn queries() -> DbCache<Postcard> {
        // migrating.md, "serde values": serde rows name the Postcard codec.
        DbCache::new(Grid::local().codec::<Postcard>().build(), "app")
    }

    async fn find_user(
        queries: &DbCache<Postcard>,
        pool: &SqlitePool,
        id: i64,
    ) -> hydracache::db::Result<User> {
        queries
            .for_entity::<User>(id)
            .fetch_one(
                pool.clone(),
                sqlx::query_as("select id, name from users where id = ?").bind(id),
            )
            .await
    }

    // 11. Cached entity reads.
    #[tokio::test]
    async fn entity_reads() -> CacheResult<()> {
        let pool = pool().await;
        let queries = queries();
        assert_eq!(find_user(&queries, &pool, 42).await?.name, "Ada");
        assert!(queries.grid().contains_key("app:user:42").await);
        assert_eq!(find_user(&queries, &pool, 42).await?.name, "Ada");
        let stats = &queries.query_stats()[0];
        assert_eq!((stats.hits, stats.misses, stats.loads), (1, 1, 1));
        Ok(())
    }

    // 12. Query policies.
    #[tokio::test]
    async fn query_policies() -> CacheResult<()> {
        let pool = pool().await;
        let queries = queries();
        let policy = QueryCachePolicy::named("load-user")
            .for_cache_entity::<User>(42)
            .ttl(Duration::from_secs(60));
        let user = queries
            .cached_with::<User>(policy)
            .fetch_one(
                pool.clone(),
                sqlx::query_as("select id, name from users where id = ?").bind(42),
            )
            .await?;
        assert_eq!(user.name, "Ada");
        assert_eq!(queries.query_stats()[0].name, "load-user");
        Ok(())
    }

    // 13. Collections.
    #[tokio::test]
    async fn collections() -> CacheResult<()> {
        let pool = pool().await;
        let queries = queries();
        assert_eq!(User::collection_tag(), Some("users".to_string()));
        let collection = User::collection_tag().unwrap();
        let users: Vec<User> = queries
            .collection::<User>(&collection)
            .fetch_all(
                pool.clone(),
                sqlx::query_as("select id, name from users order by id"),
            )
            .await?;
        assert_eq!(users.len(), 2);
        queries.invalidate_tag(&collection).await?;
        assert!(!queries.grid().contains_key("app:users").await);
        Ok(())
    }

    // 14. Writes that invalidate after the commit.
    #[tokio::test]
    async fn writes() -> CacheResult<()> {
        let pool = pool().await;
        let queries = queries();
        find_user(&queries, &pool, 42).await?;

        let mut tx = queries.begin(&pool).await?;
        sqlx::query("update users set name = 'Ada Lovelace' where id = 42")
            .execute(&mut *tx)
            .await?;
        tx.invalidate_entity::<User>(&42);
        tx.commit().await?;

        assert_eq!(find_user(&queries, &pool, 42).await?.name, "Ada Lovelace");
        Ok(())
    }
}
