//! A cached sqlx query on a grid runs once in the whole grid per miss: the
//! database cache goes through the grid's `get_or_load` path, so the key's
//! owner leases the one load and answers every other member from it.

mod cluster_support;
mod db_support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cluster_support::{addr, converge, member_builder};
use db_support::{user, Sqlite, User};
use hydracache::cluster::DevCa;
use hydracache::db::DbCache;
use hydracache::Grid;

const SELECT_USER: &str = "select id, name from users where id = ?";

async fn member(ca: &DevCa, id: &str, seeds: &[SocketAddr]) -> Grid {
    member_builder(ca, id, seeds)
        .request_timeout(Duration::from_secs(2))
        .lease_timeout(Duration::from_secs(60))
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cached_query_runs_once_in_the_whole_grid_per_miss() {
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "m0", &[]).await;
    let seed = addr(&m0).await;
    let m1 = member(&ca, "m1", &[seed]).await;
    let m2 = member(&ca, "m2", &[seed]).await;
    converge(&[&m0, &m1, &m2], 3, 0).await;
    // Each member has its own pool on a database with the same rows.
    let mut members = Vec::new();
    for g in [m0, m1, m2] {
        members.push((DbCache::new(g, "app"), Arc::new(Sqlite::memory().await)));
    }
    let queries = |members: &[(DbCache, Arc<Sqlite>)]| -> u64 {
        members.iter().map(|(_, s)| s.queries()).sum()
    };
    let before = queries(&members);
    let tasks: Vec<_> = (0..90)
        .map(|i| {
            let (db, sqlite) = members[i % members.len()].clone();
            tokio::spawn(async move {
                db.entity::<User>("user", 1)
                    .fetch_one(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(1i64))
                    .await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), user(1, "Ada"));
    }
    assert_eq!(queries(&members) - before, 1, "one query in the whole grid");

    // After an invalidation anywhere, the next miss runs it once again.
    members[1].0.invalidate_entity::<User>(&1).await.unwrap();
    let before = queries(&members);
    for (db, sqlite) in &members {
        let u = db
            .entity::<User>("user", 1)
            .fetch_one(&sqlite.pool, sqlx::query_as(SELECT_USER).bind(1i64))
            .await
            .unwrap();
        assert_eq!(u, user(1, "Ada"));
    }
    assert_eq!(queries(&members) - before, 1);
}
