//! Invalidation that follows commits: entries are invalidated after the
//! transaction commits, and not at all when it rolls back — on SQLite and
//! on a real Postgres server.
#![cfg(all(feature = "sqlx-sqlite", feature = "sqlx-postgres"))]

mod db_support;

use db_support::{pg, user, Sqlite, User, PG_SELECT_USER};
use hydracache::db::{DbCache, DbCacheError, InvalidationSet};
use hydracache::Grid;

const SELECT_USER: &str = "select id, name from users where id = ?";
/// The collection tag of `User` (`#[hydracache(collection = "users")]`).
const USERS: &str = "users";

fn cache() -> DbCache {
    DbCache::new(Grid::local().build(), "app")
}

async fn load_user(db: &DbCache, sqlite: &Sqlite, id: i64) -> User {
    db.for_entity::<User>(id)
        .fetch_one(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(id))
        .await
        .unwrap()
}

async fn stored_name(sqlite: &Sqlite, id: i64) -> String {
    sqlx::query_scalar("select name from users where id = ?")
        .bind(id)
        .fetch_one(&sqlite.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn commit_then_invalidate() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    load_user(&db, &sqlite, 1).await;

    let mut tx = db.begin(&sqlite.pool).await.unwrap();
    sqlx::query("update users set name = 'Ada Lovelace' where id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.invalidate_entity::<User>(&1);
    assert_eq!(
        tx.pending().tag_set().iter().collect::<Vec<_>>(),
        ["user:1", "users"]
    );
    assert!(
        db.grid().contains_key("app:user:1").await,
        "nothing is invalidated before the commit"
    );
    tx.commit().await.unwrap();

    assert!(!db.grid().contains_key("app:user:1").await);
    assert_eq!(load_user(&db, &sqlite, 1).await.name, "Ada Lovelace");
}

#[tokio::test]
async fn rollback_invalidates_nothing() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    load_user(&db, &sqlite, 1).await;

    let mut tx = db.begin(&sqlite.pool).await.unwrap();
    sqlx::query("update users set name = 'never' where id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.invalidate_entity::<User>(&1).invalidate_key("user:1");
    tx.rollback().await.unwrap();
    assert!(db.grid().contains_key("app:user:1").await);
    assert_eq!(stored_name(&sqlite, 1).await, "Ada");

    // Dropping the transaction is a rollback too.
    {
        let mut tx = db.begin(&sqlite.pool).await.unwrap();
        sqlx::query("update users set name = 'never' where id = 1")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.invalidate_entity::<User>(&1);
    }
    assert!(db.grid().contains_key("app:user:1").await);
    assert_eq!(stored_name(&sqlite, 1).await, "Ada");
    assert_eq!(load_user(&db, &sqlite, 1).await, user(1, "Ada"));
}

#[tokio::test]
async fn write_commits_then_invalidates_what_it_recorded() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    load_user(&db, &sqlite, 2).await;
    let all = db
        .collection::<User>(USERS)
        .fetch_all(
            &sqlite.pool,
            sqlx::query_as("select id, name from users order by id"),
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 2);

    let id: i64 = db
        .write(&sqlite.pool, async |tx| {
            let (id,): (i64,) =
                sqlx::query_as("insert into users (name) values ('Hedy') returning id")
                    .fetch_one(&mut **tx)
                    .await?;
            tx.invalidate_entity::<User>(&id);
            Ok::<_, sqlx::Error>(id)
        })
        .await
        .unwrap();
    assert_eq!(id, 3);
    assert!(!db.grid().contains_key("app:users").await);
    assert!(
        db.grid().contains_key("app:user:2").await,
        "only what it named"
    );
}

#[tokio::test]
async fn a_failed_write_rolls_back_invalidates_nothing_and_returns_its_error() {
    #[derive(Debug)]
    enum AppError {
        Sql(sqlx::Error),
        NotAllowed,
    }
    impl std::fmt::Display for AppError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                AppError::Sql(e) => write!(f, "sql: {e}"),
                AppError::NotAllowed => f.write_str("not allowed"),
            }
        }
    }
    impl std::error::Error for AppError {}
    impl From<sqlx::Error> for AppError {
        fn from(e: sqlx::Error) -> Self {
            AppError::Sql(e)
        }
    }

    let sqlite = Sqlite::memory().await;
    let db = cache();
    load_user(&db, &sqlite, 1).await;
    let err = db
        .write(&sqlite.pool, async |tx| {
            sqlx::query("update users set name = 'never' where id = 1")
                .execute(&mut **tx)
                .await?;
            tx.invalidate_entity::<User>(&1);
            Err::<(), _>(AppError::NotAllowed)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, DbCacheError::Database(AppError::NotAllowed)),
        "{err:?}"
    );
    assert!(db.grid().contains_key("app:user:1").await);
    assert_eq!(stored_name(&sqlite, 1).await, "Ada");

    // A failing statement inside the write: sqlx's error, through `?`.
    let err = db
        .write(&sqlite.pool, async |tx| {
            tx.invalidate_tag("users");
            sqlx::query("insert into users (id, name) values (1, 'duplicate')")
                .execute(&mut **tx)
                .await?;
            Ok::<_, AppError>(())
        })
        .await
        .unwrap_err();
    let DbCacheError::Database(AppError::Sql(sqlx::Error::Database(e))) = &err else {
        panic!("expected the unique violation, got {err:?}");
    };
    assert!(e.message().contains("UNIQUE"), "{e}");
    assert!(db.grid().contains_key("app:user:1").await);
}

#[tokio::test]
async fn a_write_that_cannot_begin_returns_the_error() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    sqlite.pool.close().await;
    let err = db
        .write(&sqlite.pool, async |_tx| Ok::<_, sqlx::Error>(()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, DbCacheError::Database(sqlx::Error::PoolClosed)),
        "{err:?}"
    );
    let err = db.begin(&sqlite.pool).await.unwrap_err();
    assert!(matches!(err, sqlx::Error::PoolClosed), "{err:?}");
}

#[tokio::test]
async fn a_transaction_of_your_own_can_be_wrapped() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    load_user(&db, &sqlite, 1).await;
    let tx = sqlite.pool.begin().await.unwrap();
    let mut tx = db.with_transaction(tx);
    sqlx::query("update users set name = 'Ada King' where id = 1")
        .execute(&mut **tx.transaction())
        .await
        .unwrap();
    tx.invalidate(InvalidationSet::new().entity("user", 1));
    tx.commit().await.unwrap();
    assert_eq!(load_user(&db, &sqlite, 1).await.name, "Ada King");
}

#[tokio::test]
async fn reads_in_a_transaction_go_through_the_cache_and_are_stored_only_until_it_writes() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    let mut tx = db.begin(&sqlite.pool).await.unwrap();
    let name = String::from("Grace");
    // Before any write: the row is committed data, cached.
    let grace: User = tx
        .fetch_one(
            db.for_entity::<User>(2),
            sqlx::query_as("select id, name from users where name = ?").bind(&name),
        )
        .await
        .unwrap();
    assert_eq!(grace, user(2, "Grace"));
    assert!(db.grid().contains_key("app:user:2").await);
    // A hit is served from the cache: no statement runs.
    let before = sqlite.queries();
    let again: User = tx
        .fetch_one(
            db.for_entity::<User>(2),
            sqlx::query_as(SELECT_USER).bind(2),
        )
        .await
        .unwrap();
    assert_eq!((again, sqlite.queries()), (user(2, "Grace"), before));

    // After a recorded write: the transaction's own row, not cached.
    sqlx::query("update users set name = 'never' where id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.invalidate_entity::<User>(&1);
    let uncommitted: User = tx
        .fetch_one(
            db.for_entity::<User>(1),
            sqlx::query_as(SELECT_USER).bind(1),
        )
        .await
        .unwrap();
    assert_eq!(uncommitted.name, "never");
    assert!(!db.grid().contains_key("app:user:1").await);
    let none: Option<User> = tx
        .fetch_optional(
            db.for_entity::<User>(9),
            sqlx::query_as(SELECT_USER).bind(9),
        )
        .await
        .unwrap();
    assert_eq!(none, None);
    assert!(!db.grid().contains_key("app:user:9").await);
    let all: Vec<User> = tx
        .fetch_all(
            db.collection("users:all"),
            sqlx::query_as("select id, name from users order by id"),
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert!(!db.grid().contains_key("app:users:all").await);
    tx.rollback().await.unwrap();
    assert_eq!(load_user(&db, &sqlite, 1).await.name, "Ada");
}

#[tokio::test]
async fn a_borrowed_query_runs_on_a_connection_and_is_cached() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    let name = String::from("Ada");
    let mut conn = sqlite.pool.acquire().await.unwrap();
    let rows: Vec<User> = db
        .collection(&format!("users:named:{name}"))
        .fetch_all_in(
            &mut *conn,
            sqlx::query_as("select id, name from users where name = ?").bind(name.as_str()),
        )
        .await
        .unwrap();
    assert_eq!(rows, [user(1, "Ada")]);
    let one: Option<User> = db
        .for_entity::<User>(1)
        .fetch_optional_in(&mut *conn, sqlx::query_as(SELECT_USER).bind(1))
        .await
        .unwrap();
    assert_eq!(one, Some(user(1, "Ada")));
    drop(conn);
    assert!(db.grid().contains_key("app:users:named:Ada").await);
    assert_eq!(load_user(&db, &sqlite, 1).await, user(1, "Ada"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_leader_that_runs_the_query_itself_fails_its_joiners_and_leaves_no_flight() {
    let sqlite = Sqlite::memory().await;
    let db = cache();
    // The pool's one connection is taken: the leader's query waits for it.
    let held = sqlite.pool.acquire().await.unwrap();
    let leader = tokio::spawn({
        let (db, pool) = (db.clone(), sqlite.pool.clone());
        async move {
            let name = String::from("Ada");
            db.for_entity::<User>(1)
                .fetch_one_in(
                    &pool,
                    sqlx::query_as("select id, name from users where name = ?").bind(name.as_str()),
                )
                .await
        }
    });
    for _ in 0..500 {
        if db.grid().stats().loads == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(db.grid().stats().loads, 1, "the leader started its load");
    let joiner = tokio::spawn({
        let (db, pool) = (db.clone(), sqlite.pool.clone());
        async move {
            db.for_entity::<User>(1)
                .fetch_one_in(&pool, sqlx::query_as(SELECT_USER).bind(1))
                .await
        }
    });
    for _ in 0..500 {
        if db.grid().stats().single_flight_joins == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    leader.abort();
    let joined = tokio::time::timeout(std::time::Duration::from_secs(30), joiner)
        .await
        .expect("a joiner of a cancelled leader does not hang")
        .unwrap();
    assert!(
        matches!(
            joined,
            Err(DbCacheError::Cache(hydracache::CacheError::Cancelled))
        ),
        "{joined:?}"
    );
    drop(held);
    assert_eq!(db.grid().diagnostics().loads_in_flight, 0);
    assert!(!db.grid().contains_key("app:user:1").await);
    assert_eq!(load_user(&db, &sqlite, 1).await, user(1, "Ada"));
}

// ---- Postgres ---------------------------------------------------------------

async fn pg_load_user(db: &DbCache, pool: &sqlx::PgPool, id: i64) -> User {
    db.for_entity::<User>(id)
        .fetch_one(pool, sqlx::query_as(PG_SELECT_USER).bind(id))
        .await
        .unwrap()
}

#[tokio::test]
async fn postgres_commit_then_invalidate_and_rollback_invalidates_nothing() {
    let Some(pg) = pg("tx_commit_rollback").await else {
        return;
    };
    let db = cache();
    assert_eq!(pg_load_user(&db, &pg.pool, 1).await.name, "Ada");

    // Rollback: nothing invalidated, nothing written.
    let mut tx = db.begin(&pg.pool).await.unwrap();
    sqlx::query("update users set name = 'never' where id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.invalidate_entity::<User>(&1);
    tx.rollback().await.unwrap();
    assert!(db.grid().contains_key("app:user:1").await);

    // Commit: invalidated after, and the reload reads the committed row.
    let mut tx = db.begin(&pg.pool).await.unwrap();
    sqlx::query("update users set name = 'Ada Lovelace' where id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.invalidate_entity::<User>(&1);
    // Before the commit, readers still get the cached (and committed) row.
    assert_eq!(pg_load_user(&db, &pg.pool, 1).await.name, "Ada");
    tx.commit().await.unwrap();
    assert!(!db.grid().contains_key("app:user:1").await);
    assert_eq!(pg_load_user(&db, &pg.pool, 1).await.name, "Ada Lovelace");

    pg.cleanup().await;
}

#[tokio::test]
async fn postgres_reads_in_a_transaction_are_stored_only_until_it_writes() {
    let Some(pg) = pg("tx_reads").await else {
        return;
    };
    let db = cache();
    let mut tx = db.begin(&pg.pool).await.unwrap();
    let grace: User = tx
        .fetch_one(
            db.for_entity::<User>(2),
            sqlx::query_as(PG_SELECT_USER).bind(2i64),
        )
        .await
        .unwrap();
    assert_eq!(grace, user(2, "Grace"));
    assert!(db.grid().contains_key("app:user:2").await);
    sqlx::query("update users set name = 'never' where id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.invalidate_entity::<User>(&1);
    let uncommitted: User = tx
        .fetch_one(
            db.for_entity::<User>(1),
            sqlx::query_as(PG_SELECT_USER).bind(1i64),
        )
        .await
        .unwrap();
    assert_eq!(uncommitted.name, "never");
    assert!(!db.grid().contains_key("app:user:1").await);
    tx.rollback().await.unwrap();
    assert_eq!(pg_load_user(&db, &pg.pool, 1).await.name, "Ada");
    pg.cleanup().await;
}

#[tokio::test]
async fn postgres_a_commit_the_server_refuses_invalidates_nothing() {
    let Some(pg) = pg("tx_commit_refused").await else {
        return;
    };
    sqlx::query(
        "create table likes (user_id bigint not null references users (id) \
         deferrable initially deferred)",
    )
    .execute(&pg.pool)
    .await
    .unwrap();
    let db = cache();
    pg_load_user(&db, &pg.pool, 1).await;

    let mut tx = db.begin(&pg.pool).await.unwrap();
    sqlx::query("update users set name = 'never' where id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    // Checked only at COMMIT: the server answers with an error and rolls back.
    sqlx::query("insert into likes values (999)")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.invalidate_entity::<User>(&1);
    let err = tx.commit().await.unwrap_err();
    assert_eq!(err.database_code().as_deref(), Some("23503"), "{err:?}");
    assert!(matches!(
        err,
        DbCacheError::Database(sqlx::Error::Database(_))
    ));
    assert!(
        db.grid().contains_key("app:user:1").await,
        "the server said no: nothing changed, nothing to invalidate"
    );
    assert_eq!(pg_load_user(&db, &pg.pool, 1).await.name, "Ada");

    pg.cleanup().await;
}

#[tokio::test]
async fn postgres_a_commit_whose_answer_is_lost_invalidates_anyway() {
    let Some(pg) = pg("tx_commit_lost").await else {
        return;
    };
    let db = cache();
    pg_load_user(&db, &pg.pool, 1).await;

    let mut tx = db.begin(&pg.pool).await.unwrap();
    sqlx::query("update users set name = 'maybe' where id = 1")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.invalidate_entity::<User>(&1);
    let pid: i32 = sqlx::query_scalar("select pg_backend_pid()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let killed: bool = sqlx::query_scalar("select pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&pg.pool)
        .await
        .unwrap();
    assert!(killed);

    // The client reads the dying backend's FATAL 57P01 (or, had it been
    // slower, a closed socket) instead of COMMIT's answer.
    let err = tx.commit().await.unwrap_err();
    assert!(matches!(err, DbCacheError::Database(_)), "{err:?}");
    assert!(
        !db.grid().contains_key("app:user:1").await,
        "the outcome is unknown to the client: invalidate"
    );
    // (The server rolled back when the backend died.)
    assert_eq!(pg_load_user(&db, &pg.pool, 1).await.name, "Ada");

    pg.cleanup().await;
}
