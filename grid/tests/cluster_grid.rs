//! Members and clients of one grid on 127.0.0.1: they agree on who is live,
//! an invalidation made anywhere is applied everywhere before the call
//! returns, and a node that may have missed one drops what it cannot prove.

use std::net::SocketAddr;
use std::time::Duration;

use hydracache::cluster::{DevCa, InvalidationMode};
use hydracache::{CacheEvent, CacheOptions, EventOrigin, Grid};
use hydracache_protocol::{Hello, Invalidate, Limits, Message, NodeIdentity, Role, Target};

mod cluster_support;
use cluster_support::{addr, client, converge, eventually, member_builder, one_at_a_time, GOSSIP};

async fn member(ca: &DevCa, id: &str, seeds: &[SocketAddr]) -> Grid {
    member_builder(ca, id, seeds)
        .ack_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_and_two_clients_agree_and_invalidations_reach_everyone() {
    // Seven nodes at 50 ms gossip: alone, and with a generous ack timeout,
    // so that a busy machine does not pass for a lost acknowledgement.
    let _serial = one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let member = |id: String, seeds: Vec<SocketAddr>| {
        member_builder(&ca, &id, &seeds)
            .ack_timeout(Duration::from_secs(5))
            .start()
    };
    let m0 = member("m0".into(), vec![]).await.unwrap();
    let seed = addr(&m0).await;
    let mut nodes = vec![m0];
    for i in 1..5 {
        nodes.push(member(format!("m{i}"), vec![seed]).await.unwrap());
    }
    nodes.push(client(&ca, "c0", &[seed]).await);
    nodes.push(client(&ca, "c1", &[seed]).await);
    let refs: Vec<&Grid> = nodes.iter().collect();
    converge(&refs, 5, 2).await;
    let d = nodes[6].cluster_diagnostics().await.unwrap();
    assert_eq!(d.members, ["m0", "m1", "m2", "m3", "m4"]);
    assert_eq!(d.clients, ["c0", "c1"]);
    assert_eq!(d.role, Role::Client);

    // One node writes; every node reads it (a near copy where it is not
    // the owner), tagged as written.
    nodes[1]
        .put(
            "user:1",
            "Ada".to_string(),
            CacheOptions::new().tag("users"),
        )
        .await
        .unwrap();
    nodes[5]
        .put("order:9", 9u64, CacheOptions::new().tag("orders"))
        .await
        .unwrap();
    for n in &nodes {
        assert_eq!(
            n.get::<String>("user:1").await.unwrap().as_deref(),
            Some("Ada")
        );
        assert_eq!(n.get::<u64>("order:9").await.unwrap(), Some(9));
        assert!(n.contains_key("user:1").await && n.contains_key("order:9").await);
    }
    let mut events = nodes[3].subscribe_tag("users");
    // A client invalidates the tag: gone on every node when the call returns.
    nodes[6].invalidate_tag("users").await.unwrap();
    for n in &nodes {
        assert!(!n.contains_key("user:1").await);
        assert!(n.contains_key("order:9").await, "other tags untouched");
    }
    assert_eq!(
        events.next_event().await.unwrap(),
        CacheEvent::TagInvalidated {
            tag: "users".into(),
            origin: EventOrigin::Remote { node: "c1".into() }
        }
    );
    // Keys and flushes travel the same way.
    nodes[2].invalidate_key("order:9").await.unwrap();
    for n in &nodes {
        assert!(!n.contains_key("order:9").await);
    }
    nodes[4].put("x", 1u8, CacheOptions::new()).await.unwrap();
    for n in &nodes {
        assert_eq!(n.get::<u8>("x").await.unwrap(), Some(1));
    }
    nodes[0].flush().await.unwrap();
    for n in &nodes {
        assert!(!n.contains_key("x").await);
    }
    // A client originates only its own invalidations (its puts are
    // invalidated by their owners).
    assert_eq!(
        nodes[6]
            .cluster_diagnostics()
            .await
            .unwrap()
            .invalidation_sequence,
        1
    );
}

/// Past the five members of the test above: twelve members started at once
/// agree on one view, Raft keeps three voters and makes the rest learners,
/// and an invalidation made on one member is acknowledged by the eleven
/// others, each of which dropped its near copy, when the call returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_members_form_one_grid_with_three_voters_and_invalidations_reach_all() {
    let _serial = one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    // The builder's default gossip interval: at the tests' 50 ms, twelve
    // nodes starting at once on a loaded two-core machine get declared
    // dead and removed for good (docs/scaling.md).
    let member = |id: String, seeds: Vec<SocketAddr>| {
        member_builder(&ca, &id, &seeds)
            .gossip_interval(Duration::from_millis(200))
            .ack_timeout(Duration::from_secs(5))
            .start()
    };
    let m0 = member("m0".into(), vec![]).await.unwrap();
    let seed = addr(&m0).await;
    let joiners = futures_util::future::join_all(
        (1..12).map(|i| async move { member(format!("m{i}"), vec![seed]).await.unwrap() }),
    )
    .await;
    let mut nodes = vec![m0];
    nodes.extend(joiners);
    let refs: Vec<&Grid> = nodes.iter().collect();
    converge(&refs, 12, 0).await;
    let raft = async || {
        let mut views = Vec::new();
        for n in &nodes {
            let d = n.cluster_diagnostics().await.unwrap();
            views.push((d.epoch, d.members.clone()));
            if d.raft_leader.as_deref() == Some(d.node_id.as_str())
                && (d.raft_voters, d.raft_learners) != (3, 9)
            {
                return false;
            }
        }
        views.windows(2).all(|w| w[0] == w[1])
    };
    assert!(eventually(raft).await, "one view; 3 voters and 9 learners");

    nodes[5]
        .put("order:12", 12u64, CacheOptions::new())
        .await
        .unwrap();
    for n in &nodes {
        assert_eq!(n.get::<u64>("order:12").await.unwrap(), Some(12));
    }
    let before = nodes[7].cluster_diagnostics().await.unwrap();
    nodes[7].invalidate_key("order:12").await.unwrap();
    for n in &nodes {
        assert!(!n.contains_key("order:12").await);
    }
    let after = nodes[7].cluster_diagnostics().await.unwrap();
    assert_eq!(after.invalidation_acks - before.invalidation_acks, 11);
    assert_eq!(
        after.invalidation_late_nodes,
        before.invalidation_late_nodes
    );
    assert!(after.connections >= 11, "one connection per peer it told");
    assert!(after.gossip_messages_sent > 0 && after.gossip_bytes_sent > 0);
}

/// Speaks to a member as an origin node with a raw transport.
async fn raw_origin(ca: &DevCa, id: &str, generation: u64) -> hydracache::cluster::Transport {
    hydracache::cluster::Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue(id).unwrap(),
        Hello::new("orders", (id, generation), Role::Member),
        Limits::default(),
    )
    .unwrap()
}

fn invalidate(id: &str, generation: u64, sequence: u64, key: &'static str) -> Message {
    Message::Invalidate(Invalidate {
        origin: NodeIdentity::new(id, generation),
        sequence,
        epoch: 0,
        target: Target::Key(bytes::Bytes::from_static(key.as_bytes())),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_hole_that_outlives_its_bound_drops_what_cannot_be_proven_fresh() {
    let ca = DevCa::new("orders").unwrap();
    let m = member(&ca, "m", &[]).await;
    let m_addr = addr(&m).await;
    let origin = raw_origin(&ca, "o", 5).await;
    for k in ["a", "b", "c"] {
        m.put(k, 1u8, CacheOptions::new()).await.unwrap();
    }
    // In order: only the named key goes.
    let (_, reply) = origin
        .request(m_addr, invalidate("o", 5, 1, "a"))
        .await
        .unwrap();
    assert_eq!(
        reply,
        Message::InvalidateAck {
            origin_generation: 5,
            sequence: 1
        }
    );
    assert!(!m.contains_key("a").await && m.contains_key("b").await && m.contains_key("c").await);
    // Sequence 3 before 2: a hole in the receive window, which 2 may still
    // fill (it may be on another stream)...
    origin
        .request(m_addr, invalidate("o", 5, 3, "b"))
        .await
        .unwrap();
    let d = m.cluster_diagnostics().await.unwrap();
    assert_eq!((d.open_holes, d.gap_flushes), (1, 0));
    assert!(m.contains_key("c").await);
    // ...but 2 was lost: once the hole outlives its bound (the request and
    // acknowledgement timeouts), everything is dropped.
    assert!(
        eventually(async || !m.contains_key("c").await).await,
        "an unrelated entry could not be proven fresh"
    );
    let d = m.cluster_diagnostics().await.unwrap();
    assert_eq!((d.open_holes, d.gap_flushes), (0, 1));
    // An older generation of the origin is refused at the handshake.
    m.put("d", 1u8, CacheOptions::new()).await.unwrap();
    origin
        .request(m_addr, invalidate("o", 5, 4, "zzz"))
        .await
        .unwrap();
    let old = raw_origin(&ca, "o", 4).await;
    assert!(old
        .request(m_addr, invalidate("o", 4, 1, "d"))
        .await
        .is_err());
    // Another node may not speak for this origin.
    let other = raw_origin(&ca, "o2", 1).await;
    let (_, reply) = other
        .request(m_addr, invalidate("o", 9, 1, "d"))
        .await
        .unwrap();
    assert!(matches!(reply, Message::Error { .. }), "{reply:?}");
    assert!(m.contains_key("d").await);
    // First contact above sequence 1: this node may have missed the start
    // (holes 1 to 6, loss once they outlive the bound).
    let late = raw_origin(&ca, "late", 1).await;
    late.request(m_addr, invalidate("late", 1, 7, "zzz"))
        .await
        .unwrap();
    assert!(eventually(async || !m.contains_key("d").await).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_typed_errors() {
    let ca = DevCa::new("orders").unwrap();
    assert!(matches!(
        Grid::member().cluster("orders").node_id("x").start().await,
        Err(hydracache::cluster::ClusterError::Missing("tls"))
    ));
    assert!(matches!(
        Grid::member()
            .cluster("orders")
            .tls(ca.issue("x").unwrap())
            .start()
            .await,
        Err(hydracache::cluster::ClusterError::Missing("node_id"))
    ));
    assert!(matches!(
        Grid::member()
            .node_id("x")
            .tls(ca.issue("x").unwrap())
            .seeds(["not an address"])
            .start()
            .await,
        Err(hydracache::cluster::ClusterError::UnresolvedSeed { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_may_be_host_names_and_a_name_that_does_not_resolve_is_named() {
    let ca = DevCa::new("orders").unwrap();
    let m1 = member(&ca, "m1", &[]).await;
    let by_name = format!("localhost:{}", addr(&m1).await.port());
    let m2 = Grid::member()
        .cluster("orders")
        .node_id("m2")
        .seeds([by_name])
        .tls(ca.issue("m2").unwrap())
        .gossip_interval(GOSSIP)
        .start()
        .await
        .unwrap();
    converge(&[&m1, &m2], 2, 0).await;

    let err = Grid::member()
        .node_id("x")
        .tls(ca.issue("x").unwrap())
        .seeds(["no-such-node.invalid:7400"])
        .start()
        .await
        .expect_err("an unresolvable seed is refused");
    match &err {
        hydracache::cluster::ClusterError::UnresolvedSeed { seed, .. } => {
            assert_eq!(seed, "no-such-node.invalid:7400")
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("no-such-node.invalid:7400"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_returns_once_a_member_is_reached_or_fails_typed_after_its_deadline() {
    use hydracache::cluster::ClusterError;
    let ca = DevCa::new("orders").unwrap();
    let m = member(&ca, "m", &[]).await;
    let c = Grid::client()
        .cluster("orders")
        .node_id("c")
        .seeds([addr(&m).await.to_string()])
        .tls(ca.issue("c").unwrap())
        .gossip_interval(GOSSIP)
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    // No polling: connect returned with the member in the client's view.
    let d = c.cluster_diagnostics().await.unwrap();
    assert_eq!(d.members, vec!["m".to_string()]);

    // `start` does not wait: a member may be the first of its cluster.
    let alone = member(&ca, "alone", &[]).await;
    assert!(alone.cluster_diagnostics().await.is_some());

    assert!(matches!(
        Grid::client().tls(ca.issue("c2").unwrap()).connect().await,
        Err(ClusterError::NoSeeds)
    ));
    // A seed where nobody listens: a free port, taken and released.
    let nobody = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = Grid::client()
        .seeds([nobody.to_string()])
        .tls(ca.issue("c3").unwrap())
        .gossip_interval(GOSSIP)
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect_err("no member to reach");
    match err {
        ClusterError::NoMemberReached { seeds, waited } => {
            assert_eq!(seeds, vec![nobody.to_string()]);
            assert_eq!(waited, Duration::from_millis(500));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_closure_may_choose_the_codec() {
    #[derive(serde::Serialize, serde::Deserialize, Clone, Debug, PartialEq)]
    struct User {
        name: String,
    }
    let ca = DevCa::new("orders").unwrap();
    let m: Grid<hydracache::Postcard> = Grid::member()
        .node_id("m")
        .bootstrap(true)
        .tls(ca.issue("m").unwrap())
        .cache(|c| c.codec::<hydracache::Postcard>())
        .start()
        .await
        .unwrap();
    let ada = User { name: "Ada".into() };
    m.put("u", ada.clone(), CacheOptions::new()).await.unwrap();
    assert_eq!(m.get::<User>("u").await.unwrap(), Some(ada));
}

/// Polls `check` (bounded: 800 gossip rounds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_membership_follows_failures_restarts_and_leaves_and_ownership_moves() {
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "m0", &[]).await;
    let seed = addr(&m0).await;
    let m1 = member(&ca, "m1", &[seed]).await;
    let m2 = member(&ca, "m2", &[seed]).await;
    let m3 = member(&ca, "m3", &[seed]).await;
    converge(&[&m0, &m1, &m2, &m3], 4, 0).await;
    let d = m1.cluster_diagnostics().await.unwrap();
    assert_eq!(d.raft_leader.as_deref(), Some("m0"));
    let epoch = d.epoch;
    // Every node computes the same owner for every key.
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let owners: Vec<_> = keys.iter().map(|k| m0.owner_for_key(k).unwrap()).collect();
    for n in [&m1, &m2, &m3] {
        let theirs: Vec<_> = keys.iter().map(|k| n.owner_for_key(k).unwrap()).collect();
        assert_eq!(theirs, owners);
    }
    assert!(owners.iter().any(|o| o == "m3"));

    // m3 dies (its endpoint closes): gossip declares it dead, Raft removes it,
    // the epoch moves and its keys move to the others.
    drop(m3);
    converge(&[&m0, &m1, &m2], 3, 0).await;
    let after = m0.cluster_diagnostics().await.unwrap();
    assert!(after.epoch > epoch);
    for (k, old) in keys.iter().zip(&owners) {
        let new = m2.owner_for_key(k).unwrap();
        if old == "m3" {
            assert_ne!(new, "m3");
        } else {
            assert_eq!(&new, old, "only m3's keys move");
        }
    }

    // m3 restarts with a new generation and is admitted again.
    let m3 = member(&ca, "m3", &[seed]).await;
    converge(&[&m0, &m1, &m2, &m3], 4, 0).await;
    let d3 = m3.cluster_diagnostics().await.unwrap();
    assert!(d3.generation > 0 && d3.epoch > after.epoch);

    // A graceful leave: m1 announces it, the leader removes it, then it stops.
    let epoch = m0.cluster_diagnostics().await.unwrap().epoch;
    m1.leave().await;
    assert!(
        !m1.cluster_diagnostics()
            .await
            .unwrap()
            .members
            .contains(&"m1".to_string()),
        "removed before it stopped"
    );
    assert!(
        eventually(async || !m0
            .cluster_diagnostics()
            .await
            .unwrap()
            .members
            .contains(&"m1".to_string()))
        .await
    );
    assert!(m0.cluster_diagnostics().await.unwrap().epoch > epoch);
}

/// The Raft configuration as `node` applied it, if `node` leads.
async fn led(node: &Grid) -> Option<(usize, usize)> {
    let d = node.cluster_diagnostics().await.unwrap();
    (d.raft_leader.as_deref() == Some(d.node_id.as_str()))
        .then_some((d.raft_voters, d.raft_learners))
}

/// Voters go from one to three in one step, never through two: a member
/// killed while it is the only other one is removed by the founder alone;
/// a voter killed right after its promotion leaves a grid that admits the
/// next member and gives it the seat; and when the founder is killed as
/// well, the other two voters elect a leader that keeps changing the
/// membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_killed_right_after_its_promotion_leaves_a_grid_that_elects_and_admits() {
    let _serial = one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "m0", &[]).await;
    let seed = addr(&m0).await;
    let m1 = member(&ca, "m1", &[seed]).await;
    converge(&[&m0, &m1], 2, 0).await;
    assert!(
        eventually(async || led(&m0).await == Some((1, 1))).await,
        "one voter and one learner: two voters stall if either dies"
    );
    drop(m1);
    converge(&[&m0], 1, 0).await;

    let m2 = member(&ca, "m2", &[seed]).await;
    let m3 = member(&ca, "m3", &[seed]).await;
    converge(&[&m0, &m2, &m3], 3, 0).await;
    assert!(eventually(async || led(&m0).await == Some((3, 0))).await);
    // m3 dies right after its promotion; m4 joins and takes its seat.
    drop(m3);
    let m4 = member(&ca, "m4", &[seed]).await;
    converge(&[&m0, &m2, &m4], 3, 0).await;
    assert!(eventually(async || led(&m0).await == Some((3, 0))).await);

    // The founder dies too: m2 and m4 elect a leader, which removes it and
    // admits m5.
    drop(m0);
    let leads = async || led(&m2).await.is_some() || led(&m4).await.is_some();
    assert!(eventually(leads).await, "no leader after the founder died");
    let m5 = member(&ca, "m5", &[addr(&m2).await]).await;
    converge(&[&m2, &m4, &m5], 3, 0).await;
    let d = m5.cluster_diagnostics().await.unwrap();
    assert_eq!(d.members, ["m2", "m4", "m5"]);
}

/// The founder of a grid of two is its only voter, and it leaves: it hands
/// leadership to the other member before it stops, so the grid still
/// changes its membership: a third member joins through the one that
/// stayed. Had the founder stopped as soon as the membership removed it,
/// the one that stayed would be a learner that never elects a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_voter_hands_over_before_it_leaves_and_the_grid_still_admits() {
    let _serial = one_at_a_time().await;
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "m0", &[]).await;
    let seed = addr(&m0).await;
    let m1 = member(&ca, "m1", &[seed]).await;
    converge(&[&m0, &m1], 2, 0).await;
    assert!(eventually(async || led(&m0).await == Some((1, 1))).await);

    m0.leave().await;
    // It returned only once it had handed over: it follows m1, and its
    // configuration has m1 as the only voter.
    let d = m0.cluster_diagnostics().await.unwrap();
    assert_eq!(
        (d.raft_leader.as_deref(), d.raft_voters, d.raft_learners),
        (Some("m1"), 1, 0)
    );
    assert!(
        eventually(async || led(&m1).await == Some((1, 0))).await,
        "m1 does not lead alone: {:?}",
        m1.cluster_diagnostics().await
    );
    let m2 = member(&ca, "m2", &[addr(&m1).await]).await;
    converge(&[&m1, &m2], 2, 0).await;
    let d = m2.cluster_diagnostics().await.unwrap();
    assert_eq!(d.members, ["m1", "m2"]);
    assert_eq!(d.raft_leader.as_deref(), Some("m1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_serves_a_fetch_and_others_answer_wrong_owner_with_their_epoch() {
    use hydracache_protocol::{Fetch, FetchReply};
    let ca = DevCa::new("orders").unwrap();
    let a = member(&ca, "a", &[]).await;
    let seed = addr(&a).await;
    let b = member(&ca, "b", &[seed]).await;
    let c = member(&ca, "c", &[seed]).await;
    converge(&[&a, &b, &c], 3, 0).await;
    let nodes = [("a", &a), ("b", &b), ("c", &c)];
    let owner_id = a.owner_for_key("user:7").unwrap();
    let epoch = a.cluster_diagnostics().await.unwrap().epoch;
    for (_, n) in &nodes {
        n.put(
            "user:7",
            "Grace".to_string(),
            CacheOptions::new()
                .tag("users")
                .ttl(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    }
    let reader = raw_origin(&ca, "reader", 1).await;
    for (id, n) in &nodes {
        let fetch = Message::Fetch(Fetch {
            epoch,
            key: bytes::Bytes::from_static(b"user:7"),
        });
        let (_, reply) = reader.request(addr(n).await, fetch).await.unwrap();
        match reply {
            Message::FetchReply(FetchReply::Hit(entry)) => {
                assert_eq!(*id, owner_id);
                let value = hydracache_protocol::align_value(entry.value);
                assert_eq!(
                    rkyv::from_bytes::<String, rkyv::rancor::Error>(&value).unwrap(),
                    "Grace"
                );
                assert_eq!(entry.tags, [bytes::Bytes::from_static(b"users")]);
                assert!(entry.ttl_ms.unwrap() <= 60_000);
            }
            Message::FetchReply(FetchReply::WrongOwner { epoch: e }) => {
                assert_ne!(*id, owner_id);
                assert_eq!(e, epoch);
            }
            other => panic!("{other:?}"),
        }
    }
    let owner = nodes.iter().find(|(id, _)| *id == owner_id).unwrap().1;
    let (_, reply) = reader
        .request(
            addr(owner).await,
            Message::Fetch(Fetch {
                epoch,
                key: bytes::Bytes::from_static(b"nobody"),
            }),
        )
        .await
        .unwrap();
    let nobody_owner = a.owner_for_key("nobody").unwrap();
    if nobody_owner == owner_id {
        assert_eq!(reply, Message::FetchReply(FetchReply::Miss));
    } else {
        assert!(matches!(
            reply,
            Message::FetchReply(FetchReply::WrongOwner { .. })
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_or_departed_node_stops_its_tasks_and_stays_usable_locally() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let ca = DevCa::new("orders").unwrap();
    let a = member(&ca, "a", &[]).await;
    let seed = addr(&a).await;
    let b = member(&ca, "b", &[seed]).await;
    converge(&[&a, &b], 2, 0).await;
    assert!(metrics.num_alive_tasks() > baseline);

    // b leaves: its invalidations are local from then on.
    b.leave().await;
    b.put("k", 1u8, CacheOptions::new()).await.unwrap();
    b.invalidate_key("k").await.unwrap();
    assert!(!b.contains_key("k").await);

    // Dropping both grids stops every task they started.
    drop(a);
    drop(b);
    assert!(
        eventually(async || tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
            <= baseline)
        .await,
        "{} tasks still alive, {baseline} before",
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_send_only_mode_a_clients_invalidation_is_relayed_to_the_other_clients() {
    let ca = DevCa::new("orders").unwrap();
    let m = member(&ca, "m", &[]).await;
    let seed = addr(&m).await;
    let sent_client = |id: &'static str| {
        let tls = ca.issue(id).unwrap();
        async move {
            Grid::client()
                .cluster("orders")
                .node_id(id)
                .seeds([seed.to_string()])
                .tls(tls)
                .gossip_interval(GOSSIP)
                .invalidation_mode(InvalidationMode::Sent)
                .connect()
                .await
                .unwrap()
        }
    };
    let c1 = sent_client("c1").await;
    let c2 = sent_client("c2").await;
    converge(&[&m, &c1, &c2], 1, 2).await;
    c2.put("k", 1u8, CacheOptions::new()).await.unwrap();
    c2.put("other", 1u8, CacheOptions::new()).await.unwrap();
    let mut events = c2.subscribe_key("k");
    c1.invalidate_key("k").await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), events.next_event())
            .await
            .unwrap()
            .unwrap(),
        CacheEvent::Removed {
            key: "k".into(),
            origin: EventOrigin::Remote { node: "c1".into() }
        }
    );
    assert!(
        c2.contains_key("other").await,
        "a relayed key invalidation is not a flush"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_a_node_id_takes_its_certificate_s_and_connects() {
    let ca = DevCa::new("orders").unwrap();
    let m0 = member(&ca, "m0", &[]).await;
    converge(&[&m0], 1, 0).await;
    let seed = addr(&m0).await;
    let c = Grid::client()
        .cluster("orders")
        .seeds([seed.to_string()])
        .tls(ca.issue_as("c7", Role::Client).unwrap())
        .gossip_interval(Duration::from_millis(50))
        .connect()
        .await
        .expect("a client with no node id set connects");
    assert_eq!(c.cluster_diagnostics().await.unwrap().node_id, "c7");
    converge(&[&m0, &c], 1, 1).await;
}
