//! When a newcomer may keep copies: not before every process that could
//! invalidate them has shown, in its own word, that it sends to the
//! newcomer.
//!
//! A process that has just started (a first start, a restart, a rejoin as a
//! new generation) reads through the owners at once, but another process
//! sends its invalidations only to the processes it knows of (gossip
//! reports them live, or its view admits them). Until it knows the
//! newcomer, its invalidation returns `Ok` without the newcomer, and a copy
//! the newcomer kept meanwhile would outlive that `Ok`.
//!
//! Both halves of the rule are here, pure (no clock, no socket):
//!
//! - The sender ([`FanOuts`]): each fan-out of an invalidation (and each
//!   relay of a client's) takes a ticket before it picks its targets. A
//!   receiver first seen as a target at ticket `t` is told this node's
//!   high-water mark (mark 0 included, see
//!   [`MarkDelivery::due_own`](super::high_water::MarkDelivery::due_own))
//!   only once every fan-out with a ticket below `t` has ended. Such a
//!   fan-out may have picked its targets without the receiver; once it has
//!   ended, its invalidation was applied by the key's owner (or it did not
//!   return `Ok`), so a read the receiver starts afterwards cannot fetch
//!   what it removed. Every later fan-out includes the receiver.
//! - The newcomer ([`CopyGate`]): once its view admits it, it waits for
//!   that mark from every admitted process that sends it invalidations (a
//!   member hears from everyone; a client from the members, which relay
//!   the other clients'), then opens for good. Only operations that began
//!   after it opened keep what they fetched, put or loaded as a copy; the
//!   ones before read through the owner and keep nothing.
//!
//! A process that does not tell its mark (cut off, paused) keeps the gate
//! shut until the membership removes it: the newcomer then serves reads
//! through the owners without keeping copies, which costs round trips,
//! never freshness.

use std::collections::{BTreeSet, HashMap};

use super::high_water::Process;

/// The fan-outs of this node's invalidations (and relays) in flight, by
/// ticket, and the sequence numbers of this node's own among them.
#[derive(Debug, Default)]
pub(crate) struct FanOuts {
    next: u64,
    open: BTreeSet<u64>,
    /// The sequence numbers of this node's own invalidations in flight.
    sequences: BTreeSet<u64>,
}

impl FanOuts {
    /// A fan-out starts, before it picks its targets: its ticket. `sequence`
    /// is its number if it is this node's own invalidation (a relay has
    /// none).
    pub(crate) fn begin(&mut self, sequence: Option<u64>) -> u64 {
        let ticket = self.next;
        self.next += 1;
        self.open.insert(ticket);
        self.sequences.extend(sequence);
        ticket
    }

    /// The fan-out holding `ticket` (and `sequence`) ended (answered,
    /// failed or dropped).
    pub(crate) fn end(&mut self, ticket: u64, sequence: Option<u64>) {
        self.open.remove(&ticket);
        if let Some(s) = sequence {
            self.sequences.remove(&s);
        }
    }

    /// The settled mark (see `super::settling`): the highest sequence whose
    /// fan-out, and every earlier one, ended; `last` is the last number
    /// used, taken under the same lock as the numbers `begin` was given.
    pub(crate) fn settled_mark(&self, last: u64) -> u64 {
        self.sequences.first().map_or(last, |&oldest| oldest - 1)
    }

    /// The ticket the next fan-out will take: a receiver first seen now is
    /// in the targets of every fan-out from this one on.
    pub(crate) fn now(&self) -> u64 {
        self.next
    }

    /// True once every fan-out with a ticket below `ticket` has ended.
    pub(crate) fn settled_before(&self, ticket: u64) -> bool {
        self.open.first().is_none_or(|&oldest| oldest >= ticket)
    }
}

/// A newcomer's gate: shut until every process that sends it
/// invalidations told it its mark, then open until the membership removes
/// this generation, and shut for good from then on.
#[derive(Debug, Default)]
pub(crate) struct CopyGate {
    /// The newest generation of each node whose own mark reached this
    /// process (one entry per node id: a peer that reconnects as ever newer
    /// generations does not grow it).
    told: HashMap<String, u64>,
    /// Opened (it shuts again only at removal: a process admitted later is
    /// admitted at a newer epoch, whose view holds this one).
    open: bool,
    /// The membership removed this generation: no one sends it
    /// invalidations, and it is never admitted again.
    removed: bool,
}

impl CopyGate {
    /// `from` told this process its own mark, over its own connection.
    pub(crate) fn told_by(&mut self, from: Process) {
        if !self.open {
            let (id, generation) = from;
            let newest = self.told.entry(id).or_insert(generation);
            *newest = (*newest).max(generation);
        }
    }

    /// Checks the gate against the current view: `admitted` says whether
    /// the view admits this process, `senders` are the admitted processes
    /// that send it invalidations. True once open.
    pub(crate) fn check(&mut self, admitted: bool, senders: &[Process]) -> bool {
        if !self.open
            && !self.removed
            && admitted
            && senders
                .iter()
                .all(|(id, generation)| self.told.get(id) == Some(generation))
        {
            self.open = true;
            self.told = HashMap::new();
        }
        self.open
    }

    /// The membership removed this generation: the gate shuts for good (a
    /// new generation starts with a gate of its own).
    pub(crate) fn removed(&mut self) {
        self.open = false;
        self.removed = true;
        self.told = HashMap::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, generation: u64) -> Process {
        (id.to_string(), generation)
    }

    #[test]
    fn a_receiver_is_settled_only_once_every_earlier_fan_out_ended() {
        let mut f = FanOuts::default();
        let a = f.begin(None);
        let b = f.begin(None);
        let seen = f.now();
        assert!(!f.settled_before(seen));
        let c = f.begin(None);
        f.end(a, None);
        assert!(!f.settled_before(seen), "b picked its targets before");
        f.end(b, None);
        assert!(f.settled_before(seen), "c picked them after");
        assert!(!f.settled_before(c + 1));
        f.end(c, None);
        assert!(f.settled_before(u64::MAX));
    }

    #[test]
    fn the_settled_mark_stops_below_the_oldest_own_fan_out_in_flight() {
        let mut f = FanOuts::default();
        assert_eq!(f.settled_mark(0), 0);
        let a = f.begin(Some(1));
        let relay = f.begin(None);
        let b = f.begin(Some(2));
        assert_eq!(f.settled_mark(2), 0);
        f.end(b, Some(2));
        assert_eq!(f.settled_mark(2), 0, "1 is still in flight");
        f.end(a, Some(1));
        assert_eq!(f.settled_mark(2), 2, "a relay holds no number back");
        f.end(relay, None);
        assert_eq!(f.settled_mark(2), 2);
    }

    #[test]
    fn the_gate_opens_once_admitted_and_told_by_every_sender_and_stays_open() {
        let mut g = CopyGate::default();
        let senders = [p("m1", 1), p("m2", 3)];
        g.told_by(p("m1", 1));
        assert!(!g.check(true, &senders), "m2 has not told it");
        g.told_by(p("m2", 2));
        assert!(!g.check(true, &senders), "an older generation's word");
        g.told_by(p("m2", 3));
        assert!(!g.check(false, &senders), "not admitted yet");
        assert!(g.check(true, &senders));
        // A view change later (a sender gone, another admitted) keeps it.
        assert!(g.check(true, &[p("m1", 1), p("m4", 1)]));
        assert!(g.check(false, &[p("m5", 1)]));
    }

    #[test]
    fn a_peer_reconnecting_as_ever_newer_generations_holds_one_entry() {
        let mut g = CopyGate::default();
        for generation in 1..=10_000 {
            g.told_by(p("rogue", generation));
        }
        g.told_by(p("rogue", 3));
        assert_eq!(g.told.len(), 1);
        assert!(
            !g.check(true, &[p("rogue", 3)]),
            "an older word after a newer one"
        );
        assert!(g.check(true, &[p("rogue", 10_000)]));
    }

    #[test]
    fn a_removed_generation_shuts_its_gate_for_good() {
        let mut g = CopyGate::default();
        g.told_by(p("a", 1));
        assert!(g.check(true, &[p("a", 1)]));
        g.removed();
        assert!(!g.check(false, &[p("a", 1)]), "shut at removal");
        g.told_by(p("a", 1));
        assert!(
            !g.check(true, &[p("a", 1)]),
            "a stale view that still admits it, and a mark, do not reopen it"
        );
    }

    #[test]
    fn a_process_alone_in_its_view_opens_at_admission() {
        let mut g = CopyGate::default();
        assert!(!g.check(false, &[]));
        assert!(g.check(true, &[]));
    }
}
