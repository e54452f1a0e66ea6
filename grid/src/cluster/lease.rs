//! The owner's lease table: one load per key in the whole grid.
//!
//! The owner of a key arbitrates `get_or_load` misses from every node. The
//! first asker is granted a lease (a token) and runs its loader; every later
//! asker is parked as a waiter on that lease and answered when the holder's
//! fill lands (no polling). The rules, all decided here:
//! - an invalidation of the key, of one of the lease's tags, or a flush
//!   *voids* the lease: its fill is refused (not stored) but still handed to
//!   the waiters that joined before the invalidation, and the next asker is
//!   granted a new lease;
//! - a lease whose holder stays silent past the lease timeout *expires*: the
//!   first waiter is granted a fresh lease, the others stay parked on it;
//! - tokens are fenced: they are salted with the owner's generation (a fill
//!   from before a restart names no lease) and a lease remembers the epoch it
//!   was granted at (a fill after the membership moved is refused, and an
//!   epoch change voids the leases of keys this node no longer owns).
//!
//! Pure: events and a time in, decisions out. `W` is whatever the driver
//! needs to answer a parked asker (a reply channel; a name in tests).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The answer to an asker.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Acquire<W> {
    /// The asker holds the lease: run the loader, then fill with `token`.
    Granted {
        /// Names the lease in the fill.
        token: u64,
        /// The asker, handed back to be answered.
        asker: W,
    },
    /// The asker is parked on the key's lease until it is filled, abandoned,
    /// or expires.
    Joined,
}

/// Why a fill was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No lease has this token for this key (forged, expired, from an older
    /// generation of this owner, or already filled).
    Unknown,
    /// The key or one of its tags was invalidated after the grant.
    Voided,
    /// The lease was granted at another membership epoch.
    OldEpoch,
}

/// What to do with a fill.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Filled<W> {
    /// Store the value and answer the waiters with it.
    Store {
        /// The askers parked on the lease.
        waiters: Vec<W>,
    },
    /// Do not store; the waiters (if any) still get the value.
    Refused {
        /// Why.
        reason: Refusal,
        /// The askers parked on the lease.
        waiters: Vec<W>,
    },
}

/// A lease that ran out; its first waiter holds the next one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Regranted<W> {
    /// The key.
    pub(crate) key: String,
    /// The new lease's token.
    pub(crate) token: u64,
    /// The asker that now holds it.
    pub(crate) asker: W,
}

struct Lease<W> {
    key: String,
    tags: Vec<String>,
    epoch: u64,
    expires: Instant,
    voided: bool,
    waiters: Vec<W>,
}

/// Every lease this owner has granted and not yet seen filled, abandoned or
/// expired.
pub(crate) struct LeaseTable<W> {
    salt: u64,
    next: u64,
    timeout: Duration,
    /// key -> token of the lease new askers join.
    current: HashMap<String, u64>,
    leases: HashMap<u64, Lease<W>>,
}

impl<W> LeaseTable<W> {
    /// A table for an owner of `generation` whose leases last `timeout`.
    pub(crate) fn new(generation: u64, timeout: Duration) -> Self {
        LeaseTable {
            salt: super::ownership::fmix64(generation),
            next: 0,
            timeout,
            current: HashMap::new(),
            leases: HashMap::new(),
        }
    }

    fn grant(&mut self, key: &str, tags: Vec<String>, epoch: u64, now: Instant) -> u64 {
        let token = loop {
            self.next += 1;
            let token = self.salt.wrapping_add(self.next);
            if token != 0 && !self.leases.contains_key(&token) {
                break token;
            }
        };
        self.leases.insert(
            token,
            Lease {
                key: key.to_string(),
                tags,
                epoch,
                expires: now + self.timeout,
                voided: false,
                waiters: Vec::new(),
            },
        );
        self.current.insert(key.to_string(), token);
        token
    }

    /// An asker missed `key` (with `tags`) at `epoch`: grant it the lease or
    /// park it on the one in progress.
    pub(crate) fn acquire(
        &mut self,
        key: &str,
        tags: &[String],
        epoch: u64,
        now: Instant,
        asker: W,
    ) -> Acquire<W> {
        if let Some(lease) = self.current.get(key).and_then(|t| self.leases.get_mut(t)) {
            lease.waiters.push(asker);
            return Acquire::Joined;
        }
        let token = self.grant(key, tags.to_vec(), epoch, now);
        Acquire::Granted { token, asker }
    }

    /// The holder of `token` sends the value it loaded for `key`; the
    /// membership is at `epoch`.
    pub(crate) fn fill(&mut self, key: &str, token: u64, epoch: u64) -> Filled<W> {
        let Some(lease) = self.leases.get(&token) else {
            return Filled::Refused {
                reason: Refusal::Unknown,
                waiters: Vec::new(),
            };
        };
        if lease.key != key {
            return Filled::Refused {
                reason: Refusal::Unknown,
                waiters: Vec::new(),
            };
        }
        let lease = self.take(token).expect("present");
        if lease.voided {
            Filled::Refused {
                reason: Refusal::Voided,
                waiters: lease.waiters,
            }
        } else if lease.epoch != epoch {
            Filled::Refused {
                reason: Refusal::OldEpoch,
                waiters: lease.waiters,
            }
        } else {
            Filled::Store {
                waiters: lease.waiters,
            }
        }
    }

    /// The holder's loader failed or panicked: the waiters get the error and
    /// the next asker a new lease. A token that names no lease for `key`
    /// changes nothing.
    pub(crate) fn abandon(&mut self, key: &str, token: u64) -> Vec<W> {
        match self.leases.get(&token) {
            Some(lease) if lease.key == key => self.take(token).expect("present").waiters,
            _ => Vec::new(),
        }
    }

    fn take(&mut self, token: u64) -> Option<Lease<W>> {
        let lease = self.leases.remove(&token)?;
        if self.current.get(&lease.key) == Some(&token) {
            self.current.remove(&lease.key);
        }
        Some(lease)
    }

    fn void_where(&mut self, mut hit: impl FnMut(&Lease<W>) -> bool) -> usize {
        let mut voided = 0;
        let leases = &mut self.leases;
        self.current.retain(|_, token| {
            let lease = leases.get_mut(token).expect("current leases exist");
            if hit(lease) {
                lease.voided = true;
                voided += 1;
                false
            } else {
                true
            }
        });
        voided
    }

    /// `key` was invalidated; returns how many leases were voided.
    pub(crate) fn invalidate_key(&mut self, key: &str) -> usize {
        self.void_where(|l| l.key == key)
    }

    /// Entries with any of `tags` were invalidated.
    pub(crate) fn invalidate_tags(&mut self, tags: &[String]) -> usize {
        self.void_where(|l| l.tags.iter().any(|t| tags.contains(t)))
    }

    /// Everything was invalidated.
    pub(crate) fn flush(&mut self) -> usize {
        self.void_where(|_| true)
    }

    /// The membership moved to `epoch`: leases of keys this node no longer
    /// owns are dropped, and their waiters returned (to be told to ask the
    /// new owner).
    pub(crate) fn change_epoch(&mut self, owns: impl Fn(&str) -> bool) -> Vec<W> {
        let gone: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| !owns(&l.key))
            .map(|(t, _)| *t)
            .collect();
        gone.into_iter()
            .flat_map(|t| self.take(t).expect("present").waiters)
            .collect()
    }

    /// Leases whose holder was silent until `now` expire. A lease with
    /// waiters passes to its first waiter (or, if the key already has a
    /// newer lease, its waiters join that one).
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<Regranted<W>> {
        let due: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        let mut regranted = Vec::new();
        for token in due {
            let Some(lease) = self.take(token) else {
                continue;
            };
            let mut waiters = lease.waiters.into_iter();
            if let Some(current) = self
                .current
                .get(&lease.key)
                .and_then(|t| self.leases.get_mut(t))
            {
                current.waiters.extend(waiters);
                continue;
            }
            let Some(asker) = waiters.next() else {
                continue;
            };
            let token = self.grant(&lease.key, lease.tags, lease.epoch, now);
            let fresh = self.leases.get_mut(&token).expect("just granted");
            fresh.waiters.extend(waiters);
            regranted.push(Regranted {
                key: lease.key,
                token,
                asker,
            });
        }
        regranted
    }

    /// When the next lease expires, for the driver's timer.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.expires).min()
    }

    /// Leases outstanding (current and voided).
    pub(crate) fn len(&self) -> usize {
        self.leases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);
    const EPOCH: u64 = 4;

    fn table() -> (LeaseTable<&'static str>, Instant) {
        (LeaseTable::new(1234, T), Instant::now())
    }

    fn granted(a: Acquire<&'static str>) -> u64 {
        match a {
            Acquire::Granted { token, .. } => token,
            Acquire::Joined => panic!("expected a grant"),
        }
    }

    #[test]
    fn the_first_asker_is_granted_and_later_ones_wait_for_its_fill() {
        let (mut t, now) = table();
        let token = granted(t.acquire("k", &[], EPOCH, now, "a"));
        assert_eq!(t.acquire("k", &[], EPOCH, now, "b"), Acquire::Joined);
        assert_eq!(t.acquire("k", &[], EPOCH, now, "c"), Acquire::Joined);
        assert_eq!(
            t.fill("k", token, EPOCH),
            Filled::Store {
                waiters: vec!["b", "c"]
            }
        );
        assert_eq!(t.len(), 0);
        // The next miss (after an eviction, say) gets a new lease.
        let again = granted(t.acquire("k", &[], EPOCH, now, "d"));
        assert_ne!(again, token);
    }

    #[test]
    fn keys_have_independent_leases() {
        let (mut t, now) = table();
        let a = granted(t.acquire("a", &[], EPOCH, now, "x"));
        let b = granted(t.acquire("b", &[], EPOCH, now, "y"));
        assert_ne!(a, b);
        assert!(matches!(
            t.fill("a", b, EPOCH),
            Filled::Refused {
                reason: Refusal::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn a_forged_or_repeated_token_is_refused() {
        let (mut t, now) = table();
        let token = granted(t.acquire("k", &[], EPOCH, now, "a"));
        assert_eq!(
            t.fill("k", token ^ 1, EPOCH),
            Filled::Refused {
                reason: Refusal::Unknown,
                waiters: vec![]
            }
        );
        assert!(matches!(t.fill("k", token, EPOCH), Filled::Store { .. }));
        assert!(matches!(
            t.fill("k", token, EPOCH),
            Filled::Refused {
                reason: Refusal::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn a_key_invalidation_voids_the_lease_but_its_waiters_still_get_the_fill() {
        let (mut t, now) = table();
        let old = granted(t.acquire("k", &[], EPOCH, now, "a"));
        assert_eq!(t.acquire("k", &[], EPOCH, now, "b"), Acquire::Joined);
        assert_eq!(t.invalidate_key("k"), 1);
        // After the invalidation a new asker starts a new load.
        let new = granted(t.acquire("k", &[], EPOCH, now, "c"));
        assert_eq!(t.acquire("k", &[], EPOCH, now, "d"), Acquire::Joined);
        assert_eq!(
            t.fill("k", old, EPOCH),
            Filled::Refused {
                reason: Refusal::Voided,
                waiters: vec!["b"]
            }
        );
        assert_eq!(
            t.fill("k", new, EPOCH),
            Filled::Store { waiters: vec!["d"] }
        );
    }

    #[test]
    fn tag_invalidations_void_only_leases_with_the_tag_and_flush_voids_all() {
        let (mut t, now) = table();
        let users = vec!["users".to_string()];
        let a = granted(t.acquire("a", &users, EPOCH, now, "x"));
        let b = granted(t.acquire("b", &[], EPOCH, now, "y"));
        assert_eq!(t.invalidate_tags(&["orders".to_string()]), 0);
        assert_eq!(t.invalidate_tags(&users), 1);
        assert!(matches!(
            t.fill("a", a, EPOCH),
            Filled::Refused {
                reason: Refusal::Voided,
                ..
            }
        ));
        let c = granted(t.acquire("c", &[], EPOCH, now, "z"));
        assert_eq!(t.flush(), 2);
        assert!(matches!(
            t.fill("b", b, EPOCH),
            Filled::Refused {
                reason: Refusal::Voided,
                ..
            }
        ));
        assert!(matches!(
            t.fill("c", c, EPOCH),
            Filled::Refused {
                reason: Refusal::Voided,
                ..
            }
        ));
    }

    #[test]
    fn an_abandoned_lease_hands_its_waiters_the_error_and_leaves_nothing() {
        let (mut t, now) = table();
        let token = granted(t.acquire("k", &[], EPOCH, now, "a"));
        t.acquire("k", &[], EPOCH, now, "b");
        assert_eq!(t.abandon("k", token ^ 1), Vec::<&str>::new());
        assert_eq!(t.abandon("other", token), Vec::<&str>::new());
        assert_eq!(t.abandon("k", token), vec!["b"]);
        assert_eq!(t.len(), 0);
        granted(t.acquire("k", &[], EPOCH, now, "c"));
    }

    #[test]
    fn a_silent_holder_loses_the_lease_to_the_first_waiter() {
        let (mut t, now) = table();
        let old = granted(t.acquire("k", &[], EPOCH, now, "a"));
        t.acquire("k", &[], EPOCH, now, "b");
        t.acquire("k", &[], EPOCH, now, "c");
        assert_eq!(t.next_expiry(), Some(now + T));
        assert!(t.expire(now + T - Duration::from_millis(1)).is_empty());
        let later = now + T;
        let r = t.expire(later);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].key.as_str(), r[0].asker), ("k", "b"));
        // The old holder's fill is refused; the new holder's is stored and
        // answers the remaining waiter.
        assert!(matches!(
            t.fill("k", old, EPOCH),
            Filled::Refused {
                reason: Refusal::Unknown,
                ..
            }
        ));
        assert_eq!(t.next_expiry(), Some(later + T));
        assert_eq!(
            t.fill("k", r[0].token, EPOCH),
            Filled::Store { waiters: vec!["c"] }
        );
    }

    #[test]
    fn an_expired_lease_without_waiters_is_dropped() {
        let (mut t, now) = table();
        granted(t.acquire("k", &[], EPOCH, now, "a"));
        assert!(t.expire(now + T).is_empty());
        assert_eq!(t.len(), 0);
        assert_eq!(t.next_expiry(), None);
    }

    #[test]
    fn waiters_of_an_expired_voided_lease_join_the_newer_one() {
        let (mut t, now) = table();
        granted(t.acquire("k", &[], EPOCH, now, "a"));
        t.acquire("k", &[], EPOCH, now, "b");
        t.invalidate_key("k");
        let later = now + Duration::from_secs(1);
        let new = granted(t.acquire("k", &[], EPOCH, later, "c"));
        assert!(t.expire(now + T).is_empty());
        assert_eq!(
            t.fill("k", new, EPOCH),
            Filled::Store { waiters: vec!["b"] }
        );
    }

    #[test]
    fn a_fill_from_another_epoch_is_refused() {
        let (mut t, now) = table();
        let token = granted(t.acquire("k", &[], EPOCH, now, "a"));
        t.acquire("k", &[], EPOCH, now, "b");
        assert_eq!(
            t.fill("k", token, EPOCH + 1),
            Filled::Refused {
                reason: Refusal::OldEpoch,
                waiters: vec!["b"]
            }
        );
    }

    #[test]
    fn an_epoch_change_drops_leases_of_keys_no_longer_owned() {
        let (mut t, now) = table();
        granted(t.acquire("mine", &[], EPOCH, now, "a"));
        let gone = granted(t.acquire("moved", &[], EPOCH, now, "b"));
        t.acquire("moved", &[], EPOCH, now, "c");
        assert_eq!(t.change_epoch(|k| k == "mine"), vec!["c"]);
        assert!(matches!(
            t.fill("moved", gone, EPOCH),
            Filled::Refused {
                reason: Refusal::Unknown,
                ..
            }
        ));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn tokens_are_fenced_by_the_owner_generation() {
        let now = Instant::now();
        let mut before = LeaseTable::new(1, T);
        let mut after = LeaseTable::new(2, T);
        let old = granted(before.acquire("k", &[], EPOCH, now, "a"));
        let new = granted(after.acquire("k", &[], EPOCH, now, "a"));
        assert_ne!(old, new);
        assert!(matches!(
            after.fill("k", old, EPOCH),
            Filled::Refused {
                reason: Refusal::Unknown,
                ..
            }
        ));
    }
}
