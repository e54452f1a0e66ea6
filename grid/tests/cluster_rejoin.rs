//! A member the others removed while it was cut off (its socket dropping
//! every datagram past the failure timeout, with the `test-hooks` feature)
//! learns it was removed once it hears them again, and the grid starts a new
//! generation of its node on the same address: it is admitted again, and
//! reads, puts and invalidations through it work, with nothing it held from
//! before the cut served. A client does the same. Both do by default
//! (`rejoin_after_removal`); with it off a member stays removed and keeps
//! nothing.

use std::net::SocketAddr;

use hydracache::cluster::{ClusterDiagnostics, DevCa};
use hydracache::{CacheError, CacheOptions, Grid};

mod cluster_support;
use cluster_support::{addr, converge, eventually, member_builder, GOSSIP};

async fn diag(g: &Grid) -> ClusterDiagnostics {
    g.cluster_diagnostics().await.unwrap()
}

/// Three members seeded with the first; the third is started with
/// `rejoin`, and is the one a test cuts off. Returns them with the third
/// last; the raft leader is one of the first two.
async fn three(ca: &DevCa, rejoin: bool) -> (Grid, Grid, Grid) {
    let a = member_builder(ca, "a", &[]).start().await.unwrap();
    let seed: SocketAddr = addr(&a).await;
    let b = member_builder(ca, "b", &[seed]).start().await.unwrap();
    converge(&[&a, &b], 2, 0).await;
    // Admitted after a and b: a leader is already elected among them.
    let x = member_builder(ca, "x", &[seed])
        .rejoin_after_removal(rejoin)
        .start()
        .await
        .unwrap();
    converge(&[&a, &b, &x], 3, 0).await;
    (a, b, x)
}

/// A key `x` does not own (so it holds a near copy of it).
fn key_not_owned_by(g: &Grid, node: &str) -> String {
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| g.owner_for_key(k).as_deref() != Some(node))
        .unwrap()
}

/// Cuts `x` off until both others have removed it (the caller restores it).
async fn cut_until_removed(a: &Grid, b: &Grid, x: &Grid) {
    x.pause_network(true);
    let removed = eventually(async || {
        let (da, db) = (diag(a).await, diag(b).await);
        da.members.len() == 2 && db.members.len() == 2
    })
    .await;
    assert!(removed, "the others never removed x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_rejoins_as_a_new_generation() {
    let ca = DevCa::new("orders").unwrap();
    let (a, b, x) = three(&ca, true).await;
    let before = diag(&x).await;
    let key = key_not_owned_by(&a, "x");
    a.put(&key, 1u32, CacheOptions::new().tag("t"))
        .await
        .unwrap();
    assert_eq!(x.get::<u32>(&key).await.unwrap(), Some(1));
    assert!(x.contains_key(&key).await, "x keeps a near copy");
    let mut changes = x.subscribe_membership();
    cut_until_removed(&a, &b, &x).await;
    // Written while x cannot hear it: x's copy of 1 is stale from now on.
    // (x, removed a moment ago, may still be named as not acknowledging.)
    match a.put(&key, 2u32, CacheOptions::new().tag("t")).await {
        Ok(()) => {}
        Err(CacheError::Unacknowledged { nodes }) => assert_eq!(nodes, ["x"]),
        Err(e) => panic!("{e:?}"),
    }
    assert_eq!(a.get::<u32>(&key).await.unwrap(), Some(2));
    x.pause_network(false);

    let rejoined = eventually(async || {
        let d = diag(&x).await;
        d.rejoins == 1
            && d.generation != before.generation
            && diag(&a).await.members.len() == 3
            && diag(&b).await.members.len() == 3
            && d.members.len() == 3
    })
    .await;
    if !rejoined {
        for g in [&a, &b, &x] {
            eprintln!("{:?}", diag(g).await);
        }
    }
    assert!(rejoined, "x was not admitted again as a new generation");
    let after = diag(&x).await;
    assert_eq!(after.addr, before.addr, "the same address");
    assert!(!after.removed);
    let admitted_again =
        diag(&a).await.peers.iter().any(|p| {
            p.node_id == "x" && p.generation == after.generation && p.address == before.addr
        });
    assert!(admitted_again, "a admits x's new generation");

    // The grid's membership stream followed: x's new generation admitted.
    let mut seen = false;
    while let Some(Ok(change)) = changes.try_next_change() {
        seen |= change
            .admitted
            .iter()
            .any(|m| m.node_id == "x" && m.generation == after.generation);
    }
    assert!(seen, "no membership event admitting x's new generation");

    // Nothing invalidated during the cut is served: the value is the new one.
    assert_eq!(x.get::<u32>(&key).await.unwrap(), Some(2));
    // Puts through x reach the others; invalidations from x reach them.
    let mine = key_not_owned_by(&x, "a");
    x.put(&mine, 7u32, CacheOptions::new()).await.unwrap();
    assert_eq!(a.get::<u32>(&mine).await.unwrap(), Some(7));
    assert_eq!(b.get::<u32>(&mine).await.unwrap(), Some(7));
    x.invalidate_tag("t").await.unwrap();
    assert!(!a.contains_key(&key).await);
    assert!(!b.contains_key(&key).await);
    // And invalidations from the others reach x.
    assert_eq!(x.get::<u32>(&mine).await.unwrap(), Some(7));
    a.invalidate_key(&mine).await.unwrap();
    assert!(!x.contains_key(&mine).await);
    assert_eq!(diag(&x).await.rejoins, 1);

    // Leaving still works on the new generation, and nothing rejoins after.
    x.leave().await;
    converge(&[&a, &b], 2, 0).await;
    assert_eq!(diag(&x).await.rejoins, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_told_not_to_rejoin_stays_removed() {
    let ca = DevCa::new("orders").unwrap();
    let (a, b, x) = three(&ca, false).await;
    let before = diag(&x).await;
    cut_until_removed(&a, &b, &x).await;
    x.pause_network(false);
    let told = eventually(async || diag(&x).await.removed).await;
    assert!(told, "x never learnt it was removed");
    // Removed, it cannot name who holds copies: it names no one (a name
    // would promise that node drops the value within the bound), although
    // gossip reports a and b live to it again.
    assert!(eventually(async || diag(&x).await.gossip_live >= 3).await);
    match x.invalidate_key("anything").await {
        Err(CacheError::Unacknowledged { nodes }) => assert!(nodes.is_empty(), "{nodes:?}"),
        other => panic!("a removed process's invalidation: {other:?}"),
    }
    // No one sends it invalidations any more, so it keeps nothing: reads
    // go to the owners every time, and what it loads is not kept.
    assert!(
        !diag(&x).await.keeps_copies,
        "a removed process keeps copies"
    );
    a.put("shared", 1u64, CacheOptions::new()).await.unwrap();
    let hits = diag(&x).await.remote_hits;
    for _ in 0..2 {
        assert_eq!(x.get::<u64>("shared").await.unwrap(), Some(1));
    }
    let d = diag(&x).await;
    assert_eq!(
        (d.near_hits, d.remote_hits - hits),
        (0, 2),
        "the second read was served from a copy no invalidation would reach"
    );
    let loads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for _ in 0..2 {
        let counted = loads.clone();
        let v = x
            .get_or_load("mine", CacheOptions::new(), move || async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok::<_, std::io::Error>(5u64)
            })
            .await
            .unwrap();
        assert_eq!(v, 5);
    }
    assert_eq!(loads.load(std::sync::atomic::Ordering::SeqCst), 2);
    // As many checks as a rejoin would have needed several times over.
    for _ in 0..40 {
        let d = diag(&x).await;
        assert!(d.removed);
        assert_eq!((d.rejoins, d.generation), (0, before.generation));
        assert_eq!(diag(&a).await.members.len(), 2);
        tokio::time::sleep(GOSSIP).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_client_rejoins_as_a_new_generation() {
    let ca = DevCa::new("orders").unwrap();
    let a = member_builder(&ca, "a", &[]).start().await.unwrap();
    let seed = addr(&a).await;
    let b = member_builder(&ca, "b", &[seed]).start().await.unwrap();
    converge(&[&a, &b], 2, 0).await;
    let c = hydracache::Grid::client()
        .cluster("orders")
        .node_id("c")
        .seeds([seed.to_string()])
        .tls(ca.issue("c").unwrap())
        .gossip_interval(GOSSIP)
        .near_cache_capacity_bytes(8 << 20)
        .rejoin_after_removal(true)
        .connect()
        .await
        .unwrap();
    converge(&[&a, &b, &c], 2, 1).await;
    let before = diag(&c).await;
    a.put("k", 1u32, CacheOptions::new()).await.unwrap();
    assert_eq!(c.get::<u32>("k").await.unwrap(), Some(1));

    c.pause_network(true);
    let removed =
        eventually(async || diag(&a).await.clients.is_empty() && diag(&b).await.clients.is_empty())
            .await;
    assert!(removed, "the members never removed c");
    match a.put("k", 2u32, CacheOptions::new()).await {
        Ok(()) => {}
        Err(CacheError::Unacknowledged { nodes }) => assert_eq!(nodes, ["c"]),
        Err(e) => panic!("{e:?}"),
    }
    c.pause_network(false);

    let rejoined = eventually(async || {
        let d = diag(&c).await;
        d.rejoins == 1
            && d.generation != before.generation
            && d.clients == ["c"]
            && diag(&a).await.clients == ["c"]
            && diag(&b).await.clients == ["c"]
    })
    .await;
    if !rejoined {
        for g in [&a, &b, &c] {
            eprintln!("{:?}", diag(g).await);
        }
    }
    assert!(rejoined, "c was not admitted again as a new generation");
    assert_eq!(c.get::<u32>("k").await.unwrap(), Some(2));
    a.invalidate_key("k").await.unwrap();
    assert!(!c.contains_key("k").await);
}
