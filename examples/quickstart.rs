//! Quickstart: an embedded store with TTLs, tags, a fill that loses a race
//! with an invalidation, zero-copy reads and stats.
//!
//! Run with `cargo run --example quickstart`.

use std::time::Duration;

use hydracache_storage::{Expiry, FillOutcome, StoreConfig};
use rkyv::{Archive, Deserialize, Serialize};

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct User {
    id: u64,
    name: String,
    email: String,
}

fn load_user(id: u64) -> User {
    println!("  (loading user {id} from the database)");
    User {
        id,
        name: format!("user-{id}"),
        email: format!("user{id}@example.com"),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = StoreConfig::new()
        .capacity_bytes(16 << 20)
        .default_ttl(Duration::from_secs(300))
        .build();

    println!("1. miss, load, store with tags [users, user:42]");
    let key = b"user:42";
    let user = match store.get::<User>(key)? {
        Some(u) => u,
        None => {
            let ticket = store.begin_fill(key, &["users", "user:42"])?;
            let user = load_user(42);
            store.complete_fill(ticket, &user, Expiry::After(Duration::from_secs(60)))?;
            user
        }
    };
    println!("  got {user:?}");

    println!("2. hit, copied out and read in place");
    let again = store.get::<User>(key)?.expect("cached");
    assert_eq!(again, user);
    let entry = store.get_ref(key).expect("cached");
    let archived = entry.archived::<User>()?;
    println!(
        "  zero-copy name = {}, ttl left = {:?}",
        archived.name,
        entry.ttl_remaining()
    );
    drop(entry);

    println!("3. invalidate tag 'users': the entry is gone at once");
    store.invalidate_tag(b"users");
    assert!(store.get::<User>(key)?.is_none());

    println!("4. a load racing an invalidation is not stored");
    let ticket = store.begin_fill(key, &["users", "user:42"])?;
    let stale = load_user(42);
    store.invalidate_tag(b"user:42");
    let outcome = store.complete_fill(ticket, &stale, Expiry::Default)?;
    assert_eq!(outcome, FillOutcome::Stale);
    println!("  fill outcome: {outcome:?}");

    println!("5. reload");
    let ticket = store.begin_fill(key, &["users", "user:42"])?;
    store.complete_fill(ticket, &load_user(42), Expiry::Default)?;
    assert!(store.get::<User>(key)?.is_some());

    println!("6. bad input is a typed error and stores nothing");
    let err = store
        .insert(b"", &1u32, Expiry::Default, &["t"])
        .unwrap_err();
    println!("  {err}");

    let stats = store.stats();
    println!(
        "stats: hits={} misses={} inserts={} stale_fills={} entries={} bytes={} hit_ratio={:.2}",
        stats.hits,
        stats.misses,
        stats.inserts,
        stats.stale_fills,
        stats.entries,
        stats.bytes,
        stats.hit_ratio()
    );
    Ok(())
}
