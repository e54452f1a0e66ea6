//! What gossip may decide and what needs a node's own authenticated word.
//!
//! chitchat spreads every node's state through every other node, and any
//! certificate holder that gossips can write state in any node's name. So
//! gossip only gives hints: which processes look live or dead. What changes
//! the membership needs the process itself, over a connection whose
//! certificate names it ([`super::handshake`]):
//! - a process is admitted only while it has an open, authenticated
//!   connection with the leader; its role and address come from that
//!   connection, not from gossip;
//! - a process is removed for leaving only on its own announcement (a
//!   `GoAway` it sent over its connection), never on a gossiped flag;
//! - a process the membership removed is never admitted again (its new
//!   generation is); while it still talks to the leader it is pushed the
//!   membership that removed it (see [`to_tell`]);
//! - a process that gossips another cluster incarnation (it bootstrapped a
//!   cluster of its own) is never admitted (see [`is_foreign`]);
//! - a process is removed when gossip's failure detector declares it dead
//!   once that verdict has held on the leader for several reconcile rounds
//!   and a few gossip intervals (see [`Verdicts`]: a leader whose own
//!   tasks stalled, on a loaded machine, sees every heartbeat late at once,
//!   and must not remove the processes it did not hear while it was not
//!   listening), and only if the process has not itself sent gossip or raft
//!   over its own connection to the leader lately: anyone who gossips can
//!   write a node's heartbeat, and a forged heartbeat far ahead of the real
//!   one makes gossip ignore the real ones and declare the node dead, but
//!   nobody can speak over another process's connection;
//! - raft messages are taken only from admitted members, or from a member
//!   the membership removed while it is still in the Raft configuration
//!   (a leaving voter hands over first), under the raft id of the
//!   connection's identity (see [`takes_raft`]);
//! - an invalidation high-water mark, which decides whether a receiver
//!   missed a tail, is taken only in the origin's own word over its own
//!   connection, never from gossip (see [`takes_high_water`]).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use hydracache_protocol::{NodeIdentity, Role};

use super::ownership::MembershipView;
use super::raft::MembershipCommand;
use super::transport::PeerIdentity;

/// What the raft leader knows when it reconciles the membership.
pub(crate) struct Evidence<'a> {
    /// The leader itself: its own word needs no connection.
    pub(crate) me: &'a PeerIdentity,
    /// Processes gossip reports live: `(node id, generation)` (a hint).
    pub(crate) live: &'a [(String, u64)],
    /// Processes gossip's failure detector declared dead (a hint).
    pub(crate) dead: &'a [(String, u64)],
    /// Processes that sent gossip or raft over their own authenticated
    /// connection to this node lately: alive, whatever gossip says.
    pub(crate) spoke: &'a [(String, u64)],
    /// The identities of this node's open, authenticated connections.
    pub(crate) connected: &'a [PeerIdentity],
    /// Processes that announced over their own connection that they leave.
    pub(crate) leaving: &'a HashSet<(String, u64)>,
    /// Processes that gossip another cluster incarnation than the leader's.
    pub(crate) foreign: &'a [(String, u64)],
    /// Live processes the membership removed (or replaced): never admitted
    /// again, told instead (see [`to_tell`]).
    pub(crate) removed: &'a [(String, u64)],
}

/// The addresses of removed processes that still talk to the leader (a
/// member wrongly declared dead while paused or cut off): the leader pushes
/// them the current membership, in which they find themselves removed.
/// Only over their own authenticated connection, so the push reaches the
/// process itself.
pub(crate) fn to_tell(ev: &Evidence<'_>) -> Vec<std::net::SocketAddr> {
    ev.connected
        .iter()
        .filter(|p| {
            ev.removed
                .iter()
                .any(|(id, g)| p.node_id == *id && p.generation == *g)
        })
        .map(|p| p.addr)
        .collect()
}

/// Whether a process gossiping the cluster incarnation `theirs` belongs to
/// another cluster than the one of incarnation `mine`. A process that
/// gossips none yet (0: a joiner before its first snapshot) is not foreign.
pub(crate) fn is_foreign(mine: u64, theirs: u64) -> bool {
    mine != 0 && theirs != 0 && mine != theirs
}

/// What the raft leader proposes to make the membership match the evidence:
/// admissions of live, authenticated, unadmitted processes (unless a newer
/// generation of the node id is admitted); removals of processes that
/// announced they leave or that gossip declares dead (unless they spoke for
/// themselves lately, or are the leader itself).
pub(crate) fn reconcile(view: &MembershipView, ev: &Evidence<'_>) -> Vec<MembershipCommand> {
    let mut commands = Vec::new();
    let is = |p: &PeerIdentity, (id, g): &(String, u64)| p.node_id == *id && p.generation == *g;
    for live in ev.live {
        let (id, generation) = (live.0.as_str(), live.1);
        if ev.leaving.contains(live)
            || ev.foreign.contains(live)
            || ev.removed.contains(live)
            || view.is_admitted(id, generation)
        {
            continue;
        }
        let newer_admitted = view
            .member(id)
            .is_some_and(|m| m.node.generation > generation);
        if newer_admitted {
            continue;
        }
        let word = std::iter::once(ev.me)
            .chain(ev.connected)
            .find(|p| is(p, live));
        if let Some(p) = word {
            commands.push(MembershipCommand::admit(id, generation, p.role, p.addr));
        }
    }
    for m in view.members() {
        let key = (m.node.id.to_string(), m.node.generation);
        let is_me = ev.me.node_id == key.0 && ev.me.generation == key.1;
        let dead = ev.dead.contains(&key) && !ev.spoke.contains(&key) && !is_me;
        if ev.leaving.contains(&key) || dead {
            commands.push(MembershipCommand::remove(key.0, key.1));
        }
    }
    commands
}

/// Reconcile rounds in a row a dead verdict must hold before it removes a
/// process.
pub(crate) const CONFIRM_ROUNDS: u32 = 5;

/// Gossip's dead verdicts as the leader saw them, round after round: a
/// verdict removes its process only once it held in [`CONFIRM_ROUNDS`]
/// consecutive reconcile rounds *and* for at least `hold` of wall-clock
/// time. Rounds alone would confirm in a burst of rounds run back to back
/// after a stall; time alone would confirm in the first round after a
/// stall, before the gossip that queued up meanwhile has been read. A
/// verdict that lapses (the process gossips again) starts over. Holds only
/// the processes gossip reports dead now.
#[derive(Debug)]
pub(crate) struct Verdicts {
    hold: Duration,
    /// (node id, generation) -> (rounds in a row, first seen dead).
    seen: HashMap<(String, u64), (u32, Instant)>,
}

impl Verdicts {
    /// Verdicts that must hold for `hold` (and [`CONFIRM_ROUNDS`] rounds).
    pub(crate) fn new(hold: Duration) -> Self {
        Verdicts {
            hold,
            seen: HashMap::new(),
        }
    }

    /// One reconcile round at `now`, in which gossip reports `dead`: the
    /// processes whose verdict is confirmed.
    pub(crate) fn confirm(&mut self, dead: &[(String, u64)], now: Instant) -> Vec<(String, u64)> {
        self.seen.retain(|k, _| dead.contains(k));
        let mut confirmed = Vec::new();
        for k in dead {
            let (rounds, since) = self.seen.entry(k.clone()).or_insert((0, now));
            *rounds = rounds.saturating_add(1);
            if *rounds >= CONFIRM_ROUNDS && now.saturating_duration_since(*since) >= self.hold {
                confirmed.push(k.clone());
            }
        }
        confirmed
    }

    /// Verdicts held (for tests and size checks).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

/// Whether a raft message from the authenticated `peer` is stepped by the
/// node `me` holding `view`: only from an admitted member, or from a member
/// whose raft id is still in the Raft configuration `me` has applied
/// (`configured`: the membership removed it, and a leader or voter that
/// leaves must still hand over before the conf change that takes it out
/// applies); except that a member Raft has not admitted yet (it waits,
/// with an empty log, for the leader's snapshot) takes them from any
/// member.
pub(crate) fn takes_raft(
    view: &MembershipView,
    me: &NodeIdentity,
    peer: &PeerIdentity,
    configured: bool,
) -> bool {
    if peer.role != Role::Member {
        return false;
    }
    let sender = NodeIdentity::new(peer.node_id.clone(), peer.generation);
    view.is_admitted_member(&sender) || configured || !view.is_admitted(&me.id, me.generation)
}

/// Whether a node in `receiver_role` holding `view` takes the high-water
/// mark of `origin` from the authenticated peer `sender` (in
/// `sender_role`): in the origin's own word at its connection's generation
/// (a mark's generation moves the receive window), or relayed by an admitted
/// member for a client to a client, as that client's invalidations are
/// ([`MembershipView::takes_invalidation`]). Gossip carries no mark: any
/// process that gossips can write any node's state, and a forged mark
/// above the origin's real one would make receivers take numbers they never
/// saw as seen, hiding a later missed tail.
pub(crate) fn takes_high_water(
    view: &MembershipView,
    receiver_role: Role,
    sender: &NodeIdentity,
    sender_role: Role,
    origin: &NodeIdentity,
) -> bool {
    view.takes_invalidation(receiver_role, sender, sender_role, origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydracache_protocol::Member;

    fn peer(id: &str, generation: u64, role: Role, port: u16) -> PeerIdentity {
        PeerIdentity {
            node_id: id.to_string(),
            generation,
            role,
            addr: ([127, 0, 0, 1], port).into(),
        }
    }

    fn view(members: &[(&str, u64, Role)]) -> MembershipView {
        MembershipView::new(
            3,
            members.iter().map(|&(id, generation, role)| Member {
                node: NodeIdentity::new(id, generation),
                role,
                address: ([127, 0, 0, 1], 1).into(),
            }),
        )
    }

    fn ids(v: &[(&str, u64)]) -> Vec<(String, u64)> {
        v.iter().map(|&(i, g)| (i.to_string(), g)).collect()
    }

    #[test]
    fn only_processes_with_an_authenticated_connection_are_admitted_in_their_certified_role() {
        let me = peer("m1", 1, Role::Member, 1);
        let v = view(&[("m1", 1, Role::Member)]);
        // Gossip reports m2 and an invented "ghost"; only m2 is connected,
        // as a client whatever its gossip says.
        let live = ids(&[("m1", 1), ("m2", 1), ("ghost", 1)]);
        let connected = [peer("m2", 1, Role::Client, 2)];
        let ev = Evidence {
            me: &me,
            live: &live,
            dead: &[],
            spoke: &[],
            connected: &connected,
            leaving: &HashSet::new(),
            foreign: &[],
            removed: &[],
        };
        let commands = reconcile(&v, &ev);
        assert_eq!(
            commands,
            [MembershipCommand::admit(
                "m2",
                1,
                Role::Client,
                connected[0].addr
            )]
        );
    }

    #[test]
    fn the_leader_admits_itself_on_its_own_word() {
        let me = peer("m1", 1, Role::Member, 1);
        let live = ids(&[("m1", 1)]);
        let ev = Evidence {
            me: &me,
            live: &live,
            dead: &[],
            spoke: &[],
            connected: &[],
            leaving: &HashSet::new(),
            foreign: &[],
            removed: &[],
        };
        assert_eq!(
            reconcile(&MembershipView::empty(), &ev),
            [MembershipCommand::admit("m1", 1, Role::Member, me.addr)]
        );
    }

    #[test]
    fn a_gossiped_leaving_flag_removes_no_one_but_an_announcement_does() {
        let me = peer("m1", 1, Role::Member, 1);
        let v = view(&[("m1", 1, Role::Member), ("m2", 1, Role::Member)]);
        let live = ids(&[("m1", 1), ("m2", 1)]);
        let quiet = Evidence {
            me: &me,
            live: &live,
            dead: &[],
            spoke: &[],
            connected: &[],
            leaving: &HashSet::new(),
            foreign: &[],
            removed: &[],
        };
        assert!(reconcile(&v, &quiet).is_empty());
        let announced: HashSet<_> = ids(&[("m2", 1)]).into_iter().collect();
        let ev = Evidence {
            leaving: &announced,
            ..quiet
        };
        assert_eq!(reconcile(&v, &ev), [MembershipCommand::remove("m2", 1)]);
    }

    #[test]
    fn dead_processes_are_removed_and_superseded_generations_not_readmitted() {
        let me = peer("m1", 1, Role::Member, 1);
        let v = view(&[("m1", 1, Role::Member), ("m2", 5, Role::Member)]);
        let live = ids(&[("m1", 1), ("m2", 4)]);
        let dead = ids(&[("m2", 5)]);
        let connected = [peer("m2", 4, Role::Member, 2)];
        let ev = Evidence {
            me: &me,
            live: &live,
            dead: &dead,
            spoke: &[],
            connected: &connected,
            leaving: &HashSet::new(),
            foreign: &[],
            removed: &[],
        };
        assert_eq!(reconcile(&v, &ev), [MembershipCommand::remove("m2", 5)]);
    }

    #[test]
    fn a_process_that_speaks_for_itself_is_not_removed_on_a_dead_verdict() {
        let me = peer("m1", 1, Role::Member, 1);
        let v = view(&[
            ("m1", 1, Role::Member),
            ("m2", 5, Role::Member),
            ("c", 2, Role::Client),
        ]);
        // A forged heartbeat far ahead of the real ones makes gossip
        // declare m2 and c dead (and the leader itself, in its peers'
        // eyes); m2 still sends raft over its own connection.
        let dead = ids(&[("m2", 5), ("c", 2), ("m1", 1)]);
        let spoke = ids(&[("m2", 5)]);
        let ev = Evidence {
            me: &me,
            live: &[],
            dead: &dead,
            spoke: &spoke,
            connected: &[],
            leaving: &HashSet::new(),
            foreign: &[],
            removed: &[],
        };
        assert_eq!(reconcile(&v, &ev), [MembershipCommand::remove("c", 2)]);
    }

    #[test]
    fn a_dead_verdict_removes_only_once_it_held_for_rounds_and_time() {
        let hold = Duration::from_millis(300);
        let mut v = Verdicts::new(hold);
        let t0 = Instant::now();
        let dead = ids(&[("m2", 1)]);
        let round = Duration::from_millis(100);
        // Held for four rounds: not yet.
        for i in 0..CONFIRM_ROUNDS - 1 {
            assert!(v.confirm(&dead, t0 + round * i).is_empty());
        }
        // The fifth round, 500 ms after the first: confirmed.
        assert_eq!(v.confirm(&dead, t0 + round * CONFIRM_ROUNDS), dead);
    }

    #[test]
    fn a_burst_of_rounds_after_a_stall_confirms_nothing() {
        let mut v = Verdicts::new(Duration::from_millis(300));
        let t0 = Instant::now();
        let dead = ids(&[("m2", 1), ("m3", 1), ("m4", 1)]);
        // The leader stalled: every heartbeat looks late, and the rounds it
        // missed run back to back, a millisecond apart.
        for i in 0..10 {
            assert!(v.confirm(&dead, t0 + Duration::from_millis(i)).is_empty());
        }
        // The gossip that queued up meanwhile is read: they are live again,
        // and a later verdict starts over.
        assert!(v.confirm(&[], t0 + Duration::from_millis(20)).is_empty());
        assert_eq!(v.len(), 0);
        let later = t0 + Duration::from_secs(5);
        assert!(v.confirm(&dead[..1], later).is_empty());
    }

    #[test]
    fn one_round_after_a_long_stall_confirms_nothing() {
        let mut v = Verdicts::new(Duration::from_millis(300));
        let t0 = Instant::now();
        let dead = ids(&[("m2", 1)]);
        assert!(v.confirm(&dead, t0).is_empty());
        // The next round comes 10 s later (the leader was starved): time
        // alone does not confirm.
        assert!(v.confirm(&dead, t0 + Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn a_lapsed_verdict_starts_over() {
        let mut v = Verdicts::new(Duration::ZERO);
        let t0 = Instant::now();
        let dead = ids(&[("m2", 1)]);
        for i in 0..CONFIRM_ROUNDS - 1 {
            assert!(v
                .confirm(&dead, t0 + Duration::from_millis(u64::from(i)))
                .is_empty());
        }
        assert!(v.confirm(&[], t0).is_empty(), "it gossiped again");
        for i in 0..CONFIRM_ROUNDS - 1 {
            assert!(v
                .confirm(&dead, t0 + Duration::from_millis(u64::from(i)))
                .is_empty());
        }
        assert_eq!(v.confirm(&dead, t0).len(), 1);
    }

    #[test]
    fn a_process_of_another_cluster_incarnation_is_never_admitted() {
        let me = peer("m1", 1, Role::Member, 1);
        let v = view(&[("m1", 1, Role::Member), ("m2", 1, Role::Member)]);
        // The founder m0 restarted with its bootstrap flag set: it leads a
        // cluster of its own and gossips that incarnation.
        let live = ids(&[("m1", 1), ("m2", 1), ("m0", 9)]);
        let connected = [peer("m0", 9, Role::Member, 3)];
        let foreign = ids(&[("m0", 9)]);
        let ev = Evidence {
            me: &me,
            live: &live,
            dead: &[],
            spoke: &[],
            connected: &connected,
            leaving: &HashSet::new(),
            foreign: &foreign,
            removed: &[],
        };
        assert!(reconcile(&v, &ev).is_empty());
        assert!(is_foreign(7, 8));
        assert!(!is_foreign(7, 7));
        assert!(!is_foreign(7, 0), "a joiner before its first snapshot");
        assert!(!is_foreign(0, 8), "a leader knows its incarnation");
    }

    #[test]
    fn a_removed_process_is_told_not_readmitted() {
        let me = peer("m1", 1, Role::Member, 1);
        let v = view(&[("m1", 1, Role::Member), ("m2", 1, Role::Member)]);
        // m3 was paused past the failure timeout and removed; it is back,
        // live and connected, at the same generation.
        let live = ids(&[("m1", 1), ("m2", 1), ("m3", 4)]);
        let connected = [peer("m3", 4, Role::Member, 3)];
        let removed = ids(&[("m3", 4)]);
        let ev = Evidence {
            me: &me,
            live: &live,
            dead: &[],
            spoke: &[],
            connected: &connected,
            leaving: &HashSet::new(),
            foreign: &[],
            removed: &removed,
        };
        assert!(reconcile(&v, &ev).is_empty(), "no admission to re-propose");
        assert_eq!(to_tell(&ev), [connected[0].addr]);
        // A removed process with no connection of its own is not told.
        let ev = Evidence {
            connected: &[],
            ..ev
        };
        assert!(to_tell(&ev).is_empty());
    }

    #[test]
    fn a_high_water_mark_is_taken_only_in_its_origin_s_own_word() {
        let v = view(&[
            ("m1", 3, Role::Member),
            ("m2", 1, Role::Member),
            ("c", 1, Role::Client),
        ]);
        let id = NodeIdentity::new;
        // The origin itself, member or client, to anyone, at the
        // generation of its connection only.
        assert!(!takes_high_water(
            &v,
            Role::Member,
            &id("m1", 3),
            Role::Member,
            &id("m1", u64::MAX)
        ));
        assert!(takes_high_water(
            &v,
            Role::Member,
            &id("m1", 3),
            Role::Member,
            &id("m1", 3)
        ));
        assert!(takes_high_water(
            &v,
            Role::Member,
            &id("c", 1),
            Role::Client,
            &id("c", 1)
        ));
        // Another member, even an admitted one, cannot speak for a member.
        assert!(!takes_high_water(
            &v,
            Role::Member,
            &id("m2", 1),
            Role::Member,
            &id("m1", 3)
        ));
        assert!(!takes_high_water(
            &v,
            Role::Client,
            &id("m2", 1),
            Role::Member,
            &id("m1", 3)
        ));
        // An unadmitted member certificate speaks for nobody else.
        assert!(!takes_high_water(
            &v,
            Role::Client,
            &id("rogue", 1),
            Role::Member,
            &id("c", 1)
        ));
        // An admitted member relays a client's mark to a client, as it
        // relays that client's invalidations; a client relays nothing.
        assert!(takes_high_water(
            &v,
            Role::Client,
            &id("m2", 1),
            Role::Member,
            &id("c", 1)
        ));
        assert!(!takes_high_water(
            &v,
            Role::Member,
            &id("m2", 1),
            Role::Member,
            &id("c", 1)
        ));
        assert!(!takes_high_water(
            &v,
            Role::Client,
            &id("c", 1),
            Role::Client,
            &id("c9", 1)
        ));
    }

    #[test]
    fn raft_comes_only_from_admitted_or_still_configured_members_unless_this_node_awaits_admission()
    {
        let me = NodeIdentity::new("m1", 1);
        let v = view(&[
            ("m1", 1, Role::Member),
            ("m2", 1, Role::Member),
            ("c", 1, Role::Client),
        ]);
        assert!(takes_raft(&v, &me, &peer("m2", 1, Role::Member, 2), false));
        assert!(!takes_raft(&v, &me, &peer("m3", 1, Role::Member, 3), false));
        assert!(!takes_raft(&v, &me, &peer("m2", 0, Role::Member, 2), false));
        assert!(!takes_raft(&v, &me, &peer("c", 1, Role::Client, 4), false));
        // A removed member still in the Raft configuration hands over.
        assert!(takes_raft(&v, &me, &peer("m3", 1, Role::Member, 3), true));
        assert!(!takes_raft(&v, &me, &peer("c", 1, Role::Client, 4), true));
        // Before its admission a joiner hears from whoever leads.
        let joiner = NodeIdentity::new("m9", 1);
        assert!(takes_raft(
            &v,
            &joiner,
            &peer("m3", 1, Role::Member, 3),
            false
        ));
        assert!(!takes_raft(
            &v,
            &joiner,
            &peer("c", 1, Role::Client, 4),
            false
        ));
    }
}
