//! When a node the membership removed starts again as a new generation.
//!
//! A member wrongly declared dead (paused, or cut off past the failure
//! timeout) is removed by the Raft leader, and its generation is never
//! admitted again (see [`super::authority`]). Once it learns it was removed
//! it flushes its cache and owns nothing; the way back in is a new
//! generation on the same address, seeded with the members it last knew.
//! [`super::attachment`] performs that restart; this rule decides when:
//! only a node that was removed (not one that leaves or left), never twice
//! at once, and after a failed attempt only once a steady retry interval has
//! passed. Pure: the state and the time in, a decision out.

use std::time::{Duration, Instant};

/// Where the node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Attached to the cluster (or not yet admitted).
    Attached,
    /// A restart as a new generation is in progress.
    Rejoining,
    /// `leave()` started, or the grid was dropped: never again.
    Left,
}

/// The decision "removed, and should start again as a new generation now".
#[derive(Debug)]
pub(crate) struct RejoinRule {
    enabled: bool,
    retry: Duration,
    phase: Phase,
    not_before: Option<Instant>,
    attempts: u64,
    rejoins: u64,
}

impl RejoinRule {
    /// A rule that rejoins if `enabled`, waiting `retry` after a failed
    /// attempt before the next one.
    pub(crate) fn new(enabled: bool, retry: Duration) -> Self {
        RejoinRule {
            enabled,
            retry,
            phase: Phase::Attached,
            not_before: None,
            attempts: 0,
            rejoins: 0,
        }
    }

    /// Whether to start a new generation now, given whether the current
    /// one was `removed`. True starts an attempt: the caller reports its end
    /// with [`finished`](RejoinRule::finished).
    pub(crate) fn should_rejoin(&mut self, removed: bool, now: Instant) -> bool {
        if !self.enabled || !removed || self.phase != Phase::Attached {
            return false;
        }
        if self.not_before.is_some_and(|t| now < t) {
            return false;
        }
        self.phase = Phase::Rejoining;
        self.attempts += 1;
        true
    }

    /// The attempt started by [`should_rejoin`](RejoinRule::should_rejoin)
    /// ended: `ok` if the new generation runs.
    pub(crate) fn finished(&mut self, ok: bool, now: Instant) {
        if self.phase != Phase::Rejoining {
            return;
        }
        self.phase = Phase::Attached;
        if ok {
            self.rejoins += 1;
            self.not_before = None;
        } else {
            self.not_before = Some(now + self.retry);
        }
    }

    /// `leave()` started or the grid is gone: no attempt starts from now on.
    pub(crate) fn left(&mut self) {
        self.phase = Phase::Left;
    }

    /// True once [`left`](RejoinRule::left) was called.
    pub(crate) fn has_left(&self) -> bool {
        self.phase == Phase::Left
    }

    /// Attempts started, successful or not.
    #[cfg(test)]
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts
    }

    /// Attempts that started a new generation.
    pub(crate) fn rejoins(&self) -> u64 {
        self.rejoins
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Duration = Duration::from_secs(1);

    #[test]
    fn a_node_that_was_not_removed_stays() {
        let mut rule = RejoinRule::new(true, RETRY);
        assert!(!rule.should_rejoin(false, Instant::now()));
        assert_eq!(rule.attempts(), 0);
    }

    #[test]
    fn a_removed_node_rejoins_once_at_a_time() {
        let now = Instant::now();
        let mut rule = RejoinRule::new(true, RETRY);
        assert!(rule.should_rejoin(true, now));
        assert!(
            !rule.should_rejoin(true, now),
            "no second attempt while one runs"
        );
        rule.finished(true, now);
        assert_eq!(rule.rejoins(), 1);
        // The new generation is removed in its turn: it rejoins again.
        assert!(rule.should_rejoin(true, now));
        rule.finished(true, now);
        assert_eq!((rule.attempts(), rule.rejoins()), (2, 2));
    }

    #[test]
    fn a_failed_attempt_is_retried_after_the_retry_interval() {
        let now = Instant::now();
        let mut rule = RejoinRule::new(true, RETRY);
        assert!(rule.should_rejoin(true, now));
        rule.finished(false, now);
        assert_eq!(rule.rejoins(), 0);
        assert!(!rule.should_rejoin(true, now + RETRY / 2));
        assert!(rule.should_rejoin(true, now + RETRY));
        rule.finished(true, now + RETRY);
        assert_eq!((rule.attempts(), rule.rejoins()), (2, 1));
    }

    #[test]
    fn a_node_that_leaves_never_rejoins() {
        let now = Instant::now();
        let mut rule = RejoinRule::new(true, RETRY);
        rule.left();
        assert!(rule.has_left());
        assert!(!rule.should_rejoin(true, now));
        // An attempt that ends after leave() started does not revive it.
        let mut rule = RejoinRule::new(true, RETRY);
        assert!(rule.should_rejoin(true, now));
        rule.left();
        rule.finished(true, now);
        assert!(rule.has_left());
        assert!(!rule.should_rejoin(true, now + RETRY));
        assert_eq!(rule.rejoins(), 0);
    }

    #[test]
    fn a_disabled_rule_stays_removed() {
        let mut rule = RejoinRule::new(false, RETRY);
        assert!(!rule.should_rejoin(true, Instant::now()));
        assert_eq!(rule.attempts(), 0);
    }
}
