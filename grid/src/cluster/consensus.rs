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
    tx: mpsc::UnboundedSender<Input>,
    status: Arc<RwLock<RaftStatus>>,
    /// Finished once the task has exited, for any reason (a poisoned raft,
    /// a panic): the node reports it (`raft_task_exited`, `/health`).
    task: tokio::task::JoinHandle<()>,
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
        let driver = if bootstrap {
            RaftDriver::bootstrap(me.clone(), std::slice::from_ref(&me), config)?
        } else {
            RaftDriver::join(me, config)?
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(RwLock::new(RaftStatus::default()));
        let (alive, shared) = (node.clone(), Arc::clone(&status));
        let task = tokio::spawn(async move {
            run(driver, rx, transport, node, shared).await;
            if alive.upgrade().is_some() {
                tracing::error!(target: crate::telemetry::RAFT, "the raft task exited");
            }
        });
        Ok(Consensus { tx, status, task })
    }

    pub(crate) fn deliver(&self, from: u64, bytes: Bytes) {
        let _ = self.tx.send(Input::Raft(from, bytes));
    }

    pub(crate) fn status(&self) -> RaftStatus {
        self.status.read().expect("status").clone()
    }

    /// True once the raft task has exited.
    pub(crate) fn exited(&self) -> bool {
        self.task.is_finished()
    }

    /// Test hook: stops the raft task as if it had failed.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

async fn run(
    mut driver: RaftDriver,
    mut rx: mpsc::UnboundedReceiver<Input>,
    transport: Transport,
    node: Weak<Node>,
    status: Arc<RwLock<RaftStatus>>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    // Proposals in flight: node id -> (generation, tick proposed).
    let mut pending: HashMap<(String, bool), (u64, u64)> = HashMap::new();
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
        let term = driver.term();
        let mut known = status.write().expect("status");
        if known.leader != leader {
            tracing::info!(target: crate::telemetry::RAFT, leader = leader.as_deref(), term, "raft leader changed");
        }
        *known = RaftStatus { leader, term };
    }
}

/// The role string nodes gossip.
pub(crate) fn role_name(role: Role) -> &'static str {
    match role {
        Role::Member => "member",
        Role::Client => "client",
    }
}
