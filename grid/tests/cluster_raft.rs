//! Membership consensus over an in-memory network: several `RaftDriver`s in
//! one process, messages delivered (or dropped) by the test. No sockets, no
//! sleeping; every loop is bounded by a tick count.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use bytes::Bytes;
use hydracache::cluster::{
    decode_message, encode_message, raft_id, Applied, DecodeError, Ignored, MembershipCommand,
    MembershipView, Outcome, ProposeError, RaftConfig, RaftDriver, StepError,
    DEFAULT_MAX_RAFT_MESSAGE_BYTES,
};
use hydracache_protocol::{NodeIdentity, Role};

/// Ticks within which an election or a catch-up must finish. An election
/// takes at most 2 x 10 ticks; this leaves room for a few rounds.
const PATIENCE: usize = 200;

fn address(name: &str) -> SocketAddr {
    let n: u16 = name
        .trim_start_matches(|c: char| c.is_alphabetic())
        .parse()
        .unwrap_or(0);
    SocketAddr::from(([127, 0, 0, 1], 7400 + n))
}

/// A message as a node sends it: its cluster incarnation (0: not known
/// yet, taken by anyone), then the message.
fn framed(incarnation: u64, m: &raft::eraftpb::Message) -> Bytes {
    let mut bytes = incarnation.to_le_bytes().to_vec();
    bytes.extend_from_slice(&encode_message(m));
    Bytes::from(bytes)
}

fn admit(name: &str, generation: u64) -> MembershipCommand {
    MembershipCommand::admit(name, generation, Role::Member, address(name))
}

/// The cluster under test and the wire between its nodes.
struct Net {
    nodes: BTreeMap<u64, RaftDriver>,
    /// Nodes whose messages, in and out, are dropped.
    isolated: BTreeSet<u64>,
    /// Everything each node applied, in order.
    applied: BTreeMap<u64, Vec<Applied>>,
}

impl Net {
    /// Seeds `n1..=nN` at generation 1, `voters` kept.
    fn bootstrap(n: usize, voters: usize) -> Net {
        let seeds: Vec<NodeIdentity> = (1..=n)
            .map(|i| NodeIdentity::new(format!("n{i}"), 1))
            .collect();
        let config = RaftConfig {
            voters,
            ..RaftConfig::default()
        };
        let nodes = seeds
            .iter()
            .map(|me| {
                let d = RaftDriver::bootstrap(me.clone(), &seeds, config.clone()).unwrap();
                (d.id(), d)
            })
            .collect();
        Net {
            nodes,
            isolated: BTreeSet::new(),
            applied: BTreeMap::new(),
        }
    }

    /// Starts a process that joins the running cluster.
    fn start_joiner(&mut self, name: &str, generation: u64, voters: usize) -> u64 {
        let config = RaftConfig {
            voters,
            ..RaftConfig::default()
        };
        let d = RaftDriver::join(NodeIdentity::new(name, generation), config).unwrap();
        let id = d.id();
        assert!(self.nodes.insert(id, d).is_none());
        id
    }

    fn node(&self, name: &str, generation: u64) -> &RaftDriver {
        &self.nodes[&raft_id(name, generation)]
    }

    /// Nodes that are up and connected.
    fn live(&self) -> impl Iterator<Item = (&u64, &RaftDriver)> {
        self.nodes
            .iter()
            .filter(|(id, _)| !self.isolated.contains(id))
    }

    /// Runs ready on every node and delivers what it sends, until the wire
    /// is quiet (bounded).
    fn pump(&mut self) {
        for _ in 0..50 {
            let mut wire = Vec::new();
            for (&id, d) in self.nodes.iter_mut() {
                let out = d.ready().unwrap();
                self.applied.entry(id).or_default().extend(out.applied);
                wire.extend(out.messages.into_iter().map(|m| (id, m)));
            }
            if wire.is_empty() {
                return;
            }
            for (from, m) in wire {
                if self.isolated.contains(&from) || self.isolated.contains(&m.to) {
                    continue;
                }
                if let Some(d) = self.nodes.get_mut(&m.to) {
                    // Raft refuses some messages in passing (a response from
                    // a peer it no longer tracks); that is not a failure.
                    match d.receive(from, &m.bytes) {
                        Ok(()) | Err(StepError::Raft(_)) | Err(StepError::Retired { .. }) => {}
                        Err(e) => panic!("{from} -> {}: {e}", m.to),
                    }
                }
            }
        }
    }

    fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for d in self.nodes.values_mut() {
                d.tick();
            }
            self.pump();
        }
    }

    /// Ticks until `done` holds; false if it did not within `max` ticks.
    fn tick_until(&mut self, max: usize, mut done: impl FnMut(&Net) -> bool) -> bool {
        for _ in 0..max {
            if done(self) {
                return true;
            }
            self.tick(1);
        }
        done(self)
    }

    /// The single connected leader, if the connected nodes agree on one.
    fn leader(&self) -> Option<u64> {
        let leaders: Vec<u64> = self
            .live()
            .filter(|(_, d)| d.is_leader())
            .map(|(&id, _)| id)
            .collect();
        match leaders[..] {
            [one] => Some(one),
            _ => None,
        }
    }

    fn wait_for_leader(&mut self) -> u64 {
        assert!(
            self.tick_until(PATIENCE, |n| n.leader().is_some()),
            "no leader"
        );
        self.leader().unwrap()
    }

    /// Proposes on the leader and waits until every connected node has
    /// applied it; returns the leader's outcome.
    fn commit(&mut self, command: MembershipCommand) -> Outcome {
        let leader = self.wait_for_leader();
        let seen = self.applied.get(&leader).map_or(0, Vec::len);
        self.nodes
            .get_mut(&leader)
            .unwrap()
            .propose(command.clone())
            .unwrap();
        let committed = |n: &Net| {
            n.applied
                .get(&leader)
                .and_then(|log| log[seen..].iter().find(|a| a.command == command).cloned())
        };
        // Every node, including one that caught up by snapshot instead of
        // replaying the entry, has applied past it.
        let done = |n: &Net| {
            committed(n).is_some_and(|a| n.live().all(|(_, d)| d.applied_index() >= a.index))
        };
        assert!(
            self.tick_until(PATIENCE, done),
            "{command:?} did not commit"
        );
        committed(self).unwrap().outcome
    }

    /// Every connected node has the same view; returns it.
    fn agreed_view(&self) -> MembershipView {
        let mut views = self.live().map(|(_, d)| d.view().clone());
        let first = views.next().unwrap();
        for v in views {
            assert_eq!(v, first);
        }
        first
    }

    fn converged(&self) -> bool {
        let mut views = self.live().map(|(_, d)| d.view());
        let first = views.next().unwrap();
        views.all(|v| v == first)
    }
}

fn names(view: &MembershipView) -> Vec<(String, u64)> {
    view.members()
        .iter()
        .map(|m| (m.node.id.to_string(), m.node.generation))
        .collect()
}

fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort_unstable();
    ids
}

/// A cluster of `n` seeds that elected a leader and admitted every seed.
fn admitted_cluster(n: usize, voters: usize) -> Net {
    let mut net = Net::bootstrap(n, voters);
    for i in 1..=n {
        assert_eq!(
            net.commit(admit(&format!("n{i}"), 1)),
            Outcome::Admitted { epoch: i as u64 }
        );
    }
    net
}

#[test]
fn three_seeds_elect_one_leader_that_everyone_follows() {
    let mut net = Net::bootstrap(3, 3);
    let leader = net.wait_for_leader();
    assert!(net.tick_until(PATIENCE, |n| n
        .nodes
        .values()
        .all(|d| d.leader_id() == Some(leader))));
    let term = net.nodes[&leader].term();
    // A quiet cluster keeps its leader.
    net.tick(100);
    assert_eq!(net.leader(), Some(leader));
    assert_eq!(net.nodes[&leader].term(), term);
    assert_eq!(net.nodes[&leader].voters().len(), 3);
}

#[test]
fn admissions_commit_on_every_node_at_the_same_epoch_with_three_nodes() {
    let net = admitted_cluster(3, 3);
    let view = net.agreed_view();
    assert_eq!(view.epoch(), 3);
    assert_eq!(
        names(&view),
        vec![("n1".into(), 1), ("n2".into(), 1), ("n3".into(), 1)]
    );
    // Every node applied the same commands with the same outcomes, in order.
    let logs: Vec<_> = net.applied.values().collect();
    assert!(logs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn admissions_commit_on_every_node_at_the_same_epoch_with_five_nodes() {
    let mut net = admitted_cluster(5, 5);
    // A client is admitted too; it is not a raft peer and owns nothing.
    let client = MembershipCommand::admit("web1", 1, Role::Client, address("web1"));
    assert_eq!(net.commit(client), Outcome::Admitted { epoch: 6 });
    let view = net.agreed_view();
    assert_eq!(view.epoch(), 6);
    assert_eq!(view.len(), 6);
    assert_eq!(view.owners().count(), 5);
    let leader = net.leader().unwrap();
    assert_eq!(net.nodes[&leader].voters().len(), 5);
    assert!(net.nodes[&leader].learners().is_empty());
    // Every node agrees on every key's owner.
    for (_, d) in net.live() {
        for k in ["user:1", "user:2", "order:99"] {
            assert_eq!(d.view().owner_for_key(k), view.owner_for_key(k));
        }
    }
}

#[test]
fn a_follower_refuses_proposals_with_a_leader_hint() {
    let mut net = Net::bootstrap(3, 3);
    let leader = net.wait_for_leader();
    let follower = *net.nodes.keys().find(|&&id| id != leader).unwrap();
    // Before the leader is admitted the hint has its raft id only.
    match net
        .nodes
        .get_mut(&follower)
        .unwrap()
        .propose(admit("n9", 1))
    {
        Err(ProposeError::NotLeader {
            leader_id,
            leader: None,
        }) => assert_eq!(leader_id, Some(leader)),
        other => panic!("{other:?}"),
    }
    let leader_name = net.nodes[&leader].identity().clone();
    net.commit(admit(&leader_name.id, leader_name.generation));
    match net
        .nodes
        .get_mut(&follower)
        .unwrap()
        .propose(admit("n9", 1))
    {
        Err(ProposeError::NotLeader {
            leader_id,
            leader: Some(member),
        }) => {
            assert_eq!(leader_id, Some(leader));
            assert_eq!(member.node, leader_name);
            assert_eq!(member.address, address(&leader_name.id));
        }
        other => panic!("{other:?}"),
    }
    // Nothing reached the log.
    net.tick(20);
    assert_eq!(net.agreed_view().epoch(), 1);
}

#[test]
fn invalid_commands_are_refused_before_the_log() {
    let mut net = Net::bootstrap(1, 1);
    let leader = net.wait_for_leader();
    let d = net.nodes.get_mut(&leader).unwrap();
    assert!(matches!(
        d.propose(MembershipCommand::remove("", 1)),
        Err(ProposeError::Invalid(_))
    ));
}

#[test]
fn after_the_leader_crashes_a_new_leader_is_elected_and_admissions_continue() {
    let mut net = admitted_cluster(5, 5);
    let old = net.leader().unwrap();
    net.isolated.insert(old);
    let new = net.wait_for_leader();
    assert_ne!(new, old);
    let client = MembershipCommand::admit("web1", 1, Role::Client, address("web1"));
    assert_eq!(net.commit(client), Outcome::Admitted { epoch: 6 });
    assert_eq!(net.agreed_view().epoch(), 6);
    // The old leader lost its quorum: it steps down, having seen nothing.
    assert!(net.tick_until(PATIENCE, |n| !n.nodes[&old].is_leader()));
    assert_eq!(net.nodes[&old].view().epoch(), 5);
    // Reconnected, it follows the new leader and catches up.
    net.isolated.clear();
    assert!(net.tick_until(PATIENCE, |n| n.converged()));
    assert_eq!(net.agreed_view().epoch(), 6);
    assert_eq!(net.leader(), Some(new));
}

#[test]
fn a_partitioned_minority_commits_nothing() {
    let mut net = admitted_cluster(5, 5);
    let old = net.leader().unwrap();
    let follower = *net.nodes.keys().find(|&&id| id != old).unwrap();
    // The old leader and one follower on one side, three nodes on the other.
    net.isolated.extend([old, follower]);
    // The old leader still takes the proposal, but cannot commit it.
    let lost = admit("n8", 1);
    net.nodes
        .get_mut(&old)
        .unwrap()
        .propose(lost.clone())
        .unwrap();
    let new = net.wait_for_leader();
    assert_ne!(new, old);
    assert_eq!(net.commit(admit("n6", 1)), Outcome::Admitted { epoch: 6 });
    net.isolated.clear();
    assert!(net.tick_until(PATIENCE, |n| n.converged()));
    let view = net.agreed_view();
    assert_eq!(view.epoch(), 6);
    assert!(view.member("n8").is_none());
    for log in net.applied.values() {
        assert!(log.iter().all(|a| a.command != lost));
    }
}

#[test]
fn the_log_is_compacted_as_clients_churn_and_a_late_joiner_still_catches_up() {
    let mut net = admitted_cluster(3, 3);
    for i in 0..200 {
        let id = format!("web{i}");
        let client = MembershipCommand::admit(id.as_str(), 1, Role::Client, address(&id));
        assert!(matches!(net.commit(client), Outcome::Admitted { .. }));
        assert!(matches!(
            net.commit(MembershipCommand::remove(id.as_str(), 1)),
            Outcome::Removed { .. }
        ));
    }
    assert!(net.tick_until(PATIENCE, |n| n.converged()));
    let leader = net.leader().unwrap();
    let d = &net.nodes[&leader];
    assert!(
        d.first_log_index() > 100,
        "the log before index {} is still kept",
        d.first_log_index()
    );
    assert!(d.applied_index() - d.first_log_index() <= 300);
    // A node joining now cannot replay the log from the start.
    let joiner = net.start_joiner("n4", 1, 3);
    assert!(matches!(
        net.commit(admit("n4", 1)),
        Outcome::Admitted { .. }
    ));
    assert!(net.tick_until(PATIENCE, |n| n.converged()));
    assert_eq!(net.nodes[&joiner].view(), net.nodes[&leader].view());
    assert_eq!(net.agreed_view().len(), 4);
}

#[test]
fn a_joining_member_becomes_a_learner_and_catches_up_by_snapshot() {
    let mut net = admitted_cluster(3, 3);
    let joiner = net.start_joiner("n4", 1, 3);
    assert_eq!(net.commit(admit("n4", 1)), Outcome::Admitted { epoch: 4 });
    let leader = net.leader().unwrap();
    assert!(
        net.tick_until(PATIENCE, |n| n.nodes[&leader].learners() == vec![joiner]
            && n.nodes[&joiner].view().epoch() == 4)
    );
    // The joiner got the whole membership in the snapshot, not by replaying.
    assert_eq!(net.agreed_view(), net.nodes[&leader].view().clone());
    assert!(net.nodes[&joiner].learners().contains(&joiner));
    // And it follows later commands by the log.
    assert_eq!(net.commit(admit("n5", 1)), Outcome::Admitted { epoch: 5 });
    assert!(net.tick_until(PATIENCE, |n| n.converged()));
    assert_eq!(net.nodes[&joiner].view().epoch(), 5);
    assert!(net.applied[&joiner]
        .iter()
        .any(|a| a.command == admit("n5", 1)));
    // Three voters are kept; the rest are learners.
    assert_eq!(net.nodes[&leader].voters().len(), 3);
}

#[test]
fn removing_a_member_advances_the_epoch_and_a_learner_takes_its_vote() {
    let mut net = admitted_cluster(3, 3);
    let joiner = net.start_joiner("n4", 1, 3);
    net.commit(admit("n4", 1));
    let leader = net.leader().unwrap();
    assert!(net.tick_until(PATIENCE, |n| n.nodes[&leader].learners() == vec![joiner]));
    // A follower that is a voter leaves.
    let gone = *net.nodes[&leader]
        .voters()
        .iter()
        .find(|&&v| v != leader)
        .unwrap();
    let gone_name = net.nodes[&gone].identity().clone();
    net.nodes.remove(&gone);
    assert_eq!(
        net.commit(MembershipCommand::remove(
            gone_name.id.to_string(),
            gone_name.generation
        )),
        Outcome::Removed { epoch: 5 }
    );
    let view = net.agreed_view();
    assert_eq!(view.epoch(), 5);
    assert!(view.member(&gone_name.id).is_none());
    // The leader removes its raft id and promotes the learner.
    let mut expected: Vec<u64> = net.nodes.keys().copied().collect();
    expected.sort_unstable();
    assert!(net.tick_until(PATIENCE, |n| n
        .live()
        .all(|(_, d)| d.voters() == expected && d.learners().is_empty())));
    // The new voter set works: a new leader can still be elected.
    let old = net.leader().unwrap();
    net.isolated.insert(old);
    let new = net.wait_for_leader();
    assert_ne!(new, old);
    let client = MembershipCommand::admit("web1", 1, Role::Client, address("web1"));
    assert_eq!(net.commit(client), Outcome::Admitted { epoch: 6 });
}

/// Tells every node which raft ids gossip would report live.
fn set_live(net: &mut Net, live: &[u64]) {
    for d in net.nodes.values_mut() {
        d.set_live(live.iter().copied());
    }
}

/// A founder alone, then members joining one at a time: the voters go
/// from one to three in one conf change, never through two (two voters
/// stall if either dies). A voter that dies right after its promotion is
/// replaced by a live learner; a leader is still elected after that, and
/// the membership keeps changing.
#[test]
fn voters_go_from_one_to_three_at_once_and_a_promoted_voter_that_dies_is_replaced() {
    let mut net = Net::bootstrap(1, 3);
    net.commit(admit("n1", 1));
    let founder = net.leader().unwrap();
    let n2 = net.start_joiner("n2", 1, 3);
    net.commit(admit("n2", 1));
    assert!(net.tick_until(PATIENCE, |n| n.nodes[&founder].learners() == vec![n2]));
    // A caught-up learner alone is not promoted.
    net.tick(PATIENCE);
    assert_eq!(net.nodes[&founder].voters(), vec![founder]);
    assert_eq!(net.nodes[&founder].learners(), vec![n2]);

    let n3 = net.start_joiner("n3", 1, 3);
    net.commit(admit("n3", 1));
    let three = sorted(vec![founder, n2, n3]);
    let mut seen = BTreeSet::new();
    assert!(net.tick_until(PATIENCE, |n| {
        seen.insert(n.nodes[&founder].voters().len());
        n.live().all(|(_, d)| d.voters() == three)
    }));
    assert!(!seen.contains(&2), "voter counts seen: {seen:?}");

    // n3 dies right after its promotion; gossip says so.
    net.isolated.insert(n3);
    let n4 = net.start_joiner("n4", 1, 3);
    set_live(&mut net, &[founder, n2, n4]);
    net.commit(admit("n4", 1));
    let replaced = sorted(vec![founder, n2, n4]);
    assert!(net.tick_until(PATIENCE, |n| n
        .live()
        .all(|(_, d)| d.voters() == replaced && d.learners() == vec![n3])));

    // The leader dies too: the two live voters elect a new one, which
    // removes the dead and admits a new member.
    net.isolated.insert(founder);
    let new = net.wait_for_leader();
    assert!(new == n2 || new == n4);
    assert!(matches!(
        net.commit(MembershipCommand::remove("n3", 1)),
        Outcome::Removed { .. }
    ));
    assert_eq!(net.commit(admit("n5", 1)), Outcome::Admitted { epoch: 6 });
    assert_eq!(net.agreed_view().len(), 4);
}

#[test]
fn removing_the_leader_hands_leadership_over() {
    let mut net = admitted_cluster(3, 3);
    let leader = net.leader().unwrap();
    let name = net.nodes[&leader].identity().clone();
    assert_eq!(
        net.commit(MembershipCommand::remove(
            name.id.to_string(),
            name.generation
        )),
        Outcome::Removed { epoch: 4 }
    );
    // Another node leads and the old leader is no longer a raft peer.
    assert!(net.tick_until(PATIENCE, |n| {
        n.leader()
            .is_some_and(|l| l != leader && !n.nodes[&l].voters().contains(&leader))
    }));
    // Two voters would stall if either died: one keeps the vote, the
    // other becomes a learner.
    assert!(net.tick_until(PATIENCE, |n| {
        n.leader()
            .is_some_and(|l| n.nodes[&l].voters() == vec![l] && n.nodes[&l].learners().len() == 1)
    }));
    // Stop the removed process; the remaining two still commit.
    net.nodes.remove(&leader);
    net.commit(admit("n7", 1));
    assert_eq!(net.agreed_view().epoch(), 5);
}

/// A grid of two: the founder votes alone and its process leaves. The
/// membership removes it first; it must still promote the other member,
/// hand leadership over, and be taken out of the configuration by its
/// successor. Removed first and gone, it would leave a learner that can
/// never elect a leader.
#[test]
fn the_only_voter_that_leaves_hands_over_to_a_learner_before_it_goes() {
    let mut net = Net::bootstrap(1, 3);
    net.commit(admit("n1", 1));
    let founder = net.leader().unwrap();
    let n2 = net.start_joiner("n2", 1, 3);
    net.commit(admit("n2", 1));
    assert!(net.tick_until(PATIENCE, |n| n.nodes[&founder].learners() == vec![n2]));

    assert!(matches!(
        net.commit(MembershipCommand::remove("n1", 1)),
        Outcome::Removed { .. }
    ));
    // n2 leads, votes alone, and the founder is out of every configuration.
    assert!(
        net.tick_until(PATIENCE, |n| {
            n.live()
                .all(|(_, d)| d.voters() == vec![n2] && d.learners().is_empty())
                && n.nodes[&n2].is_leader()
        }),
        "no hand-over: {:?}",
        net.nodes.values().collect::<Vec<_>>()
    );
    // Its process stops; n2 alone still changes the membership.
    net.nodes.remove(&founder);
    assert!(matches!(
        net.commit(admit("n3", 1)),
        Outcome::Admitted { .. }
    ));
    assert_eq!(
        names(&net.agreed_view()),
        [("n2".into(), 1), ("n3".into(), 1)]
    );
}

/// A leader's record of which peers gossip reports live holds for the term
/// it was recorded in: a node that leads again, after another leader gave
/// new members seats, does not demote them on its record from before.
#[test]
fn a_leader_that_leads_again_ignores_liveness_it_recorded_in_an_earlier_term() {
    // Three seeds and room for five voters.
    let mut net = admitted_cluster(3, 5);
    let first = net.leader().unwrap();
    let seeds: Vec<u64> = net.nodes.keys().copied().collect();
    net.nodes.get_mut(&first).unwrap().set_live(seeds.clone());

    // Leadership moves away from `first`, which then follows.
    net.isolated.insert(first);
    let second = net.wait_for_leader();
    net.isolated.remove(&first);
    assert!(net.tick_until(PATIENCE, |n| n.nodes[&first].leader_id() == Some(second)));
    // Two members join; the second leader gives them the free seats.
    let n4 = net.start_joiner("n4", 1, 5);
    net.commit(admit("n4", 1));
    let n5 = net.start_joiner("n5", 1, 5);
    net.commit(admit("n5", 1));
    let five = sorted(seeds.iter().copied().chain([n4, n5]).collect());
    assert!(net.tick_until(PATIENCE, |n| n.live().all(|(_, d)| d.voters() == five)));

    // The second leader hands over to `first`, which leads again, in a
    // later term, with its record from the first one (n4 and n5 are not
    // in it).
    let mut timeout_now = raft::eraftpb::Message::default();
    timeout_now.set_msg_type(raft::eraftpb::MessageType::MsgTimeoutNow);
    timeout_now.from = second;
    timeout_now.to = first;
    timeout_now.term = net.nodes[&second].term();
    let incarnation = net.nodes[&second].incarnation();
    net.nodes
        .get_mut(&first)
        .unwrap()
        .receive(second, &framed(incarnation, &timeout_now))
        .unwrap();
    assert!(net.tick_until(PATIENCE, |n| n.leader() == Some(first)));
    net.tick(PATIENCE);
    assert_eq!(net.leader(), Some(first));
    assert!(
        net.live().all(|(_, d)| d.voters() == five),
        "n4 or n5 lost its seat: {:?}",
        net.nodes[&first].voters()
    );
}

#[test]
fn a_restarted_node_rejoins_with_a_new_generation_and_its_old_generation_is_ignored() {
    let mut net = admitted_cluster(3, 3);
    let leader = net.leader().unwrap();
    let old = *net.nodes.keys().find(|&&id| id != leader).unwrap();
    let name = net.nodes[&old].identity().id.to_string();
    // The process dies; it comes back with a new generation and no state.
    net.nodes.remove(&old);
    let new = net.start_joiner(&name, 2, 3);
    assert_ne!(new, old);
    assert_eq!(
        net.commit(admit(&name, 2)),
        Outcome::Rejoined {
            previous_generation: 1,
            epoch: 4
        }
    );
    // The old raft id is removed, the new one joins and gets the vote back.
    let mut expected: Vec<u64> = net.nodes.keys().copied().collect();
    expected.sort_unstable();
    assert!(net.tick_until(PATIENCE, |n| n.converged()
        && n.live()
            .all(|(_, d)| d.voters() == expected && d.learners().is_empty())));
    let view = net.agreed_view();
    assert!(view.is_admitted(&name, 2));
    assert!(!view.is_admitted(&name, 1));
    assert_eq!(net.node(&name, 2).view().epoch(), 4);

    // Commands about the old generation change nothing, on every node.
    let stale = Outcome::Ignored(Ignored::StaleGeneration { current: 2 });
    assert_eq!(net.commit(admit(&name, 1)), stale);
    assert_eq!(
        net.commit(MembershipCommand::remove(name.clone(), 1)),
        stale
    );
    assert_eq!(net.agreed_view(), view);
    let remove_old = MembershipCommand::remove(name.clone(), 1);
    for log in net.applied.values() {
        for a in log.iter().filter(|a| a.command == remove_old) {
            assert_eq!(a.outcome, stale);
        }
    }

    // Raft messages from the old generation are refused.
    let leader = net.leader().unwrap();
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeatResponse);
    m.from = old;
    m.to = leader;
    let err = net
        .nodes
        .get_mut(&leader)
        .unwrap()
        .receive(old, &framed(0, &m))
        .unwrap_err();
    assert!(
        matches!(err, StepError::Retired { from } if from == old),
        "{err}"
    );

    // The new generation works as a voter: it can lead.
    net.isolated.insert(leader);
    assert!(net.tick_until(PATIENCE, |n| n.leader().is_some()));
    net.commit(admit("n9", 1));
    assert!(net.node(&name, 2).view().member("n9").is_some());
}

#[test]
fn a_seed_that_restarts_before_admission_is_replaced() {
    let mut net = Net::bootstrap(3, 3);
    net.wait_for_leader();
    let leader = net.leader().unwrap();
    let old = *net.nodes.keys().find(|&&id| id != leader).unwrap();
    let name = net.nodes[&old].identity().id.to_string();
    net.nodes.remove(&old);
    let new = net.start_joiner(&name, 2, 3);
    assert_eq!(net.commit(admit(&name, 2)), Outcome::Admitted { epoch: 1 });
    assert!(net.tick_until(PATIENCE, |n| n
        .live()
        .all(|(_, d)| d.voters().contains(&new) && !d.voters().contains(&old))));
    assert_eq!(
        net.commit(admit(&name, 1)),
        Outcome::Ignored(Ignored::StaleGeneration { current: 2 })
    );
}

#[test]
fn oversized_raft_bytes_are_refused_with_a_typed_error() {
    let mut net = Net::bootstrap(3, 3);
    let leader = net.wait_for_leader();
    let follower = *net.nodes.keys().find(|&&id| id != leader).unwrap();
    // A well-formed message, just too big.
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
    m.from = leader;
    m.to = follower;
    m.context = Bytes::from(vec![7u8; DEFAULT_MAX_RAFT_MESSAGE_BYTES]);
    let bytes = encode_message(&m);
    assert!(bytes.len() > DEFAULT_MAX_RAFT_MESSAGE_BYTES);
    let err = net
        .nodes
        .get_mut(&follower)
        .unwrap()
        .receive(leader, &framed(0, &m))
        .unwrap_err();
    assert!(
        matches!(
            err,
            StepError::Decode(DecodeError::TooLarge { len, limit })
                if len == bytes.len() && limit == DEFAULT_MAX_RAFT_MESSAGE_BYTES
        ),
        "{err}"
    );
    assert_eq!(
        decode_message(&bytes, 16),
        Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit: 16
        })
    );
    // Garbage is refused too, and the cluster carries on.
    let err = net
        .nodes
        .get_mut(&follower)
        .unwrap()
        .receive(
            leader,
            &Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff]),
        )
        .unwrap_err();
    assert!(
        matches!(err, StepError::Decode(DecodeError::Malformed { .. })),
        "{err}"
    );
    assert_eq!(net.commit(admit("n1", 1)), Outcome::Admitted { epoch: 1 });
}

#[test]
fn messages_must_name_the_authenticated_sender_and_this_node() {
    let mut net = Net::bootstrap(3, 3);
    let leader = net.wait_for_leader();
    let ids: Vec<u64> = net.nodes.keys().copied().collect();
    let follower = *ids.iter().find(|&&id| id != leader).unwrap();
    let other = *ids
        .iter()
        .find(|&&id| id != leader && id != follower)
        .unwrap();
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    m.from = leader;
    m.to = follower;
    let d = net.nodes.get_mut(&follower).unwrap();
    // A peer impersonating the leader.
    assert!(matches!(
        d.receive(other, &framed(0, &m)),
        Err(StepError::WrongSender { claimed, sender }) if claimed == leader && sender == other
    ));
    // A message for someone else.
    m.to = other;
    assert!(matches!(
        d.receive(leader, &framed(0, &m)),
        Err(StepError::NotForMe { .. })
    ));
    // Local message types never come from the network.
    m.to = follower;
    m.set_msg_type(raft::eraftpb::MessageType::MsgHup);
    assert!(matches!(
        d.receive(leader, &framed(0, &m)),
        Err(StepError::Raft(_))
    ));
    assert_eq!(sorted(net.nodes[&leader].voters()), ids);
}

#[test]
fn raft_messages_of_another_cluster_incarnation_are_refused_and_a_joiner_takes_its_leader_s() {
    let mut net = Net::bootstrap(3, 3);
    let leader = net.wait_for_leader();
    let mine = net.nodes[&leader].incarnation();
    assert_ne!(mine, 0);
    assert!(net.nodes.values().all(|d| d.incarnation() == mine));
    net.commit(admit("n1", 1));

    // A founder restarted with its bootstrap flag still set founds a
    // cluster of its own: another incarnation, whose messages are refused.
    let other = RaftDriver::bootstrap(
        NodeIdentity::new("n1", 2),
        &[NodeIdentity::new("n1", 2)],
        RaftConfig::default(),
    )
    .unwrap();
    let theirs = other.incarnation();
    assert_ne!(theirs, mine);
    let follower = *net.nodes.keys().find(|&&id| id != leader).unwrap();
    let mut m = raft::eraftpb::Message::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgRequestPreVote);
    m.from = other.id();
    m.to = follower;
    m.term = 100;
    let err = net
        .nodes
        .get_mut(&follower)
        .unwrap()
        .receive(other.id(), &framed(theirs, &m))
        .unwrap_err();
    assert!(
        matches!(err, StepError::OtherCluster { theirs: t, mine: me } if t == theirs && me == mine),
        "{err}"
    );
    // Bytes too short to carry an incarnation are refused before parsing.
    let err = net
        .nodes
        .get_mut(&follower)
        .unwrap()
        .receive(leader, &Bytes::from_static(&[1, 2, 3]))
        .unwrap_err();
    assert!(
        matches!(err, StepError::Decode(DecodeError::Malformed { .. })),
        "{err}"
    );

    // A joiner knows no incarnation until its first snapshot, then has the
    // leader's, and refuses the other cluster's messages too.
    let joiner = net.start_joiner("n9", 1, 3);
    assert_eq!(net.nodes[&joiner].incarnation(), 0);
    net.commit(admit("n9", 1));
    assert!(net.tick_until(PATIENCE, |n| n.nodes[&joiner].view().member("n9").is_some()));
    assert_eq!(net.nodes[&joiner].incarnation(), mine);
    m.to = joiner;
    assert!(matches!(
        net.nodes
            .get_mut(&joiner)
            .unwrap()
            .receive(other.id(), &framed(theirs, &m)),
        Err(StepError::OtherCluster { .. })
    ));
}
