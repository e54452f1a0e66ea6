//! chitchat gossip carried over the nodes' QUIC endpoints: nodes discover
//! each other from seeds, see each other's published state, and the failure
//! detector notices a node that stops answering.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::transport::Transport as _;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use hydracache::cluster::{
    gossip_keys, DevCa, GossipInbox, Handler, PeerIdentity, QuicGossip, Reply, Transport,
};
use hydracache_protocol::{Hello, Limits, Message, Role};

/// A frame handler that feeds gossip to chitchat.
struct GossipOnly(GossipInbox);

impl Handler for GossipOnly {
    fn request<'a>(&'a self, _peer: &'a PeerIdentity, message: Message) -> Reply<'a> {
        Box::pin(async move { message })
    }
    fn message(&self, peer: &PeerIdentity, message: Message) {
        if let Message::Gossip(bytes) = message {
            self.0.deliver(peer.addr, &bytes);
        }
    }
}

struct Node {
    transport: Transport,
    chitchat: ChitchatHandle,
}

async fn start(ca: &DevCa, id: &str, seeds: &[SocketAddr]) -> Node {
    let tls = ca.issue(id).unwrap();
    let transport = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &tls,
        Hello::new("orders", (id, 1), Role::Member),
        Limits::default(),
    )
    .unwrap();
    let (gossip, inbox) = QuicGossip::new(transport.clone());
    transport.serve(Arc::new(GossipOnly(inbox)));
    let addr = transport.local_addr();
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(id.to_string(), 1, addr),
        cluster_id: "orders".to_string(),
        gossip_interval: Duration::from_millis(50),
        listen_addr: addr,
        seed_nodes: seeds.iter().map(|s| s.to_string()).collect(),
        failure_detector_config: FailureDetectorConfig {
            initial_interval: Duration::from_millis(50),
            dead_node_grace_period: Duration::from_secs(60),
            ..Default::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(60),
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    let kvs = vec![
        (gossip_keys::ROLE.to_string(), "member".to_string()),
        (gossip_keys::ADDR.to_string(), addr.to_string()),
    ];
    let chitchat = spawn_chitchat(config, kvs, &gossip).await.unwrap();
    // The transport can be opened once: chitchat owns the socket now.
    assert!(gossip.open(addr).await.is_err());
    Node {
        transport,
        chitchat,
    }
}

async fn live_ids(node: &Node) -> Vec<String> {
    let chitchat = node.chitchat.chitchat();
    let guard = chitchat.lock().await;
    let mut ids: Vec<String> = guard
        .live_nodes()
        .map(|id| id.node_id.to_string())
        .collect();
    ids.sort();
    ids
}

/// Polls `check` up to `rounds` times, 50 ms apart (gossip rounds are 50 ms).
async fn eventually<F, Fut>(rounds: usize, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..rounds {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_discover_each_other_and_their_state_over_quic() {
    let ca = DevCa::new("orders").unwrap();
    let a = start(&ca, "a", &[]).await;
    let seed = a.transport.local_addr();
    let b = start(&ca, "b", &[seed]).await;
    let c = start(&ca, "c", &[seed]).await;
    let all = vec!["a".to_string(), "b".to_string(), "c".to_string()];
    for node in [&a, &b, &c] {
        assert!(
            eventually(200, || async { live_ids(node).await == all }).await,
            "every node sees all three: {:?}",
            live_ids(node).await
        );
    }
    // Published state travels too.
    let chitchat = c.chitchat.chitchat();
    let guard = chitchat.lock().await;
    let a_id = guard
        .live_nodes()
        .find(|id| &*id.node_id == "a")
        .unwrap()
        .clone();
    let a_state = guard.node_state(&a_id).unwrap();
    assert_eq!(a_state.get(gossip_keys::ROLE), Some("member"));
    assert_eq!(
        a_state.get(gossip_keys::ADDR),
        Some(seed.to_string().as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_is_declared_dead_by_the_failure_detector() {
    let ca = DevCa::new("orders").unwrap();
    let a = start(&ca, "a", &[]).await;
    let seed = a.transport.local_addr();
    let b = start(&ca, "b", &[seed]).await;
    let c = start(&ca, "c", &[seed]).await;
    assert!(eventually(200, || async { live_ids(&a).await.len() == 3 }).await);
    c.chitchat.shutdown().await.unwrap();
    c.transport.close().await;
    assert!(
        eventually(400, || async {
            live_ids(&a).await == ["a", "b"] && live_ids(&b).await == ["a", "b"]
        })
        .await,
        "c is dead for a and b: {:?} {:?}",
        live_ids(&a).await,
        live_ids(&b).await
    );
}
