//! What a grid holds of its cluster: the node of the current generation,
//! behind the core's seam ([`crate::remote::Remote`]), and the supervisor
//! that replaces it when the membership removed it.
//!
//! A grid built by `Grid::member()` or `Grid::client()` outlives the
//! generations of its node. A node wrongly declared dead (paused, or cut
//! off past the failure timeout) is removed for good; once it hears so it
//! flushes its cache and owns nothing. The supervisor then stops that
//! generation (its endpoint lets go of the UDP port) and starts a new one
//! through [`super::builder::spawn_node`]: the same id, certificate,
//! settings and address, never founding a cluster, seeded with the members
//! it last knew and the configured seeds. When is decided by
//! [`super::rejoin::RejoinRule`]. The grid core keeps calling the same
//! `Remote`; each call goes to the node current when it starts (one lock
//! read per miss, never on the hit path). Between the old generation's stop
//! and the new one's start there is no node (the old one's endpoint must be
//! dropped to free the address): a call then answers at once as if no
//! owner could be reached, and the grid keeps nothing: its copy gate shut
//! when the membership removed the old generation and stays shut until the
//! new one is admitted (see [`super::copy_gate`]). A read misses, a load
//! runs here and is not kept, a put and a named owner load fail with
//! `OwnerUnreachable`, and an invalidation returns `Unacknowledged` with no
//! names: it was applied here only, and the holders of copies elsewhere
//! were not told. Diagnostics show the old generation's last.

use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use super::builder::{resolve, spawn_node, ClusterError, NodeSpec};
use super::handle::ClusterDiagnostics;
use super::node::Node;
use super::rejoin::RejoinRule;
use super::transport::TransportError;
use crate::error::CacheError;
use crate::grid::GridInner;
use crate::invalidation::Invalidation;
use crate::owner_load::OwnerLoad;
use crate::remote::{Fetched, Lease, Leased, OwnerLoaded, PutAt, Remote, RemoteFuture};
use hydracache_protocol::Role;

/// How many times a new generation tries to bind the old one's address
/// while the old endpoint lets go of it, 100 ms apart.
const BIND_ATTEMPTS: u32 = 50;

/// The cluster side of a grid, across the generations of its node.
pub(crate) struct Attachment {
    /// The node of the current generation; `None` while one is replaced.
    node: RwLock<Option<Arc<Node>>>,
    /// The diagnostics of the last generation removed, shown while there is
    /// no node.
    last: Mutex<Option<ClusterDiagnostics>>,
    /// What every generation is started with.
    spec: NodeSpec,
    grid: Weak<GridInner>,
    /// When to start a new generation; rejoins counted.
    rule: Mutex<RejoinRule>,
    /// Held while a generation is replaced, and by `leave()`: one waits
    /// for the other.
    lifecycle: tokio::sync::Mutex<()>,
}

impl Attachment {
    /// Attaches `node` (started from `spec` for `grid`); if `rejoin`, a
    /// supervisor starts a new generation whenever the membership removed
    /// the current one.
    pub(super) fn start(
        node: Arc<Node>,
        spec: NodeSpec,
        grid: &Arc<GridInner>,
        rejoin: bool,
    ) -> Arc<Attachment> {
        // Checked a few times a failure timeout; the same interval spaces
        // failed attempts.
        let every = spec.gossip_interval * 5;
        let attachment = Arc::new(Attachment {
            node: RwLock::new(Some(node)),
            last: Mutex::new(None),
            spec,
            grid: Arc::downgrade(grid),
            rule: Mutex::new(RejoinRule::new(rejoin, every)),
            lifecycle: tokio::sync::Mutex::new(()),
        });
        if rejoin {
            tokio::spawn(supervise(Arc::downgrade(&attachment), every));
        }
        attachment
    }

    /// The node of the current generation; `None` while one is replaced.
    pub(crate) fn node(&self) -> Option<Arc<Node>> {
        self.node.read().expect("node").clone()
    }

    /// The current generation's diagnostics (while one is replaced, the
    /// removed one's last), with the rejoins so far.
    pub(crate) async fn diagnostics(&self) -> ClusterDiagnostics {
        let mut d = match self.node() {
            Some(node) => node.diagnostics().await,
            None => self
                .last
                .lock()
                .expect("last")
                .clone()
                .expect("a node, or the last one's diagnostics"),
        };
        d.rejoins = self.rule.lock().expect("rule").rejoins();
        d
    }

    /// Leaves the cluster for good: no generation starts after this one (a
    /// restart in progress completes first, and its node is the one that
    /// leaves).
    pub(crate) async fn leave(&self) {
        self.rule.lock().expect("rule").left();
        let _held = self.lifecycle.lock().await;
        if let Some(node) = self.node() {
            node.leave().await;
        }
    }

    /// Stops the node without leaving (a client that reached no member).
    pub(super) async fn stop(&self) {
        self.rule.lock().expect("rule").left();
        let _held = self.lifecycle.lock().await;
        if let Some(node) = self.node() {
            node.shutdown().await;
        }
    }

    /// Replaces a removed generation with a new one.
    async fn rejoin(&self) -> Result<(), ClusterError> {
        let _held = self.lifecycle.lock().await;
        let Some(grid) = self.grid.upgrade() else {
            return Ok(());
        };
        if self.rule.lock().expect("rule").has_left() {
            return Ok(());
        }
        // A failed attempt left no node: the next one starts from the same
        // last diagnostics.
        if let Some(old) = self.node() {
            let mut last = old.diagnostics().await;
            last.removed = true;
            tracing::warn!(
                target: crate::telemetry::RAFT,
                generation = last.generation,
                "removed from the membership; rejoining as a new generation"
            );
            *self.last.lock().expect("last") = Some(last);
            old.shutdown_for_successor().await;
            // The endpoint lets go of the address once every handle on it
            // is gone: this one, and those of the old node's tasks as they
            // end (the new one retries the bind meanwhile).
            *self.node.write().expect("node") = None;
        }
        let last = self.last.lock().expect("last").clone().expect("last");
        let seeds = seeds_to_rejoin(&last, &self.spec.seeds);
        let mut resolved = std::collections::HashSet::new();
        for seed in &seeds {
            // A configured name that does not resolve now is left out: the
            // members last known are addresses.
            if let Ok(addrs) = resolve(seed).await {
                resolved.extend(addrs);
            }
        }
        let mut attempt = 1;
        let node = loop {
            match spawn_node(&self.spec, &grid, &seeds, resolved.clone(), false).await {
                Ok(node) => break node,
                Err(ClusterError::Transport(TransportError::Bind { .. }))
                    if attempt < BIND_ATTEMPTS =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        *self.node.write().expect("node") = Some(Arc::clone(&node));
        // What the grid stored since its removal came through a generation
        // no one sent invalidations to: the new one starts empty, as a
        // restarted process would.
        grid.apply(&Invalidation::Flush, crate::events::EventOrigin::Local);
        if self.rule.lock().expect("rule").has_left() {
            // The grid was dropped meanwhile.
            node.shutdown_now();
        }
        Ok(())
    }
}

/// Whom a removed generation's successor joins through: the members it last
/// knew (other than itself), then the configured seeds.
fn seeds_to_rejoin(last: &ClusterDiagnostics, configured: &[String]) -> Vec<String> {
    let mut seeds: Vec<String> = last
        .peers
        .iter()
        .filter(|p| p.role == Role::Member && p.node_id != last.node_id)
        .map(|p| p.address.to_string())
        .collect();
    for seed in configured {
        if !seeds.contains(seed) {
            seeds.push(seed.clone());
        }
    }
    seeds
}

/// Starts a new generation whenever the current one was removed, until the
/// node leaves or the grid is dropped.
async fn supervise(attachment: Weak<Attachment>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(a) = attachment.upgrade() else {
            return;
        };
        // No node: a failed attempt, to be tried again.
        let removed = a
            .node()
            .is_none_or(|node| node.removed.load(Ordering::SeqCst));
        let go = {
            let mut rule = a.rule.lock().expect("rule");
            if rule.has_left() {
                return;
            }
            rule.should_rejoin(removed, Instant::now())
        };
        if go {
            let done = a.rejoin().await;
            if let Err(e) = &done {
                tracing::error!(
                    target: crate::telemetry::RAFT,
                    error = %e,
                    "could not start a new generation; retrying"
                );
            }
            a.rule
                .lock()
                .expect("rule")
                .finished(done.is_ok(), Instant::now());
        }
    }
}

/// A future answering at once: a call while no node runs.
fn now<'a, T: Send + 'a>(answer: T) -> RemoteFuture<'a, T> {
    Box::pin(std::future::ready(answer))
}

impl Remote for Attachment {
    fn fetch<'a>(&'a self, key: &'a str) -> RemoteFuture<'a, Result<Fetched, CacheError>> {
        match self.node() {
            Some(node) => Box::pin(async move { node.fetch_from_owner(key).await }),
            None => now(Ok(Fetched::Unavailable)),
        }
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
        tags: &'a [String],
    ) -> RemoteFuture<'a, Result<PutAt, CacheError>> {
        match self.node() {
            Some(node) => Box::pin(async move { node.put_at_owner(key, value, ttl, tags).await }),
            // No owner can be reached: the copy gate, shut until the next
            // generation is admitted, decides (the put fails).
            None => now(Ok(PutAt::Fallback)),
        }
    }

    fn owner_load<'a>(
        &'a self,
        key: &'a str,
        load: &'a OwnerLoad,
        ttl: Option<Duration>,
        tags: &'a [String],
    ) -> RemoteFuture<'a, Result<OwnerLoaded, CacheError>> {
        match self.node() {
            Some(node) => {
                Box::pin(async move { node.named_load_at_owner(key, load, ttl, tags).await })
            }
            None => now(Err(CacheError::OwnerUnreachable {
                key: key.to_string(),
            })),
        }
    }

    fn invalidate(&self, inv: Invalidation) -> RemoteFuture<'_, Result<(), CacheError>> {
        match self.node() {
            // Spawned: a caller that stops waiting does not cut the
            // fan-out short (its sequence would count as settled before
            // every target had its chance: see super::settling).
            Some(node) => Box::pin(async move {
                match tokio::spawn(async move { node.fan_out(inv).await }).await {
                    Ok(answer) => answer,
                    Err(_) => Err(CacheError::Unacknowledged { nodes: Vec::new() }),
                }
            }),
            // Applied here only: between two generations no node can name
            // the holders of copies elsewhere, and they were not told.
            None => now(Err(CacheError::Unacknowledged { nodes: Vec::new() })),
        }
    }

    fn load<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
    ) -> RemoteFuture<'a, Result<Leased, CacheError>> {
        match self.node() {
            Some(node) => Box::pin(async move { node.load_at_owner(key, tags).await }),
            None => now(Ok(Leased::Local)),
        }
    }

    fn fill<'a>(
        &'a self,
        key: &'a str,
        lease: Lease,
        value: &'a [u8],
        ttl: Option<Duration>,
        tags: &'a [String],
    ) -> RemoteFuture<'a, ()> {
        match self.node() {
            Some(node) => {
                Box::pin(async move { node.fill_lease(key, lease, value, ttl, tags).await })
            }
            // The lease was the old generation's: its owner voids it.
            None => now(()),
        }
    }

    fn abandon<'a>(&'a self, key: &'a str, lease: Lease, message: String) -> RemoteFuture<'a, ()> {
        match self.node() {
            Some(node) => Box::pin(async move { node.abandon_lease(key, lease, message).await }),
            None => now(()),
        }
    }

    fn voids(&self, inv: &Invalidation) {
        if let Some(node) = self.node() {
            node.void_leases(inv);
        }
    }

    fn kept_near(&self, key: &str, bytes: usize) {
        if let Some(node) = self.node() {
            node.kept_near(key, bytes);
        }
    }

    fn detach(&self) {
        self.rule.lock().expect("rule").left();
        if let Some(node) = self.node() {
            node.shutdown_now();
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::super::handle::PeerDiagnostics;
    use super::*;
    use crate::latency::LatencySnapshot;

    fn peer(id: &str, role: Role, port: u16) -> PeerDiagnostics {
        PeerDiagnostics {
            node_id: id.to_string(),
            generation: 1,
            address: format!("10.0.0.1:{port}").parse().unwrap(),
            role,
            live: true,
            last_heard: None,
        }
    }

    fn last(peers: Vec<PeerDiagnostics>) -> ClusterDiagnostics {
        ClusterDiagnostics {
            role: Role::Member,
            node_id: "me".into(),
            generation: 1,
            addr: "10.0.0.1:7402".parse().unwrap(),
            epoch: 4,
            members: Vec::new(),
            clients: Vec::new(),
            raft_leader: None,
            raft_term: 0,
            raft_voters: 0,
            raft_learners: 0,
            connections: 0,
            gossip_messages_sent: 0,
            gossip_bytes_sent: 0,
            gossip_refused: 0,
            gossip_live: 0,
            dead: Vec::new(),
            invalidation_sequence: 0,
            remote_hits: 0,
            near_hits: 0,
            remote_misses: 0,
            wrong_owner_retries: 0,
            local_fallbacks: 0,
            puts_served: 0,
            leases_granted: 0,
            leases_joined: 0,
            leases_expired: 0,
            leases_voided: 0,
            fills_refused: 0,
            owner_loads: 0,
            gap_flushes: 0,
            open_holes: 0,
            peers,
            invalidation_acks: 0,
            invalidation_late_nodes: 0,
            fetch_latency: LatencySnapshot::default(),
            put_latency: LatencySnapshot::default(),
            invalidation_ack_latency: LatencySnapshot::default(),
            raft_task_exited: false,
            isolated: false,
            isolations: 0,
            removed: true,
            rejoins: 0,
            keeps_copies: true,
        }
    }

    #[test]
    fn a_successor_joins_through_the_members_last_known_then_the_seeds() {
        let known = last(vec![
            peer("a", Role::Member, 7400),
            peer("b", Role::Member, 7401),
            peer("me", Role::Member, 7402),
            peer("web", Role::Client, 7403),
        ]);
        let configured = ["10.0.0.1:7400".to_string(), "seed:7400".to_string()];
        assert_eq!(
            seeds_to_rejoin(&known, &configured),
            ["10.0.0.1:7400", "10.0.0.1:7401", "seed:7400"],
            "members other than itself, no clients, each once"
        );
        assert_eq!(seeds_to_rejoin(&last(Vec::new()), &configured), configured);
    }
}
