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
