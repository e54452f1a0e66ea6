//! The isolation rule: a node that cannot hear the cluster stops serving
//! what it cannot prove fresh, and an invalidation's `Ok` never counts on
//! a node that may still be serving.
//!
//! A node hears a peer when the peer's gossip heartbeat moves. It is **in
//! contact** when a strict majority of the admitted members (a member
//! counts itself; a client counts only the members) were heard within the
//! isolation bound `T` or are still reported live by the failure detector
//! (which adapts to how often heartbeats come, so a peer that is only slow
//! on a loaded machine does not cut a node off). A node that is not in contact is **isolated**: it may have
//! missed invalidations for as long as it has been cut off, so it drops
//! every entry, and keeps dropping what it stores (owned entries, near
//! copies, local-fallback loads) every gossip interval, until it is in
//! contact again. A node alone in its view (or not admitted yet) has no one
//! to hear and is never isolated.
//!
//! The other side of the rule makes an invalidation's `Ok` true. The origin
//! also waits for the acknowledgement of every admitted process that gossip
//! does not report live (and of every process the membership removed
//! without its word that it leaves), and names it in `Unacknowledged` if
//! none comes, until that process has not been heard for twice the bound: by then it is isolated by its own rule (whatever it
//! heard last, it heard it at most about one bound after the origin last
//! heard it, the links of a cut failing both ways, as long as its failure
//! detector declares a silent peer dead within `2T`), so it has dropped
//! everything it held. An isolated origin names them all: the majority it
//! cannot hear does not know its invalidations, and it cannot tell which of
//! them still serve.
//!
//! Why a majority: two sides of a partition cannot both hold a strict
//! majority, so at most one side keeps serving, and an origin on that side
//! knows every node it cannot hear is isolated. With "heard anyone" a
//! minority of two nodes would keep serving each other's values while the
//! majority's invalidations return `Ok`.
//!
//! Pure: the driver passes the time and who was heard when, and applies the
//! flush.

use std::time::{Duration, Instant};

use hydracache_protocol::Member;

/// What the driver does after a tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// In contact: serve as usual.
    Serve,
    /// Isolated: drop every entry now (and again every tick while
    /// isolated, so nothing stored meanwhile outlives one tick).
    Flush {
        /// True on the tick the node became isolated.
        entered: bool,
    },
}

/// Whether a node that heard `heard` of the admitted members within the
/// bound (itself included if it is a member) out of `members` is in
/// contact: a strict majority, or nobody else to hear.
pub(crate) fn in_contact(heard: usize, members: usize) -> bool {
    members <= 1 || heard * 2 > members
}

/// The isolation state of one node.
#[derive(Debug)]
pub(crate) struct Isolation {
    bound: Duration,
    isolated_since: Option<Instant>,
    /// When this node was last in contact again after being isolated.
    contact_since: Option<Instant>,
    times: u64,
    /// Processes the membership removed without their word that they
    /// leave (declared dead): they may still serve until isolated, so
    /// invalidations keep naming them as the admitted ones.
    removed: Vec<Member>,
    /// When this node started: before it has listened for twice the bound,
    /// a process it never heard may still be serving.
    started: Instant,
}

impl Isolation {
    /// A node that is isolated once it has not heard a majority for `bound`.
    pub(crate) fn new(bound: Duration) -> Self {
        Isolation {
            bound,
            isolated_since: None,
            contact_since: None,
            times: 0,
            started: Instant::now(),
            removed: Vec::new(),
        }
    }

    /// The membership removed `member` without its word that it leaves.
    pub(crate) fn removed(&mut self, member: &Member) {
        if !self.removed.iter().any(|m| m.node == member.node) {
            self.removed.push(member.clone());
        }
    }

    /// Processes removed without leaving that an invalidation must still
    /// consider, given how long ago each was last heard (`since`); the
    /// others are forgotten (the list stays as short as the processes
    /// removed within twice the bound).
    pub(crate) fn still_removed(
        &mut self,
        since: impl Fn(&str, u64) -> Option<Duration>,
    ) -> Vec<Member> {
        let bound = self.bound * 2;
        self.removed
            .retain(|m| since(&m.node.id, m.node.generation).is_some_and(|s| s <= bound));
        self.removed.clone()
    }

    /// Whether a process last heard `since` ago (`None`: never) counts as
    /// heard.
    pub(crate) fn heard(&self, since: Option<Duration>) -> bool {
        since.is_some_and(|s| s <= self.bound)
    }

    /// One tick at `now`: `heard` of `members` admitted members (this node
    /// included if it is one) were heard within the bound.
    pub(crate) fn tick(&mut self, now: Instant, heard: usize, members: usize) -> Decision {
        if in_contact(heard, members) {
            if self.isolated_since.take().is_some() {
                self.contact_since = Some(now);
            }
            return Decision::Serve;
        }
        let entered = self.isolated_since.is_none();
        if entered {
            self.isolated_since = Some(now);
            self.times += 1;
        }
        Decision::Flush { entered }
    }

    /// Whether this node is isolated now.
    pub(crate) fn isolated(&self) -> bool {
        self.isolated_since.is_some()
    }

    /// How many times this node became isolated.
    pub(crate) fn times(&self) -> u64 {
        self.times
    }

    /// Whether an invalidation from this node must wait for (and, if it
    /// does not answer, name) an admitted process that gossip does not
    /// report live, last heard `since` ago at `now` (`None`: never heard):
    /// yes while it may still serve, that is until twice the bound has
    /// passed since it was last heard, or, for one never heard, since this
    /// node started listening (a node that just started, a rejoining
    /// generation among them, has not heard anyone yet: the processes its
    /// view admits are serving, not silent); always while this node is
    /// isolated itself; and, after it was, for a process not heard again
    /// since before it was back in contact.
    pub(crate) fn names_unheard(&self, since: Option<Duration>, now: Instant) -> bool {
        if self.isolated() {
            return true;
        }
        let since = since.unwrap_or_else(|| now.saturating_duration_since(self.started));
        if since <= self.bound * 2 {
            return true;
        }
        // Silent for longer: isolated by its own rule, if the silence was
        // its side's. Not when this node was the one cut off since it last
        // heard that process (it was isolated after that): the process may
        // be on the majority's side, serving, and not yet heard again.
        let last_heard = now.checked_sub(since);
        self.contact_since
            .is_some_and(|contact| last_heard.is_none_or(|heard| heard < contact))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn a_strict_majority_of_the_admitted_members_is_contact() {
        assert!(in_contact(2, 3));
        assert!(!in_contact(1, 3), "a member hearing only itself of three");
        assert!(in_contact(3, 5));
        assert!(!in_contact(2, 5), "the minority side of a 2|3 split");
        assert!(!in_contact(2, 4), "a tie is no majority");
        assert!(in_contact(1, 1), "alone in the view: no one to hear");
        assert!(in_contact(0, 0), "not admitted yet");
        assert!(!in_contact(0, 2), "a client hearing no member");
    }

    #[test]
    fn a_node_that_cannot_hear_a_majority_flushes_every_tick_until_it_can() {
        let mut i = Isolation::new(T);
        let t0 = Instant::now();
        assert_eq!(i.tick(t0, 3, 3), Decision::Serve);
        assert!(!i.isolated());
        assert_eq!(i.tick(t0 + T, 1, 3), Decision::Flush { entered: true });
        assert!(i.isolated());
        // It keeps dropping what it stores while cut off.
        assert_eq!(i.tick(t0 + T * 2, 1, 3), Decision::Flush { entered: false });
        // Heard again: serving, fresh (it holds only what it stored since).
        assert_eq!(i.tick(t0 + T * 3, 2, 3), Decision::Serve);
        assert!(!i.isolated());
        assert_eq!(i.tick(t0 + T * 4, 1, 3), Decision::Flush { entered: true });
        assert_eq!(i.times(), 2);
    }

    #[test]
    fn a_process_removed_without_leaving_is_remembered_while_it_may_serve() {
        let member = |id: &str, generation| Member {
            node: hydracache_protocol::NodeIdentity::new(id, generation),
            role: hydracache_protocol::Role::Member,
            address: "127.0.0.1:7400".parse().unwrap(),
        };
        let mut i = Isolation::new(T);
        i.removed(&member("c", 7));
        i.removed(&member("c", 7));
        i.removed(&member("d", 1));
        let since = |n: &str, _| match n {
            "c" => Some(T),
            _ => Some(T * 3),
        };
        assert_eq!(i.still_removed(since), vec![member("c", 7)]);
        assert_eq!(i.still_removed(|_, _| None), Vec::new());
    }

    #[test]
    fn heard_means_within_the_bound() {
        let i = Isolation::new(T);
        assert!(i.heard(Some(Duration::ZERO)));
        assert!(i.heard(Some(T)));
        assert!(!i.heard(Some(T + Duration::from_millis(1))));
        assert!(!i.heard(None));
    }

    #[test]
    fn an_unheard_process_is_named_until_twice_the_bound_then_known_isolated() {
        let mut i = Isolation::new(T);
        let now = i.started;
        assert!(i.names_unheard(Some(Duration::from_millis(300)), now));
        assert!(i.names_unheard(Some(T * 2), now));
        assert!(!i.names_unheard(Some(T * 2 + Duration::from_millis(1)), now));
        // Never heard: named while this node has not listened for twice
        // the bound (it just started: the process may be serving), not
        // after (then it has been silent for that long).
        assert!(i.names_unheard(None, now), "a node that just started");
        assert!(i.names_unheard(None, now + T * 2));
        assert!(!i.names_unheard(None, now + T * 2 + Duration::from_millis(1)));
        // An isolated origin waits for every process it cannot hear.
        i.tick(Instant::now(), 1, 3);
        assert!(i.names_unheard(Some(T * 10), now + T * 10));
        assert!(i.names_unheard(None, now + T * 10));
    }

    #[test]
    fn after_being_cut_off_a_node_names_whom_it_has_not_heard_again() {
        // The cut-off side: it heard a majority again at `contact` (one
        // peer back, `a`); `b`, on the majority's side all along, was last
        // heard before the cut, 5 s ago. Its silence was this node's, so
        // `b` is serving: named, however long ago it was heard.
        let mut i = Isolation::new(T);
        let t0 = i.started + T * 3;
        i.tick(t0, 3, 3);
        i.tick(t0 + T, 1, 3);
        let contact = t0 + T * 5;
        i.tick(contact, 2, 3);
        assert!(!i.isolated());
        let now = contact + Duration::from_millis(200);
        assert!(i.names_unheard(Some(T * 5), now), "not heard since the cut");
        assert!(i.names_unheard(Some(Duration::from_millis(100)), now));
        // Heard again after contact, then silent past twice the bound: its
        // own silence, isolated by its own rule.
        let later = contact + T * 10;
        assert!(!i.names_unheard(Some(T * 3), later));
        // Never isolated: the silence was the other side's.
        let mut j = Isolation::new(T);
        j.tick(t0, 3, 3);
        assert!(!j.names_unheard(Some(T * 5), t0 + T * 5));
    }
}
