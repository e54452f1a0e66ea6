//! Hit-ratio trace simulator: the same request traces replayed through
//! hydracache-storage (S3-FIFO), moka (W-TinyLFU), quick_cache (S3-FIFO-like
//! CLOCK-Pro variant) and Belady's OPT (computed offline), at several cache
//! sizes. On a miss the key is inserted. All entries have the same size, so
//! the byte capacity of the store holds exactly as many entries as the
//! others. One line per trace and size, with hydracache's margin against
//! moka and quick_cache.
//!
//! The store and moka draw a hash seed per cache (which keys share a shard,
//! and the sketches' and the ghost's hashes), so each of their figures is
//! the median of [`DRAWS`] replays, each with a fresh cache, and the line
//! also prints the lowest and highest of those draws; quick_cache (a fixed
//! hasher), and OPT are replayed once.
//!
//! Traces: synthetic zipf, zipf with scans and a loop, and a real block I/O
//! trace (`../shared/traces/cloudphysics.txt`, or the file named by
//! `HYDRACACHE_TRACE_CLOUDPHYSICS`; skipped with a note if absent). The
//! reference policies of libCacheSim on the real trace are printed by
//! `docs/libcachesim_reference.py`.
//!
//! `cargo bench -p hydracache-storage --bench hit_ratio`
//!
//! `HIT_RATIO_TRACES=loop,cloud cargo bench -p hydracache-storage --bench
//! hit_ratio` replays only the traces whose name contains one of the
//! comma-separated words (for iterating on one trace; the full table is the
//! one that counts).

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{Rng, Zipf};
use hydracache_storage::{Expiry, Store, StoreConfig, NO_TAGS};

const UNIVERSE: usize = 100_000;
const REQUESTS: usize = 400_000;
/// Replays, each with a fresh cache, of the subjects whose hash seed is
/// drawn per cache: their figure is the median.
const DRAWS: usize = 11;

fn zipf_trace(s: f64, seed: u64) -> Vec<u32> {
    let z = Zipf::new(UNIVERSE, s);
    let mut rng = Rng::new(seed);
    (0..REQUESTS).map(|_| z.sample(&mut rng) as u32).collect()
}

/// zipf 0.9 traffic interrupted every 50,000 requests by a scan of 20,000
/// keys never seen before.
fn scan_trace() -> Vec<u32> {
    let z = Zipf::new(UNIVERSE, 0.9);
    let mut rng = Rng::new(5);
    let mut next_scan = UNIVERSE as u32;
    let mut out = Vec::with_capacity(REQUESTS);
    while out.len() < REQUESTS {
        for _ in 0..50_000 {
            out.push(z.sample(&mut rng) as u32);
        }
        for _ in 0..20_000 {
            out.push(next_scan);
            next_scan += 1;
        }
    }
    out.truncate(REQUESTS);
    out
}

/// A loop over `len` keys, repeated.
fn loop_trace(len: usize) -> Vec<u32> {
    (0..REQUESTS).map(|i| (i % len) as u32).collect()
}

/// The CloudPhysics block trace, one id per line, ids renumbered densely.
fn cloudphysics_trace() -> Option<Vec<u32>> {
    let path = std::env::var("HYDRACACHE_TRACE_CLOUDPHYSICS").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/traces/cloudphysics.txt"
        )
        .to_string()
    });
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            println!("cloudphysics trace skipped: {path}: {e}");
            return None;
        }
    };
    let mut ids: HashMap<&str, u32> = HashMap::new();
    Some(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| {
                let next = ids.len() as u32;
                *ids.entry(l).or_insert(next)
            })
            .collect(),
    )
}

fn key(k: u32) -> [u8; 8] {
    (k as u64).to_le_bytes()
}

fn run_store(trace: &[u32], entries: usize) -> f64 {
    let per = Store::charge_for(0, 0, 8, 8);
    let store = StoreConfig::new().capacity_bytes(per * entries).build();
    let mut hits = 0;
    for &k in trace {
        if store.contains_key(&key(k)) {
            // count through get so the frequency bit is set
            let _ = store.get::<u64>(&key(k));
            hits += 1;
        } else {
            store
                .insert(&key(k), &(k as u64), Expiry::Never, NO_TAGS)
                .unwrap();
        }
    }
    hits as f64 / trace.len() as f64
}

/// The figures of [`DRAWS`] replays of one subject.
struct Draws {
    median: f64,
    low: f64,
    high: f64,
}

impl Draws {
    fn of(mut replay: impl FnMut() -> f64) -> Draws {
        let mut xs: Vec<f64> = (0..DRAWS).map(|_| replay()).collect();
        xs.sort_by(f64::total_cmp);
        Draws {
            median: xs[DRAWS / 2],
            low: xs[0],
            high: xs[DRAWS - 1],
        }
    }

    /// `low-high`, in percent.
    fn spread(&self) -> String {
        format!("{:.2}-{:.2}", self.low * 100.0, self.high * 100.0)
    }
}

fn run_moka(trace: &[u32], entries: usize) -> f64 {
    let cache = moka::sync::Cache::new(entries as u64);
    let mut hits = 0;
    for (i, &k) in trace.iter().enumerate() {
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.insert(k, k as u64);
        }
        if i % 64 == 0 {
            cache.run_pending_tasks();
        }
    }
    hits as f64 / trace.len() as f64
}

fn run_quick(trace: &[u32], entries: usize) -> f64 {
    let mut cache = quick_cache::unsync::Cache::new(entries);
    let mut hits = 0;
    for &k in trace {
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.insert(k, k as u64);
        }
    }
    hits as f64 / trace.len() as f64
}

/// Belady's OPT: on a miss with a full cache, evict the key whose next use is
/// furthest in the future.
fn run_opt(trace: &[u32], entries: usize) -> f64 {
    let mut next_use = vec![usize::MAX; trace.len()];
    let mut last: HashMap<u32, usize> = HashMap::new();
    for (i, &k) in trace.iter().enumerate().rev() {
        next_use[i] = last.get(&k).copied().unwrap_or(usize::MAX - i);
        last.insert(k, i);
    }
    let mut resident: HashMap<u32, usize> = HashMap::new(); // key -> its next use
    let mut by_next: BTreeSet<(usize, u32)> = BTreeSet::new();
    let mut hits = 0;
    for (i, &k) in trace.iter().enumerate() {
        if let Some(n) = resident.get_mut(&k) {
            hits += 1;
            by_next.remove(&(*n, k));
            *n = next_use[i];
            by_next.insert((*n, k));
            continue;
        }
        if resident.len() == entries {
            let &(n, victim) = by_next.iter().next_back().unwrap();
            if n < next_use[i] {
                continue; // the new key is needed later than everything resident: bypass
            }
            by_next.remove(&(n, victim));
            resident.remove(&victim);
        }
        resident.insert(k, next_use[i]);
        by_next.insert((next_use[i], k));
    }
    hits as f64 / trace.len() as f64
}

fn main() {
    let synthetic = [1_000usize, 5_000, 10_000];
    let mut traces: Vec<(&str, Vec<u32>, &[usize])> = vec![
        ("zipf 0.7", zipf_trace(0.7, 1), &synthetic),
        ("zipf 0.9", zipf_trace(0.9, 2), &synthetic),
        ("zipf 1.1", zipf_trace(1.1, 3), &synthetic),
        ("zipf 0.9 + scans", scan_trace(), &synthetic),
        ("loop 12k", loop_trace(12_000), &synthetic),
    ];
    let real = [500usize, 1_000, 2_500, 5_000, 10_000];
    if let Some(t) = cloudphysics_trace() {
        traces.push(("cloudphysics", t, &real));
    }
    if let Ok(filter) = std::env::var("HIT_RATIO_TRACES") {
        let words: Vec<&str> = filter.split(',').map(str::trim).collect();
        traces.retain(|(name, _, _)| words.iter().any(|w| name.contains(w)));
        println!("traces selected by HIT_RATIO_TRACES={filter}");
    }
    println!(
        "hit ratio, insert on miss; synthetic: {REQUESTS} requests over {UNIVERSE} keys (loop: 12,000 keys)"
    );
    println!(
        "{:<18} {:>7} {:>11} {:>9} {:>11} {:>9} {:>10} {:>10}  {:>13} {:>13}",
        "trace",
        "size",
        "hydracache",
        "moka",
        "quick_cache",
        "OPT",
        "vs moka",
        "vs quick",
        "hc draws",
        "moka draws"
    );
    let (mut worst_moka, mut worst_quick) = (f64::MAX, f64::MAX);
    for (name, trace, sizes) in &traces {
        for &size in sizes.iter() {
            let hc = Draws::of(|| run_store(trace, size));
            let mk = Draws::of(|| run_moka(trace, size));
            let (spread_hc, spread_mk) = (hc.spread(), mk.spread());
            let (hc, mk) = (hc.median, mk.median);
            let qc = run_quick(trace, size);
            let opt = run_opt(trace, size);
            worst_moka = worst_moka.min(hc - mk);
            worst_quick = worst_quick.min(hc - qc);
            let flag = if hc < mk || hc < qc {
                "  <-- below a peer"
            } else {
                ""
            };
            println!(
                "{name:<18} {size:>7} {:>10.2}% {:>8.2}% {:>10.2}% {:>8.2}% {:>+8.2}pp {:>+8.2}pp  {spread_hc:>13} {spread_mk:>13}{flag}",
                hc * 100.0,
                mk * 100.0,
                qc * 100.0,
                opt * 100.0,
                (hc - mk) * 100.0,
                (hc - qc) * 100.0,
            );
        }
    }
    println!(
        "\nworst margin (medians of {DRAWS} draws): {:+.2}pp vs moka, {:+.2}pp vs quick_cache",
        worst_moka * 100.0,
        worst_quick * 100.0
    );
}
