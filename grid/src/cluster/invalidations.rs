//! The invalidation exchange: fanning this node's invalidations out to every
//! live node (acknowledged or sent), relaying clients' invalidations to the
//! other clients, applying peers' invalidations under the sequence rules of
//! [`super::sequence`], and telling peers this node's high-water mark
//! ([`super::high_water`]) and taking theirs, for a missed tail.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use hydracache_protocol::{ErrorCode, HighWater, Invalidate, Message, NodeIdentity, Role, Target};

use super::builder::InvalidationMode;
use super::node::{LivePeer, Node};
use super::ownership::MembershipView;
use super::sequence::Received;
use super::transport::PeerIdentity;
use crate::error::CacheError;
use crate::events::EventOrigin;
use crate::invalidation::Invalidation;
use crate::telemetry;

impl Node {
    /// Notes every process's gossip heartbeat (for the isolation rule) and
    /// publishes this node's high-water mark in its gossip state, a hint
    /// receivers check against this node's own word ([`super::sequence`]).
    async fn observe_gossip(&self) {
        if let Some(h) = self.chitchat.get() {
            let c = h.chitchat();
            let mut g = c.lock().await;
            self.observe_heartbeats(&g);
            let mark = self.sequence.load(Ordering::SeqCst);
            let state = g.self_node_state();
            let published: u64 = state
                .get(super::gossip::keys::INVALIDATION_HWM)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if mark > published {
                state.set(super::gossip::keys::INVALIDATION_HWM, mark);
            }
        }
    }

    /// The peers this node's invalidations go to: the live ones that did
    /// not announce they leave, and admitted ones gossip does not report
    /// live; a client's go to the members only.
    fn fan_out_targets(&self) -> Vec<LivePeer> {
        let mut peers = self.invalidation_targets();
        // Admitted processes gossip does not report live may still serve
        // what this invalidates until the isolation rule has made them drop
        // it: they are waited for too, and named if they do not answer.
        let unheard = self.unheard_admitted(&self.live_peers(false));
        peers.extend(unheard);
        if self.role == Role::Client {
            peers.retain(|p| p.role == "member");
        }
        peers
    }

    /// Sends this node's high-water mark, in its own word, to each peer its
    /// invalidations go to that has not acknowledged it yet
    /// ([`super::high_water`]); answers come back on their own tasks.
    fn tell_high_water(self: &Arc<Self>) {
        let mark = self.settled_mark();
        let peers = self.fan_out_targets();
        let targets: Vec<(String, u64)> =
            peers.iter().map(|p| (p.id.clone(), p.generation)).collect();
        let due = {
            let fan_outs = self.fan_outs.lock().expect("fan-outs");
            self.marks
                .lock()
                .expect("marks")
                .due_own(mark, &targets, &fan_outs)
        };
        for peer in peers {
            let to = (peer.id, peer.generation);
            if !due.contains(&to) {
                continue;
            }
            let node = Arc::downgrade(self);
            let (transport, timeout) = (self.transport.clone(), self.ack_timeout);
            let message = Message::HighWater(HighWater {
                origin: self.identity.clone(),
                sequence: mark,
            });
            let generation = self.identity.generation;
            tokio::spawn(async move {
                let reply = tokio::time::timeout(timeout, transport.request(peer.addr, message));
                let acknowledged = match reply.await {
                    Ok(Ok((
                        _,
                        Message::InvalidateAck {
                            origin_generation: g,
                            sequence,
                        },
                    ))) if g == generation && sequence == mark => Some(mark),
                    _ => None,
                };
                if let Some(n) = node.upgrade() {
                    n.marks.lock().expect("marks").answered(&to, acknowledged);
                }
            });
        }
    }

    /// On a member: relays each client's latest mark to the other clients
    /// that have not acknowledged it ([`super::high_water::Relayed`]).
    fn relay_high_water(self: &Arc<Self>) {
        if self.role != Role::Member {
            return;
        }
        let mut clients = self.invalidation_targets();
        clients.extend(self.unheard_admitted(&self.live_peers(false)));
        clients.retain(|p| p.role == "client");
        let processes: Vec<(String, u64)> = clients
            .iter()
            .map(|p| (p.id.clone(), p.generation))
            .collect();
        let view = self.view();
        let live = self.live_peers(false);
        let due = self
            .relayed
            .lock()
            .expect("relayed")
            .due(&processes, |o, g| {
                view.is_admitted(o, g) || live.iter().any(|p| p.id == o && p.generation == g)
            });
        for ((origin, generation, mark), to) in due {
            for to in to {
                let Some(peer) = clients
                    .iter()
                    .find(|p| p.id == to.0 && p.generation == to.1)
                else {
                    continue;
                };
                let node = Arc::downgrade(self);
                let (transport, timeout, addr) =
                    (self.transport.clone(), self.ack_timeout, peer.addr);
                let message = Message::HighWater(HighWater {
                    origin: NodeIdentity::new(origin.clone(), generation),
                    sequence: mark,
                });
                let origin = origin.clone();
                tokio::spawn(async move {
                    let reply = tokio::time::timeout(timeout, transport.request(addr, message));
                    let acknowledged = match reply.await {
                        Ok(Ok((_, Message::InvalidateAck { sequence, .. })))
                            if sequence == mark =>
                        {
                            Some(mark)
                        }
                        _ => None,
                    };
                    if let Some(n) = node.upgrade() {
                        n.relayed.lock().expect("relayed").answered(
                            &origin,
                            generation,
                            &to,
                            acknowledged,
                        );
                    }
                });
            }
        }
    }

    /// Takes a peer's high-water mark: only in the origin's own word, or a
    /// client's relayed by an admitted member ([`super::authority::takes_high_water`]).
    /// Numbers up to it not seen yet become holes; a window that overflows
    /// drops everything now. A member acknowledges a client's mark once it
    /// has noted it, and relays it to the other clients from its table.
    pub(super) async fn receive_high_water(&self, peer: &PeerIdentity, mark: HighWater) -> Message {
        let sender = NodeIdentity::new(peer.node_id.clone(), peer.generation);
        let origin = mark.origin.id.to_string();
        if !super::authority::takes_high_water(
            &self.view(),
            self.role,
            &sender,
            peer.role,
            &mark.origin,
        ) {
            return Message::Error {
                code: ErrorCode::REFUSED,
                message: format!(
                    "{} may not send the high-water mark of {origin}",
                    peer.node_id
                )
                .into(),
            };
        }
        let (generation, sequence) = (mark.origin.generation, mark.sequence);
        let decision = self
            .sequences
            .lock()
            .expect("sequences")
            .observe_high_water(&origin, generation, sequence, std::time::Instant::now());
        let overflowed = match decision {
            Received::Apply { flush_first } => flush_first,
            // Not an ack: the sender is told its generation is superseded.
            Received::StaleGeneration { known } => {
                return Message::Error {
                    code: ErrorCode::STALE_GENERATION,
                    message: format!(
                        "origin {origin} generation {generation} is older than {known}"
                    )
                    .into(),
                };
            }
        };
        // Every fan-out of the origin's up to the mark ended.
        self.settle(|s| s.released(&origin, generation, sequence));
        if overflowed {
            self.telemetry.flushed_on_gap(&origin, "high_water");
            if let Some(grid) = self.grid.upgrade() {
                grid.apply(
                    &Invalidation::Flush,
                    EventOrigin::Remote {
                        node: origin.clone(),
                    },
                );
            }
        }
        if *mark.origin.id == *peer.node_id && generation == peer.generation {
            // The sender's own mark: it sends this process its
            // invalidations from now on (see super::copy_gate).
            self.copy_gate
                .lock()
                .expect("copy gate")
                .told_by((origin.clone(), generation));
            self.check_copy_gate(&self.view());
        }
        if self.role == Role::Member && peer.role == Role::Client {
            // Taken: the member relays it to the other clients from its
            // table, every gossip interval until each has it.
            self.relayed
                .lock()
                .expect("relayed")
                .note(&origin, generation, sequence);
        }
        Message::InvalidateAck {
            origin_generation: generation,
            sequence,
        }
    }

    pub(super) async fn fan_out(&self, inv: Invalidation) -> Result<(), CacheError> {
        self.fan_out_except(inv, None).await.1
    }

    /// [`Node::fan_out`] to every live node but `except` (the sender of a
    /// put, told the sequence number in the reply instead); returns the
    /// sequence number used.
    pub(super) async fn fan_out_except(
        &self,
        inv: Invalidation,
        except: Option<&str>,
    ) -> (u64, Result<(), CacheError>) {
        if self.stopped.load(Ordering::SeqCst) {
            // Left the cluster: a local cache now. Stopped because the
            // membership removed it (a new generation is on its way): the
            // holders of copies elsewhere were not told.
            if self.removed.load(Ordering::SeqCst) {
                return (0, Err(CacheError::Unacknowledged { nodes: Vec::new() }));
            }
            return (0, Ok(()));
        }
        // Taken before the targets are picked, held until the last answer
        // (see super::copy_gate).
        let (sequence, _ticket) = self.own_fan_out_ticket();
        let message = Message::Invalidate(Invalidate {
            origin: self.identity.clone(),
            sequence,
            epoch: self.view().epoch(),
            target: to_target(&inv),
        });
        // A process the membership does not admit (joining, restarted, or
        // removed) cannot name every holder: whoever answers, it does not
        // return `Ok` (an empty list: the holders are unknown). Judged
        // before the targets are picked: a process admitted meanwhile
        // picks them from a view that admits it, which holds every holder;
        // one judged later could return `Ok` for targets it picked before
        // it knew them. (Send-only mode promises nothing about who applied
        // it.)
        let knows_holders = self.mode == InvalidationMode::Sent
            || self.view().knows_holders(&self.identity, self.founder);
        // Clients do not talk to clients: a client sends to the members,
        // and each member relays to the other clients before it acknowledges.
        let mut peers = self.fan_out_targets();
        if let Some(except) = except {
            peers.retain(|p| p.id != except);
        }
        // A key's owner applies its invalidation before anyone else is told:
        // a node that applied it and then misses can only fetch from an
        // owner that has applied it too (docs/consistency.md).
        let owner = match &inv {
            Invalidation::Key(key) => self
                .view()
                .owner_for_key(key)
                .map(|m| m.node.id.to_string()),
            Invalidation::Tags(_) | Invalidation::Flush => None,
        };
        let first = owner
            .and_then(|o| peers.iter().position(|p| p.id == o))
            .map(|i| peers.swap_remove(i));
        let owner_acked = match first {
            Some(owner) => {
                self.send_to(vec![owner], message.clone(), sequence, self.ack_timeout)
                    .await
            }
            None => Ok(()),
        };
        // The maintenance task tells every peer the new high-water mark.
        let acked = self
            .send_to(peers, message, sequence, self.ack_timeout)
            .await;
        let acked = match (owner_acked, acked) {
            (Ok(()), rest) => rest,
            (first, Ok(())) => first,
            (
                Err(CacheError::Unacknowledged { nodes: mut a }),
                Err(CacheError::Unacknowledged { nodes: b }),
            ) => {
                a.extend(b);
                a.sort();
                Err(CacheError::Unacknowledged { nodes: a })
            }
            (first, _) => first,
        };
        // Not knowing every holder, it names none: a name promises that
        // node drops the value within the stated bound, which only an
        // admitted origin's high-water mark can back.
        if !knows_holders {
            return (
                sequence,
                Err(CacheError::Unacknowledged { nodes: Vec::new() }),
            );
        }
        (sequence, acked)
    }

    /// The highest sequence whose fan-out, and every earlier one, ended:
    /// the mark this node tells in its own word. A receiver takes it as
    /// proof that every target applied (or was named for) each of its
    /// invalidations up to there ([`super::settling`]).
    pub(super) fn settled_mark(&self) -> u64 {
        let fan_outs = self.fan_outs.lock().expect("fan-outs");
        fan_outs.settled_mark(self.sequence.load(Ordering::SeqCst))
    }

    /// Changes the unsettled invalidations, and the grid's copy gate with
    /// them (under the same lock, so two changes cannot reach the gate out
    /// of order).
    pub(super) fn settle(&self, change: impl FnOnce(&mut super::settling::Settling)) {
        // A stopped generation no longer speaks for the grid's copies.
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        // The grid first: it must drop after the guard (see
        // `Node::shut_copy_gate`).
        let grid = self.grid.upgrade();
        let mut settling = self.settling.lock().expect("settling");
        change(&mut settling);
        if let Some(grid) = &grid {
            grid.stamps.set_unsettled(!settling.is_settled());
        }
    }

    /// A fan-out's ticket, given back when the guard drops (see
    /// [`super::copy_gate::FanOuts`]).
    fn fan_out_ticket(&self) -> FanOutTicket<'_> {
        let ticket = self.fan_outs.lock().expect("fan-outs").begin(None);
        FanOutTicket {
            node: self,
            ticket,
            sequence: None,
        }
    }

    /// A ticket for one of this node's own invalidations, with its sequence
    /// number, drawn under the same lock (see [`Node::settled_mark`]).
    fn own_fan_out_ticket(&self) -> (u64, FanOutTicket<'_>) {
        let mut fan_outs = self.fan_outs.lock().expect("fan-outs");
        let sequence = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        let ticket = fan_outs.begin(Some(sequence));
        let ticket = FanOutTicket {
            node: self,
            ticket,
            sequence: Some(sequence),
        };
        (sequence, ticket)
    }

    /// Opens this process's copy gate once `view` admits it and every
    /// admitted process that sends it invalidations told it its own mark:
    /// on a member, every other admitted process; on a client, the
    /// members (they relay the other clients' invalidations).
    pub(super) fn check_copy_gate(&self, view: &MembershipView) {
        if self.keeps_copies.load(Ordering::SeqCst) {
            return;
        }
        let admitted = view.knows_holders(&self.identity, self.founder);
        let senders: Vec<(String, u64)> = view
            .members()
            .iter()
            .filter(|m| m.node != self.identity)
            .filter(|m| self.role == Role::Member || m.role == Role::Member)
            .map(|m| (m.node.id.to_string(), m.node.generation))
            .collect();
        // Held while the flags change: a removal (which shuts the gate and
        // the flags under the same lock) cannot come between.
        // The grid first: it must drop after the guard (see
        // `Node::shut_copy_gate`).
        let grid = self.grid.upgrade();
        let mut gate = self.copy_gate.lock().expect("copy gate");
        if gate.check(admitted, &senders) {
            self.keeps_copies.store(true, Ordering::SeqCst);
            if let Some(grid) = &grid {
                grid.stamps.keep_copies(true);
            }
        }
    }

    /// The live peers an invalidation goes to: not those that announced over
    /// their own connection that they leave once the view no longer admits
    /// them, since a leaving process drops its cache when it stops and
    /// would otherwise hold every caller for the whole acknowledgement
    /// timeout.
    fn invalidation_targets(&self) -> Vec<LivePeer> {
        let leaving = self.leaving.lock().expect("leaving").clone();
        let view = self.view();
        let mut peers = self.live_peers(false);
        // While the view still admits it, a leaving process may own keys
        // (and store what is put to it): it is still sent everything, and
        // answers while it waits to be removed.
        peers.retain(|p| {
            !leaving.contains(&(p.id.clone(), p.generation))
                || view.is_admitted(&p.id, p.generation)
        });
        peers
    }

    /// An invalidation names its origin; a peer may only send its own, except
    /// that admitted members relay clients' invalidations to clients (see
    /// [`super::ownership::MembershipView::takes_invalidation`]).
    pub(super) fn may_speak_for(&self, peer: &PeerIdentity, inv: &Invalidate) -> bool {
        let sender = hydracache_protocol::NodeIdentity::new(peer.node_id.clone(), peer.generation);
        self.view()
            .takes_invalidation(self.role, &sender, peer.role, &inv.origin)
    }

    /// Passes a client's invalidation on to the other live clients (clients
    /// do not talk to clients). Relays wait half the acknowledgement timeout,
    /// so that the originating client hears about a slow client before its
    /// own wait for this member ends.
    pub(super) async fn relay_to_clients(&self, inv: Invalidate) -> Result<(), CacheError> {
        let _ticket = self.fan_out_ticket();
        let sequence = inv.sequence;
        let origin = inv.origin.id.to_string();
        let mut clients = self.invalidation_targets();
        clients.extend(self.unheard_admitted(&self.live_peers(false)));
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
            let telemetry = &self.telemetry;
            async move {
                let ok = match mode {
                    InvalidationMode::Sent => transport.send(peer.addr, message).await.is_ok(),
                    InvalidationMode::Acknowledged => {
                        let sent = std::time::Instant::now();
                        let acked = matches!(
                            tokio::time::timeout(timeout, transport.request(peer.addr, message)).await,
                            Ok(Ok((_, Message::InvalidateAck { sequence: s, .. }))) if s == sequence
                        );
                        telemetry.invalidation_answered(acked.then(|| sent.elapsed()));
                        acked
                    }
                };
                (peer.id, ok)
            }
        });
        let results = futures_util::future::join_all(sends).await;
        let peers = results.len();
        let mut missing: Vec<String> = results
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(id, _)| id)
            .collect();
        if missing.is_empty() {
            tracing::debug!(target: telemetry::INVALIDATION, sequence, peers, "invalidation delivered");
        } else {
            tracing::warn!(
                target: telemetry::INVALIDATION,
                sequence,
                peers,
                late = ?missing,
                "invalidation not acknowledged by every peer in time"
            );
        }
        if missing.is_empty() || self.mode == InvalidationMode::Sent {
            Ok(())
        } else {
            missing.sort();
            Err(CacheError::Unacknowledged { nodes: missing })
        }
    }

    /// Applies an invalidation from a peer, with the gap rule.
    pub(super) fn receive(&self, inv: &Invalidate) -> Message {
        let Some(grid) = self.grid.upgrade() else {
            return Message::Error {
                code: ErrorCode::SHUTTING_DOWN,
                message: "this node is shutting down".into(),
            };
        };
        let origin = inv.origin.id.to_string();
        let decision = self.sequences.lock().expect("sequences").receive(
            &origin,
            inv.origin.generation,
            inv.sequence,
            std::time::Instant::now(),
        );
        let gap = match decision {
            Received::Apply { flush_first } => flush_first,
            Received::StaleGeneration { known } => {
                return Message::Error {
                    code: ErrorCode::STALE_GENERATION,
                    message: format!(
                        "origin {origin} generation {} is older than {known}",
                        inv.origin.generation
                    )
                    .into(),
                };
            }
        };
        if gap {
            self.telemetry.flushed_on_gap(&origin, "gap");
        }
        let remote = EventOrigin::Remote { node: origin };
        if gap {
            grid.apply(&Invalidation::Flush, remote.clone());
        }
        match from_target(&inv.target) {
            Ok(invs) => {
                if invs
                    .iter()
                    .any(|i| matches!(i, Invalidation::Tags(_) | Invalidation::Flush))
                {
                    // Before it is applied: a read that misses because of
                    // it must not keep what an owner that has not applied
                    // it yet answers.
                    let now = std::time::Instant::now();
                    self.settle(|s| {
                        s.applied(&inv.origin.id, inv.origin.generation, inv.sequence, now)
                    });
                }
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

/// Every gossip interval: notes the peers' heartbeats, runs the isolation
/// rule, tells peers this node's high-water mark (theirs arrive as
/// requests: a tail not seen opens holes in the receive window), and takes
/// holes open past their bound for loss: it drops everything this node
/// cannot prove fresh.
pub(super) async fn watch_high_water_marks(node: Weak<Node>) {
    loop {
        let Some(n) = node.upgrade() else { return };
        let interval = n.gossip_interval;
        let view = n.view();
        n.observe_gossip().await;
        n.check_isolation(&view);
        n.check_copy_gate(&view);
        // An origin's fan-out ends within its acknowledgement timeout (it
        // names whoever did not answer); its mark follows within a gossip
        // interval.
        let settle_bound = n.ack_timeout * 2 + interval * 2;
        n.settle(|s| s.expire(std::time::Instant::now(), settle_bound));
        if !n.stopped.load(Ordering::SeqCst) {
            n.tell_high_water();
            n.relay_high_water();
        }
        let live = n.live_peers(false);
        let lost = {
            let now = std::time::Instant::now();
            let mut sequences = n.sequences.lock().expect("sequences");
            // Forget origins that are neither admitted nor live (left,
            // removed, restarted): the table follows the grid as it is.
            sequences.prune(|origin, generation| {
                view.is_admitted(origin, generation)
                    || live
                        .iter()
                        .any(|p| p.id == origin && p.generation == generation)
            });
            // Gossip's copy of each admitted origin's mark is a hint: the
            // origin's own word must confirm it within the hole bound.
            for p in &live {
                if view.is_admitted(&p.id, p.generation) {
                    sequences.hint(&p.id, p.generation, p.mark, now);
                }
            }
            let overdue = sequences.overdue(now);
            if !overdue.is_empty() && sequences.expire(now) {
                overdue
            } else {
                Vec::new()
            }
        };
        if !lost.is_empty() {
            n.telemetry.flushed_on_gap(&lost.join(","), "gap");
            if let Some(grid) = n.grid.upgrade() {
                grid.apply(
                    &Invalidation::Flush,
                    EventOrigin::Remote {
                        node: lost.join(","),
                    },
                );
            }
        }
        drop(n);
        tokio::time::sleep(interval).await;
    }
}

impl Node {
    /// One tick of the isolation rule ([`super::isolation`]): counts the
    /// admitted members heard within the bound and, while this node cannot
    /// hear a majority, drops everything it holds.
    fn check_isolation(&self, view: &super::ownership::MembershipView) {
        let now = std::time::Instant::now();
        let members: Vec<_> = view
            .members()
            .iter()
            .filter(|m| m.role == Role::Member)
            .collect();
        // chitchat's failure detector adapts to how often heartbeats come:
        // a peer it still reports live counts as heard, so a node whose
        // gossip is only slow (a loaded machine) is not taken for cut off.
        let live = self.live_peers(false);
        let (decision, back_in_contact) = {
            let heard = self.telemetry.last_heard();
            let mut isolation = self.isolation.lock().expect("isolation");
            let was_isolated = isolation.isolated();
            let count = members
                .iter()
                .filter(|m| {
                    (*m.node.id == *self.identity.id
                        && m.node.generation == self.identity.generation)
                        || live
                            .iter()
                            .any(|p| *p.id == *m.node.id && p.generation == m.node.generation)
                        || isolation.heard(heard.since(&m.node.id, m.node.generation, now))
                })
                .count();
            let decision = isolation.tick(now, count, members.len());
            (decision, was_isolated && !isolation.isolated())
        };
        if back_in_contact {
            // The connections of the cut are stale: QUIC's loss recovery
            // has backed off on them and holds queued data for up to a
            // probe timeout that grew while nothing got through (an
            // invalidation sent right after the heal reached one peer at
            // once and the other 300 ms later, long enough for a read
            // there to fetch the old value from it). New connections
            // start from a clean state; every send dials again.
            self.transport.disconnect_all();
        }
        let super::isolation::Decision::Flush { entered } = decision else {
            return;
        };
        let Some(grid) = self.grid.upgrade() else {
            return;
        };
        if entered {
            tracing::warn!(
                target: telemetry::MEMBERSHIP,
                members = members.len(),
                "cut off from the cluster: dropping every entry until a majority is heard again"
            );
        }
        if entered || !grid.store.is_empty() {
            self.sequences.lock().expect("sequences").covered_by_flush();
            grid.apply(&Invalidation::Flush, EventOrigin::Local);
        }
    }

    /// Admitted processes gossip does not report live (and processes
    /// removed without leaving) that an invalidation must still reach or
    /// name: they may serve what it invalidates ([`super::isolation`]).
    fn unheard_admitted(&self, live: &[LivePeer]) -> Vec<LivePeer> {
        let view = self.view();
        let now = std::time::Instant::now();
        let leaving = self.leaving.lock().expect("leaving").clone();
        let heard = self.telemetry.last_heard();
        let mut isolation = self.isolation.lock().expect("isolation");
        let removed = isolation.still_removed(|id, g| heard.since(id, g, now));
        let mut unheard: Vec<LivePeer> = Vec::new();
        for m in view.members().iter().chain(&removed) {
            let (id, g) = (m.node.id.to_string(), m.node.generation);
            let is_self = id == *self.identity.id && g == self.identity.generation;
            // Live (sent to already), or replaced by a newer process of the
            // same node (the old one's cache went with it).
            let live_or_replaced = live.iter().any(|p| p.id == id && p.generation >= g);
            if is_self
                || live_or_replaced
                || (self.role == Role::Client && m.role != Role::Member)
                || (leaving.contains(&(id.clone(), g)) && !view.is_admitted(&id, g))
                || unheard.iter().any(|p| p.id == id && p.generation == g)
                || !isolation.names_unheard(heard.since(&id, g, now), now)
            {
                continue;
            }
            unheard.push(LivePeer {
                id,
                generation: g,
                role: super::consensus::role_name(m.role).to_string(),
                addr: m.address,
                raft_leader: None,
                incarnation: 0,
                mark: 0,
            });
        }
        unheard
    }
}

pub(super) fn to_target(inv: &Invalidation) -> Target {
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

pub(super) fn from_target(t: &Target) -> Result<Vec<Invalidation>, &'static str> {
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

/// A fan-out in flight; its ticket (and its sequence number, for this
/// node's own) ends when this drops.
struct FanOutTicket<'a> {
    node: &'a Node,
    ticket: u64,
    sequence: Option<u64>,
}

impl Drop for FanOutTicket<'_> {
    fn drop(&mut self) {
        self.node
            .fan_outs
            .lock()
            .expect("fan-outs")
            .end(self.ticket, self.sequence);
    }
}
