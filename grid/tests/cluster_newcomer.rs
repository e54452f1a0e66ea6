//! A process that has just started keeps no copies until every admitted
//! process that sends it invalidations has shown, in its own word, that it
//! does (the copy gate, docs/consistency.md); a test hook refuses one
//! member's marks (feature `test-hooks`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hydracache::cluster::{DevCa, NodeBuilder};
use hydracache::{CacheOptions, Grid, OwnerLoad, OwnerLoadRequest, RejectedArguments};

mod cluster_support;
use cluster_support::{addr, converge, member_builder, GOSSIP};

/// A member with short request and acknowledgement timeouts.
fn quick_member(ca: &DevCa, id: &str, seeds: &[std::net::SocketAddr]) -> NodeBuilder {
    member_builder(ca, id, seeds)
        .request_timeout(Duration::from_millis(300))
        .ack_timeout(Duration::from_millis(400))
}

async fn member(ca: &DevCa, id: &str, seeds: &[std::net::SocketAddr]) -> Grid {
    quick_member(ca, id, seeds).start().await.unwrap()
}

/// A process that has just started keeps no copy until every admitted
/// process that sends it invalidations has told it its own mark: one that
/// does not (here m2, whose marks the newcomer refuses) could invalidate a
/// copy without naming the newcomer. Reads are still answered by the owner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_keeps_no_copy_until_every_sender_has_shown_it_sends_to_it() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "m0", &[]).await;
    let seed = addr(&m0).await;
    let m1 = member(&ca, "m1", &[seed]).await;
    let m2 = member(&ca, "m2", &[seed]).await;
    converge(&[&m0, &m1, &m2], 3, 0).await;
    m0.put("k", 7u64, CacheOptions::new()).await.unwrap();

    let c = Grid::client()
        .cluster("orders")
        .node_id("c0")
        .seeds([seed.to_string()])
        .tls(ca.issue("c0").unwrap())
        .gossip_interval(GOSSIP)
        .near_cache_capacity_bytes(8 << 20)
        .start()
        .await
        .unwrap();
    // Before any member has heard of it: m2's word never arrives.
    c.cut_invalidations_from("m2", true);
    assert!(
        cluster_support::eventually(async || {
            let d = c.cluster_diagnostics().await.unwrap();
            d.members.len() == 3 && d.clients == ["c0"]
        })
        .await,
        "c0 admitted"
    );
    // Time for m0's and m1's marks to arrive: c0 still waits for m2's.
    tokio::time::sleep(GOSSIP * 10).await;
    for _ in 0..3 {
        assert_eq!(c.get::<u64>("k").await.unwrap(), Some(7));
    }
    // A load under the owner's lease: the owner keeps the value, c none.
    let loads = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let counted = loads.clone();
        let v = c
            .get_or_load("loaded", CacheOptions::new(), move || async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(9u64)
            })
            .await
            .unwrap();
        assert_eq!(v, 9);
    }
    assert_eq!(
        loads.load(Ordering::SeqCst),
        1,
        "the owner kept the first load"
    );
    let d = c.cluster_diagnostics().await.unwrap();
    assert!(!d.keeps_copies);
    assert_eq!(
        (d.near_hits, d.remote_hits),
        (0, 4),
        "every read went to the owner"
    );

    // m2's mark gets through: from then on c0 keeps what it reads.
    c.cut_invalidations_from("m2", false);
    assert!(
        cluster_support::eventually(async || c.cluster_diagnostics().await.unwrap().keeps_copies)
            .await,
        "c0 keeps copies once m2 told it its mark"
    );
    for _ in 0..3 {
        assert_eq!(c.get::<u64>("k").await.unwrap(), Some(7));
    }
    let d = c.cluster_diagnostics().await.unwrap();
    assert_eq!((d.near_hits, d.remote_hits), (2, 5), "one read kept a copy");
}

/// A process that announced it leaves is sent no more invalidations, and it
/// may take a while to be removed (here the Raft leader is paused, so it is
/// not removed at all until `leave()`'s bound): from the moment `leave()`
/// starts it keeps nothing it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_member_keeps_no_copy_while_it_waits_to_be_removed() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "m0", &[]).await;
    let seed = addr(&m0).await;
    let m1 = member(&ca, "m1", &[seed]).await;
    let m2 = member(&ca, "m2", &[seed]).await;
    converge(&[&m0, &m1, &m2], 3, 0).await;
    let leader = m0.cluster_diagnostics().await.unwrap().raft_leader.unwrap();
    let mut leader_grid = None;
    let mut others = Vec::new();
    for g in [&m0, &m1, &m2] {
        let id = g.cluster_diagnostics().await.unwrap().node_id;
        if id == leader {
            leader_grid = Some(g);
        } else {
            others.push((g, id));
        }
    }
    let leader_grid = leader_grid.expect("the leader is one of the three");
    let ((owner, owner_id), (leaver, _)) = (others[0].clone(), others[1].clone());
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| owner.owner_for_key(k).as_deref() == Some(owner_id.as_str()))
        .expect("a key the owner owns");
    owner.put(&key, 3u64, CacheOptions::new()).await.unwrap();

    leader_grid.pause_network(true);
    let leaving = tokio::spawn({
        let leaver = leaver.clone();
        async move { leaver.leave().await }
    });
    assert!(
        cluster_support::eventually(async || !leaver
            .cluster_diagnostics()
            .await
            .unwrap()
            .keeps_copies)
        .await,
        "leave() shut the copy gate"
    );
    let near = leaver.cluster_diagnostics().await.unwrap().near_hits;
    for _ in 0..2 {
        assert_eq!(leaver.get::<u64>(&key).await.unwrap(), Some(3));
    }
    assert!(
        !leaver.contains_key(&key).await,
        "kept a copy while no one sends it invalidations"
    );
    assert_eq!(leaver.cluster_diagnostics().await.unwrap().near_hits, near);
    assert!(!leaving.is_finished(), "still waiting to be removed");
    leader_grid.pause_network(false);
    leaving.await.unwrap();
}

/// A newcomer whose gate is shut that runs a named loader itself because the
/// owner does not answer (`ServeLocally`) answers with the value but keeps
/// nothing: an invalidation from a sender that does not know it yet would
/// not reach the copy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_keeps_no_named_load_it_ran_for_want_of_an_owner() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let with_loader = |id: &str, seeds: &[std::net::SocketAddr]| {
        let runs = runs.clone();
        quick_member(&ca, id, seeds).loader("n", move |_req: OwnerLoadRequest| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, RejectedArguments>(5u64)
            }
        })
    };
    let m0 = with_loader("m0", &[]).start().await.unwrap();
    let seed = addr(&m0).await;
    let m1 = with_loader("m1", &[seed]).start().await.unwrap();
    let m2 = with_loader("m2", &[seed]).start().await.unwrap();
    converge(&[&m0, &m1, &m2], 3, 0).await;
    let m3 = with_loader("m3", &[seed]).start().await.unwrap();
    // m2's word never arrives: m3's gate stays shut.
    m3.cut_invalidations_from("m2", true);
    assert!(
        cluster_support::eventually(async || {
            m3.cluster_diagnostics().await.unwrap().members.len() == 4
        })
        .await,
        "m3 admitted"
    );
    assert!(!m3.cluster_diagnostics().await.unwrap().keeps_copies);
    let key = (0..1000)
        .map(|i| format!("k{i}"))
        .find(|k| m3.owner_for_key(k).as_deref() == Some("m1"))
        .expect("a key m1 owns");
    let fallbacks = m3.cluster_diagnostics().await.unwrap().local_fallbacks;
    m1.pause_network(true);
    let v = m3
        .get_or_load_on_owner::<u64>(&key, OwnerLoad::new("n"), CacheOptions::new())
        .await
        .unwrap();
    assert_eq!(v, 5);
    assert!(
        m3.cluster_diagnostics().await.unwrap().local_fallbacks > fallbacks,
        "the owner did not answer: m3 ran the loader itself"
    );
    assert!(
        !m3.contains_key(&key).await,
        "kept a value loaded for want of an owner behind a shut gate"
    );
    m1.pause_network(false);
}
