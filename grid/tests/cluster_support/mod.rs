//! What the in-process cluster tests share: node builders with the tests'
//! gossip interval, a node's address, and bounded polling until the nodes
//! agree.

#![allow(dead_code)] // each test file uses its own subset

use std::net::SocketAddr;
use std::time::Duration;

use hydracache::cluster::{DevCa, NodeBuilder};
use hydracache::Grid;

/// Gossip interval of every test node.
pub const GOSSIP: Duration = Duration::from_millis(50);

/// A member of cluster "orders" with a certificate from `ca`, seeded with
/// `seeds`; the caller adds its own settings and starts it.
pub fn member_builder(ca: &DevCa, id: &str, seeds: &[SocketAddr]) -> NodeBuilder {
    Grid::member()
        .cluster("orders")
        .node_id(id)
        .seeds(seeds.iter().map(|s| s.to_string()))
        .bootstrap(seeds.is_empty())
        .tls(ca.issue(id).unwrap())
        .gossip_interval(GOSSIP)
}

/// A client of cluster "orders" with an 8 MiB near cache, connected.
pub async fn client(ca: &DevCa, id: &str, seeds: &[SocketAddr]) -> Grid {
    Grid::client()
        .cluster("orders")
        .node_id(id)
        .seeds(seeds.iter().map(|s| s.to_string()))
        .tls(ca.issue(id).unwrap())
        .gossip_interval(GOSSIP)
        .near_cache_capacity_bytes(8 << 20)
        .connect()
        .await
        .unwrap()
}

/// The address a node listens on.
pub async fn addr(g: &Grid) -> SocketAddr {
    g.cluster_diagnostics().await.unwrap().addr
}

/// Polls until every node's admitted view has `members` members and
/// `clients` clients, and every node keeps copies (every process that
/// sends it invalidations has shown it does; bounded: 800 gossip rounds).
pub async fn converge(nodes: &[&Grid], members: usize, clients: usize) {
    for _ in 0..800 {
        let mut ok = true;
        for n in nodes {
            let d = n.cluster_diagnostics().await.unwrap();
            ok &= d.members.len() == members && d.clients.len() == clients && d.keeps_copies;
        }
        if ok {
            return;
        }
        tokio::time::sleep(GOSSIP).await;
    }
    for n in nodes {
        eprintln!("{:?}", n.cluster_diagnostics().await);
    }
    panic!("no agreement on {members} members and {clients} clients");
}

/// Polls `check` until it holds (bounded: 800 gossip rounds).
pub async fn eventually<F: AsyncFnMut() -> bool>(mut check: F) -> bool {
    for _ in 0..800 {
        if check().await {
            return true;
        }
        tokio::time::sleep(GOSSIP).await;
    }
    false
}

/// Held by each test of a file whose tests start six nodes apiece: run one
/// at a time, they do not starve each other's gossip and timers on a small
/// machine (a test's assertions are about the grid, not about the load of
/// the tests around it).
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
