//! The cluster transport: mutual TLS on one UDP port, the Hello handshake,
//! and requests carried as protocol frames.

use std::net::SocketAddr;
use std::sync::Arc;

use hydracache::cluster::{
    DevCa, Handler, PeerIdentity, Reply, TlsConfig, Transport, TransportError,
};
use hydracache_protocol::{Hello, Limits, Message, Role};
use rustls::pki_types::pem::PemObject;

struct Echo;

impl Handler for Echo {
    fn request<'a>(&'a self, _peer: &'a PeerIdentity, message: Message) -> Reply<'a> {
        Box::pin(async move {
            match message {
                Message::Ping { nonce } => Message::Pong { nonce },
                other => other,
            }
        })
    }
    fn message(&self, _peer: &PeerIdentity, _message: Message) {}
}

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn node(tls: &TlsConfig, cluster: &str, id: &str, generation: u64, role: Role) -> Transport {
    let t = Transport::bind(
        local(),
        tls,
        Hello::new(cluster, (id, generation), role),
        Limits::default(),
    )
    .unwrap();
    t.serve(Arc::new(Echo));
    t
}

#[tokio::test]
async fn members_of_one_ca_exchange_frames_and_know_who_answered() {
    let ca = DevCa::new("orders").unwrap();
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    let b = node(&ca.issue("b").unwrap(), "orders", "b", 7, Role::Member);
    for nonce in 0..10 {
        let (peer, reply) = b
            .request(a.local_addr(), Message::Ping { nonce })
            .await
            .unwrap();
        assert_eq!(reply, Message::Pong { nonce });
        assert_eq!(
            (peer.node_id.as_str(), peer.generation, peer.role),
            ("a", 1, Role::Member)
        );
    }
    assert_eq!(
        b.connected_peers().len(),
        1,
        "one connection, reused for every request"
    );
    // The accepting side reuses the same connection for its own requests.
    let (peer, _) = a
        .request(b.local_addr(), Message::Ping { nonce: 99 })
        .await
        .unwrap();
    assert_eq!(peer.node_id, "b");
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let ca = DevCa::new("orders").unwrap();
    let rogue_ca = DevCa::new("orders").unwrap();
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    let rogue = node(
        &rogue_ca.issue("x").unwrap(),
        "orders",
        "x",
        1,
        Role::Member,
    );
    let err = rogue
        .request(a.local_addr(), Message::Ping { nonce: 1 })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransportError::Connect { .. } | TransportError::Refused { .. }
        ),
        "{err:?}"
    );
    // And the other way round: a refuses rogue's certificate as a server.
    let err = a
        .request(rogue.local_addr(), Message::Ping { nonce: 1 })
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let ca = DevCa::new("orders").unwrap();
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    // A QUIC client that trusts the CA but presents no certificate.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut crypto = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    crypto.alpn_protocols = vec![hydracache::cluster::ALPN.to_vec()];
    let client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap(),
    ));
    let endpoint = quinn::Endpoint::client(local()).unwrap();
    let result = async {
        let conn = endpoint
            .connect_with(client, a.local_addr(), hydracache::cluster::SERVER_NAME)?
            .await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send.write_all(b"anything").await?;
        send.finish()?;
        Ok::<_, Box<dyn std::error::Error>>(recv.read_to_end(1024).await?)
    }
    .await;
    assert!(
        result.is_err(),
        "no certificate, no conversation: {result:?}"
    );
}

#[tokio::test]
async fn another_cluster_name_is_refused_with_a_reason() {
    let ca = DevCa::new("orders").unwrap();
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    let b = node(&ca.issue("b").unwrap(), "billing", "b", 1, Role::Member);
    match b.request(a.local_addr(), Message::Ping { nonce: 1 }).await {
        Err(TransportError::Refused { reason, .. }) => {
            assert!(reason.contains("cluster"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_hello_must_claim_the_node_id_its_certificate_was_issued_for() {
    let ca = DevCa::new("orders").unwrap();
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    // A certificate issued to "impostor", presenting itself as "a".
    let impostor = node(
        &ca.issue("impostor").unwrap(),
        "orders",
        "a",
        9,
        Role::Member,
    );
    match impostor
        .request(a.local_addr(), Message::Ping { nonce: 1 })
        .await
    {
        Err(TransportError::Refused { reason, .. }) => {
            assert!(reason.contains("certificate"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // The refused claim did not raise a's idea of node a's generation.
    let b = node(&ca.issue("b").unwrap(), "orders", "b", 1, Role::Member);
    b.request(a.local_addr(), Message::Ping { nonce: 2 })
        .await
        .unwrap();
}

#[tokio::test]
async fn an_older_generation_of_a_restarted_node_is_refused() {
    let ca = DevCa::new("orders").unwrap();
    let tls = ca.issue("n").unwrap();
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    let new = node(&tls, "orders", "n", 2, Role::Member);
    new.request(a.local_addr(), Message::Ping { nonce: 1 })
        .await
        .unwrap();
    let old = node(&tls, "orders", "n", 1, Role::Member);
    match old
        .request(a.local_addr(), Message::Ping { nonce: 1 })
        .await
    {
        Err(TransportError::Refused { reason, .. }) => {
            assert!(reason.contains("generation"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // The newer generation keeps working.
    new.request(a.local_addr(), Message::Ping { nonce: 2 })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_dialed_peer_that_answers_as_another_node_is_refused() {
    let ca = DevCa::new("orders").unwrap();
    // A peer with a valid certificate for "evil" whose HelloAck says it is
    // "n2": the accepting side's own checks do not stop it lying back.
    let liar = node(&ca.issue("evil").unwrap(), "orders", "n2", 1, Role::Member);
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    match a
        .request(liar.local_addr(), Message::Ping { nonce: 1 })
        .await
    {
        Err(TransportError::Refused { reason, .. }) => {
            assert!(reason.contains("evil"), "{reason}")
        }
        other => panic!("the lie was believed: {other:?}"),
    }
    assert!(a.connected_peers().is_empty(), "no connection kept");
}

#[tokio::test]
async fn an_older_generation_is_refused_on_dial_too() {
    let ca = DevCa::new("orders").unwrap();
    let tls = ca.issue("n").unwrap();
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    let new = node(&tls, "orders", "n", 2, Role::Member);
    a.request(new.local_addr(), Message::Ping { nonce: 1 })
        .await
        .unwrap();
    // The old process, still running elsewhere, answers a's dial.
    let old = node(&tls, "orders", "n", 1, Role::Member);
    match a
        .request(old.local_addr(), Message::Ping { nonce: 2 })
        .await
    {
        Err(TransportError::Refused { reason, .. }) => {
            assert!(reason.contains("generation"), "{reason}")
        }
        other => panic!("the old generation was believed: {other:?}"),
    }
}

#[tokio::test]
async fn a_client_certificate_cannot_join_as_a_member_in_either_direction() {
    let ca = DevCa::new("orders").unwrap();
    let member = node(&ca.issue("m").unwrap(), "orders", "m", 1, Role::Member);
    let client_tls = ca.issue_as("c", Role::Client).unwrap();
    // It dials and says it is a member.
    let posing = node(&client_tls, "orders", "c", 1, Role::Member);
    match posing
        .request(member.local_addr(), Message::Ping { nonce: 1 })
        .await
    {
        Err(TransportError::Refused { reason, .. }) => {
            assert!(reason.contains("client role"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // It is dialed and answers that it is a member.
    match member
        .request(posing.local_addr(), Message::Ping { nonce: 2 })
        .await
    {
        Err(TransportError::Refused { reason, .. }) => {
            assert!(reason.contains("client role"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // As a client it is served.
    let client = node(&client_tls, "orders", "c", 2, Role::Client);
    let (peer, _) = client
        .request(member.local_addr(), Message::Ping { nonce: 3 })
        .await
        .unwrap();
    assert_eq!(peer.node_id, "m");
}

#[tokio::test]
async fn clients_talk_to_members_but_not_to_clients() {
    let ca = DevCa::new("orders").unwrap();
    let member = node(&ca.issue("m").unwrap(), "orders", "m", 1, Role::Member);
    let c1 = node(&ca.issue("c1").unwrap(), "orders", "c1", 1, Role::Client);
    let c2 = node(&ca.issue("c2").unwrap(), "orders", "c2", 1, Role::Client);
    c1.request(member.local_addr(), Message::Ping { nonce: 1 })
        .await
        .unwrap();
    assert!(matches!(
        c1.request(c2.local_addr(), Message::Ping { nonce: 1 })
            .await,
        Err(TransportError::Refused { .. })
    ));
}

/// UDP sockets of this process bound to `port`, by reading /proc (what
/// `ss -uanp` shows).
#[cfg(target_os = "linux")]
fn udp_sockets_on_port(port: u16) -> usize {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            for line in text.lines().skip(1) {
                let cols: Vec<&str> = line.split_whitespace().collect();
                let local_port = cols.get(1).and_then(|a| a.rsplit(':').next());
                if local_port.and_then(|p| u16::from_str_radix(p, 16).ok()) == Some(port) {
                    inodes.insert(cols[9].to_string());
                }
            }
        }
    }
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().to_string();
            l.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_string)
        })
        .filter(|i| inodes.contains(i))
        .count()
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_node_uses_exactly_one_udp_port_for_serving_and_connecting() {
    let ca = DevCa::new("orders").unwrap();
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    let b = node(&ca.issue("b").unwrap(), "orders", "b", 1, Role::Member);
    let c = node(&ca.issue("c").unwrap(), "orders", "c", 1, Role::Member);
    for (x, y) in [(&a, &b), (&b, &c), (&c, &a), (&a, &c)] {
        x.request(y.local_addr(), Message::Ping { nonce: 0 })
            .await
            .unwrap();
        x.send(y.local_addr(), Message::Ping { nonce: 1 })
            .await
            .unwrap();
    }
    let nodes = [&a, &b, &c];
    for n in nodes {
        assert_eq!(udp_sockets_on_port(n.local_addr().port()), 1);
        // Every connection, in either direction, comes from a peer's one port.
        for peer in n.connected_peers() {
            assert!(
                nodes.iter().any(|m| m.local_addr() == peer.addr),
                "{} talks from {}, not from its listening port",
                peer.node_id,
                peer.addr
            );
        }
    }
}

#[test]
fn pem_files_round_trip_and_bad_files_are_typed_errors() {
    let dir = std::env::temp_dir().join(format!("hydracache-certs-{}", std::process::id()));
    let ca = DevCa::new("orders").unwrap();
    ca.write_files(&dir, &["n1"]).unwrap();
    TlsConfig::from_pem_files(dir.join("ca.pem"), dir.join("n1.pem"), dir.join("n1.key")).unwrap();
    assert!(matches!(
        TlsConfig::from_pem_files(
            dir.join("missing.pem"),
            dir.join("n1.pem"),
            dir.join("n1.key")
        ),
        Err(hydracache::cluster::TlsError::Read { .. })
    ));
    assert!(matches!(
        TlsConfig::from_pem_files(dir.join("n1.key"), dir.join("n1.pem"), dir.join("n1.key")),
        Err(hydracache::cluster::TlsError::Pem { .. })
    ));
    // A key that does not match the certificate.
    let other = ca.issue_pem("n2").unwrap();
    let err = TlsConfig::from_pem(
        ca.ca_pem().as_bytes(),
        std::fs::read(dir.join("n1.pem")).unwrap().as_slice(),
        other.key_pem.as_bytes(),
    );
    assert!(err.is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_client_connections_come_and_go_and_the_maps_return_to_baseline() {
    let ca = DevCa::new("orders").unwrap();
    let member = node(&ca.issue("m").unwrap(), "orders", "m", 1, Role::Member);
    let at = member.local_addr();
    let baseline = member.sizes();
    assert_eq!((baseline.connections, baseline.generations), (0, 0));
    let mut peak = 0;
    for batch in 0..20 {
        let clients: Vec<Transport> = (0..50)
            .map(|i| {
                let id = format!("c{}", batch * 50 + i);
                node(&ca.issue(&id).unwrap(), "orders", &id, 1, Role::Client)
            })
            .collect();
        let pings = clients
            .iter()
            .map(|c| c.request(at, Message::Ping { nonce: 1 }));
        for answer in futures_util::future::join_all(pings).await {
            answer.unwrap();
        }
        peak = peak.max(member.sizes().connections);
        clients.iter().for_each(Transport::close_now);
    }
    assert!(
        peak >= 50,
        "the connections were tracked while open: {peak}"
    );
    // Bounded wait for the last closes to reach the member.
    for _ in 0..200 {
        if member.sizes() == baseline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        member.sizes(),
        baseline,
        "after 1,000 clients came and went"
    );
}

#[test]
fn a_peer_restarted_on_the_same_address_is_reached_at_once_not_after_the_idle_timeout() {
    let ca = DevCa::new("orders").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let a = rt.block_on(async { node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member) });
    // `b` runs on a runtime of its own, which is then dropped: its socket
    // goes away without a word to `a`, as a killed process's would.
    let b_tls = ca.issue("b").unwrap();
    let crashed = tokio::runtime::Runtime::new().unwrap();
    let b = crashed.block_on(async {
        let b = node(&b_tls, "orders", "b", 1, Role::Member);
        b.request(a.local_addr(), Message::Ping { nonce: 1 })
            .await
            .unwrap();
        b
    });
    let b_addr = b.local_addr();
    // The runtime goes first, with the tasks that would send a close frame;
    // then the socket.
    drop(crashed);
    drop(b);
    rt.block_on(async {
        // `a` reuses the connection `b` opened: it is alive for now.
        assert_eq!(a.connected_peers().len(), 1);
        // `b` restarts on the same port with a newer generation and speaks
        // to `a` first (gossip would).
        let b2 = Transport::bind(
            b_addr,
            &b_tls,
            Hello::new("orders", ("b", 2), Role::Member),
            Limits::default(),
        )
        .unwrap();
        b2.serve(Arc::new(Echo));
        b2.request(a.local_addr(), Message::Ping { nonce: 2 })
            .await
            .unwrap();
        // `a`'s next request reaches the new process: the old connection was
        // replaced, not kept until its 30 s idle timeout.
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            a.request(b_addr, Message::Ping { nonce: 3 }),
        )
        .await
        .expect("answered before the old connection's idle timeout")
        .unwrap();
        assert_eq!(answer.0.generation, 2);
        assert_eq!(answer.1, Message::Pong { nonce: 3 });
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_sends_to_a_fresh_peer_share_one_handshake() {
    let ca = DevCa::new("orders").unwrap();
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    let b = node(&ca.issue("b").unwrap(), "orders", "b", 1, Role::Member);
    let to = b.local_addr();
    let requests = (0..50).map(|nonce| a.request(to, Message::Ping { nonce }));
    let sends = (0..50).map(|nonce| a.send(to, Message::Ping { nonce }));
    let (answers, sent) = futures_util::future::join(
        futures_util::future::join_all(requests),
        futures_util::future::join_all(sends),
    )
    .await;
    for answer in answers {
        assert_eq!(answer.unwrap().0.node_id, "b");
    }
    for s in sent {
        s.unwrap();
    }
    assert_eq!(a.dials_started(), 1, "one handshake for 100 first sends");
    assert_eq!(a.open_connections(), 1, "no duplicate connection");
    assert_eq!(b.open_connections(), 1);
    assert_eq!(a.sizes().dials, 0, "nothing left dialling");
}

/// An address nothing answers at: a UDP socket that is bound (so that no
/// other test's endpoint can take the port, as one did when this was a
/// closed transport's address, and refused the dial) but never read.
/// Keep the socket alive while the address is used.
fn silent_address() -> (SocketAddr, std::net::UdpSocket) {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    (socket.local_addr().unwrap(), socket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sends_to_a_dead_address_dial_it_once_then_fail_fast() {
    let ca = DevCa::new("orders").unwrap();
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    let (dead, _silent) = silent_address();
    // Concurrent first sends wait for one dial, which times out.
    let sends = (0..20).map(|nonce| a.send(dead, Message::Ping { nonce }));
    for sent in futures_util::future::join_all(sends).await {
        assert!(sent.is_err());
    }
    assert_eq!(a.dials_started(), 1);
    // Then sends fail at once, naming why, until the back-off passes: 200
    // of them (each given 20 ms, far less than a dial to a silent address
    // takes) start at most one more dial.
    let mut unreachable = 0;
    for nonce in 0..200 {
        let send = a.send(dead, Message::Ping { nonce });
        match tokio::time::timeout(std::time::Duration::from_millis(20), send).await {
            Ok(Err(TransportError::Unreachable { reason, addr, .. })) => {
                assert_eq!(addr, dead);
                assert!(reason.contains("timed out"), "{reason}");
                unreachable += 1;
            }
            Ok(other) => assert!(other.is_err(), "{other:?}"),
            Err(_) => {} // waiting on a new dial
        }
    }
    assert!(unreachable > 0, "sends failed fast while backing off");
    assert!(a.dials_started() <= 2, "{} dials", a.dials_started());
    assert_eq!(a.sizes().dials, 1, "one address backed off from");
}

/// Binds a member at `addr` (just freed by another transport), retrying
/// for a bounded time while the old socket goes away.
async fn rebind(tls: &TlsConfig, addr: SocketAddr, id: &str, generation: u64) -> Transport {
    for _ in 0..100 {
        let hello = Hello::new("orders", (id, generation), Role::Member);
        if let Ok(t) = Transport::bind(addr, tls, hello, Limits::default()) {
            t.serve(Arc::new(Echo));
            return t;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("{addr} stayed taken");
}

/// `a`, and at `b`'s address first a peer that refuses `a` (another
/// cluster), then `b` itself: `a` backs off from the address, then it
/// comes back.
async fn refused_then_back(ca: &DevCa) -> (Transport, Transport, SocketAddr) {
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    let b_tls = ca.issue("b").unwrap();
    let wrong = node(&b_tls, "billing", "b", 1, Role::Member);
    let at = wrong.local_addr();
    assert!(matches!(
        a.request(at, Message::Ping { nonce: 1 }).await,
        Err(TransportError::Refused { .. })
    ));
    match a.request(at, Message::Ping { nonce: 2 }).await {
        Err(TransportError::Unreachable { reason, .. }) => {
            assert!(reason.contains("cluster"), "{reason}")
        }
        other => panic!("a second send dialled again: {other:?}"),
    }
    wrong.close().await;
    drop(wrong);
    let b = rebind(&b_tls, at, "b", 2).await;
    (a, b, at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_comes_back_is_reached_once_the_back_off_passes() {
    let ca = DevCa::new("orders").unwrap();
    let (a, _b, at) = refused_then_back(&ca).await;
    // Bounded: the first back-off is at most 100 ms.
    let mut answered = None;
    for nonce in 0..250 {
        if let Ok(answer) = a.request(at, Message::Ping { nonce }).await {
            answered = Some(answer);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (peer, _) = answered.expect("reached after the back-off");
    assert_eq!((peer.node_id.as_str(), peer.generation), ("b", 2));
    assert_eq!(a.dials_started(), 2, "one dial per back-off");
    assert_eq!(a.sizes().dials, 0, "a success forgets the back-off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_comes_back_is_reached_at_once_when_it_shows_itself() {
    let ca = DevCa::new("orders").unwrap();
    // Gossip announces a newer generation at the address.
    let (a, _b, at) = refused_then_back(&ca).await;
    a.announced(at, 2);
    let (peer, _) = a.request(at, Message::Ping { nonce: 3 }).await.unwrap();
    assert_eq!(peer.generation, 2);
    // The peer connects first: its connection is used, no dial waited for.
    let (a, b, at) = refused_then_back(&ca).await;
    b.request(a.local_addr(), Message::Ping { nonce: 4 })
        .await
        .unwrap();
    let (peer, _) = a.request(at, Message::Ping { nonce: 5 }).await.unwrap();
    assert_eq!(peer.generation, 2);
    assert_eq!(a.dials_started(), 1, "only the refused dial");
    assert_eq!(a.sizes().dials, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_dialling_each_other_at_once_end_with_one_connection() {
    let ca = DevCa::new("orders").unwrap();
    let a = node(&ca.issue("a").unwrap(), "orders", "a", 1, Role::Member);
    let b = node(&ca.issue("b").unwrap(), "orders", "b", 1, Role::Member);
    let (to_a, to_b) = (a.local_addr(), b.local_addr());
    let from_a = (0..20).map(|nonce| a.request(to_b, Message::Ping { nonce }));
    let from_b = (0..20).map(|nonce| b.request(to_a, Message::Ping { nonce }));
    let (x, y) = futures_util::future::join(
        futures_util::future::join_all(from_a),
        futures_util::future::join_all(from_b),
    )
    .await;
    assert!(x.into_iter().chain(y).all(|r| r.is_ok()));
    // A duplicate lingers 2 s for the requests on it; bounded wait.
    for _ in 0..100 {
        if a.open_connections() == 1 && b.open_connections() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(a.open_connections(), 1);
    assert_eq!(b.open_connections(), 1);
    // The one left serves both directions.
    a.request(to_b, Message::Ping { nonce: 99 }).await.unwrap();
    b.request(to_a, Message::Ping { nonce: 99 }).await.unwrap();
    assert_eq!(a.open_connections(), 1);
}

/// Answers a Fetch after as many milliseconds as its key says, echoing the
/// key back as a Gossip payload; answers a Ping at once.
struct Delayed;

impl Handler for Delayed {
    fn request<'a>(&'a self, _peer: &'a PeerIdentity, message: Message) -> Reply<'a> {
        Box::pin(async move {
            match message {
                Message::Fetch(fetch) => {
                    let ms: u64 = std::str::from_utf8(&fetch.key).unwrap().parse().unwrap();
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    Message::Gossip(fetch.key)
                }
                Message::Ping { nonce } => Message::Pong { nonce },
                other => other,
            }
        })
    }
    fn message(&self, _peer: &PeerIdentity, _message: Message) {}
}

fn fetch(key: &str) -> Message {
    Message::Fetch(hydracache_protocol::Fetch {
        epoch: 1,
        key: bytes::Bytes::copy_from_slice(key.as_bytes()),
    })
}

#[tokio::test]
async fn fetches_share_one_stream_replies_find_their_requests_and_a_timed_out_one_is_forgotten() {
    let ca = DevCa::new("orders").unwrap();
    let tls = |id| ca.issue(id).unwrap();
    let hello = |id| Hello::new("orders", (id, 1), Role::Member);
    let a = Transport::bind(local(), &tls("a"), hello("a"), Limits::default()).unwrap();
    a.serve(Arc::new(Delayed));
    let b = node(&tls("b"), "orders", "b", 1, Role::Member);
    let at = a.local_addr();
    // Replies finish in the reverse order of the requests; each reaches the
    // request it answers.
    let keys = ["300", "200", "100", "0"];
    let replies = futures_util::future::join_all(keys.iter().map(|k| {
        let b = b.clone();
        async move { b.request(at, fetch(k)).await.unwrap().1 }
    }))
    .await;
    for (key, reply) in keys.iter().zip(replies) {
        assert_eq!(
            reply,
            Message::Gossip(bytes::Bytes::copy_from_slice(key.as_bytes()))
        );
    }
    // A request whose deadline passes fails alone; its late reply is
    // dropped and the stream goes on serving.
    let short = std::time::Duration::from_millis(50);
    let slow = b.request_within(at, fetch("400"), short).await;
    assert!(
        matches!(slow, Err(TransportError::Timeout { .. })),
        "{slow:?}"
    );
    let next = b.request(at, fetch("0")).await.unwrap().1;
    assert_eq!(next, Message::Gossip(bytes::Bytes::from_static(b"0")));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after_late = b.request(at, fetch("1")).await.unwrap().1;
    assert_eq!(after_late, Message::Gossip(bytes::Bytes::from_static(b"1")));
    // Other requests still go one to a stream, beside it.
    let (_, pong) = b.request(at, Message::Ping { nonce: 9 }).await.unwrap();
    assert_eq!(pong, Message::Pong { nonce: 9 });
}

#[tokio::test]
async fn a_broken_request_stream_fails_its_waiting_fetches_at_once_and_the_next_opens_another() {
    let ca = DevCa::new("orders").unwrap();
    let tls = |id| ca.issue(id).unwrap();
    let hello = |id| Hello::new("orders", (id, 1), Role::Member);
    let a = Transport::bind(local(), &tls("a"), hello("a"), Limits::default()).unwrap();
    a.serve(Arc::new(Delayed));
    let b = node(&tls("b"), "orders", "b", 1, Role::Member);
    let at = a.local_addr();
    b.request(at, fetch("0")).await.unwrap();
    let waiting = futures_util::future::join_all((0..3).map(|_| {
        let b = b.clone();
        async move { b.request(at, fetch("5000")).await }
    }));
    let breaker = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        b.disconnect(at);
    };
    // Failed as a broken stream (not at their deadline, as a timeout).
    let (failed, ()) = tokio::join!(waiting, breaker);
    for result in failed {
        assert!(
            matches!(result, Err(TransportError::Stream { .. })),
            "{result:?}"
        );
    }
    let (_, reply) = b.request(at, fetch("0")).await.unwrap();
    assert_eq!(reply, Message::Gossip(bytes::Bytes::from_static(b"0")));
}
