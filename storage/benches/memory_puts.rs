//! Memory per entry (heap bytes beyond key and value, by a counting
//! allocator) for hydracache-storage, moka and quick_cache; and put throughput
//! with 2 threads: hydracache with TTL + 2 tags per entry vs moka insert.
//!
//! `cargo bench -p hydracache-storage --bench memory_puts`

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::median;
use hydracache_storage::{Expiry, StoreConfig, NO_TAGS};

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const N: usize = 200_000;
type Value = [u8; 64];
type PutFn = Arc<dyn Fn(usize, &str) + Send + Sync>;
/// Put rounds of each subject, alternating hydracache and moka.
const PUT_ROUNDS: usize = 7;

fn keys() -> Vec<String> {
    (0..N).map(|i| format!("key:{i:012}")).collect() // 16 bytes
}

fn per_entry(f: impl FnOnce(&[String]) -> Box<dyn std::any::Any>) -> usize {
    let keys = keys();
    let before = LIVE.load(Ordering::Relaxed);
    let keep = f(&keys);
    let after = LIVE.load(Ordering::Relaxed);
    drop(keep);
    (after - before) as usize / N
}

fn main() {
    println!("memory: {N} entries, 16-byte keys, 64-byte values; heap bytes per entry beyond key + value");
    let hc = per_entry(|keys| {
        let s = StoreConfig::new().capacity_bytes(1 << 30).build();
        for k in keys {
            s.insert(
                k.as_bytes(),
                &[1u8; 64],
                Expiry::After(Duration::from_secs(600)),
                NO_TAGS,
            )
            .unwrap();
        }
        Box::new(s)
    });
    let hc_tags = per_entry(|keys| {
        let s = StoreConfig::new().capacity_bytes(1 << 30).build();
        for (i, k) in keys.iter().enumerate() {
            let t = format!("t{}", i % 1000);
            s.insert(
                k.as_bytes(),
                &[1u8; 64],
                Expiry::After(Duration::from_secs(600)),
                &[t.as_str(), "all"],
            )
            .unwrap();
        }
        Box::new(s)
    });
    let moka = per_entry(|keys| {
        let c = moka::sync::Cache::builder()
            .max_capacity(N as u64 * 2)
            .time_to_live(Duration::from_secs(600))
            .build();
        for k in keys {
            c.insert(k.clone(), [1u8; 64]);
        }
        c.run_pending_tasks();
        Box::new(c)
    });
    let quick = per_entry(|keys| {
        let c = quick_cache::sync::Cache::<String, Value>::new(N * 2);
        for k in keys {
            c.insert(k.clone(), [1u8; 64]);
        }
        Box::new(c)
    });
    // hydracache stores the key once in its block; the peers store a String
    // (24-byte header + heap bytes) and the value inline.
    println!("  hydracache (TTL)            {:>4} B", hc - 80);
    println!(
        "  hydracache (TTL + 2 tags)   {:>4} B  (incl. 2 x 16 B tag references)",
        hc_tags - 80
    );
    println!("  moka sync (TTL)             {:>4} B", moka - 80);
    println!("  quick_cache                 {:>4} B", quick - 80);

    println!(
        "\nput throughput, 2 threads, {N} distinct keys per run, median of {PUT_ROUNDS} rounds \
         interleaved between the two; Mputs/s"
    );
    let keys = Arc::new(keys());
    let run = |put: &PutFn| -> f64 {
        let barrier = Arc::new(Barrier::new(3));
        let hs: Vec<_> = (0..2)
            .map(|t| {
                let (put, keys, barrier) = (put.clone(), keys.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    for i in (t..N).step_by(2) {
                        put(i, &keys[i]);
                    }
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        hs.into_iter().for_each(|h| h.join().unwrap());
        N as f64 / start.elapsed().as_secs_f64() / 1e6
    };
    let store = StoreConfig::new().capacity_bytes(64 << 20).build();
    let tags: Arc<Vec<String>> = Arc::new((0..1000).map(|i| format!("tenant:{i}")).collect());
    let hc_put: PutFn = {
        let (store, tags) = (store.clone(), tags.clone());
        Arc::new(move |i, k| {
            store
                .insert(
                    k.as_bytes(),
                    &[i as u8; 64],
                    Expiry::After(Duration::from_secs(600)),
                    &[tags[i % 1000].as_str(), "all"],
                )
                .unwrap()
        })
    };
    let moka_cache = moka::sync::Cache::builder()
        .max_capacity(N as u64 * 2)
        .time_to_live(Duration::from_secs(600))
        .build();
    let moka_put: PutFn = {
        let c = moka_cache.clone();
        Arc::new(move |i, k: &str| c.insert(k.to_string(), [i as u8; 64]))
    };
    let (mut hc_runs, mut moka_runs) = (Vec::new(), Vec::new());
    for _ in 0..PUT_ROUNDS {
        hc_runs.push(run(&hc_put));
        moka_runs.push(run(&moka_put));
    }
    let (hc_put, moka_put) = (median(hc_runs), median(moka_runs));
    println!("  hydracache insert (TTL + 2 tags) {hc_put:>6.2}");
    println!("  moka insert (TTL)                {moka_put:>6.2}");
    println!(
        "  ratio hydracache / moka          {:>6.2}x",
        hc_put / moka_put
    );
}
