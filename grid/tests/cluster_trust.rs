//! What a certificate holder that Raft never admitted can do to a grid over
//! real sockets: it is authenticated, so it may speak for itself, but it may
//! not relay in other nodes' names or push a membership.

use std::net::SocketAddr;
use std::sync::Arc;

use hydracache::cluster::{DevCa, Handler, PeerIdentity, Reply, Transport};
use hydracache::CacheOptions;
use hydracache_protocol::{
    ErrorCode, Hello, HighWater, Invalidate, Limits, Member, Message, MetadataSnapshot,
    NodeIdentity, Role, Target,
};

mod cluster_support;
use cluster_support::{addr, client, converge, eventually, member_builder, GOSSIP};

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
async fn a_process_speaks_for_itself_only_at_its_own_generation() {
    let ca = DevCa::new("orders").unwrap();
    let m = member_builder(&ca, "m", &[]).start().await.unwrap();
    let at = addr(&m).await;
    converge(&[&m], 1, 0).await;
    // A process holding z's certificate, connected at generation 1, names
    // a generation of z it is not: had m taken it, z's window would sit at
    // that generation and the real z's later numbers would be refused.
    let z = stranger(&ca, "z");
    let forged = NodeIdentity::new("z", u64::MAX);
    let (_, reply) = z
        .request(
            at,
            Message::HighWater(HighWater {
                origin: forged.clone(),
                sequence: 5,
            }),
        )
        .await
        .unwrap();
    assert!(
        matches!(reply, Message::Error { code, .. } if code == ErrorCode::REFUSED),
        "{reply:?}"
    );
    let (_, reply) = z.request(at, invalidate(forged, "k")).await.unwrap();
    assert!(
        matches!(reply, Message::Error { code, .. } if code == ErrorCode::REFUSED),
        "{reply:?}"
    );
    // In its own generation it is heard.
    let (_, reply) = z
        .request(
            at,
            Message::HighWater(HighWater {
                origin: NodeIdentity::new("z", 1),
                sequence: 0,
            }),
        )
        .await
        .unwrap();
    assert!(matches!(reply, Message::InvalidateAck { .. }), "{reply:?}");
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

/// A raw QUIC client with a valid certificate from `ca` that speaks no
/// protocol at all: it only completes TLS.
fn raw_quic(ca: &DevCa, id: &str) -> quinn::Endpoint {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = ca.issue_pem(id).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(pem.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(pem.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    tls.alpn_protocols = vec![hydracache::cluster::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_floods_streams_oversized_frames_and_slow_hellos_leaves_the_node_serving() {
    let ca = DevCa::new("orders").unwrap();
    let node = stranger(&ca, "node");
    let at = node.local_addr();

    // Slow Hellos: the stream is opened and a byte sent, never the rest.
    let raw = raw_quic(&ca, "slow");
    let mut slow = Vec::new();
    for _ in 0..20 {
        let conn = raw
            .connect(at, hydracache::cluster::SERVER_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        send.write_all(&[0x48]).await.unwrap();
        slow.push((conn, send));
    }

    // A flooder whose own limits let it send frames far over the node's.
    let flooder = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue("flooder").unwrap(),
        Hello::new("orders", ("flooder", 1), Role::Member),
        Limits {
            max_frame_len: 64 << 20,
            ..Limits::default()
        },
    )
    .unwrap();
    let huge = bytes::Bytes::from(vec![7u8; 3 << 20]);
    for _ in 0..8 {
        let _ = flooder.send(at, Message::Gossip(huge.clone())).await;
    }
    let oversized = Message::Raft(bytes::Bytes::from(vec![7u8; 17 << 20]));
    assert!(
        flooder.request(at, oversized).await.is_err(),
        "a request over the frame limit is not served"
    );
    // A thousand requests at once: more than one connection may open
    // streams, so they queue; every one is answered.
    let answered = futures_util::future::join_all((0..1_000).map(|nonce| {
        let flooder = flooder.clone();
        async move { flooder.request(at, Message::Ping { nonce }).await.is_ok() }
    }))
    .await;
    assert!(
        answered.iter().all(|ok| *ok),
        "every queued request was served"
    );

    // Meanwhile an honest peer is served, and the slow Hellos were cut off
    // at the Hello deadline.
    let honest = stranger(&ca, "honest");
    honest
        .request(at, Message::Ping { nonce: 1 })
        .await
        .unwrap();
    for (conn, _send) in &slow {
        let closed = tokio::time::timeout(std::time::Duration::from_secs(30), conn.closed()).await;
        assert!(closed.is_ok(), "a Hello that never completes is cut off");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_gossip_only_with_members_and_no_peer_refuses_their_gossip() {
    let ca = DevCa::new("orders").unwrap();
    let m1 = member_builder(&ca, "m1", &[]).start().await.unwrap();
    let seed = addr(&m1).await;
    let m2 = member_builder(&ca, "m2", &[seed]).start().await.unwrap();
    let c1 = client(&ca, "c1", &[seed]).await;
    let c2 = client(&ca, "c2", &[seed]).await;
    converge(&[&m1, &m2, &c1, &c2], 2, 2).await;
    // Each client hears of the other through gossip; chitchat would pick
    // it as a gossip target round after round.
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for c in [&c1, &c2] {
            v.push(c.cluster_diagnostics().await.unwrap().gossip_messages_sent);
        }
        v
    };
    tokio::time::sleep(GOSSIP * 40).await;
    for (c, sent_before) in [&c1, &c2].into_iter().zip(before) {
        let d = c.cluster_diagnostics().await.unwrap();
        assert!(
            d.gossip_messages_sent > sent_before,
            "{}: gossip runs",
            d.node_id
        );
        assert_eq!(d.gossip_refused, 0, "{}: gossip to a client", d.node_id);
        assert_eq!(d.gossip_live, 4, "{}: sees every node live", d.node_id);
    }
    for m in [&m1, &m2] {
        assert_eq!(m.cluster_diagnostics().await.unwrap().gossip_refused, 0);
    }
}

/// Hands a node's gossip frames to its chitchat (a node does the same).
struct GossipOnly(hydracache::cluster::GossipInbox);

impl Handler for GossipOnly {
    fn request<'a>(&'a self, _: &'a PeerIdentity, _: Message) -> Reply<'a> {
        Box::pin(async { Message::Pong { nonce: 0 } })
    }
    fn message(&self, peer: &PeerIdentity, message: Message) {
        if let Message::Gossip(bytes) = message {
            self.0.deliver(peer.addr, &bytes);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_high_water_mark_in_gossip_does_not_hide_a_missed_tail() {
    use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatId, FailureDetectorConfig};
    use hydracache::cluster::QuicGossip;
    use std::time::Duration;

    // Holes are loss after 1 s.
    let quick = |b: hydracache::cluster::NodeBuilder| {
        b.ack_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_millis(500))
    };
    let ca = DevCa::new("orders").unwrap();
    let a = quick(member_builder(&ca, "a", &[])).start().await.unwrap();
    let seed = addr(&a).await;
    let x = quick(member_builder(&ca, "x", &[seed]))
        .start()
        .await
        .unwrap();
    converge(&[&a, &x], 2, 0).await;
    let a_generation = a.cluster_diagnostics().await.unwrap().generation;

    // A member-certificate holder gossips a state for the admitted origin
    // "a" at its real generation, with a high-water mark far above a's.
    let transport = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue("rogue").unwrap(),
        Hello::new("orders", ("rogue", 1), Role::Member),
        Limits::default(),
    )
    .unwrap();
    let at = transport.local_addr();
    let (gossip, inbox) = QuicGossip::new(transport.clone());
    transport.serve(Arc::new(GossipOnly(inbox)));
    let forged = [
        ("role", "member".to_string()),
        ("addr", seed.to_string()),
        ("inv_hwm", "1000".to_string()),
    ];
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new("a".to_string(), a_generation, at),
        cluster_id: "orders".to_string(),
        gossip_interval: GOSSIP,
        listen_addr: at,
        seed_nodes: vec![seed.to_string()],
        failure_detector_config: FailureDetectorConfig {
            initial_interval: GOSSIP,
            ..Default::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    let kvs = forged
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let _rogue = spawn_chitchat(config, kvs, &gossip).await.unwrap();
    // Long enough for the forged mark to reach x and, a hint a never
    // confirms, flush x once; had x taken it as a mark, the holes it opened
    // would have been flushed over and taken as seen.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The rogue's gossip under a's id and generation makes gossip's verdict
    // on a flap; a dead verdict removes a process only once it has held
    // (and never one that speaks for itself over its own connection), so a
    // stays admitted.
    for n in [&a, &x] {
        let d = n.cluster_diagnostics().await.unwrap();
        assert_eq!(d.members, ["a", "x"], "a forged heartbeat removed a member");
    }
    let d = a.cluster_diagnostics().await.unwrap();
    assert_eq!((d.generation, d.removed), (a_generation, false));

    // x now misses a real tail from a: one invalidation, then a goes quiet.
    a.put("k", 1u8, CacheOptions::new()).await.unwrap();
    assert_eq!(x.get::<u8>("k").await.unwrap(), Some(1));
    assert!(x.contains_key("k").await, "a near copy on x");
    x.simulate_lost_invalidations(true);
    assert!(a.invalidate_key("k").await.is_err(), "x is named");
    x.simulate_lost_invalidations(false);
    // a's own word about its mark opens the hole, which outlives its bound.
    assert!(
        eventually(async || !x.contains_key("k").await).await,
        "x still serves the invalidated k: the forged mark hid the missed tail"
    );
}

fn view_of(epoch: u64, members: &[(&str, Role, SocketAddr)]) -> Message {
    Message::MetadataSnapshot(MetadataSnapshot {
        epoch,
        members: members
            .iter()
            .map(|&(id, role, address)| Member {
                node: NodeIdentity::new(id, 1),
                role,
                address,
            })
            .collect(),
    })
}

/// Sends `view` one way, then waits until the node has served a request
/// from the same peer and a few gossip rounds have passed.
async fn push(from: &Transport, to: SocketAddr, view: Message) {
    from.send(to, view).await.unwrap();
    from.request(to, Message::Ping { nonce: 1 }).await.unwrap();
    tokio::time::sleep(GOSSIP * 4).await;
}

/// Notes the address of the client that gossips to it.
struct NoteClient(std::sync::Mutex<Option<SocketAddr>>);

impl Handler for NoteClient {
    fn request<'a>(&'a self, _: &'a PeerIdentity, _: Message) -> Reply<'a> {
        Box::pin(async { Message::Pong { nonce: 0 } })
    }
    fn message(&self, peer: &PeerIdentity, _: Message) {
        if peer.role == Role::Client {
            *self.0.lock().unwrap() = Some(peer.addr);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_takes_its_first_view_only_from_a_seed_that_view_admits() {
    let ca = DevCa::new("orders").unwrap();
    // The member certificate holder the client was pointed at as its seed.
    let seed = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue("rogue").unwrap(),
        Hello::new("orders", ("rogue", 1), Role::Member),
        Limits::default(),
    )
    .unwrap();
    let noted = Arc::new(NoteClient(std::sync::Mutex::new(None)));
    seed.serve(noted.clone());
    let r = seed.local_addr();
    let connecting = tokio::spawn(
        hydracache::Grid::client()
            .cluster("orders")
            .node_id("c")
            .seeds([r.to_string()])
            .tls(ca.issue_as("c", Role::Client).unwrap())
            .gossip_interval(GOSSIP)
            .connect_timeout(std::time::Duration::from_secs(30))
            .connect(),
    );
    assert!(
        eventually(async || noted.0.lock().unwrap().is_some()).await,
        "the client gossips to its seed"
    );
    let c_addr = noted.0.lock().unwrap().unwrap();
    // Views that do not admit their sender as a member are not taken: the
    // client still waits for a membership naming a member.
    push(&seed, c_addr, view_of(7, &[("m1", Role::Member, r)])).await;
    push(&seed, c_addr, view_of(7, &[("rogue", Role::Client, r)])).await;
    assert!(!connecting.is_finished(), "a view was taken");
    // A member certificate that is not one of the client's seeds is not
    // taken for a first view, even one that admits it.
    let stranger_first = stranger(&ca, "stranger");
    let s = stranger_first.local_addr();
    push(
        &stranger_first,
        c_addr,
        view_of(8, &[("stranger", Role::Member, s)]),
    )
    .await;
    assert!(!connecting.is_finished(), "a stranger's view was taken");
    // The seed's word that admits it is believed on first contact: the
    // seeds a node is configured with, and member certificates, are the
    // trust root (docs/security.md).
    seed.send(c_addr, view_of(7, &[("rogue", Role::Member, r)]))
        .await
        .unwrap();
    let client = connecting.await.unwrap().unwrap();
    let d = client.cluster_diagnostics().await.unwrap();
    assert_eq!((d.epoch, d.members), (7, vec!["rogue".to_string()]));
    // From then on, only a member of that view, and only a newer epoch.
    let other = stranger(&ca, "other");
    let o = other.local_addr();
    push(&other, c_addr, view_of(9, &[("other", Role::Member, o)])).await;
    push(&seed, c_addr, view_of(7, &[("other", Role::Member, o)])).await;
    let d = client.cluster_diagnostics().await.unwrap();
    assert_eq!((d.epoch, d.members), (7, vec!["rogue".to_string()]));
}

/// Counts the requests it is serving at once, and answers each after a
/// millisecond with a 1 KiB reply.
#[derive(Default)]
struct Counting {
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    served: std::sync::atomic::AtomicUsize,
}

impl Handler for Counting {
    fn request<'a>(&'a self, _: &'a PeerIdentity, _: Message) -> Reply<'a> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            let now = self.now.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            self.now.fetch_sub(1, SeqCst);
            self.served.fetch_add(1, SeqCst);
            Message::Gossip(bytes::Bytes::from(vec![1u8; 1 << 10]))
        })
    }
    fn message(&self, _: &PeerIdentity, _: Message) {}
}

fn frame_bytes(request_id: u64, message: Message) -> bytes::BytesMut {
    let mut buf = bytes::BytesMut::new();
    hydracache_protocol::Frame::new(request_id, message)
        .encode(&Limits::default(), &mut buf)
        .unwrap();
    buf
}

/// A raw QUIC connection to `at` that has completed the Hello handshake as
/// member `id`, to write frames by hand.
async fn raw_member(ca: &DevCa, at: SocketAddr, id: &str) -> (quinn::Endpoint, quinn::Connection) {
    let raw = raw_quic(ca, id);
    let conn = raw
        .connect(at, hydracache::cluster::SERVER_NAME)
        .unwrap()
        .await
        .unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let hello = Hello::new("orders", (id, 1), Role::Member);
    send.write_all(&frame_bytes(0, Message::Hello(hello)))
        .await
        .unwrap();
    send.finish().unwrap();
    recv.read_to_end(4096).await.unwrap();
    (raw, conn)
}

fn decode_all(bytes: Vec<u8>) -> Vec<hydracache_protocol::Frame> {
    let mut buf = bytes::BytesMut::from(&bytes[..]);
    let mut frames = Vec::new();
    while let Some(frame) =
        hydracache_protocol::Frame::decode_from(&mut buf, &Limits::default()).unwrap()
    {
        frames.push(frame);
    }
    assert!(buf.is_empty(), "whole frames only");
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_streams_get_typed_answers_or_end() {
    let ca = DevCa::new("orders").unwrap();
    let node = stranger(&ca, "node");
    let (_raw, conn) = raw_member(&ca, node.local_addr(), "prober").await;
    let ping = |nonce| Message::Ping { nonce };

    // A one-shot stream (request id 0) with a second frame after the first.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut two = frame_bytes(0, ping(1));
    two.extend_from_slice(&frame_bytes(0, ping(2)));
    send.write_all(&two).await.unwrap();
    send.finish().unwrap();
    let answer = decode_all(recv.read_to_end(1 << 16).await.unwrap());
    assert!(
        matches!(&answer[..], [f] if matches!(f.message, Message::Error { code, .. } if code == hydracache_protocol::ErrorCode::PROTOCOL)),
        "{answer:?}"
    );

    // A multiplexed stream whose second request has no id: the first is
    // answered with its id, then the stream ends.
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut frames = frame_bytes(7, ping(1));
    frames.extend_from_slice(&frame_bytes(0, ping(2)));
    send.write_all(&frames).await.unwrap();
    let answer = decode_all(recv.read_to_end(1 << 16).await.unwrap());
    assert_eq!(answer.len(), 1, "{answer:?}");
    assert_eq!(answer[0].request_id, 7);
    drop(send);

    // More multiplexed streams than a connection may have: the one past
    // the limit is refused as overloaded, with its request's id.
    let mut open = Vec::new();
    for id in 0..hydracache::cluster::MAX_MUX_STREAMS as u64 {
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&frame_bytes(100 + id, ping(id)))
            .await
            .unwrap();
        let mut reply = vec![0u8; 32];
        recv.read_exact(&mut reply).await.unwrap();
        assert_eq!(decode_all(reply)[0].request_id, 100 + id);
        open.push((send, recv));
    }
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame_bytes(9, ping(9))).await.unwrap();
    let answer = decode_all(recv.read_to_end(1 << 16).await.unwrap());
    assert!(
        matches!(&answer[..], [f] if f.request_id == 9 && matches!(f.message, Message::Error { code, .. } if code == hydracache_protocol::ErrorCode::OVERLOADED)),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_floods_a_multiplexed_stream_and_never_reads_is_held_by_flow_control() {
    use std::sync::atomic::Ordering::SeqCst;
    let ca = DevCa::new("orders").unwrap();
    let counting = Arc::new(Counting::default());
    let node = Transport::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ca.issue("node").unwrap(),
        Hello::new("orders", ("node", 1), Role::Member),
        Limits::default(),
    )
    .unwrap();
    node.serve(Arc::clone(&counting) as Arc<dyn Handler>);
    let at = node.local_addr();

    // A member that completes the handshake, then writes requests with ids
    // on one stream as fast as it can and never reads a reply.
    let (_raw, conn) = raw_member(&ca, at, "flooder").await;
    let (mut flood, _replies_never_read) = conn.open_bi().await.unwrap();
    const SENT: u64 = 20_000;
    let request = Message::Gossip(bytes::Bytes::from(vec![2u8; 512]));
    let flooding = tokio::spawn(async move {
        for id in 1..=SENT {
            flood
                .write_all(&frame_bytes(id, request.clone()))
                .await
                .unwrap();
        }
    });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;

    // Served at most the per-stream bound at once; once the replies filled
    // the flooder's receive window, the node stopped reading, and the
    // flooder's own writes stopped (10 MB of requests against a 1 MiB window).
    let most = counting.most.load(SeqCst);
    assert!(
        most <= hydracache::cluster::MAX_MUX_IN_FLIGHT,
        "at most {} at once, saw {most}",
        hydracache::cluster::MAX_MUX_IN_FLIGHT
    );
    let served = counting.served.load(SeqCst) as u64;
    assert!(served < SENT / 4, "held back, not served all: {served}");
    assert!(!flooding.is_finished(), "the flooder's writes are held");

    // Meanwhile an honest peer is served, multiplexed and one-shot.
    let honest = stranger(&ca, "honest");
    let fetch = Message::Fetch(hydracache_protocol::Fetch {
        epoch: 1,
        key: bytes::Bytes::from_static(b"k"),
    });
    honest.request(at, fetch).await.unwrap();
    honest
        .request(at, Message::Ping { nonce: 1 })
        .await
        .unwrap();
    flooding.abort();
    conn.close(0u32.into(), b"done");
}
