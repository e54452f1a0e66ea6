//! The local grid's guarantees, one test each.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use hydracache::{
    cacheable, cacheable_infallible, CacheError, CacheEvent, CacheEventKind, CacheKeyBuilder,
    CacheOptions, Clock, EventError, EventOrigin, Grid, ManualClock, Postcard, StoreError, TagSet,
};
use rkyv::{Archive, Deserialize, Serialize};
use tokio::sync::{oneshot, Barrier};

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
struct User {
    id: u64,
    name: String,
}

#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
struct SerdeUser {
    id: u64,
    email: String,
}

#[derive(Debug)]
struct DbError(&'static str);
impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "db error: {}", self.0)
    }
}
impl std::error::Error for DbError {}

fn user(id: u64) -> User {
    User {
        id,
        name: format!("user-{id}"),
    }
}

/// A loader that counts its runs and finishes when told to.
struct Gate {
    runs: Arc<AtomicUsize>,
}

impl Gate {
    fn new() -> Self {
        Gate {
            runs: Arc::new(AtomicUsize::new(0)),
        }
    }
    fn runs(&self) -> usize {
        self.runs.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_run_the_loader_once_and_all_get_its_value() {
    let grid = Grid::local().build();
    let gate = Gate::new();
    let barrier = Arc::new(Barrier::new(50));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (grid, runs, barrier, mut release) = (
            grid.clone(),
            gate.runs.clone(),
            barrier.clone(),
            release_rx.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            grid.get_or_load("user:1", CacheOptions::new(), move || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let _ = release.wait_for(|r| *r).await;
                Ok::<_, DbError>(user(1))
            })
            .await
        }));
    }
    // Let every caller reach the flight before the load may finish.
    while grid.stats().loads + grid.stats().single_flight_joins < 50 {
        tokio::task::yield_now().await;
    }
    release_tx.send(true).unwrap();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), user(1));
    }
    assert_eq!(gate.runs(), 1);
    let s = grid.stats();
    assert_eq!((s.loads, s.single_flight_joins), (1, 49));
    // Hits bypass single-flight entirely.
    let v: User = grid
        .get_or_load("user:1", CacheOptions::new(), || async {
            Err::<User, _>(DbError("not called"))
        })
        .await
        .unwrap();
    assert_eq!(v, user(1));
    assert_eq!(grid.stats().loads, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_any_waiter_even_the_first_does_not_cancel_the_load() {
    let grid = Grid::local().build();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let first = tokio::spawn({
        let grid = grid.clone();
        async move {
            grid.get_or_load("k", CacheOptions::new(), move || async move {
                r.fetch_add(1, Ordering::SeqCst);
                let _ = release_rx.await;
                Ok::<_, DbError>(7u64)
            })
            .await
        }
    });
    while grid.stats().loads == 0 {
        tokio::task::yield_now().await;
    }
    let second = tokio::spawn({
        let grid = grid.clone();
        async move {
            grid.get_or_load("k", CacheOptions::new(), || async {
                Ok::<_, DbError>(0u64)
            })
            .await
        }
    });
    while grid.stats().single_flight_joins == 0 {
        tokio::task::yield_now().await;
    }
    first.abort(); // the leader goes away
    assert!(first.await.unwrap_err().is_cancelled());
    release_tx.send(()).unwrap();
    assert_eq!(second.await.unwrap().unwrap(), 7);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        grid.get::<u64>("k").await.unwrap(),
        Some(7),
        "the load completed and was cached"
    );
}

#[tokio::test]
async fn a_loader_error_reaches_every_waiter_unchanged_and_the_next_call_loads_again() {
    let grid = Grid::local().build();
    let (tx, rx) = oneshot::channel::<()>();
    let a = grid.get_or_load::<u64, _, _, _>("k", CacheOptions::new(), || async move {
        let _ = rx.await;
        Err(DbError("connection refused"))
    });
    let b = grid
        .get_or_load::<u64, _, _, _>("k", CacheOptions::new(), || async { Ok::<_, DbError>(1) });
    let release = async move {
        tokio::task::yield_now().await;
        tx.send(()).unwrap();
    };
    let (a, b, ()) = tokio::join!(a, b, release);
    for r in [a, b] {
        let err = r.unwrap_err();
        assert_eq!(err.load_error::<DbError>().unwrap().0, "connection refused");
    }
    assert!(
        !grid.contains_key("k").await,
        "a failed load caches nothing"
    );
    let v = grid
        .get_or_load("k", CacheOptions::new(), || async {
            Ok::<_, DbError>(2u64)
        })
        .await
        .unwrap();
    assert_eq!(v, 2);
    let s = grid.stats();
    assert_eq!((s.loads, s.load_errors, s.single_flight_joins), (2, 1, 1));
}

#[tokio::test]
async fn a_loader_panic_reaches_every_waiter_and_leaves_no_stuck_state() {
    let grid = Grid::local().build();
    let (tx, rx) = oneshot::channel::<()>();
    let a = grid.get_or_load::<u64, _, _, DbError>("k", CacheOptions::new(), || async move {
        let _ = rx.await;
        panic!("loader exploded")
    });
    let b = grid
        .get_or_load::<u64, _, _, _>("k", CacheOptions::new(), || async { Ok::<_, DbError>(1) });
    let release = async move {
        tokio::task::yield_now().await;
        tx.send(()).unwrap();
    };
    let (a, b, ()) = tokio::join!(a, b, release);
    for r in [a, b] {
        match r.unwrap_err() {
            CacheError::LoaderPanicked(msg) => assert!(msg.contains("loader exploded")),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(grid.diagnostics().loads_in_flight, 0);
    let v = grid
        .get_or_load("k", CacheOptions::new(), || async {
            Ok::<_, DbError>(3u64)
        })
        .await
        .unwrap();
    assert_eq!(v, 3);
}

async fn invalidation_race(invalidate: impl AsyncFnOnce(&Grid)) {
    let grid = Grid::local().build();
    let (tx, rx) = oneshot::channel::<()>();
    let waiting = tokio::spawn({
        let grid = grid.clone();
        async move {
            grid.get_or_load(
                "user:1",
                CacheOptions::new().tags(["users", "user:1"]),
                || async move {
                    let _ = rx.await;
                    Ok::<_, DbError>(user(1)) // read before the update
                },
            )
            .await
        }
    });
    while grid.stats().loads == 0 {
        tokio::task::yield_now().await;
    }
    invalidate(&grid).await; // the row changed while the load ran
                             // A caller after the invalidation does not join the stale load.
    let fresh = grid
        .get_or_load(
            "user:1",
            CacheOptions::new().tags(["users", "user:1"]),
            || async { Ok::<_, DbError>(user(2)) },
        )
        .await
        .unwrap();
    assert_eq!(fresh, user(2));
    tx.send(()).unwrap();
    assert_eq!(
        waiting.await.unwrap().unwrap(),
        user(1),
        "the waiter still gets its value"
    );
    assert_eq!(
        grid.get::<User>("user:1").await.unwrap(),
        Some(user(2)),
        "the stale value was not stored"
    );
    let s = grid.stats();
    assert_eq!((s.loads, s.stale_loads_discarded), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_invalidated_during_a_load_wins() {
    invalidation_race(async |g: &Grid| g.invalidate_key("user:1").await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_invalidated_during_a_load_wins() {
    invalidation_race(async |g: &Grid| g.invalidate_tag("users").await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_during_a_load_wins() {
    invalidation_race(async |g: &Grid| g.flush().await.unwrap()).await;
}

#[tokio::test]
async fn expired_values_are_never_returned_and_contains_key_agrees() {
    let clock = ManualClock::new();
    let grid = Grid::local()
        .default_ttl(Duration::from_secs(10))
        .clock(Clock::Manual(clock.clone()))
        .build();
    grid.put(
        "short",
        1u8,
        CacheOptions::new().ttl(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    grid.put("default", 2u8, CacheOptions::new()).await.unwrap();
    grid.put("forever", 3u8, CacheOptions::new().no_ttl())
        .await
        .unwrap();
    clock.advance(Duration::from_millis(999));
    assert_eq!(grid.get::<u8>("short").await.unwrap(), Some(1));
    clock.advance(Duration::from_millis(1));
    assert_eq!(grid.get::<u8>("short").await.unwrap(), None);
    assert!(!grid.contains_key("short").await);
    clock.advance(Duration::from_secs(9));
    assert!(!grid.contains_key("default").await);
    assert_eq!(grid.get::<u8>("default").await.unwrap(), None);
    assert_eq!(grid.get::<u8>("forever").await.unwrap(), Some(3));
    // An expired entry reloads.
    let v = grid
        .get_or_load("short", CacheOptions::new(), || async {
            Ok::<_, DbError>(9u8)
        })
        .await
        .unwrap();
    assert_eq!(v, 9);
    // Reclaimed by this sweep, or already by the background one (a loaded
    // machine may let a second of real time pass during the test).
    grid.run_maintenance();
    assert_eq!(
        grid.diagnostics().entries,
        2,
        "the expired default-TTL entry is reclaimed without a read"
    );
}

#[tokio::test]
async fn capacity_bounds_bytes_and_evictions_are_counted() {
    let grid = Grid::local().max_capacity_bytes(256 << 10).build();
    for i in 0..5_000u64 {
        grid.put(&format!("k{i}"), vec![i; 16], CacheOptions::new().tag("t"))
            .await
            .unwrap();
    }
    let d = grid.diagnostics();
    assert!(d.bytes <= 256 << 10, "{d:?}");
    assert!(d.stats.evicted_capacity > 0);
    assert_eq!(d.entries + d.stats.evicted_capacity, 5_000);
}

#[tokio::test]
async fn a_hit_completes_on_its_first_poll() {
    let grid = Grid::local().build();
    grid.put(
        "k",
        user(1),
        CacheOptions::new()
            .tags(["a", "b"])
            .ttl(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    let hit = grid
        .get::<User>("k")
        .now_or_never()
        .expect("ready on first poll");
    assert_eq!(hit.unwrap(), Some(user(1)));
    let loaded = grid
        .get_or_load("k", CacheOptions::new(), || async {
            Ok::<_, DbError>(user(2))
        })
        .now_or_never()
        .expect("a get_or_load hit is ready on first poll");
    assert_eq!(loaded.unwrap(), user(1));
    let typed = grid.typed::<User>("ns");
    typed.put("x", user(3), CacheOptions::new()).await.unwrap();
    assert_eq!(
        typed.get("x").now_or_never().unwrap().unwrap(),
        Some(user(3))
    );
}

#[tokio::test]
async fn get_is_a_lazy_send_future_that_counts_and_publishes_only_when_polled() {
    fn send_and_unpin<F: std::future::Future + Send + Unpin>(f: F) -> F {
        f
    }
    let grid = Grid::local().enable_access_events(true).build();
    grid.put("k", 7u64, CacheOptions::new()).await.unwrap();
    let mut access = grid.subscribe_access();

    // Built and dropped without a poll: no lookup, no count, no event.
    let get = send_and_unpin(grid.get::<u64>("k"));
    drop(get);
    let unpolled = send_and_unpin(grid.get::<u64>("missing"));
    assert_eq!((grid.stats().hits, grid.stats().misses), (0, 0));
    assert_eq!(grid.stats().events_published, 0);

    // Polled: the hit and the miss are counted and published, in order.
    assert_eq!(unpolled.await.unwrap(), None);
    assert_eq!(grid.get::<u64>("k").await.unwrap(), Some(7));
    assert_eq!((grid.stats().hits, grid.stats().misses), (1, 1));
    let first = access.next_event().await.unwrap();
    assert_eq!(
        first,
        CacheEvent::Miss {
            key: "missing".into()
        }
    );
    let second = access.next_event().await.unwrap();
    assert_eq!(second, CacheEvent::Hit { key: "k".into() });

    // A read of the wrong type is an error and publishes no hit (the
    // caller got no value): the next event is the next read's.
    assert!(grid.get::<[u8; 64]>("k").await.is_err());
    grid.put("after", 1u8, CacheOptions::new()).await.unwrap();
    let _ = grid.get::<u8>("after").await.unwrap();
    let next = access.next_event().await.unwrap();
    assert_eq!(
        next,
        CacheEvent::Hit {
            key: "after".into()
        }
    );
}

#[tokio::test]
async fn no_event_is_built_without_a_subscriber() {
    let grid = Grid::local().enable_access_events(true).build();
    for i in 0..100u64 {
        grid.put(&format!("k{i}"), i, CacheOptions::new().tag("t"))
            .await
            .unwrap();
        let _ = grid.get::<u64>(&format!("k{i}")).await.unwrap();
    }
    grid.invalidate_tag("t").await.unwrap();
    assert_eq!(grid.stats().events_published, 0);

    let _sub = grid.subscribe();
    grid.put("x", 1u64, CacheOptions::new()).await.unwrap();
    let _ = grid.get::<u64>("x").await; // access events need an access subscriber
    assert_eq!(grid.stats().events_published, 1);
    let _access = grid.subscribe_access();
    let _ = grid.get::<u64>("x").await;
    assert_eq!(grid.stats().events_published, 2);
}

#[tokio::test]
async fn subscriptions_filter_and_a_slow_subscriber_lags_without_blocking_the_cache() {
    let grid = Grid::local().event_buffer_capacity(8).build();
    let mut all = grid.subscribe();
    let mut key = grid.subscribe_key("user:1");
    let mut tag = grid.subscribe_tag("users");
    let mut mutations = grid.subscribe_mutations();
    grid.put("user:1", user(1), CacheOptions::new().tag("users"))
        .await
        .unwrap();
    grid.put("other", 1u8, CacheOptions::new()).await.unwrap();
    grid.invalidate_tag("users").await.unwrap();
    grid.remove("user:1").await.unwrap();

    assert_eq!(
        key.next_event().await.unwrap(),
        CacheEvent::Stored {
            key: "user:1".into(),
            tags: vec!["users".into()],
            origin: EventOrigin::Local
        }
    );
    assert_eq!(
        key.next_event().await.unwrap(),
        CacheEvent::Removed {
            key: "user:1".into(),
            origin: EventOrigin::Local
        }
    );
    assert!(matches!(
        tag.next_event().await.unwrap(),
        CacheEvent::Stored { .. }
    ));
    assert_eq!(
        tag.next_event().await.unwrap(),
        CacheEvent::TagInvalidated {
            tag: "users".into(),
            origin: EventOrigin::Local
        }
    );
    for _ in 0..4 {
        assert!(mutations.next_event().await.unwrap().is_mutation());
    }
    assert!(all.next_event().await.is_ok());

    // `all` stops reading; the cache keeps going and `all` learns how much it missed.
    for i in 0..100u64 {
        grid.put(&format!("n{i}"), i, CacheOptions::new())
            .await
            .unwrap();
    }
    match all.next_event().await {
        Err(EventError::Lagged(n)) => assert!(n >= 90, "{n}"),
        other => panic!("{other:?}"),
    }
    assert!(
        all.next_event().await.is_ok(),
        "a lagged subscriber continues with what is buffered"
    );
    assert!(grid.stats().subscriber_lag >= 90);
}

#[tokio::test]
async fn on_mutation_calls_back_until_the_handle_is_dropped() {
    let grid = Grid::local().build();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    let handle = grid.on_mutation(move |e| {
        assert!(e.is_mutation());
        s.fetch_add(1, Ordering::SeqCst);
    });
    grid.put("a", 1u8, CacheOptions::new()).await.unwrap();
    while seen.load(Ordering::SeqCst) < 1 {
        tokio::task::yield_now().await;
    }
    assert_eq!(grid.diagnostics().subscribers, 1);
    drop(handle);
    while grid.diagnostics().subscribers != 0 {
        tokio::task::yield_now().await;
    }
    grid.put("b", 1u8, CacheOptions::new()).await.unwrap();
    assert_eq!(grid.stats().events_published, 1, "nobody listens any more");
}

#[tokio::test]
async fn serde_types_work_through_the_postcard_codec() {
    let grid = Grid::local().codec::<Postcard>().build();
    let u = SerdeUser {
        id: 1,
        email: "a@example.com".into(),
    };
    grid.put("u", u.clone(), CacheOptions::new()).await.unwrap();
    assert_eq!(grid.get::<SerdeUser>("u").await.unwrap(), Some(u.clone()));
    let loaded = grid
        .get_or_load("v", CacheOptions::new(), || async {
            Ok::<_, DbError>(SerdeUser {
                id: 2,
                email: "b".into(),
            })
        })
        .await
        .unwrap();
    assert_eq!(loaded.id, 2);
    assert_eq!(grid.diagnostics().codec, "postcard");
}

#[tokio::test]
async fn a_read_of_the_wrong_type_is_a_typed_error_and_keeps_the_entry() {
    #[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
    struct UserV2 {
        id: u64,
        name: String,
        roles: Vec<String>,
    }
    let grid = Grid::local().build();
    grid.put("user:1", user(1), CacheOptions::new())
        .await
        .unwrap();
    let err = grid.get::<UserV2>("user:1").await.unwrap_err();
    assert!(
        matches!(err, CacheError::Store(StoreError::Decode(_))),
        "{err:?}"
    );
    // The mismatch is the caller's: a reader of the right type still hits.
    assert_eq!(grid.get::<User>("user:1").await.unwrap(), Some(user(1)));

    let serde_view = grid.typed_with::<SerdeUser, Postcard>("s");
    grid.put("s:1", 7u8, CacheOptions::new()).await.unwrap();
    let err = serde_view.get("1").await.unwrap_err();
    assert!(
        matches!(
            err,
            CacheError::Codec {
                codec: "postcard",
                ..
            }
        ),
        "{err:?}"
    );
    // The codec's own error is kept as the source, not flattened into a string.
    let source = std::error::Error::source(&err).expect("the codec's error");
    assert!(!source.to_string().is_empty());
    assert_eq!(grid.get::<u8>("s:1").await.unwrap(), Some(7));
}

#[tokio::test]
async fn a_miss_through_a_typed_view_is_counted_once() {
    let grid = Grid::local().enable_access_events(true).build();
    let mut access = grid.subscribe_access();
    let users = grid.typed::<User>("user");
    let loaded = users
        .get_or_load("2", CacheOptions::new(), || async {
            Ok::<_, DbError>(user(2))
        })
        .await
        .unwrap();
    assert_eq!(loaded, user(2));
    let s = grid.stats();
    assert_eq!((s.hits, s.misses, s.loads), (0, 1, 1));
    assert_eq!(
        access.try_next_event().map(|e| e.unwrap().kind()),
        Some(CacheEventKind::Miss)
    );
    assert!(access.try_next_event().is_none(), "one Miss event");

    let _: u64 = users
        .grid()
        .typed::<u64>("n")
        .get_or_insert_with("1", CacheOptions::new(), || async { 1 })
        .await
        .unwrap();
    assert_eq!(grid.stats().misses, 2);
}

#[tokio::test]
async fn bad_input_is_a_typed_error_and_loses_nothing() {
    let grid = Grid::local()
        .max_capacity_bytes(1 << 20)
        .max_entry_bytes(1024)
        .max_key_len(32)
        .build();
    grid.put("keep", 1u32, CacheOptions::new()).await.unwrap();
    assert!(matches!(
        grid.put("", 1u32, CacheOptions::new()).await,
        Err(CacheError::Store(StoreError::EmptyKey))
    ));
    assert!(matches!(
        grid.put(&"k".repeat(33), 1u32, CacheOptions::new()).await,
        Err(CacheError::Store(StoreError::KeyTooLong {
            len: 33,
            max: 32
        }))
    ));
    assert!(matches!(
        grid.put("keep", vec![0u8; 4096], CacheOptions::new()).await,
        Err(CacheError::Store(StoreError::EntryTooLarge { .. }))
    ));
    assert!(matches!(
        grid.put("keep", 1u32, CacheOptions::new().tag("")).await,
        Err(CacheError::Store(StoreError::BadTag { .. }))
    ));
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let err = grid
        .get_or_load("", CacheOptions::new(), move || async move {
            r.fetch_add(1, Ordering::SeqCst);
            Ok::<_, DbError>(1u32)
        })
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::Store(StoreError::EmptyKey)));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "the loader never ran for a bad key"
    );
    // A loaded value too large to cache is an error for every waiter.
    let err = grid
        .get_or_load("big", CacheOptions::new(), || async {
            Ok::<_, DbError>(vec![0u8; 4096])
        })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        CacheError::Store(StoreError::EntryTooLarge { .. })
    ));
    assert_eq!(grid.get::<u32>("keep").await.unwrap(), Some(1));
    assert_eq!(grid.diagnostics().entries, 1);
}

#[tokio::test]
async fn two_call_sites_disagreeing_about_a_type_get_a_type_mismatch() {
    let grid = Grid::local().build();
    let (tx, rx) = oneshot::channel::<()>();
    let a = grid.get_or_load("k", CacheOptions::new(), || async move {
        let _ = rx.await;
        Ok::<_, DbError>(1u64)
    });
    let b = grid.get_or_load("k", CacheOptions::new(), || async {
        Ok::<_, DbError>(String::new())
    });
    let release = async move {
        tokio::task::yield_now().await;
        tx.send(()).unwrap();
    };
    let (a, b, ()) = tokio::join!(a, b, release);
    assert_eq!(a.unwrap(), 1);
    assert!(matches!(b, Err(CacheError::TypeMismatch { .. })));
}

#[tokio::test]
async fn typed_views_share_storage_stats_and_invalidation() {
    let grid = Grid::local().build();
    let users = grid.typed::<User>("user");
    users
        .put("1", user(1), CacheOptions::new().tag("users"))
        .await
        .unwrap();
    assert_eq!(grid.get::<User>("user:1").await.unwrap(), Some(user(1)));
    assert_eq!(users.get("1").await.unwrap(), Some(user(1)));
    let loaded = users
        .get_or_load("2", CacheOptions::new().tag("users"), || async {
            Ok::<_, DbError>(user(2))
        })
        .await
        .unwrap();
    assert_eq!(loaded, user(2));
    grid.invalidate_tag("users").await.unwrap();
    assert_eq!(users.get("1").await.unwrap(), None);
    assert!(!users.contains_key("2").await);
    users.put("3", user(3), CacheOptions::new()).await.unwrap();
    assert!(users.remove("3").await.unwrap());
    let s = grid.stats();
    assert_eq!((s.hits, s.misses, s.loads), (2, 2, 1));
}

#[tokio::test]
async fn macros_expand_to_the_cache_methods() {
    let grid = Grid::local().build();
    let runs = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let r = runs.clone();
        let v: u64 = cacheable!(
            cache = grid,
            key = "answer",
            tag = "numbers",
            ttl_secs = 60,
            load = move || async move {
                r.fetch_add(1, Ordering::SeqCst);
                Ok::<_, DbError>(42)
            },
        )
        .await
        .unwrap();
        assert_eq!(v, 42);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let v: String = cacheable_infallible!(
        cache = grid,
        key = format!("s:{}", 1),
        tags = ["x", "y"],
        load = || async { "one".to_string() }
    )
    .await
    .unwrap();
    assert_eq!(v, "one");
    grid.invalidate_tag("numbers").await.unwrap();
    assert!(!grid.contains_key("answer").await);
    assert!(grid.contains_key("s:1").await);
}

#[test]
fn key_segments_cannot_collide() {
    let cases = [
        (vec!["a:b"], vec!["a", "b"]),
        (vec!["a\\", "b"], vec!["a\\:b"]),
        (vec!["a", ""], vec!["a:"]),
        (vec!["", ""], vec![":"]),
    ];
    for (x, y) in cases {
        let kx = x
            .iter()
            .fold(CacheKeyBuilder::new(), |b, s| b.segment(s))
            .build_string();
        let ky = y
            .iter()
            .fold(CacheKeyBuilder::new(), |b, s| b.segment(s))
            .build_string();
        assert_ne!(kx, ky, "{x:?} vs {y:?}");
    }
    assert_eq!(
        CacheKeyBuilder::new()
            .tenant("t")
            .entity("user", 42)
            .build_string(),
        "tenant:t:user:42"
    );
    let set: TagSet = ["a", "b", "a"].into_iter().collect();
    assert_eq!(set.len(), 2);
    assert_eq!(
        CacheOptions::new().tag_set(set).tag("c").tag_names().len(),
        3
    );
}

#[tokio::test]
async fn a_loader_that_panics_before_returning_its_future_leaves_no_stuck_flight() {
    let grid = Grid::local().build();
    let err = grid
        .get_or_load::<u64, _, std::future::Ready<Result<u64, DbError>>, DbError>(
            "k",
            CacheOptions::new(),
            || panic!("could not even start"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CacheError::LoaderPanicked(ref m) if m.contains("could not even start")),
        "{err:?}"
    );
    assert_eq!(grid.diagnostics().loads_in_flight, 0);
    let v = grid
        .get_or_load("k", CacheOptions::new(), || async {
            Ok::<_, DbError>(5u64)
        })
        .await
        .unwrap();
    assert_eq!(v, 5);
    assert_eq!(grid.stats().load_errors, 1);
}

#[tokio::test]
async fn typed_views_subscribe_within_their_namespace() {
    let grid = Grid::local().enable_access_events(true).build();
    let users = grid.typed::<User>("user");
    let mut all = users.subscribe();
    let mut one = users.subscribe_key("1");
    let mut tagged = users.subscribe_tag("vip");
    let mut access = users.subscribe_access();

    grid.put("order:1", 1u8, CacheOptions::new().tag("vip"))
        .await
        .unwrap();
    users
        .put("2", user(2), CacheOptions::new().tag("vip"))
        .await
        .unwrap();
    users.put("1", user(1), CacheOptions::new()).await.unwrap();
    let _ = grid.get::<u8>("order:1").await;
    let _ = users.get("3").await;
    grid.invalidate_tag("vip").await.unwrap();

    let drain = |sub: &mut hydracache::Subscription| {
        let mut seen = Vec::new();
        while let Some(e) = sub.try_next_event() {
            let e = e.unwrap();
            seen.push((e.kind(), e.key().map(str::to_string)));
        }
        seen
    };
    let key = |k: &str| Some(k.to_string());
    assert_eq!(
        drain(&mut all),
        [
            (CacheEventKind::Stored, key("user:2")),
            (CacheEventKind::Stored, key("user:1")),
            (CacheEventKind::TagInvalidated, None),
        ]
    );
    assert_eq!(drain(&mut one), [(CacheEventKind::Stored, key("user:1"))]);
    assert_eq!(
        drain(&mut tagged),
        [
            (CacheEventKind::Stored, key("user:2")),
            (CacheEventKind::TagInvalidated, None),
        ]
    );
    assert_eq!(drain(&mut access), [(CacheEventKind::Miss, key("user:3"))]);
}
