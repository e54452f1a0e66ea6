//! The health rule, without sockets or clocks: facts and the time go in,
//! reasons to be down come out.
//!
//! A local grid is always up. A cluster node is down before Raft has
//! admitted it (not yet joined, or removed), and a member is also down once
//! it has known no Raft leader for longer than a grace period: a leaderless
//! cluster cannot admit or remove anyone, so ownership is frozen. Brief
//! leader changes (an election takes a few hundred milliseconds) stay up.
//! A member whose Raft task has exited is down at once: it will never take
//! part in consensus again, and only a restart brings it back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;

/// How long a member may know no Raft leader before it reports down.
pub const DEFAULT_LEADERLESS_GRACE: Duration = Duration::from_secs(10);

/// What the health rule needs to know about a cluster node.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodeFacts {
    /// A member (a Raft voter); clients only need to be admitted.
    pub(crate) member: bool,
    /// Raft has admitted this process at the current epoch.
    pub(crate) admitted: bool,
    /// A Raft leader is known.
    pub(crate) has_leader: bool,
    /// The member's Raft task has exited.
    pub(crate) raft_task_exited: bool,
}

/// Why a cache reports down.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub(crate) enum DownReason {
    /// Raft has not admitted this node (still joining, or removed).
    NotAdmitted,
    /// No Raft leader has been known for this long.
    NoRaftLeader {
        /// Milliseconds since a leader was last known.
        for_ms: u64,
    },
    /// The Raft task has exited: the process must be restarted.
    RaftTaskExited,
}

/// Remembers, per cache, since when its node has known no leader.
#[derive(Debug)]
pub(crate) struct HealthTracker {
    grace: Duration,
    leaderless_since: HashMap<String, Instant>,
}

impl HealthTracker {
    pub(crate) fn new(grace: Duration) -> Self {
        HealthTracker {
            grace,
            leaderless_since: HashMap::new(),
        }
    }

    /// The reasons `cache` is down at `now`; empty when it is up. `node` is
    /// `None` for a local grid.
    pub(crate) fn assess(
        &mut self,
        cache: &str,
        now: Instant,
        node: Option<NodeFacts>,
    ) -> Vec<DownReason> {
        let Some(node) = node else {
            return Vec::new();
        };
        let mut reasons = Vec::new();
        if !node.admitted {
            reasons.push(DownReason::NotAdmitted);
        }
        if node.raft_task_exited {
            reasons.push(DownReason::RaftTaskExited);
        }
        if node.member && !node.has_leader {
            let since = *self
                .leaderless_since
                .entry(cache.to_string())
                .or_insert(now);
            let for_ = now.saturating_duration_since(since);
            if for_ > self.grace {
                reasons.push(DownReason::NoRaftLeader {
                    for_ms: for_.as_millis() as u64,
                });
            }
        } else {
            self.leaderless_since.remove(cache);
        }
        reasons
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBER_OK: NodeFacts = NodeFacts {
        member: true,
        admitted: true,
        has_leader: true,
        raft_task_exited: false,
    };

    #[test]
    fn a_local_grid_is_always_up() {
        let mut h = HealthTracker::new(Duration::from_secs(1));
        assert!(h.assess("main", Instant::now(), None).is_empty());
    }

    #[test]
    fn a_node_raft_has_not_admitted_is_down() {
        let mut h = HealthTracker::new(Duration::from_secs(1));
        let joining = NodeFacts {
            admitted: false,
            ..MEMBER_OK
        };
        assert_eq!(
            h.assess("g", Instant::now(), Some(joining)),
            vec![DownReason::NotAdmitted]
        );
        let client = NodeFacts {
            member: false,
            admitted: false,
            has_leader: false,
            raft_task_exited: false,
        };
        assert_eq!(
            h.assess("c", Instant::now(), Some(client)),
            vec![DownReason::NotAdmitted]
        );
    }

    #[test]
    fn a_member_whose_raft_task_exited_is_down_at_once() {
        let mut h = HealthTracker::new(Duration::from_secs(10));
        let dead = NodeFacts {
            raft_task_exited: true,
            ..MEMBER_OK
        };
        assert_eq!(
            h.assess("g", Instant::now(), Some(dead)),
            vec![DownReason::RaftTaskExited]
        );
    }

    #[test]
    fn a_member_without_a_leader_is_down_only_after_the_grace_period() {
        let grace = Duration::from_secs(10);
        let mut h = HealthTracker::new(grace);
        let t0 = Instant::now();
        let leaderless = NodeFacts {
            has_leader: false,
            ..MEMBER_OK
        };
        assert!(h.assess("g", t0, Some(leaderless)).is_empty());
        assert!(h.assess("g", t0 + grace, Some(leaderless)).is_empty());
        assert_eq!(
            h.assess("g", t0 + Duration::from_secs(12), Some(leaderless)),
            vec![DownReason::NoRaftLeader { for_ms: 12_000 }]
        );
        // A leader again resets the clock.
        assert!(h
            .assess("g", t0 + Duration::from_secs(13), Some(MEMBER_OK))
            .is_empty());
        assert!(h
            .assess("g", t0 + Duration::from_secs(20), Some(leaderless))
            .is_empty());
    }

    #[test]
    fn a_client_needs_no_leader_and_caches_are_tracked_apart() {
        let mut h = HealthTracker::new(Duration::ZERO);
        let t0 = Instant::now();
        let client = NodeFacts {
            member: false,
            admitted: true,
            has_leader: false,
            raft_task_exited: false,
        };
        assert!(h.assess("c", t0, Some(client)).is_empty());
        assert!(h
            .assess("c", t0 + Duration::from_secs(60), Some(client))
            .is_empty());
        let leaderless = NodeFacts {
            has_leader: false,
            ..MEMBER_OK
        };
        h.assess("a", t0, Some(leaderless));
        assert!(h
            .assess("b", t0 + Duration::from_secs(5), Some(leaderless))
            .is_empty());
        assert_eq!(
            h.assess("a", t0 + Duration::from_secs(5), Some(leaderless)),
            vec![DownReason::NoRaftLeader { for_ms: 5_000 }]
        );
    }
}
