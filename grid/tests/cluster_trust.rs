//! What a certificate holder that Raft never admitted can do to a grid over
//! real sockets: it is authenticated, so it may speak for itself, but it may
//! not relay in other nodes' names or push a membership.

use std::net::SocketAddr;
use std::sync::Arc;

use hydracache::cluster::{DevCa, Handler, PeerIdentity, Reply, Transport};
use hydracache::CacheOptions;
use hydracache_protocol::{
    Hello, Invalidate, Limits, Member, Message, MetadataSnapshot, NodeIdentity, Role, Target,
};

mod cluster_support;
use cluster_support::{addr, client, converge, member_builder, GOSSIP};

struct Quiet;

impl Handler for Quiet {
    fn request<'a>(&'a self, _: &'a PeerIdentity, _: Message) -> Reply<'a> {
        Box::pin(async { Message::Pong { nonce: 0 } })
    }
    fn message(&self, _: &PeerIdentity, _: Message) {}
}

/// A process holding a valid member certificate for `id` that never joined.
fn stranger(ca: &DevCa, id: &str) -> Transport {
    let t = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue(id).unwrap(),
        Hello::new("orders", (id, 1), Role::Member),
        Limits::default(),
    )
    .unwrap();
    t.serve(Arc::new(Quiet));
    t
}

fn invalidate(origin: NodeIdentity, key: &'static str) -> Message {
    Message::Invalidate(Invalidate {
        origin,
        sequence: 1,
        epoch: 0,
        target: Target::Key(bytes::Bytes::from_static(key.as_bytes())),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unadmitted_member_certificate_can_neither_relay_to_a_client_nor_push_it_a_view() {
    let ca = DevCa::new("orders").unwrap();
    let m = member_builder(&ca, "m", &[]).start().await.unwrap();
    let seed = addr(&m).await;
    let c = client(&ca, "c", &[seed]).await;
    converge(&[&m, &c], 1, 1).await;
    m.put("k", 1u8, CacheOptions::new()).await.unwrap();
    assert_eq!(c.get::<u8>("k").await.unwrap(), Some(1));
    assert!(c.contains_key("k").await, "a near copy on the client");
    let c_addr: SocketAddr = addr(&c).await;
    let before = c.cluster_diagnostics().await.unwrap();

    let rogue = stranger(&ca, "rogue");
    // Relaying in the name of the real member, or of another client.
    for origin in [NodeIdentity::new("m", 1), NodeIdentity::new("c9", 1)] {
        let (_, reply) = rogue
            .request(c_addr, invalidate(origin.clone(), "k"))
            .await
            .unwrap();
        assert!(
            matches!(reply, Message::Error { .. }),
            "{origin:?}: {reply:?}"
        );
        rogue.send(c_addr, invalidate(origin, "k")).await.unwrap();
    }
    // Pushing a membership in which it owns every key.
    let rogue_member = Member {
        node: NodeIdentity::new("rogue", 1),
        role: Role::Member,
        address: rogue.local_addr(),
    };
    let snapshot = MetadataSnapshot {
        epoch: before.epoch + 1_000,
        members: vec![rogue_member],
    };
    rogue
        .send(c_addr, Message::MetadataSnapshot(snapshot))
        .await
        .unwrap();
    // One-way messages are served concurrently: give them a few gossip
    // rounds, then show nothing was taken.
    rogue
        .request(c_addr, Message::Ping { nonce: 1 })
        .await
        .unwrap();
    tokio::time::sleep(GOSSIP * 4).await;
    assert!(c.contains_key("k").await, "the forged relay was applied");
    let after = c.cluster_diagnostics().await.unwrap();
    assert_eq!(after.epoch, before.epoch, "the forged view was adopted");
    assert_eq!(after.members, ["m"]);
    assert_eq!(after.raft_leader.as_deref(), Some("m"));
    // The real member still reaches it.
    m.invalidate_key("k").await.unwrap();
    assert!(!c.contains_key("k").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_does_not_take_a_view_from_an_unadmitted_peer() {
    let ca = DevCa::new("orders").unwrap();
    let m = member_builder(&ca, "m", &[]).start().await.unwrap();
    converge(&[&m], 1, 0).await;
    let m_addr = addr(&m).await;
    let epoch = m.cluster_diagnostics().await.unwrap().epoch;
    let rogue = stranger(&ca, "rogue");
    let snapshot = MetadataSnapshot {
        epoch: epoch + 1_000,
        members: vec![Member {
            node: NodeIdentity::new("rogue", 1),
            role: Role::Member,
            address: rogue.local_addr(),
        }],
    };
    rogue
        .send(m_addr, Message::MetadataSnapshot(snapshot))
        .await
        .unwrap();
    rogue
        .request(m_addr, Message::Ping { nonce: 1 })
        .await
        .unwrap();
    tokio::time::sleep(GOSSIP * 4).await;
    let d = m.cluster_diagnostics().await.unwrap();
    assert_eq!((d.epoch, d.members), (epoch, vec!["m".to_string()]));
}
