//! Invalidation latency across a 5-member grid on loopback (call to
//! all-acknowledged, p50/p99), a peer fetch and a `Grid::get` read through
//! the owner, with two references measured in the same run:
//! a framed Ping/Pong request over the node transport, and a raw quinn
//! request/response (a bidirectional stream echo of 64 bytes, same TLS).
//!
//! `cargo bench -p hydracache --features cluster --bench cluster`

use std::sync::Arc;
use std::time::{Duration, Instant};

use hydracache::cluster::{DevCa, Transport};
use hydracache::{CacheOptions, Grid};
use hydracache_protocol::{Hello, Limits, Message, Role};

mod grid_support;
use grid_support::percentile;
use grid_support::raw_quinn::{echo_connection, round_trip};

const SAMPLES: usize = 2000;

fn report(name: &str, mut xs: Vec<Duration>) -> (Duration, Duration) {
    xs.sort();
    let (p50, p99) = (percentile(&xs, 0.50), percentile(&xs, 0.99));
    println!("{name:<44} p50 {:>9.1?}  p99 {:>9.1?}", p50, p99);
    (p50, p99)
}

async fn raw_quinn(ca: &DevCa) -> Vec<Duration> {
    let conn = echo_connection(ca).await;
    let payload = [7u8; 64];
    let mut out = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES + 200 {
        let start = Instant::now();
        round_trip(&conn, &payload).await;
        if i >= 200 {
            out.push(start.elapsed());
        }
    }
    out
}

async fn framed_ping(ca: &DevCa) -> Vec<Duration> {
    let a = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue("pa").unwrap(),
        Hello::new("orders", ("pa", 1), Role::Member),
        Limits::default(),
    )
    .unwrap();
    let b = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue("pb").unwrap(),
        Hello::new("orders", ("pb", 1), Role::Member),
        Limits::default(),
    )
    .unwrap();
    struct Pong;
    impl hydracache::cluster::Handler for Pong {
        fn request<'a>(
            &'a self,
            _: &'a hydracache::cluster::PeerIdentity,
            m: Message,
        ) -> hydracache::cluster::Reply<'a> {
            Box::pin(async move {
                match m {
                    Message::Ping { nonce } => Message::Pong { nonce },
                    other => other,
                }
            })
        }
        fn message(&self, _: &hydracache::cluster::PeerIdentity, _: Message) {}
    }
    a.serve(Arc::new(Pong));
    b.serve(Arc::new(Pong));
    let mut out = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES + 200 {
        let start = Instant::now();
        b.request(a.local_addr(), Message::Ping { nonce: i as u64 })
            .await
            .unwrap();
        if i >= 200 {
            out.push(start.elapsed());
        }
    }
    out
}

async fn invalidation(ca: &DevCa) -> (Vec<Duration>, Vec<Grid>) {
    let gossip = Duration::from_millis(100);
    let mut nodes = Vec::new();
    let mut seed = None;
    for i in 0..5 {
        let id = format!("m{i}");
        let g = Grid::member()
            .cluster("orders")
            .node_id(id.as_str())
            .bootstrap(seed.is_none())
            .seeds(seed.iter().cloned())
            .tls(ca.issue(&id).unwrap())
            .gossip_interval(gossip)
            .start()
            .await
            .unwrap();
        if seed.is_none() {
            seed = Some(g.cluster_diagnostics().await.unwrap().addr.to_string());
        }
        nodes.push(g);
    }
    for _ in 0..200 {
        let mut all = true;
        for n in &nodes {
            all &= n.cluster_diagnostics().await.unwrap().members.len() == 5;
        }
        if all {
            break;
        }
        tokio::time::sleep(gossip).await;
    }
    let mut out = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES + 200 {
        let key = format!("k{}", i % 100);
        for n in &nodes[1..] {
            n.put(&key, 1u8, CacheOptions::new()).await.unwrap();
        }
        let start = Instant::now();
        nodes[0].invalidate_key(&key).await.unwrap();
        let t = start.elapsed();
        if i >= 200 {
            out.push(t);
        }
        assert!(!nodes[4].contains_key(&key).await);
    }
    (out, nodes)
}

/// A peer-fetch round trip: a Fetch for a key to its owner, answered with
/// the stored 64-byte value (shared from the store, not re-encoded).
async fn peer_fetch(ca: &DevCa, nodes: &[Grid]) -> Vec<Duration> {
    let key = "fetch:me";
    let owner_id = nodes[0].owner_for_key(key).unwrap();
    let mut owner = None;
    for n in nodes {
        let d = n.cluster_diagnostics().await.unwrap();
        if d.node_id == owner_id {
            owner = Some((n, d.addr, d.epoch));
        }
    }
    let (owner, owner_addr, epoch) = owner.unwrap();
    owner
        .put(key, [7u8; 64], CacheOptions::new())
        .await
        .unwrap();
    let reader = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue("reader").unwrap(),
        Hello::new("orders", ("reader", 1), Role::Client),
        Limits::default(),
    )
    .unwrap();
    let fetch = Message::Fetch(hydracache_protocol::Fetch {
        epoch,
        key: bytes::Bytes::from_static(b"fetch:me"),
    });
    let mut out = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES + 200 {
        let start = Instant::now();
        let (_, reply) = reader.request(owner_addr, fetch.clone()).await.unwrap();
        let t = start.elapsed();
        assert!(matches!(
            reply,
            Message::FetchReply(hydracache_protocol::FetchReply::Hit(_))
        ));
        if i >= 200 {
            out.push(t);
        }
    }
    out
}

/// `Grid::get` on a member that does not own the key, near cache cold: a
/// local miss, a Fetch to the owner, the reply kept as a near copy and
/// decoded. Each sample reads a key not read before on that node.
async fn read_through_owner(nodes: &[Grid]) -> Vec<Duration> {
    let owner_id = nodes[0].owner_for_key("read:0").unwrap();
    let mut owner = None;
    let mut reader = None;
    for n in nodes {
        if n.cluster_diagnostics().await.unwrap().node_id == owner_id {
            owner = Some(n);
        } else {
            reader = Some(n);
        }
    }
    let (owner, reader) = (owner.unwrap(), reader.unwrap());
    let keys: Vec<String> = (0..)
        .map(|i| format!("read:{i}"))
        .filter(|k| nodes[0].owner_for_key(k).as_deref() == Some(owner_id.as_str()))
        .take(SAMPLES + 200)
        .collect();
    for k in &keys {
        owner.put(k, [7u8; 64], CacheOptions::new()).await.unwrap();
    }
    let mut out = Vec::with_capacity(SAMPLES);
    for (i, k) in keys.iter().enumerate() {
        let start = Instant::now();
        let v = reader.get::<[u8; 64]>(k).await.unwrap();
        let t = start.elapsed();
        assert_eq!(v, Some([7u8; 64]));
        if i >= 200 {
            out.push(t);
        }
    }
    out
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ca = DevCa::new("orders").unwrap();
        println!("loopback, {SAMPLES} samples each after 200 warm-up");
        let (raw, _) = report("raw quinn request/response (64 B echo)", raw_quinn(&ca).await);
        let (framed, _) = report("framed Ping/Pong over the node transport", framed_ping(&ca).await);
        let (latencies, nodes) = invalidation(&ca).await;
        let (p50, p99) = report("invalidate_key, 5 members, all acknowledged", latencies);
        let (fetch, _) = report("peer fetch of a 64 B value from its owner", peer_fetch(&ca, &nodes).await);
        let (read, _) = report("Grid::get through the owner, near cache cold", read_through_owner(&nodes).await);
        println!(
            "\nframed request / raw quinn p50: {:.2}x; peer fetch / raw quinn p50: {:.2}x (target <= 1.3x); \
             get through the owner / raw quinn p50: {:.2}x (target <= 1.3x); \
             invalidation p50 / raw quinn p50: {:.2}x; invalidation p99 {:.2} ms (target < 2 ms)",
            framed.as_secs_f64() / raw.as_secs_f64(),
            fetch.as_secs_f64() / raw.as_secs_f64(),
            read.as_secs_f64() / raw.as_secs_f64(),
            p50.as_secs_f64() / raw.as_secs_f64(),
            p99.as_secs_f64() * 1e3
        );
    });
}
