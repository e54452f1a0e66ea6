//! The membership state machine Raft replicates, its commands, and the
//! raft-rs `Storage` that holds the log next to the applied state.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use ::raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use ::raft::storage::MemStorage;
use ::raft::{GetEntriesContext, RaftState, Storage, StorageError};
use bytes::Bytes;
use hydracache_protocol::{Member, NodeIdentity, Role};
use serde::{Deserialize, Serialize};

use super::ownership::{fmix64, fnv1a64, fnv1a64_from, MembershipView};

/// Longest node id a command may carry, in bytes (the protocol's
/// `max_name_len`).
pub const MAX_NODE_ID_LEN: usize = 255;

/// Longest encoded command accepted by [`MembershipCommand::decode`].
pub const MAX_COMMAND_LEN: usize = 1024;

/// How many raft ids of removed or replaced nodes the state remembers, to
/// refuse their messages; the oldest are forgotten first.
const MAX_RETIRED: usize = 1024;

/// The raft peer id of one process, derived from its identity.
///
/// Raft ids are never assigned: every node computes any node's id from its
/// node id and generation, so a process knows its own id before it is
/// admitted, and a restarted process (new generation) is a new raft peer:
///
/// ```text
/// raft_id(id, generation) = fmix64(fnv1a64(id bytes, 0xff, generation as 8 little-endian bytes)),
///                           or 1 where that is 0 (raft reserves 0)
/// ```
///
/// (see [`ownership`](super::ownership) for `fnv1a64` and `fmix64`). Two
/// identities collide with probability 2^-64; the state machine refuses to
/// admit an identity whose raft id is already taken, so a collision costs a
/// restart, never a shared raft id.
///
/// ```
/// use hydracache::cluster::raft_id;
///
/// assert_eq!(raft_id("api-1", 1), raft_id("api-1", 1));
/// assert_ne!(raft_id("api-1", 1), raft_id("api-1", 2));
/// assert_ne!(raft_id("api-1", 1), 0);
/// ```
pub fn raft_id(node_id: &str, generation: u64) -> u64 {
    let h = fnv1a64(node_id.as_bytes());
    let h = fnv1a64_from(h, &[0xff]);
    let h = fnv1a64_from(h, &generation.to_le_bytes());
    match fmix64(h) {
        0 => 1,
        id => id,
    }
}

/// The incarnation id of a cluster bootstrapped with `seeds`: a hash of
/// their identities, in any order, never 0.
///
/// Every seed is given the same list, so they agree on it without talking;
/// and a generation is fresh for every process start, so bootstrapping
/// again (a founder restarted with its bootstrap flag still set) always
/// makes a new incarnation, never the running cluster's. Raft messages
/// carry it and a node refuses those of another incarnation (see
/// [`RaftDriver::receive`](super::raft::RaftDriver::receive)); members
/// gossip it and the leader never admits a process of another one.
///
/// ```
/// use hydracache::cluster::incarnation;
/// use hydracache_protocol::NodeIdentity;
///
/// let (a, b) = (NodeIdentity::new("m1", 10), NodeIdentity::new("m2", 11));
/// assert_eq!(incarnation(&[a.clone(), b.clone()]), incarnation(&[b, a.clone()]));
/// // The founder restarted (new generation) and bootstrapped again.
/// assert_ne!(incarnation(&[a]), incarnation(&[NodeIdentity::new("m1", 12)]));
/// ```
pub fn incarnation(seeds: &[NodeIdentity]) -> u64 {
    let mut ids: Vec<u64> = seeds.iter().map(raft_id_of).collect();
    ids.sort_unstable();
    ids.dedup();
    let h = ids
        .iter()
        .fold(fnv1a64(b"hydracache-incarnation"), |h, id| {
            fnv1a64_from(h, &id.to_le_bytes())
        });
    match fmix64(h) {
        0 => 1,
        id => id,
    }
}

/// The raft id of `node`; see [`raft_id`].
pub(crate) fn raft_id_of(node: &NodeIdentity) -> u64 {
    raft_id(&node.id, node.generation)
}

/// A change to the membership, proposed through Raft and applied by every
/// node in log order.
///
/// ```
/// use hydracache::cluster::MembershipCommand;
/// use hydracache_protocol::Role;
///
/// let admit = MembershipCommand::admit("api-1", 7, Role::Member, "10.0.0.1:7400".parse().unwrap());
/// let bytes = admit.encode();
/// assert_eq!(MembershipCommand::decode(&bytes).unwrap(), admit);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipCommand {
    /// Admit this process. If its node id is admitted with an older
    /// generation, this one replaces it (the restarted process rejoins);
    /// if the node id has been seen with this or a newer generation, the
    /// command is ignored.
    Admit(Member),
    /// Remove this process. Ignored unless exactly this generation is
    /// admitted, so a late removal of an old process never removes its
    /// successor.
    Remove(NodeIdentity),
}

impl MembershipCommand {
    /// `Admit` for the process `node_id` at `generation`.
    pub fn admit(
        node_id: impl Into<String>,
        generation: u64,
        role: Role,
        address: SocketAddr,
    ) -> MembershipCommand {
        MembershipCommand::Admit(Member {
            node: NodeIdentity::new(node_id.into(), generation),
            role,
            address,
        })
    }

    /// `Remove` for the process `node_id` at `generation`.
    pub fn remove(node_id: impl Into<String>, generation: u64) -> MembershipCommand {
        MembershipCommand::Remove(NodeIdentity::new(node_id.into(), generation))
    }

    /// The process the command is about.
    pub fn node(&self) -> &NodeIdentity {
        match self {
            MembershipCommand::Admit(m) => &m.node,
            MembershipCommand::Remove(n) => n,
        }
    }

    /// Checks the command before it is proposed: the node id is 1 to
    /// [`MAX_NODE_ID_LEN`] bytes.
    pub fn validate(&self) -> Result<(), CommandError> {
        let id = &self.node().id;
        if id.is_empty() {
            return Err(CommandError::EmptyNodeId);
        }
        if id.len() > MAX_NODE_ID_LEN {
            return Err(CommandError::NodeIdTooLong {
                len: id.len(),
                limit: MAX_NODE_ID_LEN,
            });
        }
        Ok(())
    }

    /// The command's bytes, as stored in a Raft log entry (postcard).
    pub fn encode(&self) -> Vec<u8> {
        let wire = match self {
            MembershipCommand::Admit(m) => WireCommand::Admit(WireMember::from(m)),
            MembershipCommand::Remove(n) => WireCommand::Remove {
                node_id: n.id.to_string(),
                generation: n.generation,
            },
        };
        // Serializing plain data into a Vec cannot fail.
        postcard::to_allocvec(&wire).unwrap_or_default()
    }

    /// Parses a command from [`encode`](Self::encode)'s bytes. Refuses input
    /// over [`MAX_COMMAND_LEN`] before parsing, and commands that fail
    /// [`validate`](Self::validate).
    pub fn decode(bytes: &[u8]) -> Result<MembershipCommand, CommandError> {
        if bytes.len() > MAX_COMMAND_LEN {
            return Err(CommandError::TooLong {
                len: bytes.len(),
                limit: MAX_COMMAND_LEN,
            });
        }
        let wire: WireCommand = postcard::from_bytes(bytes).map_err(|_| CommandError::Malformed)?;
        let command = match wire {
            WireCommand::Admit(m) => MembershipCommand::Admit(m.into()),
            WireCommand::Remove {
                node_id,
                generation,
            } => MembershipCommand::remove(node_id, generation),
        };
        command.validate()?;
        Ok(command)
    }
}

/// Why a membership command was refused before it reached the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The node id is empty; configure a node id.
    #[error("the node id is empty")]
    EmptyNodeId,
    /// The node id is too long; use a shorter node id.
    #[error("the node id is {len} bytes, over the limit of {limit}")]
    NodeIdTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The encoded command is longer than any valid command.
    #[error("the command is {len} bytes, over the limit of {limit}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a command.
    #[error("the bytes are not a membership command")]
    Malformed,
}

/// What applying a committed command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A node id seen for the first time (or a seed) was admitted.
    Admitted {
        /// The new epoch.
        epoch: u64,
    },
    /// A newer generation of an admitted node id replaced the old one.
    Rejoined {
        /// The generation it replaced.
        previous_generation: u64,
        /// The new epoch.
        epoch: u64,
    },
    /// The process was removed.
    Removed {
        /// The new epoch.
        epoch: u64,
    },
    /// A bootstrap voter that was never admitted was dropped from the Raft
    /// configuration; the membership (and its epoch) did not change.
    SeedDropped,
    /// Nothing changed.
    Ignored(Ignored),
}

/// Why a committed command changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The command names an older generation than the node id's newest:
    /// it comes from (or is about) a process that has been replaced.
    StaleGeneration {
        /// The node id's newest generation.
        current: u64,
    },
    /// This exact process is admitted already.
    AlreadyAdmitted,
    /// This exact process was admitted and then removed; it cannot come
    /// back without restarting with a new generation.
    Removed,
    /// `Remove` for a process that is not admitted.
    NotAdmitted,
    /// The process's raft id belongs to another admitted process (a 2^-64
    /// hash collision): it must restart with a new generation.
    RaftIdTaken,
}

/// A committed command and what applying it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The log index of the command.
    pub index: u64,
    /// The command.
    pub command: MembershipCommand,
    /// What it did.
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum WireRole {
    Member,
    Client,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireMember {
    node_id: String,
    generation: u64,
    role: WireRole,
    address: SocketAddr,
}

impl From<&Member> for WireMember {
    fn from(m: &Member) -> WireMember {
        WireMember {
            node_id: m.node.id.to_string(),
            generation: m.node.generation,
            role: match m.role {
                Role::Member => WireRole::Member,
                Role::Client => WireRole::Client,
            },
            address: m.address,
        }
    }
}

impl From<WireMember> for Member {
    fn from(m: WireMember) -> Member {
        Member {
            node: NodeIdentity::new(m.node_id, m.generation),
            role: match m.role {
                WireRole::Member => Role::Member,
                WireRole::Client => Role::Client,
            },
            address: m.address,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
enum WireCommand {
    Admit(WireMember),
    Remove { node_id: String, generation: u64 },
}

/// The replicated state as it travels in a Raft snapshot.
#[derive(Debug, Serialize, Deserialize)]
struct WireState {
    incarnation: u64,
    epoch: u64,
    members: Vec<WireMember>,
    seeds: Vec<(String, u64)>,
    generations: Vec<(String, u64)>,
    retired: Vec<u64>,
}

/// The membership state machine: what every node has applied from the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MembershipState {
    /// The cluster incarnation (see [`incarnation`]); 0 on a node that has
    /// not received its first snapshot yet.
    incarnation: u64,
    view: MembershipView,
    /// Bootstrap voters not admitted yet: node id -> generation.
    seeds: BTreeMap<String, u64>,
    /// The newest generation ever seeded or admitted, per node id.
    generations: BTreeMap<String, u64>,
    /// Raft ids of processes removed or replaced, oldest first.
    retired: VecDeque<u64>,
}

impl MembershipState {
    /// The state of a cluster bootstrapped with `seeds` as its voters.
    pub(crate) fn bootstrap(seeds: &[NodeIdentity]) -> MembershipState {
        let mut state = MembershipState {
            incarnation: incarnation(seeds),
            ..MembershipState::default()
        };
        for s in seeds {
            state.seeds.insert(s.id.to_string(), s.generation);
            state.generations.insert(s.id.to_string(), s.generation);
        }
        state
    }

    pub(crate) fn view(&self) -> &MembershipView {
        &self.view
    }

    /// The cluster incarnation; 0 until the first snapshot.
    pub(crate) fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The raft ids that should be in the Raft configuration: admitted
    /// members (clients are not raft peers) and seeds not admitted yet.
    pub(crate) fn raft_peers(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .view
            .owners()
            .map(|m| raft_id_of(&m.node))
            .chain(self.seeds.iter().map(|(id, g)| raft_id(id, *g)))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The identity behind a raft id: an admitted node or a pending seed.
    pub(crate) fn identity_of(&self, id: u64) -> Option<NodeIdentity> {
        self.member_of(id).map(|m| m.node.clone()).or_else(|| {
            self.seeds
                .iter()
                .find(|(n, g)| raft_id(n, **g) == id)
                .map(|(n, g)| NodeIdentity::new(n.clone(), *g))
        })
    }

    /// The admitted node with this raft id.
    pub(crate) fn member_of(&self, id: u64) -> Option<&Member> {
        self.view
            .members()
            .iter()
            .find(|m| raft_id_of(&m.node) == id)
    }

    /// True if the process `(node_id, generation)` was admitted (or
    /// superseded by a newer generation) and is not admitted now: it can
    /// never be admitted again, only a new generation can.
    pub(crate) fn is_removed(&self, node_id: &str, generation: u64) -> bool {
        self.generations
            .get(node_id)
            .is_some_and(|&g| g >= generation)
            && !self.view.is_admitted(node_id, generation)
            && self.seeds.get(node_id) != Some(&generation)
    }

    /// True if `id` belongs to a process that was removed or replaced.
    pub(crate) fn is_retired(&self, id: u64) -> bool {
        self.retired.contains(&id)
    }

    fn retire(&mut self, id: u64) {
        if self.retired.len() == MAX_RETIRED {
            self.retired.pop_front();
        }
        self.retired.push_back(id);
    }

    fn raft_id_taken(&self, node: &NodeIdentity) -> bool {
        let id = raft_id_of(node);
        self.identity_of(id).is_some_and(|other| other != *node)
    }

    /// Applies one committed command.
    pub(crate) fn apply(&mut self, command: &MembershipCommand) -> Outcome {
        match command {
            MembershipCommand::Admit(member) => self.admit(member),
            MembershipCommand::Remove(node) => self.remove(node),
        }
    }

    fn admit(&mut self, member: &Member) -> Outcome {
        let id = member.node.id.as_str();
        let generation = member.node.generation;
        let newest = self.generations.get(id).copied();
        let is_seed = self.seeds.get(id) == Some(&generation);
        match newest {
            Some(current) if generation < current => {
                return Outcome::Ignored(Ignored::StaleGeneration { current })
            }
            Some(current) if generation == current && !is_seed => {
                return Outcome::Ignored(if self.view.is_admitted(id, generation) {
                    Ignored::AlreadyAdmitted
                } else {
                    Ignored::Removed
                });
            }
            _ => {}
        }
        if self.raft_id_taken(&member.node) {
            return Outcome::Ignored(Ignored::RaftIdTaken);
        }
        // A seed of an older generation never came up as that process.
        if let Some(g) = self.seeds.remove(id) {
            if g != generation {
                self.retire(raft_id(id, g));
            }
        }
        let previous = self.view.member(id).map(|m| m.node.generation);
        if let Some(g) = previous {
            self.retire(raft_id(id, g));
        }
        self.generations.insert(id.to_string(), generation);
        let epoch = self.view.epoch() + 1;
        self.view = self.view.with(member.clone(), epoch);
        match previous {
            Some(previous_generation) => Outcome::Rejoined {
                previous_generation,
                epoch,
            },
            None => Outcome::Admitted { epoch },
        }
    }

    fn remove(&mut self, node: &NodeIdentity) -> Outcome {
        let id = node.id.as_str();
        if self.view.is_admitted(id, node.generation) {
            self.retire(raft_id_of(node));
            let epoch = self.view.epoch() + 1;
            self.view = self.view.without(id, epoch);
            return Outcome::Removed { epoch };
        }
        if self.seeds.get(id) == Some(&node.generation) {
            self.seeds.remove(id);
            self.retire(raft_id_of(node));
            return Outcome::SeedDropped;
        }
        match self.generations.get(id) {
            Some(&current) if node.generation < current => {
                Outcome::Ignored(Ignored::StaleGeneration { current })
            }
            _ => Outcome::Ignored(Ignored::NotAdmitted),
        }
    }

    /// The state's bytes, carried in Raft snapshots.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let wire = WireState {
            incarnation: self.incarnation,
            epoch: self.view.epoch(),
            members: self.view.members().iter().map(WireMember::from).collect(),
            seeds: self.seeds.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            generations: self
                .generations
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            retired: self.retired.iter().copied().collect(),
        };
        postcard::to_allocvec(&wire).unwrap_or_default()
    }

    /// Parses [`encode`](Self::encode)'s bytes; empty bytes are the empty
    /// state.
    pub(crate) fn decode(bytes: &[u8]) -> Result<MembershipState, CommandError> {
        if bytes.is_empty() {
            return Ok(MembershipState::default());
        }
        let wire: WireState = postcard::from_bytes(bytes).map_err(|_| CommandError::Malformed)?;
        let mut retired: VecDeque<u64> = wire.retired.into();
        while retired.len() > MAX_RETIRED {
            retired.pop_front();
        }
        Ok(MembershipState {
            incarnation: wire.incarnation,
            view: MembershipView::new(wire.epoch, wire.members.into_iter().map(Member::from)),
            seeds: wire.seeds.into_iter().collect(),
            generations: wire.generations.into_iter().collect(),
            retired,
        })
    }
}

/// raft-rs `Storage` for the membership group: the log in a `MemStorage`,
/// next to the applied membership state, so that a snapshot is always the
/// state at exactly the index and configuration it names.
///
/// A bootstrapped log starts with a snapshot at index 1 (term 1) holding the
/// seed voters; it is never compacted below that, so a node that joins with
/// an empty log always catches up by a snapshot first, and the snapshot
/// carries both the Raft configuration and the membership.
pub(crate) struct MembershipStorage {
    log: MemStorage,
    applied_index: u64,
    applied_term: u64,
    conf: ConfState,
    state: MembershipState,
}

impl MembershipStorage {
    /// Storage of a node that joins: empty log, no configuration. It waits
    /// for the leader's snapshot.
    pub(crate) fn empty() -> MembershipStorage {
        MembershipStorage {
            log: MemStorage::new(),
            applied_index: 0,
            applied_term: 0,
            conf: ConfState::default(),
            state: MembershipState::default(),
        }
    }

    /// Storage of a bootstrap voter: a snapshot at index 1, term 1 whose
    /// configuration is the seeds as voters.
    pub(crate) fn bootstrap(seeds: &[NodeIdentity]) -> Result<MembershipStorage, ::raft::Error> {
        let mut storage = MembershipStorage::empty();
        let mut voters: Vec<u64> = seeds.iter().map(raft_id_of).collect();
        voters.sort_unstable();
        voters.dedup();
        let conf = ConfState {
            voters,
            ..ConfState::default()
        };
        let state = MembershipState::bootstrap(seeds);
        let mut snapshot = Snapshot::default();
        snapshot.set_data(Bytes::from(state.encode()));
        let meta = snapshot.mut_metadata();
        meta.index = 1;
        meta.term = 1;
        meta.set_conf_state(conf);
        storage.install_snapshot(&snapshot)?;
        Ok(storage)
    }

    pub(crate) fn state(&self) -> &MembershipState {
        &self.state
    }

    pub(crate) fn state_mut(&mut self) -> &mut MembershipState {
        &mut self.state
    }

    /// Replaces log and state with a snapshot (from the leader, or the
    /// bootstrap one).
    pub(crate) fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), ::raft::Error> {
        let state = MembershipState::decode(snapshot.get_data()).map_err(|_| {
            ::raft::Error::Store(StorageError::Other("corrupt membership snapshot".into()))
        })?;
        self.log.wl().apply_snapshot(snapshot.clone())?;
        let meta = snapshot.get_metadata();
        self.applied_index = meta.index;
        self.applied_term = meta.term;
        self.conf = meta.get_conf_state().clone();
        self.state = state;
        Ok(())
    }

    pub(crate) fn append(&mut self, entries: &[Entry]) -> Result<(), ::raft::Error> {
        self.log.wl().append(entries)
    }

    pub(crate) fn set_hard_state(&mut self, hs: HardState) {
        self.log.wl().set_hardstate(hs);
    }

    pub(crate) fn set_commit(&mut self, commit: u64) {
        self.log.wl().mut_hard_state().set_commit(commit);
    }

    /// Records that the entry at `index` (of `term`) has been applied.
    pub(crate) fn set_applied(&mut self, index: u64, term: u64) {
        self.applied_index = index;
        self.applied_term = term;
    }

    /// Drops the log entries before the last `keep` applied ones, so that
    /// the log does not grow with every membership change. A peer that
    /// needs a dropped entry gets [`Storage::snapshot`], the applied state.
    pub(crate) fn compact(&mut self, keep: u64) -> Result<(), ::raft::Error> {
        let first = self.log.first_index()?;
        let upto = self.applied_index.saturating_sub(keep);
        if upto > first {
            self.log.wl().compact(upto)?;
        }
        Ok(())
    }

    /// How many entries the log holds.
    #[cfg(test)]
    pub(crate) fn log_len(&self) -> u64 {
        let (first, last) = (
            self.log.first_index().unwrap(),
            self.log.last_index().unwrap(),
        );
        (last + 1).saturating_sub(first)
    }

    /// Records the configuration after applying a conf change.
    pub(crate) fn set_conf(&mut self, conf: ConfState) {
        self.log.wl().set_conf_state(conf.clone());
        self.conf = conf;
    }
}

impl Storage for MembershipStorage {
    fn initial_state(&self) -> ::raft::Result<RaftState> {
        self.log.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> ::raft::Result<Vec<Entry>> {
        self.log.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> ::raft::Result<u64> {
        self.log.term(idx)
    }

    fn first_index(&self) -> ::raft::Result<u64> {
        self.log.first_index()
    }

    fn last_index(&self) -> ::raft::Result<u64> {
        self.log.last_index()
    }

    /// The applied state at the applied index. Temporarily unavailable while
    /// the requester is not yet in the applied configuration (its conf
    /// change is being applied right now): the leader retries on the next
    /// heartbeat, by which time the snapshot names it.
    fn snapshot(&self, request_index: u64, to: u64) -> ::raft::Result<Snapshot> {
        let known = self.conf.voters.contains(&to) || self.conf.learners.contains(&to);
        if self.applied_index < request_index || !known {
            return Err(::raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let mut snapshot = Snapshot::default();
        snapshot.set_data(Bytes::from(self.state.encode()));
        let meta = snapshot.mut_metadata();
        meta.index = self.applied_index;
        meta.term = self.applied_term;
        meta.set_conf_state(self.conf.clone());
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(id: &str, generation: u64) -> MembershipCommand {
        MembershipCommand::admit(id, generation, Role::Member, ([127, 0, 0, 1], 7400).into())
    }

    #[test]
    fn the_log_keeps_only_the_last_applied_entries() {
        let mut storage = MembershipStorage::empty();
        let entries: Vec<Entry> = (1..=1_000)
            .map(|index| Entry {
                index,
                term: 1,
                ..Default::default()
            })
            .collect();
        storage.append(&entries).unwrap();
        storage.set_applied(900, 1);
        storage.compact(100).unwrap();
        assert_eq!(storage.first_index().unwrap(), 800);
        assert_eq!(storage.log_len(), 201, "unapplied entries stay");
        // Compacting again with nothing new applied changes nothing.
        storage.compact(100).unwrap();
        assert_eq!(storage.first_index().unwrap(), 800);
    }

    #[test]
    fn admission_increments_the_epoch() {
        let mut s = MembershipState::default();
        assert_eq!(s.apply(&admit("a", 1)), Outcome::Admitted { epoch: 1 });
        assert_eq!(s.apply(&admit("b", 1)), Outcome::Admitted { epoch: 2 });
        assert_eq!(s.view().len(), 2);
        assert_eq!(
            s.apply(&admit("a", 1)),
            Outcome::Ignored(Ignored::AlreadyAdmitted)
        );
        assert_eq!(s.view().epoch(), 2);
    }

    #[test]
    fn a_newer_generation_replaces_the_old_and_old_commands_are_ignored() {
        let mut s = MembershipState::default();
        s.apply(&admit("a", 1));
        assert_eq!(
            s.apply(&admit("a", 2)),
            Outcome::Rejoined {
                previous_generation: 1,
                epoch: 2
            }
        );
        assert!(s.view().is_admitted("a", 2));
        assert!(s.is_retired(raft_id("a", 1)));
        let stale = Outcome::Ignored(Ignored::StaleGeneration { current: 2 });
        assert_eq!(s.apply(&admit("a", 1)), stale);
        assert_eq!(s.apply(&MembershipCommand::remove("a", 1)), stale);
        assert!(s.view().is_admitted("a", 2));
        assert_eq!(s.view().epoch(), 2);
    }

    #[test]
    fn a_removed_or_superseded_generation_is_known_as_removed() {
        let mut s = MembershipState::bootstrap(&[NodeIdentity::new("s", 1)]);
        assert!(!s.is_removed("s", 1), "a seed waiting for admission");
        assert!(!s.is_removed("a", 1), "never seen");
        s.apply(&admit("a", 1));
        assert!(!s.is_removed("a", 1));
        s.apply(&MembershipCommand::remove("a", 1));
        assert!(s.is_removed("a", 1));
        assert!(!s.is_removed("a", 2), "a new generation may join");
        s.apply(&admit("a", 2));
        s.apply(&admit("a", 3));
        assert!(s.is_removed("a", 2), "superseded");
        assert!(!s.is_removed("a", 3));
    }

    #[test]
    fn removal_needs_the_exact_generation_and_is_final() {
        let mut s = MembershipState::default();
        s.apply(&admit("a", 3));
        assert_eq!(
            s.apply(&MembershipCommand::remove("a", 4)),
            Outcome::Ignored(Ignored::NotAdmitted)
        );
        assert_eq!(
            s.apply(&MembershipCommand::remove("a", 3)),
            Outcome::Removed { epoch: 2 }
        );
        assert!(s.view().is_empty());
        // The removed process cannot come back; a restarted one can.
        assert_eq!(s.apply(&admit("a", 3)), Outcome::Ignored(Ignored::Removed));
        assert_eq!(s.apply(&admit("a", 4)), Outcome::Admitted { epoch: 3 });
    }

    #[test]
    fn seeds_are_raft_peers_until_admitted_or_dropped() {
        let seeds = [NodeIdentity::new("a", 1), NodeIdentity::new("b", 1)];
        let mut s = MembershipState::bootstrap(&seeds);
        let mut expected = vec![raft_id("a", 1), raft_id("b", 1)];
        expected.sort_unstable();
        assert_eq!(s.raft_peers(), expected);
        assert_eq!(s.apply(&admit("a", 1)), Outcome::Admitted { epoch: 1 });
        assert_eq!(s.raft_peers(), expected);
        // "b" restarted before it was admitted: its seed identity is dropped.
        assert_eq!(s.apply(&admit("b", 2)), Outcome::Admitted { epoch: 2 });
        assert!(s.is_retired(raft_id("b", 1)));
        assert!(!s.raft_peers().contains(&raft_id("b", 1)));
        assert_eq!(
            s.apply(&MembershipCommand::remove("c", 1)),
            Outcome::Ignored(Ignored::NotAdmitted)
        );
        let mut s = MembershipState::bootstrap(&seeds);
        assert_eq!(
            s.apply(&MembershipCommand::remove("b", 1)),
            Outcome::SeedDropped
        );
        assert_eq!(s.raft_peers(), vec![raft_id("a", 1)]);
    }

    #[test]
    fn clients_are_admitted_but_are_not_raft_peers() {
        let mut s = MembershipState::default();
        let client = MembershipCommand::admit("web", 1, Role::Client, ([127, 0, 0, 1], 1).into());
        assert_eq!(s.apply(&client), Outcome::Admitted { epoch: 1 });
        assert!(s.raft_peers().is_empty());
    }

    #[test]
    fn state_round_trips_through_snapshot_bytes() {
        let mut s = MembershipState::bootstrap(&[NodeIdentity::new("a", 1)]);
        s.apply(&admit("b", 1));
        s.apply(&admit("b", 2));
        let back = MembershipState::decode(&s.encode()).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            MembershipState::decode(&[]).unwrap(),
            MembershipState::default()
        );
        assert!(MembershipState::decode(&[0xff; 3]).is_err());
    }

    #[test]
    fn commands_round_trip_and_bad_bytes_are_refused() {
        for c in [admit("api-1", 9), MembershipCommand::remove("api-1", 9)] {
            assert_eq!(MembershipCommand::decode(&c.encode()).unwrap(), c);
        }
        assert_eq!(
            MembershipCommand::decode(&[7, 7, 7]),
            Err(CommandError::Malformed)
        );
        assert!(matches!(
            MembershipCommand::decode(&vec![0; MAX_COMMAND_LEN + 1]),
            Err(CommandError::TooLong { .. })
        ));
        assert_eq!(
            MembershipCommand::decode(&MembershipCommand::remove("", 1).encode()),
            Err(CommandError::EmptyNodeId)
        );
        let long = "x".repeat(MAX_NODE_ID_LEN + 1);
        assert!(matches!(
            admit(&long, 1).validate(),
            Err(CommandError::NodeIdTooLong { .. })
        ));
    }

    #[test]
    fn raft_ids_are_stable_and_distinct() {
        // Fixed across processes and builds (checked against an
        // independent implementation of the formula in the docs).
        assert_eq!(raft_id("api-1", 1), 0xda3f_13dd_6619_4eba);
        assert_eq!(raft_id("n1", 1), 0xb5d0_2752_1184_2a97);
        let mut ids: Vec<u64> = (0..1000)
            .flat_map(|g| (0..10).map(move |n| raft_id(&format!("n{n}"), g)))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 10_000);
        assert!(!ids.contains(&0));
    }
}
