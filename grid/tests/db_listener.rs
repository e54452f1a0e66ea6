//! Database-driven invalidation: a trigger NOTIFYs, PgInvalidationListener
//! invalidates — end to end on a real Postgres server, including a listener
//! connection killed with pg_terminate_backend and its recovery.
#![cfg(feature = "sqlx-postgres")]

mod db_support;

use std::time::Duration;

use db_support::{eventually, pg, Pg, User, PG_SELECT_USER};
use hydracache::db::{
    notify, notify_trigger_sql, DbCache, NotifyPayload, PgInvalidationListener, PgListenerHandle,
    NOTIFY_FUNCTION_SQL,
};
use hydracache::{CacheOptions, Grid};

fn cache() -> DbCache {
    DbCache::new(Grid::local().build(), "app")
}

/// Installs the trigger function and attaches it to `users` on the test's
/// own channel.
async fn install_trigger(pg: &Pg) -> String {
    let channel = pg.schema.clone();
    sqlx::raw_sql(NOTIFY_FUNCTION_SQL)
        .execute(&pg.pool)
        .await
        .unwrap();
    sqlx::raw_sql(&notify_trigger_sql(
        "users", &channel, "user", "id", "users",
    ))
    .execute(&pg.pool)
    .await
    .unwrap();
    channel
}

async fn start(db: &DbCache, pg: &Pg, channel: &str, covers: &[&str]) -> PgListenerHandle {
    let mut listener = PgInvalidationListener::new(db.clone(), pg.options.clone())
        .channel(channel)
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200));
    if !covers.is_empty() {
        listener = listener.covers_tags(covers.iter().copied());
    }
    listener.start().await.unwrap()
}

/// User `id`, cached under `user:<id>` with tag `user:<id>`.
async fn load_user(db: &DbCache, pg: &Pg, id: i64) -> User {
    db.for_entity::<User>(id)
        .fetch_one(&pg.pool, sqlx::query_as(PG_SELECT_USER).bind(id))
        .await
        .unwrap()
}

/// User `id`, also tagged with the collection tag `users`.
async fn load_user_in_collection(db: &DbCache, pg: &Pg, id: i64) -> User {
    db.for_entity::<User>(id)
        .collection_of::<User>()
        .fetch_one(&pg.pool, sqlx::query_as(PG_SELECT_USER).bind(id))
        .await
        .unwrap()
}

async fn gone(db: &DbCache, key: &str) -> bool {
    !db.grid().contains_key(key).await
}

/// Waits until every notification sent before this call has been handled:
/// notifications arrive in commit order, so once a sentinel sent now is
/// applied, so is everything before it.
async fn settle(db: &DbCache, pg: &Pg, channel: &str) {
    db.grid()
        .put("app:sentinel", 1u8, CacheOptions::new().tag("sentinel"))
        .await
        .unwrap();
    notify(&pg.pool, channel, &NotifyPayload::new().tag("sentinel"))
        .await
        .unwrap();
    eventually("the sentinel notification is applied", || {
        gone(db, "app:sentinel")
    })
    .await;
}

#[tokio::test]
async fn a_trigger_notify_invalidates_end_to_end() {
    let Some(pg) = pg("listener_e2e").await else {
        return;
    };
    let channel = install_trigger(&pg).await;
    let db = cache();
    let listener = start(&db, &pg, &channel, &["users"]).await;
    assert!(listener.status().connected);

    assert_eq!(load_user(&db, &pg, 1).await.name, "Ada");
    assert_eq!(load_user(&db, &pg, 2).await.name, "Grace");

    // An UPDATE commits; the trigger's NOTIFY invalidates user:1 and users.
    sqlx::query("update users set name = 'Ada Lovelace' where id = 1")
        .execute(&pg.pool)
        .await
        .unwrap();
    eventually("user:1 is invalidated by the database", || {
        gone(&db, "app:user:1")
    })
    .await;
    assert_eq!(load_user(&db, &pg, 1).await.name, "Ada Lovelace");

    // A rolled-back write sends nothing.
    let mut tx = pg.pool.begin().await.unwrap();
    sqlx::query("update users set name = 'never' where id = 2")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    settle(&db, &pg, &channel).await;
    assert!(db.grid().contains_key("app:user:2").await);
    assert!(db.grid().contains_key("app:user:1").await);

    // A DELETE names the deleted row.
    sqlx::query("delete from users where id = 2")
        .execute(&pg.pool)
        .await
        .unwrap();
    eventually("user:2 is invalidated", || gone(&db, "app:user:2")).await;

    // A TRUNCATE cannot name its rows: it flushes the cache's namespace.
    let _: u8 = db
        .named("unrelated")
        .key("unrelated")
        .fetch_with(|| async { Ok::<_, sqlx::Error>(1) })
        .await
        .unwrap();
    sqlx::query("truncate users")
        .execute(&pg.pool)
        .await
        .unwrap();
    eventually("truncate flushes", || gone(&db, "app:unrelated")).await;

    let status = listener.status();
    assert_eq!((status.connections, status.disconnects), (1, 0));
    assert_eq!(status.invalid_payloads, 0);
    // update, sentinel, delete, truncate: the rolled-back write sent nothing.
    assert_eq!(status.notifications, 4, "{status:?}");
    drop(listener);
    pg.cleanup().await;
}

#[tokio::test]
async fn a_killed_connection_is_recovered_and_what_it_may_have_missed_is_invalidated() {
    let Some(pg) = pg("listener_killed").await else {
        return;
    };
    let channel = install_trigger(&pg).await;
    let db = cache();
    let mut listener = start(&db, &pg, &channel, &["users"]).await;
    let first_pid = listener.status().backend_pid.expect("connected");

    assert_eq!(load_user_in_collection(&db, &pg, 1).await.name, "Ada");
    db.grid()
        .put("app:other", 1u8, CacheOptions::new().tag("other"))
        .await
        .unwrap();

    let killed: bool = sqlx::query_scalar("select pg_terminate_backend($1)")
        .bind(first_pid)
        .fetch_one(&pg.pool)
        .await
        .unwrap();
    assert!(killed);
    // Written while the listener is down or coming back: its NOTIFY may
    // never reach it.
    sqlx::query("update users set name = 'Ada Lovelace' where id = 1")
        .execute(&pg.pool)
        .await
        .unwrap();

    let status = tokio::time::timeout(
        Duration::from_secs(30),
        listener.wait_for(|s| s.connections == 2 && s.recoveries == 2),
    )
    .await
    .expect("the listener reconnects and recovers");
    assert!(status.connected);
    assert_eq!(status.disconnects, 1);
    assert_ne!(status.backend_pid, Some(first_pid), "a new connection");
    assert!(status.last_error.is_some());

    // The covered tags were invalidated: the stale row is not served.
    assert!(gone(&db, "app:user:1").await);
    assert!(
        db.grid().contains_key("app:other").await,
        "only the covered tags are invalidated"
    );
    assert_eq!(
        load_user_in_collection(&db, &pg, 1).await.name,
        "Ada Lovelace"
    );

    // And notifications flow again on the new connection.
    sqlx::query("update users set name = 'Ada King' where id = 1")
        .execute(&pg.pool)
        .await
        .unwrap();
    eventually("user:1 is invalidated after the reconnect", || {
        gone(&db, "app:user:1")
    })
    .await;
    assert_eq!(load_user_in_collection(&db, &pg, 1).await.name, "Ada King");
    pg.cleanup().await;
}

#[tokio::test]
async fn without_covered_tags_a_dropped_connection_flushes() {
    let Some(pg) = pg("listener_flush").await else {
        return;
    };
    let db = cache();
    let mut listener = start(&db, &pg, &pg.schema, &[]).await;
    db.grid()
        .put("app:anything", 1u8, CacheOptions::new().tag("x"))
        .await
        .unwrap();
    let pid = listener.status().backend_pid.unwrap();
    sqlx::query("select pg_terminate_backend($1)")
        .bind(pid)
        .execute(&pg.pool)
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(30),
        listener.wait_for(|s| s.connections == 2 && s.recoveries == 2),
    )
    .await
    .expect("the listener reconnects and recovers");
    assert!(gone(&db, "app:anything").await);
    pg.cleanup().await;
}

#[tokio::test]
async fn payload_keys_tags_and_flush() {
    let Some(pg) = pg("listener_payload").await else {
        return;
    };
    let db = cache();
    let listener = start(&db, &pg, &pg.schema, &["users"]).await;
    let put = |key: &'static str, tag: &'static str| {
        let grid = db.grid().clone();
        async move {
            grid.put(key, 1u8, CacheOptions::new().tag(tag))
                .await
                .unwrap()
        }
    };
    put("app:k1", "a").await;
    put("app:k2", "b").await;
    put("app:k3", "c").await;
    put("other:k1", "d").await;

    // Keys are relative to the listener's namespace.
    notify(
        &pg.pool,
        &pg.schema,
        &NotifyPayload::new().key("k1").tag("b"),
    )
    .await
    .unwrap();
    eventually("k1 and k2 are invalidated", || async {
        gone(&db, "app:k1").await && gone(&db, "app:k2").await
    })
    .await;
    assert!(db.grid().contains_key("app:k3").await);
    assert!(db.grid().contains_key("other:k1").await);

    // Sent inside a transaction, it is delivered on commit only.
    let mut tx = pg.pool.begin().await.unwrap();
    notify(&mut *tx, &pg.schema, &NotifyPayload::new().tag("c"))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    settle(&db, &pg, &pg.schema).await;
    assert!(db.grid().contains_key("app:k3").await);

    // A flush reaches what the listener's DbCache stored, not the rest of the grid.
    let _: u8 = db
        .named("k4")
        .key("k4")
        .fetch_with(|| async { Ok::<_, sqlx::Error>(4) })
        .await
        .unwrap();
    notify(&pg.pool, &pg.schema, &NotifyPayload::new().flush())
        .await
        .unwrap();
    eventually("flush", || gone(&db, "app:k4")).await;
    assert!(db.grid().contains_key("other:k1").await);
    assert_eq!(listener.status().recoveries, 0);
    pg.cleanup().await;
}

#[tokio::test]
async fn an_unreadable_payload_counts_as_a_missed_notification() {
    let Some(pg) = pg("listener_garbage").await else {
        return;
    };
    let db = cache();
    let mut listener = start(&db, &pg, &pg.schema, &["users"]).await;
    db.grid()
        .put("app:list", 1u8, CacheOptions::new().tag("users"))
        .await
        .unwrap();
    db.grid()
        .put("app:other", 1u8, CacheOptions::new().tag("other"))
        .await
        .unwrap();
    for garbage in ["user:42", r#"{"tags":"users"}"#, r#"{"prefix":"user:"}"#] {
        sqlx::query("select pg_notify($1, $2)")
            .bind(&pg.schema)
            .bind(garbage)
            .execute(&pg.pool)
            .await
            .unwrap();
    }
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        listener.wait_for(|s| s.invalid_payloads == 3 && s.recoveries == 3),
    )
    .await
    .expect("three bad payloads, three recoveries");
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("invalid invalidation payload")),
        "{status:?}"
    );
    assert!(
        gone(&db, "app:list").await,
        "the covered tags are invalidated"
    );
    assert!(db.grid().contains_key("app:other").await);
    assert_eq!(
        status.connections, 1,
        "a bad payload is not a bad connection"
    );
    pg.cleanup().await;
}

#[tokio::test]
async fn start_returns_the_first_connection_error() {
    let Some(pg) = pg("listener_refused").await else {
        return;
    };
    let db = cache();
    let err = PgInvalidationListener::new(db.clone(), pg.options.clone().password("wrong"))
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("28P01"),
        "{err:?}"
    );
    let err = PgInvalidationListener::new(db.clone(), pg.options.clone().database("no_such_db"))
        .start()
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("3D000"),
        "{err:?}"
    );
    assert!(PgInvalidationListener::from_url(db, "postgres://127.0.0.1:notaport/db").is_err());
    pg.cleanup().await;
}
