//! One QUIC endpoint per node: server and client on one UDP port, mutual
//! TLS, connections reused per peer address, protocol frames on streams.
//!
//! Every connection starts with a handshake on its first bidirectional
//! stream: the connecting side sends `Hello`, the accepting side answers
//! `HelloAck` (or `GoAway` with a reason and closes). Only then are other
//! streams served. After that, a fetch travels on the connection's one
//! multiplexed request stream (see [`super::mux`]: frames tagged with
//! request ids, replies in the order they finish); any other request is one
//! frame on a fresh bidirectional stream answered by one frame (request id
//! 0, which is how the serving side tells the two apart); a one-way message
//! (gossip, for example) is one frame on a unidirectional stream.
//!
//! A send to a peer without an open connection dials it in a task of its
//! own: concurrent sends share that one handshake, and after a failed one
//! sends fail fast with [`TransportError::Unreachable`] until a back-off
//! passes (the rule is in [`super::dial`]).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hydracache_protocol::{ErrorCode, Frame, Hello, Limits, Message, ProtocolError, Role};

use super::dial::{Begin, Dials};
use super::handshake::{check_peer, Certified, Generations};
use super::mux::MuxStream;
use super::tls::{certified, TlsConfig, TlsError, SERVER_NAME};

/// How long a peer may take to send its Hello after the TLS handshake.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take, from opening its stream to the answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dial may take, QUIC and TLS handshakes and the Hello exchange
/// together: as long as a request may (dozens of handshakes at once on a
/// loaded machine take seconds). Without it a dial to a silent address
/// would wait for the 30 s idle timeout.
const DIAL_TIMEOUT: Duration = REQUEST_TIMEOUT;
/// How long the duplicate of a connection (both sides dialled each other at
/// once) stays open after the other is kept, so that requests already on it
/// can finish: the grid's request and acknowledgement timeouts default to
/// 2 s.
const DUPLICATE_LINGER: Duration = Duration::from_secs(2);
/// How long a refusal waits for the peer to read its GoAway before closing.
const GOAWAY_LINGER: Duration = Duration::from_secs(2);

/// Largest Hello (or HelloAck) frame read: a cluster name, a node id and a
/// few numbers, all far below this.
pub const MAX_HELLO_FRAME: usize = 4 << 10;
/// Largest one-way frame read (gossip, raft, invalidations, membership
/// snapshots, announcements): the raft message limit with room for framing.
pub const MAX_ONE_WAY_FRAME: usize = 2 << 20;
/// Requests one peer may have open on one connection at once. Well above
/// the requests a node keeps in flight to one peer: at the limit, every new
/// request waits until the peer has seen the last one's stream close and
/// sent more credit (a QUIC MAX_STREAMS frame), which costs a packet and a
/// round trip per request (at 32 it was a fifth of the read path's packets
/// with 32 reads in flight). The bytes a peer may send stay bounded by the
/// receive windows below, whatever the count.
pub const MAX_REQUEST_STREAMS: u32 = 128;
/// One-way streams one peer may have open on one connection at once.
pub const MAX_ONE_WAY_STREAMS: u32 = 64;
/// Streams being read or served at once on this node, all connections
/// together; further streams wait (and QUIC flow control holds the peers).
pub const MAX_NODE_STREAMS: usize = 512;
/// Requests served at once on one multiplexed stream: while this many are
/// in flight the stream is not read. Above the reads one node keeps in
/// flight to a peer.
pub const MAX_MUX_IN_FLIGHT: usize = 64;
/// Multiplexed streams one peer may have served at once on one connection
/// (a node opens one per connection).
pub const MAX_MUX_STREAMS: usize = 4;
/// Largest request frame read on a multiplexed stream: a fetch (a key and a
/// node id) with room to spare; larger requests go one to a stream.
pub const MAX_MUX_FRAME: usize = 256 << 10;
/// Most bytes taken from a stream's receive buffer at once.
const READ_CHUNK: usize = 64 << 10;
/// Unread bytes a peer may have in flight on one stream.
const STREAM_WINDOW: u32 = 1 << 20;
/// Unread bytes a peer may have in flight on one connection.
const CONNECTION_WINDOW: u32 = 8 << 20;
/// Authenticated connections this node keeps at once; a Hello beyond it is
/// refused as overloaded.
pub const MAX_CONNECTIONS: usize = 4096;

/// What a stream carries, which sets how much of it is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamKind {
    /// The first stream: Hello and HelloAck.
    Hello,
    /// A request or its answer (bidirectional).
    Request,
    /// A one-way message (unidirectional).
    OneWay,
}

/// The most bytes read from a stream of `kind`: the protocol's frame limit,
/// lowered to what that kind of stream really carries.
fn read_limit(kind: StreamKind, limits: &Limits) -> usize {
    let frame = limits.max_frame_len as usize;
    match kind {
        StreamKind::Hello => frame.min(MAX_HELLO_FRAME),
        StreamKind::Request => frame,
        StreamKind::OneWay => frame.min(MAX_ONE_WAY_FRAME),
    }
}

/// Who is on the other end of a connection, as its Hello said (and its
/// certificate, signed by the cluster CA, vouched for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Node id.
    pub node_id: String,
    /// Generation of the peer's process.
    pub generation: u64,
    /// Member or client.
    pub role: Role,
    /// The address the connection comes from.
    pub addr: SocketAddr,
}

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// TLS material was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The QUIC (or TLS) handshake failed — for example the peer's
    /// certificate is not signed by the cluster CA.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// The peer.
        addr: SocketAddr,
        /// What quinn reported.
        message: String,
    },
    /// The peer refused our Hello, or sent one we refuse.
    #[error("handshake with {addr} refused: {reason}")]
    Refused {
        /// The peer.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
    /// A stream failed mid-request.
    #[error("stream to {addr} failed: {message}")]
    Stream {
        /// The peer.
        addr: SocketAddr,
        /// What failed.
        message: String,
    },
    /// The peer did not answer in time.
    #[error("request to {addr} timed out")]
    Timeout {
        /// The peer.
        addr: SocketAddr,
    },
    /// The peer's bytes did not decode.
    #[error("bad frame from {addr}: {source}")]
    Protocol {
        /// The peer.
        addr: SocketAddr,
        /// The decoding error.
        source: ProtocolError,
    },
    /// The last dial to the peer failed and its back-off has not passed:
    /// nothing was sent.
    #[error("{addr} is unreachable ({reason}); next dial in {retry_in:?}")]
    Unreachable {
        /// The peer.
        addr: SocketAddr,
        /// Why the last dial failed.
        reason: String,
        /// When the next dial may start.
        retry_in: Duration,
    },
}

impl TransportError {
    /// The same error for another waiter of a shared dial (a dial fails
    /// only with the variants that carry strings; anything else is told as
    /// a failure to connect).
    fn for_waiter(&self) -> TransportError {
        match self {
            TransportError::Connect { addr, message } => TransportError::Connect {
                addr: *addr,
                message: message.clone(),
            },
            TransportError::Refused { addr, reason } => TransportError::Refused {
                addr: *addr,
                reason: reason.clone(),
            },
            TransportError::Stream { addr, message } => TransportError::Stream {
                addr: *addr,
                message: message.clone(),
            },
            TransportError::Timeout { addr } => TransportError::Timeout { addr: *addr },
            TransportError::Unreachable {
                addr,
                reason,
                retry_in,
            } => TransportError::Unreachable {
                addr: *addr,
                reason: reason.clone(),
                retry_in: *retry_in,
            },
            other => TransportError::Connect {
                addr: other.addr().unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
                message: other.to_string(),
            },
        }
    }

    fn addr(&self) -> Option<SocketAddr> {
        match self {
            TransportError::Tls(_) => None,
            TransportError::Bind { addr, .. }
            | TransportError::Connect { addr, .. }
            | TransportError::Refused { addr, .. }
            | TransportError::Stream { addr, .. }
            | TransportError::Timeout { addr }
            | TransportError::Protocol { addr, .. }
            | TransportError::Unreachable { addr, .. } => Some(*addr),
        }
    }
}

/// How much a transport tracks: both return to their baseline when peers
/// come and go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransportSizes {
    /// Connections kept per peer address.
    pub connections: usize,
    /// Node ids whose highest generation is remembered (those with an open
    /// connection).
    pub generations: usize,
    /// Peer addresses being dialled or backed off from.
    pub dials: usize,
}

/// A boxed future returned by [`Handler::request`].
pub type Reply<'a> = Pin<Box<dyn Future<Output = Message> + Send + 'a>>;

/// What a node does with what its peers send.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request from an authenticated peer.
    fn request<'a>(&'a self, peer: &'a PeerIdentity, message: Message) -> Reply<'a>;
    /// Receives one one-way message.
    fn message(&self, peer: &PeerIdentity, message: Message);
}

struct Peer {
    conn: quinn::Connection,
    /// This node's multiplexed request stream on it, once opened.
    mux: Mutex<Option<Arc<MuxStream>>>,
    /// Multiplexed streams the peer has open on it, being served.
    mux_served: std::sync::atomic::AtomicUsize,
    identity: PeerIdentity,
    /// This node opened it (rather than accepted it).
    dialled: bool,
    /// When it was authenticated.
    since: tokio::time::Instant,
}

/// A dial's result, shared by every send that waited for it.
type Dialled = Option<Result<Arc<Peer>, Arc<TransportError>>>;

struct Shared {
    endpoint: quinn::Endpoint,
    client: quinn::ClientConfig,
    hello: Hello,
    limits: Limits,
    /// Open connections by peer address (ours or theirs).
    peers: Mutex<HashMap<SocketAddr, Arc<Peer>>>,
    /// Highest generation seen per node id: older ones are refused.
    generations: Mutex<Generations>,
    /// Serves the streams peers open, on connections in either direction.
    /// Cleared when the transport closes, which breaks the cycle
    /// handler -> node -> transport so that a stopped node is freed.
    handler: Mutex<Option<Arc<dyn Handler>>>,
    /// Permits for streams being read or served, all connections together.
    streams: Arc<tokio::sync::Semaphore>,
    /// Dials in flight and back-offs, per peer address. Locked before
    /// `peers` when both are.
    dials: Mutex<Dials<tokio::sync::watch::Receiver<Dialled>>>,
    /// Dials started since binding.
    dials_started: std::sync::atomic::AtomicU64,
    /// Test hook: while set, the socket drops every datagram.
    #[cfg(feature = "test-hooks")]
    paused: Arc<std::sync::atomic::AtomicBool>,
}

/// A node's QUIC endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

/// Idle timeout and keep-alives, the same for both directions: a peer that
/// stops answering for 30 s is gone; idle connections ping every 5 s.
fn quic_transport() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(MAX_REQUEST_STREAMS.into());
    transport.max_concurrent_uni_streams(MAX_ONE_WAY_STREAMS.into());
    // Bytes a peer may have sent and this node not yet read: per stream and
    // per connection. Reading advances the windows, so frames up to the
    // protocol's limit still pass; a peer whose streams wait is held here.
    transport.stream_receive_window(STREAM_WINDOW.into());
    transport.receive_window(CONNECTION_WINDOW.into());
    transport.max_idle_timeout(Some(
        Duration::from_secs(30).try_into().expect("idle timeout"),
    ));
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    Arc::new(transport)
}

fn quic_server(tls: &TlsConfig) -> Result<quinn::ServerConfig, TransportError> {
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls.server_crypto()?)
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(quic_transport());
    Ok(config)
}

fn quic_client(tls: &TlsConfig) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls.client_crypto()?)
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(quic_transport());
    Ok(config)
}

impl Transport {
    /// Binds one UDP socket at `addr` that both accepts and opens
    /// connections. `hello` is what this node says about itself.
    pub fn bind(
        addr: SocketAddr,
        tls: &TlsConfig,
        hello: Hello,
        limits: Limits,
    ) -> Result<Transport, TransportError> {
        #[cfg(not(feature = "test-hooks"))]
        let endpoint = quinn::Endpoint::server(quic_server(tls)?, addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        #[cfg(feature = "test-hooks")]
        let (endpoint, paused) = super::pause::server(quic_server(tls)?, addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        Ok(Transport {
            shared: Arc::new(Shared {
                endpoint,
                client: quic_client(tls)?,
                hello,
                limits,
                peers: Mutex::new(HashMap::new()),
                generations: Mutex::new(Generations::default()),
                handler: Mutex::new(None),
                streams: Arc::new(tokio::sync::Semaphore::new(MAX_NODE_STREAMS)),
                dials: Mutex::new(Dials::default()),
                dials_started: std::sync::atomic::AtomicU64::new(0),
                #[cfg(feature = "test-hooks")]
                paused,
            }),
        })
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared
            .endpoint
            .local_addr()
            .expect("bound endpoint has an address")
    }

    /// What this node says about itself.
    pub fn hello(&self) -> &Hello {
        &self.shared.hello
    }

    /// Starts accepting connections and serving them with `handler` (which
    /// also serves the streams peers open on connections this node made).
    /// Call once.
    pub fn serve(&self, handler: Arc<dyn Handler>) -> tokio::task::JoinHandle<()> {
        *self.shared.handler.lock().expect("handler") = Some(Arc::clone(&handler));
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            while let Some(incoming) = shared.endpoint.accept().await {
                let (shared, handler) = (Arc::clone(&shared), Arc::clone(&handler));
                tokio::spawn(async move {
                    // A TLS failure (foreign CA, no certificate) ends here.
                    let Ok(conn) = incoming.await else { return };
                    if let Ok(peer) = accept_hello(&shared, conn).await {
                        // Reuse it for our own requests to that peer: a node
                        // connects from the same port it listens on.
                        file(&shared, Arc::clone(&peer));
                        // The peer is back: sends to it need not wait out a
                        // back-off from an earlier failed dial.
                        shared
                            .dials
                            .lock()
                            .expect("dials")
                            .connected(peer.identity.addr);
                        serve_connection(shared, peer, handler).await;
                    }
                });
            }
        })
    }

    /// The open connection to `addr`, if any.
    fn open_peer(&self, addr: SocketAddr) -> Option<Arc<Peer>> {
        let peers = self.shared.peers.lock().expect("peers");
        peers
            .get(&addr)
            .filter(|p| p.conn.close_reason().is_none())
            .map(Arc::clone)
    }

    /// The connection to `addr`: the open one, or the result of the one
    /// dial in flight to it (started here if there is none), or at once
    /// [`TransportError::Unreachable`] while backing off from a failed dial.
    async fn peer(&self, addr: SocketAddr) -> Result<Arc<Peer>, TransportError> {
        if let Some(p) = self.open_peer(addr) {
            return Ok(p);
        }
        let mut sender = None;
        let step = {
            let mut dials = self.shared.dials.lock().expect("dials");
            // Checked again under the dials lock: a dial that just finished
            // put its connection in the map before leaving its slot.
            if let Some(p) = self.open_peer(addr) {
                return Ok(p);
            }
            dials.begin(addr, tokio::time::Instant::now().into_std(), || {
                let (tx, rx) = tokio::sync::watch::channel(None);
                sender = Some(tx);
                rx
            })
        };
        let mut waiting = match step {
            Begin::Dial(rx) => {
                let tx = sender.expect("a new dial's sender");
                let shared = Arc::clone(&self.shared);
                // Its own task: a caller that gives up does not cancel the
                // dial the others wait for.
                tokio::spawn(async move {
                    let result = tokio::time::timeout(DIAL_TIMEOUT, dial(&shared, addr))
                        .await
                        .unwrap_or(Err(TransportError::Timeout { addr }));
                    let result = match result {
                        Ok(peer) => {
                            let kept = keep_dialled(&shared, peer);
                            shared.dials.lock().expect("dials").succeeded(addr);
                            Ok(kept)
                        }
                        Err(e) => {
                            shared.dials.lock().expect("dials").failed(
                                addr,
                                tokio::time::Instant::now().into_std(),
                                e.to_string(),
                                jitter(),
                            );
                            Err(Arc::new(e))
                        }
                    };
                    let _ = tx.send(Some(result));
                });
                rx
            }
            Begin::Join(rx) => rx,
            Begin::BackingOff { reason, retry_in } => {
                return Err(TransportError::Unreachable {
                    addr,
                    reason,
                    retry_in,
                })
            }
        };
        let dialled = waiting.wait_for(Option::is_some).await;
        match dialled.as_deref() {
            Ok(Some(Ok(peer))) => Ok(Arc::clone(peer)),
            Ok(Some(Err(e))) => Err(e.for_waiter()),
            // The dial's task ended without a word: the runtime is going.
            Ok(None) | Err(_) => Err(TransportError::Connect {
                addr,
                message: "the dial was abandoned".to_string(),
            }),
        }
    }

    /// Dials started since binding, as the connecting side (diagnostics:
    /// concurrent sends share one, and a back-off spaces them out).
    pub fn dials_started(&self) -> u64 {
        self.shared
            .dials_started
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Gossip announces a process of `generation` at `addr`: if it is newer
    /// than any announced there since a dial to it failed, the back-off
    /// ends (a restart on the same address is reached at once).
    pub fn announced(&self, addr: SocketAddr, generation: u64) {
        self.shared.dials.lock().expect("dials").announced(
            addr,
            generation,
            tokio::time::Instant::now().into_std(),
        );
    }

    /// Sends a request to `addr` and waits for its answer.
    pub async fn request(
        &self,
        addr: SocketAddr,
        message: Message,
    ) -> Result<(PeerIdentity, Message), TransportError> {
        self.request_within(addr, message, REQUEST_TIMEOUT).await
    }

    /// As [`request`](Self::request), but gives up with
    /// [`TransportError::Timeout`] after `within` (at most the transport's
    /// own request timeout): the caller's deadline and the transport's are
    /// one timer, not two nested ones (a timer costs a lock of the runtime's
    /// timer wheel to register and another to cancel, on every request).
    pub async fn request_within(
        &self,
        addr: SocketAddr,
        message: Message,
        within: Duration,
    ) -> Result<(PeerIdentity, Message), TransportError> {
        let work = async {
            let peer = self.peer(addr).await?;
            if matches!(message, Message::Fetch(_)) {
                let stream = self.mux_stream(&peer).await?;
                let reply = stream.request(&self.shared.limits, message).await?;
                return Ok((peer.identity.clone(), reply.message));
            }
            let reply = exchange(
                &peer.conn,
                &self.shared.limits,
                StreamKind::Request,
                Frame::new(0, message),
            )
            .await?;
            Ok((peer.identity.clone(), reply.message))
        };
        tokio::time::timeout(within.min(REQUEST_TIMEOUT), work)
            .await
            .unwrap_or(Err(TransportError::Timeout { addr }))
    }

    /// The multiplexed request stream on `peer`'s connection: the open one,
    /// or a new one if there is none or it broke.
    async fn mux_stream(&self, peer: &Peer) -> Result<Arc<MuxStream>, TransportError> {
        if let Some(open) = peer
            .mux
            .lock()
            .expect("mux")
            .as_ref()
            .filter(|m| m.is_open())
        {
            return Ok(Arc::clone(open));
        }
        let opened = MuxStream::open(&peer.conn, self.shared.limits.clone()).await?;
        let mut slot = peer.mux.lock().expect("mux");
        match slot.as_ref().filter(|m| m.is_open()) {
            // Another request opened one meanwhile: share it (ours, never
            // written to, is dropped unseen).
            Some(open) => Ok(Arc::clone(open)),
            None => {
                *slot = Some(Arc::clone(&opened));
                Ok(opened)
            }
        }
    }

    /// Sends a one-way message to `addr` on a unidirectional stream.
    pub async fn send(&self, addr: SocketAddr, message: Message) -> Result<(), TransportError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.send_now(addr, message))
            .await
            .unwrap_or(Err(TransportError::Timeout { addr }))
    }

    async fn send_now(&self, addr: SocketAddr, message: Message) -> Result<(), TransportError> {
        let peer = self.peer(addr).await?;
        let bytes = encode(&self.shared.limits, Frame::new(0, message), addr)?;
        let stream_err = |e: &dyn std::fmt::Display| TransportError::Stream {
            addr,
            message: e.to_string(),
        };
        let mut send = peer.conn.open_uni().await.map_err(|e| stream_err(&e))?;
        send.write_all(&bytes).await.map_err(|e| stream_err(&e))?;
        send.finish().map_err(|e| stream_err(&e))?;
        Ok(())
    }

    /// Identities of the peers this node holds connections to.
    pub fn connected_peers(&self) -> Vec<PeerIdentity> {
        self.shared
            .peers
            .lock()
            .expect("peers")
            .values()
            .filter(|p| p.conn.close_reason().is_none())
            .map(|p| p.identity.clone())
            .collect()
    }

    /// How many connections and remembered generations this transport
    /// holds (diagnostics; churn tests check they return to baseline).
    pub fn sizes(&self) -> TransportSizes {
        let connections = self.shared.peers.lock().expect("peers").len();
        let generations = self.shared.generations.lock().expect("generations").len();
        let dials = self.shared.dials.lock().expect("dials").len();
        TransportSizes {
            connections,
            generations,
            dials,
        }
    }

    /// QUIC connections open on the endpoint, in either direction, whether
    /// kept for an address or not (a duplicate shows here; closed ones count
    /// until they have drained).
    pub fn open_connections(&self) -> usize {
        self.shared.endpoint.open_connections()
    }

    /// Drops every connection to `addr` (a test hook for partitions, and
    /// what a node does to a peer it has declared dead).
    pub fn disconnect(&self, addr: SocketAddr) {
        if let Some(p) = self.shared.peers.lock().expect("peers").remove(&addr) {
            p.conn.close(0u32.into(), b"disconnect");
        }
    }

    /// Drops every connection (what a node does when it hears the cluster
    /// again after it was cut off: see `cluster/isolation.rs`).
    pub fn disconnect_all(&self) {
        let peers: Vec<_> = self.shared.peers.lock().expect("peers").drain().collect();
        for (_, p) in peers {
            p.conn.close(0u32.into(), b"reconnect after isolation");
        }
    }

    /// Test hook (feature `test-hooks`): while `on`, the socket drops every
    /// datagram it sends or receives, as if this process were stopped or
    /// cut off (see `cluster/pause.rs`).
    #[cfg(feature = "test-hooks")]
    pub fn pause(&self, on: bool) {
        self.shared
            .paused
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes every connection and the endpoint without waiting for peers
    /// to be told.
    pub fn close_now(&self) {
        self.shared.endpoint.close(0u32.into(), b"shutdown");
        self.shared.peers.lock().expect("peers").clear();
        self.shared.handler.lock().expect("handler").take();
    }

    /// Closes every connection and the endpoint.
    pub async fn close(&self) {
        self.close_now();
        self.shared.endpoint.wait_idle().await;
    }
}

/// Opens a connection to `addr`: QUIC and TLS, then Hello and HelloAck,
/// checked as the accepting side checks them.
async fn dial(shared: &Arc<Shared>, addr: SocketAddr) -> Result<Arc<Peer>, TransportError> {
    shared
        .dials_started
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let connecting = shared
        .endpoint
        .connect_with(shared.client.clone(), addr, SERVER_NAME)
        .map_err(|e| TransportError::Connect {
            addr,
            message: e.to_string(),
        })?;
    let conn = connecting.await.map_err(|e| TransportError::Connect {
        addr,
        message: e.to_string(),
    })?;
    let reply = exchange(
        &conn,
        &shared.limits,
        StreamKind::Hello,
        Frame::new(0, Message::Hello(shared.hello.clone())),
    )
    .await
    .map_err(|e| {
        conn.close(1u32.into(), b"handshake failed");
        match e {
            TransportError::Stream { message, .. } => TransportError::Refused {
                addr,
                reason: message,
            },
            TransportError::Protocol { source, .. } => TransportError::Refused {
                addr,
                reason: source.to_string(),
            },
            other => other,
        }
    })?;
    let remote = match reply.message {
        Message::HelloAck(h) => h,
        Message::GoAway { code, message } => {
            conn.close(1u32.into(), b"refused");
            return Err(TransportError::Refused {
                addr,
                reason: format!("{} ({})", message, code.name().unwrap_or("unknown")),
            });
        }
        other => {
            conn.close(1u32.into(), b"refused");
            return Err(TransportError::Refused {
                addr,
                reason: format!("expected HelloAck, got {:?}", other.kind()),
            });
        }
    };
    // The same check the accepting side makes: the HelloAck may only
    // claim the node id and role the CA certified, at a generation not
    // older than one seen before.
    let checked = check_peer(
        &shared.hello,
        &remote,
        &peer_certificate(&conn),
        &mut shared.generations.lock().expect("generations"),
    );
    let agreed = checked.map_err(|refusal| {
        conn.close(1u32.into(), b"refused");
        TransportError::Refused {
            addr,
            reason: refusal.reason,
        }
    })?;
    Ok(Arc::new(Peer {
        conn,
        mux: Mutex::new(None),
        mux_served: std::sync::atomic::AtomicUsize::new(0),
        identity: PeerIdentity {
            node_id: agreed.peer.id.to_string(),
            generation: agreed.peer.generation,
            role: agreed.peer_role,
            addr,
        },
        dialled: true,
        since: tokio::time::Instant::now(),
    }))
}

/// Files a connection this node dialled and starts serving the streams the
/// peer opens on it; returns the connection kept for the address.
fn keep_dialled(shared: &Arc<Shared>, peer: Arc<Peer>) -> Arc<Peer> {
    let kept = file(shared, Arc::clone(&peer));
    let handler = shared.handler.lock().expect("handler").clone();
    if let Some(handler) = handler {
        tokio::spawn(serve_connection(Arc::clone(shared), peer, handler));
    }
    kept
}

/// Files an authenticated connection as the one kept for its address,
/// unless the one kept there stays (see [`replaces`]); returns the one kept.
/// One kept for a process that is gone from the address is closed at once;
/// of two open connections to the same process, the one not kept is closed
/// after [`DUPLICATE_LINGER`], so that requests already on it can finish.
fn file(shared: &Arc<Shared>, peer: Arc<Peer>) -> Arc<Peer> {
    let me = (shared.hello.node.id.as_str(), shared.hello.node.generation);
    let addr = peer.identity.addr;
    let (kept, dropped) = {
        let mut peers = shared.peers.lock().expect("peers");
        match peers.get_mut(&addr) {
            Some(old) => {
                let closed = old.conn.close_reason().is_some();
                let duplicate = !closed && old.identity == peer.identity;
                let new_wins = replaces(
                    me,
                    (&old.identity, old.dialled),
                    old.since.elapsed(),
                    closed,
                    (&peer.identity, peer.dialled),
                );
                if new_wins {
                    let old = std::mem::replace(old, Arc::clone(&peer));
                    (Arc::clone(&peer), Some((old, duplicate)))
                } else {
                    (Arc::clone(old), Some((Arc::clone(&peer), duplicate)))
                }
            }
            None => {
                peers.insert(addr, Arc::clone(&peer));
                (peer, None)
            }
        }
    };
    match dropped {
        Some((loser, true)) if !Arc::ptr_eq(&loser, &kept) => {
            tokio::spawn(async move {
                tokio::time::sleep(DUPLICATE_LINGER).await;
                loser.conn.close(0u32.into(), b"duplicate connection");
            });
        }
        // Another process holds the address now, or an older one spoke.
        Some((old, false)) if !Arc::ptr_eq(&old, &kept) => {
            old.conn.close(0u32.into(), b"replaced by a newer process");
        }
        _ => {}
    }
    kept
}

/// A number in `[0, 1]` for a back-off's jitter: std's per-process random
/// hash keys are randomness enough to keep nodes from dialling in step.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// Room for a small frame (a fetch, its reply with a value of a few dozen
/// bytes, an acknowledgement) in one allocation, without growing.
const SMALL_FRAME: usize = 256;

fn encode(limits: &Limits, frame: Frame, addr: SocketAddr) -> Result<Bytes, TransportError> {
    let mut buf = BytesMut::with_capacity(SMALL_FRAME);
    frame
        .encode(limits, &mut buf)
        .map_err(|source| TransportError::Protocol { addr, source })?;
    Ok(buf.freeze())
}

async fn read_frame(
    recv: &mut quinn::RecvStream,
    limits: &Limits,
    kind: StreamKind,
    addr: SocketAddr,
) -> Result<Frame, TransportError> {
    let bytes = recv
        .read_to_end(read_limit(kind, limits))
        .await
        .map_err(|e| TransportError::Stream {
            addr,
            message: e.to_string(),
        })?;
    Frame::decode_exact(Bytes::from(bytes), limits)
        .map_err(|source| TransportError::Protocol { addr, source })
}

/// One request/response exchange on a fresh bidirectional stream.
async fn exchange(
    conn: &quinn::Connection,
    limits: &Limits,
    kind: StreamKind,
    frame: Frame,
) -> Result<Frame, TransportError> {
    let addr = conn.remote_address();
    let stream_err = |e: &dyn std::fmt::Display| TransportError::Stream {
        addr,
        message: e.to_string(),
    };
    let bytes = encode(limits, frame, addr)?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| stream_err(&e))?;
    send.write_all(&bytes).await.map_err(|e| stream_err(&e))?;
    send.finish().map_err(|e| stream_err(&e))?;
    read_frame(&mut recv, limits, kind, addr).await
}

async fn reply(send: &mut quinn::SendStream, limits: &Limits, message: Message, addr: SocketAddr) {
    if let Ok(bytes) = encode(limits, Frame::new(0, message), addr) {
        let _ = send.write_all(&bytes).await;
        let _ = send.finish();
    }
}

/// What the cluster CA certified for the peer of `conn`: read from its
/// (already verified) leaf certificate.
fn peer_certificate(conn: &quinn::Connection) -> Certified {
    conn.peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .and_then(|certs| certs.first().map(|leaf| certified(leaf.as_ref())))
        .unwrap_or_default()
}

/// Answers a refused Hello with GoAway (code and reason) before closing.
async fn refuse(
    send: &mut quinn::SendStream,
    limits: &Limits,
    addr: SocketAddr,
    code: ErrorCode,
    why: String,
) {
    let message = Message::GoAway {
        code,
        message: why.into(),
    };
    reply(send, limits, message, addr).await;
    // Give the peer the chance to read the reason before the connection closes.
    let _ = tokio::time::timeout(GOAWAY_LINGER, send.stopped()).await;
}

/// Reads the peer's Hello on the first stream and answers it.
async fn accept_hello(shared: &Arc<Shared>, conn: quinn::Connection) -> Result<Arc<Peer>, ()> {
    let addr = conn.remote_address();
    // One deadline for opening the stream and sending the whole Hello: a
    // peer that trickles its Hello is cut off like one that sends none.
    let deadline = tokio::time::Instant::now() + HELLO_TIMEOUT;
    let Ok(Ok((mut send, mut recv))) = tokio::time::timeout_at(deadline, conn.accept_bi()).await
    else {
        conn.close(1u32.into(), b"no hello");
        return Err(());
    };
    let limits = &shared.limits;
    let read = tokio::time::timeout_at(
        deadline,
        read_frame(&mut recv, limits, StreamKind::Hello, addr),
    );
    let Ok(read) = read.await else {
        conn.close(1u32.into(), b"no hello");
        return Err(());
    };
    let open = shared
        .peers
        .lock()
        .expect("peers")
        .values()
        .filter(|p| p.conn.close_reason().is_none())
        .count();
    if open >= MAX_CONNECTIONS {
        let why = format!("this node keeps at most {MAX_CONNECTIONS} connections");
        refuse(&mut send, limits, addr, ErrorCode::OVERLOADED, why).await;
        conn.close(1u32.into(), b"overloaded");
        return Err(());
    }
    let hello = match read.map(|f| f.message) {
        Ok(Message::Hello(h)) => h,
        Ok(other) => {
            refuse(
                &mut send,
                limits,
                addr,
                ErrorCode::PROTOCOL,
                format!("expected Hello, got {:?}", other.kind()),
            )
            .await;
            conn.close(1u32.into(), b"expected hello");
            return Err(());
        }
        Err(e) => {
            refuse(&mut send, limits, addr, ErrorCode::PROTOCOL, e.to_string()).await;
            conn.close(1u32.into(), b"bad hello");
            return Err(());
        }
    };
    let checked = check_peer(
        &shared.hello,
        &hello,
        &peer_certificate(&conn),
        &mut shared.generations.lock().expect("generations"),
    );
    let agreed = match checked {
        Ok(a) => a,
        Err(refusal) => {
            refuse(&mut send, limits, addr, refusal.code, refusal.reason).await;
            conn.close(1u32.into(), b"refused");
            return Err(());
        }
    };
    reply(
        &mut send,
        &shared.limits,
        Message::HelloAck(shared.hello.clone()),
        addr,
    )
    .await;
    Ok(Arc::new(Peer {
        conn,
        mux: Mutex::new(None),
        mux_served: std::sync::atomic::AtomicUsize::new(0),
        identity: PeerIdentity {
            node_id: agreed.peer.id.to_string(),
            generation: agreed.peer.generation,
            role: agreed.peer_role,
            addr,
        },
        dialled: false,
        since: tokio::time::Instant::now(),
    }))
}

/// Serves an authenticated connection until it closes: each bidirectional
/// stream is one request, each unidirectional stream one message.
async fn serve_connection(shared: Arc<Shared>, peer: Arc<Peer>, handler: Arc<dyn Handler>) {
    let addr = peer.identity.addr;
    // A stream is read only with a node-wide permit, so that all connections
    // together read and serve a bounded number at once; the others wait
    // unread, held by QUIC flow control (the receive windows below).
    let permit = |shared: &Arc<Shared>| Arc::clone(&shared.streams).acquire_owned();
    loop {
        tokio::select! {
            bi = peer.conn.accept_bi() => {
                let Ok((mut send, mut recv)) = bi else { break };
                let (shared, peer, handler) = (Arc::clone(&shared), Arc::clone(&peer), Arc::clone(&handler));
                let permit = permit(&shared);
                tokio::spawn(async move {
                    let Ok(permit) = permit.await else { return };
                    let mut buf = BytesMut::new();
                    // One deadline for the request and, on a one-shot
                    // stream, its end: a peer that never finishes the
                    // stream does not keep the permit.
                    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
                    let read = read_next(&mut recv, &mut buf, &shared.limits);
                    let frame = match tokio::time::timeout_at(deadline, read).await {
                        Ok(Ok(Some(frame))) => frame,
                        Ok(Err(source)) => {
                            let answer = Message::Error {
                                code: source.code(),
                                message: source.to_string().into(),
                            };
                            reply(&mut send, &shared.limits, answer, addr).await;
                            return;
                        }
                        Ok(Ok(None)) | Err(_) => return,
                    };
                    if frame.request_id != 0 {
                        serve_mux(shared, peer, handler, (send, recv, buf), frame, permit).await;
                        return;
                    }
                    // A one-shot stream: the request is all it carries.
                    let Ok(rest) = tokio::time::timeout_at(deadline, recv.read_to_end(0)).await else {
                        return;
                    };
                    let answer = if buf.is_empty() && matches!(rest, Ok(ref rest) if rest.is_empty()) {
                        handler.request(&peer.identity, frame.message).await
                    } else {
                        Message::Error {
                            code: ErrorCode::PROTOCOL,
                            message: "bytes after the request on a one-shot stream".into(),
                        }
                    };
                    reply(&mut send, &shared.limits, answer, addr).await;
                });
            }
            uni = peer.conn.accept_uni() => {
                let Ok(mut recv) = uni else { break };
                let (shared, peer, handler) = (Arc::clone(&shared), Arc::clone(&peer), Arc::clone(&handler));
                let permit = permit(&shared);
                tokio::spawn(async move {
                    let Ok(_permit) = permit.await else { return };
                    let read = read_frame(&mut recv, &shared.limits, StreamKind::OneWay, addr);
                    if let Ok(Ok(frame)) = tokio::time::timeout(REQUEST_TIMEOUT, read).await {
                        handler.message(&peer.identity, frame.message);
                    }
                });
            }
        }
    }
    forget(&shared, &peer);
}

/// Reads the next whole frame from `recv` (bytes past it stay in `buf`);
/// `None` if the stream ends cleanly between frames.
async fn read_next(
    recv: &mut quinn::RecvStream,
    buf: &mut BytesMut,
    limits: &Limits,
) -> Result<Option<Frame>, ProtocolError> {
    loop {
        if let Some(frame) = Frame::decode_from(buf, limits)? {
            return Ok(Some(frame));
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) | Err(_) if buf.is_empty() => return Ok(None),
            Ok(None) | Err(_) => {
                return Err(ProtocolError::Truncated {
                    needed: buf.len() + 1,
                    available: buf.len(),
                })
            }
        }
    }
}

/// Serves a multiplexed request stream, whose `first` request has been
/// read (holding the node-wide `permit`): reads requests as they come,
/// serves up to [`MAX_MUX_IN_FLIGHT`] at once, and writes their replies,
/// tagged with their request ids, in the order they finish, several to a
/// write when they finish together. While that many are in flight it reads
/// nothing, so QUIC flow control holds a peer that sends faster than it
/// reads its replies.
async fn serve_mux(
    shared: Arc<Shared>,
    peer: Arc<Peer>,
    handler: Arc<dyn Handler>,
    (mut send, mut recv, mut buf): (quinn::SendStream, quinn::RecvStream, BytesMut),
    first: Frame,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    use std::sync::atomic::Ordering;
    let addr = peer.identity.addr;
    let limits = Limits {
        max_frame_len: shared.limits.max_frame_len.min(MAX_MUX_FRAME as u32),
        ..shared.limits.clone()
    };
    if peer.mux_served.fetch_add(1, Ordering::Relaxed) >= MAX_MUX_STREAMS {
        peer.mux_served.fetch_sub(1, Ordering::Relaxed);
        let refusal = Message::Error {
            code: ErrorCode::OVERLOADED,
            message: format!("at most {MAX_MUX_STREAMS} multiplexed streams per connection").into(),
        };
        if let Ok(bytes) = encode(&limits, Frame::new(first.request_id, refusal), addr) {
            let _ = send.write_all(&bytes).await;
            let _ = send.finish();
        }
        return;
    }
    type Done = (Frame, [Option<tokio::sync::OwnedSemaphorePermit>; 2]);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Done>();
    let writer_limits = limits.clone();
    let writer = tokio::spawn(async move {
        let mut out = BytesMut::new();
        while let Some(done) = done_rx.recv().await {
            // Every reply already finished goes in the same write.
            let mut batch = vec![done];
            while let Ok(more) = done_rx.try_recv() {
                batch.push(more);
            }
            for (frame, _) in &batch {
                let _ = frame.encode(&writer_limits, &mut out);
            }
            let written = send.write_all(&out).await;
            out.clear();
            // The permits go only once the replies are handed to QUIC.
            drop(batch);
            if written.is_err() {
                break;
            }
        }
        let _ = send.finish();
    });
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_MUX_IN_FLIGHT));
    let mut next = Some((first, permit));
    loop {
        let Ok(slot) = Arc::clone(&in_flight).acquire_owned().await else {
            break;
        };
        let (frame, node) = match next.take() {
            Some(first) => first,
            None => {
                let frame = match read_next(&mut recv, &mut buf, &limits).await {
                    Ok(Some(frame)) if frame.request_id != 0 => frame,
                    Ok(None) => break,
                    // A request without an id, or bytes that do not decode:
                    // the stream is out of step, and ends.
                    Ok(Some(_)) | Err(_) => {
                        let _ = recv.stop(1u32.into());
                        break;
                    }
                };
                let Ok(node) = Arc::clone(&shared.streams).acquire_owned().await else {
                    break;
                };
                (frame, node)
            }
        };
        if done_tx.is_closed() {
            break;
        }
        let (peer, handler, done_tx) = (Arc::clone(&peer), Arc::clone(&handler), done_tx.clone());
        tokio::spawn(async move {
            let answer = handler.request(&peer.identity, frame.message).await;
            let _ = done_tx.send((
                Frame::new(frame.request_id, answer),
                [Some(node), Some(slot)],
            ));
        });
    }
    drop(done_tx);
    let _ = writer.await;
    peer.mux_served.fetch_sub(1, Ordering::Relaxed);
}

/// Whether a connection `new` (`true` if this node dialled it) replaces
/// the one kept for the same address, `old` (authenticated `old_age` ago;
/// `old_closed` if it has closed), on the node `me` (node id, generation):
/// yes if it closed, or if another process now owns the address — a newer
/// generation of the node (a restart on the same port), or another node.
/// For a second connection to the same process: one the same side opened
/// again replaces the first (a process dials only when it holds no open
/// connection, so it has dropped the first); if each side opened one
/// within [`DIAL_TIMEOUT`] of the other (they dialled each other at once),
/// each keeps the one the lower of the two processes dialled, so that both
/// keep the same one; a connection from the other side after that replaces
/// an older one (that side has dropped it).
fn replaces(
    me: (&str, u64),
    (old, old_dialled): (&PeerIdentity, bool),
    old_age: Duration,
    old_closed: bool,
    (new, new_dialled): (&PeerIdentity, bool),
) -> bool {
    if old_closed || old.node_id != new.node_id || new.generation > old.generation {
        return true;
    }
    if new.generation < old.generation {
        return false;
    }
    if old_dialled == new_dialled || old_age >= DIAL_TIMEOUT {
        return true;
    }
    let i_am_lower = me < (new.node_id.as_str(), new.generation);
    new_dialled == i_am_lower
}

/// Drops a closed connection, any other closed ones, and the generations of
/// node ids no open connection speaks for: the maps follow the peers that
/// are connected now, not every peer ever seen. (A stale generation that
/// reconnects later is refused by the membership, which names the admitted
/// generation of every node.)
fn forget(shared: &Shared, peer: &Arc<Peer>) {
    let mut peers = shared.peers.lock().expect("peers");
    peers.retain(|_, p| !Arc::ptr_eq(p, peer) && p.conn.close_reason().is_none());
    let open: std::collections::HashSet<&str> = peers
        .values()
        .map(|p| p.identity.node_id.as_str())
        .collect();
    shared
        .generations
        .lock()
        .expect("generations")
        .retain(|id| open.contains(id));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_process_on_the_same_address_replaces_the_connection_kept_for_it() {
        let peer = |id: &str, generation| PeerIdentity {
            node_id: id.to_string(),
            generation,
            role: Role::Member,
            addr: "127.0.0.1:7400".parse().unwrap(),
        };
        let old = peer("b", 5);
        let young = Duration::from_millis(1);
        let on_a =
            |old, closed, new| replaces(("a", 1), (&old, false), young, closed, (&new, false));
        assert!(on_a(old.clone(), false, peer("b", 6)), "restarted");
        assert!(on_a(old.clone(), false, peer("c", 1)), "another node");
        assert!(on_a(old.clone(), true, peer("b", 5)), "the old one closed");
        assert!(on_a(old.clone(), false, peer("b", 5)), "dialled again");
        assert!(!on_a(old, false, peer("b", 4)), "an older process");
    }

    #[test]
    fn two_nodes_dialling_each_other_at_once_keep_the_same_connection() {
        let id = |node: &str, generation| PeerIdentity {
            node_id: node.to_string(),
            generation,
            role: Role::Member,
            addr: "127.0.0.1:7400".parse().unwrap(),
        };
        let (a, b) = (("a", 9), ("b", 1));
        let young = Duration::from_millis(1);
        // The connection `a` dialled, seen from each side; filed first or
        // second: both keep it, since "a" < "b".
        for a_filed_first in [true, false] {
            // On `a`: `old` is the one filed first.
            let (old, new) = if a_filed_first {
                (true, false)
            } else {
                (false, true)
            };
            let a_keeps_new = replaces(a, (&id("b", 1), old), young, false, (&id("b", 1), new));
            let a_keeps_own = if a_keeps_new { new } else { old };
            // On `b`, the one `a` dialled is the one `b` accepted.
            let (old, new) = if a_filed_first {
                (false, true)
            } else {
                (true, false)
            };
            let b_keeps_new = replaces(b, (&id("a", 9), old), young, false, (&id("a", 9), new));
            let b_keeps_own = if b_keeps_new { new } else { old };
            assert!(a_keeps_own, "a keeps the one it dialled");
            assert!(!b_keeps_own, "b keeps the one a dialled");
        }
        // The same node id at two generations: the generation decides (the
        // lower one keeps what it dialled, the higher what it accepted).
        let n2 = || id("n", 2);
        assert!(replaces(
            ("n", 1),
            (&n2(), false),
            young,
            false,
            (&n2(), true)
        ));
        assert!(replaces(
            ("n", 3),
            (&n2(), true),
            young,
            false,
            (&n2(), false)
        ));
        // Long after the first, a connection from the other side means that
        // side dropped the first: it replaces it, whoever is lower.
        let b1 = || id("b", 1);
        assert!(!replaces(a, (&b1(), true), young, false, (&b1(), false)));
        assert!(replaces(
            a,
            (&b1(), true),
            DIAL_TIMEOUT,
            false,
            (&b1(), false)
        ));
    }

    #[test]
    fn each_kind_of_stream_is_read_up_to_what_it_really_carries() {
        let limits = Limits::default();
        assert_eq!(read_limit(StreamKind::Hello, &limits), MAX_HELLO_FRAME);
        assert_eq!(read_limit(StreamKind::OneWay, &limits), MAX_ONE_WAY_FRAME);
        assert_eq!(
            read_limit(StreamKind::Request, &limits),
            limits.max_frame_len as usize
        );
        // A smaller protocol limit lowers every kind.
        let small = Limits {
            max_frame_len: 1 << 10,
            ..Limits::default()
        };
        for kind in [StreamKind::Hello, StreamKind::Request, StreamKind::OneWay] {
            assert!(read_limit(kind, &small) <= 1 << 10);
        }
        // A one-way frame holds the largest raft message.
        const { assert!(MAX_ONE_WAY_FRAME > super::super::raft::DEFAULT_MAX_RAFT_MESSAGE_BYTES) };
    }
}
