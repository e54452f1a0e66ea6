//! hydracache::db on SQLite (in memory and in a file): the cached query
//! guarantees, one test each. The database counts the statements it runs,
//! so "the query ran once" is measured at the database, not in the cache.
#![cfg(feature = "sqlx-sqlite")]

mod db_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use db_support::{eventually, user, SerdeUser, Sqlite, User};
use hydracache::db::{
    query_cache_policy, DbCache, DbCacheError, InvalidationSet, QueryStats, SqlxQueryExt,
};
use hydracache::{
    CacheError, CacheEventKind, CacheOptions, Clock, Grid, ManualClock, Postcard, StoreError,
};
use tokio::sync::Semaphore;

const SELECT_USER: &str = "select id, name from users where id = ?";
const SELECT_USERS_NAMED: &str = "select id, name from users where name = ? order by id";
const SELECT_USERS: &str = "select id, name from users order by id";
/// The collection tag of `User` (`#[hydracache(collection = "users")]`).
const USERS: &str = "users";

fn cache() -> DbCache {
    DbCache::new(Grid::local().build(), "app")
}

async fn load_user(db: &DbCache, sqlite: &Sqlite, id: i64) -> Result<User, DbCacheError> {
    db.entity::<User>("user", id)
        .fetch_one(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(id))
        .await
}

async fn rename(sqlite: &Sqlite, id: i64, name: &str) {
    sqlx::query("update users set name = ? where id = ?")
        .bind(name.to_string())
        .bind(id)
        .execute(&sqlite.pool)
        .await
        .unwrap();
}

fn stats(db: &DbCache, name: &str) -> QueryStats {
    db.query_stats()
        .into_iter()
        .find(|s| s.name == name)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_hit_after_the_first_load_runs_no_query() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    let before = sqlite.queries();

    assert_eq!(load_user(&db, &sqlite, 1).await.unwrap(), user(1, "Ada"));
    assert_eq!(sqlite.queries() - before, 1);
    for _ in 0..5 {
        assert_eq!(load_user(&db, &sqlite, 1).await.unwrap(), user(1, "Ada"));
    }
    assert_eq!(
        sqlite.queries() - before,
        1,
        "hits must not reach the database"
    );

    let s = stats(&db, "user");
    assert_eq!((s.hits, s.misses, s.loads, s.errors), (5, 1, 1, 0));
    assert!(db.grid().contains_key("app:user:1").await);
}

#[tokio::test]
async fn tag_invalidation_then_reload_reads_the_updated_row() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    assert_eq!(load_user(&db, &sqlite, 1).await.unwrap().name, "Ada");

    rename(&sqlite, 1, "Ada Lovelace").await;
    // Until someone invalidates, the cached row is what readers get.
    assert_eq!(load_user(&db, &sqlite, 1).await.unwrap().name, "Ada");

    db.invalidate_tag("user:1").await.unwrap();
    let before = sqlite.queries();
    assert_eq!(
        load_user(&db, &sqlite, 1).await.unwrap().name,
        "Ada Lovelace"
    );
    assert_eq!(sqlite.queries() - before, 1);
}

#[tokio::test]
async fn an_entity_write_invalidates_the_entity_and_its_collection() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    let all = || {
        db.collection::<User>(USERS)
            .fetch_all(&sqlite.pool, sqlx::query_as(SELECT_USERS))
    };
    assert_eq!(all().await.unwrap().len(), 2);
    load_user(&db, &sqlite, 1).await.unwrap();
    load_user(&db, &sqlite, 2).await.unwrap();

    rename(&sqlite, 1, "Ada Lovelace").await;
    db.invalidate_entity::<User>(&1).await.unwrap();

    assert!(!db.grid().contains_key("app:user:1").await);
    assert!(!db.grid().contains_key("app:users").await);
    assert!(
        db.grid().contains_key("app:user:2").await,
        "other entities stay"
    );
    assert_eq!(all().await.unwrap()[0].name, "Ada Lovelace");
}

#[tokio::test]
async fn fetch_optional_caches_none() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    let find = || {
        db.entity::<User>("user", 99)
            .fetch_optional(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(99i64))
    };
    let before = sqlite.queries();
    assert_eq!(find().await.unwrap(), None);
    assert_eq!(find().await.unwrap(), None);
    assert_eq!(sqlite.queries() - before, 1, "the absence is cached");

    sqlx::query("insert into users (id, name) values (99, 'Barbara')")
        .execute(&sqlite.pool)
        .await
        .unwrap();
    assert_eq!(find().await.unwrap(), None, "until invalidated");
    db.invalidate_tag("user:99").await.unwrap();
    assert_eq!(find().await.unwrap(), Some(user(99, "Barbara")));

    // A found row is cached the same way.
    let before = sqlite.queries();
    assert_eq!(find().await.unwrap(), Some(user(99, "Barbara")));
    assert_eq!(sqlite.queries(), before);
}

#[tokio::test]
async fn fetch_all_caches_an_empty_vec() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    let named = |name: &'static str| {
        db.named::<User>("users-named")
            .key(format!("users:named:{name}"))
            .tag(USERS)
            .fetch_all(&sqlite.pool, sqlx::query_as(SELECT_USERS_NAMED).bind(name))
    };
    let before = sqlite.queries();
    assert_eq!(named("Hedy").await.unwrap(), vec![]);
    assert_eq!(named("Hedy").await.unwrap(), vec![]);
    assert_eq!(sqlite.queries() - before, 1, "the empty result is cached");

    sqlx::query("insert into users (id, name) values (3, 'Hedy')")
        .execute(&sqlite.pool)
        .await
        .unwrap();
    db.invalidate_tag(USERS).await.unwrap();
    assert_eq!(named("Hedy").await.unwrap(), vec![user(3, "Hedy")]);
}

#[tokio::test]
async fn negative_results_expire_after_their_own_ttl() {
    let sqlite = Sqlite::memory().await;
    let clock = ManualClock::new();
    let db = DbCache::new(
        Grid::local().clock(Clock::Manual(clock.clone())).build(),
        "app",
    );
    let find = |id: i64| {
        db.entity::<User>("user", id)
            .ttl(Duration::from_secs(60))
            .negative_ttl(Duration::from_secs(5))
            .fetch_optional(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(id))
    };
    let list = |name: &'static str| {
        db.named::<User>("users-named")
            .key(format!("users:named:{name}"))
            .ttl(Duration::from_secs(60))
            .negative_ttl(Duration::from_secs(5))
            .fetch_all(&sqlite.pool, sqlx::query_as(SELECT_USERS_NAMED).bind(name))
    };
    assert_eq!(find(99).await.unwrap(), None);
    assert_eq!(find(1).await.unwrap(), Some(user(1, "Ada")));
    assert!(list("Nobody").await.unwrap().is_empty());
    assert_eq!(list("Ada").await.unwrap().len(), 1);

    clock.advance(Duration::from_secs(6));
    assert!(
        !db.grid().contains_key("app:user:99").await,
        "None lives 5 s"
    );
    assert!(
        !db.grid().contains_key("app:users:named:Nobody").await,
        "[] lives 5 s"
    );
    assert!(
        db.grid().contains_key("app:user:1").await,
        "a row lives 60 s"
    );
    assert!(db.grid().contains_key("app:users:named:Ada").await);

    clock.advance(Duration::from_secs(60));
    assert!(!db.grid().contains_key("app:user:1").await);
}

#[tokio::test]
async fn without_a_negative_ttl_negative_results_use_the_ttl() {
    let sqlite = Sqlite::memory().await;
    let clock = ManualClock::new();
    let db = DbCache::new(
        Grid::local().clock(Clock::Manual(clock.clone())).build(),
        "app",
    );
    let none = db
        .entity::<User>("user", 99)
        .ttl(Duration::from_secs(60))
        .fetch_optional(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(99i64))
        .await
        .unwrap();
    assert_eq!(none, None);
    clock.advance(Duration::from_secs(30));
    assert!(db.grid().contains_key("app:user:99").await);
    clock.advance(Duration::from_secs(31));
    assert!(!db.grid().contains_key("app:user:99").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_run_the_query_once() {
    let sqlite = Arc::new(Sqlite::memory().await);
    let db = cache();
    let gate = Arc::new(Semaphore::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let before = sqlite.queries();
    let callers = 16;

    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (db, sqlite, gate, runs) = (db.clone(), sqlite.clone(), gate.clone(), runs.clone());
            tokio::spawn(async move {
                db.entity::<User>("user", 1)
                    .fetch_with(move || {
                        runs.fetch_add(1, Ordering::SeqCst);
                        async move {
                            // Hold the query until every caller has missed.
                            let _open = gate.acquire().await.unwrap();
                            sqlx::query_as::<_, User>(SELECT_USER)
                                .bind(1i64)
                                .fetch_one(&sqlite.pool)
                                .await
                        }
                    })
                    .await
            })
        })
        .collect();
    eventually("every caller but one joins the load", || async {
        db.grid().stats().single_flight_joins == callers - 1
    })
    .await;
    gate.add_permits(1);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), user(1, "Ada"));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(sqlite.queries() - before, 1);
    assert_eq!(stats(&db, "user").loads, 1);
}

#[tokio::test]
async fn a_failed_query_is_not_cached_and_its_error_reaches_the_caller_unchanged() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    let load = || {
        db.entity::<User>("order", 1).fetch_one(
            &sqlite.pool,
            sqlx::query_as("select id, name from orders where id = ?").bind(1i64),
        )
    };
    let err = load().await.unwrap_err();
    let DbCacheError::Database(sqlx::Error::Database(db_err)) = &err else {
        panic!("expected the database's own error, got {err:?}");
    };
    assert!(
        db_err.message().contains("no such table: orders"),
        "{db_err}"
    );
    assert!(err.to_string().contains("no such table: orders"), "{err}");
    assert!(!db.grid().contains_key("app:order:1").await);

    // The next call runs the query again, and succeeds once it can.
    sqlx::query("create table orders (id integer primary key, name text not null)")
        .execute(&sqlite.pool)
        .await
        .unwrap();
    sqlx::query("insert into orders values (1, 'first')")
        .execute(&sqlite.pool)
        .await
        .unwrap();
    assert_eq!(load().await.unwrap(), user(1, "first"));
    let s = stats(&db, "order");
    assert_eq!((s.loads, s.errors), (2, 1));
}

#[tokio::test]
async fn fetch_one_without_a_row_fails_with_row_not_found_and_caches_nothing() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    let err = load_user(&db, &sqlite, 99).await.unwrap_err();
    assert!(
        matches!(err, DbCacheError::Database(sqlx::Error::RowNotFound)),
        "{err:?}"
    );
    assert!(err.is_row_not_found());
    assert_eq!(err.database_code(), None);
    assert!(!db.grid().contains_key("app:user:99").await);
    let before = sqlite.queries();
    let _ = load_user(&db, &sqlite, 99).await.unwrap_err();
    assert_eq!(sqlite.queries() - before, 1, "nothing was cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_joined_a_failed_query_share_its_error() {
    let sqlite = Arc::new(Sqlite::memory().await);
    let db = cache();
    let gate = Arc::new(Semaphore::new(0));
    let callers = 8;
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (db, sqlite, gate) = (db.clone(), sqlite.clone(), gate.clone());
            tokio::spawn(async move {
                db.entity::<User>("order", 1)
                    .fetch_with(move || async move {
                        let _open = gate.acquire().await.unwrap();
                        sqlx::query_as::<_, User>("select id, name from orders where id = 1")
                            .fetch_one(&sqlite.pool)
                            .await
                    })
                    .await
            })
        })
        .collect();
    eventually("every caller but one joins the load", || async {
        db.grid().stats().single_flight_joins == callers - 1
    })
    .await;
    gate.add_permits(1);

    let mut original = 0;
    let mut shared = Vec::new();
    for t in tasks {
        match t.await.unwrap().unwrap_err() {
            DbCacheError::Database(sqlx::Error::Database(e)) => {
                assert!(e.message().contains("no such table: orders"));
                original += 1;
            }
            DbCacheError::Shared(s) => shared.push(s),
            other => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(original, 1, "the caller whose query ran gets the original");
    assert_eq!(shared.len(), callers as usize - 1);
    for s in &shared {
        assert!(s.message().contains("no such table: orders"), "{s}");
        assert!(!s.is_row_not_found());
    }
    assert!(!db.grid().contains_key("app:order:1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_row_not_found_is_still_row_not_found() {
    let sqlite = Arc::new(Sqlite::memory().await);
    let db = cache();
    let gate = Arc::new(Semaphore::new(0));
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let (db, sqlite, gate) = (db.clone(), sqlite.clone(), gate.clone());
            tokio::spawn(async move {
                db.entity::<User>("user", 99)
                    .fetch_with(move || async move {
                        let _open = gate.acquire().await.unwrap();
                        sqlx::query_as::<_, User>(SELECT_USER)
                            .bind(99i64)
                            .fetch_one(&sqlite.pool)
                            .await
                    })
                    .await
            })
        })
        .collect();
    eventually("the second caller joins", || async {
        db.grid().stats().single_flight_joins == 1
    })
    .await;
    gate.add_permits(1);
    let mut kinds = Vec::new();
    for t in tasks {
        let err = t.await.unwrap().unwrap_err();
        assert!(err.is_row_not_found(), "{err:?}");
        kinds.push(matches!(err, DbCacheError::Shared(_)));
    }
    kinds.sort();
    assert_eq!(kinds, [false, true]);
}

#[tokio::test]
async fn a_descriptor_without_a_key_is_refused_before_any_query() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    let before = sqlite.queries();
    let err = db
        .named::<User>("load-user")
        .fetch_one(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(1i64))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DbCacheError::MissingKey { query } if query == "load-user"),
        "{err:?}"
    );
    assert!(err.to_string().contains("has no cache key"));
    assert_eq!(sqlite.queries(), before);

    // A policy template without its id has no key either.
    let template = query_cache_policy!(name = "load-user", entity = "user");
    let err = db
        .cached_with::<User>(&template)
        .fetch_one(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(1i64))
        .await
        .unwrap_err();
    assert!(matches!(err, DbCacheError::MissingKey { .. }));
    assert_eq!(stats(&db, "load-user").errors, 2);
}

#[tokio::test]
async fn a_key_the_store_refuses_reaches_the_caller_and_runs_no_query() {
    let sqlite = Sqlite::memory().await;
    let db = DbCache::new(Grid::local().max_key_len(32).build(), "app");
    let before = sqlite.queries();
    let err = db
        .cached::<User>()
        .key("k".repeat(100))
        .fetch_one(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(1i64))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DbCacheError::Cache(CacheError::Store(StoreError::KeyTooLong { .. }))
        ),
        "{err:?}"
    );
    assert_eq!(sqlite.queries(), before);
}

#[tokio::test]
async fn a_panicking_loader_reaches_the_caller_and_leaves_nothing_behind() {
    let db = cache();
    let err = db
        .entity::<User>("user", 1)
        .fetch_with(|| async {
            if true {
                panic!("repository bug");
            }
            Ok::<User, sqlx::Error>(user(1, "Ada"))
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DbCacheError::Cache(CacheError::LoaderPanicked(m)) if m == "repository bug"),
        "{err:?}"
    );
    let again = db
        .entity::<User>("user", 1)
        .fetch_with(|| async { Ok::<_, sqlx::Error>(user(1, "Ada")) })
        .await
        .unwrap();
    assert_eq!(again.name, "Ada");
}

#[tokio::test]
async fn a_value_of_another_type_under_the_key_is_the_callers_error_and_stays() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    db.grid()
        .put("app:user:1", 7u8, CacheOptions::new())
        .await
        .unwrap();
    let before = sqlite.queries();
    let err = load_user(&db, &sqlite, 1).await.unwrap_err();
    assert!(
        matches!(err, DbCacheError::Cache(CacheError::Store(_))),
        "{err:?}"
    );
    assert_eq!(sqlite.queries(), before, "no query ran");
    assert_eq!(db.grid().get::<u8>("app:user:1").await.unwrap(), Some(7));
}

#[tokio::test]
async fn a_miss_through_the_database_cache_is_counted_once() {
    let sqlite = Sqlite::memory().await;
    let grid = Grid::local().enable_access_events(true).build();
    let mut access = grid.subscribe_access();
    let db = DbCache::new(grid.clone(), "app");
    load_user(&db, &sqlite, 1).await.unwrap();
    let s = grid.stats();
    assert_eq!((s.hits, s.misses, s.loads), (0, 1, 1));
    let mut misses = 0;
    while let Some(event) = access.try_next_event() {
        misses += usize::from(event.unwrap().kind() == CacheEventKind::Miss);
    }
    assert_eq!(misses, 1);
}

#[tokio::test]
async fn flushing_a_database_cache_flushes_its_namespace_only() {
    let sqlite = Sqlite::memory().await;
    let grid = Grid::local().build();
    let a = DbCache::new(grid.clone(), "a");
    let b = DbCache::new(grid.clone(), "b");
    load_user(&a, &sqlite, 1).await.unwrap();
    load_user(&b, &sqlite, 1).await.unwrap();
    grid.put("session:9", 1u8, CacheOptions::new())
        .await
        .unwrap();

    a.flush().await.unwrap();
    assert!(!grid.contains_key("a:user:1").await);
    assert!(grid.contains_key("b:user:1").await, "another namespace");
    assert!(grid.contains_key("session:9").await, "the rest of the grid");

    b.invalidate(&InvalidationSet::new().flush()).await.unwrap();
    assert!(!grid.contains_key("b:user:1").await);
    assert!(grid.contains_key("session:9").await);
}

#[tokio::test]
async fn a_loader_error_of_your_own_type_comes_back_as_is() {
    #[derive(Debug, PartialEq)]
    struct NotAllowed(u32);
    impl std::fmt::Display for NotAllowed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "not allowed: {}", self.0)
        }
    }
    impl std::error::Error for NotAllowed {}

    let db = cache();
    let err = db
        .entity::<User>("user", 1)
        .fetch_with(|| async { Err::<User, _>(NotAllowed(403)) })
        .await
        .unwrap_err();
    assert_eq!(err.database_error(), Some(&NotAllowed(403)));
    assert!(!err.is_row_not_found());
    assert_eq!(err.into_database_error(), Some(NotAllowed(403)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_during_the_query_keeps_its_result_out_of_the_cache() {
    let sqlite = Arc::new(Sqlite::memory().await);
    let db = cache();
    let gate = Arc::new(Semaphore::new(0));
    let started = Arc::new(Semaphore::new(0));
    let load = {
        let (db, sqlite, gate, started) =
            (db.clone(), sqlite.clone(), gate.clone(), started.clone());
        tokio::spawn(async move {
            db.entity::<User>("user", 1)
                .fetch_with(move || async move {
                    let row = sqlx::query_as::<_, User>(SELECT_USER)
                        .bind(1i64)
                        .fetch_one(&sqlite.pool)
                        .await;
                    started.add_permits(1);
                    let _open = gate.acquire().await.unwrap();
                    row
                })
                .await
        })
    };
    // The query has read the old row; the write commits and invalidates.
    started.acquire().await.unwrap().forget();
    rename(&sqlite, 1, "Ada Lovelace").await;
    db.invalidate_entity::<User>(&1).await.unwrap();
    gate.add_permits(1);

    assert_eq!(
        load.await.unwrap().unwrap().name,
        "Ada",
        "its caller gets what it read"
    );
    assert!(
        !db.grid().contains_key("app:user:1").await,
        "but it is not cached"
    );
    assert_eq!(
        load_user(&db, &sqlite, 1).await.unwrap().name,
        "Ada Lovelace"
    );
}

#[tokio::test]
async fn the_serde_codec_caches_rows_options_and_vecs() {
    let sqlite = Sqlite::memory().await;
    let db = DbCache::new(Grid::local().codec::<Postcard>().build(), "app");
    let before = sqlite.queries();
    for _ in 0..2 {
        let one = db
            .for_entity::<SerdeUser>(1)
            .fetch_one(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(1i64))
            .await
            .unwrap();
        assert_eq!(one.name, "Ada");
        let none = db
            .for_entity::<SerdeUser>(99)
            .fetch_optional(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(99i64))
            .await
            .unwrap();
        assert_eq!(none, None);
        let all = db
            .collection::<SerdeUser>("users")
            .fetch_all(&sqlite.pool, sqlx::query_as(SELECT_USERS))
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
    }
    assert_eq!(sqlite.queries() - before, 3, "three queries, each run once");
    assert_eq!(db.grid().diagnostics().codec, "postcard");
}

#[tokio::test]
async fn the_query_side_helpers_cache_like_the_descriptor() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    let before = sqlite.queries();
    for _ in 0..3 {
        let one: User = sqlx::query_as(SELECT_USER)
            .bind(2i64)
            .cached(db.for_entity::<User>(2))
            .fetch_one(&sqlite.pool)
            .await
            .unwrap();
        assert_eq!(one.name, "Grace");
        let none: Option<User> = sqlx::query_as(SELECT_USER)
            .bind(99i64)
            .cached(db.for_entity::<User>(99))
            .fetch_optional(&sqlite.pool)
            .await
            .unwrap();
        assert_eq!(none, None);
        let all: Vec<User> = sqlx::query_as(SELECT_USERS)
            .cached(db.collection("users"))
            .fetch_all(&sqlite.pool)
            .await
            .unwrap();
        assert_eq!(all.len(), 2);
    }
    assert_eq!(sqlite.queries() - before, 3);
}

#[tokio::test]
async fn a_policy_is_reused_across_call_sites() {
    let sqlite = Sqlite::memory().await;
    let clock = ManualClock::new();
    let db = DbCache::new(
        Grid::local().clock(Clock::Manual(clock.clone())).build(),
        "app",
    );
    let load_user = query_cache_policy!(
        name = "load-user",
        entity = User,
        collection_tag = USERS,
        ttl_secs = 60,
        negative_ttl_secs = 5,
    );
    for id in [1i64, 2, 99] {
        let found = db
            .cached_with::<User>(&load_user)
            .id(id)
            .fetch_optional(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(id))
            .await
            .unwrap();
        assert_eq!(found.is_some(), id != 99);
    }
    // Same policy at another call site: hits.
    let before = sqlite.queries();
    let ada = db
        .cached_with::<User>(&load_user.clone().id(1))
        .fetch_optional(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(1i64))
        .await
        .unwrap();
    assert_eq!(ada, Some(user(1, "Ada")));
    assert_eq!(sqlite.queries(), before);
    let s = stats(&db, "load-user");
    assert_eq!((s.hits, s.misses, s.loads), (1, 3, 3));

    // Its tags and TTLs came with it.
    db.invalidate_tag(USERS).await.unwrap();
    assert!(!db.grid().contains_key("app:user:1").await);
    let _ = db
        .cached_with::<User>(&load_user)
        .id(99)
        .fetch_optional(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(99i64))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(6));
    assert!(!db.grid().contains_key("app:user:99").await);

    // load() runs any loader under the policy.
    let n = db
        .cached_with::<i64>(&query_cache_policy!(
            name = "count",
            key = "users:count",
            ttl_secs = 60
        ))
        .load(|| async { Ok::<_, sqlx::Error>(2) })
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(db.grid().contains_key("app:users:count").await);
}

#[tokio::test]
async fn a_file_database_caches_and_invalidates_the_same_way() {
    let sqlite = Sqlite::file("file-db").await;
    let db = cache();
    let before = sqlite.queries();
    assert_eq!(load_user(&db, &sqlite, 2).await.unwrap().name, "Grace");
    assert_eq!(load_user(&db, &sqlite, 2).await.unwrap().name, "Grace");
    assert_eq!(sqlite.queries() - before, 1);
    rename(&sqlite, 2, "Grace Hopper").await;
    db.invalidate(&InvalidationSet::new().entity_write::<User>(&2))
        .await
        .unwrap();
    assert_eq!(
        load_user(&db, &sqlite, 2).await.unwrap().name,
        "Grace Hopper"
    );
}

#[tokio::test]
async fn namespaces_keep_keys_apart_and_share_tags() {
    let sqlite = Sqlite::memory().await;
    let grid = Grid::local().build();
    let a = DbCache::new(grid.clone(), "a");
    let b = DbCache::new(grid.clone(), "b");
    load_user(&a, &sqlite, 1).await.unwrap();
    load_user(&b, &sqlite, 1).await.unwrap();
    assert!(grid.contains_key("a:user:1").await && grid.contains_key("b:user:1").await);

    a.invalidate_key("user:1").await.unwrap();
    assert!(!grid.contains_key("a:user:1").await);
    assert!(
        grid.contains_key("b:user:1").await,
        "keys are per namespace"
    );

    a.invalidate_tag("user:1").await.unwrap();
    assert!(!grid.contains_key("b:user:1").await, "tags are grid-wide");
}

#[tokio::test]
async fn invalidation_sets_apply_keys_tags_and_flush() {
    let db = cache();
    let put = |key: &'static str, tag: &'static str| {
        let grid = db.grid().clone();
        async move {
            grid.put(key, 1u8, CacheOptions::new().tag(tag))
                .await
                .unwrap()
        }
    };
    put("app:a", "x").await;
    put("app:b", "y").await;
    put("app:c", "z").await;
    db.invalidate(&InvalidationSet::new().key("a").tag("y"))
        .await
        .unwrap();
    assert!(!db.grid().contains_key("app:a").await);
    assert!(!db.grid().contains_key("app:b").await);
    assert!(db.grid().contains_key("app:c").await);
    let _: u8 = db
        .named("d")
        .key("d")
        .fetch_with(|| async { Ok::<_, sqlx::Error>(1) })
        .await
        .unwrap();
    db.invalidate(&InvalidationSet::new().flush())
        .await
        .unwrap();
    assert!(!db.grid().contains_key("app:d").await);
    // A flush reaches what this cache stored, not what the grid was given
    // directly under a key that looks like the namespace's.
    assert!(db.grid().contains_key("app:c").await);
}

/// A row type that is not `Clone`.
#[derive(
    sqlx::FromRow,
    hydracache::rkyv::Archive,
    hydracache::rkyv::Serialize,
    hydracache::rkyv::Deserialize,
    serde::Serialize,
    serde::Deserialize,
    Debug,
    PartialEq,
)]
#[rkyv(crate = hydracache::rkyv)]
struct Row {
    id: i64,
    name: String,
}

#[tokio::test]
async fn row_types_need_not_be_clone() {
    let sqlite = Sqlite::memory().await;
    let ada = || Row {
        id: 1,
        name: "Ada".to_string(),
    };

    let db = cache();
    let fetch = || {
        db.entity::<Row>("row", 1)
            .fetch_one(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(1i64))
    };
    // Three callers miss together: one query, and each gets its own row.
    let (a, b, c) = tokio::join!(fetch(), fetch(), fetch());
    for row in [a, b, c] {
        assert_eq!(row.unwrap(), ada());
    }
    assert_eq!(fetch().await.unwrap(), ada(), "a hit");
    assert_eq!(stats(&db, "row").loads, 1);

    let serde_db = DbCache::new(Grid::local().codec::<Postcard>().build(), "app");
    let fetch = || {
        serde_db
            .entity::<Row>("row", 1)
            .fetch_optional(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(1i64))
    };
    let (a, b) = tokio::join!(fetch(), fetch());
    assert_eq!((a.unwrap(), b.unwrap()), (Some(ada()), Some(ada())));
    assert_eq!(serde_db.query_stats()[0].loads, 1);
}
