//! A grid node: the cache of this process joined to the cluster.
//!
//! `Grid::member()` and `Grid::client()` build a local grid and attach a
//! [`Node`] to it. The node owns the QUIC [`Transport`], runs chitchat gossip
//! over it, answers peers' frames, and fans this process's invalidations out
//! to every live node, waiting for their acknowledgements.
//!
//! Invalidation numbering: each node numbers the invalidations it originates
//! 1, 2, 3, … per generation. A receiver remembers, per origin, the
//! generation and the last sequence it applied. It drops everything it holds
//! (it cannot tell which entries the missed messages concerned) when:
//! - a message skips a sequence number (a gap),
//! - it hears from an origin for the first time at a sequence above 1,
//! - the origin's gossiped high-water mark is above what it applied (a
//!   missed tail, detected even when the origin has gone quiet).
//!
//! Messages from an older generation of an origin than one already seen are
//! refused.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chitchat::{
    spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
};
use hydracache_protocol::{
    ErrorCode, Hello, Invalidate, Limits, Message, NodeIdentity, Role, Target,
};

use super::consensus::{role_name, Consensus};
use super::gossip::{keys, GossipInbox, QuicGossip};
use super::ownership::MembershipView;
use super::raft::{raft_id, MembershipCommand, RaftConfig};
use super::tls::TlsConfig;
use super::transport::{Handler, PeerIdentity, Reply, Transport, TransportError};
use crate::builder::LocalBuilder;
use crate::codec::{Codec, Rkyv};
use crate::error::CacheError;
use crate::events::EventOrigin;
use crate::grid::{Grid, GridInner, Remote};
use crate::invalidation::Invalidation;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A required setting is missing.
    #[error("missing setting: {0}")]
    Missing(&'static str),
    /// The transport could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Gossip could not start.
    #[error("gossip failed to start: {0}")]
    Gossip(String),
    /// A seed address does not parse.
    #[error("bad seed address {0:?}")]
    BadSeed(String),
}

/// When an invalidation call returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InvalidationMode {
    /// After every live node acknowledged applying it (default).
    #[default]
    Acknowledged,
    /// After applying it locally and sending it; acknowledgements are not awaited.
    Sent,
}

/// Builds a member (owns data) or a client (near cache only) of a grid.
///
/// ```no_run
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// use hydracache::cluster::DevCa;
/// use hydracache::Grid;
///
/// let ca = DevCa::new("orders")?;
/// let member = Grid::member()
///     .cluster("orders")
///     .node_id("api-1")
///     .bind("127.0.0.1:7400".parse()?)
///     .seeds(["127.0.0.1:7401"])
///     .tls(ca.issue("api-1")?)
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
pub struct NodeBuilder<C: Codec = Rkyv> {
    local: LocalBuilder<C>,
    role: Role,
    cluster: String,
    node_id: Option<String>,
    bind: SocketAddr,
    advertise: Option<SocketAddr>,
    seeds: Vec<String>,
    tls: Option<TlsConfig>,
    ack_timeout: Duration,
    gossip_interval: Duration,
    mode: InvalidationMode,
    limits: Limits,
    raft: RaftConfig,
}

impl Grid {
    /// A builder for a grid member: a node that owns a share of the keys.
    pub fn member() -> NodeBuilder {
        NodeBuilder::new(Role::Member)
    }

    /// A builder for a grid client: a near cache that owns nothing and sees
    /// every invalidation.
    pub fn client() -> NodeBuilder {
        NodeBuilder::new(Role::Client)
    }
}

impl NodeBuilder {
    fn new(role: Role) -> Self {
        NodeBuilder {
            local: Grid::local(),
            role,
            cluster: "hydracache".to_string(),
            node_id: None,
            bind: "127.0.0.1:0".parse().expect("literal address"),
            advertise: None,
            seeds: Vec::new(),
            tls: None,
            ack_timeout: Duration::from_secs(2),
            gossip_interval: Duration::from_millis(200),
            mode: InvalidationMode::Acknowledged,
            limits: Limits::default(),
            raft: RaftConfig::default(),
        }
    }
}

impl<C: Codec> NodeBuilder<C> {
    /// The cluster name; peers of another cluster are refused.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// This node's id, unique in the cluster (required for members; clients
    /// get a generated one if unset).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(id.into());
        self
    }

    /// The UDP address to bind (default 127.0.0.1:0). One port carries
    /// everything: requests, invalidations, gossip.
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// The address peers should use to reach this node, if not the bound
    /// one (behind NAT, or when binding 0.0.0.0).
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// Addresses of nodes to join through.
    pub fn seeds<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// This node's TLS identity (required).
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// How long an invalidation waits for acknowledgements (default 2 s).
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout;
        self
    }

    /// Gossip round interval (default 200 ms).
    pub fn gossip_interval(mut self, interval: Duration) -> Self {
        self.gossip_interval = interval;
        self
    }

    /// When invalidation calls return (default: when acknowledged).
    pub fn invalidation_mode(mut self, mode: InvalidationMode) -> Self {
        self.mode = mode;
        self
    }

    /// How many raft voters the cluster keeps (3 or 5; default 3). The first
    /// members admitted become voters; later ones are learners, promoted
    /// when a voter leaves.
    pub fn raft_voters(mut self, voters: usize) -> Self {
        self.raft.voters = voters;
        self
    }

    /// Local cache settings (capacity, TTL, events, codec, …).
    pub fn cache(mut self, f: impl FnOnce(LocalBuilder<C>) -> LocalBuilder<C>) -> Self {
        self.local = f(self.local);
        self
    }

    /// Capacity of a client's near cache in bytes (the same setting as
    /// `max_capacity_bytes` of a local grid).
    pub fn near_cache_capacity_bytes(mut self, bytes: usize) -> Self {
        self.local = self.local.max_capacity_bytes(bytes);
        self
    }

    /// Starts a member (binds, joins gossip through the seeds) and returns
    /// its `Grid`.
    pub async fn start(self) -> Result<Grid<C>, ClusterError> {
        let tls = self.tls.as_ref().ok_or(ClusterError::Missing("tls"))?;
        let node_id = match (&self.node_id, self.role) {
            (Some(id), _) => id.clone(),
            (None, Role::Client) => format!("client-{:x}", new_generation()),
            (None, Role::Member) => return Err(ClusterError::Missing("node_id")),
        };
        let generation = new_generation();
        let grid = self.local.build();
        let hello = Hello::new(
            self.cluster.as_str(),
            (node_id.as_str(), generation),
            self.role,
        );
        let transport = Transport::bind(self.bind, tls, hello, self.limits.clone())?;
        let bound = transport.local_addr();
        let addr = self.advertise.unwrap_or(bound);
        let (gossip, inbox) = QuicGossip::new(transport.clone());
        let mut seeds = Vec::new();
        for s in &self.seeds {
            let a: SocketAddr = s.parse().map_err(|_| ClusterError::BadSeed(s.clone()))?;
            seeds.push(a.to_string());
        }
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(node_id.clone(), generation, addr),
            cluster_id: self.cluster.clone(),
            gossip_interval: self.gossip_interval,
            listen_addr: bound,
            seed_nodes: seeds,
            failure_detector_config: FailureDetectorConfig {
                initial_interval: self.gossip_interval,
                dead_node_grace_period: Duration::from_secs(3600),
                ..Default::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
        };
        let role = role_name(self.role);
        let kvs = vec![
            (keys::ROLE.to_string(), role.to_string()),
            (keys::ADDR.to_string(), addr.to_string()),
            (keys::INVALIDATION_HWM.to_string(), "0".to_string()),
            (keys::LEAVING.to_string(), "0".to_string()),
        ];
        let node = Arc::new(Node {
            transport: transport.clone(),
            chitchat: tokio::sync::OnceCell::new(),
            identity: NodeIdentity::new(node_id.as_str(), generation),
            role: self.role,
            grid: Arc::downgrade(&grid.inner),
            sequence: AtomicU64::new(0),
            applied: Mutex::new(HashMap::new()),
            ack_timeout: self.ack_timeout,
            mode: self.mode,
            inbox,
            gossip_interval: self.gossip_interval,
            live: std::sync::OnceLock::new(),
            partitioned: std::sync::atomic::AtomicBool::new(false),
            stopped: std::sync::atomic::AtomicBool::new(false),
            consensus: std::sync::OnceLock::new(),
            view: std::sync::RwLock::new(Arc::new(MembershipView::empty())),
            raft_status: std::sync::RwLock::new(Default::default()),
        });
        transport.serve(Arc::new(NodeHandler(Arc::clone(&node))));
        let chitchat = spawn_chitchat(config, kvs, &gossip)
            .await
            .map_err(|e| ClusterError::Gossip(e.to_string()))?;
        let _ = node
            .live
            .set(chitchat.chitchat().lock().await.live_nodes_watcher());
        let _ = node.chitchat.set(chitchat);
        if self.role == Role::Member {
            // The first member (started without seeds) founds the cluster;
            // every other member joins with an empty log and is admitted by
            // the leader once gossip reports it.
            let consensus = Consensus::start(
                node.identity.clone(),
                self.seeds.is_empty(),
                self.raft.clone(),
                transport.clone(),
                Arc::downgrade(&node),
            )
            .map_err(|e| ClusterError::Gossip(format!("raft: {e}")))?;
            let _ = node.consensus.set(consensus);
        }
        let _ = grid.inner.remote.set(Arc::clone(&node) as Arc<dyn Remote>);
        let _ = grid.inner.node.set(Arc::clone(&node));
        tokio::spawn(watch_high_water_marks(Arc::downgrade(&node)));
        Ok(grid)
    }

    /// [`NodeBuilder::start`] under the name clients use.
    pub async fn connect(self) -> Result<Grid<C>, ClusterError> {
        self.start().await
    }
}

/// A fresh generation for this process: the wall clock in microseconds, so a
/// restarted process (on any host with a sane clock) gets a higher one.
fn new_generation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
}

/// What the cluster looks like from one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterDiagnostics {
    /// Member or client.
    pub role: Role,
    /// This node's id.
    pub node_id: String,
    /// This process's generation.
    pub generation: u64,
    /// The UDP address the node listens on.
    pub addr: SocketAddr,
    /// The membership epoch of the view below (0 before the first admission).
    pub epoch: u64,
    /// Members Raft has admitted at that epoch.
    pub members: Vec<String>,
    /// Clients Raft has admitted at that epoch.
    pub clients: Vec<String>,
    /// The raft leader's node id, if known.
    pub raft_leader: Option<String>,
    /// The raft term (0 on clients, which are not raft peers).
    pub raft_term: u64,
    /// Nodes gossip reports live (including this one).
    pub gossip_live: usize,
    /// Nodes gossip has declared dead.
    pub dead: Vec<String>,
    /// The last invalidation sequence number this node originated.
    pub invalidation_sequence: u64,
}

/// The cluster side of a grid.
pub(crate) struct Node {
    transport: Transport,
    chitchat: tokio::sync::OnceCell<ChitchatHandle>,
    identity: NodeIdentity,
    role: Role,
    grid: Weak<GridInner>,
    sequence: AtomicU64,
    /// Per origin node id: (generation, last applied sequence).
    applied: Mutex<HashMap<String, (u64, u64)>>,
    ack_timeout: Duration,
    mode: InvalidationMode,
    inbox: GossipInbox,
    gossip_interval: Duration,
    /// chitchat's live-node watch: updated with every liveness or state
    /// change, read without waiting on gossip's lock.
    live: std::sync::OnceLock<tokio::sync::watch::Receiver<BTreeMap<ChitchatId, NodeState>>>,
    /// Set once the node has left or stopped: invalidations stay local.
    stopped: std::sync::atomic::AtomicBool,
    /// Test hook: refuse incoming invalidations, as if they were lost.
    partitioned: std::sync::atomic::AtomicBool,
    /// The raft task (members only).
    consensus: std::sync::OnceLock<Consensus>,
    /// The admitted membership at the latest epoch this node knows.
    view: std::sync::RwLock<Arc<MembershipView>>,
    /// Copy of the raft status for diagnostics (clients: the leader they heard from).
    raft_status: std::sync::RwLock<super::consensus::RaftStatus>,
}

struct LivePeer {
    leaving: bool,
    id: String,
    generation: u64,
    role: String,
    addr: SocketAddr,
    hwm: u64,
}

impl Node {
    fn live_peers(&self, include_self: bool) -> Vec<LivePeer> {
        let Some(live) = self.live.get() else {
            return Vec::new();
        };
        let live = live.borrow();
        live.iter()
            .filter(|(id, _)| include_self || *id.node_id != *self.identity.id)
            .filter_map(|(id, state)| {
                Some(LivePeer {
                    leaving: state.get(keys::LEAVING) == Some("1"),
                    id: id.node_id.to_string(),
                    generation: id.generation_id,
                    role: state.get(keys::ROLE)?.to_string(),
                    addr: state.get(keys::ADDR)?.parse().ok()?,
                    hwm: state
                        .get(keys::INVALIDATION_HWM)
                        .and_then(|h| h.parse().ok())
                        .unwrap_or(0),
                })
            })
            .collect()
    }

    pub(crate) async fn diagnostics(&self) -> ClusterDiagnostics {
        let live = self.live_peers(true).len();
        let dead = self
            .dead_nodes()
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let view = self.view();
        let pick = |role: Role| {
            view.members()
                .iter()
                .filter(|m| m.role == role)
                .map(|m| m.node.id.to_string())
                .collect::<Vec<_>>()
        };
        let status = self.status();
        ClusterDiagnostics {
            role: self.role,
            node_id: self.identity.id.to_string(),
            generation: self.identity.generation,
            addr: self.transport.local_addr(),
            epoch: view.epoch(),
            members: pick(Role::Member),
            clients: pick(Role::Client),
            raft_leader: status.leader,
            raft_term: status.term,
            gossip_live: live,
            dead,
            invalidation_sequence: self.sequence.load(Ordering::SeqCst),
        }
    }

    /// The gossiped address of the live process with this raft id.
    pub(crate) fn address_of_raft_id(&self, id: u64) -> Option<SocketAddr> {
        self.live_peers(true)
            .into_iter()
            .find(|p| raft_id(&p.id, p.generation) == id)
            .map(|p| p.addr)
    }

    fn status(&self) -> super::consensus::RaftStatus {
        match self.consensus.get() {
            Some(c) => c.status(),
            None => self.raft_status.read().expect("status").clone(),
        }
    }

    /// The admitted membership at the latest epoch this node knows.
    pub(crate) fn view(&self) -> Arc<MembershipView> {
        Arc::clone(&self.view.read().expect("view"))
    }

    /// Nodes gossip has declared dead, with their generations.
    async fn dead_nodes(&self) -> Vec<(String, u64)> {
        match self.chitchat.get() {
            Some(h) => {
                let c = h.chitchat();
                let g = c.lock().await;
                g.dead_nodes()
                    .map(|id| (id.node_id.to_string(), id.generation_id))
                    .collect()
            }
            None => Vec::new(),
        }
    }

    /// What the raft leader should propose to make the membership match
    /// gossip: admissions of live, unadmitted processes; removals of dead,
    /// leaving or superseded ones.
    pub(crate) async fn reconcile(&self, view: &MembershipView) -> Vec<MembershipCommand> {
        let live = self.live_peers(true);
        let dead = self.dead_nodes().await;
        let mut commands = Vec::new();
        for p in &live {
            let role = if p.role == "client" {
                Role::Client
            } else {
                Role::Member
            };
            if p.leaving {
                if view.is_admitted(&p.id, p.generation) {
                    commands.push(MembershipCommand::remove(p.id.clone(), p.generation));
                }
            } else if !view.is_admitted(&p.id, p.generation) {
                let newer_admitted = view
                    .member(&p.id)
                    .is_some_and(|m| m.node.generation > p.generation);
                if !newer_admitted {
                    commands.push(MembershipCommand::admit(
                        p.id.clone(),
                        p.generation,
                        role,
                        p.addr,
                    ));
                }
            }
        }
        for m in view.members() {
            let id = m.node.id.to_string();
            if dead
                .iter()
                .any(|(d, g)| *d == id && *g == m.node.generation)
            {
                commands.push(MembershipCommand::remove(id, m.node.generation));
            }
        }
        commands
    }

    /// A new membership view from Raft (or, on a client, from a member).
    pub(crate) fn on_new_view(self: &Arc<Self>, view: MembershipView, leader: bool) {
        let view = Arc::new(view);
        {
            let mut current = self.view.write().expect("view");
            if view.epoch() < current.epoch() {
                return;
            }
            *current = Arc::clone(&view);
        }
        if leader {
            // Clients are not raft peers: the leader pushes them the view.
            let snapshot = view.to_snapshot();
            for m in view.members().iter().filter(|m| m.role == Role::Client) {
                let (transport, addr, snapshot) =
                    (self.transport.clone(), m.address, snapshot.clone());
                tokio::spawn(async move {
                    let _ = transport
                        .send(addr, Message::MetadataSnapshot(snapshot))
                        .await;
                });
            }
        }
    }

    /// Leaves the cluster: announces it in gossip, waits (bounded) until the
    /// leader has removed this node from the membership, then stops.
    pub(crate) async fn leave(&self) {
        if let Some(h) = self.chitchat.get() {
            let c = h.chitchat();
            c.lock().await.self_node_state().set(keys::LEAVING, "1");
        }
        for _ in 0..100 {
            if !self
                .view()
                .is_admitted(&self.identity.id, self.identity.generation)
            {
                break;
            }
            tokio::time::sleep(self.gossip_interval / 2).await;
        }
        self.shutdown().await;
    }

    /// Stops gossip and closes the endpoint.
    pub(crate) async fn shutdown(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(h) = self.chitchat.get() {
            h.abort();
        }
        self.transport.close().await;
    }

    /// Stops gossip and closes the endpoint without waiting (on drop).
    pub(crate) fn shutdown_now(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(h) = self.chitchat.get() {
            h.abort();
        }
        self.transport.close_now();
    }

    /// Answers a peer's read of a key this node should own at its epoch:
    /// the value (the stored bytes, shared, not re-encoded) or a miss; or,
    /// if it does not own the key at its epoch, wrong-owner with that epoch,
    /// followed by the newer membership if the peer's is older.
    fn fetch(&self, peer: &PeerIdentity, fetch: &hydracache_protocol::Fetch) -> Message {
        use hydracache_protocol::{Entry, FetchReply};
        let view = self.view();
        let key = match std::str::from_utf8(&fetch.key) {
            Ok(k) => k,
            Err(_) => {
                return Message::Error {
                    code: ErrorCode::PROTOCOL,
                    message: "keys must be UTF-8".into(),
                }
            }
        };
        if self.role != Role::Member || !view.is_owner(key, &self.identity.id) {
            if fetch.epoch < view.epoch() {
                let (transport, addr, snapshot) =
                    (self.transport.clone(), peer.addr, view.to_snapshot());
                tokio::spawn(async move {
                    let _ = transport
                        .send(addr, Message::MetadataSnapshot(snapshot))
                        .await;
                });
            }
            return Message::FetchReply(FetchReply::WrongOwner {
                epoch: view.epoch(),
            });
        }
        let Some(grid) = self.grid.upgrade() else {
            return Message::Error {
                code: ErrorCode::SHUTTING_DOWN,
                message: "this node is shutting down".into(),
            };
        };
        let reply = match grid.store.get_ref(key.as_bytes()) {
            Some(entry) => {
                let mut e = Entry::new(entry.to_bytes())
                    .with_tags(entry.tags().map(Bytes::copy_from_slice).collect::<Vec<_>>());
                if let Some(ttl) = entry.ttl_remaining() {
                    e = e.with_ttl_ms(ttl.as_millis() as u64);
                }
                FetchReply::Hit(e)
            }
            None => FetchReply::Miss,
        };
        Message::FetchReply(reply)
    }

    /// Test hook: while set, incoming invalidations are refused as if lost.
    pub(crate) fn set_partitioned(&self, on: bool) {
        self.partitioned.store(on, Ordering::SeqCst);
    }

    /// The transport (tests cut links with it).
    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }

    async fn publish_hwm(&self, seq: u64) {
        if let Some(h) = self.chitchat.get() {
            let c = h.chitchat();
            let mut g = c.lock().await;
            let state = g.self_node_state();
            let current: u64 = state
                .get(keys::INVALIDATION_HWM)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if seq > current {
                state.set(keys::INVALIDATION_HWM, seq);
            }
        }
    }

    async fn fan_out(&self, inv: Invalidation) -> Result<(), CacheError> {
        if self.stopped.load(Ordering::SeqCst) {
            return Ok(()); // left the cluster: a local cache now
        }
        let sequence = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        let message = Message::Invalidate(Invalidate {
            origin: self.identity.clone(),
            sequence,
            epoch: self.view().epoch(),
            target: to_target(&inv),
        });
        // Clients do not talk to clients: a client sends to the members,
        // and each member relays to the other clients before it acknowledges.
        let mut peers = self.live_peers(false);
        if self.role == Role::Client {
            peers.retain(|p| p.role == "member");
        }
        // The high-water mark is gossiped by the maintenance task.
        self.send_to(peers, message, sequence, self.ack_timeout)
            .await
    }

    /// An invalidation names its origin; a peer may only send its own, except
    /// that members relay clients' invalidations to clients.
    fn may_speak_for(&self, peer: &PeerIdentity, inv: &Invalidate) -> bool {
        *inv.origin.id == *peer.node_id || (self.role == Role::Client && peer.role == Role::Member)
    }

    /// Passes a client's invalidation on to the other live clients (clients
    /// do not talk to clients). Relays wait half the acknowledgement timeout,
    /// so that the originating client hears about a slow client before its
    /// own wait for this member ends.
    async fn relay_to_clients(&self, inv: Invalidate) -> Result<(), CacheError> {
        let sequence = inv.sequence;
        let origin = inv.origin.id.to_string();
        let mut clients = self.live_peers(false);
        clients.retain(|p| p.role == "client" && p.id != origin);
        self.send_to(
            clients,
            Message::Invalidate(inv),
            sequence,
            self.ack_timeout / 2,
        )
        .await
    }

    /// Sends an invalidation to `peers` and, in acknowledged mode, waits for
    /// their acks; names the peers that did not acknowledge.
    async fn send_to(
        &self,
        peers: Vec<LivePeer>,
        message: Message,
        sequence: u64,
        timeout: Duration,
    ) -> Result<(), CacheError> {
        let sends = peers.into_iter().map(|peer| {
            let transport = self.transport.clone();
            let message = message.clone();
            let mode = self.mode;
            async move {
                let ok = match mode {
                    InvalidationMode::Sent => transport.send(peer.addr, message).await.is_ok(),
                    InvalidationMode::Acknowledged => matches!(
                        tokio::time::timeout(timeout, transport.request(peer.addr, message)).await,
                        Ok(Ok((_, Message::InvalidateAck { sequence: s, .. }))) if s == sequence
                    ),
                };
                (peer.id, ok)
            }
        });
        let results = futures_util::future::join_all(sends).await;
        let mut missing: Vec<String> = results
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(id, _)| id)
            .collect();
        if missing.is_empty() || self.mode == InvalidationMode::Sent {
            Ok(())
        } else {
            missing.sort();
            Err(CacheError::Unacknowledged { nodes: missing })
        }
    }

    /// Applies an invalidation from a peer, with the gap rule.
    fn receive(&self, inv: &Invalidate) -> Message {
        let Some(grid) = self.grid.upgrade() else {
            return Message::Error {
                code: ErrorCode::SHUTTING_DOWN,
                message: "this node is shutting down".into(),
            };
        };
        let origin = inv.origin.id.to_string();
        let gap = {
            let mut applied = self.applied.lock().expect("applied");
            match applied.get(&origin).copied() {
                Some((gen, _)) if inv.origin.generation < gen => {
                    return Message::Error {
                        code: ErrorCode::STALE_GENERATION,
                        message: format!(
                            "origin {origin} generation {} is older than {gen}",
                            inv.origin.generation
                        )
                        .into(),
                    };
                }
                Some((gen, last)) if gen == inv.origin.generation => {
                    let gap = inv.sequence > last.saturating_add(1);
                    applied.insert(origin.clone(), (gen, last.max(inv.sequence)));
                    gap
                }
                _ => {
                    applied.insert(origin.clone(), (inv.origin.generation, inv.sequence));
                    inv.sequence > 1
                }
            }
        };
        let remote = EventOrigin::Remote { node: origin };
        if gap {
            grid.apply(&Invalidation::Flush, remote.clone());
        }
        match from_target(&inv.target) {
            Ok(invs) => {
                for i in invs {
                    grid.apply(&i, remote.clone());
                }
            }
            Err(e) => {
                // A key we cannot represent cannot be in our cache either,
                // except as bytes we never stored: drop everything to be safe.
                grid.apply(&Invalidation::Flush, remote);
                return Message::Error {
                    code: ErrorCode::PROTOCOL,
                    message: e.into(),
                };
            }
        }
        Message::InvalidateAck {
            origin_generation: inv.origin.generation,
            sequence: inv.sequence,
        }
    }
}

impl Remote for Node {
    fn invalidate(
        &self,
        inv: Invalidation,
    ) -> Pin<Box<dyn Future<Output = Result<(), CacheError>> + Send + '_>> {
        Box::pin(self.fan_out(inv))
    }
}

/// Every gossip interval: refreshes the live-peer snapshot, publishes this
/// node's high-water mark, and compares the peers' marks with what was
/// applied; a missed tail drops everything this node cannot prove fresh.
async fn watch_high_water_marks(node: Weak<Node>) {
    loop {
        let Some(n) = node.upgrade() else { return };
        let interval = n.gossip_interval;
        let peers = n.live_peers(false);
        n.publish_hwm(n.sequence.load(Ordering::SeqCst)).await;
        let mut missed = Vec::new();
        {
            let mut applied = n.applied.lock().expect("applied");
            for p in peers {
                let entry = applied.entry(p.id.clone()).or_insert((p.generation, 0));
                if p.generation > entry.0 {
                    *entry = (p.generation, 0);
                }
                if p.generation == entry.0 && p.hwm > entry.1 {
                    missed.push(p.id.clone());
                    entry.1 = p.hwm;
                }
            }
        }
        if !missed.is_empty() {
            if let Some(grid) = n.grid.upgrade() {
                grid.apply(
                    &Invalidation::Flush,
                    EventOrigin::Remote {
                        node: missed.join(","),
                    },
                );
            }
        }
        drop(n);
        tokio::time::sleep(interval).await;
    }
}

fn to_target(inv: &Invalidation) -> Target {
    match inv {
        Invalidation::Key(k) => Target::Key(Bytes::copy_from_slice(k.as_bytes())),
        Invalidation::Tags(tags) if tags.len() == 1 => {
            Target::Tag(Bytes::copy_from_slice(tags[0].as_bytes()))
        }
        Invalidation::Tags(tags) => Target::Tags(
            tags.iter()
                .map(|t| Bytes::copy_from_slice(t.as_bytes()))
                .collect(),
        ),
        Invalidation::Flush => Target::Flush,
    }
}

fn utf8(b: &Bytes) -> Result<String, &'static str> {
    String::from_utf8(b.to_vec()).map_err(|_| "keys and tags must be UTF-8")
}

fn from_target(t: &Target) -> Result<Vec<Invalidation>, &'static str> {
    Ok(match t {
        Target::Key(k) => vec![Invalidation::Key(utf8(k)?)],
        Target::Keys(ks) => ks
            .iter()
            .map(|k| utf8(k).map(Invalidation::Key))
            .collect::<Result<_, _>>()?,
        Target::Tag(t) => vec![Invalidation::Tags(vec![utf8(t)?])],
        Target::Tags(ts) => vec![Invalidation::Tags(
            ts.iter().map(utf8).collect::<Result<_, _>>()?,
        )],
        Target::Flush => vec![Invalidation::Flush],
    })
}

/// Serves peers' frames for a node.
struct NodeHandler(Arc<Node>);

impl Handler for NodeHandler {
    fn request<'a>(&'a self, peer: &'a PeerIdentity, message: Message) -> Reply<'a> {
        Box::pin(async move {
            match message {
                Message::Invalidate(_) if self.0.partitioned.load(Ordering::SeqCst) => {
                    Message::Error {
                        code: ErrorCode::REFUSED,
                        message: "partitioned (test hook)".into(),
                    }
                }
                Message::Invalidate(inv) if !self.0.may_speak_for(peer, &inv) => Message::Error {
                    code: ErrorCode::REFUSED,
                    message: format!(
                        "{} may not send invalidations as {}",
                        peer.node_id, inv.origin.id
                    )
                    .into(),
                },
                Message::Invalidate(inv) => {
                    let reply = self.0.receive(&inv);
                    if matches!(reply, Message::InvalidateAck { .. })
                        && self.0.role == Role::Member
                        && peer.role == Role::Client
                    {
                        // Relay a client's invalidation to the other clients.
                        if let Err(e) = self.0.relay_to_clients(inv).await {
                            return Message::Error {
                                code: ErrorCode::INTERNAL,
                                message: e.to_string().into(),
                            };
                        }
                    }
                    reply
                }
                Message::Ping { nonce } => Message::Pong { nonce },
                Message::Fetch(fetch) => self.0.fetch(peer, &fetch),
                other => Message::Error {
                    code: ErrorCode::REFUSED,
                    message: format!("{:?} is not served by this node", other.kind()).into(),
                },
            }
        })
    }

    fn message(&self, peer: &PeerIdentity, message: Message) {
        match message {
            Message::Gossip(bytes) => {
                self.0.inbox.deliver(peer.addr, &bytes);
            }
            Message::Invalidate(inv) if self.0.may_speak_for(peer, &inv) => {
                let applied = matches!(self.0.receive(&inv), Message::InvalidateAck { .. });
                if applied && self.0.role == Role::Member && peer.role == Role::Client {
                    let node = Arc::clone(&self.0);
                    tokio::spawn(async move {
                        let _ = node.relay_to_clients(inv).await;
                    });
                }
            }
            Message::Raft(bytes) => {
                // Only from an authenticated peer, under the driver's size
                // limit; the raft id is derived from the peer's Hello.
                if let Some(consensus) = self.0.consensus.get() {
                    consensus.deliver(raft_id(&peer.node_id, peer.generation), bytes);
                }
            }
            Message::MetadataSnapshot(snapshot)
                if self.0.role == Role::Client && peer.role == Role::Member =>
            {
                let view = MembershipView::from(snapshot);
                self.0.raft_status.write().expect("status").leader = Some(peer.node_id.clone());
                self.0.on_new_view(view, false);
            }
            _ => {}
        }
    }
}
