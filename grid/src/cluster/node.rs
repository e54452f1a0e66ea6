//! A grid node: the cache of this process joined to the cluster.
//!
//! `Grid::member()` and `Grid::client()` (see [`super::builder`]) build a
//! local grid and attach a [`Node`] to it through the core's seam
//! ([`crate::remote::Remote`]), behind a [`super::attachment::Attachment`]
//! that replaces it with a new generation if the membership removed it. The node owns the QUIC [`Transport`], runs
//! chitchat gossip over it, tracks the membership Raft admitted, answers
//! peers' frames ([`super::handler`]) and exchanges invalidations
//! ([`super::invalidations`]). The rules it follows live in pure state
//! machines: [`super::sequence`], [`super::routing`], [`super::lease`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use chitchat::{ChitchatHandle, ChitchatId, NodeState};
use hydracache_protocol::{ErrorCode, Message, NodeIdentity, Role};

use super::builder::InvalidationMode;
use super::consensus::Consensus;
use super::gossip::{keys, GossipInbox};
use super::handle::{ClusterDiagnostics, PeerDiagnostics};
use super::ownership::MembershipView;
use super::raft::{raft_id, MembershipCommand};
use super::read_path::{OwnerUnreachable, ReadPathCounters};
use super::routing::{route, Route};
use super::sequence::SequenceTable;
use super::transport::{PeerIdentity, Transport};
use crate::error::CacheError;
use crate::grid::GridInner;
use crate::invalidation::Invalidation;

/// Tells the transport every generation gossip announces at an address,
/// so that a process restarted on the address of one it backs off from is
/// dialled at once (see [`super::dial`]). Ends with the node's gossip.
pub(super) async fn follow_announced_generations(node: Weak<Node>) {
    let Some(mut live) = node.upgrade().and_then(|n| n.live.get().cloned()) else {
        return;
    };
    while live.changed().await.is_ok() {
        let Some(n) = node.upgrade() else { return };
        let peers = n.live_peers(false);
        for p in &peers {
            n.transport.announced(p.addr, p.generation);
        }
        // A client gossips to its seeds and the members it knows (see
        // gossip::gossips_to).
        let mut only_to = n.telemetry.gossip_sent.only_to.write().expect("only_to");
        if let Some(only_to) = only_to.as_mut() {
            only_to.extend(peers.iter().filter(|p| p.role == "member").map(|p| p.addr));
        }
        drop(only_to);
    }
}

/// The cluster side of a grid.
pub(crate) struct Node {
    pub(super) transport: Transport,
    pub(super) chitchat: tokio::sync::OnceCell<ChitchatHandle>,
    pub(super) identity: NodeIdentity,
    pub(super) role: Role,
    pub(super) grid: Weak<GridInner>,
    pub(super) sequence: AtomicU64,
    /// Which invalidations were applied from each origin.
    pub(super) sequences: Mutex<SequenceTable>,
    pub(super) ack_timeout: Duration,
    pub(super) mode: InvalidationMode,
    pub(super) inbox: GossipInbox,
    pub(super) gossip_interval: Duration,
    /// chitchat's live-node watch: updated with every liveness or state
    /// change, read without waiting on gossip's lock.
    pub(super) live:
        std::sync::OnceLock<tokio::sync::watch::Receiver<BTreeMap<ChitchatId, NodeState>>>,
    /// Set once the node has left or stopped: invalidations stay local.
    pub(super) stopped: std::sync::atomic::AtomicBool,
    /// Test hook: refuse incoming invalidations, as if they were lost.
    pub(super) partitioned: std::sync::atomic::AtomicBool,
    /// Test hook: node ids whose invalidations and high-water marks are
    /// refused, as if the link from them were cut.
    pub(super) cut_from: std::sync::RwLock<std::collections::HashSet<String>>,
    /// The raft task (members only).
    pub(super) consensus: std::sync::OnceLock<Consensus>,
    /// The admitted membership at the latest epoch this node knows.
    pub(super) view: std::sync::RwLock<Arc<MembershipView>>,
    /// Deadline of one read or put at an owner, retries included.
    pub(super) request_timeout: Duration,
    /// What a request does when no owner answers in time.
    pub(super) on_unreachable: OwnerUnreachable,
    /// Remote hits and misses, wrong-owner retries, fallbacks, puts served.
    pub(super) read_path: ReadPathCounters,
    /// A member's copies of keys it does not own, within their budget.
    pub(super) near_copies: super::near_copies::NearCopies,
    /// Processes that announced over their own connection that they leave
    /// (pruned to the admitted ones with every new view).
    pub(super) leaving: Mutex<std::collections::HashSet<(String, u64)>>,
    /// The owner's lease table, its timer's wake-up and its counters.
    pub(super) leases: super::load_path::Leases,
    /// Fetches in flight from this node, by key.
    pub(super) fetches:
        super::in_flight::InFlight<Result<super::read_path::SharedFetch, CacheError>>,
    /// Named loaders, and the named loads in flight through this node.
    pub(super) owner_loads: super::owner_load::OwnerLoads,
    /// Latencies, invalidation counters, when peers were last heard.
    pub(super) telemetry: super::telemetry::NodeTelemetry,
    /// Set once the membership removed this process while it ran.
    pub(super) removed: std::sync::atomic::AtomicBool,
    /// The addresses this node was configured to join through: the only
    /// peers it takes a first membership view from.
    pub(super) seeds: std::collections::HashSet<std::net::SocketAddr>,
    /// Gossip's dead verdicts as this node saw them while leading: a
    /// verdict removes a process once it held (see [`super::authority::Verdicts`]).
    pub(super) verdicts: Mutex<super::authority::Verdicts>,
    /// Set when [`Node::leave`] starts: from then on this process asks no
    /// owner for a lease.
    pub(super) departing: std::sync::atomic::AtomicBool,
    /// Started with `bootstrap`: the founder knows every holder (none)
    /// before the membership first admits it.
    pub(super) founder: bool,
    /// The grid's membership stream (a sender of the same channel, so the
    /// raft task publishes without touching the grid).
    pub(super) membership: tokio::sync::broadcast::Sender<crate::events::MembershipChange>,
    /// Whether this node can hear the cluster (see [`super::isolation`]).
    pub(super) isolation: Mutex<super::isolation::Isolation>,
    /// Which peers still have to be told this node's high-water mark.
    pub(super) marks: Mutex<super::high_water::MarkDelivery>,
    /// On a member: the latest mark of each client, relayed to the other
    /// clients (see [`super::high_water::Relayed`]).
    pub(super) relayed: Mutex<super::high_water::Relayed>,
    /// This node's invalidation fan-outs in flight (see
    /// [`super::copy_gate::FanOuts`]).
    pub(super) fan_outs: Mutex<super::copy_gate::FanOuts>,
    /// Whether this process keeps copies yet (see [`super::copy_gate`]).
    pub(super) copy_gate: Mutex<super::copy_gate::CopyGate>,
    /// The gate's state, read by every operation that may keep a copy.
    pub(super) keeps_copies: std::sync::atomic::AtomicBool,
    /// Tag and flush invalidations applied here that may not have reached
    /// every owner yet ([`super::settling`]).
    pub(super) settling: Mutex<super::settling::Settling>,
}

pub(super) struct LivePeer {
    pub(super) id: String,
    pub(super) generation: u64,
    pub(super) role: String,
    pub(super) addr: SocketAddr,
    /// The raft leader this member gossips it heard from (a hint).
    pub(super) raft_leader: Option<String>,
    /// The cluster incarnation it gossips; 0 if none yet.
    pub(super) incarnation: u64,
    /// The invalidation high-water mark it gossips (a hint, see
    /// [`super::sequence`]); 0 if none.
    pub(super) mark: u64,
}

impl Node {
    pub(super) fn live_peers(&self, include_self: bool) -> Vec<LivePeer> {
        let Some(live) = self.live.get() else {
            return Vec::new();
        };
        let live = live.borrow();
        live.iter()
            .filter(|(id, _)| include_self || *id.node_id != *self.identity.id)
            .filter_map(|(id, state)| {
                Some(LivePeer {
                    id: id.node_id.to_string(),
                    generation: id.generation_id,
                    role: state.get(keys::ROLE)?.to_string(),
                    addr: state.get(keys::ADDR)?.parse().ok()?,
                    raft_leader: state.get(keys::RAFT_LEADER).map(str::to_string),
                    incarnation: state
                        .get(keys::INCARNATION)
                        .and_then(|h| u64::from_str_radix(h, 16).ok())
                        .unwrap_or(0),
                    mark: state
                        .get(keys::INVALIDATION_HWM)
                        .and_then(|m| m.parse().ok())
                        .unwrap_or(0),
                })
            })
            .collect()
    }

    pub(crate) async fn diagnostics(&self) -> ClusterDiagnostics {
        let live = self.live_peers(true).len();
        let dead_processes = self.dead_nodes().await;
        let dead = dead_processes.iter().map(|(id, _)| id.clone()).collect();
        let view = self.view();
        let now = std::time::Instant::now();
        let heard = self.telemetry.last_heard();
        let peers = view
            .members()
            .iter()
            .map(|m| {
                let (id, generation) = (m.node.id.to_string(), m.node.generation);
                let this_node = id == *self.identity.id && generation == self.identity.generation;
                PeerDiagnostics {
                    live: !dead_processes.contains(&(id.clone(), generation)),
                    last_heard: if this_node {
                        Some(Duration::ZERO)
                    } else {
                        heard.since(&id, generation, now)
                    },
                    node_id: id,
                    generation,
                    address: m.address,
                    role: m.role,
                }
            })
            .collect();
        drop(heard);
        let t = &self.telemetry;
        let pick = |role: Role| {
            view.members()
                .iter()
                .filter(|m| m.role == role)
                .map(|m| m.node.id.to_string())
                .collect::<Vec<_>>()
        };
        let status = self.status();
        let (gap_flushes, open_holes) = {
            let sequences = self.sequences.lock().expect("sequences");
            (sequences.flushes(), sequences.open_holes())
        };
        let (isolated, isolations) = {
            let isolation = self.isolation.lock().expect("isolation");
            (isolation.isolated(), isolation.times())
        };
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
            raft_voters: status.voters,
            raft_learners: status.learners,
            connections: self.transport.connected_peers().len(),
            gossip_messages_sent: t.gossip_sent.messages.load(Ordering::Relaxed),
            gossip_bytes_sent: t.gossip_sent.bytes.load(Ordering::Relaxed),
            gossip_refused: t.gossip_sent.refused.load(Ordering::Relaxed),
            gossip_live: live,
            dead,
            invalidation_sequence: self.sequence.load(Ordering::SeqCst),
            remote_hits: self.read_path.remote_hits.load(Ordering::Relaxed),
            near_hits: self
                .grid
                .upgrade()
                .map_or(0, |grid| grid.store.stats().near_hits),
            remote_misses: self.read_path.remote_misses.load(Ordering::Relaxed),
            wrong_owner_retries: self.read_path.wrong_owner_retries.load(Ordering::Relaxed),
            local_fallbacks: self.read_path.local_fallbacks.load(Ordering::Relaxed),
            puts_served: self.read_path.puts_served.load(Ordering::Relaxed),
            leases_granted: self.leases.counters.granted.load(Ordering::Relaxed),
            leases_joined: self.leases.counters.joined.load(Ordering::Relaxed),
            leases_expired: self.leases.counters.expired.load(Ordering::Relaxed),
            leases_voided: self.leases.counters.voided.load(Ordering::Relaxed),
            fills_refused: self.leases.counters.fills_refused.load(Ordering::Relaxed),
            owner_loads: self.owner_loads.runs.load(Ordering::Relaxed),
            gap_flushes,
            open_holes,
            peers,
            invalidation_acks: t.invalidation_acks.load(Ordering::Relaxed),
            invalidation_late_nodes: t.late_nodes.load(Ordering::Relaxed),
            fetch_latency: t.fetch_latency.snapshot(),
            put_latency: t.put_latency.snapshot(),
            invalidation_ack_latency: t.ack_latency.snapshot(),
            raft_task_exited: self.consensus.get().is_some_and(|c| c.exited()),
            isolated,
            isolations,
            removed: self.removed.load(Ordering::SeqCst),
            // Counted across generations (see super::attachment).
            rejoins: 0,
            keeps_copies: self.keeps_copies.load(Ordering::SeqCst),
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
            // Clients are not raft peers: the leader is the one most admitted
            // members gossip they heard from.
            None => {
                let view = self.view();
                let heard = self.live_peers(false).into_iter().filter_map(|p| {
                    let who = NodeIdentity::new(p.id, p.generation);
                    view.is_admitted_member(&who)
                        .then_some(p.raft_leader)
                        .flatten()
                });
                super::consensus::RaftStatus {
                    leader: super::consensus::most_named(heard),
                    ..Default::default()
                }
            }
        }
    }

    /// Gossips the raft leader this member hears from (a hint for
    /// clients); false if gossip has not started yet.
    pub(super) async fn publish_leader(&self, leader: Option<&str>) -> bool {
        let Some(h) = self.chitchat.get() else {
            return false;
        };
        let c = h.chitchat();
        c.lock()
            .await
            .self_node_state()
            .set(keys::RAFT_LEADER, leader.unwrap_or_default());
        true
    }

    /// Gossips the cluster incarnation this member belongs to; false if
    /// gossip has not started yet.
    pub(super) async fn publish_incarnation(&self, incarnation: u64) -> bool {
        let Some(h) = self.chitchat.get() else {
            return false;
        };
        let c = h.chitchat();
        c.lock()
            .await
            .self_node_state()
            .set(keys::INCARNATION, format!("{incarnation:x}"));
        true
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
    /// what it knows: see [`super::authority`] for what gossip may decide.
    /// `incarnation` is this member's cluster incarnation, `removed` says
    /// which processes the membership removed: those still connected to
    /// this node are pushed the current view, in which they find
    /// themselves removed.
    pub(crate) async fn reconcile(
        &self,
        view: &MembershipView,
        incarnation: u64,
        removed: impl Fn(&str, u64) -> bool,
    ) -> Vec<MembershipCommand> {
        let peers = self.live_peers(true);
        let foreign: Vec<(String, u64)> = peers
            .iter()
            .filter(|p| super::authority::is_foreign(incarnation, p.incarnation))
            .map(|p| (p.id.clone(), p.generation))
            .collect();
        let live: Vec<(String, u64)> = peers.into_iter().map(|p| (p.id, p.generation)).collect();
        let connected = self.transport.connected_peers();
        // Removed processes that look live, or that still hold a connection
        // (a paused process's connection outlives its failure timeout).
        let mut removed: Vec<(String, u64)> = live
            .iter()
            .cloned()
            .chain(connected.iter().map(|p| (p.node_id.clone(), p.generation)))
            .filter(|(id, g)| removed(id, *g))
            .collect();
        removed.sort();
        removed.dedup();
        // Gossip's verdicts, once they held long enough on this leader.
        let dead = self.dead_nodes().await;
        let dead = self
            .verdicts
            .lock()
            .expect("verdicts")
            .confirm(&dead, std::time::Instant::now());
        // Processes that spoke for themselves lately are alive, whatever
        // gossip says (a forged heartbeat can make gossip say otherwise).
        let spoke = self
            .telemetry
            .spoke_within(self.gossip_interval * 10, std::time::Instant::now());
        let me = PeerIdentity {
            node_id: self.identity.id.to_string(),
            generation: self.identity.generation,
            role: self.role,
            addr: self
                .live_peers(true)
                .into_iter()
                .find(|p| p.id == *self.identity.id && p.generation == self.identity.generation)
                .map_or_else(|| self.transport.local_addr(), |p| p.addr),
        };
        let leaving = self.leaving.lock().expect("leaving").clone();
        let evidence = super::authority::Evidence {
            me: &me,
            live: &live,
            dead: &dead,
            spoke: &spoke,
            connected: &connected,
            leaving: &leaving,
            foreign: &foreign,
            removed: &removed,
        };
        let told = super::authority::to_tell(&evidence);
        if !told.is_empty() {
            let snapshot = view.to_snapshot();
            for addr in told {
                let (transport, snapshot) = (self.transport.clone(), snapshot.clone());
                tokio::spawn(async move {
                    let _ = transport
                        .send(addr, Message::MetadataSnapshot(snapshot))
                        .await;
                });
            }
        }
        super::authority::reconcile(view, &evidence)
    }

    /// A peer announced over its own connection that it leaves.
    pub(super) fn announced_leaving(&self, peer: &PeerIdentity) {
        self.leaving
            .lock()
            .expect("leaving")
            .insert((peer.node_id.clone(), peer.generation));
    }

    /// A new membership view from Raft (or, on a client, from a member).
    pub(crate) fn on_new_view(self: &Arc<Self>, view: MembershipView, leader: bool) {
        let view = Arc::new(view);
        let old = {
            let mut current = self.view.write().expect("view");
            if view.epoch() < current.epoch() {
                return;
            }
            std::mem::replace(&mut *current, Arc::clone(&view))
        };
        // A process removed without its word that it leaves (declared
        // dead) may still serve until the isolation rule stops it.
        {
            let leaving = self.leaving.lock().expect("leaving");
            let mut isolation = self.isolation.lock().expect("isolation");
            for m in old.members() {
                let (id, g) = (&m.node.id, m.node.generation);
                if !view.is_admitted(id, g) && !leaving.contains(&(id.to_string(), g)) {
                    isolation.removed(m);
                }
            }
        }
        if old.is_admitted(&self.identity.id, self.identity.generation)
            && !view.is_admitted(&self.identity.id, self.identity.generation)
            && !self.stopped.load(Ordering::SeqCst)
            && !self
                .leaving
                .lock()
                .expect("leaving")
                .contains(&(self.identity.id.to_string(), self.identity.generation))
        {
            // Removed while it could not hear the cluster (paused, cut off):
            // it missed invalidations and owns nothing any more, so what it
            // holds can no longer be proven fresh.
            tracing::error!(
                target: crate::telemetry::RAFT,
                epoch = view.epoch(),
                "this node was removed from the membership; its cache is flushed"
            );
            self.removed.store(true, Ordering::SeqCst);
            // No one sends a removed process invalidations: from now on it
            // keeps nothing it fetches, loads or writes (its copy gate shuts
            // before the flush, so an operation that began earlier finds
            // its stamp overtaken and keeps nothing either), until a new
            // generation is admitted and its own gate opens.
            self.shut_copy_gate();
            if let Some(grid) = self.grid.upgrade() {
                grid.apply(&Invalidation::Flush, crate::events::EventOrigin::Local);
            }
        }
        // Announcements matter while their process is admitted, and after
        // its removal for as long as gossip still reports it live: until
        // gossip declares it dead, it is a live peer that invalidations
        // would otherwise wait on for the whole acknowledgement timeout,
        // although it stopped serving. (Pruned at every view change, so the
        // set holds at most the processes that left since the last one
        // plus those gossip has not yet declared dead.)
        let live = self.live_peers(false);
        self.leaving.lock().expect("leaving").retain(|(id, g)| {
            view.is_admitted(id, *g) || live.iter().any(|p| p.id == *id && p.generation == *g)
        });
        self.move_leases(&view);
        self.report_membership(&old, &view);
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
    /// leader has removed this node from the membership and this node
    /// neither leads nor votes any more, then stops. A leader or voter that
    /// stopped as soon as it was removed could take the cluster's quorum
    /// with it (the only voter of a grid of two would leave learners that
    /// never elect a leader): it hands over first (see [`super::voters`]).
    pub(crate) async fn leave(&self) {
        self.departing.store(true, Ordering::SeqCst);
        // The others stop sending invalidations to a process that said it
        // leaves, while it may take a while to hand over: from now on it
        // keeps nothing, and what it kept goes.
        self.shut_copy_gate();
        if let Some(grid) = self.grid.upgrade() {
            grid.apply(&Invalidation::Flush, crate::events::EventOrigin::Local);
        }
        if let Some(h) = self.chitchat.get() {
            let c = h.chitchat();
            c.lock().await.self_node_state().set(keys::LEAVING, "1");
        }
        self.leaving
            .lock()
            .expect("leaving")
            .insert((self.identity.id.to_string(), self.identity.generation));
        for round in 0..100 {
            // Gossip's flag is a hint anyone could forge: the leader removes
            // this node on its own word, said over its own connections.
            if round % 4 == 0 {
                self.announce_leaving();
            }
            let removed = !self
                .view()
                .is_admitted(&self.identity.id, self.identity.generation);
            let needed = self.consensus.get().is_some_and(Consensus::must_hand_over);
            if removed && !needed {
                break;
            }
            tokio::time::sleep(self.gossip_interval / 2).await;
        }
        self.stop_endpoint().await;
        // A local cache from now on, by the user's choice: it keeps again.
        self.now_local(true);
        // Nobody sends this process invalidations any more: what it holds
        // can no longer be proven fresh, so the local cache starts empty.
        if let Some(grid) = self.grid.upgrade() {
            grid.apply(&Invalidation::Flush, crate::events::EventOrigin::Local);
        }
    }

    /// True once this process left, is leaving, or was removed: it is (or
    /// is about to be) a local cache, and no owner would let it hold a lease.
    pub(super) fn detached(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
            || self.departing.load(Ordering::SeqCst)
            || self.removed.load(Ordering::SeqCst)
    }

    /// Tells every admitted member (one of them leads) that this process
    /// leaves.
    fn announce_leaving(&self) {
        let view = self.view();
        for m in view.owners().filter(|m| m.node != self.identity) {
            let (transport, addr) = (self.transport.clone(), m.address);
            tokio::spawn(async move {
                let goodbye = Message::GoAway {
                    code: ErrorCode::SHUTTING_DOWN,
                    message: "leaving the cluster".into(),
                };
                let _ = transport.send(addr, goodbye).await;
            });
        }
    }

    /// The raft task ended while the node runs: stops gossip and the
    /// endpoint (peers declare this process dead and remove it) and flushes
    /// the cache, which no longer receives invalidations. Diagnostics say
    /// why (`raft_task_exited`); the process should be restarted.
    pub(crate) async fn raft_failed(&self) {
        self.shutdown().await;
        if let Some(grid) = self.grid.upgrade() {
            grid.apply(&Invalidation::Flush, crate::events::EventOrigin::Local);
        }
    }

    /// Stops gossip and closes the endpoint; the grid is a local cache
    /// from now on (unless the membership removed this generation: see
    /// [`Node::now_local`]).
    pub(crate) async fn shutdown(&self) {
        self.now_local(false);
        self.stop_endpoint().await;
    }

    /// Stops gossip and closes the endpoint of a generation the membership
    /// removed, which a new one replaces: the copy gate stays shut, so
    /// nothing the grid fetches, loads or writes between the two is kept
    /// (no node sends it invalidations meanwhile).
    pub(crate) async fn shutdown_for_successor(&self) {
        self.stop_endpoint().await;
    }

    async fn stop_endpoint(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(h) = self.chitchat.get() {
            h.abort();
        }
        self.transport.close().await;
    }

    /// Shuts the copy gate of this generation for good (removed, or
    /// leaving): it keeps nothing from now on. Under the gate's lock, so
    /// that no check opens it again in between.
    fn shut_copy_gate(&self) {
        // Upgraded before the lock is taken, so that it drops after the
        // guard: the last handle on the grid dropping here would detach
        // the node, which takes this lock again (`now_local`).
        let grid = self.grid.upgrade();
        let mut gate = self.copy_gate.lock().expect("copy gate");
        gate.removed();
        self.keeps_copies.store(false, Ordering::SeqCst);
        if let Some(grid) = &grid {
            grid.stamps.keep_copies(false);
        }
    }

    /// Stopped: the grid is a local cache from now on (until a new
    /// generation starts), which keeps what it loads and puts.
    /// `after_leave`: the user left, and the grid is a local cache by
    /// choice. Otherwise a removed generation's gate stays shut (a
    /// successor replaces it, or no one sends the grid invalidations while
    /// it runs): under the gate's lock, as a removal shuts it.
    fn now_local(&self, after_leave: bool) {
        // Before the lock: see `shut_copy_gate`.
        let grid = self.grid.upgrade();
        let _gate = self.copy_gate.lock().expect("copy gate");
        if !after_leave && self.removed.load(Ordering::SeqCst) {
            return;
        }
        if let Some(grid) = &grid {
            grid.stamps.keep_copies(true);
        }
    }

    /// Stops gossip and closes the endpoint without waiting (on drop).
    pub(crate) fn shutdown_now(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.now_local(false);
        if let Some(h) = self.chitchat.get() {
            h.abort();
        }
        self.transport.close_now();
    }

    /// `Some(epoch)` if this node does not own `key` at its epoch; then a
    /// peer that asked at an older epoch is also sent the newer membership.
    pub(super) fn not_owner(&self, peer: &PeerIdentity, key: &str, asked_at: u64) -> Option<u64> {
        let view = self.view();
        if route(&view, &self.identity, self.role, key) == Route::Local {
            return None;
        }
        if asked_at < view.epoch() {
            let (transport, addr, snapshot) =
                (self.transport.clone(), peer.addr, view.to_snapshot());
            tokio::spawn(async move {
                let _ = transport
                    .send(addr, Message::MetadataSnapshot(snapshot))
                    .await;
            });
        }
        Some(view.epoch())
    }

    /// Answers a peer's read of a key this node should own at its epoch:
    /// the value (the stored bytes, shared, not re-encoded) or a miss; or,
    /// if it does not own the key at its epoch, wrong-owner with that epoch,
    /// followed by the newer membership if the peer's is older.
    pub(super) fn fetch(&self, peer: &PeerIdentity, fetch: &hydracache_protocol::Fetch) -> Message {
        use hydracache_protocol::{Entry, FetchReply};
        let key = match std::str::from_utf8(&fetch.key) {
            Ok(k) => k,
            Err(_) => {
                return Message::Error {
                    code: ErrorCode::PROTOCOL,
                    message: "keys must be UTF-8".into(),
                }
            }
        };
        if let Some(epoch) = self.not_owner(peer, key, fetch.epoch) {
            return Message::FetchReply(FetchReply::WrongOwner { epoch });
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

    /// Test hook: while `on`, invalidations and high-water marks from
    /// `peer` are refused as if the link from it were cut.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn set_cut_from(&self, peer: &str, on: bool) {
        let mut cut = self.cut_from.write().expect("cut_from");
        if on {
            cut.insert(peer.to_string());
        } else {
            cut.remove(peer);
        }
    }

    /// Test hook: whether the link from `peer` is cut.
    pub(super) fn is_cut_from(&self, peer: &str) -> bool {
        self.cut_from.read().expect("cut_from").contains(peer)
    }

    /// Test hook: while set, incoming invalidations are refused as if lost.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn set_partitioned(&self, on: bool) {
        self.partitioned.store(on, Ordering::SeqCst);
    }

    /// The transport (tests cut links with it).
    #[cfg(feature = "test-hooks")]
    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
    }
}

impl Node {
    /// A near copy of `key` (a key this node does not own), charged `bytes`
    /// by the store, was stored here: a member keeps its copies within their
    /// budget, dropping the oldest.
    pub(super) fn kept_near(&self, key: &str, bytes: usize) {
        // A client's store holds nothing but copies: its capacity is their
        // budget.
        if self.role != Role::Member {
            return;
        }
        let dropped = self.near_copies.kept(key, bytes as u64);
        if dropped.is_empty() {
            return;
        }
        let Some(grid) = self.grid.upgrade() else {
            return;
        };
        let view = self.view();
        for key in dropped {
            // A key this member came to own since is an owned entry now.
            if route(&view, &self.identity, self.role, &key) != Route::Local {
                grid.store.remove(key.as_bytes());
            }
        }
    }
}
