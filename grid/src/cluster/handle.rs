//! What a user sees of the cluster through a `Grid`: diagnostics, leaving,
//! ownership, and (feature `test-hooks`) the hooks tests use to simulate
//! partitions.

use std::net::SocketAddr;

use hydracache_protocol::Role;

use super::attachment::Attachment;
use super::node::Node;
use crate::codec::Codec;
use crate::grid::Grid;
use crate::latency::LatencySnapshot;

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
    /// Voters in the Raft configuration this member applied (0 on clients).
    pub raft_voters: usize,
    /// Learners in the Raft configuration this member applied: members
    /// beyond the configured voter count (0 on clients).
    pub raft_learners: usize,
    /// QUIC connections this node holds, one per peer address, whichever
    /// side dialled.
    pub connections: usize,
    /// Gossip messages this node has sent since it started.
    pub gossip_messages_sent: u64,
    /// Payload bytes of those gossip messages (chitchat's encoding; the
    /// QUIC and TLS overhead around each comes on top).
    pub gossip_bytes_sent: u64,
    /// Gossip messages a peer refused at the handshake (a client's gossip
    /// goes only to members, so this stays 0 in a healthy grid).
    pub gossip_refused: u64,
    /// Nodes gossip reports live (including this one).
    pub gossip_live: usize,
    /// Nodes gossip has declared dead.
    pub dead: Vec<String>,
    /// The last invalidation sequence number this node originated.
    pub invalidation_sequence: u64,
    /// Local misses (of `get`, or of `get_or_load` after the local single
    /// flight) that the key's owner answered over the network with a value,
    /// kept as near copies.
    pub remote_hits: u64,
    /// Local hits on near copies of keys other nodes own (the store's
    /// [`crate::GridStats::near_hits`]): reads a remote hit made local.
    pub near_hits: u64,
    /// Local misses the owner did not have either (for `get_or_load`: the
    /// owner granted this node the lease to load it).
    pub remote_misses: u64,
    /// Requests answered `WrongOwner` and retried with a newer membership.
    pub wrong_owner_retries: u64,
    /// Requests that reached no owner within their deadline.
    pub local_fallbacks: u64,
    /// Puts from other nodes this node stored as the owner.
    pub puts_served: u64,
    /// Leases this node granted as the owner of a key (including leases
    /// passed to a waiter after the holder went silent).
    pub leases_granted: u64,
    /// `get_or_load` misses this owner parked on a lease in progress
    /// instead of loading again.
    pub leases_joined: u64,
    /// Leases whose holder stayed silent past the lease timeout.
    pub leases_expired: u64,
    /// Leases an invalidation (or a write) voided while their load ran.
    pub leases_voided: u64,
    /// Fills this owner refused: voided, expired, forged, from another
    /// node than the holder, or from another epoch.
    pub fills_refused: u64,
    /// Named loader runs on this node (as the key's owner, or serving
    /// locally when no owner was reachable).
    pub owner_loads: u64,
    /// Times this node dropped everything because it may have missed an
    /// invalidation: a hole in an origin's sequence stayed open past its
    /// bound, the receive window overflowed, or an origin restarted with
    /// holes open.
    pub gap_flushes: u64,
    /// Invalidation sequence numbers not received yet (holes in the
    /// receive windows, over every origin).
    pub open_holes: usize,
    /// Every admitted node at this epoch, this one included, in the
    /// membership's order.
    pub peers: Vec<PeerDiagnostics>,
    /// Acknowledgements received for the invalidations this node sent (one
    /// per peer and invalidation; acknowledged mode only).
    pub invalidation_acks: u64,
    /// Peers that did not acknowledge one of this node's invalidations in
    /// time (one per peer and invalidation).
    pub invalidation_late_nodes: u64,
    /// Fetches from a key's owner, per attempt.
    pub fetch_latency: LatencySnapshot,
    /// Puts at a key's owner, per attempt (the owner's invalidation round
    /// included).
    pub put_latency: LatencySnapshot,
    /// From sending an invalidation to a peer to its acknowledgement.
    pub invalidation_ack_latency: LatencySnapshot,
    /// The Raft task has exited (a member only; it runs until the grid is
    /// dropped, so this means Raft failed and the process should restart).
    pub raft_task_exited: bool,
    /// This node cannot hear a majority of the admitted members within the
    /// isolation bound: it serves nothing it stored before and keeps
    /// nothing it stores meanwhile (docs/consistency.md, "Isolation").
    pub isolated: bool,
    /// Times this node became isolated.
    pub isolations: u64,
    /// The membership removed this generation while it ran (declared dead
    /// while paused or cut off). It owns nothing and flushed its cache;
    /// its generation can never be admitted again. Unless
    /// [`rejoin_after_removal(false)`](super::NodeBuilder::rejoin_after_removal)
    /// was set, the grid then starts a new generation of the node by itself
    /// (these diagnostics then describe it).
    pub removed: bool,
    /// Times the grid replaced a removed generation of its node with a new
    /// one. The other counters are the current generation's.
    pub rejoins: u64,
    /// This generation keeps what it reads, puts or loads through an owner
    /// as a copy: every admitted process that sends it invalidations has
    /// shown it does. A process that has just started serves through the
    /// owners without keeping copies until then (docs/consistency.md).
    pub keeps_copies: bool,
}

/// An admitted node as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerDiagnostics {
    /// Its node id.
    pub node_id: String,
    /// Its process's generation.
    pub generation: u64,
    /// The address it serves on.
    pub address: SocketAddr,
    /// Member or client.
    pub role: Role,
    /// Not declared dead by gossip.
    pub live: bool,
    /// How long since its gossip heartbeat last moved (zero for this node);
    /// `None` until gossip has heard from it.
    pub last_heard: Option<std::time::Duration>,
}

/// The cluster's own extensions of [`Grid`]: they reach the node behind the
/// core's seam.
impl<C: Codec> Grid<C> {
    fn attachment(&self) -> Option<&Attachment> {
        self.inner
            .remote
            .get()?
            .as_any()
            .downcast_ref::<Attachment>()
    }

    /// The node of the current generation.
    fn node(&self) -> Option<std::sync::Arc<Node>> {
        self.attachment()?.node()
    }

    /// What the cluster looks like from this node (its current
    /// generation); `None` for a local grid.
    pub async fn cluster_diagnostics(&self) -> Option<ClusterDiagnostics> {
        Some(self.attachment()?.diagnostics().await)
    }

    /// Leaves the cluster gracefully: announces it, waits (bounded) until the
    /// raft leader has removed this node from the membership and, if this
    /// member led or voted in Raft, until it has handed over (the only
    /// voter first promotes another member), then stops gossip and closes
    /// the endpoint. The grid keeps working as a local
    /// cache, emptied: it no longer hears invalidations, so nothing it held
    /// could be proven fresh. Other nodes stop waiting for its
    /// acknowledgements as soon as it has announced that it leaves. No new
    /// generation starts after it (see
    /// [`rejoin_after_removal`](super::NodeBuilder::rejoin_after_removal)).
    pub async fn leave(&self) {
        if let Some(attachment) = self.attachment() {
            attachment.leave().await;
        }
    }

    /// The node id owning `key` at the current membership epoch (rendezvous
    /// hashing over the admitted members); `None` for a local grid or before
    /// the first admission.
    pub fn owner_for_key(&self, key: &str) -> Option<String> {
        self.node()?
            .view()
            .owner_for_key(key)
            .map(|m| m.node.id.to_string())
    }

    /// Test hook (feature `test-hooks`): stops this member's Raft task, as
    /// if it had failed (`/health` then reports the node down).
    #[cfg(feature = "test-hooks")]
    pub fn stop_raft_task(&self) {
        if let Some(consensus) = self.node().as_ref().and_then(|n| n.consensus.get()) {
            consensus.stop();
        }
    }

    /// Test hook (feature `test-hooks`): while `on`, this node refuses
    /// incoming invalidations as if they were lost in a partition (gossip
    /// still flows).
    #[cfg(feature = "test-hooks")]
    pub fn simulate_lost_invalidations(&self, on: bool) {
        if let Some(node) = self.node() {
            node.set_partitioned(on);
        }
    }

    /// Test hook (feature `test-hooks`): while `on`, this node refuses
    /// invalidations and high-water marks from the node `peer`, as if the
    /// link from it were cut (gossip, through it or others, still flows).
    #[cfg(feature = "test-hooks")]
    pub fn cut_invalidations_from(&self, peer: &str, on: bool) {
        if let Some(node) = self.node() {
            node.set_cut_from(peer, on);
        }
    }

    /// Test hook (feature `test-hooks`): cuts this node's connection to the
    /// peer at `addr`, simulating a partition; the connection is
    /// re-established on the next message.
    #[cfg(feature = "test-hooks")]
    pub fn disconnect_peer(&self, addr: std::net::SocketAddr) {
        if let Some(node) = self.node() {
            node.transport().disconnect(addr);
        }
    }

    /// Test hook (feature `test-hooks`): while `on`, this node's UDP socket
    /// drops every datagram it sends or receives (gossip, Raft, requests,
    /// invalidations), as if the process were stopped or cut off from the
    /// network. Acts on the current generation.
    #[cfg(feature = "test-hooks")]
    pub fn pause_network(&self, on: bool) {
        if let Some(node) = self.node() {
            node.transport().pause(on);
        }
    }
}
