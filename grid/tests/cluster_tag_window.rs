//! A tag invalidation reaches every process at once, so a node that applied
//! it may miss a key of that tag and fetch it from an owner that has not
//! applied it yet. Until the origin shows the fan-out ended, such a node
//! keeps nothing it fetches (docs/consistency.md, "settling"). Test hooks
//! hold the fan-out open and keep the owner from applying it (feature
//! `test-hooks`).

use std::time::Duration;

use hydracache::cluster::DevCa;
use hydracache::{CacheError, CacheOptions, Grid};

mod cluster_support;
use cluster_support::{addr, converge, eventually, member_builder};

async fn member(ca: &DevCa, id: &str, seeds: &[std::net::SocketAddr]) -> Grid {
    member_builder(ca, id, seeds)
        .ack_timeout(Duration::from_secs(3))
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_while_a_tag_invalidation_is_in_flight_keeps_no_copy_from_an_owner_behind() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let a = member(&ca, "a", &[]).await;
    let seed = addr(&a).await;
    let o = member(&ca, "o", &[seed]).await;
    let r = member(&ca, "r", &[seed]).await;
    let p = member(&ca, "p", &[seed]).await;
    converge(&[&a, &o, &r, &p], 4, 0).await;
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| a.owner_for_key(k).as_deref() == Some("o"))
        .expect("a key o owns");
    a.put(&key, 1u64, CacheOptions::new().tag("t"))
        .await
        .unwrap();
    assert_eq!(r.get::<u64>(&key).await.unwrap(), Some(1));
    assert!(r.contains_key(&key).await, "r keeps a near copy");

    // The owner does not apply a's invalidations, and p does not answer:
    // a's fan-out stays open for its acknowledgement timeout.
    o.cut_invalidations_from("a", true);
    p.pause_network(true);
    let invalidating = tokio::spawn({
        let a = a.clone();
        async move { a.invalidate_tag("t").await }
    });
    assert!(
        eventually(async || !r.contains_key(&key).await).await,
        "r applied the tag invalidation"
    );
    // r misses and the owner, behind, answers the old value: a read may
    // return it while the invalidation is in flight, but r keeps nothing.
    let near_before = r.cluster_diagnostics().await.unwrap().near_hits;
    for _ in 0..3 {
        assert_eq!(r.get::<u64>(&key).await.unwrap(), Some(1));
    }
    assert!(
        !r.contains_key(&key).await,
        "kept a copy the owner answered before it applied the invalidation"
    );
    assert_eq!(
        r.cluster_diagnostics().await.unwrap().near_hits,
        near_before
    );
    assert!(!invalidating.is_finished(), "the fan-out was still open");
    match invalidating.await.unwrap() {
        Err(CacheError::Unacknowledged { nodes }) => {
            assert!(
                nodes.contains(&"o".to_string()) && nodes.contains(&"p".to_string()),
                "{nodes:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    p.pause_network(false);
    o.cut_invalidations_from("a", false);
}
