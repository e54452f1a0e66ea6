//! Hit-path throughput, side by side in one process: hydracache-storage
//! (copy-out `get` and zero-copy `get_ref`, every entry with a TTL and two
//! tags) against quick_cache, moka (sync) and a raw papaya map.
//! 100,000 keys, 64-byte values, 1 and 2 threads, uniform and zipf(1.0) keys.
//! Prints million gets per second (median of runs) and ratios. Each copy
//! subject hands its whole value to `black_box` before reading a byte, as a
//! caller that uses the value does (the quick_cache `Arc` subject reads
//! through the shared pointer, the zero-copy one in place).
//!
//! `cargo bench -p hydracache-storage --bench hit_path`
//!
//! `cargo bench -p hydracache-storage --bench hit_path -- clock` measures
//! the clock read a hit makes instead: the store's coarse clock (the vDSO
//! called directly) against the C library's `clock_gettime` of the same
//! clock (what the store called before) and `Instant::now` (the precise
//! clock), in nanoseconds per read, median of interleaved rounds. valgrind
//! hides the vDSO, so instruction counts cannot show this part.

mod common;

use std::hash::BuildHasher;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{median, Rng, Zipf};
use hydracache_storage::{Expiry, StoreConfig};

const KEYS: usize = 100_000;
const OPS_PER_THREAD: usize = 1_000_000;
const RUNS: usize = 9;
type Value = [u8; 64];

trait Subject: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// Returns a byte of the value so the read cannot be optimised away.
    fn read(&self, key: &str) -> u8;
}

struct StoreCopy(hydracache_storage::Store);
struct StoreRef(hydracache_storage::Store);
struct Quick(quick_cache::sync::Cache<String, Value>);
struct QuickArc(quick_cache::sync::Cache<String, Arc<Value>>);
struct Moka(moka::sync::Cache<String, Value>);
struct Papaya(papaya::HashMap<String, Value, foldhash::fast::RandomState>);

impl Subject for StoreCopy {
    fn name(&self) -> &'static str {
        "hydracache get (copy)"
    }
    fn read(&self, key: &str) -> u8 {
        std::hint::black_box(self.0.get::<Value>(key.as_bytes()).unwrap().unwrap())[7]
    }
}
impl Subject for StoreRef {
    fn name(&self) -> &'static str {
        "hydracache get_ref (zero-copy)"
    }
    fn read(&self, key: &str) -> u8 {
        self.0.get_ref(key.as_bytes()).unwrap().bytes()[7]
    }
}
impl Subject for Quick {
    fn name(&self) -> &'static str {
        "quick_cache (copy)"
    }
    fn read(&self, key: &str) -> u8 {
        std::hint::black_box(self.0.get(key).unwrap())[7]
    }
}
impl Subject for QuickArc {
    fn name(&self) -> &'static str {
        "quick_cache Arc (shared)"
    }
    fn read(&self, key: &str) -> u8 {
        self.0.get(key).unwrap()[7]
    }
}
impl Subject for Moka {
    fn name(&self) -> &'static str {
        "moka sync (copy)"
    }
    fn read(&self, key: &str) -> u8 {
        std::hint::black_box(self.0.get(key).unwrap())[7]
    }
}
impl Subject for Papaya {
    fn name(&self) -> &'static str {
        "papaya raw (copy)"
    }
    fn read(&self, key: &str) -> u8 {
        std::hint::black_box(self.0.pin().get(key).copied().unwrap())[7]
    }
}

fn value(i: usize) -> Value {
    [i as u8; 64]
}

fn subjects(keys: &[String], only: Option<usize>) -> Vec<Arc<dyn Subject>> {
    let want = |i: usize| only.is_none_or(|o| o == i);
    let store = StoreConfig::new().capacity_bytes(256 << 20).build();
    for (i, k) in keys.iter().enumerate().filter(|_| want(0) || want(1)) {
        let t1 = format!("tenant:{}", i % 100);
        store
            .insert(
                k.as_bytes(),
                &value(i),
                Expiry::After(Duration::from_secs(3600)),
                &[t1.as_str(), "all"],
            )
            .unwrap();
    }
    let quick = quick_cache::sync::Cache::new(KEYS * 2);
    let quick_arc = quick_cache::sync::Cache::new(KEYS * 2);
    let moka = moka::sync::Cache::builder()
        .max_capacity(KEYS as u64 * 2)
        .time_to_live(Duration::from_secs(3600))
        .build();
    let pap = papaya::HashMap::builder()
        .hasher(foldhash::fast::RandomState::default())
        .build();
    for (i, k) in keys.iter().enumerate() {
        if want(2) {
            quick.insert(k.clone(), value(i));
        }
        if want(3) {
            quick_arc.insert(k.clone(), Arc::new(value(i)));
        }
        if want(4) {
            moka.insert(k.clone(), value(i));
        }
        if want(5) {
            pap.pin().insert(k.clone(), value(i));
        }
    }
    moka.run_pending_tasks();
    let all: Vec<Arc<dyn Subject>> = vec![
        Arc::new(StoreCopy(store.clone())),
        Arc::new(StoreRef(store)),
        Arc::new(Quick(quick)),
        Arc::new(QuickArc(quick_arc)),
        Arc::new(Moka(moka)),
        Arc::new(Papaya(pap)),
    ];
    all.into_iter()
        .enumerate()
        .filter(|(i, _)| want(*i))
        .map(|(_, s)| s)
        .collect()
}

/// `hit_path single <subject 0..6> <ops>`: one thread, zipf keys, one
/// subject, for instruction counting under callgrind (run it with two op
/// counts and divide the difference).
fn single(keys: Arc<Vec<String>>, subject: usize, ops: usize) {
    let s = subjects(&keys, Some(subject)).pop().unwrap();
    let zipf = Zipf::new(KEYS, 1.0);
    let mut rng = Rng::new(11);
    let stream: Vec<u32> = (0..ops).map(|_| zipf.sample(&mut rng) as u32).collect();
    let mut acc = 0u8;
    for &i in &stream {
        acc = acc.wrapping_add(s.read(&keys[i as usize]));
    }
    println!("{}: {} gets (checksum {acc})", s.name(), ops);
}

/// Million reads per second over all threads.
fn measure(subject: &Arc<dyn Subject>, keys: &Arc<Vec<String>>, streams: &[Arc<Vec<u32>>]) -> f64 {
    let threads = streams.len();
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = streams
        .iter()
        .map(|stream| {
            let (subject, keys, stream, barrier) = (
                subject.clone(),
                keys.clone(),
                stream.clone(),
                barrier.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                let mut acc = 0u8;
                for &i in stream.iter() {
                    acc = acc.wrapping_add(subject.read(&keys[i as usize]));
                }
                std::hint::black_box(acc);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    (threads * OPS_PER_THREAD) as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let hasher = foldhash::fast::FixedState::with_seed(1);
    let keys: Arc<Vec<String>> = Arc::new(
        (0..KEYS)
            .map(|i| format!("key:{:016x}", hasher.hash_one(i)))
            .collect(),
    );
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("single") {
        return single(keys, args[2].parse().unwrap(), args[3].parse().unwrap());
    }
    if args.get(1).map(String::as_str) == Some("clock") {
        return clock_reads();
    }
    let subjects = subjects(&keys, None);
    let zipf = Zipf::new(KEYS, 1.0);
    println!("hit path: {KEYS} keys, 64-byte values, TTL + 2 tags on hydracache entries; Mgets/s, median of {RUNS}");
    for dist in ["uniform", "zipf1.0"] {
        for threads in [1, 2] {
            let streams: Vec<Arc<Vec<u32>>> = (0..threads)
                .map(|t| {
                    let mut rng = Rng::new(t as u64 + 11);
                    Arc::new(
                        (0..OPS_PER_THREAD)
                            .map(|_| match dist {
                                "uniform" => (rng.next_u64() % KEYS as u64) as u32,
                                _ => zipf.sample(&mut rng) as u32,
                            })
                            .collect(),
                    )
                })
                .collect();
            // Interleave subjects run by run so that drift in the machine's
            // speed affects all of them alike.
            let mut runs: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
            for _ in 0..RUNS {
                for (i, s) in subjects.iter().enumerate() {
                    runs[i].push(measure(s, &keys, &streams));
                }
            }
            let results: Vec<(String, f64)> = subjects
                .iter()
                .zip(runs)
                .map(|(s, r)| (s.name().to_string(), median(r)))
                .collect();
            let quick = results
                .iter()
                .find(|r| r.0 == "quick_cache (copy)")
                .unwrap()
                .1;
            let moka = results
                .iter()
                .find(|r| r.0 == "moka sync (copy)")
                .unwrap()
                .1;
            println!("\n{dist}, {threads} thread(s)");
            println!(
                "{:<32} {:>9} {:>11} {:>9}",
                "", "Mgets/s", "vs quick", "vs moka"
            );
            for (name, mops) in &results {
                println!(
                    "{name:<32} {mops:>9.2} {:>10.2}x {:>8.2}x",
                    mops / quick,
                    mops / moka
                );
            }
        }
    }
}

/// Nanoseconds per clock read: the store's clock against the C library's
/// wrapper of the same clock and the precise clock.
fn clock_reads() {
    const READS: u64 = 2_000_000;
    const ROUNDS: usize = 15;
    fn round(read: &dyn Fn() -> u64) -> f64 {
        let start = Instant::now();
        let mut acc = 0u64;
        for _ in 0..READS {
            acc = acc.wrapping_add(std::hint::black_box(read()));
        }
        std::hint::black_box(acc);
        start.elapsed().as_nanos() as f64 / READS as f64
    }
    let store_clock = hydracache_storage::Clock::Monotonic;
    let base = Instant::now();
    let subjects: [(&str, &dyn Fn() -> u64); 3] = [
        ("store clock (coarse, vDSO direct)", &|| {
            store_clock.now_ms()
        }),
        ("libc clock_gettime (coarse)", &libc_coarse_ms),
        ("Instant::now (precise)", &|| {
            base.elapsed().as_millis() as u64
        }),
    ];
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
    for _ in 0..ROUNDS {
        for (i, (_, read)) in subjects.iter().enumerate() {
            ns[i].push(round(*read));
        }
    }
    println!("clock read, ns per read, median of {ROUNDS} rounds of {READS} (interleaved)");
    let first = median(ns[0].clone());
    for (i, (name, _)) in subjects.iter().enumerate() {
        let m = median(ns[i].clone());
        println!(
            "{name:<36} {m:>6.2} ns  ({:.2}x the store clock)",
            m / first
        );
    }
}

#[cfg(target_os = "linux")]
fn libc_coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

#[cfg(not(target_os = "linux"))]
fn libc_coarse_ms() -> u64 {
    hydracache_storage::Clock::Monotonic.now_ms()
}
