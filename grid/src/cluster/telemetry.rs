//! What a node measures about itself for operators: request and
//! acknowledgement latencies, invalidation counters, when each peer was last
//! heard from, and the membership changes it reports (to
//! `Grid::subscribe_membership` and to `tracing`).
//!
//! The rules are pure ([`LastHeard`], [`membership_change`]); the node's
//! tasks feed them and read them for diagnostics.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hydracache_protocol::{Member, Role};

use super::node::Node;
use super::ownership::MembershipView;
use crate::events::{MemberInfo, MemberRole, MembershipChange};
use crate::latency::Histogram;
use crate::telemetry;

/// The node's own measurements, recorded by its read path and its
/// invalidation exchange.
#[derive(Default)]
pub(super) struct NodeTelemetry {
    /// Fetches from a key's owner, one per attempt.
    pub(super) fetch_latency: Histogram,
    /// Puts at a key's owner, one per attempt (the owner's invalidation
    /// round included).
    pub(super) put_latency: Histogram,
    /// From sending an invalidation to a peer to its acknowledgement.
    pub(super) ack_latency: Histogram,
    /// Acknowledgements received for invalidations this node sent.
    pub(super) invalidation_acks: AtomicU64,
    /// Peers that did not acknowledge an invalidation in time.
    pub(super) late_nodes: AtomicU64,
    /// When each peer's gossip heartbeat last moved.
    pub(super) last_heard: Mutex<LastHeard>,
    /// When each peer process last sent gossip or raft over its own
    /// authenticated connection: its own word that it runs, which nobody
    /// else can forge (gossip heartbeats can be: see
    /// [`super::authority::reconcile`]).
    pub(super) spoke: Mutex<HashMap<(String, u64), Instant>>,
    /// What this node's gossip has sent.
    pub(super) gossip_sent: std::sync::Arc<super::gossip::GossipSent>,
}

/// What a request to a peer is.
#[derive(Clone, Copy, Debug)]
pub(super) enum PeerRequest {
    Fetch,
    Put,
}

impl PeerRequest {
    fn name(self) -> &'static str {
        match self {
            PeerRequest::Fetch => "fetch",
            PeerRequest::Put => "put",
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl NodeTelemetry {
    /// Runs one request to `peer` for `key` in a span (target
    /// `hydracache::peer`) and records its duration; `outcome` names how it
    /// ended.
    pub(super) async fn peer_request<T>(
        &self,
        kind: PeerRequest,
        peer: std::net::SocketAddr,
        key: &str,
        request: impl Future<Output = T>,
        outcome: impl FnOnce(&T) -> &'static str,
    ) -> T {
        let span = tracing::debug_span!(
            target: telemetry::PEER,
            "peer_request",
            kind = kind.name(),
            %peer,
            key_hash = telemetry::key_hash(key),
            outcome = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        let started = Instant::now();
        if span.is_disabled() {
            // Nobody listens to this target: the histogram is all there is
            // to record, and the span's plumbing (entering it on every poll,
            // naming the outcome) would be paid for nothing on every request.
            let answer = request.await;
            self.record(kind, started.elapsed());
            return answer;
        }
        let answer = tracing::Instrument::instrument(request, span.clone()).await;
        let elapsed = started.elapsed();
        self.record(kind, elapsed);
        let outcome = outcome(&answer);
        let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        span.record("outcome", outcome);
        span.record("elapsed_us", elapsed_us);
        tracing::debug!(target: telemetry::PEER, parent: &span, outcome, elapsed_us, "peer answered");
        answer
    }

    fn record(&self, kind: PeerRequest, elapsed: Duration) {
        match kind {
            PeerRequest::Fetch => self.fetch_latency.record(elapsed),
            PeerRequest::Put => self.put_latency.record(elapsed),
        }
    }

    /// One peer's answer to an invalidation: acknowledged after `elapsed`,
    /// or not in time (`None`).
    pub(super) fn invalidation_answered(&self, elapsed: Option<Duration>) {
        match elapsed {
            Some(elapsed) => {
                self.ack_latency.record(elapsed);
                bump(&self.invalidation_acks, 1);
            }
            None => bump(&self.late_nodes, 1),
        }
    }

    /// Everything was dropped because invalidations from `origin` may have
    /// been missed (counted by the sequence table, reported here); `why` is
    /// `gap` (a hole open past its bound, or an overflowing window),
    /// `high_water` (a missed tail the origin's gossip revealed) or
    /// `put_reply` (a put's sequence skipped one).
    pub(super) fn flushed_on_gap(&self, origin: &str, why: &'static str) {
        tracing::warn!(
            target: telemetry::INVALIDATION,
            origin,
            why,
            "flushed the cache: invalidations may have been missed"
        );
    }

    pub(super) fn last_heard(&self) -> std::sync::MutexGuard<'_, LastHeard> {
        self.last_heard.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl NodeTelemetry {
    /// `peer` sent gossip or raft over its own connection at `now`.
    pub(super) fn spoke(&self, node: &str, generation: u64, now: Instant) {
        let mut spoke = self.spoke.lock().unwrap_or_else(|e| e.into_inner());
        match spoke.get_mut(&(node.to_string(), generation)) {
            Some(at) => *at = now,
            None => {
                spoke.insert((node.to_string(), generation), now);
            }
        }
    }

    /// The processes that spoke over their own connection within `within`
    /// of `now`; forgets the others (so the map holds only processes heard
    /// lately).
    pub(super) fn spoke_within(&self, within: Duration, now: Instant) -> Vec<(String, u64)> {
        let mut spoke = self.spoke.lock().unwrap_or_else(|e| e.into_inner());
        spoke.retain(|_, at| now.saturating_duration_since(*at) <= within);
        spoke.keys().cloned().collect()
    }
}

/// When each peer process was last heard from: the instant its gossip
/// heartbeat was last seen to move. Fed every gossip interval.
#[derive(Debug, Default)]
pub(super) struct LastHeard {
    seen: HashMap<(String, u64), (u64, Instant)>,
}

impl LastHeard {
    /// `node`'s process `generation` gossips heartbeat `heartbeat` at `now`.
    pub(super) fn observe(&mut self, node: &str, generation: u64, heartbeat: u64, now: Instant) {
        match self.seen.get_mut(&(node.to_string(), generation)) {
            Some((last, at)) => {
                if heartbeat > *last {
                    *last = heartbeat;
                    *at = now;
                }
            }
            None => {
                self.seen
                    .insert((node.to_string(), generation), (heartbeat, now));
            }
        }
    }

    /// How long ago the process was last heard from; `None` if never.
    pub(super) fn since(&self, node: &str, generation: u64, now: Instant) -> Option<Duration> {
        self.seen
            .get(&(node.to_string(), generation))
            .map(|(_, at)| now.saturating_duration_since(*at))
    }

    /// Forgets processes that are no longer in `keep`.
    pub(super) fn retain(&mut self, keep: impl Fn(&str, u64) -> bool) {
        self.seen
            .retain(|(node, generation), _| keep(node, *generation));
    }
}

fn info(m: &Member) -> MemberInfo {
    MemberInfo {
        node_id: m.node.id.to_string(),
        generation: m.node.generation,
        role: match m.role {
            Role::Member => MemberRole::Member,
            Role::Client => MemberRole::Client,
        },
        address: m.address,
    }
}

/// What changed from `old` to `new`; `None` if no process was admitted or
/// removed (an epoch can only move by admissions and removals, but a view
/// received twice changes nothing).
pub(super) fn membership_change(
    old: &MembershipView,
    new: &MembershipView,
) -> Option<MembershipChange> {
    let absent =
        |view: &MembershipView, m: &Member| !view.is_admitted(&m.node.id, m.node.generation);
    let admitted: Vec<_> = new
        .members()
        .iter()
        .filter(|m| absent(old, m))
        .map(info)
        .collect();
    let removed: Vec<_> = old
        .members()
        .iter()
        .filter(|m| absent(new, m))
        .map(info)
        .collect();
    (!admitted.is_empty() || !removed.is_empty()).then(|| MembershipChange {
        epoch: new.epoch(),
        admitted,
        removed,
    })
}

impl Node {
    /// Reports the move from `old` to `new` to `tracing` (target
    /// `hydracache::membership`) and to the grid's membership subscribers.
    pub(super) fn report_membership(&self, old: &MembershipView, new: &MembershipView) {
        let Some(change) = membership_change(old, new) else {
            return;
        };
        for m in &change.admitted {
            tracing::info!(
                target: telemetry::MEMBERSHIP,
                node = m.node_id.as_str(),
                generation = m.generation,
                role = ?m.role,
                epoch = change.epoch,
                "node admitted"
            );
        }
        for m in &change.removed {
            tracing::info!(
                target: telemetry::MEMBERSHIP,
                node = m.node_id.as_str(),
                generation = m.generation,
                role = ?m.role,
                epoch = change.epoch,
                "node removed"
            );
        }
        // No subscriber: nothing to deliver (and no error to handle).
        let _ = self.membership.send(change);
    }

    /// Notes every known process's gossip heartbeat; the maintenance task
    /// calls it every gossip interval, under the gossip lock.
    pub(super) fn observe_heartbeats(&self, gossip: &chitchat::Chitchat) {
        let now = Instant::now();
        let mut heard = self.telemetry.last_heard();
        for (id, state) in gossip.node_states() {
            heard.observe(&id.node_id, id.generation_id, state.heartbeat().into(), now);
        }
        heard.retain(|node, generation| {
            gossip
                .node_states()
                .keys()
                .any(|id| &*id.node_id == node && id.generation_id == generation)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydracache_protocol::NodeIdentity;

    fn member(id: &str, generation: u64, role: Role) -> Member {
        Member {
            node: NodeIdentity::new(id, generation),
            role,
            address: "127.0.0.1:7400".parse().unwrap(),
        }
    }

    #[test]
    fn a_peer_is_last_heard_when_its_heartbeat_last_moved() {
        let t0 = Instant::now();
        let mut h = LastHeard::default();
        assert_eq!(h.since("a", 1, t0), None);
        h.observe("a", 1, 5, t0);
        h.observe("a", 1, 5, t0 + Duration::from_secs(3)); // unchanged
        assert_eq!(
            h.since("a", 1, t0 + Duration::from_secs(4)),
            Some(Duration::from_secs(4))
        );
        h.observe("a", 1, 6, t0 + Duration::from_secs(5));
        assert_eq!(
            h.since("a", 1, t0 + Duration::from_secs(6)),
            Some(Duration::from_secs(1))
        );
        // Another generation of the same node is another process.
        assert_eq!(h.since("a", 2, t0), None);
        h.retain(|_, generation| generation != 1);
        assert_eq!(h.since("a", 1, t0), None);
    }

    #[test]
    fn a_membership_change_names_who_came_and_who_went() {
        let a = member("a", 1, Role::Member);
        let b = member("b", 1, Role::Member);
        let c = member("c", 1, Role::Client);
        let old = MembershipView::new(3, [a.clone(), b.clone()]);
        let new = MembershipView::new(5, [a.clone(), c.clone()]);
        let change = membership_change(&old, &new).unwrap();
        assert_eq!(change.epoch, 5);
        assert_eq!(change.admitted, vec![info(&c)]);
        assert_eq!(change.admitted[0].role, MemberRole::Client);
        assert_eq!(change.removed, vec![info(&b)]);
        assert_eq!(membership_change(&new, &new), None);
    }

    #[test]
    fn a_restart_is_a_removal_and_an_admission() {
        let old = MembershipView::new(1, [member("a", 1, Role::Member)]);
        let new = MembershipView::new(2, [member("a", 2, Role::Member)]);
        let change = membership_change(&old, &new).unwrap();
        assert_eq!(change.admitted[0].generation, 2);
        assert_eq!(change.removed[0].generation, 1);
    }

    #[test]
    fn invalidation_answers_count_acks_and_late_nodes() {
        let t = NodeTelemetry::default();
        t.invalidation_answered(Some(Duration::from_millis(2)));
        t.invalidation_answered(None);
        t.invalidation_answered(Some(Duration::from_millis(3)));
        assert_eq!(t.invalidation_acks.load(Ordering::Relaxed), 2);
        assert_eq!(t.late_nodes.load(Ordering::Relaxed), 1);
        assert_eq!(t.ack_latency.snapshot().count(), 2);
    }
}
