//! Reads through the owner between two members on 127.0.0.1, against a raw
//! quinn request/response of the same size (64 bytes, same TLS stack) and
//! Redis, measured in the same run:
//!
//! - latency: `Grid::get` of a 64-byte value on the member that does not
//!   own the key, near cache cold (a key not read before on that member),
//!   against one raw quinn echo of 64 bytes; blocks of the two alternate.
//! - hit path: `Grid::get` on that member of a near copy (a key it does not
//!   own, read once through the owner) against a key it owns, in the same
//!   rounds: the hit path must not tell them apart.
//! - throughput: 32 reads in flight on that member (cycling over 8,192 keys
//!   with its near copies capped at 16 KiB, so the reads go to the owner;
//!   the share that did is printed), against raw quinn with 32 requests in
//!   flight and `redis-benchmark -t get -c 50 -P 1` against a
//!   `redis-server` started on a free loopback port (skipped, with the
//!   reason, when either is not installed).
//!
//! `cargo bench -p hydracache --features cluster --bench read_path`
//! (`-- grid-only` and `-- quinn-only` run only that subject's throughput
//! rounds, for a profiler; `-- setup-only` stops before any round, so that
//! the set-up's share of a profile's counts can be subtracted)

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hydracache::cluster::DevCa;
use hydracache::{CacheOptions, Grid};

mod grid_support;
use grid_support::raw_quinn::{echo_connection, round_trip};
use grid_support::{load_average, median, members_with, owner_index, percentile};

const PAYLOAD: [u8; 64] = [7; 64];
/// Latency samples per subject, after one block of warm-up.
const BLOCKS: usize = 10;
const BLOCK: usize = 200;
const IN_FLIGHT: usize = 32;
const THROUGHPUT_KEYS: usize = 8192;
const THROUGHPUT_FOR: Duration = Duration::from_secs(2);
const ROUNDS: usize = 3;
/// Gets per hit-path round, and rounds per subject.
const HITS: usize = 200_000;
const HIT_ROUNDS: usize = 7;

/// `count` keys with prefix `prefix` that `owner` owns.
fn keys_owned_by(nodes: &[Grid], owner: &str, prefix: &str, count: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|k| nodes[0].owner_for_key(k).as_deref() == Some(owner))
        .take(count)
        .collect()
}

/// Runs `op(i)` from `IN_FLIGHT` tasks for `THROUGHPUT_FOR`; operations per
/// second.
async fn throughput<F, Fut>(op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (op, next, stop) = (
        Arc::new(op),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let start = Instant::now();
    let tasks: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (op, next, stop) = (op.clone(), next.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    op(next.fetch_add(1, Ordering::Relaxed)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(THROUGHPUT_FOR).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    next.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Nanoseconds per `Grid::get` of `key` on `reader` (a local hit), over
/// `HITS` calls.
async fn hit_ns(reader: &Grid, key: &str) -> u64 {
    let start = Instant::now();
    for _ in 0..HITS {
        let v = reader
            .get::<[u8; 64]>(std::hint::black_box(key))
            .await
            .unwrap();
        assert!(v.is_some());
    }
    (start.elapsed().as_nanos() / HITS as u128) as u64
}

/// One throughput round of `Grid::get` on `reader` cycling over `keys`:
/// operations per second, reads done, and how many of them the owner
/// answered over the network.
async fn grid_throughput(reader: &Grid, keys: &Arc<Vec<String>>) -> (u64, u64, u64) {
    let before = reader.cluster_diagnostics().await.unwrap().remote_hits;
    let counted = Arc::new(AtomicUsize::new(0));
    let (r, keys, c) = (reader.clone(), keys.clone(), counted.clone());
    let ops = throughput(move |i| {
        let (r, keys, c) = (r.clone(), keys.clone(), c.clone());
        async move {
            let v = r.get::<[u8; 64]>(&keys[i % keys.len()]).await.unwrap();
            assert_eq!(v, Some(PAYLOAD));
            c.fetch_add(1, Ordering::Relaxed);
        }
    })
    .await;
    let remote = reader.cluster_diagnostics().await.unwrap().remote_hits - before;
    (ops as u64, counted.load(Ordering::Relaxed) as u64, remote)
}

/// A redis-server on a free loopback port, stopped (by pid) when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Result<Redis, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("redis-server not started ({e}); apt-get install -y redis-server")
            })?;
        let redis = Redis { child, port };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        for _ in 0..100 {
            if TcpStream::connect(addr).is_ok() {
                return Ok(redis);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("redis-server did not listen on {addr} within 5 s"))
    }

    /// `redis-benchmark -t get -c 50 -P 1` with 64-byte values (a `set` of
    /// the same key runs first so that the gets find a value): GETs per
    /// second and the p50 it printed.
    fn get_throughput(&self) -> Result<(f64, String), String> {
        let out = Command::new("redis-benchmark")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-t", "set,get", "-d", "64", "-c", "50", "-P", "1", "-q"])
            .args(["-n", "100000"])
            .output()
            .map_err(|e| format!("redis-benchmark not run ({e})"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // "GET: 51234.00 requests per second, p50=0.503 msec"
        let line = text
            .split(['\r', '\n'])
            .rfind(|l| l.starts_with("GET:") && l.contains("requests per second"))
            .ok_or_else(|| format!("no GET line in redis-benchmark's output: {text:?}"))?;
        let rate = line["GET:".len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("unreadable GET line: {line:?}"))?;
        let p50 = line.split("p50=").nth(1).unwrap_or("?").trim();
        let p50 = p50.trim_end_matches("msec").trim().to_string();
        Ok((rate, p50))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ca = DevCa::new("orders").unwrap();
        // The reader (whichever member does not own "read:0") keeps at most
        // 16 KiB of near copies, so the throughput loop's 8,192 keys do not
        // stay near; the latency loop reads keys it never read before.
        let nodes = members_with(&ca, 2, |_, b| b.near_copies_max_bytes(16 << 10)).await;
        let owner = owner_index(&nodes, "read:0").await;
        let (owner_node, reader) = (nodes[owner].clone(), nodes[1 - owner].clone());
        let owner_id = nodes[0].owner_for_key("read:0").unwrap();
        let latency_keys = keys_owned_by(&nodes, &owner_id, "read", BLOCKS * BLOCK + BLOCK);
        let cycle_keys = Arc::new(keys_owned_by(&nodes, &owner_id, "cycle", THROUGHPUT_KEYS));
        futures_util::stream::iter(latency_keys.iter().chain(cycle_keys.iter()))
            .for_each_concurrent(IN_FLIGHT, |k| {
                let owner_node = &owner_node;
                async move { owner_node.put(k, PAYLOAD, CacheOptions::new()).await.unwrap() }
            })
            .await;
        if std::env::args().any(|a| a == "setup-only") {
            // What the other two modes spend before their rounds, to
            // subtract from their counts.
            return;
        }
        if std::env::args().any(|a| a == "grid-only") {
            for _ in 0..ROUNDS {
                let (ops, reads, remote) = grid_throughput(&reader, &cycle_keys).await;
                println!("Grid::get through the owner, {IN_FLIGHT} in flight: {ops} ops/s ({remote} of {reads} reads went to the owner)");
            }
            return;
        }
        let conn = echo_connection(&ca).await;
        if std::env::args().any(|a| a == "quinn-only") {
            for _ in 0..ROUNDS {
                let conn = conn.clone();
                let ops = throughput(move |_| {
                    let conn = conn.clone();
                    async move { round_trip(&conn, &PAYLOAD).await }
                })
                .await;
                println!("raw quinn request/response, {IN_FLIGHT} in flight: {ops:.0} ops/s");
            }
            return;
        }

        println!(
            "read path, 2 members on 127.0.0.1, 64 B values (load average {})",
            load_average()
        );
        // Latency: blocks alternate, the first of each is warm-up.
        let (mut raw, mut grid) = (Vec::new(), Vec::new());
        let mut keys = latency_keys.iter();
        for block in 0..=BLOCKS {
            for _ in 0..BLOCK {
                let start = Instant::now();
                round_trip(&conn, &PAYLOAD).await;
                if block > 0 {
                    raw.push(start.elapsed());
                }
            }
            for _ in 0..BLOCK {
                let key = keys.next().unwrap();
                let start = Instant::now();
                let v = reader.get::<[u8; 64]>(key).await.unwrap();
                if block > 0 {
                    grid.push(start.elapsed());
                }
                assert_eq!(v, Some(PAYLOAD));
            }
        }
        raw.sort();
        grid.sort();
        let (raw50, raw99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
        let (grid50, grid99) = (percentile(&grid, 0.5), percentile(&grid, 0.99));
        println!("\nlatency, {} samples each", raw.len());
        println!("{:<48} p50 {raw50:>9.1?}  p99 {raw99:>9.1?}", "raw quinn request/response (64 B echo)");
        println!(
            "{:<48} p50 {grid50:>9.1?}  p99 {grid99:>9.1?}  ({:.2}x raw p50, {:.2}x raw p99; target <= 1.3x p50)",
            "Grid::get through the owner, near cache cold",
            grid50.as_secs_f64() / raw50.as_secs_f64(),
            grid99.as_secs_f64() / raw99.as_secs_f64()
        );

        // Hit path: a near copy against an owned key, rounds interleaved.
        let near_key = &keys_owned_by(&nodes, &owner_id, "near", 1)[0];
        let reader_id = reader.cluster_diagnostics().await.unwrap().node_id;
        let own_key = &keys_owned_by(&nodes, &reader_id, "own", 1)[0];
        owner_node.put(near_key, PAYLOAD, CacheOptions::new()).await.unwrap();
        reader.put(own_key, PAYLOAD, CacheOptions::new()).await.unwrap();
        assert_eq!(reader.get::<[u8; 64]>(near_key).await.unwrap(), Some(PAYLOAD));
        let remote_before = reader.cluster_diagnostics().await.unwrap().remote_hits;
        let (mut near_ns, mut own_ns) = (Vec::new(), Vec::new());
        for _ in 0..HIT_ROUNDS {
            near_ns.push(hit_ns(&reader, near_key).await);
            own_ns.push(hit_ns(&reader, own_key).await);
        }
        let remote = reader.cluster_diagnostics().await.unwrap().remote_hits - remote_before;
        let (near, own) = (median(&near_ns), median(&own_ns));
        println!("\nhit path on the reader, {HITS} gets x {HIT_ROUNDS} rounds, median ns/get");
        println!("{:<48} {own:>6} ns  rounds {own_ns:?}", "Grid::get of a key it owns");
        println!(
            "{:<48} {near:>6} ns  rounds {near_ns:?}  ({:.2}x the owned key; {remote} reads went to the owner)",
            "Grid::get of a near copy",
            near as f64 / own as f64
        );

        // Throughput: rounds alternate between the subjects.
        let redis = Redis::start();
        let (mut grid_ops, mut raw_ops, mut redis_ops, mut redis_p50) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut reads, mut remote) = (0u64, 0u64);
        for _ in 0..ROUNDS {
            let (ops, n, r) = grid_throughput(&reader, &cycle_keys).await;
            grid_ops.push(ops);
            reads += n;
            remote += r;
            let conn = conn.clone();
            raw_ops.push(
                throughput(move |_| {
                    let conn = conn.clone();
                    async move { round_trip(&conn, &PAYLOAD).await }
                })
                .await as u64,
            );
            if let Ok(redis) = &redis {
                match redis.get_throughput() {
                    Ok((rate, p50)) => {
                        redis_ops.push(rate as u64);
                        redis_p50.push(p50);
                    }
                    Err(e) => println!("redis round skipped: {e}"),
                }
            }
        }
        let (g, q) = (median(&grid_ops) as f64, median(&raw_ops) as f64);
        println!("\nthroughput, {IN_FLIGHT} in flight, {THROUGHPUT_FOR:?} x {ROUNDS} rounds, median ops/s");
        println!("{:<48} {q:>9.0}  rounds {raw_ops:?}", "raw quinn request/response, 32 in flight");
        println!(
            "{:<48} {g:>9.0}  rounds {grid_ops:?}  ({:.2}x raw quinn; {:.1}% of the reads went to the owner)",
            "Grid::get through the owner, 32 in flight",
            g / q,
            100.0 * remote as f64 / reads.max(1) as f64
        );
        match &redis {
            Ok(_) if !redis_ops.is_empty() => {
                let r = median(&redis_ops) as f64;
                println!(
                    "{:<48} {r:>9.0}  rounds {redis_ops:?} (p50 ms {redis_p50:?})  \
                     (grid {:.2}x Redis, target >= 1.0x)",
                    "redis-benchmark -t get -c 50 -P 1 (64 B)",
                    g / r
                );
            }
            Ok(_) => println!("redis-benchmark: no round completed (see above)"),
            Err(e) => println!("redis-benchmark row skipped: {e}"),
        }
        println!("\nload average at the end {}", load_average());
        drop(redis);
    });
}
