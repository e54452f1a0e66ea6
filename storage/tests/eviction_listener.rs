//! The eviction listener hears of every entry the store removes, with the
//! cause its counter counts, and is called with no lock held.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hydracache_storage::{
    Clock, EvictionCause, EvictionListener, Expiry, ManualClock, Store, StoreConfig, StoreStats,
    NO_TAGS,
};

#[derive(Default)]
struct Log {
    muted: AtomicBool,
    heard: Mutex<Vec<(Vec<u8>, EvictionCause)>>,
}

impl EvictionListener for Log {
    fn is_listening(&self) -> bool {
        !self.muted.load(Ordering::Relaxed)
    }

    fn on_eviction(&self, key: &[u8], cause: EvictionCause) {
        self.heard.lock().unwrap().push((key.to_vec(), cause));
    }
}

impl Log {
    fn take(&self) -> Vec<(Vec<u8>, EvictionCause)> {
        std::mem::take(&mut *self.heard.lock().unwrap())
    }

    fn count(&self, cause: EvictionCause) -> u64 {
        self.heard
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| *c == cause)
            .count() as u64
    }
}

fn store_with(log: &Arc<Log>, capacity: usize) -> (Store, ManualClock) {
    let clock = ManualClock::new();
    let store = StoreConfig::new()
        .capacity_bytes(capacity)
        .shards(1)
        .hash_seed(7) // the same decisions in every store of a test
        .clock(Clock::Manual(clock.clone()))
        .eviction_listener(log.clone())
        .build();
    (store, clock)
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i}").into_bytes()
}

#[test]
fn a_capacity_eviction_is_reported_with_its_key_and_cause() {
    let log = Arc::new(Log::default());
    let (store, _) = store_with(&log, 16 << 10);
    for i in 0..1000 {
        store
            .insert(&key(i), &vec![0u8; 64], Expiry::Never, NO_TAGS)
            .unwrap();
    }
    let heard = log.take();
    assert!(!heard.is_empty());
    assert_eq!(heard.len() as u64, store.stats().evicted_capacity);
    for (k, cause) in &heard {
        assert_eq!(*cause, EvictionCause::Capacity);
        assert!(!store.contains_key(k), "an evicted key is gone");
    }
    let distinct: HashSet<_> = heard.iter().map(|(k, _)| k).collect();
    assert_eq!(distinct.len(), heard.len(), "each removal is reported once");
    assert_eq!(store.len() + heard.len(), 1000);
}

#[test]
fn an_expired_entry_reclaimed_by_the_sweep_is_reported_as_expired() {
    let log = Arc::new(Log::default());
    let (store, clock) = store_with(&log, 1 << 20);
    store
        .insert(
            b"short",
            &1u32,
            Expiry::After(Duration::from_secs(1)),
            NO_TAGS,
        )
        .unwrap();
    store
        .insert(b"long", &2u32, Expiry::Never, NO_TAGS)
        .unwrap();
    assert_eq!(store.sweep(usize::MAX), 0);
    assert!(log.take().is_empty(), "nothing expired yet");
    clock.advance(Duration::from_secs(2));
    assert_eq!(store.sweep(usize::MAX), 1);
    assert_eq!(log.take(), [(b"short".to_vec(), EvictionCause::Expired)]);
    assert_eq!(store.stats().evicted_expired, 1);
}

#[test]
fn expired_entries_met_by_writes_are_reported_as_expired_not_as_capacity() {
    let log = Arc::new(Log::default());
    let (store, clock) = store_with(&log, 16 << 10);
    let ttl = Expiry::After(Duration::from_secs(1));
    let mut expiring = HashSet::new();
    for i in 0..40 {
        store.insert(&key(i), &vec![0u8; 64], ttl, NO_TAGS).unwrap();
        expiring.insert(key(i));
    }
    clock.advance(Duration::from_secs(2));
    // No explicit sweep: the writes' own sweeping and the evictor meet them.
    for i in 1000..1200 {
        store
            .insert(&key(i), &vec![0u8; 64], Expiry::Never, NO_TAGS)
            .unwrap();
    }
    let heard = log.take();
    let s = store.stats();
    assert!(s.evicted_expired > 0);
    for (k, cause) in &heard {
        let expected = if expiring.contains(k) {
            EvictionCause::Expired
        } else {
            EvictionCause::Capacity
        };
        assert_eq!(*cause, expected, "{}", String::from_utf8_lossy(k));
    }
    assert_eq!(count(&heard, EvictionCause::Expired), s.evicted_expired);
    assert_eq!(count(&heard, EvictionCause::Capacity), s.evicted_capacity);
}

fn count(heard: &[(Vec<u8>, EvictionCause)], cause: EvictionCause) -> u64 {
    heard.iter().filter(|(_, c)| *c == cause).count() as u64
}

#[test]
fn an_entry_hidden_by_a_tag_invalidation_is_reported_when_it_is_reclaimed() {
    let log = Arc::new(Log::default());
    let (store, _) = store_with(&log, 1 << 20);
    store.insert(b"a", &1u32, Expiry::Never, &["t"]).unwrap();
    store.insert(b"b", &2u32, Expiry::Never, &["u"]).unwrap();
    assert!(store.invalidate_tag(b"t"));
    assert!(log.take().is_empty(), "invalidation only hides the entry");
    assert_eq!(store.sweep(usize::MAX), 1);
    assert_eq!(log.take(), [(b"a".to_vec(), EvictionCause::Invalidated)]);
    assert_eq!(store.stats().evicted_invalidated, 1);
}

#[test]
fn removals_and_flushes_are_reported_as_invalidated_and_overwrites_are_not() {
    let log = Arc::new(Log::default());
    let (store, _) = store_with(&log, 1 << 20);
    for i in 0..3 {
        store
            .insert(&key(i), &1u32, Expiry::Never, NO_TAGS)
            .unwrap();
    }
    store
        .insert(&key(0), &2u32, Expiry::Never, NO_TAGS)
        .unwrap();
    assert!(log.take().is_empty(), "a replaced value is not an eviction");
    assert!(store.remove(&key(0)));
    assert!(!store.remove(&key(0)));
    assert_eq!(log.take(), [(key(0), EvictionCause::Invalidated)]);
    store.flush();
    let mut flushed = log.take();
    flushed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        flushed,
        [
            (key(1), EvictionCause::Invalidated),
            (key(2), EvictionCause::Invalidated)
        ]
    );
    assert_eq!(store.stats().evicted_invalidated, 3);
}

#[test]
fn an_entry_dropped_because_it_does_not_decode_is_reported_as_invalidated() {
    let log = Arc::new(Log::default());
    let (store, _) = store_with(&log, 1 << 20);
    store
        .insert_bytes(b"junk", &[0xFF; 3], Expiry::Never, NO_TAGS)
        .unwrap();
    assert!(store.get::<String>(b"junk").is_err());
    assert_eq!(log.take(), [(b"junk".to_vec(), EvictionCause::Invalidated)]);
}

/// A workload touching every cause; returns the stats it left.
fn workload(store: &Store, clock: &ManualClock) -> StoreStats {
    for i in 0..300 {
        let expiry = if i % 3 == 0 {
            Expiry::After(Duration::from_secs(1))
        } else {
            Expiry::Never
        };
        let tags: &[&str] = if i % 5 == 0 { &["five"] } else { &[] };
        store.insert(&key(i), &vec![0u8; 64], expiry, tags).unwrap();
        if i == 150 {
            clock.advance(Duration::from_secs(2));
            store.invalidate_tag(b"five");
        }
    }
    store.remove(&key(299));
    store.sweep(usize::MAX);
    store.stats()
}

#[test]
fn the_counters_match_the_reports_and_do_not_depend_on_anyone_listening() {
    let log = Arc::new(Log::default());
    let (store, clock) = store_with(&log, 16 << 10);
    let s = workload(&store, &clock);
    assert!(s.evicted_capacity > 0 && s.evicted_expired > 0 && s.evicted_invalidated > 0);
    assert_eq!(log.count(EvictionCause::Capacity), s.evicted_capacity);
    assert_eq!(log.count(EvictionCause::Expired), s.evicted_expired);
    assert_eq!(log.count(EvictionCause::Invalidated), s.evicted_invalidated);

    let muted = Arc::new(Log::default());
    muted.muted.store(true, Ordering::Relaxed);
    let (quiet, quiet_clock) = store_with(&muted, 16 << 10);
    assert_eq!(workload(&quiet, &quiet_clock), s);
    assert!(
        muted.take().is_empty(),
        "a listener not listening hears nothing"
    );

    let clock = ManualClock::new();
    let plain = StoreConfig::new()
        .capacity_bytes(16 << 10)
        .shards(1)
        .hash_seed(7) // as `store_with`: the same decisions
        .clock(Clock::Manual(clock.clone()))
        .build();
    assert_eq!(workload(&plain, &clock), s);
}

/// Calls back into the store from the listener: with a single shard, this
/// would deadlock if the listener ran under the shard's lock.
#[derive(Default)]
struct Reentrant {
    store: Mutex<Option<Store>>,
    heard: Mutex<Vec<Vec<u8>>>,
}

impl EvictionListener for Reentrant {
    fn on_eviction(&self, key: &[u8], _: EvictionCause) {
        let store = self.store.lock().unwrap().clone().expect("store set");
        assert!(!store.contains_key(key));
        store.remove(b"never-stored");
        self.heard.lock().unwrap().push(key.to_vec());
    }
}

#[test]
fn the_listener_runs_with_no_lock_held_and_may_call_back_into_the_store() {
    let listener = Arc::new(Reentrant::default());
    let store = StoreConfig::new()
        .capacity_bytes(16 << 10)
        .shards(1)
        .eviction_listener(listener.clone())
        .build();
    *listener.store.lock().unwrap() = Some(store.clone());
    for i in 0..500 {
        store
            .insert(&key(i), &vec![0u8; 64], Expiry::Never, NO_TAGS)
            .unwrap();
    }
    store.remove(&key(499));
    store.flush();
    let s = store.stats();
    assert_eq!(
        listener.heard.lock().unwrap().len() as u64,
        s.evicted_capacity + s.evicted_invalidated
    );
    // Break the store -> listener -> store cycle.
    listener.store.lock().unwrap().take();
}
