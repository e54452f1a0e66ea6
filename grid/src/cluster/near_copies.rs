//! A member's near copies: the copies of keys it does not own, kept in the
//! same store as the keys it owns, within a budget of bytes, so that copies
//! never crowd out owned entries.
//!
//! The store does not know an entry's kind, and the hit path must not ask
//! (no ownership hash on a hit). So the member records each copy it keeps,
//! oldest first, with the bytes the store charges for it; when the copies
//! exceed the budget, the oldest are dropped. The record may overstate what
//! the store holds (a copy invalidated or evicted since is still counted
//! until its turn comes), which only drops copies early: a cache may always
//! miss. A client needs none of this: its store holds nothing but copies.

use std::collections::VecDeque;
use std::sync::Mutex;

/// The copies a member kept, oldest first, and their bytes.
pub(super) struct NearCopies {
    budget: u64,
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    copies: VecDeque<(String, u64)>,
    bytes: u64,
}

impl NearCopies {
    /// Copies may take up to `budget` bytes of the store.
    pub(super) fn new(budget: u64) -> Self {
        NearCopies {
            budget,
            kept: Mutex::default(),
        }
    }

    /// A copy of `key` charged `bytes` was stored: the keys of the oldest
    /// copies to drop, so that the copies stay within the budget (the new
    /// one included, if it alone exceeds it).
    pub(super) fn kept(&self, key: &str, bytes: u64) -> Vec<String> {
        let mut kept = self.kept.lock().expect("near copies");
        kept.copies.push_back((key.to_string(), bytes));
        kept.bytes += bytes;
        let mut dropped = Vec::new();
        while kept.bytes > self.budget {
            let Some((key, bytes)) = kept.copies.pop_front() else {
                break;
            };
            kept.bytes -= bytes;
            dropped.push(key);
        }
        dropped
    }

    /// Bytes of the copies on record.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.kept.lock().expect("near copies").bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_within_the_budget_are_kept() {
        let near = NearCopies::new(100);
        assert!(near.kept("a", 40).is_empty());
        assert!(near.kept("b", 60).is_empty());
        assert_eq!(near.bytes(), 100);
    }

    #[test]
    fn past_the_budget_the_oldest_copies_go_first() {
        let near = NearCopies::new(100);
        near.kept("a", 40);
        near.kept("b", 40);
        assert_eq!(near.kept("c", 50), vec!["a".to_string()]);
        assert_eq!(near.bytes(), 90);
        assert_eq!(near.kept("d", 100), vec!["b".to_string(), "c".to_string()]);
        assert_eq!(near.bytes(), 100);
    }

    #[test]
    fn a_copy_larger_than_the_budget_is_dropped_itself() {
        let near = NearCopies::new(10);
        near.kept("a", 5);
        assert_eq!(
            near.kept("big", 11),
            vec!["a".to_string(), "big".to_string()]
        );
        assert_eq!(near.bytes(), 0);
    }

    #[test]
    fn a_key_kept_twice_is_charged_twice_until_each_record_goes() {
        // Overstating only drops copies early.
        let near = NearCopies::new(100);
        near.kept("a", 60);
        assert_eq!(near.kept("a", 60), vec!["a".to_string()]);
        assert_eq!(near.bytes(), 60);
    }
}
