//! `Grid::member()` and `Grid::client()`: the settings of a node and how it
//! starts (binds its endpoint, joins gossip, starts raft on members, and
//! attaches itself to a local grid through the core's seam).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatId, FailureDetectorConfig};
use hydracache_protocol::{Hello, Limits, NodeIdentity, Role};

use super::attachment::Attachment;
use super::consensus::{role_name, Consensus};
use super::gossip::{keys, QuicGossip};
use super::handler::NodeHandler;
use super::invalidations::watch_high_water_marks;
use super::isolation::Isolation;
use super::node::Node;
use super::owner_load::{Loaders, OwnerLoads, DEFAULT_MAX_ARGS};
use super::ownership::MembershipView;
use super::raft::RaftConfig;
use super::read_path::OwnerUnreachable;
use super::sequence::SequenceTable;
use super::tls::TlsConfig;
use super::transport::{Transport, TransportError};
use crate::builder::LocalBuilder;
use crate::codec::{CacheValue, Codec, Rkyv};
use crate::grid::{Grid, GridInner};
use crate::owner_load::OwnerLoadRequest;
use crate::remote::Remote;
use std::error::Error as StdError;
use std::future::Future;

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
    /// A seed is not `host:port`, or its host name does not resolve.
    #[error("seed {seed:?} does not resolve: {source}")]
    UnresolvedSeed {
        /// The seed as given to [`NodeBuilder::seeds`].
        seed: String,
        /// Why the lookup failed.
        #[source]
        source: std::io::Error,
    },
    /// [`NodeBuilder::connect`] was called without seeds: there is no one to
    /// reach.
    #[error("connect needs at least one seed")]
    NoSeeds,
    /// [`NodeBuilder::connect`] reached no member through the seeds within
    /// its deadline; the node was stopped.
    #[error("no member reached through seeds {seeds:?} within {waited:?}")]
    NoMemberReached {
        /// The seeds tried.
        seeds: Vec<String>,
        /// The deadline that passed.
        waited: Duration,
    },
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
/// Members [`start`](NodeBuilder::start); clients
/// [`connect`](NodeBuilder::connect), which returns once a member is reached.
/// Seeds are `host:port` (`"node-2:7400"`, `"10.0.0.2:7400"`).
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
    bootstrap: bool,
    tls: Option<TlsConfig>,
    ack_timeout: Duration,
    request_timeout: Duration,
    on_unreachable: OwnerUnreachable,
    lease_timeout: Duration,
    gossip_interval: Duration,
    isolation_timeout: Option<Duration>,
    mode: InvalidationMode,
    limits: Limits,
    raft: RaftConfig,
    connect_timeout: Duration,
    loaders: Loaders,
    max_owner_load_args: usize,
    owner_load_timeout: Duration,
    near_copies_max_bytes: Option<usize>,
    rejoin: bool,
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
            bootstrap: false,
            tls: None,
            ack_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(2),
            on_unreachable: OwnerUnreachable::ServeLocally,
            lease_timeout: Duration::from_secs(10),
            gossip_interval: Duration::from_millis(200),
            isolation_timeout: None,
            mode: InvalidationMode::Acknowledged,
            limits: Limits::default(),
            raft: RaftConfig::default(),
            connect_timeout: Duration::from_secs(10),
            loaders: Loaders::default(),
            max_owner_load_args: DEFAULT_MAX_ARGS,
            owner_load_timeout: Duration::from_secs(10),
            near_copies_max_bytes: None,
            rejoin: true,
        }
    }
}

impl<C: Codec> NodeBuilder<C> {
    /// The cluster name; peers of another cluster are refused.
    pub fn cluster(mut self, name: impl Into<String>) -> Self {
        self.cluster = name.into();
        self
    }

    /// This node's id, unique in the cluster; it must be the one its
    /// certificate names. Required for members; a client without one takes
    /// its certificate's ([`TlsConfig::node_id`]).
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

    /// Nodes to join through, as `host:port`: an IP address or a host name
    /// (`"node-2:7400"`). Names are resolved when the node starts (a name
    /// that does not resolve is [`ClusterError::UnresolvedSeed`]) and again
    /// every minute by gossip, so a seed that moves is found again.
    pub fn seeds<S: Into<String>>(mut self, seeds: impl IntoIterator<Item = S>) -> Self {
        self.seeds = seeds.into_iter().map(Into::into).collect();
        self
    }

    /// Whether this member founds a new cluster (default false). Exactly one
    /// member of a new cluster is started with `bootstrap(true)`: it becomes
    /// the first Raft voter and admits itself, under a new cluster
    /// incarnation (see [`incarnation`](super::incarnation)). Every other
    /// member, and that same member when it restarts, joins: through its
    /// seeds, or, started without seeds, by waiting until a member that
    /// names it as a seed (or knew its address) gossips with it. A member
    /// never founds a cluster by accident; one started with `bootstrap`
    /// while its cluster runs founds another incarnation, whose Raft
    /// messages and admissions the running cluster refuses. Ignored on
    /// clients.
    pub fn bootstrap(mut self, found: bool) -> Self {
        self.bootstrap = found;
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

    /// Deadline of one read or put at a key's owner, retries after
    /// wrong-owner answers included (default 2 s; a put also waits for the
    /// owner's invalidation, up to the acknowledgement timeout).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// What reads and puts do when no owner answers within the request
    /// deadline (default: serve locally, counted in `local_fallbacks`).
    pub fn owner_unreachable(mut self, on: OwnerUnreachable) -> Self {
        self.on_unreachable = on;
        self
    }

    /// How long a node holding the lease to load a key may stay silent
    /// before the key's owner passes the lease to a waiting caller (default
    /// 10 s). Set it above the slowest loader: a loader still running when
    /// it expires is not stopped, and its value is then refused by the owner
    /// (kept on its own node only) while the next holder loads again.
    pub fn lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease_timeout = timeout;
        self
    }

    /// On a member, how many bytes of its store the copies of keys it does
    /// not own may take (default a quarter of the capacity): past it the
    /// oldest copies are dropped, so copies never crowd out the keys the
    /// member owns. A client's store holds only copies and ignores this.
    pub fn near_copies_max_bytes(mut self, bytes: usize) -> Self {
        self.near_copies_max_bytes = Some(bytes);
        self
    }

    /// Whether this node starts again by itself once the membership
    /// removed it (default true). A node declared dead while it was paused
    /// or cut off past the failure timeout is removed for good: its
    /// generation is never admitted again. Once it hears it was removed it
    /// flushes its cache, owns nothing and keeps nothing; with this setting
    /// it then stops that generation and starts a new one on the same
    /// address, with the same id, certificate and settings, seeded with the
    /// members it last knew and the configured seeds, and is admitted
    /// again. Requests during the restart fall back as for any unreachable
    /// owner ([`owner_unreachable`](NodeBuilder::owner_unreachable)), and
    /// the grid keeps nothing until the new generation's copy gate opens
    /// (docs/consistency.md). Off, the node stays removed: it reads through
    /// the owners and keeps nothing, since no one sends it invalidations,
    /// until the process restarts it.
    ///
    /// Counted in [`ClusterDiagnostics::rejoins`](super::ClusterDiagnostics::rejoins).
    pub fn rejoin_after_removal(mut self, rejoin: bool) -> Self {
        self.rejoin = rejoin;
        self
    }

    /// Gossip round interval (default 200 ms).
    pub fn gossip_interval(mut self, interval: Duration) -> Self {
        self.gossip_interval = interval;
        self
    }

    /// How long a node may go without hearing a majority of the admitted
    /// members before it drops everything it holds and stops keeping what
    /// it loads, until it hears them again (default: ten gossip intervals,
    /// at least 1 s). An invalidation names a process gossip declared dead
    /// until it has not been heard for twice this long. See
    /// docs/consistency.md, "Isolation".
    pub fn isolation_timeout(mut self, timeout: Duration) -> Self {
        self.isolation_timeout = Some(timeout);
        self
    }

    /// When invalidation calls return (default: when acknowledged).
    pub fn invalidation_mode(mut self, mode: InvalidationMode) -> Self {
        self.mode = mode;
        self
    }

    /// How many raft voters the cluster keeps (3 or 5; default 3). Members
    /// join as learners; the leader keeps an odd number of voters, up to
    /// this many, from the live, caught-up ones (one voter becomes three
    /// at once), and gives a dead or departed voter's seat to a learner.
    pub fn raft_voters(mut self, voters: usize) -> Self {
        self.raft.voters = voters;
        self
    }

    /// How long [`NodeBuilder::connect`] waits to reach a member (default
    /// 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Registers a named owner loader: when this member owns a key and any
    /// node calls [`Grid::get_or_load_on_owner`] with
    /// [`OwnerLoad::new(name)`](crate::OwnerLoad::new) on a miss, this node
    /// runs `loader` once for every concurrent caller in the grid and
    /// stores its value with the caller's TTL and tags. Register the same
    /// names on every member (any may own a key), after
    /// [`cache`](NodeBuilder::cache) if it changes the codec: values are
    /// stored with the codec in effect here. A loader error reaches the
    /// callers as [`CacheError::OwnerLoadFailed`](crate::CacheError::OwnerLoadFailed),
    /// a [`RejectedArguments`](crate::RejectedArguments) error as
    /// [`CacheError::ArgumentsRejected`](crate::CacheError::ArgumentsRejected).
    ///
    /// ```no_run
    /// # async fn f(ca: hydracache::cluster::DevCa) -> Result<(), Box<dyn std::error::Error>> {
    /// use hydracache::{Grid, OwnerLoadRequest, RejectedArguments};
    ///
    /// let member = Grid::member()
    ///     .node_id("m1")
    ///     .bootstrap(true)
    ///     .tls(ca.issue("m1")?)
    ///     .loader("users.by-id", |req: OwnerLoadRequest| async move {
    ///         let id: u64 = req.args_utf8()?.parse().map_err(|_| RejectedArguments::new("not an id"))?;
    ///         Ok::<_, RejectedArguments>(format!("user {id}"))
    ///     })
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn loader<T, F, Fut, E>(mut self, name: impl Into<String>, loader: F) -> Self
    where
        T: CacheValue<C>,
        F: Fn(OwnerLoadRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + 'static,
    {
        self.loaders
            .register::<C, T, F, Fut, E>(name.into(), loader);
        self
    }

    /// The most argument bytes a named load may carry (default 64 KiB):
    /// longer ones are refused before they are sent, and by an owner whose
    /// limit is lower, as [`CacheError::ArgumentsTooLarge`](crate::CacheError::ArgumentsTooLarge).
    pub fn max_owner_load_args(mut self, bytes: usize) -> Self {
        self.max_owner_load_args = bytes;
        self
    }

    /// Deadline of one named load at a key's owner, the loader's own run
    /// and retries after wrong-owner answers included (default 10 s).
    pub fn owner_load_timeout(mut self, timeout: Duration) -> Self {
        self.owner_load_timeout = timeout;
        self
    }

    /// Local cache settings (capacity, TTL, events, codec, …). The closure
    /// may change the codec (`|c| c.codec::<Postcard>()`); the node then
    /// stores and ships values with it.
    pub fn cache<D: Codec>(
        self,
        f: impl FnOnce(LocalBuilder<C>) -> LocalBuilder<D>,
    ) -> NodeBuilder<D> {
        NodeBuilder {
            local: f(self.local),
            role: self.role,
            cluster: self.cluster,
            node_id: self.node_id,
            bind: self.bind,
            advertise: self.advertise,
            seeds: self.seeds,
            bootstrap: self.bootstrap,
            tls: self.tls,
            ack_timeout: self.ack_timeout,
            request_timeout: self.request_timeout,
            on_unreachable: self.on_unreachable,
            lease_timeout: self.lease_timeout,
            gossip_interval: self.gossip_interval,
            isolation_timeout: self.isolation_timeout,
            mode: self.mode,
            limits: self.limits,
            raft: self.raft,
            connect_timeout: self.connect_timeout,
            loaders: self.loaders,
            max_owner_load_args: self.max_owner_load_args,
            owner_load_timeout: self.owner_load_timeout,
            near_copies_max_bytes: self.near_copies_max_bytes,
            rejoin: self.rejoin,
        }
    }

    /// Capacity of a client's near cache in bytes (the same setting as
    /// `max_capacity_bytes` of a local grid).
    pub fn near_cache_capacity_bytes(mut self, bytes: usize) -> Self {
        self.local = self.local.max_capacity_bytes(bytes);
        self
    }

    /// Starts a member (binds, joins gossip through the seeds) and returns
    /// its `Grid` without waiting for peers: the first member of a cluster
    /// (started with [`bootstrap`](NodeBuilder::bootstrap)) has none.
    pub async fn start(self) -> Result<Grid<C>, ClusterError> {
        self.launch().await.map(|(grid, _)| grid)
    }

    /// Starts the node, then waits until its membership view holds a member
    /// (a client learns it once the raft leader has admitted it). The
    /// entry point of clients: a `Grid` returned by `connect` reads and
    /// writes through the cluster from its first call. After
    /// [`connect_timeout`](NodeBuilder::connect_timeout) without a member,
    /// the node is stopped and [`ClusterError::NoMemberReached`] returned.
    pub async fn connect(self) -> Result<Grid<C>, ClusterError> {
        if self.seeds.is_empty() {
            return Err(ClusterError::NoSeeds);
        }
        let (seeds, waited, poll) = (
            self.seeds.clone(),
            self.connect_timeout,
            self.gossip_interval / 2,
        );
        let (grid, attachment) = self.launch().await?;
        let reached = tokio::time::timeout(waited, async {
            while !attachment
                .node()
                .is_some_and(|node| node.view().members().iter().any(|m| m.role == Role::Member))
            {
                tokio::time::sleep(poll).await;
            }
        })
        .await;
        if reached.is_err() {
            attachment.stop().await;
            return Err(ClusterError::NoMemberReached { seeds, waited });
        }
        Ok(grid)
    }

    async fn launch(self) -> Result<(Grid<C>, Arc<Attachment>), ClusterError> {
        let mut seeds = std::collections::HashSet::new();
        for seed in &self.seeds {
            seeds.extend(resolve(seed).await?);
        }
        let tls = self.tls.ok_or(ClusterError::Missing("tls"))?;
        // Peers accept only the node id the certificate names: a client
        // without a setting takes that one.
        let node_id = match (&self.node_id, self.role) {
            (Some(id), _) => id.clone(),
            (None, Role::Client) => tls.node_id().ok_or(ClusterError::Missing("node_id"))?,
            (None, Role::Member) => return Err(ClusterError::Missing("node_id")),
        };
        let grid = self.local.build();
        let mut spec = NodeSpec {
            role: self.role,
            cluster: self.cluster,
            node_id,
            bind: self.bind,
            advertise: self.advertise,
            seeds: self.seeds,
            tls,
            ack_timeout: self.ack_timeout,
            request_timeout: self.request_timeout,
            on_unreachable: self.on_unreachable,
            lease_timeout: self.lease_timeout,
            gossip_interval: self.gossip_interval,
            isolation_timeout: self
                .isolation_timeout
                .unwrap_or_else(|| (self.gossip_interval * 10).max(Duration::from_secs(1))),
            mode: self.mode,
            limits: self.limits,
            raft: self.raft,
            loaders: self.loaders,
            max_owner_load_args: self.max_owner_load_args,
            owner_load_timeout: self.owner_load_timeout,
            near_copies_max_bytes: self
                .near_copies_max_bytes
                .unwrap_or(grid.inner.store.stats().capacity_bytes as usize / 4)
                as u64,
        };
        let node = spawn_node(&spec, &grid.inner, &spec.seeds, seeds, self.bootstrap).await?;
        // A new generation binds the address this one got (port 0 picks
        // one once).
        spec.bind = node.transport.local_addr();
        let attachment = Attachment::start(node, spec, &grid.inner, self.rejoin);
        let _ = grid
            .inner
            .remote
            .set(Arc::clone(&attachment) as Arc<dyn Remote>);
        Ok((grid, attachment))
    }
}

/// Everything a node of a grid is started with, kept so that a node the
/// membership removed can start again as a new generation
/// ([`super::attachment`]).
pub(super) struct NodeSpec {
    pub(super) role: Role,
    pub(super) cluster: String,
    pub(super) node_id: String,
    /// The address to bind: after the first start, the bound one.
    pub(super) bind: SocketAddr,
    pub(super) advertise: Option<SocketAddr>,
    /// The seeds as configured (names, resolved at each start).
    pub(super) seeds: Vec<String>,
    pub(super) tls: TlsConfig,
    pub(super) ack_timeout: Duration,
    pub(super) request_timeout: Duration,
    pub(super) on_unreachable: OwnerUnreachable,
    pub(super) lease_timeout: Duration,
    pub(super) gossip_interval: Duration,
    pub(super) isolation_timeout: Duration,
    pub(super) mode: InvalidationMode,
    pub(super) limits: Limits,
    pub(super) raft: RaftConfig,
    pub(super) loaders: Loaders,
    pub(super) max_owner_load_args: usize,
    pub(super) owner_load_timeout: Duration,
    pub(super) near_copies_max_bytes: u64,
}

/// Starts one generation of a node for `grid`: binds the transport at
/// `spec.bind` under a fresh generation, builds the node, serves it, starts
/// gossip through `seeds` (names; `resolved`, their addresses, limit a
/// client's gossip), Raft on a member (founding a cluster if `bootstrap`),
/// and the node's maintenance tasks. The first start and every rejoin go
/// through here.
pub(super) async fn spawn_node(
    spec: &NodeSpec,
    grid: &Arc<GridInner>,
    seeds: &[String],
    resolved: std::collections::HashSet<SocketAddr>,
    bootstrap: bool,
) -> Result<Arc<Node>, ClusterError> {
    let node_id = spec.node_id.clone();
    let generation = new_generation();
    // A new process keeps no copies until the others send it their
    // invalidations (see super::copy_gate).
    grid.stamps.keep_copies(false);
    let hello = Hello::new(
        spec.cluster.as_str(),
        (node_id.as_str(), generation),
        spec.role,
    );
    let transport = Transport::bind(spec.bind, &spec.tls, hello, spec.limits.clone())?;
    let bound = transport.local_addr();
    let addr = spec.advertise.unwrap_or(bound);
    let (gossip, inbox) = QuicGossip::new(transport.clone());
    if spec.role == Role::Client {
        // Clients gossip to their seeds and the members they learn of.
        *gossip.sent().only_to.write().expect("only_to") = Some(resolved.clone());
    }
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(node_id.clone(), generation, addr),
        cluster_id: spec.cluster.clone(),
        gossip_interval: spec.gossip_interval,
        listen_addr: bound,
        // Names as given: gossip resolves them again every minute.
        seed_nodes: seeds.to_vec(),
        failure_detector_config: FailureDetectorConfig {
            initial_interval: spec.gossip_interval,
            dead_node_grace_period: Duration::from_secs(3600),
            ..Default::default()
        },
        marked_for_deletion_grace_period: Duration::from_secs(3600),
        catchup_callback: None,
        extra_liveness_predicate: None,
    };
    let role = role_name(spec.role);
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
        role: spec.role,
        grid: Arc::downgrade(grid),
        sequence: AtomicU64::new(0),
        // A hole stays open as long as a message still in flight may
        // take to arrive: the sender of a put learns the owner's number
        // in the reply, after the owner's acknowledged fan-out.
        sequences: Mutex::new(SequenceTable::new(spec.request_timeout + spec.ack_timeout)),
        marks: Mutex::default(),
        relayed: Mutex::default(),
        fan_outs: Mutex::default(),
        copy_gate: Mutex::default(),
        keeps_copies: std::sync::atomic::AtomicBool::new(false),
        settling: Mutex::default(),
        ack_timeout: spec.ack_timeout,
        request_timeout: spec.request_timeout,
        on_unreachable: spec.on_unreachable,
        read_path: Default::default(),
        near_copies: super::near_copies::NearCopies::new(spec.near_copies_max_bytes),
        leases: super::load_path::Leases::new(spec.lease_timeout),
        fetches: Default::default(),
        owner_loads: OwnerLoads::new(
            spec.loaders.clone(),
            spec.max_owner_load_args,
            spec.owner_load_timeout,
        ),
        telemetry: super::telemetry::NodeTelemetry {
            gossip_sent: gossip.sent(),
            ..Default::default()
        },
        membership: grid.membership.clone(),
        mode: spec.mode,
        inbox,
        gossip_interval: spec.gossip_interval,
        live: std::sync::OnceLock::new(),
        partitioned: std::sync::atomic::AtomicBool::new(false),
        cut_from: Default::default(),
        stopped: std::sync::atomic::AtomicBool::new(false),
        removed: std::sync::atomic::AtomicBool::new(false),
        departing: std::sync::atomic::AtomicBool::new(false),
        seeds: resolved,
        verdicts: Mutex::new(super::authority::Verdicts::new(spec.gossip_interval * 3)),
        founder: bootstrap,
        consensus: std::sync::OnceLock::new(),
        view: std::sync::RwLock::new(Arc::new(MembershipView::empty())),
        leaving: Mutex::new(Default::default()),
        isolation: Mutex::new(Isolation::new(spec.isolation_timeout)),
    });
    // A founder knows every holder (none) from its start: its gate opens
    // now, so its first calls keep what they store.
    node.check_copy_gate(&node.view());
    transport.serve(Arc::new(NodeHandler(Arc::clone(&node))));
    let chitchat = match spawn_chitchat(config, kvs, &gossip).await {
        Ok(chitchat) => chitchat,
        Err(e) => {
            node.shutdown().await;
            return Err(ClusterError::Gossip(e.to_string()));
        }
    };
    let _ = node
        .live
        .set(chitchat.chitchat().lock().await.live_nodes_watcher());
    let _ = node.chitchat.set(chitchat);
    if spec.role == Role::Member {
        // Only a member told to bootstrap founds a cluster; every other
        // member joins with an empty log and is admitted by the leader
        // once gossip reports it.
        let consensus = Consensus::start(
            node.identity.clone(),
            bootstrap,
            spec.raft.clone(),
            transport.clone(),
            Arc::downgrade(&node),
        );
        match consensus {
            Ok(consensus) => {
                let _ = node.consensus.set(consensus);
            }
            Err(e) => {
                node.shutdown().await;
                return Err(ClusterError::Gossip(format!("raft: {e}")));
            }
        }
    }
    tokio::spawn(watch_high_water_marks(Arc::downgrade(&node)));
    tokio::spawn(super::load_path::run_lease_timer(Arc::downgrade(&node)));
    tokio::spawn(super::node::follow_announced_generations(Arc::downgrade(
        &node,
    )));
    Ok(node)
}

/// Checks that `seed` is `host:port` and its host resolves; its addresses.
pub(super) async fn resolve(seed: &str) -> Result<Vec<SocketAddr>, ClusterError> {
    let unresolved = |source| ClusterError::UnresolvedSeed {
        seed: seed.to_string(),
        source,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(seed)
        .await
        .map_err(unresolved)?
        .collect();
    match addrs.is_empty() {
        false => Ok(addrs),
        true => Err(unresolved(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no address",
        ))),
    }
}

/// A fresh generation for this process: the wall clock in microseconds, so a
/// restarted process (on any host with a sane clock) gets a higher one.
pub(super) fn new_generation() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
}
