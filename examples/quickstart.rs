//! Quickstart: a local grid with a loader that runs once per miss, a hit,
//! a tag invalidation, a reload, a load that loses a race with an update,
//! events and stats; the actuator's dashboard serves the grid on loopback
//! while it runs (`-- --hold` keeps it serving until Ctrl-C).
//!
//! Run with `cargo run --release --example quickstart`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hydracache::actuator::Actuator;
use hydracache::rkyv::{self, Archive, Deserialize, Serialize};
use hydracache::{CacheEvent, CacheOptions, Grid};
use hydracache_examples::serve_on_loopback;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(crate = rkyv)]
struct User {
    id: u64,
    name: String,
    email: String,
}

/// Stands in for a database: counts the queries it answers.
#[derive(Clone, Default)]
struct Database {
    queries: Arc<AtomicUsize>,
    version: Arc<AtomicUsize>,
}

impl Database {
    async fn load_user(&self, id: u64) -> Result<User, std::io::Error> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let v = self.version.load(Ordering::SeqCst); // the row as the query sees it
        tokio::time::sleep(Duration::from_millis(20)).await; // the query's latency
        Ok(User {
            id,
            name: format!("user-{id} v{v}"),
            email: format!("user{id}@example.com"),
        })
    }
}

fn options(id: u64) -> CacheOptions {
    CacheOptions::new()
        .ttl(Duration::from_secs(60))
        .tags(["users".to_string(), format!("user:{id}")])
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let grid = Grid::local()
        .max_capacity_bytes(64 << 20)
        .default_ttl(Duration::from_secs(300))
        .build();
    let actuator = Actuator::new().cache("users", grid.clone()).router();
    println!("actuator: {}", serve_on_loopback(actuator).await?);
    let db = Database::default();
    let mut events = grid.subscribe_mutations();

    println!("1. 100 concurrent misses for user:42 run the query once");
    let mut callers = Vec::new();
    for _ in 0..100 {
        let (grid, db) = (grid.clone(), db.clone());
        callers.push(tokio::spawn(async move {
            grid.get_or_load("user:42", options(42), move || async move {
                db.load_user(42).await
            })
            .await
        }));
    }
    for c in callers {
        c.await.expect("task")?;
    }
    println!("   queries so far: {}", db.queries.load(Ordering::SeqCst));

    println!("2. a hit, copied out and read in place");
    let user: User = grid.get("user:42").await?.expect("cached");
    let entry = grid.get_ref("user:42").expect("cached");
    let archived = entry.archived::<User>()?;
    println!(
        "   {user:?}; zero-copy name = {}, ttl left {:?}",
        archived.name,
        entry.ttl_remaining()
    );
    drop(entry);

    println!("3. the row changes; invalidate its tag");
    db.version.fetch_add(1, Ordering::SeqCst);
    grid.invalidate_tag("user:42").await?;
    println!(
        "   cached after invalidation: {:?}",
        grid.get::<User>("user:42").await?
    );

    println!("4. the next read reloads the new row");
    let db2 = db.clone();
    let user: User = grid
        .get_or_load("user:42", options(42), move || async move {
            db2.load_user(42).await
        })
        .await?;
    println!("   {}", user.name);

    println!("5. a load that races an update is returned but not cached");
    let (g, db3) = (grid.clone(), db.clone());
    let racing = tokio::spawn(async move {
        g.get_or_load("user:7", options(7), move || async move {
            db3.load_user(7).await
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    db.version.fetch_add(1, Ordering::SeqCst);
    grid.invalidate_tag("users").await?;
    let stale = racing.await.expect("task")?;
    println!(
        "   the waiter got {:?}; cached: {:?}",
        stale.name,
        grid.get::<User>("user:7").await?.map(|u| u.name)
    );

    println!("6. events seen by a subscriber:");
    while let Some(Ok(event)) = events.try_next_event() {
        match event {
            CacheEvent::Stored { key, .. } => println!("   stored {key}"),
            CacheEvent::TagInvalidated { tag, .. } => println!("   invalidated tag {tag}"),
            other => println!("   {other:?}"),
        }
    }

    let s = grid.stats();
    println!(
        "stats: hits={} misses={} loads={} joins={} stale_discarded={} invalidations={} hit_ratio={}",
        s.hits,
        s.misses,
        s.loads,
        s.single_flight_joins,
        s.stale_loads_discarded,
        s.invalidations,
        s.hit_ratio()
            .map_or("-".to_string(), |r| format!("{r:.2}"))
    );
    let d = grid.diagnostics();
    println!(
        "diagnostics: entries={} bytes={} of {} tags={}",
        d.entries, d.bytes, d.capacity_bytes, d.tags
    );
    if std::env::args().any(|a| a == "--hold") {
        println!("the actuator keeps serving until Ctrl-C");
        std::future::pending::<()>().await;
    }
    Ok(())
}
