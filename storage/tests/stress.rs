//! Multi-thread stress, bounded in operations: capacity holds under
//! concurrent writers, counters lose no updates, values match their keys, and
//! nothing invalidated is ever returned.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use hydracache_storage::{Expiry, FillOutcome, Store, StoreConfig, NO_TAGS};

const THREADS: usize = 4;
const OPS: u64 = 40_000;

fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[test]
fn capacity_holds_and_counters_add_up_under_concurrent_writers() {
    let cap = 256 << 10;
    let max_value = 512usize;
    let store = StoreConfig::new().capacity_bytes(cap).build();
    let slack = THREADS * Store::charge_for(2, 12, 16, max_value + 16);
    let done = Arc::new(AtomicBool::new(false));

    let monitor = {
        let (store, done) = (store.clone(), done.clone());
        thread::spawn(move || {
            let mut max_seen = 0;
            while !done.load(Ordering::Relaxed) {
                max_seen = max_seen.max(store.bytes());
                thread::yield_now();
            }
            max_seen
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let mut next = rng(t as u64 + 7);
                let (mut inserts, mut gets, mut hits) = (0u64, 0u64, 0u64);
                for _ in 0..OPS {
                    let k = next() % 4096;
                    let key = format!("key:{k}");
                    if next() % 3 == 0 {
                        let len = (next() % max_value as u64) as usize;
                        let value = vec![k; len / 8];
                        let tag = format!("group:{}", k % 64);
                        store
                            .insert(
                                key.as_bytes(),
                                &value,
                                Expiry::Default,
                                &[tag.as_str(), "all"],
                            )
                            .unwrap();
                        inserts += 1;
                    } else {
                        gets += 1;
                        if let Some(v) = store.get::<Vec<u64>>(key.as_bytes()).unwrap() {
                            hits += 1;
                            assert!(v.iter().all(|&x| x == k), "value belongs to its key");
                        }
                    }
                }
                (inserts, gets, hits)
            })
        })
        .collect();
    let (mut inserts, mut gets, mut hits) = (0, 0, 0);
    for w in workers {
        let (i, g, h) = w.join().unwrap();
        inserts += i;
        gets += g;
        hits += h;
    }
    done.store(true, Ordering::Relaxed);
    let max_seen = monitor.join().unwrap();
    assert!(
        max_seen <= cap + slack,
        "bytes peaked at {max_seen}, bound {cap} + slack {slack}"
    );
    assert!(store.bytes() <= cap);

    let s = store.stats();
    assert_eq!(s.inserts, inserts, "no lost insert counts");
    assert_eq!(s.hits, hits);
    assert_eq!(s.hits + s.misses, gets);
    assert!(s.evicted_capacity > 0);
    store.flush();
    let s = store.stats();
    assert_eq!(
        (s.entries, s.bytes, s.tags),
        (0, 0, 0),
        "gauges return to zero: {s:?}"
    );
}

#[test]
fn nothing_invalidated_is_ever_returned() {
    let store = StoreConfig::new().capacity_bytes(8 << 20).build();
    let epoch = Arc::new(AtomicU64::new(0));
    let dead = Arc::new(AtomicU64::new(u64::MAX)); // highest invalidated epoch, MAX = none
    let stop = Arc::new(AtomicBool::new(false));
    let stored = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(AtomicU64::new(0));

    let writers: Vec<_> = (0..2)
        .map(|t| {
            let (store, epoch, stop, stored) =
                (store.clone(), epoch.clone(), stop.clone(), stored.clone());
            thread::spawn(move || {
                let mut next = rng(t + 100);
                while !stop.load(Ordering::Relaxed) {
                    let n = epoch.load(Ordering::SeqCst);
                    let key = format!("k{}", next() % 256);
                    let tag = format!("epoch:{n}");
                    let ticket = store.begin_fill(key.as_bytes(), &[tag.as_str()]).unwrap();
                    if epoch.load(Ordering::SeqCst) != n {
                        continue; // the epoch moved on before our snapshot: abandon
                    }
                    if store.complete_fill(ticket, &n, Expiry::Default).unwrap()
                        == FillOutcome::Stored
                    {
                        stored.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|t| {
            let (store, dead, stop, seen) =
                (store.clone(), dead.clone(), stop.clone(), seen.clone());
            thread::spawn(move || {
                let mut next = rng(t + 200);
                while !stop.load(Ordering::Relaxed) {
                    let d = dead.load(Ordering::SeqCst);
                    let key = format!("k{}", next() % 256);
                    if let Some(n) = store.get::<u64>(key.as_bytes()).unwrap() {
                        seen.fetch_add(1, Ordering::SeqCst);
                        assert!(
                            d == u64::MAX || n > d,
                            "read epoch {n} after epoch {d} was invalidated"
                        );
                    }
                }
            })
        })
        .collect();
    for n in 0..500u64 {
        // Each epoch lasts until a writer stored under it and a reader saw a
        // value, so every round exercises the race (bounded spin).
        let (s0, r0) = (stored.load(Ordering::SeqCst), seen.load(Ordering::SeqCst));
        let mut spins = 0u64;
        while stored.load(Ordering::SeqCst) == s0 || seen.load(Ordering::SeqCst) == r0 {
            spins += 1;
            assert!(spins < 50_000_000, "no progress in epoch {n}");
            thread::yield_now();
        }
        epoch.store(n + 1, Ordering::SeqCst);
        store.invalidate_tag(format!("epoch:{n}").as_bytes());
        dead.store(n, Ordering::SeqCst);
        if n % 64 == 0 {
            thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    writers.into_iter().for_each(|w| w.join().unwrap());
    readers.into_iter().for_each(|r| r.join().unwrap());
    store.sweep(usize::MAX);
    assert!(
        store.stats().tags <= 1,
        "only the current epoch's tag may remain"
    );
}

#[test]
fn concurrent_removes_and_writes_keep_map_and_queues_in_step() {
    let store = StoreConfig::new().capacity_bytes(1 << 20).shards(2).build();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let mut next = rng(t as u64 + 300);
                for _ in 0..OPS / 2 {
                    let key = format!("k{}", next() % 64);
                    match next() % 4 {
                        0 => {
                            store.remove(key.as_bytes());
                        }
                        1 => {
                            store.invalidate_tag(b"shared");
                        }
                        _ => store
                            .insert(key.as_bytes(), &t, Expiry::Default, &["shared"])
                            .unwrap(),
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let live = (0..64)
        .filter(|k| store.contains_key(format!("k{k}").as_bytes()))
        .count();
    store.sweep(usize::MAX);
    assert_eq!(
        store.len(),
        live,
        "after a sweep the resident count is the live count"
    );
    store.flush();
    assert_eq!((store.len(), store.bytes(), store.stats().tags), (0, 0, 0));
    store
        .insert(b"after", &1u8, Expiry::Default, NO_TAGS)
        .unwrap();
    assert_eq!(store.get::<u8>(b"after").unwrap(), Some(1));
}
