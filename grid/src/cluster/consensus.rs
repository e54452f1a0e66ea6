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
//! proposed for removal. It also tells the driver which members gossip
//! reports live, which the voter rule needs ([`super::voters`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use hydracache_protocol::{Message, NodeIdentity, Role};
use tokio::sync::mpsc;

use super::node::Node;
use super::raft::{raft_id, MembershipCommand, RaftConfig, RaftDriver};
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
    /// Voters and learners in the Raft configuration this node has applied.
    pub(crate) voters: usize,
    pub(crate) learners: usize,
    /// This node leads.
    pub(crate) leads: bool,
    /// This node votes in the Raft configuration it has applied.
    pub(crate) votes: bool,
    /// The raft ids of that configuration's voters and learners, ascending.
    pub(crate) configured: Vec<u64>,
}

/// Handle to the raft task.
pub(crate) struct Consensus {
    tx: mpsc::Sender<Input>,
    max_message_bytes: usize,
    status: Arc<RwLock<RaftStatus>>,
    /// Finished once the task has exited, for any reason (a poisoned raft,
    /// a panic), and the node has stopped: the node reports it
    /// (`raft_task_exited`, `/health`).
    task: tokio::task::JoinHandle<()>,
    /// The raft loop itself (the test hook stops it).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    inner: tokio::task::AbortHandle,
}

impl Consensus {
    /// Starts the raft task. `bootstrap` makes this node a one-voter cluster
    /// that admits itself (the member started with `bootstrap`); otherwise
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
        let (alive, shared) = (node.clone(), Arc::clone(&status));
        let inner = tokio::spawn(run(driver, rx, transport, node, shared));
        let abort = inner.abort_handle();
        let task = tokio::spawn(async move {
            let _ = inner.await;
            // Raft failed (its log or storage is inconsistent, or it
            // panicked) while the node runs: the membership view is frozen
            // from now on, so the node fails loudly instead of serving as
            // an owner on a view it can no longer follow.
            if let Some(n) = alive.upgrade() {
                tracing::error!(target: crate::telemetry::RAFT, "the raft task exited; the node stops");
                n.raft_failed().await;
            }
        });
        Ok(Consensus {
            tx,
            max_message_bytes,
            status,
            task,
            inner: abort,
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

    /// True while this node leads or votes: the cluster may still need it
    /// for a quorum, so a process that leaves waits until it does neither.
    pub(crate) fn leads_or_votes(&self) -> bool {
        let status = self.status.read().expect("status");
        status.leads || status.votes
    }

    /// True if `raft_id` is a voter or learner in the Raft configuration
    /// this node has applied.
    pub(crate) fn in_configuration(&self, raft_id: u64) -> bool {
        let status = self.status.read().expect("status");
        status.configured.binary_search(&raft_id).is_ok()
    }

    /// True if the Raft configuration this node applied holds no other
    /// raft peer: there is no one to hand leadership or a vote over to.
    pub(crate) fn alone(&self) -> bool {
        let status = self.status.read().expect("status");
        status.configured.len() <= 1
    }

    /// Whether this node must stay until it handed over: it leads or votes,
    /// and its raft task runs, with another raft peer to hand over to.
    pub(crate) fn must_hand_over(&self) -> bool {
        self.leads_or_votes() && !self.exited() && !self.alone()
    }

    /// True once the raft task has exited.
    pub(crate) fn exited(&self) -> bool {
        self.task.is_finished()
    }

    /// Test hook: stops the raft task as if it had failed.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn stop(&self) {
        self.inner.abort();
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
    let mut pending = Pending::default();
    // The leader and the incarnation last written to this node's gossip state.
    let mut gossiped: Option<Option<String>> = None;
    let mut incarnation_gossiped = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                ticks += 1;
                driver.tick();
                if driver.is_leader() && ticks % RECONCILE_TICKS == 0 {
                    let Some(n) = node.upgrade() else { return };
                    // Who may hold a vote: members gossip reports live.
                    driver.set_live(
                        n.live_peers(true)
                            .iter()
                            .filter(|p| p.role == role_name(Role::Member))
                            .map(|p| raft_id(&p.id, p.generation)),
                    );
                    let wanted = n
                        .reconcile(
                            driver.view(),
                            driver.incarnation(),
                            |id, g| driver.is_removed(id, g),
                        )
                        .await;
                    for command in pending.due(wanted, ticks) {
                        let key = Pending::key(&command);
                        if driver.propose(command).is_ok() {
                            pending.proposed(key, ticks);
                        }
                    }
                }
            }
            input = rx.recv() => match input {
                None => return,
                Some(Input::Raft(from, bytes)) => {
                    // Refused bytes (oversize, malformed, from a retired id
                    // out of the configuration) are dropped; raft
                    // retransmits what matters.
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
            pending.settled(&v);
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
        if incarnation_gossiped != driver.incarnation() {
            if let Some(n) = node.upgrade() {
                if n.publish_incarnation(driver.incarnation()).await {
                    incarnation_gossiped = driver.incarnation();
                }
            }
        }
        let term = driver.term();
        let (voters, learners) = (driver.voters(), driver.learners());
        let mut known = status.write().expect("status");
        if known.leader != leader {
            tracing::info!(target: crate::telemetry::RAFT, leader = leader.as_deref(), term, "raft leader changed");
        }
        let mut configured: Vec<u64> = voters.iter().chain(&learners).copied().collect();
        configured.sort_unstable();
        *known = RaftStatus {
            leader,
            term,
            voters: voters.len(),
            learners: learners.len(),
            leads: driver.is_leader(),
            votes: driver.is_voter(),
            configured,
        };
    }
}

/// The leader's membership proposals in flight, so that a proposal is not
/// repeated every reconcile round: `(node id, admit?)` -> (generation, tick
/// proposed). It holds only what the latest round still wants.
#[derive(Debug, Default)]
struct Pending(HashMap<(String, bool), (u64, u64)>);

impl Pending {
    fn key(command: &MembershipCommand) -> ((String, bool), u64) {
        let node = command.node();
        let admit = matches!(command, MembershipCommand::Admit(_));
        ((node.id.to_string(), admit), node.generation)
    }

    /// The commands of this round (`wanted`) to propose at `tick`: new ones
    /// and those proposed more than [`RETRY_TICKS`] ago. Forgets proposals
    /// the round no longer wants (applied, or their process is gone).
    fn due(&mut self, wanted: Vec<MembershipCommand>, tick: u64) -> Vec<MembershipCommand> {
        let keys: Vec<_> = wanted.iter().map(Pending::key).collect();
        self.0
            .retain(|k, (g, _)| keys.iter().any(|(wk, wg)| wk == k && wg == g));
        wanted
            .into_iter()
            .zip(keys)
            .filter(|(_, (k, g))| {
                self.0
                    .get(k)
                    .is_none_or(|&(pg, at)| pg != *g || tick >= at + RETRY_TICKS)
            })
            .map(|(c, _)| c)
            .collect()
    }

    fn proposed(&mut self, (key, generation): ((String, bool), u64), tick: u64) {
        self.0.insert(key, (generation, tick));
    }

    /// Forgets proposals the committed `view` shows done.
    fn settled(&mut self, view: &super::ownership::MembershipView) {
        self.0
            .retain(|(id, admit), (g, _)| view.is_admitted(id, *g) != *admit);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
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
    fn proposals_are_not_repeated_until_due_and_are_forgotten_when_no_longer_wanted() {
        let addr = ([127, 0, 0, 1], 1).into();
        let admit = |id: &str| MembershipCommand::admit(id, 1, Role::Member, addr);
        let mut pending = Pending::default();
        let due = pending.due(vec![admit("a"), admit("b")], 0);
        assert_eq!(due.len(), 2);
        for c in &due {
            pending.proposed(Pending::key(c), 0);
        }
        assert!(pending.due(vec![admit("a"), admit("b")], 1).is_empty());
        assert_eq!(pending.due(vec![admit("a")], RETRY_TICKS).len(), 1);
        // "b" vanished before it was admitted: nothing is kept for it.
        assert_eq!(pending.len(), 1);
        pending.due(Vec::new(), RETRY_TICKS + 1);
        assert_eq!(pending.len(), 0);
    }

    #[tokio::test]
    async fn oversized_raft_bytes_are_dropped_before_queueing_and_the_queue_is_bounded() {
        assert!(admits(1 << 20, 1 << 20));
        assert!(!admits((1 << 20) + 1, 1 << 20));
        let (tx, _rx) = mpsc::channel(RAFT_INBOX_CAPACITY);
        let consensus = Consensus {
            tx,
            max_message_bytes: 1 << 10,
            status: Default::default(),
            task: tokio::spawn(async {}),
            inner: tokio::spawn(async {}).abort_handle(),
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
