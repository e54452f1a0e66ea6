//! The node's raft task: the only owner of its [`RaftDriver`].
//!
//! One loop ticks the driver, steps the raft messages peers send, proposes
//! membership changes, and after every event takes the driver's output:
//! messages to send (one `Raft` frame each, on a unidirectional stream) and
//! the new membership view when the epoch moved. When this node leads, it
//! also reconciles the membership with gossip every few ticks: a process
//! gossip reports live but Raft has not admitted is proposed for admission;
//! an admitted process that gossip declares dead, that announced it is
//! leaving, or that a newer generation of the same node id replaced, is
//! proposed for removal.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use hydracache_protocol::{Message, NodeIdentity, Role};
use tokio::sync::mpsc;

use super::node::Node;
use super::raft::{MembershipCommand, RaftConfig, RaftDriver};
use super::transport::Transport;

/// How often the driver ticks.
pub(crate) const TICK: Duration = Duration::from_millis(50);
/// A leader reconciles membership with gossip every this many ticks.
const RECONCILE_TICKS: u64 = 2;
/// A proposal that has not shown up in the view is retried after this many ticks.
const RETRY_TICKS: u64 = 40;
/// Raft messages queued for the raft task before new ones are dropped
/// (raft retransmits): with the size check before queueing, the queue holds
/// at most this many times the message limit.
pub(crate) const RAFT_INBOX_CAPACITY: usize = 256;

pub(crate) enum Input {
    /// Raft bytes from an authenticated peer, with its raft id.
    Raft(u64, Bytes),
}

/// What the rest of the node reads about consensus.
#[derive(Clone, Debug, Default)]
pub(crate) struct RaftStatus {
    pub(crate) leader: Option<String>,
    pub(crate) term: u64,
}

/// Handle to the raft task.
pub(crate) struct Consensus {
    tx: mpsc::Sender<Input>,
    max_message_bytes: usize,
    status: Arc<RwLock<RaftStatus>>,
}

impl Consensus {
    /// Starts the raft task. `bootstrap` makes this node a one-voter cluster
    /// that admits itself (the first node, started without seeds); otherwise
    /// it joins with an empty log and waits to be admitted.
    pub(crate) fn start(
        me: NodeIdentity,
        bootstrap: bool,
        config: RaftConfig,
        transport: Transport,
        node: Weak<Node>,
    ) -> Result<Consensus, super::raft::RaftError> {
        let (tx, rx) = mpsc::channel(RAFT_INBOX_CAPACITY);
        let max_message_bytes = config.max_message_bytes;
        let driver = if bootstrap {
            RaftDriver::bootstrap(me.clone(), std::slice::from_ref(&me), config)?
        } else {
            RaftDriver::join(me, config)?
        };
        let status = Arc::new(RwLock::new(RaftStatus::default()));
        tokio::spawn(run(driver, rx, transport, node, Arc::clone(&status)));
        Ok(Consensus {
            tx,
            max_message_bytes,
            status,
        })
    }

    /// Queues raft bytes for the raft task; false if they were dropped
    /// (over the size limit, or the queue is full).
    pub(crate) fn deliver(&self, from: u64, bytes: Bytes) -> bool {
        admits(bytes.len(), self.max_message_bytes)
            && self.tx.try_send(Input::Raft(from, bytes)).is_ok()
    }

    pub(crate) fn status(&self) -> RaftStatus {
        self.status.read().expect("status").clone()
    }
}

async fn run(
    mut driver: RaftDriver,
    mut rx: mpsc::Receiver<Input>,
    transport: Transport,
    node: Weak<Node>,
    status: Arc<RwLock<RaftStatus>>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    // Proposals in flight: node id -> (generation, tick proposed).
    let mut pending: HashMap<(String, bool), (u64, u64)> = HashMap::new();
    // The leader last written to this node's gossip state.
    let mut gossiped: Option<Option<String>> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                ticks += 1;
                driver.tick();
                if driver.is_leader() && ticks % RECONCILE_TICKS == 0 {
                    let Some(n) = node.upgrade() else { return };
                    for command in n.reconcile(driver.view()).await {
                        let key = (command.node().id.to_string(), matches!(command, MembershipCommand::Admit(_)));
                        let generation = command.node().generation;
                        let due = pending
                            .get(&key)
                            .is_none_or(|&(g, at)| g != generation || ticks >= at + RETRY_TICKS);
                        if due && driver.propose(command).is_ok() {
                            pending.insert(key, (generation, ticks));
                        }
                    }
                }
            }
            input = rx.recv() => match input {
                None => return,
                Some(Input::Raft(from, bytes)) => {
                    // Refused bytes (oversize, malformed, from a retired id)
                    // are dropped; raft retransmits what matters.
                    let _ = driver.receive(from, &bytes);
                }
            },
        }
        let out = match driver.ready() {
            Ok(out) => out,
            Err(_) => return, // raft is poisoned: this process must restart
        };
        for m in out.messages {
            // Admitted peers are addressed by the membership; a peer not yet
            // known there (this node's leader, before this node has its
            // first view) by gossip.
            let addr = driver
                .member_of(m.to)
                .map(|member| member.address)
                .or_else(|| node.upgrade().and_then(|n| n.address_of_raft_id(m.to)));
            match addr {
                Some(addr) => {
                    let transport = transport.clone();
                    tokio::spawn(async move {
                        let _ = transport.send(addr, Message::Raft(m.bytes)).await;
                    });
                }
                None => driver.report_unreachable(m.to),
            }
        }
        if let Some(v) = out.view {
            pending.retain(|(id, admit), (g, _)| {
                let admitted = v.is_admitted(id, *g);
                if *admit {
                    !admitted
                } else {
                    admitted
                }
            });
            if let Some(n) = node.upgrade() {
                n.on_new_view(v, driver.is_leader());
            }
        }
        let leader = driver
            .leader_id()
            .and_then(|id| driver.identity_of(id))
            .map(|i| i.id.to_string());
        if gossiped.as_ref() != Some(&leader) {
            if let Some(n) = node.upgrade() {
                if n.publish_leader(leader.as_deref()).await {
                    gossiped = Some(leader.clone());
                }
            }
        }
        *status.write().expect("status") = RaftStatus {
            leader,
            term: driver.term(),
        };
    }
}

/// Whether raft bytes of `len` are queued at all: the size limit is checked
/// before they take room in the queue, not after.
fn admits(len: usize, limit: usize) -> bool {
    len <= limit
}

/// The name `names` holds most often (ties to the smaller), ignoring empty
/// ones: how a client picks the raft leader from what members gossip.
pub(crate) fn most_named(names: impl IntoIterator<Item = String>) -> Option<String> {
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for name in names.into_iter().filter(|n| !n.is_empty()) {
        *counts.entry(name).or_default() += 1;
    }
    let best = counts.values().copied().max()?;
    counts
        .into_iter()
        .find(|&(_, n)| n == best)
        .map(|(name, _)| name)
}

/// The role string nodes gossip.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Member => "member",
        Role::Client => "client",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_raft_bytes_are_dropped_before_queueing_and_the_queue_is_bounded() {
        assert!(admits(1 << 20, 1 << 20));
        assert!(!admits((1 << 20) + 1, 1 << 20));
        let (tx, _rx) = mpsc::channel(RAFT_INBOX_CAPACITY);
        let consensus = Consensus {
            tx,
            max_message_bytes: 1 << 10,
            status: Default::default(),
        };
        assert!(!consensus.deliver(1, Bytes::from(vec![0; (1 << 10) + 1])));
        for _ in 0..RAFT_INBOX_CAPACITY {
            assert!(consensus.deliver(1, Bytes::from_static(b"x")));
        }
        assert!(
            !consensus.deliver(1, Bytes::from_static(b"x")),
            "the queue is full"
        );
    }

    #[test]
    fn clients_name_the_leader_most_admitted_members_heard_from() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            most_named(names(&["m2", "m1", "m2"])).as_deref(),
            Some("m2")
        );
        assert_eq!(most_named(names(&["m2", "m1"])).as_deref(), Some("m1"));
        assert_eq!(most_named(names(&["", ""])), None);
        assert_eq!(most_named(names(&[])), None);
    }
}
