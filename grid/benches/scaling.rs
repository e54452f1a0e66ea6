//! How a grid's costs grow with its size: 5, 10, 20 and 30 members in this
//! process, each a `Grid::member()` with its own UDP port on 127.0.0.1,
//! measured through the public API only (`cluster_diagnostics`,
//! `invalidate_key`).
//!
//! For each size it prints:
//! - the time from starting the joiners (all at once, seeded with the
//!   founder) until every node holds the same admitted view (same epoch,
//!   same members, all of them), and until the Raft leader has all of
//!   them in its configuration as voters or learners;
//! - invalidation latency from one member, call to `Ok` (acknowledged by
//!   every other member), p50/p99 over many samples, and how many calls
//!   did not return `Ok`;
//! - gossip sent per node per second (chitchat messages and their payload
//!   bytes, counted where chitchat hands them to the transport), idle and
//!   while the invalidations run, median over the nodes;
//! - QUIC connections per node (median/max) once invalidations have run;
//! - Raft voters and learners as the leader applied them;
//! - the encoded size of the membership snapshot a client is sent.
//!
//! `cargo bench -p hydracache --features cluster --bench scaling`
//! (`HYDRACACHE_SCALING_NODES=5,10` picks the sizes, `HYDRACACHE_SCALING_GOSSIP_MS`
//! the gossip interval, default 200, the builder's default). Each size is bounded in time: 90 s to
//! form and settle, 20 s of invalidations.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hydracache::cluster::{ClusterDiagnostics, DevCa, MembershipView};
use hydracache::Grid;
use hydracache_protocol::{Frame, Limits, Member, Message, NodeIdentity, Role};

const FORM_BOUND: Duration = Duration::from_secs(90);
const INVALIDATIONS: usize = 400;
const INVALIDATION_BOUND: Duration = Duration::from_secs(20);
const WARM_UP: usize = 20;
const IDLE_WINDOW: Duration = Duration::from_secs(5);

struct Row {
    nodes: usize,
    formed: Option<Duration>,
    settled: Option<Duration>,
    epoch: u64,
    inv_p50: Duration,
    inv_p99: Duration,
    inv_samples: usize,
    inv_failed: usize,
    gossip_idle_bytes: f64,
    gossip_idle_msgs: f64,
    gossip_busy_bytes: f64,
    conns_median: usize,
    conns_max: usize,
    voters: usize,
    learners: usize,
    snapshot_bytes: usize,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("{cpu}, {cores} cores available, Linux {kernel}")
}

fn median<T: Copy + Ord>(xs: &mut [T]) -> T {
    xs.sort();
    xs[xs.len() / 2]
}

fn median_f(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn diagnostics(nodes: &[Grid]) -> Vec<ClusterDiagnostics> {
    let mut out = Vec::with_capacity(nodes.len());
    for n in nodes {
        out.push(n.cluster_diagnostics().await.expect("a member"));
    }
    out
}

/// Every node holds the same view, with all `n` members in it.
fn agree(ds: &[ClusterDiagnostics], n: usize) -> bool {
    let first = &ds[0];
    ds.iter().all(|d| {
        d.members.len() == n && d.epoch == first.epoch && {
            let (mut a, mut b) = (d.members.clone(), first.members.clone());
            a.sort();
            b.sort();
            a == b
        }
    })
}

/// The leader has every member in its Raft configuration, as a voter or a
/// learner.
fn raft_settled(ds: &[ClusterDiagnostics], n: usize) -> bool {
    ds.iter().any(|d| {
        d.raft_leader.as_deref() == Some(d.node_id.as_str()) && d.raft_voters + d.raft_learners == n
    })
}

/// While a grid is slow to form: what the nodes see (to stderr).
fn progress(n: usize, at: Duration, ds: &[ClusterDiagnostics]) {
    let epochs: Vec<u64> = ds.iter().map(|d| d.epoch).collect();
    let members: Vec<usize> = ds.iter().map(|d| d.members.len()).collect();
    let live: Vec<usize> = ds.iter().map(|d| d.gossip_live).collect();
    let dead: usize = ds.iter().map(|d| d.dead.len()).sum();
    eprintln!(
        "{n} members, {:.0?} in: epochs {:?}..{:?}, admitted {:?}..{:?}, gossip live {:?}..{:?}, dead reports {dead}",
        at,
        epochs.iter().min().unwrap(),
        epochs.iter().max().unwrap(),
        members.iter().min().unwrap(),
        members.iter().max().unwrap(),
        live.iter().min().unwrap(),
        live.iter().max().unwrap(),
    );
}

/// Gossip sent per node per second over `window`, median over the nodes:
/// (payload bytes, messages).
fn gossip_rate(
    before: &[ClusterDiagnostics],
    after: &[ClusterDiagnostics],
    window: Duration,
) -> (f64, f64) {
    let secs = window.as_secs_f64();
    let mut bytes: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(b, a)| (a.gossip_bytes_sent - b.gossip_bytes_sent) as f64 / secs)
        .collect();
    let mut msgs: Vec<f64> = before
        .iter()
        .zip(after)
        .map(|(b, a)| (a.gossip_messages_sent - b.gossip_messages_sent) as f64 / secs)
        .collect();
    (median_f(&mut bytes), median_f(&mut msgs))
}

/// The encoded size of the membership snapshot frame for `n` members.
fn snapshot_bytes(n: usize) -> usize {
    let members = (0..n).map(|i| Member {
        node: NodeIdentity::new(format!("m{i}").as_str(), 1_700_000_000_000_000 + i as u64),
        role: Role::Member,
        address: SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8 + 1], 7400)),
    });
    let view = MembershipView::new(n as u64, members);
    let mut buf = bytes::BytesMut::new();
    Frame::new(0, Message::MetadataSnapshot(view.to_snapshot()))
        .encode(&Limits::default(), &mut buf)
        .expect("a snapshot encodes");
    buf.len()
}

async fn measure(ca: &DevCa, n: usize, gossip: Duration) -> Row {
    let member = |id: String, seeds: Vec<String>| {
        Grid::member()
            .cluster("scaling")
            .node_id(id.as_str())
            .bind("127.0.0.1:0".parse().unwrap())
            .bootstrap(seeds.is_empty())
            .seeds(seeds)
            .tls(ca.issue(&id).unwrap())
            .gossip_interval(gossip)
            .start()
    };
    let founder = member("m0".into(), Vec::new())
        .await
        .expect("founder starts");
    let seed = founder
        .cluster_diagnostics()
        .await
        .unwrap()
        .addr
        .to_string();
    let started = Instant::now();
    let joiners =
        futures_util::future::join_all((1..n).map(|i| member(format!("m{i}"), vec![seed.clone()])))
            .await;
    let mut nodes = vec![founder];
    nodes.extend(joiners.into_iter().map(|g| g.expect("member starts")));

    let mut formed = None;
    let mut settled = None;
    let mut reported = Duration::ZERO;
    while started.elapsed() < FORM_BOUND {
        let ds = diagnostics(&nodes).await;
        if formed.is_none() && agree(&ds, n) {
            formed = Some(started.elapsed());
        }
        if formed.is_some() && raft_settled(&ds, n) {
            settled = Some(started.elapsed());
            break;
        }
        if started.elapsed() >= reported + Duration::from_secs(5) {
            reported = started.elapsed();
            progress(n, reported, &ds);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Gossip at rest.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = diagnostics(&nodes).await;
    tokio::time::sleep(IDLE_WINDOW).await;
    let after = diagnostics(&nodes).await;
    let (gossip_idle_bytes, gossip_idle_msgs) = gossip_rate(&before, &after, IDLE_WINDOW);

    // Invalidations from one member (not the founder, which leads).
    let origin = &nodes[1];
    let mut samples = Vec::with_capacity(INVALIDATIONS);
    let mut failed = 0;
    let busy_before = diagnostics(&nodes).await;
    let busy_started = Instant::now();
    for i in 0..WARM_UP + INVALIDATIONS {
        if busy_started.elapsed() > INVALIDATION_BOUND {
            break;
        }
        let key = format!("k{i}");
        let start = Instant::now();
        let ok = origin.invalidate_key(&key).await.is_ok();
        let took = start.elapsed();
        if i >= WARM_UP {
            if ok {
                samples.push(took);
            } else {
                failed += 1;
            }
        }
    }
    let busy_window = busy_started.elapsed();
    let busy_after = diagnostics(&nodes).await;
    let (gossip_busy_bytes, _) = gossip_rate(&busy_before, &busy_after, busy_window);
    samples.sort();
    let (inv_p50, inv_p99) = if samples.is_empty() {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (percentile(&samples, 0.50), percentile(&samples, 0.99))
    };

    let mut conns: Vec<usize> = busy_after.iter().map(|d| d.connections).collect();
    let conns_median = median(&mut conns);
    let conns_max = *conns.iter().max().unwrap();
    let leader = busy_after
        .iter()
        .find(|d| d.raft_leader.as_deref() == Some(d.node_id.as_str()))
        .unwrap_or(&busy_after[0]);
    let row = Row {
        nodes: n,
        formed,
        settled,
        epoch: busy_after[0].epoch,
        inv_p50,
        inv_p99,
        inv_samples: samples.len(),
        inv_failed: failed,
        gossip_idle_bytes,
        gossip_idle_msgs,
        gossip_busy_bytes,
        conns_median,
        conns_max,
        voters: leader.raft_voters,
        learners: leader.raft_learners,
        snapshot_bytes: snapshot_bytes(n),
    };
    drop(nodes);
    // Let the closed endpoints go before the next size starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    row
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("HYDRACACHE_SCALING_NODES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![5, 10, 20, 30]);
    let gossip = Duration::from_millis(
        std::env::var("HYDRACACHE_SCALING_GOSSIP_MS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(200),
    );
    println!("machine: {}", machine());
    println!(
        "members in one process on 127.0.0.1, gossip every {gossip:?}, acknowledged invalidations"
    );
    let ca = DevCa::new("scaling").unwrap();
    let mut rows = Vec::new();
    for &n in &sizes {
        let row = measure(&ca, n, gossip).await;
        eprintln!("{n} members measured");
        rows.push(row);
    }
    println!();
    println!(
        "{:>5} {:>9} {:>9} {:>5} {:>9} {:>9} {:>7} {:>11} {:>9} {:>11} {:>9} {:>8} {:>9}",
        "nodes",
        "form",
        "raft",
        "epoch",
        "inv p50",
        "inv p99",
        "inv ok",
        "gossip B/s",
        "msgs/s",
        "busy B/s",
        "conns",
        "v/l",
        "snapshot"
    );
    for r in &rows {
        println!(
            "{:>5} {:>9} {:>9} {:>5} {:>9.2?} {:>9.2?} {:>7} {:>11.0} {:>9.1} {:>11.0} {:>9} {:>8} {:>8}B",
            r.nodes,
            r.formed
                .map_or_else(|| "timeout".into(), |d| format!("{:.2}s", d.as_secs_f64())),
            r.settled
                .map_or_else(|| "timeout".into(), |d| format!("{:.2}s", d.as_secs_f64())),
            r.epoch,
            r.inv_p50,
            r.inv_p99,
            format!("{}/{}", r.inv_samples, r.inv_samples + r.inv_failed),
            r.gossip_idle_bytes,
            r.gossip_idle_msgs,
            r.gossip_busy_bytes,
            format!("{}/{}", r.conns_median, r.conns_max),
            format!("{}/{}", r.voters, r.learners),
            r.snapshot_bytes,
        );
    }
    println!();
    println!("snapshot frame for larger grids (encoded, same id and address shapes):");
    for n in [100, 1_000] {
        println!("{n:>5} members: {} bytes", snapshot_bytes(n));
    }
    if let Some(base) = rows.first() {
        println!();
        println!("ratios to {} members:", base.nodes);
        for r in &rows[1..] {
            let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
            println!(
                "{:>5} members: form x{:.1}, inv p50 x{:.1}, inv p99 x{:.1}, gossip B/node/s x{:.1}",
                r.nodes,
                ratio(
                    r.formed.map_or(f64::NAN, |d| d.as_secs_f64()),
                    base.formed.map_or(f64::NAN, |d| d.as_secs_f64())
                ),
                ratio(r.inv_p50.as_secs_f64(), base.inv_p50.as_secs_f64()),
                ratio(r.inv_p99.as_secs_f64(), base.inv_p99.as_secs_f64()),
                ratio(r.gossip_idle_bytes, base.gossip_idle_bytes),
            );
        }
    }
}
