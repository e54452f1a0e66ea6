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
//! A mark reaches a receiver in the origin's word only over a connection
//! between the two; cut that link alone (both still reach a third node, so
//! gossip keeps the receiver from taking itself for cut off) and a missed
//! tail would go unnoticed. So origins also publish their mark in gossip,
//! as a *hint* only: a receiver that sees, for an admitted origin, a
//! gossiped (generation, mark) above what it has from the origin's word
//! opens an episode; if the origin's word does not reach that far within
//! the hole bound, the episode is loss, like a hole, and flushes (once: the
//! flush covers every hint seen so far). A forged hint can at most cause a
//! flush; it never counts as seen, so it cannot hide a tail.
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

/// A gossiped mark above what the origin's own word has brought.
#[derive(Debug, Clone, Copy)]
struct Hint {
    /// The (generation, mark) gossip names.
    named: (u64, u64),
    /// When this node first saw a hint the origin had not confirmed.
    since: Instant,
}

/// Per origin node id: its generation and receive window.
#[derive(Debug)]
pub(crate) struct SequenceTable {
    windows: HashMap<String, Window>,
    /// Open hint episodes, per origin.
    hints: HashMap<String, Hint>,
    /// Per origin, the highest hint a flush has covered (never re-flushed).
    covered: HashMap<String, (u64, u64)>,
    hole_bound: Duration,
    flushes: u64,
}

impl SequenceTable {
    /// A table whose holes are loss after `hole_bound`.
    pub(crate) fn new(hole_bound: Duration) -> Self {
        SequenceTable {
            windows: HashMap::new(),
            hints: HashMap::new(),
            covered: HashMap::new(),
            hole_bound,
            flushes: 0,
        }
    }

    /// A flush is decided: it covers every open hole of every origin.
    fn flushed(&mut self) -> bool {
        self.flushes += 1;
        self.covered_by_flush();
        true
    }

    /// The node dropped everything for another reason (it was cut off from
    /// the cluster): the flush covers every open hole, as one of this
    /// table's own would, without counting as one.
    pub(crate) fn covered_by_flush(&mut self) {
        for w in self.windows.values_mut() {
            w.close(0);
        }
        for (origin, hint) in self.hints.drain() {
            let covered = self.covered.entry(origin).or_insert(hint.named);
            *covered = (*covered).max(hint.named);
        }
    }

    /// What this node has from `origin`'s own word (or a member's relay of
    /// a client's): its generation and the highest number seen or marked.
    fn heard(&self, origin: &str) -> (u64, u64) {
        self.windows
            .get(origin)
            .map_or((0, 0), |w| (w.generation, w.highest))
    }

    /// Gossip says admitted `origin` at `generation` has used numbers up to
    /// `mark` (a hint: anyone who gossips can write it). Above what this
    /// node has from the origin, and above what a flush already covered,
    /// it opens an episode at `now` (or raises the open one, which keeps
    /// its start while the hint it began with is still unconfirmed; under
    /// steady load the origin's word keeps catching up with the hints, so
    /// each starts afresh): unless the origin's own word reaches that far
    /// within the hole bound, [`SequenceTable::expire`] flushes.
    pub(crate) fn hint(&mut self, origin: &str, generation: u64, mark: u64, now: Instant) {
        let named = (generation, mark);
        let heard = self.heard(origin);
        if mark == 0 || named <= heard || self.covered.get(origin).is_some_and(|c| named <= *c) {
            return;
        }
        let hint = self
            .hints
            .entry(origin.to_string())
            .or_insert(Hint { named, since: now });
        if hint.named <= heard {
            *hint = Hint { named, since: now };
        }
        hint.named = hint.named.max(named);
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
        let overdue = !self.overdue(now).is_empty();
        // Episodes the origin's word has since confirmed are over.
        let heard: Vec<(String, (u64, u64))> = self
            .hints
            .keys()
            .map(|o| (o.clone(), self.heard(o)))
            .collect();
        for (origin, heard) in heard {
            if self.hints.get(&origin).is_some_and(|h| h.named <= heard) {
                self.hints.remove(&origin);
            }
        }
        overdue && self.flushed()
    }

    /// The origins with a hole open longer than the bound at `now` (whose
    /// loss [`SequenceTable::expire`] would flush for).
    pub(crate) fn overdue(&self, now: Instant) -> Vec<String> {
        let bound = self.hole_bound;
        let late = |since: &Instant| now.saturating_duration_since(*since) > bound;
        let holes = self
            .windows
            .iter()
            .filter(|(_, w)| w.holes.values().next().is_some_and(late))
            .map(|(origin, _)| origin.clone());
        // A hint the origin's word has not reached within the bound.
        let hints = self
            .hints
            .iter()
            .filter(|(origin, h)| h.named > self.heard(origin) && late(&h.since))
            .map(|(origin, _)| origin.clone());
        let mut overdue: Vec<String> = holes.chain(hints).collect();
        overdue.sort();
        overdue.dedup();
        overdue
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
        self.hints.retain(|origin, h| keep(origin, h.named.0));
        self.covered.retain(|origin, c| keep(origin, c.0));
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
    fn a_gossiped_hint_the_origin_does_not_confirm_within_the_bound_flushes_once() {
        let (mut t, now) = table();
        t.receive("o", 7, 1, now);
        // Gossip says o used 3; o's own word does not come (its link to
        // this node is cut).
        t.hint("o", 7, 3, now);
        assert!(!t.expire(now + BOUND));
        t.hint("o", 7, 3, now + BOUND);
        assert_eq!(t.overdue(now + BOUND * 2), ["o"]);
        assert!(t.expire(now + BOUND * 2));
        // The same hint, gossiped on, is covered: no second flush.
        t.hint("o", 7, 3, now + BOUND * 3);
        assert!(!t.expire(now + BOUND * 5));
        // A hint never counts as seen: o's real 2 and 3 are still new.
        assert_eq!(t.applied("o"), Some((7, 1)));
        // A higher hint is a new episode.
        t.hint("o", 7, 4, now + BOUND * 5);
        assert!(t.expire(now + BOUND * 7));
        assert_eq!(t.flushes(), 2);
    }

    #[test]
    fn a_hint_the_origin_confirms_in_its_own_word_ends_without_a_flush() {
        let (mut t, now) = table();
        t.receive("o", 7, 1, now);
        t.hint("o", 7, 2, now);
        // o's own mark arrives, then the invalidation it names.
        assert_eq!(t.observe_high_water("o", 7, 2, now + BOUND / 2), APPLY);
        assert_eq!(t.receive("o", 7, 2, now + BOUND / 2), APPLY);
        assert!(!t.expire(now + BOUND * 3));
        // Hints at or below what o said, or of an older generation, or
        // zero, open nothing.
        t.hint("o", 7, 2, now);
        t.hint("o", 6, 50, now);
        t.hint("p", 1, 0, now);
        assert!(t.overdue(now + BOUND * 9).is_empty());
        assert_eq!(t.flushes(), 0);
    }

    #[test]
    fn hints_that_the_origin_keeps_confirming_under_steady_load_never_flush() {
        let (mut t, now) = table();
        // Every tick gossip names a mark a little ahead of what has arrived;
        // the origin's numbers reach it before the next tick.
        for tick in 1..100u64 {
            let at = now + BOUND / 4 * tick as u32;
            let (first, half, last) = (10 * (tick - 1) + 1, 10 * tick - 5, 10 * tick);
            t.hint("o", 7, last, at);
            for s in first..=half {
                t.receive("o", 7, s, at);
            }
            assert!(!t.expire(at), "tick {tick}");
            for s in half + 1..=last {
                t.receive("o", 7, s, at + BOUND / 8);
            }
        }
        assert_eq!(t.flushes(), 0);
    }

    #[test]
    fn a_hint_of_a_newer_generation_waits_for_that_generation_s_word() {
        let (mut t, now) = table();
        t.receive("o", 7, 1, now);
        t.hint("o", 8, 1, now);
        assert_eq!(t.receive("o", 8, 1, now), APPLY);
        assert!(!t.expire(now + BOUND * 2));
        // A forgotten origin's hint is forgotten with it.
        t.hint("gone", 1, 5, now);
        t.prune(|origin, _| origin == "o");
        assert!(!t.expire(now + BOUND * 2));
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
