//! The hit path as a user calls it: `Grid::get` (copy out) and
//! `Grid::get_ref` (zero-copy) against quick_cache, moka (sync) and a raw
//! papaya map, side by side in one process.
//!
//! 100,000 `String` keys `k:<n>`, 64-byte values, every grid entry with a
//! 1-hour TTL and 2 tags (moka with a 1-hour TTL; quick_cache and papaya
//! have none). Each thread runs its gets inside a current-thread tokio
//! runtime, awaiting `Grid::get` as an async caller does. 1 and 2 threads,
//! uniform and zipf(1.0) keys; subjects interleaved round by round; prints
//! the median Mgets/s and the ratios against quick_cache, moka and papaya.
//!
//! ```sh
//! cargo bench -p hydracache --bench hit_path            # wall clock
//! cargo bench -p hydracache --bench hit_path -- callgrind   # instructions per get
//! ```
//!
//! The `callgrind` mode re-runs this binary under valgrind, one subject at a
//! time with two operation counts, and prints the instructions per get (zipf)
//! and the last-level data cache misses per get (uniform, simulated 2 MiB
//! cache): the difference divided by the extra gets, with the harness's own
//! figure (key sampling, loop) subtracted. These do not move with the
//! machine's load. The grid's store, quick_cache and papaya hash with the
//! fixed seed [`SEED`] (each otherwise draws one per map, and the probe lengths of the
//! hottest keys moved the figures by about 10% between runs), so a run
//! repeats the previous one's figures.

use std::hash::BuildHasher;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hydracache::{CacheOptions, Grid};

const KEYS: usize = 100_000;
const OPS_PER_THREAD: usize = 1_000_000;
const ROUNDS: usize = 7;
type Value = [u8; 64];
/// The hash seed of the grid's store, quick_cache and papaya (moka's hasher
/// is random and offers no seed).
const SEED: u64 = 0x5eed;

/// The subjects, in print order. `Harness` reads the value from a plain
/// vector: the cost of the loop itself, for the callgrind figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    GridGet,
    GridGetRef,
    Quick,
    Moka,
    Papaya,
    Harness,
}

const KINDS: [Kind; 6] = [
    Kind::GridGet,
    Kind::GridGetRef,
    Kind::Quick,
    Kind::Moka,
    Kind::Papaya,
    Kind::Harness,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::GridGet => "Grid::get (copy)",
            Kind::GridGetRef => "Grid::get_ref (zero-copy)",
            Kind::Quick => "quick_cache sync (copy)",
            Kind::Moka => "moka sync (copy)",
            Kind::Papaya => "papaya raw (copy)",
            Kind::Harness => "harness only",
        }
    }
}

type Quick =
    quick_cache::sync::Cache<String, Value, quick_cache::UnitWeighter, foldhash::fast::FixedState>;

enum Subject {
    Grid(Grid),
    Quick(Quick),
    Moka(moka::sync::Cache<String, Value>),
    Papaya(papaya::HashMap<String, Value, foldhash::fast::FixedState>),
    Harness(Vec<Value>),
}

fn value(i: usize) -> Value {
    [i as u8; 64]
}

fn key(i: usize) -> String {
    format!("k:{i}")
}

fn build(kind: Kind, rt: &tokio::runtime::Runtime) -> Subject {
    match kind {
        Kind::GridGet | Kind::GridGetRef => rt.block_on(async {
            let grid = Grid::local()
                .max_capacity_bytes(256 << 20)
                .hash_seed(SEED)
                .build();
            for i in 0..KEYS {
                let opts = CacheOptions::new()
                    .ttl(Duration::from_secs(3600))
                    .tags([format!("tenant:{}", i % 100), "all".to_string()]);
                grid.put(&key(i), value(i), opts).await.unwrap();
            }
            Subject::Grid(grid)
        }),
        Kind::Quick => {
            let c = Quick::with(
                KEYS * 2,
                KEYS as u64 * 2,
                quick_cache::UnitWeighter,
                foldhash::fast::FixedState::with_seed(SEED),
                Default::default(),
            );
            for i in 0..KEYS {
                c.insert(key(i), value(i));
            }
            Subject::Quick(c)
        }
        Kind::Moka => {
            let c = moka::sync::Cache::builder()
                .max_capacity(KEYS as u64 * 2)
                .time_to_live(Duration::from_secs(3600))
                .build();
            for i in 0..KEYS {
                c.insert(key(i), value(i));
            }
            c.run_pending_tasks();
            Subject::Moka(c)
        }
        Kind::Papaya => {
            let m = papaya::HashMap::builder()
                .hasher(foldhash::fast::FixedState::with_seed(SEED))
                .build();
            for i in 0..KEYS {
                m.pin().insert(key(i), value(i));
            }
            Subject::Papaya(m)
        }
        Kind::Harness => Subject::Harness((0..KEYS).map(value).collect()),
    }
}

/// Runs the gets of one thread; returns a byte of every value read so the
/// reads cannot be optimised away.
async fn run(subject: &Subject, kind: Kind, keys: &[String], stream: &[u32]) -> u8 {
    let mut acc = 0u8;
    match subject {
        Subject::Grid(grid) if kind == Kind::GridGetRef => {
            for &i in stream {
                let entry = grid.get_ref(&keys[i as usize]).unwrap();
                acc = acc.wrapping_add(entry.bytes()[7]);
            }
        }
        Subject::Grid(grid) => {
            for &i in stream {
                let v: Value = grid.get(&keys[i as usize]).await.unwrap().unwrap();
                acc = acc.wrapping_add(std::hint::black_box(v)[7]);
            }
        }
        Subject::Quick(c) => {
            for &i in stream {
                acc = acc.wrapping_add(std::hint::black_box(c.get(&keys[i as usize]).unwrap())[7]);
            }
        }
        Subject::Moka(c) => {
            for &i in stream {
                acc = acc.wrapping_add(std::hint::black_box(c.get(&keys[i as usize]).unwrap())[7]);
            }
        }
        Subject::Papaya(m) => {
            for &i in stream {
                let v = m.pin().get(&keys[i as usize]).copied().unwrap();
                acc = acc.wrapping_add(std::hint::black_box(v)[7]);
            }
        }
        Subject::Harness(v) => {
            for &i in stream {
                // Touch the key as the others do, then the value.
                let k = std::hint::black_box(&keys[i as usize]);
                acc = acc
                    .wrapping_add(std::hint::black_box(v[i as usize])[7])
                    .wrapping_add(k.len() as u8);
            }
        }
    }
    acc
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// xorshift64*: fast and deterministic.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// Key indices: uniform, or zipf(1.0) over a shuffled key order (so hot keys
/// are not neighbours in the map) by inverse CDF.
fn stream(dist: &str, seed: u64, ops: usize) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    if dist == "uniform" {
        return (0..ops)
            .map(|_| (rng.next_u64() % KEYS as u64) as u32)
            .collect();
    }
    let mut cdf = Vec::with_capacity(KEYS);
    let mut sum = 0.0;
    for i in 1..=KEYS {
        sum += 1.0 / i as f64;
        cdf.push(sum);
    }
    let shuffle = foldhash::fast::FixedState::with_seed(7);
    (0..ops)
        .map(|_| {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * sum;
            let rank = cdf.partition_point(|&c| c < u).min(KEYS - 1);
            (shuffle.hash_one(rank) % KEYS as u64) as u32
        })
        .collect()
}

/// Million gets per second over all threads.
fn measure(
    subject: &Arc<Subject>,
    kind: Kind,
    keys: &Arc<Vec<String>>,
    streams: &[Arc<Vec<u32>>],
) -> f64 {
    let barrier = Arc::new(Barrier::new(streams.len() + 1));
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
                let rt = runtime();
                barrier.wait();
                let acc = rt.block_on(run(&subject, kind, &keys, &stream));
                std::hint::black_box(acc);
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    for h in handles {
        h.join().unwrap();
    }
    (streams.len() * OPS_PER_THREAD) as f64 / start.elapsed().as_secs_f64() / 1e6
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

/// The machine's load average (`/proc/loadavg`), printed with wall-clock
/// figures: on a shared machine they mean little without it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

fn wall_clock(keys: Arc<Vec<String>>) {
    println!("load average before: {}", load_average());
    let rt = runtime();
    let kinds: Vec<Kind> = KINDS
        .iter()
        .copied()
        .filter(|&k| k != Kind::Harness)
        .collect();
    let grid = Arc::new(build(Kind::GridGet, &rt));
    let subjects: Vec<Arc<Subject>> = kinds
        .iter()
        .map(|&k| match k {
            Kind::GridGet | Kind::GridGetRef => grid.clone(),
            other => Arc::new(build(other, &rt)),
        })
        .collect();
    println!(
        "Grid hit path: {KEYS} String keys, 64-byte values, grid entries with TTL + 2 tags; \
         Mgets/s, median of {ROUNDS} interleaved rounds of {OPS_PER_THREAD} gets per thread"
    );
    for dist in ["uniform", "zipf1.0"] {
        for threads in [1usize, 2] {
            let streams: Vec<Arc<Vec<u32>>> = (0..threads)
                .map(|t| Arc::new(stream(dist, t as u64 + 11, OPS_PER_THREAD)))
                .collect();
            let mut runs: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
            for _ in 0..ROUNDS {
                for (i, (s, &k)) in subjects.iter().zip(&kinds).enumerate() {
                    runs[i].push(measure(s, k, &keys, &streams));
                }
            }
            let medians: Vec<f64> = runs.into_iter().map(median).collect();
            let of = |k: Kind| medians[kinds.iter().position(|&x| x == k).unwrap()];
            let (quick, moka, papaya) = (of(Kind::Quick), of(Kind::Moka), of(Kind::Papaya));
            println!("\n{dist}, {threads} thread(s)");
            println!(
                "{:<28} {:>9} {:>10} {:>10} {:>12}",
                "", "Mgets/s", "vs quick", "vs moka", "vs papaya"
            );
            for (&k, &m) in kinds.iter().zip(&medians) {
                println!(
                    "{:<28} {m:>9.2} {:>9.2}x {:>9.2}x {:>11.2}x",
                    k.name(),
                    m / quick,
                    m / moka,
                    m / papaya
                );
            }
            println!("load average: {}", load_average());
        }
    }
}

/// `hit_path single <subject index> <ops> [uniform|zipf1.0]`: one thread,
/// one subject (the unit the callgrind mode measures).
fn single(keys: Arc<Vec<String>>, kind: Kind, ops: usize, dist: &str) {
    let rt = runtime();
    let subject = build(kind, &rt);
    let stream = stream(dist, 11, ops);
    let start = Instant::now();
    let acc = rt.block_on(run(&subject, kind, &keys, &stream));
    let ns = start.elapsed().as_nanos() as f64 / ops as f64;
    println!(
        "{}: {ops} gets, {ns:.1} ns/get (checksum {acc})",
        kind.name()
    );
}

/// A figure from the summary callgrind prints on stderr: instructions
/// ("Collected") or, with the cache simulation, last-level data misses.
fn callgrind_figure(exe: &std::path::Path, index: usize, ops: usize, dist: &str) -> Option<u64> {
    let cache_sim = dist == "uniform";
    let out = std::process::Command::new("valgrind")
        .args([
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            if cache_sim {
                "--cache-sim=yes"
            } else {
                "--cache-sim=no"
            },
            // A 2 MiB last-level cache (a core's share on a small server),
            // so misses show the entries' own working set, not the host's
            // last-level size.
            "--LL=2097152,16,64",
        ])
        .arg(exe)
        .args(["single", &index.to_string(), &ops.to_string(), dist])
        .output()
        .ok()?;
    let err = String::from_utf8_lossy(&out.stderr);
    let label = if cache_sim {
        "LLd misses:"
    } else {
        "Collected :"
    };
    err.lines()
        .find_map(|l| l.split_once(label).map(|(_, n)| n.trim().to_string()))
        .and_then(|n| n.split_whitespace().next()?.replace(',', "").parse().ok())
}

/// Per get: the difference between runs of two lengths, divided by the
/// extra gets, with the harness's own figure subtracted.
fn per_get(exe: &std::path::Path, dist: &str) -> Option<Vec<(Kind, f64)>> {
    let (small, large) = (200_000usize, 400_000usize);
    let mut out = Vec::new();
    for (i, kind) in KINDS.iter().enumerate() {
        let a = callgrind_figure(exe, i, small, dist)?;
        let b = callgrind_figure(exe, i, large, dist)?;
        out.push((*kind, b.saturating_sub(a) as f64 / (large - small) as f64));
    }
    let harness = out.last()?.1;
    out.pop();
    Some(out.into_iter().map(|(k, n)| (k, n - harness)).collect())
}

fn print_per_get(title: &str, unit: &str, figures: &[(Kind, f64)]) {
    let of = |k: Kind| figures.iter().find(|p| p.0 == k).unwrap().1;
    println!("\n{title}");
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10}",
        "", unit, "/ quick", "/ moka", "/ papaya"
    );
    for &(kind, n) in figures {
        println!(
            "{:<28} {n:>10.2} {:>9.2}x {:>9.2}x {:>9.2}x",
            kind.name(),
            n / of(Kind::Quick),
            n / of(Kind::Moka),
            n / of(Kind::Papaya)
        );
    }
}

fn callgrind() {
    let exe = std::env::current_exe().unwrap();
    let Some(instructions) = per_get(&exe, "zipf1.0") else {
        println!("callgrind: valgrind did not run (is it installed?); skipped");
        return;
    };
    print_per_get(
        "instructions per get, zipf 1.0, 1 thread (callgrind, harness loop subtracted)",
        "Ir/get",
        &instructions,
    );
    if let Some(misses) = per_get(&exe, "uniform") {
        print_per_get(
            "last-level data cache misses per get, uniform, 1 thread (callgrind cache simulation, 2 MiB LL)",
            "LLd/get",
            &misses,
        );
    }
}

fn main() {
    let keys: Arc<Vec<String>> = Arc::new((0..KEYS).map(key).collect());
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("single") => single(
            keys,
            KINDS[args[1].parse::<usize>().unwrap()],
            args[2].parse().unwrap(),
            args.get(3).map_or("zipf1.0", String::as_str),
        ),
        Some("callgrind") => callgrind(),
        _ => wall_clock(keys),
    }
}
