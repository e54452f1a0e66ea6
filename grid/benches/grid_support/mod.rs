//! What the grid benches share: a converged grid of members on 127.0.0.1,
//! percentiles, and the machine's load average (printed beside every table,
//! since the figures move with it).

#![allow(dead_code)] // each bench uses its own subset

use std::time::Duration;

use hydracache::cluster::{DevCa, NodeBuilder};
use hydracache::Grid;

pub mod raw_quinn;

/// Gossip interval of the bench nodes.
pub const GOSSIP: Duration = Duration::from_millis(100);

/// `n` members of cluster "orders" (`m0`, `m1`, ...): the first founds it,
/// the others are seeded from it; started and agreed on their membership (bounded: 200 gossip rounds).
pub async fn members(ca: &DevCa, n: usize) -> Vec<Grid> {
    members_with(ca, n, |_, b| b).await
}

/// As [`members`], with `tweak(index, builder)` applied to each member's
/// builder before it starts.
pub async fn members_with(
    ca: &DevCa,
    n: usize,
    tweak: impl Fn(usize, NodeBuilder) -> NodeBuilder,
) -> Vec<Grid> {
    let mut nodes: Vec<Grid> = Vec::new();
    let mut seed = None;
    for i in 0..n {
        let id = format!("m{i}");
        let builder = Grid::member()
            .cluster("orders")
            .node_id(id.as_str())
            .seeds(seed.iter().cloned())
            .bootstrap(i == 0)
            .tls(ca.issue(&id).unwrap())
            .gossip_interval(GOSSIP);
        let g = tweak(i, builder).start().await.unwrap();
        if seed.is_none() {
            seed = Some(g.cluster_diagnostics().await.unwrap().addr.to_string());
        }
        nodes.push(g);
    }
    for _ in 0..200 {
        let mut all = true;
        for g in &nodes {
            all &= g.cluster_diagnostics().await.unwrap().members.len() == n;
        }
        if all {
            return nodes;
        }
        tokio::time::sleep(GOSSIP).await;
    }
    panic!("{n} members did not agree on their membership");
}

/// The index of the member that owns `key`.
pub async fn owner_index(nodes: &[Grid], key: &str) -> usize {
    let owner = nodes[0].owner_for_key(key).unwrap();
    for (i, g) in nodes.iter().enumerate() {
        if g.cluster_diagnostics().await.unwrap().node_id == owner {
            return i;
        }
    }
    panic!("the owner of {key} is not one of the nodes");
}

/// The `p` quantile of sorted samples.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// The median of unsorted samples.
pub fn median<T: Copy + Ord>(xs: &[T]) -> T {
    let mut xs = xs.to_vec();
    xs.sort();
    percentile(&xs, 0.5)
}

/// The 1-, 5- and 15-minute load averages, as the kernel reports them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|e| format!("unknown ({e})"))
}
