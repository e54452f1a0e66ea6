//! Key ownership: rendezvous (highest-random-weight) hashing over the
//! members Raft admitted at a membership epoch.
//!
//! Every node computes owners from the same [`MembershipView`] with the same
//! pure function, so nodes that agree on the epoch agree on every key's owner
//! without talking to each other.
//!
//! # The weight function
//!
//! For a key `k` and a node id `n` the weight is
//!
//! ```text
//! weight(k, n) = fmix64(fnv1a64(k) ^ fmix64(fnv1a64(n)))
//! ```
//!
//! where `fnv1a64` is 64-bit FNV-1a over the UTF-8 bytes (offset basis
//! `0xcbf29ce484222325`, prime `0x100000001b3`) and `fmix64` is the 64-bit
//! finalizer of MurmurHash3 (`>> 33`, `* 0xff51afd7ed558ccd`, `>> 33`,
//! `* 0xc4ceb9fe1a85ec53`, `>> 33`). The owner of `k` is the member with the
//! largest weight; equal weights go to the smaller node id.
//!
//! Both halves are short, public, well-known algorithms written out here, so
//! the result is the same in every process, on every platform and in every
//! build of HydraCache — unlike `std`'s `DefaultHasher` or a seeded hasher
//! crate, whose output may change between releases. A rolling upgrade
//! therefore never disagrees about owners. FNV-1a alone mixes poorly; the
//! `fmix64` finalizer gives each output bit an even chance to flip for any
//! input change, which is what spreads keys evenly over members.
//!
//! Only the node id enters the weight, not the generation: a restarted
//! process (same node id, new generation) takes back exactly the keys its
//! predecessor owned.
//!
//! # Stability
//!
//! Removing a member moves only the keys that member owned (each to the
//! member with the next highest weight); adding one moves only the keys it
//! now wins. No other key changes owner.
//!
//! ```
//! use hydracache::cluster::MembershipView;
//! use hydracache_protocol::{Member, NodeIdentity, Role};
//!
//! let member = |id: &str, port: u16| Member {
//!     node: NodeIdentity::new(id.to_string(), 1),
//!     role: Role::Member,
//!     address: ([127, 0, 0, 1], port).into(),
//! };
//! let before = MembershipView::new(7, [member("a", 1), member("b", 2), member("c", 3)]);
//! let owner = before.owner_for_key("user:42").unwrap().node.id.clone();
//!
//! // Remove some other member: the key stays where it was.
//! let others: Vec<_> = before.members().iter().filter(|m| m.node.id != owner).collect();
//! let after = before.without(&others[0].node.id, 8);
//! assert_eq!(after.owner_for_key("user:42").unwrap().node.id, owner);
//! ```

use hydracache_protocol::{Member, MetadataSnapshot, NodeIdentity, Role};

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_from(FNV_OFFSET_BASIS, bytes)
}

/// 64-bit FNV-1a continued from `state`.
pub(crate) fn fnv1a64_from(mut state: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        state ^= u64::from(b);
        state = state.wrapping_mul(FNV_PRIME);
    }
    state
}

/// MurmurHash3's 64-bit finalizer: a bijection with full avalanche.
pub(crate) fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

/// The hash of a node id that [`rendezvous_weight`] combines with a key's.
fn node_hash(node_id: &str) -> u64 {
    fmix64(fnv1a64(node_id.as_bytes()))
}

fn combine(key_hash: u64, node_hash: u64) -> u64 {
    fmix64(key_hash ^ node_hash)
}

/// The rendezvous weight of `key` on the node `node_id`; the member with the
/// largest weight owns the key. See the [module docs](self) for the exact
/// function, which is part of the cluster's compatibility contract.
///
/// ```
/// use hydracache::cluster::rendezvous_weight;
///
/// // The same in every process and every build.
/// assert_eq!(rendezvous_weight("user:42", "api-1"), 0x8d41_a961_4a5f_7d3a);
/// ```
pub fn rendezvous_weight(key: &str, node_id: &str) -> u64 {
    combine(fnv1a64(key.as_bytes()), node_hash(node_id))
}

/// The nodes Raft admitted at one membership epoch, and the owner of every
/// key at that epoch.
///
/// A value type: cheap to compare, cloned when the epoch changes, never
/// mutated in place. Members are kept sorted by node id, one entry per node
/// id (the highest generation wins if a list names one twice). Clients
/// ([`Role::Client`]) are members of the view — they receive invalidations —
/// but own no keys.
///
/// ```
/// use hydracache::cluster::MembershipView;
/// use hydracache_protocol::{Member, NodeIdentity, Role};
///
/// let view = MembershipView::new(3, [
///     Member { node: NodeIdentity::new("api-1", 1), role: Role::Member, address: "10.0.0.1:7400".parse().unwrap() },
///     Member { node: NodeIdentity::new("web-1", 4), role: Role::Client, address: "10.0.0.9:7400".parse().unwrap() },
/// ]);
/// assert_eq!(view.epoch(), 3);
/// // Only the member can own keys.
/// assert_eq!(view.owner_for_key("anything").unwrap().node.id, "api-1");
/// assert!(view.is_admitted("web-1", 4));
/// assert!(!view.is_admitted("web-1", 3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MembershipView {
    epoch: u64,
    /// Sorted by node id, unique node ids.
    members: Vec<Member>,
    /// `(node_hash(id), index into members)` for every `Role::Member`.
    owners: Vec<(u64, usize)>,
}

impl MembershipView {
    /// A view of `members` at `epoch`. Members are sorted by node id; when a
    /// node id appears more than once, the highest generation is kept.
    pub fn new(epoch: u64, members: impl IntoIterator<Item = Member>) -> MembershipView {
        let mut members: Vec<Member> = members.into_iter().collect();
        // Node id ascending, generation descending: the first of each run of
        // equal ids is the one to keep.
        members.sort_by(|a, b| {
            a.node
                .id
                .cmp(&b.node.id)
                .then(b.node.generation.cmp(&a.node.generation))
        });
        members.dedup_by(|later, first| later.node.id == first.node.id);
        let owners = members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == Role::Member)
            .map(|(i, m)| (node_hash(&m.node.id), i))
            .collect();
        MembershipView {
            epoch,
            members,
            owners,
        }
    }

    /// The empty view at epoch 0, before Raft admitted anyone.
    pub fn empty() -> MembershipView {
        MembershipView::default()
    }

    /// The membership epoch; it increases with every change Raft commits.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Every admitted node, members and clients, sorted by node id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The admitted nodes with [`Role::Member`]: the ones that own keys.
    pub fn owners(&self) -> impl Iterator<Item = &Member> + '_ {
        self.owners.iter().map(|&(_, i)| &self.members[i])
    }

    /// How many nodes are admitted (members and clients).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// True if nobody is admitted.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The admitted node with this node id, whatever its generation.
    pub fn member(&self, node_id: &str) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.node.id.as_str().cmp(node_id))
            .ok()
            .map(|i| &self.members[i])
    }

    /// True if exactly this process — node id *and* generation — is
    /// admitted. A message from an older generation of an admitted node id
    /// answers `false` and must be refused.
    pub fn is_admitted(&self, node_id: &str, generation: u64) -> bool {
        self.member(node_id)
            .is_some_and(|m| m.node.generation == generation)
    }

    /// Whether `me` can name every process that may hold a copy of what it
    /// invalidates, so that its invalidation may return `Ok` once they all
    /// acknowledged: only while this view admits it (or, for the founder of
    /// a cluster, before any view: nobody else can hold anything yet). A
    /// process that is joining (a restart included) or was removed knows
    /// neither who holds copies nor whether its peers list is complete.
    pub fn knows_holders(&self, me: &NodeIdentity, founder: bool) -> bool {
        self.is_admitted(&me.id, me.generation) || (founder && self.members.is_empty())
    }

    /// The member that owns `key` at this epoch, or `None` if no node with
    /// [`Role::Member`] is admitted. Clients never own keys.
    pub fn owner_for_key(&self, key: &str) -> Option<&Member> {
        let key_hash = fnv1a64(key.as_bytes());
        let mut best: Option<(u64, usize)> = None;
        // `owners` is in node id order, so keeping the first of equal weights
        // gives ties to the smaller node id.
        for &(node_hash, i) in &self.owners {
            let w = combine(key_hash, node_hash);
            if best.is_none_or(|(bw, _)| w > bw) {
                best = Some((w, i));
            }
        }
        best.map(|(_, i)| &self.members[i])
    }

    /// True if the node `node_id` owns `key` at this epoch.
    pub fn is_owner(&self, key: &str, node_id: &str) -> bool {
        self.owner_for_key(key)
            .is_some_and(|m| m.node.id.as_str() == node_id)
    }

    /// This view without the node `node_id`, at `epoch`.
    pub fn without(&self, node_id: &str, epoch: u64) -> MembershipView {
        MembershipView::new(
            epoch,
            self.members
                .iter()
                .filter(|m| m.node.id.as_str() != node_id)
                .cloned(),
        )
    }

    /// This view with `member` added (replacing any node with its node id),
    /// at `epoch`.
    pub fn with(&self, member: Member, epoch: u64) -> MembershipView {
        let mut members: Vec<Member> = self
            .members
            .iter()
            .filter(|m| m.node.id != member.node.id)
            .cloned()
            .collect();
        members.push(member);
        MembershipView::new(epoch, members)
    }

    /// The keys among `keys` whose owner differs between this view and
    /// `next`, with the owner on each side.
    ///
    /// Owners are compared by identity, node id *and* generation: when a
    /// node restarts, its keys' owner is a new process with an empty store,
    /// so they count as moved even though the node id is the same.
    ///
    /// ```
    /// use hydracache::cluster::MembershipView;
    /// use hydracache_protocol::{Member, NodeIdentity, Role};
    ///
    /// let m = |id: &str| Member {
    ///     node: NodeIdentity::new(id.to_string(), 1),
    ///     role: Role::Member,
    ///     address: "127.0.0.1:7400".parse().unwrap(),
    /// };
    /// let old = MembershipView::new(1, [m("a"), m("b")]);
    /// let new = old.with(m("c"), 2);
    /// let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    /// for moved in old.moved(&new, &keys) {
    ///     // Adding "c" only moves keys to "c".
    ///     assert_eq!(moved.to.unwrap().node.id, "c");
    /// }
    /// ```
    pub fn moved<'v, K, I>(
        &'v self,
        next: &'v MembershipView,
        keys: I,
    ) -> impl Iterator<Item = KeyMove<'v, K>> + 'v
    where
        K: AsRef<str> + 'v,
        I: IntoIterator<Item = K>,
        I::IntoIter: 'v,
    {
        keys.into_iter().filter_map(move |key| {
            let from = self.owner_for_key(key.as_ref());
            let to = next.owner_for_key(key.as_ref());
            let same = match (from, to) {
                (Some(a), Some(b)) => a.node == b.node,
                (None, None) => true,
                _ => false,
            };
            (!same).then_some(KeyMove { key, from, to })
        })
    }

    /// "Which of my keys moved": the keys among `keys` that the node
    /// `node_id` owned in this view and does not own (as the same process)
    /// in `next`, with their new owner. A node calls this with the keys it
    /// holds when the epoch changes, to hand them over or drop them.
    ///
    /// ```
    /// use hydracache::cluster::MembershipView;
    /// use hydracache_protocol::{Member, NodeIdentity, Role};
    ///
    /// let m = |id: &str| Member {
    ///     node: NodeIdentity::new(id.to_string(), 1),
    ///     role: Role::Member,
    ///     address: "127.0.0.1:7400".parse().unwrap(),
    /// };
    /// let old = MembershipView::new(1, [m("a"), m("b")]);
    /// let new = old.with(m("c"), 2);
    /// let mine: Vec<String> = (0..1000)
    ///     .map(|i| format!("k{i}"))
    ///     .filter(|k| old.is_owner(k, "a"))
    ///     .collect();
    /// let gone: Vec<_> = old.moved_from(&new, "a", &mine).collect();
    /// assert!(!gone.is_empty());
    /// assert!(gone.iter().all(|m| m.to.unwrap().node.id == "c"));
    /// ```
    pub fn moved_from<'v, K, I>(
        &'v self,
        next: &'v MembershipView,
        node_id: &'v str,
        keys: I,
    ) -> impl Iterator<Item = KeyMove<'v, K>> + 'v
    where
        K: AsRef<str> + 'v,
        I: IntoIterator<Item = K>,
        I::IntoIter: 'v,
    {
        self.moved(next, keys)
            .filter(move |m| m.from.is_some_and(|f| f.node.id.as_str() == node_id))
    }

    /// True if exactly this process is admitted with [`Role::Member`].
    pub fn is_admitted_member(&self, node: &NodeIdentity) -> bool {
        self.member(&node.id)
            .is_some_and(|m| m.node.generation == node.generation && m.role == Role::Member)
    }

    /// Whether a node holding this view adopts the membership `next` that
    /// the authenticated peer `sender` (in `sender_role`) pushed to it.
    ///
    /// Members push the view Raft committed: the leader to every client on
    /// each change, any member to a peer (client or member) that asked at an
    /// older epoch. Both roles adopt a push when it is newer than what they
    /// hold and comes from a member this view admitted; a node that holds no
    /// view yet (epoch 0, before its first push) has nothing to check the
    /// sender against, so it takes its first view only from one of its seeds
    /// (`from_seed`: the peer's address is one the node was configured to
    /// join through), and only if the pushed view admits that seed as a
    /// member. Anything else (a client, an unadmitted or superseded process,
    /// a stranger offering a first view, an epoch that is not newer) is
    /// dropped.
    pub fn adopts(
        &self,
        sender: &NodeIdentity,
        sender_role: Role,
        from_seed: bool,
        next: &MembershipView,
    ) -> bool {
        if sender_role != Role::Member || next.epoch() <= self.epoch() {
            return false;
        }
        if self.epoch() == 0 {
            from_seed && next.is_admitted_member(sender)
        } else {
            self.is_admitted_member(sender)
        }
    }

    /// Whether an invalidation in the name of `origin` is taken from the
    /// authenticated peer `sender` (in `sender_role`) by a node in
    /// `receiver_role` holding this view.
    ///
    /// Every node may send its own invalidations (the transport
    /// authenticated its node id), at the generation of its connection
    /// only: a process of `origin` holding its certificate cannot speak for
    /// another generation of it (an old process naming a newer generation
    /// would move receivers' windows to a generation the real origin never
    /// had, and hide its real tail). The one relay the protocol has is a
    /// member passing a client's invalidation on to the other clients
    /// (clients do not talk to clients), so a client also takes an
    /// invalidation in another origin's name from a member this view
    /// admitted, unless that origin is itself an admitted member (members
    /// speak for themselves, never through a relay). An origin this view
    /// does not know yet may be a client admitted since: it is taken.
    pub fn takes_invalidation(
        &self,
        receiver_role: Role,
        sender: &NodeIdentity,
        sender_role: Role,
        origin: &NodeIdentity,
    ) -> bool {
        if sender.id == origin.id {
            return sender.generation == origin.generation;
        }
        receiver_role == Role::Client
            && sender_role == Role::Member
            && self.is_admitted_member(sender)
            && self
                .member(&origin.id)
                .is_none_or(|m| m.role == Role::Client)
    }

    /// The view as the protocol's `MetadataSnapshot`, to send to clients and
    /// peers.
    pub fn to_snapshot(&self) -> MetadataSnapshot {
        MetadataSnapshot {
            epoch: self.epoch,
            members: self.members.clone(),
        }
    }

    /// The identities of every admitted node.
    pub fn identities(&self) -> impl Iterator<Item = &NodeIdentity> + '_ {
        self.members.iter().map(|m| &m.node)
    }
}

impl From<MetadataSnapshot> for MembershipView {
    fn from(snapshot: MetadataSnapshot) -> MembershipView {
        MembershipView::new(snapshot.epoch, snapshot.members)
    }
}

/// A key whose owner changed between two views; see
/// [`MembershipView::moved`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMove<'v, K> {
    /// The key.
    pub key: K,
    /// Its owner in the earlier view (`None`: no member was admitted).
    pub from: Option<&'v Member>,
    /// Its owner in the later view (`None`: no member is left).
    pub to: Option<&'v Member>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn member(id: &str, generation: u64, role: Role) -> Member {
        Member {
            node: NodeIdentity::new(id.to_string(), generation),
            role,
            address: ([127, 0, 0, 1], 7400).into(),
        }
    }

    fn members(ids: &[&str]) -> Vec<Member> {
        ids.iter().map(|id| member(id, 1, Role::Member)).collect()
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("user:{i}")).collect()
    }

    fn counts(view: &MembershipView, keys: &[String]) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for k in keys {
            let owner = view.owner_for_key(k).unwrap();
            *counts.entry(owner.node.id.to_string()).or_default() += 1;
        }
        counts
    }

    #[test]
    fn hash_building_blocks_match_their_reference_values() {
        // FNV-1a reference vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        // fmix64 fixes zero and is not the identity elsewhere.
        assert_eq!(fmix64(0), 0);
        assert_ne!(fmix64(1), 1);
    }

    #[test]
    fn weights_are_fixed_across_processes_and_builds() {
        // These constants are the compatibility contract: if they change,
        // nodes of different builds disagree about owners.
        assert_eq!(rendezvous_weight("user:42", "api-1"), 0x8d41_a961_4a5f_7d3a);
        assert_eq!(rendezvous_weight("user:42", "api-2"), 0x4686_9187_0b37_0ccc);
        assert_eq!(
            rendezvous_weight("", ""),
            fmix64(FNV_OFFSET_BASIS ^ fmix64(FNV_OFFSET_BASIS))
        );
    }

    #[test]
    fn five_members_each_own_a_fifth_of_the_keys() {
        let view = MembershipView::new(1, members(&["n1", "n2", "n3", "n4", "n5"]));
        let keys = keys(10_000);
        let counts = counts(&view, &keys);
        assert_eq!(counts.len(), 5);
        for (node, n) in &counts {
            // 2,000 expected; the binomial standard deviation is 40, so
            // +-250 (2.5 points of the 20%) is over six deviations.
            assert!((1_750..=2_250).contains(n), "{node} owns {n} of 10,000");
        }
    }

    #[test]
    fn removing_a_member_moves_only_its_keys() {
        let before = MembershipView::new(1, members(&["n1", "n2", "n3", "n4", "n5"]));
        let after = before.without("n3", 2);
        let keys = keys(10_000);
        let mut moved = 0;
        for k in &keys {
            let a = before.owner_for_key(k).unwrap();
            let b = after.owner_for_key(k).unwrap();
            if a.node.id == "n3" {
                moved += 1;
                assert_ne!(b.node.id, "n3");
            } else {
                assert_eq!(a, b, "{k} moved from {} though n3 left", a.node.id);
            }
        }
        // The moves are exactly n3's keys, spread over the other four.
        let gone: Vec<_> = before.moved(&after, &keys).collect();
        assert_eq!(gone.len(), moved);
        assert!(gone.iter().all(|m| m.from.unwrap().node.id == "n3"));
        let counts = counts(&after, &keys);
        for (node, n) in &counts {
            // 2,500 expected now.
            assert!((2_250..=2_750).contains(n), "{node} owns {n} of 10,000");
        }
    }

    #[test]
    fn adding_a_member_moves_keys_only_to_it() {
        let before = MembershipView::new(1, members(&["n1", "n2", "n3", "n4"]));
        let after = before.with(member("n5", 1, Role::Member), 2);
        let keys = keys(10_000);
        let moved: Vec<_> = before.moved(&after, &keys).collect();
        assert!(moved.iter().all(|m| m.to.unwrap().node.id == "n5"));
        assert!((1_750..=2_250).contains(&moved.len()), "{}", moved.len());
    }

    #[test]
    fn clients_own_nothing() {
        let view = MembershipView::new(
            1,
            [member("c1", 1, Role::Client), member("c2", 1, Role::Client)],
        );
        assert_eq!(view.owner_for_key("k"), None);
        assert_eq!(view.owners().count(), 0);

        let view = view.with(member("m1", 1, Role::Member), 2);
        for k in keys(100) {
            assert_eq!(view.owner_for_key(&k).unwrap().node.id, "m1");
        }
    }

    #[test]
    fn empty_view_has_no_owner() {
        let view = MembershipView::empty();
        assert_eq!(view.epoch(), 0);
        assert!(view.is_empty());
        assert_eq!(view.owner_for_key("k"), None);
    }

    #[test]
    fn only_an_admitted_process_or_a_founder_before_any_view_knows_the_holders() {
        let me = NodeIdentity::new("n3".to_string(), 7);
        assert!(
            MembershipView::empty().knows_holders(&me, true),
            "the founder, first"
        );
        assert!(
            !MembershipView::empty().knows_holders(&me, false),
            "a joiner"
        );
        let view = MembershipView::new(4, members(&["n1", "n2"]));
        assert!(
            !view.knows_holders(&me, false),
            "removed, or not admitted yet"
        );
        assert!(
            !view.knows_holders(&me, true),
            "a founder the others removed"
        );
        let view = view.with(member("n3", 6, Role::Member), 5);
        assert!(
            !view.knows_holders(&me, false),
            "an older generation admitted"
        );
        let view = view.with(member("n3", 7, Role::Member), 6);
        assert!(view.knows_holders(&me, false));
    }

    #[test]
    fn owners_do_not_depend_on_input_order_or_generation() {
        let a = MembershipView::new(1, members(&["n1", "n2", "n3"]));
        let b = MembershipView::new(1, members(&["n3", "n1", "n2"]));
        assert_eq!(a, b);
        // A restart (new generation) keeps the node's keys.
        let c = a.with(member("n2", 9, Role::Member), 2);
        for k in keys(1_000) {
            assert_eq!(
                a.owner_for_key(&k).unwrap().node.id,
                c.owner_for_key(&k).unwrap().node.id
            );
        }
    }

    #[test]
    fn a_restart_counts_as_a_move_of_the_node_s_keys() {
        let a = MembershipView::new(1, members(&["n1", "n2"]));
        let b = a.with(member("n2", 2, Role::Member), 2);
        let keys = keys(1_000);
        let mine = keys.iter().filter(|k| a.is_owner(k, "n2")).count();
        let moved: Vec<_> = a.moved_from(&b, "n2", &keys).collect();
        assert_eq!(moved.len(), mine);
        assert!(moved
            .iter()
            .all(|m| m.to.unwrap().node == NodeIdentity::new("n2", 2)));
        assert_eq!(a.moved_from(&b, "n1", &keys).count(), 0);
    }

    #[test]
    fn duplicate_node_ids_keep_the_highest_generation() {
        let view = MembershipView::new(
            1,
            [
                member("n1", 1, Role::Member),
                member("n1", 3, Role::Member),
                member("n1", 2, Role::Member),
            ],
        );
        assert_eq!(view.len(), 1);
        assert!(view.is_admitted("n1", 3));
        assert!(!view.is_admitted("n1", 2));
    }

    fn id(id: &str, generation: u64) -> NodeIdentity {
        NodeIdentity::new(id.to_string(), generation)
    }

    fn cluster(epoch: u64) -> MembershipView {
        MembershipView::new(
            epoch,
            [
                member("m1", 1, Role::Member),
                member("m2", 1, Role::Member),
                member("c1", 1, Role::Client),
                member("c2", 1, Role::Client),
            ],
        )
    }

    #[test]
    fn pushed_views_are_adopted_only_from_admitted_members_and_only_when_newer() {
        let now = cluster(5);
        let next = now.with(member("m3", 1, Role::Member), 6);
        assert!(now.adopts(&id("m2", 1), Role::Member, true, &next));
        // Not newer.
        assert!(!now.adopts(&id("m2", 1), Role::Member, true, &cluster(5)));
        assert!(!next.adopts(&id("m2", 1), Role::Member, true, &now));
        // Not an admitted member: a stranger, a superseded generation, a
        // client, or a process only the pushed view admits.
        assert!(!now.adopts(&id("rogue", 1), Role::Member, true, &next));
        assert!(!now.adopts(&id("m2", 0), Role::Member, true, &next));
        assert!(!now.adopts(&id("c1", 1), Role::Member, true, &next));
        assert!(!now.adopts(&id("c1", 1), Role::Client, true, &next));
        assert!(!now.adopts(&id("m3", 1), Role::Member, true, &next));
    }

    #[test]
    fn the_first_view_is_taken_from_a_seed_it_admits_as_a_member() {
        let empty = MembershipView::empty();
        let first = cluster(5);
        assert!(empty.adopts(&id("m1", 1), Role::Member, true, &first));
        assert!(!empty.adopts(&id("rogue", 1), Role::Member, true, &first));
        assert!(!empty.adopts(&id("c1", 1), Role::Client, true, &first));
        // Not one of the node's seeds: even a view that admits it is
        // someone's word the node has nothing to check against.
        assert!(!empty.adopts(&id("m1", 1), Role::Member, false, &first));
        // Later views come from admitted members, seeds or not.
        let next = first.with(member("m3", 1, Role::Member), 6);
        assert!(first.adopts(&id("m2", 1), Role::Member, false, &next));
    }

    #[test]
    fn only_admitted_members_relay_and_only_for_clients() {
        let view = cluster(5);
        // Anyone may send its own.
        assert!(view.takes_invalidation(Role::Member, &id("c1", 1), Role::Client, &id("c1", 1)));
        assert!(view.takes_invalidation(Role::Client, &id("x", 1), Role::Member, &id("x", 1)));
        // An admitted member relays a client's, to a client.
        assert!(view.takes_invalidation(Role::Client, &id("m1", 1), Role::Member, &id("c2", 1)));
        assert!(view.takes_invalidation(Role::Client, &id("m1", 1), Role::Member, &id("c9", 1)));
        // ... but not a member's, and not to a member.
        assert!(!view.takes_invalidation(Role::Client, &id("m1", 1), Role::Member, &id("m2", 1)));
        assert!(!view.takes_invalidation(Role::Member, &id("m1", 1), Role::Member, &id("c2", 1)));
        // Nobody unadmitted relays.
        assert!(!view.takes_invalidation(
            Role::Client,
            &id("rogue", 1),
            Role::Member,
            &id("c2", 1)
        ));
        assert!(!view.takes_invalidation(Role::Client, &id("m1", 0), Role::Member, &id("c2", 1)));
        assert!(!view.takes_invalidation(Role::Client, &id("c1", 1), Role::Client, &id("c2", 1)));
    }

    #[test]
    fn a_node_speaks_for_itself_only_at_its_connections_generation() {
        let view = cluster(5);
        assert!(view.takes_invalidation(Role::Client, &id("m1", 1), Role::Member, &id("m1", 1)));
        // An old process holding m1's certificate cannot name a newer
        // generation of m1 (nor a newer one an older).
        assert!(!view.takes_invalidation(
            Role::Client,
            &id("m1", 1),
            Role::Member,
            &id("m1", u64::MAX)
        ));
        assert!(!view.takes_invalidation(Role::Member, &id("c1", 2), Role::Client, &id("c1", 1)));
    }

    #[test]
    fn converts_to_and_from_metadata_snapshots() {
        let view = MembershipView::new(5, members(&["n2", "n1"]));
        let snapshot = view.to_snapshot();
        assert_eq!(snapshot.epoch, 5);
        assert_eq!(snapshot.members[0].node.id, "n1");
        assert_eq!(MembershipView::from(snapshot), view);
    }
}
