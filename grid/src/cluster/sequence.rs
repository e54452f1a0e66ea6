//! The per-origin invalidation sequence table: which invalidations this node
//! has applied from each origin, and when it must drop everything because it
//! may have missed one.
//!
//! Each node numbers the invalidations it originates 1, 2, 3, … per
//! generation. They do not arrive in order: concurrent invalidations travel
//! on separate streams, a client's reach other clients through relays, and
//! the sender of a put learns the owner's number from the put's reply. So a
//! receiver keeps, per origin, a receive window: the highest number below
//! which everything was applied, and the *holes* above it (numbers not yet
//! seen below the highest one seen, each with the time it opened). A late
//! message fills its hole and is applied like any other. A hole is taken
//! for loss, and everything dropped (the receiver cannot tell which entries
//! the missed message concerned), only when
//! - it stays open longer than the hole bound (the node sets it to the
//!   longest a put or an acknowledged invalidation may take, so a message
//!   still in flight is never taken for lost), or
//! - the window overflows: a number more than the window size above the
//!   last contiguous one, or more open holes than the window holds.
//!
//! The high-water mark of an origin, which the origin itself sends over
//! its own connection ([`super::high_water`]), opens holes for the tail it
//! names that was not seen (a tail missed while the origin went quiet is
//! found by the same bound). A mark only ever comes in the origin's own
//! word: a mark above the origin's real one would make a receiver take
//! numbers never sent as seen after the flush, and miss a later tail. A flush covers every hole of every origin, so
//! all are closed by it. Messages from an older generation of an origin
//! than one already seen are refused; a newer generation restarts the
//! numbering (and the older one's open holes can never fill: a flush).
//!
//! The table is pure: no clock (the caller passes `now`), no socket, no
//! lock; the node holds it behind a mutex, calls [`SequenceTable::expire`]
//! every gossip interval and applies the decisions.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Holes one origin may have open, and how far above the last contiguous
/// number a message may be, before the window overflows.
pub(crate) const WINDOW: u64 = 4096;

/// What to do with an invalidation that arrived from `origin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// Apply it; if `flush_first`, drop everything first (the window
    /// overflowed, or a new generation left holes that cannot fill).
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

/// One origin's receive window.
#[derive(Debug)]
struct Window {
    generation: u64,
    /// Every number up to this one was applied (or flushed over).
    contiguous: u64,
    /// The highest number seen (or named by a high-water mark).
    highest: u64,
    /// Numbers in `contiguous + 1 .. highest` not yet seen, with the time
    /// each opened.
    holes: BTreeMap<u64, Instant>,
}

impl Window {
    fn new(generation: u64) -> Self {
        Window {
            generation,
            contiguous: 0,
            highest: 0,
            holes: BTreeMap::new(),
        }
    }

    /// Notes that `sequence` was seen (or, for a high-water mark, that
    /// everything up to it was sent). False if the window overflows.
    fn see(&mut self, sequence: u64, now: Instant, mark_only: bool) -> bool {
        if sequence <= self.contiguous {
            return true;
        }
        if sequence > self.contiguous.saturating_add(WINDOW) {
            return false;
        }
        // Numbers come from peers: near u64::MAX a plain `+ 1` would panic
        // (in debug builds) while the caller holds the table's lock.
        let next = self.highest.max(self.contiguous).saturating_add(1);
        let opened =
            sequence.saturating_sub(next) + u64::from(mark_only && sequence > self.highest);
        if self.holes.len() as u64 + opened > WINDOW {
            return false;
        }
        if sequence > self.highest {
            let first = next;
            let last = if mark_only { sequence } else { sequence - 1 };
            for s in first..=last {
                self.holes.insert(s, now);
            }
            self.highest = sequence;
        } else if !mark_only {
            self.holes.remove(&sequence);
        }
        self.contiguous = match self.holes.keys().next() {
            Some(first) => first - 1,
            None => self.highest,
        };
        true
    }

    /// Everything up to the highest number counts as applied: a flush
    /// covered it.
    fn close(&mut self, up_to: u64) {
        self.highest = self.highest.max(up_to);
        self.contiguous = self.highest;
        self.holes.clear();
    }
}

/// Per origin node id: its generation and receive window.
#[derive(Debug)]
pub(crate) struct SequenceTable {
    windows: HashMap<String, Window>,
    hole_bound: Duration,
    flushes: u64,
}

impl SequenceTable {
    /// A table whose holes are loss after `hole_bound`.
    pub(crate) fn new(hole_bound: Duration) -> Self {
        SequenceTable {
            windows: HashMap::new(),
            hole_bound,
            flushes: 0,
        }
    }

    /// A flush is decided: it covers every open hole of every origin.
    fn flushed(&mut self) -> bool {
        self.flushes += 1;
        for w in self.windows.values_mut() {
            w.close(0);
        }
        true
    }

    /// The node dropped everything for another reason (it was cut off from
    /// the cluster): the flush covers every open hole, as one of this
    /// table's own would, without counting as one.
    pub(crate) fn covered_by_flush(&mut self) {
        for w in self.windows.values_mut() {
            w.close(0);
        }
    }

    /// Records an invalidation `sequence` from `origin` at `generation`,
    /// received at `now`.
    pub(crate) fn receive(
        &mut self,
        origin: &str,
        generation: u64,
        sequence: u64,
        now: Instant,
    ) -> Received {
        let window = self
            .windows
            .entry(origin.to_string())
            .or_insert_with(|| Window::new(generation));
        if generation < window.generation {
            return Received::StaleGeneration {
                known: window.generation,
            };
        }
        let mut flush = false;
        if generation > window.generation {
            // The older generation's open holes can never fill.
            flush = !window.holes.is_empty();
            *window = Window::new(generation);
        }
        if !window.see(sequence, now, false) {
            window.close(sequence);
            flush = true;
        }
        if flush {
            self.flushed();
        }
        Received::Apply { flush_first: flush }
    }

    /// Records an origin's high-water mark (its own word) at `now`: numbers
    /// up to it not seen yet become holes. `flush_first` if the window
    /// overflowed (drop everything now); a mark of a generation older than
    /// one already seen is refused, and changes nothing.
    pub(crate) fn observe_high_water(
        &mut self,
        origin: &str,
        generation: u64,
        hwm: u64,
        now: Instant,
    ) -> Received {
        let window = self
            .windows
            .entry(origin.to_string())
            .or_insert_with(|| Window::new(generation));
        if generation < window.generation {
            return Received::StaleGeneration {
                known: window.generation,
            };
        }
        let mut flush = false;
        if generation > window.generation {
            flush = !window.holes.is_empty();
            *window = Window::new(generation);
        }
        if !window.see(hwm, now, true) {
            window.close(hwm);
            flush = true;
        }
        if flush {
            self.flushed();
        }
        Received::Apply { flush_first: flush }
    }

    /// True if a hole has been open longer than the bound at `now`: the
    /// message is taken for lost, and every hole is closed by the flush the
    /// caller applies.
    pub(crate) fn expire(&mut self, now: Instant) -> bool {
        !self.overdue(now).is_empty() && self.flushed()
    }

    /// The origins with a hole open longer than the bound at `now` (whose
    /// loss [`SequenceTable::expire`] would flush for).
    pub(crate) fn overdue(&self, now: Instant) -> Vec<String> {
        let bound = self.hole_bound;
        self.windows
            .iter()
            .filter(|(_, w)| {
                w.holes
                    .values()
                    .next()
                    .is_some_and(|opened| now.saturating_duration_since(*opened) > bound)
            })
            .map(|(origin, _)| origin.clone())
            .collect()
    }

    /// Forgets the windows of origin processes `keep` no longer names (they
    /// left, were removed, or restarted), except those with holes open: a
    /// hole must still be found lost. So the table follows the processes
    /// that are in the grid now, not every one ever heard from. A message
    /// from a forgotten origin later is a first contact: above 1 it opens
    /// holes for every number before it (a flush if they do not fill),
    /// never a gap-free start.
    pub(crate) fn prune(&mut self, keep: impl Fn(&str, u64) -> bool) {
        self.windows
            .retain(|origin, w| !w.holes.is_empty() || keep(origin, w.generation));
    }

    /// Origins whose window the table holds.
    #[cfg(test)]
    pub(crate) fn origins(&self) -> usize {
        self.windows.len()
    }

    /// Flushes this table decided (window overflows, lost holes, stranded
    /// generations).
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Holes open now, over every origin.
    pub(crate) fn open_holes(&self) -> usize {
        self.windows.values().map(|w| w.holes.len()).sum()
    }

    /// The number below which everything from `origin` was applied, with
    /// its generation.
    #[cfg(test)]
    fn applied(&self, origin: &str) -> Option<(u64, u64)> {
        self.windows
            .get(origin)
            .map(|w| (w.generation, w.contiguous))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APPLY: Received = Received::Apply { flush_first: false };
    const FLUSH: Received = Received::Apply { flush_first: true };
    const BOUND: Duration = Duration::from_secs(2);

    fn table() -> (SequenceTable, Instant) {
        (SequenceTable::new(BOUND), Instant::now())
    }

    #[test]
    fn consecutive_sequences_apply_without_a_flush() {
        let (mut t, now) = table();
        assert_eq!(t.receive("a", 7, 1, now), APPLY);
        assert_eq!(t.receive("a", 7, 2, now), APPLY);
        assert_eq!(t.receive("a", 7, 3, now), APPLY);
        assert_eq!(t.applied("a"), Some((7, 3)));
        assert_eq!(t.open_holes(), 0);
    }

    #[test]
    fn reordered_messages_within_the_window_fill_their_holes_without_a_flush() {
        let (mut t, now) = table();
        // Concurrent sends on separate streams: 3 overtakes 1 and 2.
        assert_eq!(t.receive("a", 7, 3, now), APPLY);
        assert_eq!(t.open_holes(), 2);
        assert_eq!(t.receive("a", 7, 1, now), APPLY);
        assert_eq!(t.applied("a"), Some((7, 1)));
        assert_eq!(t.receive("a", 7, 2, now), APPLY);
        assert_eq!(t.applied("a"), Some((7, 3)));
        assert_eq!(t.open_holes(), 0);
        assert!(!t.expire(now + BOUND * 10));
        assert_eq!(t.flushes(), 0);
    }

    #[test]
    fn a_hole_open_within_the_bound_is_not_loss() {
        let (mut t, now) = table();
        t.receive("a", 7, 1, now);
        t.receive("a", 7, 3, now);
        assert!(!t.expire(now + BOUND));
        assert_eq!(t.receive("a", 7, 2, now + BOUND), APPLY);
        assert_eq!(t.flushes(), 0);
    }

    #[test]
    fn a_hole_open_past_the_bound_is_loss_and_flushes_once() {
        let (mut t, now) = table();
        t.receive("a", 7, 1, now);
        assert_eq!(t.receive("a", 7, 3, now), APPLY);
        assert!(t.expire(now + BOUND + Duration::from_millis(1)));
        assert!(!t.expire(now + BOUND * 2), "the flush closed the hole");
        // The message itself, late, is applied without another flush.
        assert_eq!(t.receive("a", 7, 2, now + BOUND * 2), APPLY);
        assert_eq!(t.receive("a", 7, 4, now + BOUND * 2), APPLY);
        assert_eq!(t.flushes(), 1);
    }

    #[test]
    fn one_flush_closes_the_holes_of_every_origin() {
        let (mut t, now) = table();
        t.receive("a", 7, 2, now);
        t.receive("b", 3, 5, now + BOUND);
        assert!(t.expire(now + BOUND + Duration::from_millis(1)));
        assert_eq!(t.open_holes(), 0);
        assert!(!t.expire(now + BOUND * 3));
    }

    #[test]
    fn a_message_beyond_the_window_flushes_at_once() {
        let (mut t, now) = table();
        t.receive("a", 7, 1, now);
        assert_eq!(t.receive("a", 7, 2 + WINDOW, now), FLUSH);
        assert_eq!(t.applied("a"), Some((7, 2 + WINDOW)));
        assert_eq!(t.receive("a", 7, 3 + WINDOW, now), APPLY);
        assert_eq!(t.open_holes(), 0);
    }

    #[test]
    fn first_contact_above_one_opens_holes_that_are_loss_if_they_stay_open() {
        let (mut t, now) = table();
        assert_eq!(t.receive("a", 7, 5, now), APPLY);
        assert_eq!(t.open_holes(), 4);
        assert!(t.expire(now + BOUND * 2));
    }

    #[test]
    fn an_older_generation_is_refused_and_a_newer_one_restarts_numbering() {
        let (mut t, now) = table();
        t.receive("a", 7, 4, now);
        assert_eq!(
            t.receive("a", 6, 5, now),
            Received::StaleGeneration { known: 7 }
        );
        // Generation 7 left holes 1..=3 that can never fill.
        assert_eq!(t.receive("a", 8, 1, now), FLUSH);
        assert_eq!(t.receive("a", 8, 2, now), APPLY);
        assert_eq!(t.receive("b", 1, 1, now), APPLY, "origins are independent");
        assert_eq!(t.receive("a", 9, 1, now), APPLY, "no holes left behind");
    }

    #[test]
    fn a_high_water_mark_above_what_was_seen_opens_holes_for_the_tail() {
        let (mut t, now) = table();
        t.receive("a", 7, 1, now);
        assert_eq!(t.observe_high_water("a", 7, 1, now), APPLY);
        // The mark arrived before messages 2 and 3 arrived.
        assert_eq!(t.observe_high_water("a", 7, 3, now), APPLY);
        assert_eq!(t.open_holes(), 2);
        assert_eq!(t.receive("a", 7, 3, now), APPLY);
        assert_eq!(t.receive("a", 7, 2, now), APPLY);
        assert!(!t.expire(now + BOUND * 2));
        // A tail that never arrives is loss once the bound passes.
        assert_eq!(t.observe_high_water("a", 7, 5, now + BOUND * 2), APPLY);
        assert!(t.expire(now + BOUND * 3 + Duration::from_millis(1)));
        assert_eq!(t.receive("a", 7, 4, now + BOUND * 3), APPLY);
        assert_eq!(t.flushes(), 1);
    }

    #[test]
    fn a_mark_from_an_unheard_origin_opens_holes_unless_zero() {
        let (mut t, now) = table();
        assert_eq!(t.observe_high_water("quiet", 3, 0, now), APPLY);
        assert_eq!(t.observe_high_water("chatty", 3, 2, now), APPLY);
        assert_eq!(t.open_holes(), 2);
        // A new generation's mark starts from zero (the old holes cannot
        // fill: a flush).
        assert_eq!(t.observe_high_water("chatty", 4, 0, now), FLUSH);
        assert_eq!(t.receive("chatty", 4, 1, now), APPLY);
    }

    #[test]
    fn origins_that_left_are_forgotten_unless_a_hole_is_open() {
        let (mut t, now) = table();
        for i in 0..1_000 {
            t.receive(&format!("client-{i}"), 1, 1, now);
        }
        t.receive("member", 4, 1, now);
        t.receive("gone-with-a-hole", 2, 3, now);
        assert_eq!(t.origins(), 1_002);
        t.prune(|origin, generation| origin == "member" && generation == 4);
        assert_eq!(t.origins(), 2, "the member and the origin with a hole");
        // The hole is still found lost.
        assert!(t.expire(now + BOUND * 2));
        t.prune(|origin, _| origin == "member");
        assert_eq!(t.origins(), 1);
        // A forgotten origin that speaks again above 1 is not a gap-free
        // first contact: the numbers before it are holes.
        assert_eq!(t.receive("client-7", 1, 5, now), APPLY);
        assert_eq!(t.open_holes(), 4);
        assert!(t.expire(now + BOUND * 3));
    }

    #[test]
    fn a_flush_decided_elsewhere_closes_the_holes_without_counting() {
        let (mut t, now) = table();
        t.receive("a", 7, 3, now);
        t.covered_by_flush();
        assert_eq!(t.open_holes(), 0);
        assert!(!t.expire(now + BOUND * 2));
        assert_eq!(t.receive("a", 7, 4, now), APPLY);
        assert_eq!(t.flushes(), 0);
    }

    #[test]
    fn a_mark_from_an_older_generation_is_refused_and_changes_nothing() {
        let (mut t, now) = table();
        t.receive("a", 7, 1, now);
        assert_eq!(
            t.observe_high_water("a", 6, 50, now),
            Received::StaleGeneration { known: 7 }
        );
        assert_eq!(t.applied("a"), Some((7, 1)));
        assert_eq!(t.open_holes(), 0);
    }

    #[test]
    fn numbers_up_to_the_largest_do_not_overflow_the_window() {
        let (mut t, now) = table();
        // Far beyond the first contact's window: a flush, then from there.
        assert_eq!(t.receive("a", 7, u64::MAX - 10, now), FLUSH);
        assert_eq!(t.receive("a", 7, u64::MAX, now), APPLY);
        assert_eq!(t.open_holes(), 9);
        // Numbers below the highest one seen, and marks at it, fill or
        // leave the holes without wrapping.
        assert_eq!(t.receive("a", 7, u64::MAX - 5, now), APPLY);
        assert_eq!(t.observe_high_water("a", 7, u64::MAX, now), APPLY);
        assert_eq!(t.observe_high_water("a", 7, u64::MAX - 1, now), APPLY);
        assert_eq!(t.open_holes(), 8);
        for s in (u64::MAX - 10..u64::MAX).rev() {
            assert_eq!(t.receive("a", 7, s, now), APPLY);
        }
        assert_eq!(t.applied("a"), Some((7, u64::MAX)));
        assert_eq!(t.receive("a", 7, u64::MAX, now), APPLY);
        assert_eq!(t.observe_high_water("b", 1, u64::MAX, now), FLUSH);
        assert!(!t.expire(now + BOUND * 2));
    }
}
