//! hydracache::db against a real Postgres server (DATABASE_URL; .ci/run
//! starts one). The counted queries bump a sequence on the server, so "the
//! query ran once" is what the server says, not what the cache believes.
#![cfg(feature = "sqlx-postgres")]

mod db_support;

use std::sync::Arc;

use db_support::{pg, user, User, PG_SELECT_USER, PG_SELECT_USERS_NAMED};
use hydracache::db::{DbCache, DbCacheError, SqlxQueryExt};
use hydracache::{Grid, Postcard};
use tokio::sync::Barrier;

fn cache() -> DbCache {
    DbCache::new(Grid::local().build(), "app")
}

async fn load_user(db: &DbCache, pool: &sqlx::PgPool, id: i64) -> Result<User, DbCacheError> {
    db.entity::<User>("user", id)
        .fetch_one(pool, sqlx::query_as(PG_SELECT_USER).bind(id))
        .await
}

#[tokio::test]
async fn a_hit_after_the_first_load_runs_no_query() {
    let Some(pg) = pg("pg_hit").await else { return };
    let db = cache();
    for _ in 0..5 {
        assert_eq!(load_user(&db, &pg.pool, 1).await.unwrap(), user(1, "Ada"));
    }
    assert_eq!(pg.reads().await, 1, "the server ran the query once");
    let s = &db.query_stats()[0];
    assert_eq!((s.hits, s.misses, s.loads), (4, 1, 1));
    pg.cleanup().await;
}

#[tokio::test]
async fn tag_invalidation_then_reload_reads_the_updated_row() {
    let Some(pg) = pg("pg_reload").await else {
        return;
    };
    let db = cache();
    assert_eq!(load_user(&db, &pg.pool, 2).await.unwrap().name, "Grace");
    sqlx::query("update users set name = 'Grace Hopper' where id = 2")
        .execute(&pg.pool)
        .await
        .unwrap();
    assert_eq!(load_user(&db, &pg.pool, 2).await.unwrap().name, "Grace");
    db.invalidate_tag("user:2").await.unwrap();
    assert_eq!(
        load_user(&db, &pg.pool, 2).await.unwrap().name,
        "Grace Hopper"
    );
    assert_eq!(pg.reads().await, 2);
    pg.cleanup().await;
}

#[tokio::test]
async fn negative_results_are_cached() {
    let Some(pg) = pg("pg_negative").await else {
        return;
    };
    let db = cache();
    for _ in 0..3 {
        let none = db
            .entity::<User>("user", 99)
            .fetch_optional(&pg.pool, sqlx::query_as(PG_SELECT_USER).bind(99i64))
            .await
            .unwrap();
        assert_eq!(none, None);
        let empty: Vec<User> = sqlx::query_as(PG_SELECT_USERS_NAMED)
            .bind("Hedy")
            .cached(db.named("users-named").key("users:named:Hedy").tag("users"))
            .fetch_all(&pg.pool)
            .await
            .unwrap();
        assert!(empty.is_empty());
    }
    assert_eq!(pg.reads().await, 2, "each query ran once");

    sqlx::query("insert into users values (99, 'Hedy')")
        .execute(&pg.pool)
        .await
        .unwrap();
    db.invalidate_tags(["user:99", "users"]).await.unwrap();
    let found = db
        .entity::<User>("user", 99)
        .fetch_optional(&pg.pool, sqlx::query_as(PG_SELECT_USER).bind(99i64))
        .await
        .unwrap();
    assert_eq!(found, Some(user(99, "Hedy")));
    pg.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_run_the_query_once() {
    let Some(pg) = pg("pg_concurrent").await else {
        return;
    };
    let db = cache();
    let callers = 32;
    let start = Arc::new(Barrier::new(callers));
    // A query that takes a while, so that the callers overlap with it.
    const SLOW: &str = "select id, name from users \
        where (select nextval('reads')) > 0 and (select count(*) from pg_sleep(0.2)) = 1 and id = $1";
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let (db, pool, start) = (db.clone(), pg.pool.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                db.entity::<User>("user", 1)
                    .fetch_one(&pool, sqlx::query_as(SLOW).bind(1i64))
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), user(1, "Ada"));
    }
    assert_eq!(pg.reads().await, 1, "one query for {callers} callers");
    let grid = db.grid().stats();
    assert_eq!(grid.loads, 1);
    pg.cleanup().await;
}

#[tokio::test]
async fn a_failed_query_is_not_cached_and_its_error_reaches_the_caller_unchanged() {
    let Some(pg) = pg("pg_failure").await else {
        return;
    };
    let db = cache();
    const SELECT_ORDER: &str = "select id, name from orders where id = $1";
    let load = || {
        db.entity::<User>("order", 1)
            .fetch_one(&pg.pool, sqlx::query_as(SELECT_ORDER).bind(1i64))
    };
    let err = load().await.unwrap_err();
    let DbCacheError::Database(sqlx::Error::Database(e)) = &err else {
        panic!("expected the server's error, got {err:?}");
    };
    assert_eq!(e.code().as_deref(), Some("42P01"));
    assert!(e.message().contains("\"orders\" does not exist"), "{e}");
    assert_eq!(err.database_code().as_deref(), Some("42P01"));
    assert!(!db.grid().contains_key("app:order:1").await);

    sqlx::raw_sql(
        "create table orders (id bigint primary key, name text not null);
         insert into orders values (1, 'first');",
    )
    .execute(&pg.pool)
    .await
    .unwrap();
    assert_eq!(load().await.unwrap(), user(1, "first"));

    // A row that is not there: RowNotFound, nothing cached.
    let err = load_user(&db, &pg.pool, 404).await.unwrap_err();
    assert!(matches!(
        err,
        DbCacheError::Database(sqlx::Error::RowNotFound)
    ));
    assert!(!db.grid().contains_key("app:user:404").await);
    pg.cleanup().await;
}

#[tokio::test]
async fn serde_rows_through_the_postcard_codec() {
    let Some(pg) = pg("pg_postcard").await else {
        return;
    };
    let db = DbCache::new(Grid::local().codec::<Postcard>().build(), "app");
    for _ in 0..2 {
        let one: db_support::SerdeUser = db
            .for_entity(1)
            .fetch_one(&pg.pool, sqlx::query_as(PG_SELECT_USER).bind(1i64))
            .await
            .unwrap();
        assert_eq!(one.name, "Ada");
    }
    assert_eq!(pg.reads().await, 1);
    pg.cleanup().await;
}
