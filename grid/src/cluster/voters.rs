//! Which raft peers vote: the rule the leader follows to move the Raft
//! configuration towards the membership, one conf change at a time.
//!
//! The membership says who the raft peers are (admitted members and seeds
//! not admitted yet); this rule says which of them vote, and what the
//! next conf change is. It is pure: the leader's configuration, its
//! followers' progress and what gossip says about liveness go in, one
//! [`Step`] comes out, and the [`RaftDriver`](super::raft::RaftDriver)
//! proposes it.
//!
//! # The rule
//!
//! 1. A leader left over in a joint configuration (its predecessor entered
//!    it and lost leadership before leaving it) leaves it first: raft-rs
//!    leaves a joint configuration automatically only on the leader that
//!    entered it.
//! 2. A leader that is no longer a raft peer (its process leaves) hands
//!    leadership to the live voter furthest along that knows it votes: it
//!    has committed the conf change that made the configuration (one that
//!    does not know yet would ignore the hand-over, and the leader would
//!    take no proposals until the attempt timed out); while live voters
//!    exist but none knows yet, it waits. Without a live voter it first
//!    promotes learners under rule 3, then hands over. It keeps its own
//!    vote until then, so a leader that votes alone promotes one live,
//!    caught-up learner although that makes two voters for the length of
//!    the hand-over: removed first, it would leave learners that can never
//!    elect a leader. Its successor then takes it out.
//! 3. One conf change, entered jointly when it changes more than one voter,
//!    brings the voters to their target:
//!    - raft ids that are no longer peers are removed;
//!    - a voter is demoted to learner only when gossip reports it dead
//!      *and* raft has not heard from it within the last election timeout:
//!      either alone may be wrong for a while (gossip's verdict lags, or
//!      was recorded before this leader's term; raft's flag is cleared
//!      every election timeout);
//!    - a learner is promoted only when it is live in gossip, raft heard
//!      from it within the last election timeout, and it has every
//!      committed entry;
//!    - the number of voters is always odd: the largest odd number up to
//!      the configured count that the live voters and promotable learners
//!      reach. An even count tolerates no more failures than the odd count
//!      below it, and a two-voter configuration stalls if either dies; so
//!      one voter becomes three in a single change (never 1 → 2 → 3), and a
//!      dead voter is replaced by a live learner in the same change that
//!      demotes it.
//!
//!    Live voters keep their vote (the leader first); the learners furthest
//!    along fill the remaining seats.
//! 4. Once the voters are settled, admitted members that are not raft
//!    peers yet join as learners, up to [`MAX_LEARNERS_PER_CHANGE`] in one
//!    conf change.
//!
//! A configuration never depends on a voter gossip reports dead while a
//! live learner could take its seat: such a voter is swapped for the
//! learner in one joint change, which the remaining live voters commit.
//!
//! What gossip reports live counts only in the term the leader recorded it
//! in: a node that leads again after another leader promoted new voters
//! must not judge them by its record from before they joined. Until the
//! leader records liveness in its own term, every peer counts as live
//! (promotions still need raft to have heard from the learner).

use std::collections::{BTreeMap, BTreeSet};

/// Most learners added in one conf change: a mass start admits its joiners
/// in a few commit rounds, and one change never carries an unbounded list.
pub(crate) const MAX_LEARNERS_PER_CHANGE: usize = 16;

/// What the leader knows about one raft peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    /// The highest log index the peer is known to hold.
    pub(crate) matched: u64,
    /// Raft heard from the peer within the last election timeout.
    pub(crate) active: bool,
    /// The highest index the peer reports it knows committed.
    pub(crate) committed: u64,
}

/// The leader's picture: its configuration, its followers' progress and
/// the membership's raft peers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Picture {
    /// The leader's raft id.
    pub(crate) leader: u64,
    /// The configured number of voters (3 or 5).
    pub(crate) target: usize,
    /// Voters now (both halves of a joint configuration).
    pub(crate) voters: BTreeSet<u64>,
    /// Learners now.
    pub(crate) learners: BTreeSet<u64>,
    /// True while the configuration is joint.
    pub(crate) joint: bool,
    /// The raft peers the membership wants.
    pub(crate) desired: BTreeSet<u64>,
    /// The leader's commit index.
    pub(crate) committed: u64,
    /// The log index of the conf change that made the configuration (0
    /// for the bootstrap configuration).
    pub(crate) conf_index: u64,
    /// Progress of every voter and learner.
    pub(crate) progress: BTreeMap<u64, Peer>,
    /// The leader's current term.
    pub(crate) term: u64,
    /// What gossip reports live, as the leader recorded it; `None` until
    /// gossip has spoken. Every peer counts as live until then, and while
    /// the record is from another term than [`term`](Self::term).
    pub(crate) live: Option<Liveness>,
}

/// The raft ids gossip reports live, and the term in which the leader
/// recorded them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Liveness {
    /// The leader's term when it recorded them.
    pub(crate) term: u64,
    /// The raft ids gossip reports live.
    pub(crate) ids: BTreeSet<u64>,
}

/// One change to one raft peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Change {
    /// Make it a voter.
    Voter(u64),
    /// Make it a learner (add it, or demote a voter).
    Learner(u64),
    /// Take it out of the configuration.
    Remove(u64),
}

/// What the leader does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// The configuration is what the rule wants.
    Settled,
    /// Propose an empty joint-leaving conf change.
    LeaveJoint,
    /// Hand leadership to this voter.
    TransferLeader(u64),
    /// Propose these changes as one conf change.
    Change(Vec<Change>),
}

impl Picture {
    /// Gossip reports `id` live, by a record of this term (or there is no
    /// such record).
    fn live(&self, id: u64) -> bool {
        id == self.leader
            || self
                .live
                .as_ref()
                .filter(|l| l.term == self.term)
                .is_none_or(|l| l.ids.contains(&id))
    }

    /// The voter `id` keeps its seat: it is still a raft peer, and gossip
    /// reports it live or raft heard from it lately.
    fn seated(&self, id: u64) -> bool {
        self.desired.contains(&id) && (self.live(id) || self.peer(id).active)
    }

    fn peer(&self, id: u64) -> Peer {
        self.progress.get(&id).copied().unwrap_or(Peer {
            matched: 0,
            active: false,
            committed: 0,
        })
    }

    fn promotable(&self, id: u64) -> bool {
        let p = self.peer(id);
        self.desired.contains(&id) && self.live(id) && p.active && p.matched >= self.committed
    }

    /// `ids` furthest along first, ties to the smaller id.
    fn by_progress(&self, ids: impl Iterator<Item = u64>) -> Vec<u64> {
        let mut ids: Vec<u64> = ids.collect();
        ids.sort_by_key(|&id| (std::cmp::Reverse(self.peer(id).matched), id));
        ids
    }

    /// The voters the rule wants: the leader, then the other seated
    /// voters, then promotable learners, cut to the largest odd count
    /// reachable; but a leader that must go keeps at least one other voter
    /// to hand over to.
    fn wanted_voters(&self) -> BTreeSet<u64> {
        let kept = self.by_progress(
            self.voters
                .iter()
                .copied()
                .filter(|&v| v != self.leader && self.seated(v)),
        );
        let promotable = self.by_progress(
            self.learners
                .iter()
                .copied()
                .filter(|&l| self.promotable(l)),
        );
        let candidates: Vec<u64> = std::iter::once(self.leader)
            .chain(kept)
            .chain(promotable)
            .collect();
        let mut seats = self.target.max(1).min(candidates.len());
        if seats % 2 == 0 {
            seats -= 1;
        }
        if !self.desired.contains(&self.leader) {
            // Two voters only until the hand-over: its successor removes it.
            seats = seats.max(2).min(candidates.len());
        }
        candidates.into_iter().take(seats).collect()
    }

    /// The next step; see the [module docs](self).
    pub(crate) fn next_step(&self) -> Step {
        if self.joint {
            return Step::LeaveJoint;
        }
        if !self.desired.contains(&self.leader) {
            let successors = self.by_progress(
                self.voters
                    .iter()
                    .copied()
                    .filter(|&v| v != self.leader && self.seated(v)),
            );
            let knows = |&&s: &&u64| self.peer(s).committed >= self.conf_index;
            match successors.iter().find(knows) {
                Some(&s) => return Step::TransferLeader(s),
                None if !successors.is_empty() => return Step::Settled,
                None => {}
            }
        }
        let wanted = self.wanted_voters();
        let mut changes: Vec<Change> = Vec::new();
        for &id in self.voters.iter().chain(&self.learners) {
            if id != self.leader && !self.desired.contains(&id) {
                changes.push(Change::Remove(id));
            }
        }
        for &v in &self.voters {
            if !wanted.contains(&v) && self.desired.contains(&v) {
                changes.push(Change::Learner(v));
            }
        }
        for &w in &wanted {
            if !self.voters.contains(&w) {
                changes.push(Change::Voter(w));
            }
        }
        if !changes.is_empty() {
            return Step::Change(changes);
        }
        let new: Vec<Change> = self
            .desired
            .iter()
            .filter(|id| !self.voters.contains(id) && !self.learners.contains(id))
            .take(MAX_LEARNERS_PER_CHANGE)
            .map(|&id| Change::Learner(id))
            .collect();
        if new.is_empty() {
            Step::Settled
        } else {
            Step::Change(new)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: u64 = 1;

    /// A settled single-voter cluster (the founder, leading) with the
    /// given learners, all caught up and live, wanting 3 voters.
    fn picture(voters: &[u64], learners: &[u64]) -> Picture {
        let all: Vec<u64> = voters.iter().chain(learners).copied().collect();
        Picture {
            leader: L,
            target: 3,
            voters: voters.iter().copied().collect(),
            learners: learners.iter().copied().collect(),
            joint: false,
            desired: all.iter().copied().collect(),
            committed: 10,
            conf_index: 8,
            progress: all
                .iter()
                .map(|&id| {
                    (
                        id,
                        Peer {
                            matched: 10,
                            active: true,
                            committed: 10,
                        },
                    )
                })
                .collect(),
            term: 2,
            live: Some(Liveness {
                term: 2,
                ids: all.iter().copied().collect(),
            }),
        }
    }

    /// Gossip reports `id` dead and raft has not heard from it lately.
    fn kill(p: &mut Picture, id: u64) {
        gossip_dead(p, id);
        p.progress.get_mut(&id).unwrap().active = false;
    }

    /// Gossip reports `id` dead.
    fn gossip_dead(p: &mut Picture, id: u64) {
        p.live.as_mut().unwrap().ids.remove(&id);
    }

    #[test]
    fn one_voter_with_one_learner_stays_one_voter() {
        // Two voters would stall as soon as either died.
        assert_eq!(picture(&[L], &[2]).next_step(), Step::Settled);
    }

    #[test]
    fn one_voter_becomes_three_in_one_change() {
        assert_eq!(
            picture(&[L], &[2, 3]).next_step(),
            Step::Change(vec![Change::Voter(2), Change::Voter(3)])
        );
        // Four learners: still three voters, the two furthest along.
        let mut p = picture(&[L], &[2, 3, 4, 5]);
        p.progress.get_mut(&2).unwrap().matched = 9;
        p.committed = 9;
        p.progress.get_mut(&5).unwrap().matched = 11;
        assert_eq!(
            p.next_step(),
            Step::Change(vec![Change::Voter(3), Change::Voter(5)])
        );
        // Five wanted: one becomes five.
        let mut p = picture(&[L], &[2, 3, 4, 5]);
        p.target = 5;
        assert_eq!(
            p.next_step(),
            Step::Change((2..=5).map(Change::Voter).collect())
        );
    }

    #[test]
    fn only_live_caught_up_learners_are_promoted() {
        let mut p = picture(&[L], &[2, 3, 4, 5]);
        // 2 lags behind the commit index, 3 is dead in gossip, 4 was not
        // heard from by raft lately: only 5 qualifies, and one learner is
        // not enough for an odd count above one.
        p.progress.get_mut(&2).unwrap().matched = 9;
        gossip_dead(&mut p, 3);
        p.progress.get_mut(&4).unwrap().active = false;
        assert_eq!(p.next_step(), Step::Settled);
        // 2 catches up: 2 and 5 are promoted together.
        p.progress.get_mut(&2).unwrap().matched = 10;
        assert_eq!(
            p.next_step(),
            Step::Change(vec![Change::Voter(2), Change::Voter(5)])
        );
    }

    #[test]
    fn a_promoted_voter_that_dies_right_after_promotion_is_replaced_by_a_live_learner() {
        let mut p = picture(&[L, 2, 3], &[4]);
        assert_eq!(p.next_step(), Step::Settled);
        kill(&mut p, 3);
        assert_eq!(
            p.next_step(),
            Step::Change(vec![Change::Learner(3), Change::Voter(4)])
        );
    }

    #[test]
    fn a_dead_voter_without_a_replacement_leaves_an_odd_count() {
        // Three voters, one dead, no learner: the leader keeps one voter
        // (itself) rather than two, so that one more death cannot stall it.
        let mut p = picture(&[L, 2, 3], &[]);
        kill(&mut p, 3);
        assert_eq!(
            p.next_step(),
            Step::Change(vec![Change::Learner(2), Change::Learner(3)])
        );
        // Five voters, one dead, no learner: three remain.
        let mut p = picture(&[L, 2, 3, 4, 5], &[]);
        p.target = 5;
        p.progress.get_mut(&2).unwrap().matched = 9;
        kill(&mut p, 5);
        assert_eq!(
            p.next_step(),
            Step::Change(vec![Change::Learner(2), Change::Learner(5)])
        );
    }

    #[test]
    fn a_removed_voter_is_taken_out_and_replaced_in_one_change() {
        let mut p = picture(&[L, 2, 3], &[4]);
        p.desired.remove(&3);
        assert_eq!(
            p.next_step(),
            Step::Change(vec![Change::Remove(3), Change::Voter(4)])
        );
        // A removed learner is simply taken out.
        let mut p = picture(&[L, 2, 3], &[4]);
        p.desired.remove(&4);
        assert_eq!(p.next_step(), Step::Change(vec![Change::Remove(4)]));
    }

    #[test]
    fn a_voter_that_comes_back_to_life_gets_its_seat_back_only_when_one_is_free() {
        let mut p = picture(&[L, 2, 4], &[3]);
        // 3 was demoted while dead and is live again: the voters are full.
        assert_eq!(p.next_step(), Step::Settled);
        // A voter leaves: 3 takes the seat.
        p.desired.remove(&2);
        assert_eq!(
            p.next_step(),
            Step::Change(vec![Change::Remove(2), Change::Voter(3)])
        );
    }

    #[test]
    fn a_leader_that_must_go_hands_over_to_the_live_voter_furthest_along() {
        let mut p = picture(&[L, 2, 3], &[]);
        p.desired.remove(&L);
        p.progress.get_mut(&2).unwrap().matched = 9;
        assert_eq!(p.next_step(), Step::TransferLeader(3));
        kill(&mut p, 3);
        assert_eq!(p.next_step(), Step::TransferLeader(2));
        // The only voter: it promotes two learners first, then hands over.
        let mut p = picture(&[L], &[2, 3]);
        p.desired.remove(&L);
        assert_eq!(
            p.next_step(),
            Step::Change(vec![Change::Voter(2), Change::Voter(3)])
        );
        p.voters.extend([2, 3]);
        p.learners.clear();
        assert_eq!(p.next_step(), Step::TransferLeader(2));
    }

    #[test]
    fn the_only_voter_that_must_go_promotes_a_learner_hands_over_and_is_then_taken_out() {
        // A grid of two: the founder votes alone and leaves.
        let mut p = picture(&[L], &[2]);
        p.desired.remove(&L);
        assert_eq!(p.next_step(), Step::Change(vec![Change::Voter(2)]));
        p.voters.insert(2);
        p.learners.clear();
        // 2 has not learned yet that the promotion committed: it would
        // ignore the hand-over.
        p.conf_index = 11;
        p.committed = 11;
        p.progress.get_mut(&2).unwrap().matched = 11;
        assert_eq!(p.next_step(), Step::Settled);
        p.progress.get_mut(&2).unwrap().committed = 11;
        assert_eq!(p.next_step(), Step::TransferLeader(2));
        // 2 leads now, and takes the old leader out.
        p.leader = 2;
        assert_eq!(p.next_step(), Step::Change(vec![Change::Remove(L)]));
        // A grid of three that lost a voter before its learner caught up:
        // the caught-up one is promoted, the other is left a learner.
        let mut p = picture(&[L], &[2, 3]);
        p.desired.remove(&L);
        p.progress.get_mut(&2).unwrap().matched = 9;
        assert_eq!(p.next_step(), Step::Change(vec![Change::Voter(3)]));
        // No learner fit to take over: the leader keeps its vote (and its
        // process waits, bounded, before it stops).
        kill(&mut p, 3);
        assert_eq!(p.next_step(), Step::Settled);
    }

    #[test]
    fn a_voter_keeps_its_seat_until_gossip_reports_it_dead_and_raft_has_not_heard_from_it() {
        let mut p = picture(&[L, 2, 3], &[4]);
        // Gossip's verdict alone: raft still hears from 3.
        gossip_dead(&mut p, 3);
        assert_eq!(p.next_step(), Step::Settled);
        // Raft's silence alone (its flag is cleared every election timeout).
        let mut q = picture(&[L, 2, 3], &[4]);
        q.progress.get_mut(&3).unwrap().active = false;
        assert_eq!(q.next_step(), Step::Settled);
        // Both: 4 takes the seat.
        p.progress.get_mut(&3).unwrap().active = false;
        assert_eq!(
            p.next_step(),
            Step::Change(vec![Change::Learner(3), Change::Voter(4)])
        );
    }

    #[test]
    fn liveness_recorded_in_an_earlier_term_is_ignored() {
        // This node led in term 1 and recorded 1, 2 and 3 live; another
        // leader promoted 4 and 5 since, and this node leads again in term
        // 3, before raft has heard from anyone in the new term.
        let mut p = picture(&[L, 2, 3, 4, 5], &[]);
        p.target = 5;
        p.term = 3;
        p.live = Some(Liveness {
            term: 1,
            ids: [L, 2, 3].into(),
        });
        for peer in p.progress.values_mut() {
            peer.active = false;
        }
        assert_eq!(p.next_step(), Step::Settled);
        // Recorded in this term, the same verdict demotes them.
        p.live.as_mut().unwrap().term = 3;
        assert_eq!(
            p.next_step(),
            Step::Change(vec![Change::Learner(4), Change::Learner(5)])
        );
    }

    #[test]
    fn a_leader_left_in_a_joint_configuration_leaves_it_first() {
        let mut p = picture(&[L, 2, 3], &[4]);
        p.joint = true;
        assert_eq!(p.next_step(), Step::LeaveJoint);
    }

    #[test]
    fn joiners_are_added_as_learners_in_bounded_batches_once_voters_are_settled() {
        let mut p = picture(&[L, 2, 3], &[]);
        let joiners: Vec<u64> = (10..10 + MAX_LEARNERS_PER_CHANGE as u64 + 4).collect();
        p.desired.extend(&joiners);
        assert_eq!(
            p.next_step(),
            Step::Change(
                joiners[..MAX_LEARNERS_PER_CHANGE]
                    .iter()
                    .map(|&id| Change::Learner(id))
                    .collect()
            )
        );
        p.learners.extend(&joiners[..MAX_LEARNERS_PER_CHANGE]);
        assert_eq!(
            p.next_step(),
            Step::Change(
                joiners[MAX_LEARNERS_PER_CHANGE..]
                    .iter()
                    .map(|&id| Change::Learner(id))
                    .collect()
            )
        );
        // Voter changes come first: a dead voter is replaced before any
        // joiner is added.
        let mut p = picture(&[L, 2, 3], &[4]);
        p.desired.insert(20);
        kill(&mut p, 2);
        assert_eq!(
            p.next_step(),
            Step::Change(vec![Change::Learner(2), Change::Voter(4)])
        );
    }

    #[test]
    fn without_word_from_gossip_every_peer_counts_as_live() {
        let mut p = picture(&[L], &[2, 3]);
        p.live = None;
        assert_eq!(
            p.next_step(),
            Step::Change(vec![Change::Voter(2), Change::Voter(3)])
        );
    }
}
