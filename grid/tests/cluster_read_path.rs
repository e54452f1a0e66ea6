//! One logical cache across members and clients on 127.0.0.1: a miss reads
//! through the key's owner and keeps a near copy; a put lands at the owner
//! and no node serves the old value once it returns.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hydracache::cluster::{DevCa, OwnerUnreachable, Transport};
use hydracache::{CacheError, CacheOptions, Grid};
use hydracache_protocol::{Entry, Fetch, FetchReply, Hello, Limits, Message, Put, PutReply, Role};

mod cluster_support;
use cluster_support::{addr, client, converge, member_builder, GOSSIP};

async fn member(ca: &DevCa, id: &str, seeds: &[SocketAddr]) -> Grid {
    member_with(ca, id, seeds, OwnerUnreachable::ServeLocally, GOSSIP).await
}

async fn member_with(
    ca: &DevCa,
    id: &str,
    seeds: &[SocketAddr],
    on_unreachable: OwnerUnreachable,
    gossip: Duration,
) -> Grid {
    member_builder(ca, id, seeds)
        .gossip_interval(gossip)
        .request_timeout(Duration::from_millis(300))
        .ack_timeout(Duration::from_millis(400))
        .owner_unreachable(on_unreachable)
        .start()
        .await
        .unwrap()
}

/// Three members and a client, converged.
async fn grid() -> Vec<Grid> {
    grid_of(&DevCa::new("orders").unwrap()).await
}

async fn grid_of(ca: &DevCa) -> Vec<Grid> {
    let m0 = member(ca, "m0", &[]).await;
    let seed = addr(&m0).await;
    let m1 = member(ca, "m1", &[seed]).await;
    let m2 = member(ca, "m2", &[seed]).await;
    let c0 = client(ca, "c0", &[seed]).await;
    let nodes = vec![m0, m1, m2, c0];
    converge(&nodes.iter().collect::<Vec<_>>(), 3, 1).await;
    nodes
}

async fn everyone_reads(nodes: &[Grid], key: &str, expected: Option<u64>) {
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(
            n.get::<u64>(key).await.unwrap(),
            expected,
            "node {i} reads {key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_anywhere_is_read_everywhere_and_no_node_keeps_an_old_value() {
    let _one = cluster_support::one_at_a_time().await;
    let nodes = grid().await;
    let tagged = || {
        CacheOptions::new()
            .tag("prices")
            .ttl(Duration::from_secs(60))
    };
    nodes[1].put("price:7", 70u64, tagged()).await.unwrap();
    everyone_reads(&nodes, "price:7", Some(70)).await;
    // A second put elsewhere (the client) replaces every copy.
    nodes[3].put("price:7", 71u64, tagged()).await.unwrap();
    everyone_reads(&nodes, "price:7", Some(71)).await;
    // The owner's remaining TTL and tags travel with the copies.
    for n in &nodes {
        let entry = n.get_ref("price:7").expect("a local copy after the read");
        assert!(entry.ttl_remaining().unwrap() <= Duration::from_secs(60));
        assert_eq!(entry.tags().collect::<Vec<_>>(), [b"prices".as_slice()]);
    }
    nodes[2].invalidate_tag("prices").await.unwrap();
    everyone_reads(&nodes, "price:7", None).await;
    nodes[0].put("price:7", 72u64, tagged()).await.unwrap();
    everyone_reads(&nodes, "price:7", Some(72)).await;
    nodes[3].invalidate_key("price:7").await.unwrap();
    everyone_reads(&nodes, "price:7", None).await;
    nodes[2].put("price:7", 73u64, tagged()).await.unwrap();
    everyone_reads(&nodes, "price:7", Some(73)).await;
    assert!(nodes[1].remove("price:7").await.is_ok());
    everyone_reads(&nodes, "price:7", None).await;

    let owner = nodes[0].owner_for_key("price:7").unwrap();
    let mut served = 0;
    let mut remote_hits = 0;
    for n in &nodes {
        let d = n.cluster_diagnostics().await.unwrap();
        remote_hits += d.remote_hits;
        if d.node_id == owner {
            served = d.puts_served;
        } else {
            assert_eq!(d.puts_served, 0, "only the owner stores peers' puts");
        }
        assert_eq!(d.local_fallbacks, 0);
    }
    assert!(served >= 3, "puts from other nodes landed at the owner");
    assert!(remote_hits >= 6, "reads elsewhere went through the owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_loaded_on_its_owner_is_read_everywhere_without_loading_again() {
    let _one = cluster_support::one_at_a_time().await;
    let nodes = grid().await;
    let owner_id = nodes[0].owner_for_key("report:1").unwrap();
    let mut owner = None;
    for n in &nodes {
        if n.cluster_diagnostics().await.unwrap().node_id == owner_id {
            owner = Some(n.clone());
        }
    }
    let owner = owner.expect("the owner is one of the nodes");
    let loads = Arc::new(AtomicUsize::new(0));
    let load = |loads: Arc<AtomicUsize>| {
        move || async move {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(42u64)
        }
    };
    let v: u64 = owner
        .get_or_load("report:1", CacheOptions::new(), load(loads.clone()))
        .await
        .unwrap();
    assert_eq!(v, 42);
    for n in &nodes {
        let v: u64 = n
            .get_or_load("report:1", CacheOptions::new(), load(loads.clone()))
            .await
            .unwrap();
        assert_eq!(v, 42);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1, "loaded once, on the owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puts_racing_reads_on_every_node_never_leave_an_old_value_behind() {
    let _one = cluster_support::one_at_a_time().await;
    let nodes = grid().await;
    let nodes = Arc::new(nodes);
    // Readers on every node keep fetches in flight while the puts run, so
    // replies race the invalidations that each put sends.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for i in 0..nodes.len() {
        let (nodes, stop) = (nodes.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.load(Ordering::SeqCst) && reads < 100_000 {
                let _ = nodes[i].get::<u64>("hot").await.unwrap();
                reads += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    for round in 0..30u64 {
        let writer = &nodes[(round as usize) % nodes.len()];
        writer.put("hot", round, CacheOptions::new()).await.unwrap();
        // Once the put returned, no node may serve an older value.
        for (i, n) in nodes.iter().enumerate() {
            let seen = n.get::<u64>("hot").await.unwrap();
            assert_eq!(seen, Some(round), "node {i} after put {round}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_invalidations_racing_reads_leave_no_node_serving_the_old_value() {
    let _one = cluster_support::one_at_a_time().await;
    let nodes = grid().await;
    // Every node reads the key in a loop, the invalidating node included:
    // its reads go to the owner, which may not have applied the
    // invalidation yet when the caller has.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for i in 0..nodes.len() {
        let (nodes, stop) = (nodes.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.load(Ordering::SeqCst) && reads < 100_000 {
                let _ = nodes[i].get::<u64>("hot").await.unwrap();
                reads += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    for round in 0..30u64 {
        let n = nodes.len();
        nodes[(round as usize) % n]
            .put("hot", round, CacheOptions::new())
            .await
            .unwrap();
        let caller = &nodes[(round as usize + 1) % n];
        if round % 2 == 0 {
            caller.invalidate_key("hot").await.unwrap();
        } else {
            caller.remove("hot").await.unwrap();
        }
        // Once the call returned, no node may serve the removed value.
        for (i, node) in nodes.iter().enumerate() {
            let seen = node.get::<u64>("hot").await.unwrap();
            assert_eq!(seen, None, "node {i} after invalidation {round}");
        }
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        r.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_owner_is_served_locally_or_reported_as_configured() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    // Slow gossip, so that the failure detector takes seconds to declare b
    // dead and the membership still names it during the requests below.
    let slow = Duration::from_millis(1000);
    let serve = OwnerUnreachable::ServeLocally;
    let a = member_with(&ca, "a", &[], serve, slow).await;
    let seed = addr(&a).await;
    let strict = member_with(&ca, "strict", &[seed], OwnerUnreachable::Fail, slow).await;
    let b = member_with(&ca, "b", &[seed], serve, slow).await;
    converge(&[&a, &strict, &b], 3, 0).await;
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| a.owner_for_key(k).as_deref() == Some("b"))
        .unwrap();
    // b's endpoint goes away; the membership still names it for a while
    // (the failure detector and raft take longer than these requests).
    drop(b);
    // Built to report it: a typed error naming the key, nothing stored.
    match strict.get::<u64>(&key).await {
        Err(CacheError::OwnerUnreachable { key: k }) => assert_eq!(k, key),
        other => panic!("{other:?}"),
    }
    match strict.put(&key, 6u64, CacheOptions::new()).await {
        Err(CacheError::OwnerUnreachable { .. }) => {}
        other => panic!("{other:?}"),
    }
    assert!(strict.get_ref(&key).is_none());
    // Reported, not served locally: no fallback is counted.
    assert_eq!(
        strict.cluster_diagnostics().await.unwrap().local_fallbacks,
        0
    );
    // The default: the read misses, the put is kept here, both counted.
    assert_eq!(a.get::<u64>(&key).await.unwrap(), None);
    // Stored here; b cannot be told (it is named if it is still gossiped live).
    match a.put(&key, 5u64, CacheOptions::new()).await {
        Ok(()) => {}
        Err(CacheError::Unacknowledged { nodes }) => assert_eq!(nodes, ["b"]),
        Err(e) => panic!("{e:?}"),
    }
    assert_eq!(a.get::<u64>(&key).await.unwrap(), Some(5));
    assert_eq!(a.cluster_diagnostics().await.unwrap().local_fallbacks, 2);
    assert_eq!(
        a.owner_for_key(&key).as_deref(),
        Some("b"),
        "the view still names b"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_typed_view_reads_through_the_owner() {
    let _one = cluster_support::one_at_a_time().await;
    let nodes = grid().await;
    let prices = |n: &Grid| n.typed::<u64>("price");
    prices(&nodes[1])
        .put("9", 90, CacheOptions::new())
        .await
        .unwrap();
    for (i, n) in nodes.iter().enumerate() {
        assert_eq!(prices(n).get("9").await.unwrap(), Some(90), "node {i}");
        assert!(n.get_ref("price:9").is_some(), "node {i} keeps a copy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_one_key_on_one_node_send_one_fetch() {
    let _one = cluster_support::one_at_a_time().await;
    let nodes = grid().await;
    let client = &nodes[3];
    nodes[0]
        .put("hot", 5u64, CacheOptions::new())
        .await
        .unwrap();
    let before = client.cluster_diagnostics().await.unwrap().remote_hits;
    let reads = futures_util::future::join_all((0..50).map(|_| client.get::<u64>("hot"))).await;
    assert!(reads.into_iter().all(|r| r.unwrap() == Some(5)));
    let after = client.cluster_diagnostics().await.unwrap().remote_hits;
    assert_eq!(after - before, 1, "one fetch for 50 concurrent misses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_through_the_owner_counts_one_miss_and_no_local_hit() {
    let _one = cluster_support::one_at_a_time().await;
    let nodes = grid().await;
    let client = &nodes[3];
    nodes[0]
        .put("counted", 3u64, CacheOptions::new())
        .await
        .unwrap();
    let before = client.stats();
    assert_eq!(client.get::<u64>("counted").await.unwrap(), Some(3));
    let after = client.stats();
    assert_eq!(
        (after.hits - before.hits, after.misses - before.misses),
        (0, 1),
        "a remote read is a local miss and a remote hit"
    );
    // The near copy then serves locally: a hit.
    assert_eq!(client.get::<u64>("counted").await.unwrap(), Some(3));
    assert_eq!(client.stats().hits - after.hits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_path_counter_matches_what_happened() {
    let _one = cluster_support::one_at_a_time().await;
    let nodes = grid().await;
    let key = "counted:2";
    let owner_id = nodes[0].owner_for_key(key).unwrap();
    let mut at = None;
    for (i, n) in nodes.iter().enumerate() {
        if n.cluster_diagnostics().await.unwrap().node_id == owner_id {
            at = Some(i);
        }
    }
    let owner = &nodes[at.expect("the owner is one of the nodes")];
    let other = &nodes[(0..3).find(|i| Some(*i) != at).unwrap()];
    let client = &nodes[3];
    let runs = Arc::new(AtomicUsize::new(0));
    let load = |runs: &Arc<AtomicUsize>| {
        let runs = runs.clone();
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(9u64)
        }
    };
    // (hits, misses, loads, remote hits, remote misses) of a node.
    let counters = async |n: &Grid| {
        let (s, d) = (n.stats(), n.cluster_diagnostics().await.unwrap());
        [s.hits, s.misses, s.loads, d.remote_hits, d.remote_misses]
    };
    let delta =
        |now: [u64; 5], then: [u64; 5]| -> [u64; 5] { std::array::from_fn(|i| now[i] - then[i]) };
    let (o0, x0, c0) = (
        counters(owner).await,
        counters(other).await,
        counters(client).await,
    );

    // A miss on a member that does not own the key asks the owner, which
    // has nothing: a local miss and a remote miss.
    assert_eq!(other.get::<u64>(key).await.unwrap(), None);
    // The owner's own miss stays local. Its store counts every read it
    // serves, the other node's fetch included.
    assert_eq!(owner.get::<u64>(key).await.unwrap(), None);
    assert_eq!(delta(counters(other).await, x0), [0, 1, 0, 0, 1]);
    assert_eq!(delta(counters(owner).await, o0), [0, 2, 0, 0, 0]);

    // get_or_load on that member: the owner grants it the lease (a remote
    // miss) and the loader runs there (a load).
    let x1 = counters(other).await;
    assert_eq!(
        other
            .get_or_load(key, CacheOptions::new(), load(&runs))
            .await
            .unwrap(),
        9
    );
    assert_eq!(delta(counters(other).await, x1), [0, 1, 1, 0, 1]);

    // get_or_load on the client: the owner has the value (a remote hit),
    // no loader runs, and the near copy then serves a local hit.
    assert_eq!(
        client
            .get_or_load(key, CacheOptions::new(), load(&runs))
            .await
            .unwrap(),
        9
    );
    assert_eq!(delta(counters(client).await, c0), [0, 1, 0, 1, 0]);
    assert_eq!(client.get::<u64>(key).await.unwrap(), Some(9));
    assert_eq!(delta(counters(client).await, c0), [1, 1, 0, 1, 0]);

    // The owner stored the holder's fill: a local hit, nothing remote.
    let o1 = counters(owner).await;
    assert_eq!(
        owner
            .get_or_load(key, CacheOptions::new(), load(&runs))
            .await
            .unwrap(),
        9
    );
    assert_eq!(delta(counters(owner).await, o1), [1, 0, 0, 0, 0]);
    // (The owner's store also counted the client's load: a hit if the
    // holder's fill had landed, else a miss whose caller joined the lease.)
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one loader run in the grid");
    let loads: u64 = nodes.iter().map(|n| n.stats().loads).sum();
    assert_eq!(loads, 1, "and one load counted in the grid");

    // What the lease holder stored for the owner, and what the client kept
    // from the owner's reply, are near copies; the owner's entry is not.
    let near = |n: &Grid| n.stats().near_hits;
    let (o2, x2, c2) = (near(owner), near(other), near(client));
    for n in [owner, other, client] {
        assert_eq!(n.get::<u64>(key).await.unwrap(), Some(9));
    }
    assert_eq!(
        [near(owner) - o2, near(other) - x2, near(client) - c2],
        [0, 1, 1]
    );
}

/// The index of `key`'s owner among `nodes`, and of another member.
async fn owner_and_other(nodes: &[Grid], key: &str) -> (usize, usize) {
    let owner_id = nodes[0].owner_for_key(key).unwrap();
    let mut at = None;
    for (i, n) in nodes.iter().enumerate() {
        if n.cluster_diagnostics().await.unwrap().node_id == owner_id {
            at = Some(i);
        }
    }
    let at = at.expect("the owner is one of the nodes");
    (at, (0..3).find(|i| *i != at).unwrap())
}

/// Another process of the cluster: a valid member certificate, speaking
/// the protocol directly, outside the membership.
fn hostile(ca: &DevCa) -> Transport {
    Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue("rogue").unwrap(),
        Hello::new("orders", ("rogue", 1), Role::Member),
        Limits::default(),
    )
    .unwrap()
}

/// Bytes that are no archived `bool` (an archived bool is one byte, 0 or
/// 1; these end in 0xFF).
fn not_a_bool() -> Entry {
    Entry::new(
        hydracache_storage::encode(&u64::MAX)
            .unwrap()
            .to_vec()
            .into(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_bytes_that_fail_validation_are_a_typed_error_and_no_copy_is_kept() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let nodes = grid_of(&ca).await;
    let key = "hostile:1";
    let (at, other) = owner_and_other(&nodes, key).await;
    let (owner, client) = (&nodes[at], &nodes[3]);
    let owner_addr = addr(owner).await;
    let epoch = owner.cluster_diagnostics().await.unwrap().epoch;
    // A peer stores bytes at the owner that no reader's type accepts. The
    // owner cannot know the type: it keeps them as bytes of unknown shape
    // (type tag 0), which every typed read validates.
    let rogue = hostile(&ca);
    let (_, reply) = rogue
        .request(
            owner_addr,
            Message::Put(Put {
                epoch,
                key: key.as_bytes().to_vec().into(),
                entry: not_a_bool(),
            }),
        )
        .await
        .unwrap();
    assert!(
        matches!(reply, Message::PutReply(PutReply::Stored { .. })),
        "{reply:?}"
    );
    assert_eq!(owner.get_ref(key).unwrap().type_tag(), 0);
    assert!(matches!(
        owner.get::<bool>(key).await,
        Err(CacheError::Store(_))
    ));
    // Read through the owner elsewhere: the reply fails validation, the
    // caller gets a typed error and nothing is kept.
    for n in [&nodes[other], client] {
        match n.get::<bool>(key).await {
            Err(CacheError::Store(_)) => {}
            got => panic!("expected a typed decode error, got {got:?}"),
        }
        assert!(n.get_ref(key).is_none(), "no near copy of bad bytes");
    }
    // The hostile connection stays usable, and so does the grid: a real
    // put replaces the bytes, and every node reads it.
    let (_, reply) = rogue
        .request(
            owner_addr,
            Message::Fetch(Fetch {
                epoch,
                key: key.as_bytes().to_vec().into(),
            }),
        )
        .await
        .unwrap();
    assert!(
        matches!(reply, Message::FetchReply(FetchReply::Hit(_))),
        "{reply:?}"
    );
    client.put(key, true, CacheOptions::new()).await.unwrap();
    for n in &nodes {
        assert_eq!(n.get::<bool>(key).await.unwrap(), Some(true));
    }
    // A put stored at the owner for another node carries type tag 0 there
    // too (the owner never trusts a peer's bytes as its own type), and the
    // owner's typed read of it validates and succeeds.
    let stored = owner.get_ref(key).unwrap();
    assert_eq!(stored.type_tag(), 0);
    assert!(*stored.archived::<bool>().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_whose_bytes_fail_validation_reaches_waiters_as_a_typed_error_and_no_copy_is_kept() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let nodes = grid_of(&ca).await;
    let key = "hostile:2";
    let (at, other) = owner_and_other(&nodes, key).await;
    let holder = (0..3).find(|i| *i != at && *i != other).unwrap();
    let owner = nodes[at].clone();
    // An admitted member holds the lease (only an admitted process may) and
    // its loader's bytes are no bool: it loads a `u64::MAX`, whose archive
    // ends in 0xFF, while the others ask for a bool.
    let granted = owner.cluster_diagnostics().await.unwrap().leases_granted;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let held = {
        let (n, gate) = (nodes[holder].clone(), gate.clone());
        tokio::spawn(async move {
            n.get_or_load::<u64, _, _, _>(key, CacheOptions::new(), move || async move {
                let _open = gate.acquire().await.unwrap();
                Ok::<_, std::io::Error>(u64::MAX)
            })
            .await
        })
    };
    assert!(
        cluster_support::eventually(async || {
            owner.cluster_diagnostics().await.unwrap().leases_granted > granted
        })
        .await,
        "the holder is granted the lease"
    );
    // Callers on another member and the client join its load.
    let joined = owner.cluster_diagnostics().await.unwrap().leases_joined;
    let runs = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = [nodes[other].clone(), nodes[3].clone()]
        .into_iter()
        .map(|n| {
            let runs = runs.clone();
            tokio::spawn(async move {
                n.get_or_load::<bool, _, _, _>(key, CacheOptions::new(), move || async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>(true)
                })
                .await
            })
        })
        .collect();
    assert!(
        cluster_support::eventually(async || {
            owner.cluster_diagnostics().await.unwrap().leases_joined >= joined + 2
        })
        .await,
        "both nodes join the lease"
    );
    // The fill's bytes are no bool: each waiter gets a typed error.
    gate.add_permits(1);
    assert_eq!(held.await.unwrap().unwrap(), u64::MAX);
    for w in waiters {
        match w.await.unwrap() {
            Err(CacheError::Store(_)) => {}
            got => panic!("expected a typed decode error, got {got:?}"),
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "no one else loaded");
    for n in [&nodes[other], &nodes[3]] {
        assert!(n.get_ref(key).is_none(), "no near copy of bad bytes");
    }
    // The owner kept them as bytes of unknown shape: its typed read
    // validates them and fails too.
    assert!(matches!(
        owner.get::<bool>(key).await,
        Err(CacheError::Store(_))
    ));
    // After an invalidation the key loads again, once.
    nodes[3].invalidate_key(key).await.unwrap();
    let load = || async { Ok::<_, std::io::Error>(true) };
    assert!(nodes[other]
        .get_or_load(key, CacheOptions::new(), load)
        .await
        .unwrap());
    // (The holder's fill reaches the owner one way, after its caller has
    // the value: a read elsewhere may miss until it lands.)
    for n in &nodes {
        assert!(
            cluster_support::eventually(async || n.get::<bool>(key).await.unwrap() == Some(true))
                .await
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_store_fills_with_near_copies_keeps_its_owned_entries() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    // m0 has a 1 MiB store, of which copies may take a quarter; m1 holds
    // its own keys in 8 MiB.
    let sized = |id: &str, seeds: &[SocketAddr], bytes: usize| {
        member_builder(&ca, id, seeds)
            .request_timeout(Duration::from_secs(2))
            .ack_timeout(Duration::from_secs(2))
            .cache(|c| c.max_capacity_bytes(bytes))
            .start()
    };
    let m0 = sized("m0", &[], 1 << 20).await.unwrap();
    let seed = addr(&m0).await;
    let m1 = sized("m1", &[seed], 8 << 20).await.unwrap();
    converge(&[&m0, &m1], 2, 0).await;
    let id0 = m0.cluster_diagnostics().await.unwrap().node_id;
    let keys = |owned_by_m0: bool, n: usize| -> Vec<String> {
        (0..)
            .map(|i| format!("k:{i}"))
            .filter(|k| (m0.owner_for_key(k).unwrap() == id0) == owned_by_m0)
            .take(n)
            .collect()
    };
    let value = "x".repeat(1000);
    // m0 owns about 400 KiB of entries, less than the store minus the
    // copies' share.
    let owned = keys(true, 400);
    for k in &owned {
        m0.put(k, value.clone(), CacheOptions::new()).await.unwrap();
    }
    // m0 then reads 2 MiB of m1's keys: near copies, twice its store.
    let theirs = keys(false, 2000);
    for k in &theirs {
        m1.put(k, value.clone(), CacheOptions::new()).await.unwrap();
    }
    for k in &theirs {
        assert_eq!(m0.get::<String>(k).await.unwrap().as_deref(), Some(&*value));
    }
    // Every owned entry is still there, read locally.
    let lost = owned.iter().filter(|k| m0.get_ref(k).is_none()).count();
    assert_eq!(lost, 0, "owned entries crowded out by copies");
    assert_eq!(m0.stats().evicted_capacity, 0);
    // The latest copies are kept (the hot ones serve locally); the oldest
    // made room for them.
    assert!(m0.get_ref(theirs.last().unwrap()).is_some());
    assert!(m0.get_ref(&theirs[0]).is_none());
    let d = m0.diagnostics();
    assert!(d.bytes <= d.capacity_bytes, "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_key_is_served_locally_on_every_node_and_a_put_reaches_them_all() {
    let _one = cluster_support::one_at_a_time().await;
    let nodes = grid().await;
    nodes[0]
        .put("hot:1", 1u64, CacheOptions::new())
        .await
        .unwrap();
    // The first read on each node may go to the owner; it keeps a copy.
    everyone_reads(&nodes, "hot:1", Some(1)).await;
    let before: Vec<_> = futures_util::future::join_all(
        nodes
            .iter()
            .map(|n| async move { (n.stats(), n.cluster_diagnostics().await.unwrap()) }),
    )
    .await;
    // Then every read is a local hit: nothing goes to the owner.
    for _ in 0..100 {
        everyone_reads(&nodes, "hot:1", Some(1)).await;
    }
    let owner_id = nodes[0].owner_for_key("hot:1").unwrap();
    for (n, (stats, diag)) in nodes.iter().zip(&before) {
        let d = n.cluster_diagnostics().await.unwrap();
        let now = n.stats();
        assert_eq!(now.hits - stats.hits, 100, "{}", d.node_id);
        assert_eq!(
            (d.remote_hits, d.remote_misses),
            (diag.remote_hits, diag.remote_misses),
            "{}",
            d.node_id
        );
        // The owner's hits are on its own entry; every other node's, the
        // client's included, are on its near copy.
        let near = if d.node_id == owner_id { 0 } else { 100 };
        assert_eq!(now.near_hits - stats.near_hits, near, "{}", d.node_id);
        assert_eq!(d.near_hits, now.near_hits, "{}", d.node_id);
    }
    // A put anywhere invalidates every copy before it returns.
    nodes[3]
        .put("hot:1", 2u64, CacheOptions::new())
        .await
        .unwrap();
    everyone_reads(&nodes, "hot:1", Some(2)).await;
}
