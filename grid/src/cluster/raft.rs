//! Raft over the membership: one [`RaftDriver`] per node owns the raft-rs
//! `RawNode` and is the only place the `tick` / `step` / `propose` /
//! `ready` / `advance` loop runs. It opens no sockets: the runtime hands it
//! the bytes that arrived ([`RaftDriver::receive`]) and sends the bytes
//! [`RaftDriver::ready`] returns, so the whole protocol runs in tests over
//! an in-memory network.
//!
//! # Who is a raft peer
//!
//! Raft ids are derived, never assigned: [`raft_id`]`(node id, generation)`.
//! A cluster is bootstrapped by its seeds (3 or 5 processes that know each
//! other's identities, from configuration and the transport's Hello): each
//! calls [`RaftDriver::bootstrap`] with the same seed list, and the seeds
//! are the first voters. Every other process calls [`RaftDriver::join`] and
//! waits, with an empty log, until it is admitted.
//!
//! The membership ([`MembershipView`]) is the authority; the Raft
//! configuration follows it. After every `ready`, the leader compares the
//! configuration with the admitted members (clients are not raft peers) and
//! proposes the next conf change the [voter rule](super::voters) gives:
//!
//! 1. raft ids of processes that were removed or replaced leave the
//!    configuration (if that is the leader itself, it hands leadership to
//!    another voter first, promoting a learner to take it if it votes
//!    alone);
//! 2. voters stay an odd number, up to [`RaftConfig::voters`]: a learner
//!    is promoted only when gossip reports it live, raft heard from it
//!    lately and it holds every committed entry, so one voter becomes three
//!    in one joint conf change (never two), and a voter gossip reports dead
//!    is swapped for a live learner in one joint conf change;
//! 3. admitted members that are not raft peers yet join as learners, many
//!    in one conf change.
//!
//! So later members join as learners, and a learner takes the seat of a
//! voter that dies or leaves. The consensus task tells the driver who is
//! live ([`RaftDriver::set_live`]).
//!
//! # Why a restarted process rejoins safely
//!
//! Storage is in memory: a process that restarts has lost its Raft log and
//! its vote. It also comes back with a new generation, hence a new raft id
//! — to Raft it is a new peer with an empty log that has never voted, not
//! the old peer with amnesia. It cannot vote twice in a term, nor count
//! towards a quorum for entries it no longer holds, because the old raft id
//! is never used again. Its `Admit` replaces the old generation in the
//! membership, which makes the leader remove the old raft id with a conf
//! change and add the new one as a learner; the learner receives the
//! leader's snapshot (configuration and membership at one index) before any
//! entry, and is promoted to voter only once it has caught up. Meanwhile
//! commands naming the old generation are ignored by every node, and raft
//! messages from the old raft id are refused once the conf change that
//! takes it out of the configuration has applied. Until then they are
//! stepped: a process that leaves is removed from the membership first, and
//! if it led or voted, the configuration still counts on it to hand over
//! (see [`RaftDriver::step`]).
//!
//! # Bytes from the network
//!
//! raft-rs 0.7 parses its messages with protobuf 2 (advisory
//! RUSTSEC-2024-0437 concerns recursion in that parser). The runtime only
//! passes bytes from authenticated members (mutual TLS and a Hello naming an
//! admitted process), and [`decode_message`] checks them before protobuf
//! sees them: a length cap, then a scan of the wire structure that follows
//! only the nesting eraftpb defines (at most four levels), refuses group
//! wire types, and caps the number of fields, which bounds what parsing
//! allocates.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ::raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, Entry,
    EntryType, Message, MessageType,
};
use ::raft::{Config, RawNode, SnapshotStatus, StateRole};
use bytes::Bytes;
use hydracache_protocol::{Member, NodeIdentity};
use protobuf::Message as _;

use super::ownership::MembershipView;
pub use super::raft_state::{
    incarnation, raft_id, Applied, CommandError, Ignored, MembershipCommand, Outcome,
    MAX_COMMAND_LEN, MAX_NODE_ID_LEN,
};
use super::raft_state::{raft_id_of, MembershipStorage};
use super::voters::{Change, Liveness, Peer, Picture, Step};

/// Default cap on one raft message from the network: 1 MiB.
pub const DEFAULT_MAX_RAFT_MESSAGE_BYTES: usize = 1 << 20;

/// Most protobuf fields (at every nesting level together) a raft message
/// may hold. Parsing allocates a bounded amount per field, so this bounds
/// what a message costs; real messages stay far below it.
pub const MAX_RAFT_MESSAGE_FIELDS: usize = 65_536;

/// Applied entries kept in the log for peers that lag a little; a peer
/// further behind catches up with a snapshot of the applied state.
const KEPT_LOG_ENTRIES: u64 = 256;

/// Bytes of the cluster incarnation in front of every raft message.
const INCARNATION_LEN: usize = 8;

/// How many ready rounds one [`RaftDriver::ready`] call runs at most.
const MAX_READY_ROUNDS: usize = 16;

/// Settings of a [`RaftDriver`].
///
/// ```
/// use hydracache::cluster::RaftConfig;
///
/// let config = RaftConfig { voters: 5, ..RaftConfig::default() };
/// assert_eq!(config.election_ticks, 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftConfig {
    /// How many voters the cluster keeps when it has enough members (3 or
    /// 5); other members are learners. Default 3.
    pub voters: usize,
    /// Ticks without a heartbeat before a follower campaigns. Default 10.
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats. Default 2.
    pub heartbeat_ticks: usize,
    /// Largest raft message accepted from the network, in bytes. Default
    /// [`DEFAULT_MAX_RAFT_MESSAGE_BYTES`].
    pub max_message_bytes: usize,
    /// Largest batch of entries the leader puts in one append, in bytes.
    /// Keep it well under `max_message_bytes`. Default 64 KiB.
    pub max_append_bytes: u64,
}

impl Default for RaftConfig {
    fn default() -> RaftConfig {
        RaftConfig {
            voters: 3,
            election_ticks: 10,
            heartbeat_ticks: 2,
            max_message_bytes: DEFAULT_MAX_RAFT_MESSAGE_BYTES,
            max_append_bytes: 64 << 10,
        }
    }
}

/// Why raft message bytes were refused before parsing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message is longer than the limit; the peer is misbehaving or
    /// configured with a larger limit than this node.
    #[error("raft message of {len} bytes is over the limit of {limit}")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The message has more fields than [`MAX_RAFT_MESSAGE_FIELDS`].
    #[error("raft message has more than {limit} fields")]
    TooManyFields {
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a well-formed raft message.
    #[error("malformed raft message: {reason}")]
    Malformed {
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why a message from the network was not stepped into Raft.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The bytes were refused; see [`DecodeError`]. Close the stream.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The message claims to come from another raft peer than the
    /// authenticated sender.
    #[error("raft message from {claimed} arrived from peer {sender}")]
    WrongSender {
        /// The raft id the message names.
        claimed: u64,
        /// The raft id of the authenticated sender.
        sender: u64,
    },
    /// The message is addressed to another raft peer (for example to this
    /// node's previous generation).
    #[error("raft message for {to} arrived at {me}")]
    NotForMe {
        /// The addressee.
        to: u64,
        /// This node's raft id.
        me: u64,
    },
    /// The message belongs to another Raft cluster: a process that
    /// bootstrapped a cluster of its own (see [`incarnation`]).
    #[error("raft message of cluster incarnation {theirs:x} arrived at incarnation {mine:x}")]
    OtherCluster {
        /// The incarnation the message carries.
        theirs: u64,
        /// This node's.
        mine: u64,
    },
    /// The sender is a removed or replaced process that is no longer in
    /// the Raft configuration.
    #[error("raft message from retired peer {from}")]
    Retired {
        /// Its raft id.
        from: u64,
    },
    /// raft-rs refused the message (a local message type, a response from
    /// an unknown peer, ...).
    #[error("raft refused the message: {0}")]
    Raft(#[from] ::raft::Error),
    /// The driver stopped after raft-rs panicked; see [`RaftError::Poisoned`].
    #[error(transparent)]
    Driver(#[from] RaftError),
}

/// Why a proposal was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    /// Only the leader takes proposals: send it to the leader, if known.
    #[error("not the raft leader (leader: {leader_id:?})")]
    NotLeader {
        /// The leader's raft id, if this node knows one.
        leader_id: Option<u64>,
        /// The leader, if it is an admitted node (a seed leading before its
        /// own admission has no address here).
        leader: Option<Box<Member>>,
    },
    /// The leader dropped the proposal (it is handing over leadership);
    /// retry shortly.
    #[error("the proposal was dropped; retry")]
    Dropped,
    /// The command is invalid.
    #[error(transparent)]
    Invalid(#[from] CommandError),
    /// raft-rs refused the proposal.
    #[error("raft refused the proposal: {0}")]
    Raft(::raft::Error),
    /// The driver stopped; see [`RaftError::Poisoned`].
    #[error(transparent)]
    Driver(#[from] RaftError),
}

/// Why the driver failed.
#[derive(Debug, thiserror::Error)]
pub enum RaftError {
    /// raft-rs or the storage returned an error.
    #[error("raft: {0}")]
    Raft(#[from] ::raft::Error),
    /// A committed conf change entry could not be parsed.
    #[error("corrupt conf change entry at index {index}")]
    CorruptConfChange {
        /// Its log index.
        index: u64,
    },
    /// raft-rs panicked (an invariant broken by a peer's message, for
    /// example). The driver refuses all further calls; restart the cluster
    /// runtime as a new generation.
    #[error("raft panicked; the driver is stopped")]
    Poisoned,
}

/// One raft message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The raft id of the addressee; see [`RaftDriver::identity_of`].
    pub to: u64,
    /// The bytes for `Message::Raft`: the sender's cluster incarnation (8
    /// bytes, little-endian; 0 before its first snapshot), then the
    /// protobuf-encoded message.
    pub bytes: Bytes,
}

/// What one [`RaftDriver::ready`] call produced.
#[derive(Debug, Clone, Default)]
pub struct RaftOutput {
    /// Messages to send, in order.
    pub messages: Vec<Outbound>,
    /// Membership commands committed and applied, in log order.
    pub applied: Vec<Applied>,
    /// The new membership view, if the epoch changed (by commands or by a
    /// snapshot from the leader).
    pub view: Option<MembershipView>,
}

impl RaftOutput {
    /// True if there is nothing to send and nothing changed.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.applied.is_empty() && self.view.is_none()
    }
}

/// Encodes a raft message for the wire.
pub fn encode_message(message: &Message) -> Bytes {
    // Writing a well-formed in-memory message into a Vec cannot fail.
    Bytes::from(message.write_to_bytes().unwrap_or_default())
}

/// Decodes raft message bytes from the network, refusing input over
/// `limit` bytes before looking at it, then input whose wire structure is
/// not eraftpb's (see the [module docs](self)), before protobuf parses it.
///
/// ```
/// use bytes::Bytes;
/// use hydracache::cluster::{decode_message, encode_message, DecodeError};
/// use raft::eraftpb::Message;
///
/// let mut m = Message::default();
/// m.to = 2;
/// let bytes = encode_message(&m);
/// assert_eq!(decode_message(&bytes, 1024).unwrap().to, 2);
///
/// let big = Bytes::from(vec![0u8; 2048]);
/// assert_eq!(
///     decode_message(&big, 1024).unwrap_err(),
///     DecodeError::TooLarge { len: 2048, limit: 1024 },
/// );
/// ```
pub fn decode_message(bytes: &Bytes, limit: usize) -> Result<Message, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let mut budget = MAX_RAFT_MESSAGE_FIELDS;
    scan(bytes, Schema::Message, &mut budget)?;
    Message::parse_from_carllerche_bytes(bytes).map_err(|_| DecodeError::Malformed {
        reason: "protobuf refused the message",
    })
}

/// The eraftpb messages that nest inside a raft `Message`.
#[derive(Clone, Copy)]
enum Schema {
    Message,
    Entry,
    Snapshot,
    SnapshotMetadata,
    ConfState,
}

impl Schema {
    /// The message type of a length-delimited field, if it is a message.
    fn nested(self, field: u64) -> Option<Schema> {
        match (self, field) {
            (Schema::Message, 7) => Some(Schema::Entry),
            (Schema::Message, 9) => Some(Schema::Snapshot),
            (Schema::Snapshot, 2) => Some(Schema::SnapshotMetadata),
            (Schema::SnapshotMetadata, 1) => Some(Schema::ConfState),
            _ => None,
        }
    }
}

fn malformed(reason: &'static str) -> DecodeError {
    DecodeError::Malformed { reason }
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, DecodeError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or(malformed("truncated varint"))?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(malformed("varint longer than 10 bytes"))
}

fn skip(buf: &[u8], pos: &mut usize, n: u64) -> Result<(), DecodeError> {
    let end = usize::try_from(n)
        .ok()
        .and_then(|n| pos.checked_add(n))
        .filter(|&end| end <= buf.len())
        .ok_or(malformed("field runs past the end"))?;
    *pos = end;
    Ok(())
}

/// Walks the wire structure of one message of type `schema`, descending
/// only into the fields eraftpb declares as messages (so the depth is at
/// most four), counting fields against `budget`.
fn scan(buf: &[u8], schema: Schema, budget: &mut usize) -> Result<(), DecodeError> {
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let field = tag >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(malformed("invalid field number"));
        }
        *budget = budget.checked_sub(1).ok_or(DecodeError::TooManyFields {
            limit: MAX_RAFT_MESSAGE_FIELDS,
        })?;
        match tag & 7 {
            0 => {
                varint(buf, &mut pos)?;
            }
            1 => skip(buf, &mut pos, 8)?,
            5 => skip(buf, &mut pos, 4)?,
            2 => {
                let len = varint(buf, &mut pos)?;
                let start = pos;
                skip(buf, &mut pos, len)?;
                if let Some(nested) = schema.nested(field) {
                    scan(&buf[start..pos], nested, budget)?;
                }
            }
            3 | 4 => return Err(malformed("group wire type")),
            _ => return Err(malformed("invalid wire type")),
        }
    }
    Ok(())
}

/// The single owner of a node's raft-rs `RawNode` for the membership group.
///
/// Drive it from one task: call [`tick`](Self::tick) on a timer (say every
/// 100 ms), [`receive`](Self::receive) for every raft message that arrives,
/// [`propose`](Self::propose) to change the membership, and after any of
/// these call [`ready`](Self::ready) and send what it returns. `ready`
/// persists, applies and advances in one call, so there is no way to forget
/// the `advance`.
///
/// ```
/// use hydracache::cluster::{MembershipCommand, RaftConfig, RaftDriver};
/// use hydracache_protocol::{NodeIdentity, Role};
///
/// // A single seed elects itself and admits itself.
/// let me = NodeIdentity::new("api-1", 1);
/// let mut raft = RaftDriver::bootstrap(me.clone(), &[me], RaftConfig::default()).unwrap();
/// for _ in 0..30 {
///     raft.tick();
///     raft.ready().unwrap();
/// }
/// assert!(raft.is_leader());
/// raft.propose(MembershipCommand::admit("api-1", 1, Role::Member, "127.0.0.1:7400".parse().unwrap()))
///     .unwrap();
/// let out = raft.ready().unwrap();
/// assert_eq!(out.view.unwrap().epoch(), 1);
/// ```
pub struct RaftDriver {
    me: NodeIdentity,
    id: u64,
    config: RaftConfig,
    node: RawNode<MembershipStorage>,
    /// The raft ids gossip reports live, with the term they were told in;
    /// `None` until told.
    live: Option<Liveness>,
    /// The log index of the conf change (or snapshot) that made the
    /// configuration this node has applied.
    conf_index: u64,
    poisoned: bool,
}

impl std::fmt::Debug for RaftDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftDriver")
            .field("me", &self.me)
            .field("id", &self.id)
            .field("leader", &self.leader_id())
            .field("epoch", &self.view().epoch())
            .finish_non_exhaustive()
    }
}

fn raft_config(id: u64, config: &RaftConfig) -> Config {
    Config {
        id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        max_size_per_msg: config.max_append_bytes,
        max_inflight_msgs: 64,
        // A leader that loses its quorum steps down, and a node that was
        // partitioned away does not depose a working leader when it returns.
        check_quorum: true,
        pre_vote: true,
        ..Config::default()
    }
}

impl RaftDriver {
    /// A driver for `me`, one of the cluster's bootstrap `seeds`; every seed
    /// must be given the same list. The seeds are the first voters.
    pub fn bootstrap(
        me: NodeIdentity,
        seeds: &[NodeIdentity],
        config: RaftConfig,
    ) -> Result<RaftDriver, RaftError> {
        RaftDriver::with_storage(me, MembershipStorage::bootstrap(seeds)?, config)
    }

    /// A driver for `me`, a process that joins a running cluster: it has an
    /// empty log and no configuration, and takes part once the leader has
    /// admitted it and added it as a learner.
    pub fn join(me: NodeIdentity, config: RaftConfig) -> Result<RaftDriver, RaftError> {
        RaftDriver::with_storage(me, MembershipStorage::empty(), config)
    }

    fn with_storage(
        me: NodeIdentity,
        storage: MembershipStorage,
        config: RaftConfig,
    ) -> Result<RaftDriver, RaftError> {
        let id = raft_id_of(&me);
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&raft_config(id, &config), storage, &logger)?;
        Ok(RaftDriver {
            me,
            id,
            config,
            node,
            live: None,
            conf_index: 0,
            poisoned: false,
        })
    }

    /// This node's raft id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// This process.
    pub fn identity(&self) -> &NodeIdentity {
        &self.me
    }

    /// The membership as applied on this node.
    pub fn view(&self) -> &MembershipView {
        self.node.store().state().view()
    }

    /// The leader's raft id, if this node knows one.
    pub fn leader_id(&self) -> Option<u64> {
        match self.node.raft.leader_id {
            0 => None,
            id => Some(id),
        }
    }

    /// True if this node is the leader.
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// True if this node votes in the Raft configuration it has applied
    /// (in either half of a joint one): the cluster may need it for a
    /// quorum, so a process that leaves waits until it no longer does.
    pub fn is_voter(&self) -> bool {
        self.node.raft.prs().conf().voters().contains(self.id)
    }

    /// True if `raft_id` is a voter or a learner in the Raft configuration
    /// this node has applied.
    pub fn in_configuration(&self, raft_id: u64) -> bool {
        let conf = self.node.raft.prs().conf();
        conf.voters().contains(raft_id) || conf.learners().contains(&raft_id)
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The index of the first entry still in the log: entries before it
    /// were compacted into the applied state, which lagging peers receive
    /// as a snapshot.
    pub fn first_log_index(&self) -> u64 {
        self.node.raft.raft_log.first_index()
    }

    /// The index of the last log entry applied to the membership.
    pub fn applied_index(&self) -> u64 {
        self.node.raft.raft_log.applied
    }

    /// The index of the last log entry known to be committed.
    pub fn commit_index(&self) -> u64 {
        self.node.raft.raft_log.committed
    }

    /// The voters' raft ids, ascending.
    pub fn voters(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.node.raft.prs().conf().voters().ids().iter().collect();
        v.sort_unstable();
        v
    }

    /// The learners' raft ids, ascending.
    pub fn learners(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .node
            .raft
            .prs()
            .conf()
            .learners()
            .iter()
            .copied()
            .collect();
        v.sort_unstable();
        v
    }

    /// Who has this raft id: an admitted node, or a seed not admitted yet.
    pub fn identity_of(&self, raft_id: u64) -> Option<NodeIdentity> {
        self.node.store().state().identity_of(raft_id)
    }

    /// True if the process `(node_id, generation)` was removed from the
    /// membership or replaced by a newer generation: it is never admitted
    /// again.
    pub(crate) fn is_removed(&self, node_id: &str, generation: u64) -> bool {
        self.node.store().state().is_removed(node_id, generation)
    }

    /// The admitted node with this raft id (with its address).
    pub fn member_of(&self, raft_id: u64) -> Option<&Member> {
        self.node.store().state().member_of(raft_id)
    }

    fn check(&self) -> Result<(), RaftError> {
        if self.poisoned {
            Err(RaftError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Runs `f` on the raw node; a panic inside raft-rs stops the driver
    /// instead of unwinding into the caller.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut RaftDriver) -> T) -> Result<T, RaftError> {
        self.check()?;
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(t) => Ok(t),
            Err(_) => {
                self.poisoned = true;
                Err(RaftError::Poisoned)
            }
        }
    }

    /// Advances the logical clock by one tick. (Does nothing once the
    /// driver has stopped; [`ready`](Self::ready) reports that.)
    pub fn tick(&mut self) {
        let _ = self.guarded(|d| d.node.tick());
    }

    /// Decodes raft message bytes that arrived from the authenticated peer
    /// whose raft id is `from` (`raft_id(peer node id, peer generation)`)
    /// and steps them; see [`decode_message`].
    ///
    /// The bytes start with the sender's cluster incarnation (see
    /// [`Outbound::bytes`]): a node refuses messages of another incarnation
    /// ([`StepError::OtherCluster`]). Either side may not know one yet (a
    /// joiner before its first snapshot says 0 and takes any): the joiner
    /// takes the incarnation of the snapshot it installs.
    pub fn receive(&mut self, from: u64, bytes: &Bytes) -> Result<(), StepError> {
        if bytes.len() < INCARNATION_LEN {
            return Err(malformed("no cluster incarnation").into());
        }
        let mut prefix = [0u8; INCARNATION_LEN];
        prefix.copy_from_slice(&bytes[..INCARNATION_LEN]);
        let theirs = u64::from_le_bytes(prefix);
        let mine = self.incarnation();
        if theirs != 0 && mine != 0 && theirs != mine {
            return Err(StepError::OtherCluster { theirs, mine });
        }
        let message = decode_message(
            &bytes.slice(INCARNATION_LEN..),
            self.config.max_message_bytes,
        )?;
        self.step(from, message)
    }

    /// The cluster incarnation this node belongs to (see [`incarnation`]);
    /// 0 on a joiner until the leader's first snapshot.
    pub fn incarnation(&self) -> u64 {
        self.node.store().state().incarnation()
    }

    /// Steps a decoded message from the authenticated peer `from`. Refuses
    /// messages whose sender or addressee is not what the connection says,
    /// and messages from removed or replaced processes once they are out of
    /// the Raft configuration. While a removed process is still in it, it
    /// is heard: a leader or voter that leaves hands over, and its
    /// successor commits the change that takes it out, with its help when
    /// the two of them were the only voters.
    pub fn step(&mut self, from: u64, message: Message) -> Result<(), StepError> {
        if message.from != from {
            return Err(StepError::WrongSender {
                claimed: message.from,
                sender: from,
            });
        }
        if message.to != self.id {
            return Err(StepError::NotForMe {
                to: message.to,
                me: self.id,
            });
        }
        if self.node.store().state().is_retired(from) && !self.in_configuration(from) {
            return Err(StepError::Retired { from });
        }
        self.guarded(|d| d.node.step(message))??;
        Ok(())
    }

    /// Proposes a membership change. `Ok` means the leader appended it to
    /// its log, not that it committed: watch [`RaftOutput::applied`] or the
    /// view, and propose again if leadership changed before it did.
    pub fn propose(&mut self, command: MembershipCommand) -> Result<(), ProposeError> {
        self.check()?;
        command.validate()?;
        if !self.is_leader() {
            let leader_id = self.leader_id();
            return Err(ProposeError::NotLeader {
                leader_id,
                leader: leader_id
                    .and_then(|id| self.member_of(id))
                    .map(|m| Box::new(m.clone())),
            });
        }
        let data = command.encode();
        match self.guarded(|d| d.node.propose(Vec::new(), data))? {
            Ok(()) => Ok(()),
            Err(::raft::Error::ProposalDropped) => Err(ProposeError::Dropped),
            Err(e) => Err(ProposeError::Raft(e)),
        }
    }

    /// Tells Raft that a message to `to` could not be sent.
    pub fn report_unreachable(&mut self, to: u64) {
        let _ = self.guarded(|d| d.node.report_unreachable(to));
    }

    /// Handles everything Raft has ready: persists new entries and state,
    /// installs a snapshot from the leader, applies committed commands and
    /// conf changes, advances, and (on the leader) moves the Raft
    /// configuration one step towards the membership. Returns the messages
    /// to send and what changed.
    ///
    /// An error here means the log or the storage is inconsistent (a
    /// corrupt snapshot or conf change): the driver stops, like after a
    /// panic, and every later call returns [`RaftError::Poisoned`].
    pub fn ready(&mut self) -> Result<RaftOutput, RaftError> {
        let result = self.guarded(|d| d.ready_inner())?;
        if result.is_err() {
            // A ready round that stopped half way cannot be resumed.
            self.poisoned = true;
        }
        result
    }

    fn ready_inner(&mut self) -> Result<RaftOutput, RaftError> {
        let epoch = self.view().epoch();
        let mut out = RaftOutput::default();
        for _ in 0..MAX_READY_ROUNDS {
            self.reconcile();
            if !self.node.has_ready() {
                break;
            }
            self.handle_ready(&mut out)?;
        }
        if self.view().epoch() != epoch {
            out.view = Some(self.view().clone());
        }
        Ok(out)
    }

    fn send(&mut self, messages: Vec<Message>, out: &mut RaftOutput) {
        let incarnation = self.incarnation().to_le_bytes();
        for m in messages {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                // Sending is fire-and-forget: report the snapshot as
                // delivered so the leader probes the follower next. If it
                // was lost, the probe is refused and a new snapshot goes.
                self.node.report_snapshot(m.to, SnapshotStatus::Finish);
            }
            let mut bytes = Vec::with_capacity(INCARNATION_LEN + m.compute_size() as usize);
            bytes.extend_from_slice(&incarnation);
            bytes.extend_from_slice(&encode_message(&m));
            out.messages.push(Outbound {
                to: m.to,
                bytes: Bytes::from(bytes),
            });
        }
    }

    /// One round of raft-rs's ready protocol.
    fn handle_ready(&mut self, out: &mut RaftOutput) -> Result<(), RaftError> {
        let mut ready = self.node.ready();
        let mut messages = Vec::new();
        // The leader may send before persisting (raft thesis 10.2.1).
        for m in ready.take_messages() {
            messages.push(m);
        }
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            self.node.mut_store().install_snapshot(&snapshot)?;
            self.conf_index = snapshot.get_metadata().index;
        }
        self.apply(ready.take_committed_entries(), out)?;
        if !ready.entries().is_empty() {
            self.node.mut_store().append(ready.entries())?;
        }
        if let Some(hs) = ready.hs() {
            self.node.mut_store().set_hard_state(hs.clone());
        }
        // Followers' messages (votes, append responses) only after the
        // entries and hard state above are stored.
        messages.extend(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit);
        }
        messages.extend(light.take_messages());
        self.apply(light.take_committed_entries(), out)?;
        self.node.advance_apply();
        // report_snapshot steps the node, which is only allowed between
        // ready rounds, so messages are encoded after advance.
        self.send(messages, out);
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>, out: &mut RaftOutput) -> Result<(), RaftError> {
        for entry in entries {
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    // Empty entries are new leaders' no-ops. Undecodable
                    // ones cannot come from `propose`; every node skips
                    // them alike.
                    if !entry.data.is_empty() {
                        if let Ok(command) = MembershipCommand::decode(&entry.data) {
                            let outcome = self.node.mut_store().state_mut().apply(&command);
                            out.applied.push(Applied {
                                index: entry.index,
                                command,
                                outcome,
                            });
                        }
                    }
                }
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(&entry.data)
                        .map_err(|_| RaftError::CorruptConfChange { index: entry.index })?;
                    let conf = self.node.apply_conf_change(&cc)?;
                    self.node.mut_store().set_conf(conf);
                    self.conf_index = entry.index;
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(&entry.data)
                        .map_err(|_| RaftError::CorruptConfChange { index: entry.index })?;
                    let conf = self.node.apply_conf_change(&cc)?;
                    self.node.mut_store().set_conf(conf);
                    self.conf_index = entry.index;
                }
            }
            self.node.mut_store().set_applied(entry.index, entry.term);
        }
        // The applied state is the snapshot a lagging peer gets: the log
        // before the last few applied entries is not needed any more.
        self.node.mut_store().compact(KEPT_LOG_ENTRIES)?;
        Ok(())
    }

    /// Tells the driver which raft ids gossip reports live, for the rule
    /// that picks the voters: a learner is promoted only if it is live, and
    /// a voter that is not (and that raft has not heard from lately) is
    /// replaced by one that is (or demoted, keeping the number of voters
    /// odd). The word holds for the current term only: until it is called
    /// in the term this node leads in, every peer counts as live.
    pub fn set_live(&mut self, live: impl IntoIterator<Item = u64>) {
        self.live = Some(Liveness {
            term: self.node.raft.term,
            ids: live.into_iter().collect(),
        });
    }

    /// On the leader, proposes the next conf change that brings the Raft
    /// configuration closer to the membership, as the
    /// [voter rule](super::voters) says.
    fn reconcile(&mut self) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader
            || raft.has_pending_conf()
            || raft.lead_transferee.is_some()
        {
            return;
        }
        let prs = raft.prs();
        let conf = prs.conf();
        let picture = Picture {
            leader: self.id,
            target: self.config.voters,
            voters: conf.voters().ids().iter().collect(),
            learners: conf.learners().iter().copied().collect(),
            joint: !conf.to_conf_state().voters_outgoing.is_empty(),
            desired: self.node.store().state().raft_peers().into_iter().collect(),
            committed: raft.raft_log.committed,
            conf_index: self.conf_index,
            term: raft.term,
            progress: prs
                .iter()
                .map(|(&id, p)| {
                    (
                        id,
                        Peer {
                            matched: p.matched,
                            active: p.recent_active,
                            committed: p.committed_index,
                        },
                    )
                })
                .collect(),
            live: self.live.clone(),
        };
        match picture.next_step() {
            Step::Settled => {}
            Step::TransferLeader(to) => self.node.transfer_leader(to),
            Step::LeaveJoint => self.propose_changes(&[]),
            Step::Change(changes) => self.propose_changes(&changes),
        }
    }

    /// Proposes `changes` as one `ConfChangeV2`: raft-rs applies a single
    /// voter change directly and enters (and, on this leader, leaves) a
    /// joint configuration for more; no changes leave a joint one.
    fn propose_changes(&mut self, changes: &[Change]) {
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Auto);
        cc.set_changes(
            changes
                .iter()
                .map(|change| {
                    let (change_type, node_id) = match *change {
                        Change::Voter(id) => (ConfChangeType::AddNode, id),
                        Change::Learner(id) => (ConfChangeType::AddLearnerNode, id),
                        Change::Remove(id) => (ConfChangeType::RemoveNode, id),
                    };
                    let mut single = ConfChangeSingle::default();
                    single.set_change_type(change_type);
                    single.node_id = node_id;
                    single
                })
                .collect(),
        );
        // A refusal (leadership just changed) is retried by the next ready.
        let _ = self.node.propose_conf_change(Vec::new(), cc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(m: &Message) -> Bytes {
        encode_message(m)
    }

    #[test]
    fn round_trips_every_nested_message() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.to = 3;
        m.from = 4;
        let e = Entry {
            index: 9,
            data: Bytes::from_static(b"payload"),
            ..Entry::default()
        };
        m.mut_entries().push(e);
        let snap = m.mut_snapshot();
        snap.set_data(Bytes::from_static(b"state"));
        snap.mut_metadata().index = 7;
        snap.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        let back = decode_message(&encoded(&m), 1 << 10).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let bytes = Bytes::from(vec![0xffu8; 65]);
        assert_eq!(
            decode_message(&bytes, 64),
            Err(DecodeError::TooLarge { len: 65, limit: 64 })
        );
    }

    #[test]
    fn groups_and_bad_wire_types_are_refused() {
        // Field 12 (context), start-group wire type, nested many times.
        let bytes = Bytes::from(vec![(12 << 3) | 3; 1000]);
        assert!(matches!(
            decode_message(&bytes, 1 << 20),
            Err(DecodeError::Malformed { .. })
        ));
        // A group inside an entry.
        let bytes = Bytes::from(vec![(7 << 3) | 2, 1, (1 << 3) | 3]);
        assert!(matches!(
            decode_message(&bytes, 1 << 20),
            Err(DecodeError::Malformed { .. })
        ));
        // Wire type 7 does not exist.
        let bytes = Bytes::from(vec![(1 << 3) | 7]);
        assert!(matches!(
            decode_message(&bytes, 1 << 20),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn truncated_fields_are_refused() {
        for bytes in [
            vec![(2 << 3)],              // varint missing
            vec![(12 << 3) | 2, 5, 1],   // length past the end
            vec![(2 << 3) | 1, 0, 0, 0], // fixed64 short
            vec![0x80; 11],              // endless varint
            vec![0],                     // field number 0
        ] {
            assert!(
                matches!(
                    decode_message(&Bytes::from(bytes.clone()), 1 << 20),
                    Err(DecodeError::Malformed { .. })
                ),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn too_many_fields_are_refused() {
        // Empty entries cost two bytes on the wire and a whole Entry parsed.
        let bytes = Bytes::from([(7u8 << 3) | 2, 0].repeat(MAX_RAFT_MESSAGE_FIELDS + 1));
        assert_eq!(
            decode_message(&bytes, 1 << 20),
            Err(DecodeError::TooManyFields {
                limit: MAX_RAFT_MESSAGE_FIELDS
            })
        );
        let bytes = Bytes::from([(7u8 << 3) | 2, 0].repeat(1000));
        assert_eq!(decode_message(&bytes, 1 << 20).unwrap().entries.len(), 1000);
    }

    #[test]
    fn unknown_fields_are_skipped_not_refused() {
        let mut bytes = encoded(&Message::default()).to_vec();
        // Field 100 (tag varint 0xa0 0x06), varint 5.
        bytes.extend_from_slice(&[0xa0, 0x06, 5]);
        assert!(decode_message(&Bytes::from(bytes), 1 << 10).is_ok());
    }
}
