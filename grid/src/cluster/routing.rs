//! The routing decision for a key that missed locally: answer here (this
//! member owns it), ask its owner, retry after a wrong-owner answer, or give
//! up and fall back. Pure: a view, the time and the last failure in, a
//! decision out. The node performs the requests and sleeps.
//!
//! Two nodes that disagree about the owner never wait on each other: a
//! request to a node that does not own the key is answered `WrongOwner` at
//! once (never held), and the asker retries a bounded number of times within
//! its deadline, then falls back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hydracache_protocol::{NodeIdentity, Role};

use super::ownership::MembershipView;

/// Where a request for a key goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// This member owns the key at its epoch: its own store is the answer.
    Local,
    /// Ask the owner.
    Owner {
        /// The owner's node id.
        node: String,
        /// Its address.
        addr: SocketAddr,
        /// The epoch at which it was computed.
        epoch: u64,
    },
    /// No member is admitted (yet): nobody to ask.
    NoOwner,
}

/// Routes `key` for the process `me` (with `role`) at `view`. A view that
/// names another generation of this node as the owner (the one this
/// process replaces, in a view older than the one that admits it) names no
/// owner this process can ask or be: it waits for a newer view. Taking it
/// for itself, a new generation stored, as the owner, values the rest of
/// the grid routed elsewhere.
pub(crate) fn route(view: &MembershipView, me: &NodeIdentity, role: Role, key: &str) -> Route {
    match view.owner_for_key(key) {
        None => Route::NoOwner,
        Some(m) if role == Role::Member && m.node.id == me.id => {
            if m.node.generation == me.generation {
                Route::Local
            } else {
                Route::NoOwner
            }
        }
        Some(m) => Route::Owner {
            node: m.node.id.to_string(),
            addr: m.address,
            epoch: view.epoch(),
        },
    }
}

/// Why an attempt at the owner did not give an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The asked node does not own the key at its `epoch`.
    WrongOwner {
        /// The responder's epoch.
        epoch: u64,
    },
    /// No answer (connection failed, request timed out, node shutting down).
    Unreachable,
}

/// What to do after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Route again after `after` (a newer view may have arrived by then).
    Retry {
        /// How long to wait first.
        after: Duration,
    },
    /// Out of attempts or time: fall back (load locally, or a typed error).
    GiveUp,
}

/// The retry budget of one request: a number of attempts and a deadline.
#[derive(Clone, Debug)]
pub(crate) struct Attempts {
    left: u32,
    deadline: Instant,
    backoff: Duration,
}

impl Attempts {
    /// At most `attempts` tries until `now + budget`.
    pub(crate) fn new(now: Instant, budget: Duration, attempts: u32) -> Self {
        Attempts {
            left: attempts.max(1),
            deadline: now + budget,
            backoff: Duration::from_millis(2),
        }
    }

    /// Time left for the next try, or `None` if the deadline has passed or
    /// every attempt was spent.
    pub(crate) fn remaining(&self, now: Instant) -> Option<Duration> {
        if self.left == 0 {
            return None;
        }
        self.deadline
            .checked_duration_since(now)
            .filter(|d| !d.is_zero())
    }

    /// Records a failed try of a request routed at `routed_epoch`;
    /// `my_epoch` is this node's epoch now.
    pub(crate) fn after(
        &mut self,
        failure: Failure,
        routed_epoch: u64,
        my_epoch: u64,
        now: Instant,
    ) -> Next {
        self.left = self.left.saturating_sub(1);
        let Some(left) = self.remaining(now) else {
            return Next::GiveUp;
        };
        let after = match failure {
            // This node learned a newer view since it routed the request:
            // routing again may pick another owner, so at once.
            _ if my_epoch > routed_epoch => Duration::ZERO,
            // Same view: routing again now would pick the same node. The
            // responder is ahead (its view reaches this node shortly) or
            // behind (it catches up shortly), or unreachable: wait a little,
            // doubling, until the view moves or the deadline passes.
            Failure::WrongOwner { .. } | Failure::Unreachable => {
                let wait = self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_millis(100));
                wait
            }
        };
        if after >= left {
            return Next::GiveUp;
        }
        Next::Retry { after }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hydracache_protocol::{Member, NodeIdentity};

    /// Generation 1 of `id`, as `view` admits it.
    fn me(id: &str) -> NodeIdentity {
        NodeIdentity::new(id, 1)
    }

    fn view(epoch: u64, nodes: &[(&str, Role, u16)]) -> MembershipView {
        MembershipView::new(
            epoch,
            nodes.iter().map(|&(id, role, port)| Member {
                node: NodeIdentity::new(id, 1),
                role,
                address: SocketAddr::from(([127, 0, 0, 1], port)),
            }),
        )
    }

    #[test]
    fn the_owner_answers_locally_and_everyone_else_asks_it() {
        let v = view(
            3,
            &[
                ("a", Role::Member, 1),
                ("b", Role::Member, 2),
                ("c", Role::Client, 3),
            ],
        );
        let owner = v.owner_for_key("user:42").unwrap().node.id.to_string();
        let other = if owner == "a" { "b" } else { "a" };
        assert_eq!(
            route(&v, &me(&owner), Role::Member, "user:42"),
            Route::Local
        );
        let ask = Route::Owner {
            node: owner.clone(),
            addr: v.member(&owner).unwrap().address,
            epoch: 3,
        };
        assert_eq!(route(&v, &me(other), Role::Member, "user:42"), ask);
        assert_eq!(route(&v, &me("c"), Role::Client, "user:42"), ask);
    }

    #[test]
    fn a_client_named_like_the_owner_still_asks_the_owner() {
        let v = view(1, &[("a", Role::Member, 1)]);
        assert!(matches!(
            route(&v, &me("a"), Role::Client, "k"),
            Route::Owner { .. }
        ));
    }

    #[test]
    fn without_members_there_is_no_owner() {
        assert_eq!(
            route(&MembershipView::empty(), &me("a"), Role::Member, "k"),
            Route::NoOwner
        );
        let clients_only = view(2, &[("c", Role::Client, 3)]);
        assert_eq!(
            route(&clients_only, &me("c"), Role::Client, "k"),
            Route::NoOwner
        );
    }

    #[test]
    fn another_generation_of_this_node_named_as_owner_is_no_owner_to_this_process() {
        let v = view(4, &[("a", Role::Member, 1)]);
        // The view admits generation 1; this process is generation 2 of "a".
        let newer = NodeIdentity::new("a", 2);
        assert_eq!(route(&v, &newer, Role::Member, "k"), Route::NoOwner);
        assert_eq!(route(&v, &me("a"), Role::Member, "k"), Route::Local);
    }

    #[test]
    fn a_request_is_routed_again_at_once_only_when_this_node_learned_a_newer_view() {
        let now = Instant::now();
        let mut a = Attempts::new(now, Duration::from_secs(1), 8);
        // Routed at 4, this node is at 5 now: the owner may have changed.
        assert_eq!(
            a.after(Failure::WrongOwner { epoch: 2 }, 4, 5, now),
            Next::Retry {
                after: Duration::ZERO
            }
        );
        assert_eq!(
            a.after(Failure::Unreachable, 4, 5, now),
            Next::Retry {
                after: Duration::ZERO
            }
        );
        // A responder behind this node's view, which has not moved since
        // routing: routing again would pick the same node, so wait.
        assert_eq!(
            a.after(Failure::WrongOwner { epoch: 2 }, 5, 5, now),
            Next::Retry {
                after: Duration::from_millis(2)
            }
        );
        // A responder ahead: wait for its view to arrive.
        assert_eq!(
            a.after(Failure::WrongOwner { epoch: 9 }, 5, 5, now),
            Next::Retry {
                after: Duration::from_millis(4)
            }
        );
    }

    #[test]
    fn other_failures_back_off_doubling_up_to_a_cap() {
        let now = Instant::now();
        let mut a = Attempts::new(now, Duration::from_secs(10), 100);
        let waits: Vec<Duration> = (0..9)
            .map(|_| match a.after(Failure::Unreachable, 5, 5, now) {
                Next::Retry { after } => after,
                Next::GiveUp => panic!("budget left"),
            })
            .collect();
        assert_eq!(waits[0], Duration::from_millis(2));
        assert_eq!(waits[1], Duration::from_millis(4));
        assert_eq!(waits[8], Duration::from_millis(100));
        assert_eq!(
            a.after(Failure::WrongOwner { epoch: 9 }, 5, 5, now),
            Next::Retry {
                after: Duration::from_millis(100)
            }
        );
    }

    #[test]
    fn retries_are_bounded_by_count() {
        let now = Instant::now();
        let mut a = Attempts::new(now, Duration::from_secs(10), 3);
        assert!(a.remaining(now).is_some());
        assert!(matches!(
            a.after(Failure::Unreachable, 1, 1, now),
            Next::Retry { .. }
        ));
        assert!(matches!(
            a.after(Failure::Unreachable, 1, 1, now),
            Next::Retry { .. }
        ));
        assert_eq!(a.after(Failure::Unreachable, 1, 1, now), Next::GiveUp);
        assert_eq!(a.remaining(now), None);
    }

    #[test]
    fn retries_are_bounded_by_the_deadline() {
        let now = Instant::now();
        let mut a = Attempts::new(now, Duration::from_millis(50), 100);
        assert_eq!(a.remaining(now), Some(Duration::from_millis(50)));
        let late = now + Duration::from_millis(50);
        assert_eq!(a.remaining(late), None);
        assert_eq!(a.after(Failure::Unreachable, 1, 1, late), Next::GiveUp);
        // A wait that would overrun the deadline gives up instead.
        let mut b = Attempts::new(now, Duration::from_millis(3), 100);
        assert!(matches!(
            b.after(Failure::Unreachable, 1, 1, now),
            Next::Retry { .. }
        ));
        assert_eq!(b.after(Failure::Unreachable, 1, 1, now), Next::GiveUp);
    }
}
