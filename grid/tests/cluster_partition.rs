//! Partitions simulated with the `test-hooks` feature: a node that cannot be
//! reached is named in a typed error, and a node that lost invalidations
//! drops what it cannot prove fresh once it hears of them.

use std::net::SocketAddr;
use std::time::Duration;

use hydracache::cluster::{DevCa, InvalidationMode};
use hydracache::{CacheError, CacheOptions, Grid};

mod cluster_support;
use cluster_support::{addr, client, converge, eventually, member_builder, GOSSIP};

async fn member(ca: &DevCa, id: &str, seeds: &[SocketAddr]) -> Grid {
    member_builder(ca, id, seeds)
        .ack_timeout(Duration::from_millis(500))
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_is_named_in_a_typed_error() {
    let ca = DevCa::new("orders").unwrap();
    let a = member(&ca, "a", &[]).await;
    let seed = addr(&a).await;
    let b = member(&ca, "b", &[seed]).await;
    let c = member(&ca, "c", &[seed]).await;
    converge(&[&a, &b, &c], 3, 0).await;
    // c's endpoint goes away abruptly; gossip still believes it live for a while.
    let c_addr = addr(&c).await;
    drop(c);
    a.disconnect_peer(c_addr);
    // Until the failure detector notices, an acknowledged invalidation names c.
    match a.invalidate_tag("t").await {
        Err(CacheError::Unacknowledged { nodes }) => assert_eq!(nodes, ["c"]),
        // The detector may already have declared c dead: then nobody is missing.
        Ok(()) => {}
        Err(e) => panic!("{e:?}"),
    }
    // Send-only mode returns after sending, whoever answers.
    let d = Grid::member()
        .cluster("orders")
        .node_id("d")
        .seeds([seed.to_string()])
        .tls(ca.issue("d").unwrap())
        .gossip_interval(GOSSIP)
        .invalidation_mode(InvalidationMode::Sent)
        .start()
        .await
        .unwrap();
    d.invalidate_key("k").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_invalidations_drops_what_it_cannot_prove() {
    let ca = DevCa::new("orders").unwrap();
    let a = member(&ca, "a", &[]).await;
    let seed = addr(&a).await;
    let b = member(&ca, "b", &[seed]).await;
    let x = member(&ca, "x", &[seed]).await;
    converge(&[&a, &b, &x], 3, 0).await;
    a.put("k1", 1u8, CacheOptions::new().tag("t1"))
        .await
        .unwrap();
    a.put("k2", 2u8, CacheOptions::new().tag("t2"))
        .await
        .unwrap();
    // Every node holds both (owned, or a near copy).
    for n in [&a, &b, &x] {
        assert_eq!(n.get::<u8>("k1").await.unwrap(), Some(1));
        assert_eq!(n.get::<u8>("k2").await.unwrap(), Some(2));
    }
    // x loses every invalidation for a while: the caller is told.
    x.simulate_lost_invalidations(true);
    match a.invalidate_tag("t1").await {
        Err(CacheError::Unacknowledged { nodes }) => assert_eq!(nodes, ["x"]),
        other => panic!("{other:?}"),
    }
    assert!(!b.contains_key("k1").await);
    x.simulate_lost_invalidations(false);
    // a's gossiped high-water mark tells x it missed one: x drops what it
    // cannot prove fresh (k1 and, since it cannot tell, k2 too).
    assert!(
        eventually(async || !x.contains_key("k1").await).await,
        "x still serves the invalidated k1"
    );
    assert!(!x.contains_key("k2").await);
    assert!(
        b.contains_key("k2").await,
        "nodes that did not miss anything keep their entries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_missed_another_client_s_invalidation_learns_its_mark_through_a_member() {
    let ca = DevCa::new("orders").unwrap();
    let m = member(&ca, "m", &[]).await;
    let seed = addr(&m).await;
    let c1 = client(&ca, "c1", &[seed]).await;
    let c2 = client(&ca, "c2", &[seed]).await;
    converge(&[&m, &c1, &c2], 1, 2).await;
    m.put("k", 1u8, CacheOptions::new()).await.unwrap();
    assert_eq!(c2.get::<u8>("k").await.unwrap(), Some(1));
    assert!(c2.contains_key("k").await, "a near copy on c2");
    // c2 loses c1's invalidation, which reaches it only through m's relay;
    // then c1 goes quiet.
    c2.simulate_lost_invalidations(true);
    assert!(c1.invalidate_key("k").await.is_err(), "c2 is named");
    c2.simulate_lost_invalidations(false);
    // c1's mark, relayed by m, opens the hole that outlives its bound.
    assert!(
        eventually(async || !c2.contains_key("k").await).await,
        "c2 still serves the invalidated k"
    );
    assert!(!m.contains_key("k").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_the_origin_cannot_reach_while_gossip_flows_drops_what_it_cannot_prove() {
    // Holes and unconfirmed gossip hints are loss after 1 s.
    let ca = DevCa::new("orders").unwrap();
    let start = async |id: &str, seeds: &[SocketAddr]| {
        member_builder(&ca, id, seeds)
            .ack_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_millis(500))
            .start()
            .await
            .unwrap()
    };
    let o = start("o", &[]).await;
    let seed = addr(&o).await;
    let m = start("m", &[seed]).await;
    let r = start("r", &[seed]).await;
    converge(&[&o, &m, &r], 3, 0).await;
    o.put("k", 1u8, CacheOptions::new()).await.unwrap();
    for n in [&o, &m, &r] {
        assert_eq!(n.get::<u8>("k").await.unwrap(), Some(1));
    }
    assert!(r.contains_key("k").await);
    // o cannot reach r (neither its invalidations nor its own mark get
    // through), while both still gossip, so r never takes itself for cut
    // off.
    r.cut_invalidations_from("o", true);
    match o.invalidate_key("k").await {
        Err(CacheError::Unacknowledged { nodes }) => assert_eq!(nodes, ["r"]),
        other => panic!("{other:?}"),
    }
    assert!(!m.contains_key("k").await);
    // o's gossiped mark is only a hint; o's own word never confirms it to
    // r, so r drops what it cannot prove fresh once the hole bound passes.
    assert!(
        eventually(async || !r.contains_key("k").await).await,
        "r still serves the invalidated k"
    );
}
