//! Telling every node this node's invalidation high-water mark, in its own
//! word.
//!
//! A receiver finds a tail of invalidations it missed (the origin went quiet
//! after them) only by learning the origin's high-water mark: the numbers up
//! to it it has not seen become holes in its receive window
//! ([`super::sequence`]). The mark once travelled in gossip, where anyone who
//! gossips can write any node's state: a forged high mark made receivers
//! flush once and then take the forged numbers as seen, hiding a later
//! missed tail. So the origin sends its mark itself, as a `HighWater` request
//! over its own connection (the receiver takes it only from the origin, see
//! [`super::authority::takes_high_water`]), to each node it sends
//! invalidations to, every gossip interval until that node has acknowledged
//! the current mark. A node that was cut off acknowledges nothing, so it is
//! told again once it is reachable.
//!
//! [`MarkDelivery`] decides whom to tell: pure, no clock, no socket; the
//! maintenance task drives it.

use std::collections::HashMap;

/// A process: node id and generation.
pub(crate) type Process = (String, u64);

/// What one receiver has of this node's mark.
#[derive(Debug, Default, Clone, Copy)]
struct Told {
    /// The highest mark it acknowledged.
    acknowledged: u64,
    /// A request is on its way (one at a time per receiver).
    in_flight: bool,
}

/// Which receivers still have to be told this node's mark.
#[derive(Debug, Default)]
pub(crate) struct MarkDelivery {
    told: HashMap<Process, Told>,
}

impl MarkDelivery {
    /// The receivers among `targets` to send `mark` to now: those that have
    /// not acknowledged it and have no request on its way. Nothing while the
    /// mark is 0 (there is nothing to miss). Receivers that are no longer
    /// targets are forgotten, so the table follows the grid as it is.
    pub(crate) fn due(&mut self, mark: u64, targets: &[Process]) -> Vec<Process> {
        self.told.retain(|p, _| targets.contains(p));
        if mark == 0 {
            return Vec::new();
        }
        let mut due = Vec::new();
        for p in targets {
            let told = self.told.entry(p.clone()).or_default();
            if told.acknowledged < mark && !told.in_flight {
                told.in_flight = true;
                due.push(p.clone());
            }
        }
        due
    }

    /// The request to `to` ended: acknowledged for `mark`, or not (`None`:
    /// refused, unreachable, timed out; it is sent again next time).
    pub(crate) fn answered(&mut self, to: &Process, acknowledged: Option<u64>) {
        if let Some(told) = self.told.get_mut(to) {
            told.in_flight = false;
            if let Some(mark) = acknowledged {
                told.acknowledged = told.acknowledged.max(mark);
            }
        }
    }

    /// Receivers this node keeps a record for.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.told.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, generation: u64) -> Process {
        (id.to_string(), generation)
    }

    #[test]
    fn a_mark_is_sent_to_each_receiver_until_it_acknowledges_it() {
        let mut d = MarkDelivery::default();
        let targets = [p("a", 1), p("b", 1)];
        assert!(d.due(0, &targets).is_empty(), "nothing to miss yet");
        assert_eq!(d.due(3, &targets), targets);
        // One request at a time per receiver.
        assert!(d.due(3, &targets).is_empty());
        d.answered(&p("a", 1), Some(3));
        d.answered(&p("b", 1), None); // cut off
        assert_eq!(d.due(3, &targets), [p("b", 1)]);
        d.answered(&p("b", 1), Some(3));
        assert!(d.due(3, &targets).is_empty(), "everyone has the mark");
        // A new invalidation: everyone is told again.
        assert_eq!(d.due(4, &targets), targets);
    }

    #[test]
    fn a_late_answer_for_an_older_mark_does_not_count_for_the_newer_one() {
        let mut d = MarkDelivery::default();
        let targets = [p("a", 1)];
        assert_eq!(d.due(3, &targets), targets);
        d.answered(&p("a", 1), Some(3));
        assert_eq!(d.due(5, &targets), targets);
        d.answered(&p("a", 1), Some(3));
        assert_eq!(d.due(5, &targets), targets, "5 still unacknowledged");
    }

    #[test]
    fn receivers_that_are_no_longer_targets_are_forgotten_and_a_restart_is_told_afresh() {
        let mut d = MarkDelivery::default();
        assert_eq!(d.due(2, &[p("a", 1), p("b", 1)]).len(), 2);
        d.answered(&p("a", 1), Some(2));
        d.answered(&p("b", 1), Some(2));
        // b restarted: its new generation has not heard the mark.
        assert_eq!(d.due(2, &[p("a", 1), p("b", 2)]), [p("b", 2)]);
        assert_eq!(d.len(), 2);
        // An answer from a forgotten receiver changes nothing.
        d.answered(&p("b", 1), Some(9));
        assert_eq!(d.len(), 2);
    }
}
