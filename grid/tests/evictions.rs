//! Eviction and expiry events: each removal the store makes arrives, with its
//! cause, at the subscribers who asked for them and no one else, and the
//! eviction counters match them whether or not anyone listens.

use std::time::Duration;

use hydracache::{
    CacheEvent, CacheEventKind, CacheOptions, Clock, EventError, EvictionCause, Grid, GridStats,
    ManualClock, Subscription,
};

/// Small enough that a few hundred 64-byte values overflow it (one shard).
const SMALL: usize = 16 << 10;

/// A small grid whose eviction decisions depend only on the operations:
/// with a random hash seed two grids given the same workload can evict
/// different entries (one capacity eviction where the other drops an
/// invalidated entry), which the comparison below must not see.
fn small_grid(clock: &ManualClock) -> Grid {
    Grid::local()
        .hash_seed(0x5eed)
        .max_capacity_bytes(SMALL)
        .event_buffer_capacity(1 << 14)
        .clock(Clock::Manual(clock.clone()))
        .build()
}

/// Every event buffered for `sub`; a lag fails the test.
fn drain(sub: &mut Subscription) -> Vec<CacheEvent> {
    let mut events = Vec::new();
    while let Some(e) = sub.try_next_event() {
        events.push(e.expect("no lag with a large buffer"));
    }
    events
}

fn by_kind(events: &[CacheEvent], kind: CacheEventKind) -> usize {
    events.iter().filter(|e| e.kind() == kind).count()
}

fn evicted_for(events: &[CacheEvent], cause: EvictionCause) -> u64 {
    events
        .iter()
        .filter(|e| matches!(e, CacheEvent::Evicted { cause: c, .. } if *c == cause))
        .count() as u64
}

async fn fill(grid: &Grid, range: std::ops::Range<usize>, options: CacheOptions) {
    for i in range {
        grid.put(&format!("k{i}"), vec![0u8; 64], options.clone())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_capacity_eviction_arrives_with_its_cause() {
    let grid = small_grid(&ManualClock::new());
    let mut evictions = grid.subscribe_evictions();
    fill(&grid, 0..500, CacheOptions::new()).await;
    let events = drain(&mut evictions);
    let stats = grid.stats();
    assert!(stats.evicted_capacity > 0);
    assert_eq!(events.len() as u64, stats.evicted_capacity);
    for e in &events {
        let CacheEvent::Evicted { key, cause } = e else {
            panic!("only evictions expected, got {e:?}");
        };
        assert_eq!(*cause, EvictionCause::Capacity);
        assert!(!grid.contains_key(key).await, "{key} was evicted");
    }
    assert_eq!(grid.diagnostics().entries + events.len() as u64, 500);
}

#[tokio::test]
async fn a_ttl_expiry_swept_by_maintenance_arrives_as_expired() {
    let clock = ManualClock::new();
    let grid = small_grid(&clock);
    let mut evictions = grid.subscribe_evictions();
    grid.put(
        "short",
        1u32,
        CacheOptions::new().ttl(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    grid.put("long", 2u32, CacheOptions::new()).await.unwrap();
    clock.advance(Duration::from_secs(2));
    grid.run_maintenance();
    assert_eq!(
        drain(&mut evictions),
        [CacheEvent::Expired {
            key: "short".into()
        }]
    );
    assert_eq!(grid.stats().evicted_expired, 1);
    assert!(grid.contains_key("long").await);
}

#[tokio::test]
async fn an_invalidated_entry_arrives_with_the_invalidation_cause() {
    let grid = small_grid(&ManualClock::new());
    let mut evictions = grid.subscribe_evictions();
    grid.put("tagged", 1u32, CacheOptions::new().tag("t"))
        .await
        .unwrap();
    grid.put("keyed", 2u32, CacheOptions::new()).await.unwrap();
    grid.put("flushed", 3u32, CacheOptions::new())
        .await
        .unwrap();

    // A tag invalidation hides the entry; the sweep reclaims it.
    grid.invalidate_tag("t").await.unwrap();
    grid.run_maintenance();
    // A key invalidation and a flush remove at once.
    grid.invalidate_key("keyed").await.unwrap();
    grid.flush().await.unwrap();

    let invalidated = |key: &str| CacheEvent::Evicted {
        key: key.into(),
        cause: EvictionCause::Invalidated,
    };
    assert_eq!(
        drain(&mut evictions),
        [
            invalidated("tagged"),
            invalidated("keyed"),
            invalidated("flushed")
        ]
    );
    assert_eq!(grid.stats().evicted_invalidated, 3);
}

/// Capacity evictions, expiries, and invalidations of each kind.
async fn workload(grid: &Grid, clock: &ManualClock) {
    let ttl = CacheOptions::new().ttl(Duration::from_secs(1));
    fill(grid, 0..60, ttl).await;
    fill(grid, 60..120, CacheOptions::new().tag("t")).await;
    clock.advance(Duration::from_secs(2));
    grid.invalidate_tag("t").await.unwrap();
    fill(grid, 120..400, CacheOptions::new()).await;
    grid.invalidate_key("k399").await.unwrap();
    grid.run_maintenance();
    fill(grid, 400..410, CacheOptions::new()).await;
    grid.flush().await.unwrap();
}

fn eviction_counters(s: &GridStats) -> (u64, u64, u64) {
    (s.evicted_capacity, s.evicted_expired, s.evicted_invalidated)
}

#[tokio::test]
async fn the_counters_match_the_events_and_do_not_depend_on_anyone_subscribing() {
    let clock = ManualClock::new();
    let grid = small_grid(&clock);
    let mut evictions = grid.subscribe_evictions();
    workload(&grid, &clock).await;
    let events = drain(&mut evictions);
    let s = grid.stats();
    assert!(s.evicted_capacity > 0 && s.evicted_expired > 0 && s.evicted_invalidated > 0);
    assert_eq!(
        evicted_for(&events, EvictionCause::Capacity),
        s.evicted_capacity
    );
    assert_eq!(
        by_kind(&events, CacheEventKind::Expired) as u64,
        s.evicted_expired
    );
    assert_eq!(
        evicted_for(&events, EvictionCause::Invalidated),
        s.evicted_invalidated
    );
    assert_eq!(s.evictions(), events.len() as u64);

    let quiet_clock = ManualClock::new();
    let quiet = small_grid(&quiet_clock);
    let mut plain = quiet.subscribe();
    workload(&quiet, &quiet_clock).await;
    assert_eq!(eviction_counters(&quiet.stats()), eviction_counters(&s));
    assert!(drain(&mut plain).iter().all(|e| !e.is_eviction()));
}

#[tokio::test]
async fn subscribers_that_did_not_ask_receive_no_eviction_or_expiry() {
    let clock = ManualClock::new();
    let grid = small_grid(&clock);
    let mut all = grid.subscribe();
    let mut key = grid.subscribe_key("k0");
    let mut tag = grid.subscribe_tag("t");
    let mut mutations = grid.subscribe_mutations();
    let mut evictions = grid.subscribe_evictions();
    workload(&grid, &clock).await;

    let all = drain(&mut all);
    assert!(by_kind(&all, CacheEventKind::Stored) > 0);
    for events in [all, drain(&mut key), drain(&mut tag), drain(&mut mutations)] {
        assert!(!events.is_empty());
        assert!(
            events.iter().all(|e| !e.is_eviction()),
            "{:?}",
            events.iter().find(|e| e.is_eviction())
        );
    }
    let evictions = drain(&mut evictions);
    assert!(evictions.iter().all(CacheEvent::is_eviction));
    assert!(by_kind(&evictions, CacheEventKind::Expired) > 0);
    // k0 left the cache (by the flush at the latest): only the eviction
    // subscriber heard how.
    assert!(evictions.iter().any(|e| e.key() == Some("k0")));
}

#[tokio::test]
async fn a_typed_view_hears_the_evictions_of_its_namespace_only() {
    let grid = small_grid(&ManualClock::new());
    let users = grid.typed::<u32>("user");
    let mut evictions = users.subscribe_evictions();
    users.put("1", 1, CacheOptions::new()).await.unwrap();
    grid.put("order:1", 2u32, CacheOptions::new())
        .await
        .unwrap();
    grid.invalidate_key("order:1").await.unwrap();
    users.invalidate_key("1").await.unwrap();
    assert_eq!(
        drain(&mut evictions),
        [CacheEvent::Evicted {
            key: "user:1".into(),
            cause: EvictionCause::Invalidated
        }]
    );
}

#[tokio::test]
async fn a_slow_eviction_subscriber_lags_and_the_counters_stay_exact() {
    let slow = Grid::local()
        .max_capacity_bytes(SMALL)
        .event_buffer_capacity(8)
        .build();
    let mut evictions = slow.subscribe_evictions();
    fill(&slow, 0..500, CacheOptions::new()).await;
    let Some(Err(EventError::Lagged(missed))) = evictions.try_next_event() else {
        panic!("a full ring makes the subscriber lag");
    };
    let rest = std::iter::from_fn(|| evictions.try_next_event())
        .map(|e| e.expect("one lag report"))
        .collect::<Vec<_>>();
    assert!(!rest.is_empty() && rest.len() <= 8);
    assert!(rest.iter().all(CacheEvent::is_eviction));
    let s = slow.stats();
    assert_eq!(s.subscriber_lag, missed);

    let unobserved = Grid::local().max_capacity_bytes(SMALL).build();
    fill(&unobserved, 0..500, CacheOptions::new()).await;
    assert!(s.evicted_capacity > 0);
    assert_eq!(
        eviction_counters(&s),
        eviction_counters(&unobserved.stats())
    );
}

#[tokio::test]
async fn no_subscriber_means_no_event_is_published() {
    let grid = small_grid(&ManualClock::new());
    let subscription = grid.subscribe_evictions();
    drop(subscription);
    fill(&grid, 0..500, CacheOptions::new()).await;
    let s = grid.stats();
    assert!(s.evicted_capacity > 0);
    assert_eq!(s.events_published, 0);
}

/// The actuator's evictions by cause (JSON and Prometheus) are the counts
/// the events reported.
#[cfg(feature = "actuator")]
#[tokio::test]
async fn the_actuator_shows_the_evictions_the_events_reported() {
    use axum::body::Body;
    use axum::http::Request;
    use hydracache::actuator::Actuator;
    use tower::ServiceExt;

    let clock = ManualClock::new();
    let grid = small_grid(&clock);
    let mut evictions = grid.subscribe_evictions();
    workload(&grid, &clock).await;
    let events = drain(&mut evictions);
    let router = Actuator::new().cache("main", grid.clone()).router();
    let body = |path: &'static str| {
        let router = router.clone();
        async move {
            let response = router
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap();
            assert!(response.status().is_success(), "{path}");
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        }
    };
    let expected = [
        ("capacity", evicted_for(&events, EvictionCause::Capacity)),
        ("expired", by_kind(&events, CacheEventKind::Expired) as u64),
        (
            "invalidated",
            evicted_for(&events, EvictionCause::Invalidated),
        ),
    ];
    let json: serde_json::Value = serde_json::from_str(&body("/caches/main/stats").await).unwrap();
    let metrics = body("/metrics").await;
    for (cause, count) in expected {
        assert!(count > 0, "{cause}");
        assert_eq!(json["evictions"][cause], count, "{cause}");
        let series = format!("hydracache_evictions_total{{cache=\"main\",cause=\"{cause}\"}} ");
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&series))
            .unwrap_or_else(|| panic!("{series} missing in\n{metrics}"));
        let value: f64 = line[series.len()..].trim().parse().unwrap();
        assert_eq!(value, count as f64, "{cause}");
    }
}
