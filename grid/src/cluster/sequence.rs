//! The per-origin invalidation sequence table: which invalidations this node
//! has applied from each origin, and when it must drop everything because it
//! may have missed one.
//!
//! Each node numbers the invalidations it originates 1, 2, 3, … per
//! generation. A receiver remembers, per origin, the generation and the
//! highest sequence it applied. It drops everything it holds (it cannot tell
//! which entries the missed messages concerned) when:
//! - a message skips a sequence number (a gap),
//! - it hears from an origin for the first time at a sequence above 1,
//! - the origin's gossiped high-water mark is above what it applied (a
//!   missed tail, detected even when the origin has gone quiet).
//!
//! Messages from an older generation of an origin than one already seen are
//! refused. The table is pure: no clock, no socket, no lock; the node holds
//! it behind a mutex and applies the decisions.

use std::collections::HashMap;

/// What to do with an invalidation that arrived from `origin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Apply it; if `flush_first`, drop everything first (a gap).
    Apply {
        /// Messages may have been missed: drop what cannot be proven fresh.
        flush_first: bool,
    },
    /// The origin's generation is older than one already seen: refuse it.
    StaleGeneration {
        /// The newest generation seen from the origin.
        known: u64,
    },
}

/// Per origin node id: (generation, highest sequence applied).
#[derive(Debug, Default)]
pub(crate) struct SequenceTable {
    applied: HashMap<String, (u64, u64)>,
}

impl SequenceTable {
    /// Records an invalidation `sequence` from `origin` at `generation`.
    pub(crate) fn receive(&mut self, origin: &str, generation: u64, sequence: u64) -> Received {
        match self.applied.get_mut(origin) {
            Some((known, _)) if generation < *known => Received::StaleGeneration { known: *known },
            Some((known, last)) if generation == *known => {
                let gap = sequence > last.saturating_add(1);
                *last = (*last).max(sequence);
                Received::Apply { flush_first: gap }
            }
            _ => {
                // First word from this origin, or from a newer generation of
                // it: anything before `sequence` may have been missed.
                self.applied
                    .insert(origin.to_string(), (generation, sequence));
                Received::Apply {
                    flush_first: sequence > 1,
                }
            }
        }
    }

    /// Records an origin's gossiped high-water mark; true if it is above
    /// what was applied (a missed tail: drop everything). The table then
    /// counts the tail as seen, so one missed tail flushes once.
    pub(crate) fn observe_high_water(&mut self, origin: &str, generation: u64, hwm: u64) -> bool {
        let entry = self
            .applied
            .entry(origin.to_string())
            .or_insert((generation, 0));
        if generation > entry.0 {
            *entry = (generation, 0);
        }
        if generation == entry.0 && hwm > entry.1 {
            entry.1 = hwm;
            return true;
        }
        false
    }

    /// The highest sequence applied from `origin`, with its generation.
    #[cfg(test)]
    fn applied(&self, origin: &str) -> Option<(u64, u64)> {
        self.applied.get(origin).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPLY: Received = Received::Apply { flush_first: false };
    const FLUSH: Received = Received::Apply { flush_first: true };

    #[test]
    fn consecutive_sequences_apply_without_a_flush() {
        let mut t = SequenceTable::default();
        assert_eq!(t.receive("a", 7, 1), APPLY);
        assert_eq!(t.receive("a", 7, 2), APPLY);
        assert_eq!(t.receive("a", 7, 3), APPLY);
        assert_eq!(t.applied("a"), Some((7, 3)));
    }

    #[test]
    fn a_skipped_sequence_flushes_once() {
        let mut t = SequenceTable::default();
        assert_eq!(t.receive("a", 7, 1), APPLY);
        assert_eq!(t.receive("a", 7, 3), FLUSH);
        assert_eq!(t.receive("a", 7, 4), APPLY);
    }

    #[test]
    fn a_late_message_below_the_mark_applies_without_lowering_it() {
        let mut t = SequenceTable::default();
        t.receive("a", 7, 1);
        t.receive("a", 7, 3);
        assert_eq!(t.receive("a", 7, 2), APPLY);
        assert_eq!(t.applied("a"), Some((7, 3)));
    }

    #[test]
    fn first_contact_above_one_flushes() {
        let mut t = SequenceTable::default();
        assert_eq!(t.receive("a", 7, 5), FLUSH);
        let mut t = SequenceTable::default();
        assert_eq!(t.receive("a", 7, 1), APPLY);
    }

    #[test]
    fn an_older_generation_is_refused_and_a_newer_one_restarts_numbering() {
        let mut t = SequenceTable::default();
        t.receive("a", 7, 4);
        assert_eq!(t.receive("a", 6, 5), Received::StaleGeneration { known: 7 });
        assert_eq!(t.receive("a", 8, 1), APPLY);
        assert_eq!(t.receive("a", 8, 2), APPLY);
        assert_eq!(t.receive("b", 1, 1), APPLY, "origins are independent");
    }

    #[test]
    fn a_high_water_mark_above_what_was_applied_flushes_once() {
        let mut t = SequenceTable::default();
        t.receive("a", 7, 1);
        assert!(!t.observe_high_water("a", 7, 1));
        assert!(t.observe_high_water("a", 7, 3), "missed tail 2..=3");
        assert!(!t.observe_high_water("a", 7, 3), "counted once");
        // The late messages themselves are not a gap any more.
        assert_eq!(t.receive("a", 7, 4), APPLY);
    }

    #[test]
    fn a_mark_from_an_unheard_origin_flushes_unless_zero() {
        let mut t = SequenceTable::default();
        assert!(!t.observe_high_water("quiet", 3, 0));
        assert!(t.observe_high_water("chatty", 3, 2));
        // A new generation's mark starts from zero.
        assert!(!t.observe_high_water("chatty", 4, 0));
        assert_eq!(t.receive("chatty", 4, 1), APPLY);
    }

    #[test]
    fn a_mark_from_an_older_generation_is_ignored() {
        let mut t = SequenceTable::default();
        t.receive("a", 7, 1);
        assert!(!t.observe_high_water("a", 6, 50));
        assert_eq!(t.applied("a"), Some((7, 1)));
    }
}
