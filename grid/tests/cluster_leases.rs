//! Cluster-wide single flight on 127.0.0.1: a `get_or_load` miss anywhere in
//! the grid is arbitrated by the key's owner, which grants one lease and
//! answers every other node from the holder's fill. No timing assertions:
//! loaders are held on gates until the test has seen every caller join.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hydracache::cluster::{ClusterDiagnostics, DevCa, Transport};
use hydracache::{CacheError, CacheOptions, Grid};
use hydracache_protocol::{Entry, Fill, Hello, Limits, Load, LoadReply, Message, Role};
use tokio::sync::Semaphore;

mod cluster_support;
use cluster_support::{addr, converge, eventually, member_builder, GOSSIP};

/// The lease timeout of the tests where a holder goes silent.
const LEASE: Duration = Duration::from_millis(1500);
/// The lease timeout of the tests whose loaders are held while the
/// membership changes (longer than any change takes here).
const LONG_LEASE: Duration = Duration::from_secs(60);

async fn member(ca: &DevCa, id: &str, seeds: &[SocketAddr], lease: Duration) -> Grid {
    member_builder(ca, id, seeds)
        .request_timeout(Duration::from_secs(2))
        // Generous: the machine these run on may be busy.
        .ack_timeout(Duration::from_secs(5))
        .lease_timeout(lease)
        .start()
        .await
        .unwrap()
}

async fn client(ca: &DevCa, id: &str, seeds: &[SocketAddr], lease: Duration) -> Grid {
    Grid::client()
        .cluster("orders")
        .node_id(id)
        .seeds(seeds.iter().map(|s| s.to_string()))
        .tls(ca.issue(id).unwrap())
        .gossip_interval(GOSSIP)
        .request_timeout(Duration::from_secs(2))
        .lease_timeout(lease)
        .near_cache_capacity_bytes(8 << 20)
        .connect_timeout(Duration::from_secs(120))
        .connect()
        .await
        .unwrap()
}

/// Five members and a client (the last node), converged.
async fn grid(ca: &DevCa) -> Vec<Grid> {
    grid_with(ca, LEASE).await
}

async fn grid_with(ca: &DevCa, lease: Duration) -> Vec<Grid> {
    let m0 = member(ca, "m0", &[], lease).await;
    let seed = addr(&m0).await;
    let mut nodes = vec![m0];
    for id in ["m1", "m2", "m3", "m4"] {
        nodes.push(member(ca, id, &[seed], lease).await);
    }
    nodes.push(client(ca, "c0", &[seed], lease).await);
    converge(&nodes.iter().collect::<Vec<_>>(), 5, 1).await;
    nodes
}

async fn diag(g: &Grid) -> ClusterDiagnostics {
    g.cluster_diagnostics().await.unwrap()
}

/// The node that owns `key`, and the index of another member.
async fn owner_of(nodes: &[Grid], key: &str) -> (usize, usize) {
    let owner = nodes[0].owner_for_key(key).unwrap();
    let mut at = None;
    for (i, n) in nodes.iter().enumerate() {
        if diag(n).await.node_id == owner {
            at = Some(i);
        }
    }
    let at = at.expect("the owner is one of the nodes");
    let other = (0..5).find(|i| *i != at).unwrap();
    (at, other)
}

/// A loader that counts its runs, waits for a permit of `gate`, then
/// returns `value`.
fn gated(
    runs: &Arc<AtomicUsize>,
    gate: &Arc<Semaphore>,
    value: u64,
) -> impl FnOnce() -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<u64, std::io::Error>> + Send>,
> {
    let (runs, gate) = (runs.clone(), gate.clone());
    // Counted when the load runs: every node's first caller builds the
    // loader's future, only the lease holder's is polled.
    move || {
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let _permit = gate.acquire().await.unwrap();
            Ok(value)
        })
    }
}

/// Starts `per_node` callers on every node, all loading `key` with a gated
/// loader, after one caller on `first` holds the lease.
async fn herd(
    nodes: &[Grid],
    key: &str,
    first: usize,
    per_node: usize,
    runs: &Arc<AtomicUsize>,
    gate: &Arc<Semaphore>,
) -> Vec<tokio::task::JoinHandle<Result<u64, CacheError>>> {
    let (owner, _) = owner_of(nodes, key).await;
    let granted_before = diag(&nodes[owner]).await.leases_granted;
    let joined_before = diag(&nodes[owner]).await.leases_joined;
    let spawn = |n: &Grid| {
        let (n, key, load) = (n.clone(), key.to_string(), gated(runs, gate, 42));
        tokio::spawn(async move { n.get_or_load(&key, CacheOptions::new(), load).await })
    };
    let mut tasks = vec![spawn(&nodes[first])];
    assert!(
        eventually(async || diag(&nodes[owner]).await.leases_granted > granted_before).await,
        "the first caller is granted the lease"
    );
    for i in 1..per_node * nodes.len() {
        tasks.push(spawn(&nodes[i % nodes.len()]));
    }
    // Every other node's one request (the owner's own included) is parked.
    let others = nodes.len() as u64 - 1;
    assert!(
        eventually(async || diag(&nodes[owner]).await.leases_joined >= joined_before + others)
            .await,
        "every other node joins the lease"
    );
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_callers_on_six_nodes_run_one_loader_and_all_get_its_value() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let nodes = grid(&ca).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    // The first caller is on a member that does not own the key.
    let (_, first) = owner_of(&nodes, "report:7").await;
    let loads_before: Vec<u64> = nodes.iter().map(|n| n.stats().loads).collect();
    let tasks = herd(&nodes, "report:7", first, 167, &runs, &gate).await;
    assert!(tasks.len() >= 1000);
    gate.add_permits(1);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 42);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "one load in the whole grid");
    // The stats agree: one load, counted on the lease holder's node only
    // (the others' misses were answered by the owner, which is no load).
    let loads: Vec<u64> = nodes
        .iter()
        .zip(&loads_before)
        .map(|(n, before)| n.stats().loads - before)
        .collect();
    let mut expected = vec![0; nodes.len()];
    expected[first] = 1;
    assert_eq!(loads, expected, "loads per node");
    // Every node now reads it locally without loading.
    for n in &nodes {
        assert_eq!(n.get::<u64>("report:7").await.unwrap(), Some(42));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_loader_may_run_on_a_client_and_every_member_gets_its_value() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let nodes = grid(&ca).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let tasks = herd(&nodes, "report:8", 5, 167, &runs, &gate).await;
    gate.add_permits(1);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 42);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let (owner, _) = owner_of(&nodes, "report:8").await;
    // The owner stored the client's fill.
    assert!(nodes[owner].get_ref("report:8").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_or_panicking_loader_fails_every_caller_naming_its_node_and_leaves_no_lease() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let nodes = grid(&ca).await;
    for (key, panics) in [("report:9", false), ("report:10", true)] {
        let (owner, _) = owner_of(&nodes, key).await;
        // The client reaches the owner (a slow first connection would make
        // it serve locally, without a lease).
        assert!(
            eventually(async || {
                let before = diag(&nodes[5]).await.remote_misses;
                assert_eq!(nodes[5].get::<u64>(key).await.unwrap(), None);
                diag(&nodes[5]).await.remote_misses > before
            })
            .await,
            "the client reaches the owner"
        );
        // Read before the holder starts: it may be granted its lease before
        // this task runs again.
        let granted = diag(&nodes[owner]).await.leases_granted;
        let gate = Arc::new(Semaphore::new(0));
        let g = gate.clone();
        let c0 = nodes[5].clone();
        let holder = tokio::spawn(async move {
            c0.get_or_load::<u64, _, _, _>(key, CacheOptions::new(), move || async move {
                let _p = g.acquire().await.unwrap();
                if panics {
                    panic!("boom");
                }
                Err(std::io::Error::other("db down"))
            })
            .await
        });
        assert!(eventually(async || diag(&nodes[owner]).await.leases_granted > granted).await);
        let joined = diag(&nodes[owner]).await.leases_joined;
        // The others' loaders would answer at once: they must not run.
        let runs = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
        let others: Vec<_> = nodes[..5]
            .iter()
            .map(|n| {
                let (n, load) = (n.clone(), gated(&runs, &open, 1));
                tokio::spawn(async move { n.get_or_load(key, CacheOptions::new(), load).await })
            })
            .collect();
        assert!(eventually(async || diag(&nodes[owner]).await.leases_joined >= joined + 5).await);
        let before: Vec<_> = nodes.iter().map(|n| n.stats()).collect();
        gate.add_permits(1);
        match holder.await.unwrap() {
            Err(CacheError::Load(_)) if !panics => {}
            Err(CacheError::LoaderPanicked(m)) if panics => assert!(m.contains("boom")),
            other => panic!("the holder's caller gets its own error, got {other:?}"),
        }
        for t in others {
            match t.await.unwrap() {
                Err(CacheError::LoadFailedOn {
                    node,
                    key: k,
                    message,
                }) => {
                    assert_eq!((node.as_str(), k.as_str()), ("c0", key));
                    assert!(message.contains(if panics { "boom" } else { "db down" }));
                }
                other => panic!("expected LoadFailedOn, got {other:?}"),
            }
        }
        assert_eq!(runs.load(Ordering::SeqCst), 0, "no one else loaded");
        // One failed load, counted where it ran: the other nodes' callers
        // got its error, which is neither a load nor a load error of theirs.
        // (The holder's load was counted before `before` was taken.)
        for (i, n) in nodes.iter().enumerate() {
            let (now, then) = (n.stats(), before[i]);
            let errors = u64::from(i == 5);
            assert_eq!(
                (now.loads - then.loads, now.load_errors - then.load_errors),
                (0, errors),
                "node {i}"
            );
        }
        assert!(nodes[5].stats().loads >= 1);
        // Nothing stored anywhere, and the next call loads again at once.
        for n in &nodes {
            assert!(n.get_ref(key).is_none());
        }
        let v = nodes[2]
            .get_or_load(key, CacheOptions::new(), || async {
                Ok::<_, std::io::Error>(5u64)
            })
            .await
            .unwrap();
        assert_eq!(v, 5);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fill_for_a_lease_voided_by_an_invalidation_is_refused_but_reaches_its_waiters() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let nodes = grid(&ca).await;
    let key = "report:11";
    let (owner, first) = owner_of(&nodes, key).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let tasks = herd(&nodes, key, first, 2, &runs, &gate).await;
    let refused = diag(&nodes[owner]).await.fills_refused;
    nodes[5].invalidate_key(key).await.unwrap();
    assert!(diag(&nodes[owner]).await.leases_voided >= 1);
    gate.add_permits(1);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 42, "waiters still get the value");
    }
    assert!(eventually(async || diag(&nodes[owner]).await.fills_refused > refused).await);
    assert!(
        nodes[owner].get_ref(key).is_none(),
        "the owner did not store it"
    );
    // A caller after the invalidation loads again.
    let again = nodes[3]
        .get_or_load(key, CacheOptions::new(), || async {
            Ok::<_, std::io::Error>(43u64)
        })
        .await
        .unwrap();
    assert_eq!(again, 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fill_with_a_forged_token_is_refused_and_stores_nothing() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let nodes = grid(&ca).await;
    let key = "report:12";
    let (owner, first) = owner_of(&nodes, key).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let tasks = herd(&nodes, key, first, 1, &runs, &gate).await;
    // Another process of the cluster (a valid certificate) fills the key
    // with a token it made up.
    let rogue = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue("rogue").unwrap(),
        Hello::new("orders", ("rogue", 1), Role::Member),
        Limits::default(),
    )
    .unwrap();
    let refused = diag(&nodes[owner]).await.fills_refused;
    for token in [1u64, 77, u64::MAX] {
        rogue
            .send(
                addr(&nodes[owner]).await,
                Message::Fill(Fill {
                    token,
                    key: key.as_bytes().to_vec().into(),
                    entry: Entry::new(vec![0u8; 8].into()),
                }),
            )
            .await
            .unwrap();
    }
    assert!(eventually(async || diag(&nodes[owner]).await.fills_refused >= refused + 3).await);
    assert!(nodes[owner].get_ref(key).is_none());
    // The real holder's fill still lands.
    gate.add_permits(1);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 42);
    }
    assert_eq!(nodes[owner].get::<u64>(key).await.unwrap(), Some(42));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_the_membership_does_not_admit_may_wait_on_a_lease_but_never_holds_one() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let nodes = grid(&ca).await;
    let key = "report:15";
    let (owner, first) = owner_of(&nodes, key).await;
    let at = addr(&nodes[owner]).await;
    // A process with a valid member certificate that the membership does
    // not admit (one that left, or was removed, looks the same): its fill
    // might never come, so it is told to ask again, not granted the lease.
    let outsider = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue("outsider").unwrap(),
        Hello::new("orders", ("outsider", 1), Role::Member),
        Limits::default(),
    )
    .unwrap();
    let load = Message::Load(Load {
        epoch: 0,
        key: key.as_bytes().to_vec().into(),
        tags: Vec::new(),
    });
    let granted = diag(&nodes[owner]).await.leases_granted;
    let (_, reply) = outsider.request(at, load.clone()).await.unwrap();
    assert!(
        matches!(reply, Message::LoadReply(LoadReply::Wait { .. })),
        "{reply:?}"
    );
    assert_eq!(diag(&nodes[owner]).await.leases_granted, granted);
    // It may wait on a lease an admitted node holds, and gets its value.
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let tasks = herd(&nodes, key, first, 1, &runs, &gate).await;
    let joined = diag(&nodes[owner]).await.leases_joined;
    let waiting = tokio::spawn(async move { outsider.request(at, load).await });
    assert!(eventually(async || diag(&nodes[owner]).await.leases_joined > joined).await);
    gate.add_permits(Semaphore::MAX_PERMITS);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 42);
    }
    match waiting.await.unwrap().unwrap().1 {
        Message::LoadReply(LoadReply::Hit(entry) | LoadReply::Loaded(entry)) => {
            let stored = nodes[owner]
                .get_ref(key)
                .expect("the owner stored the fill");
            assert_eq!(
                &entry.value[..],
                &stored.to_bytes()[..],
                "the holder's bytes"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_holders_node_goes_mid_load_a_waiter_gets_the_lease_and_loads_once() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let nodes = grid(&ca).await;
    let key = "report:13";
    let (owner, _) = owner_of(&nodes, key).await;
    // The client holds the lease with a loader that never finishes.
    let never = Arc::new(Semaphore::new(0));
    let c0 = nodes[5].clone();
    let stuck = gated(&Arc::new(AtomicUsize::new(0)), &never, 0);
    // Read before the load starts: it may be granted before a read after.
    let granted = diag(&nodes[owner]).await.leases_granted;
    let _stuck = tokio::spawn(async move { c0.get_or_load(key, CacheOptions::new(), stuck).await });
    assert!(eventually(async || diag(&nodes[owner]).await.leases_granted > granted).await);
    let runs = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    let tasks: Vec<_> = nodes[..5]
        .iter()
        .flat_map(|n| std::iter::repeat_n(n.clone(), 20))
        .map(|n| {
            let load = gated(&runs, &open, 42);
            tokio::spawn(async move { n.get_or_load(key, CacheOptions::new(), load).await })
        })
        .collect();
    nodes[5].leave().await;
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 42);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one waiter loaded after the expiry"
    );
    assert!(diag(&nodes[owner]).await.leases_expired >= 1);
    // The key loads again after an invalidation.
    nodes[0].invalidate_key(key).await.unwrap();
    let v = nodes[1]
        .get_or_load(key, CacheOptions::new(), || async {
            Ok::<_, std::io::Error>(7u64)
        })
        .await
        .unwrap();
    assert_eq!(v, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_owner_goes_mid_load_every_caller_finishes_and_the_key_loads_again() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let nodes = grid_with(&ca, LONG_LEASE).await;
    let key = "report:14";
    let (owner, first) = owner_of(&nodes, key).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let tasks = herd(&nodes, key, first, 3, &runs, &gate).await;
    nodes[owner].leave().await;
    // The waiters went to the new owner; one of them may load there.
    gate.add_permits(Semaphore::MAX_PERMITS);
    for (i, t) in tasks.into_iter().enumerate() {
        let on = i % nodes.len();
        match t.await.unwrap() {
            Ok(v) => assert_eq!(v, 42),
            Err(e) if on == owner => eprintln!("the departed owner's caller: {e}"),
            Err(e) => panic!("node {on}: {e}"),
        }
    }
    // The first holder's load, at most one extra for the epoch change, and
    // the departed owner's own callers' (once it left it is a local cache
    // and loads for itself).
    assert!(
        runs.load(Ordering::SeqCst) <= 3,
        "at most one extra load for the epoch change"
    );
    let survivors: Vec<&Grid> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != owner)
        .map(|(_, n)| n)
        .collect();
    converge(&survivors, 4, 1).await;
    survivors[0].invalidate_key(key).await.unwrap();
    let v = survivors[1]
        .get_or_load(key, CacheOptions::new(), || async {
            Ok::<_, std::io::Error>(9u64)
        })
        .await
        .unwrap();
    assert_eq!(v, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_owner_is_dropped_mid_load_every_caller_finishes_and_the_key_loads_again() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let mut nodes = grid(&ca).await;
    let key = "report:16";
    let (owner, first) = owner_of(&nodes, key).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    // Callers everywhere but on the owner (whose callers would keep its
    // grid alive), the first of them holding the lease.
    let spawn = |n: &Grid| {
        let (n, load) = (n.clone(), gated(&runs, &gate, 42));
        tokio::spawn(async move { n.get_or_load(key, CacheOptions::new(), load).await })
    };
    let granted = diag(&nodes[owner]).await.leases_granted;
    let mut tasks = vec![spawn(&nodes[first])];
    assert!(eventually(async || diag(&nodes[owner]).await.leases_granted > granted).await);
    for (i, n) in nodes.iter().enumerate() {
        if i != owner {
            tasks.extend((0..3).map(|_| spawn(n)));
        }
    }
    let joined = diag(&nodes[owner]).await.leases_joined;
    assert!(
        eventually(async || diag(&nodes[owner]).await.leases_joined >= joined + 3).await,
        "the other nodes join the lease"
    );
    // The owner's process goes without a word (its last handle dropped):
    // the held requests fail at the transport and the callers go on.
    let gone = diag(&nodes[owner]).await.node_id;
    drop(nodes.remove(owner));
    gate.add_permits(Semaphore::MAX_PERMITS);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 42);
    }
    let refs: Vec<&Grid> = nodes.iter().collect();
    converge(&refs, 4, 1).await;
    // A process removed without a word may still be serving somewhere (cut
    // off, paused) until its isolation bound: it is named, and only it.
    match nodes[0].invalidate_key(key).await {
        Ok(()) => {}
        Err(CacheError::Unacknowledged { nodes }) => assert_eq!(nodes, [gone]),
        Err(e) => panic!("{e}"),
    }
    let v = nodes[1]
        .get_or_load(key, CacheOptions::new(), || async {
            Ok::<_, std::io::Error>(9u64)
        })
        .await
        .unwrap();
    assert_eq!(v, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_membership_change_during_loads_costs_at_most_one_extra_load_per_key() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let nodes = grid_with(&ca, LONG_LEASE).await;
    let keys: Vec<String> = (0..24).map(|i| format!("page:{i}")).collect();
    let runs: Vec<Arc<AtomicUsize>> = keys.iter().map(|_| Arc::default()).collect();
    let gate = Arc::new(Semaphore::new(0));
    let mut tasks = Vec::new();
    for (k, key) in keys.iter().enumerate() {
        for n in &nodes {
            let (n, key, load) = (n.clone(), key.clone(), gated(&runs[k], &gate, k as u64));
            tasks.push((
                k,
                tokio::spawn(async move { n.get_or_load(&key, CacheOptions::new(), load).await }),
            ));
        }
    }
    // A sixth member joins while the loads are held: some keys move to it.
    let seed = addr(&nodes[0]).await;
    let m5 = member(&ca, "m5", &[seed], LONG_LEASE).await;
    let mut all: Vec<&Grid> = nodes.iter().collect();
    all.push(&m5);
    converge(&all, 6, 1).await;
    gate.add_permits(Semaphore::MAX_PERMITS);
    for (k, t) in tasks {
        assert_eq!(t.await.unwrap().unwrap(), k as u64);
    }
    for (k, r) in runs.iter().enumerate() {
        let n = r.load(Ordering::SeqCst);
        assert!(
            n <= 2,
            "{} loaded {n} times across one epoch change",
            keys[k]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typed_views_and_cacheable_go_through_the_owner_too() {
    let _one = cluster_support::one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let nodes = grid(&ca).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    // Typed views on every node: one load in the grid.
    let tasks: Vec<_> = nodes
        .iter()
        .map(|n| {
            let (users, load) = (n.typed::<u64>("user"), gated(&runs, &gate, 42));
            tokio::spawn(async move { users.get_or_load("7", CacheOptions::new(), load).await })
        })
        .collect();
    let (owner, _) = owner_of(&nodes, "user:7").await;
    assert!(eventually(async || diag(&nodes[owner]).await.leases_joined >= 5).await);
    gate.add_permits(1);
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 42);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);

    // A typed get on a node that never read the key asks the owner.
    nodes[3]
        .put("user:8", 8u64, CacheOptions::new())
        .await
        .unwrap();
    for n in &nodes {
        assert_eq!(n.typed::<u64>("user").get("8").await.unwrap(), Some(8));
    }

    // cacheable! on every node: one load in the grid.
    let loads = Arc::new(AtomicUsize::new(0));
    for n in &nodes {
        let loads = loads.clone();
        let v: u64 = hydracache::cacheable!(
            cache = n,
            key = "answer".to_string(),
            tag = "answers",
            load = move || async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(41)
            },
        )
        .await
        .unwrap();
        assert_eq!(v, 41);
    }
    assert_eq!(loads.load(Ordering::SeqCst), 1);
}
