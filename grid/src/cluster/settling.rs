//! Tag and flush invalidations this node applied that may not have reached
//! every owner yet.
//!
//! A key invalidation goes to the key's owner before anyone else, so a
//! node that applied it and then misses can only fetch from an owner that
//! applied it too. A tag or flush has no single owner: its origin sends it
//! to every process at once, and a receiver that applied it may miss a key
//! of that tag and fetch it from an owner that has not applied it yet,
//! then keep the old value as a near copy after the origin's call
//! returned. So until the origin shows that the fan-out ended (every
//! target acknowledged or was named), the receiver keeps no copy of
//! anything it fetches, loads or writes (reads still answer).
//!
//! The origin shows it with its high-water mark, which it sends only up to
//! the highest sequence whose fan-out, and every earlier one, ended (its
//! settled mark). An entry whose mark never comes (the origin died, or its
//! mark was lost) is forgotten after a bound longer than the origin's own
//! wait for acknowledgements: by then the origin has named the processes
//! that did not answer.
//!
//! Pure: the driver passes the time, and turns "settled or not" into the
//! grid's copy gate (see `crate::near`).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Notes kept per origin at most: past it the oldest is forgotten (an
/// origin sending that many tag invalidations within the expiry bound keeps
/// this node from keeping copies all the same).
const MAX_NOTES_PER_ORIGIN: usize = 4096;

/// Unsettled tag and flush invalidations, per origin process.
#[derive(Debug, Default)]
pub(crate) struct Settling {
    /// Each origin's (id, generation) unsettled sequences, with when each
    /// was applied. Each note expires on its own: a stream of newer ones
    /// never keeps an old one alive.
    pending: HashMap<(String, u64), BTreeMap<u64, Instant>>,
}

impl Settling {
    /// A tag or flush invalidation with `sequence` from `origin` is about
    /// to be applied here.
    pub(crate) fn applied(&mut self, origin: &str, generation: u64, sequence: u64, now: Instant) {
        let notes = self
            .pending
            .entry((origin.to_string(), generation))
            .or_default();
        notes.entry(sequence).or_insert(now);
        while notes.len() > MAX_NOTES_PER_ORIGIN {
            notes.pop_first();
        }
    }

    /// `origin` showed that every fan-out of its up to `mark` ended.
    pub(crate) fn released(&mut self, origin: &str, generation: u64, mark: u64) {
        let key = (origin.to_string(), generation);
        if let Some(notes) = self.pending.get_mut(&key) {
            *notes = notes.split_off(&(mark.saturating_add(1)));
            if notes.is_empty() || mark == u64::MAX {
                self.pending.remove(&key);
            }
        }
    }

    /// Forgets each note applied `after` ago or earlier.
    pub(crate) fn expire(&mut self, now: Instant, after: Duration) {
        self.pending.retain(|_, notes| {
            notes.retain(|_, at| now.saturating_duration_since(*at) < after);
            !notes.is_empty()
        });
    }

    /// True when nothing applied here waits for its origin's word.
    pub(crate) fn is_settled(&self) -> bool {
        self.pending.is_empty()
    }

    /// Unsettled notes, over every origin.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_once_the_origin_marks_the_highest_sequence_applied() {
        let t0 = Instant::now();
        let mut s = Settling::default();
        assert!(s.is_settled());
        s.applied("a", 1, 5, t0);
        s.applied("a", 1, 7, t0);
        s.applied("b", 2, 3, t0);
        assert_eq!(s.len(), 3);
        s.released("a", 1, 6);
        assert_eq!(s.len(), 2, "5 settled, 7 is still in flight");
        s.released("a", 2, 9);
        assert_eq!(s.len(), 2, "another generation's word");
        s.released("a", 1, 7);
        s.released("b", 2, 4);
        assert!(s.is_settled());
    }

    #[test]
    fn an_origin_that_never_marks_is_forgotten_after_the_bound() {
        let t0 = Instant::now();
        let bound = Duration::from_secs(4);
        let mut s = Settling::default();
        s.applied("a", 1, 1, t0);
        s.applied("b", 1, 1, t0 + Duration::from_secs(3));
        s.expire(t0 + Duration::from_secs(3), bound);
        assert_eq!(s.len(), 2);
        s.expire(t0 + bound, bound);
        assert_eq!(s.len(), 1, "a is forgotten, b applied later stays");
        // A newer note does not keep an older one alive.
        s.applied("b", 1, 2, t0 + Duration::from_secs(6));
        s.expire(t0 + Duration::from_secs(8), bound);
        assert_eq!(s.len(), 1, "b's first note expired, its second stays");
        s.expire(t0 + Duration::from_secs(10), bound);
        assert!(s.is_settled());
    }

    #[test]
    fn an_origin_flooding_notes_holds_a_bounded_number() {
        let t0 = Instant::now();
        let mut s = Settling::default();
        for seq in 1..=10_000 {
            s.applied("a", 1, seq, t0);
        }
        assert_eq!(s.len(), MAX_NOTES_PER_ORIGIN);
        s.released("a", 1, 10_000);
        assert!(s.is_settled());
    }
}
