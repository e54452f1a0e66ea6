//! Reordering is not loss, over real sockets on 127.0.0.1: concurrent
//! invalidations and puts from several nodes reach every other node out of
//! order (separate streams, client relays, put replies), and no node takes
//! that for a missed invalidation and drops its whole store.

use std::time::Duration;

use futures_util::future::join_all;
use hydracache::cluster::DevCa;
use hydracache::{CacheOptions, Grid};

mod cluster_support;
use cluster_support::{addr, client, converge, eventually, member_builder};

async fn member(ca: &DevCa, id: &str, seeds: &[std::net::SocketAddr]) -> Grid {
    member_builder(ca, id, seeds).start().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_invalidations_and_puts_from_several_nodes_cause_no_flush() {
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "m0", &[]).await;
    let seed = addr(&m0).await;
    let m1 = member(&ca, "m1", &[seed]).await;
    let m2 = member(&ca, "m2", &[seed]).await;
    let c0 = client(&ca, "c0", &[seed]).await;
    let nodes = vec![m0, m1, m2, c0];
    converge(&nodes.iter().collect::<Vec<_>>(), 3, 1).await;

    // Each node, 8 rounds of 40 invalidations and 10 puts all in flight at
    // once (one origin's numbers travel on 50 streams concurrently).
    let (rounds, invalidations, puts) = (8, 40, 10);
    for round in 0..rounds {
        let work = nodes.iter().enumerate().flat_map(|(n, node)| {
            let invs = (0..invalidations).map(move |i| {
                let node = node.clone();
                Box::pin(async move {
                    node.invalidate_key(&format!("k:{n}:{round}:{i}"))
                        .await
                        .unwrap()
                })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
            });
            let writes = (0..puts).map(move |i| {
                let node = node.clone();
                Box::pin(async move {
                    node.put(
                        &format!("p:{i}"),
                        (n * 1000 + i) as u64,
                        CacheOptions::new(),
                    )
                    .await
                    .unwrap()
                })
                    as std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
            });
            invs.chain(writes)
        });
        join_all(work).await;
    }

    // Every hole fills (no message was lost), and none was taken for loss.
    assert!(
        eventually(async || {
            let mut open = 0;
            for n in &nodes {
                open += n.cluster_diagnostics().await.unwrap().open_holes;
            }
            open == 0
        })
        .await,
        "every hole fills"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut flushes = 0;
    let mut sent = 0;
    for n in &nodes {
        let d = n.cluster_diagnostics().await.unwrap();
        flushes += d.gap_flushes;
        sent += d.invalidation_sequence;
    }
    println!(
        "{sent} invalidations from 4 nodes, {} concurrent per node: {flushes} flushes on a gap",
        invalidations + puts
    );
    assert_eq!(flushes, 0, "reordering was taken for loss");
}
