//! The owner's lease table: one load per key in the whole grid.
//!
//! The owner of a key arbitrates `get_or_load` misses from every node. The
//! first asker is granted a lease (a token) and runs its loader; every later
//! asker is parked as a waiter on that lease and answered when the holder's
//! fill lands (no polling). The rules, all decided here:
//! - a lease belongs to the authenticated identity (node id and generation)
//!   it was granted to: a fill or an abandon from anyone else is refused
//!   and leaves the lease in place;
//! - tokens are unguessable: 64 random bits from the driver's source (a
//!   CSPRNG), never a counter, so a peer cannot name another's lease;
//! - an invalidation of the key, of one of the lease's tags, or a flush
//!   *voids* the lease: its fill is refused (not stored) but still handed to
//!   the waiters that joined before the invalidation, and the next asker is
//!   granted a new lease;
//! - a lease whose holder stays silent past the lease timeout *expires*: the
//!   first waiter is granted a fresh lease at the current epoch, the others
//!   stay parked on it;
//! - tokens are fenced: a table lives as long as its owner process (a fill
//!   from before a restart names no lease), and a lease remembers the epoch
//!   it was granted at (a fill after the membership moved is refused, unless
//!   the epoch change kept the key here, which re-stamps the lease; the
//!   leases of keys this node no longer owns are dropped and their waiters
//!   sent to the new owner);
//! - only a process the owner's membership admits may hold a lease: one
//!   that left, was removed, or is not admitted yet may join the lease in
//!   progress, and is otherwise told to ask again later (its fill might
//!   never come, and no view change would end its lease before the
//!   timeout); an expired lease passes to its first waiter that may hold it;
//! - each peer may hold or wait on at most `per_peer` leases at once; beyond
//!   that it is answered `Busy` (back-pressure: ask again later), so a peer
//!   cannot make the owner park unbounded requests.
//!
//! Pure: events and a time in, decisions out. `W` is whatever the driver
//! needs to answer a parked asker (a reply channel; a name in tests).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Who asks: a node's authenticated id and process generation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Holder {
    /// The node id its certificate carries.
    pub(crate) node: String,
    /// Its process generation.
    pub(crate) generation: u64,
}

impl Holder {
    /// The holder `node` of `generation`.
    pub(crate) fn new(node: impl Into<String>, generation: u64) -> Self {
        Holder {
            node: node.into(),
            generation,
        }
    }
}

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
    /// The asker's node already holds or waits on `per_peer` leases: answer
    /// it to ask again later.
    Busy {
        /// The asker, handed back to be answered.
        asker: W,
    },
}

/// Why a fill was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No lease has this token for this key (forged, expired, from an older
    /// generation of this owner, or already filled).
    Unknown,
    /// The lease exists but was granted to another node (or another
    /// generation of it); the lease stays.
    NotHolder,
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
    holder: Holder,
    epoch: u64,
    expires: Instant,
    voided: bool,
    waiters: Vec<(Holder, W)>,
}

/// Where tokens come from: 64 random bits per call.
pub(crate) type TokenSource = Box<dyn FnMut() -> u64 + Send>;

/// Every lease this owner has granted and not yet seen filled, abandoned or
/// expired.
pub(crate) struct LeaseTable<W> {
    tokens: TokenSource,
    timeout: Duration,
    per_peer: usize,
    /// key -> token of the lease new askers join.
    current: HashMap<String, u64>,
    leases: HashMap<u64, Lease<W>>,
    /// Leases held plus waits parked, per asking node.
    load: HashMap<Holder, usize>,
}

impl<W> LeaseTable<W> {
    /// A table whose leases last `timeout`, whose tokens come from `tokens`
    /// and where one node may hold or wait on at most `per_peer` leases.
    pub(crate) fn new(tokens: TokenSource, timeout: Duration, per_peer: usize) -> Self {
        LeaseTable {
            tokens,
            timeout,
            per_peer: per_peer.max(1),
            current: HashMap::new(),
            leases: HashMap::new(),
            load: HashMap::new(),
        }
    }

    fn count(&mut self, who: &Holder, up: bool) {
        if up {
            *self.load.entry(who.clone()).or_default() += 1;
        } else if let Some(n) = self.load.get_mut(who) {
            *n -= 1;
            if *n == 0 {
                self.load.remove(who);
            }
        }
    }

    fn busy(&self, who: &Holder) -> bool {
        self.load.get(who).copied().unwrap_or(0) >= self.per_peer
    }

    fn grant(
        &mut self,
        key: &str,
        tags: Vec<String>,
        holder: Holder,
        epoch: u64,
        now: Instant,
    ) -> u64 {
        let token = loop {
            let token = (self.tokens)();
            if token != 0 && !self.leases.contains_key(&token) {
                break token;
            }
        };
        self.count(&holder, true);
        self.leases.insert(
            token,
            Lease {
                key: key.to_string(),
                tags,
                holder,
                epoch,
                expires: now + self.timeout,
                voided: false,
                waiters: Vec::new(),
            },
        );
        self.current.insert(key.to_string(), token);
        token
    }

    /// `who` missed `key` (with `tags`) at `epoch`: grant it the lease, park
    /// it on the one in progress, or tell it to come back later.
    pub(crate) fn acquire(
        &mut self,
        key: &str,
        tags: &[String],
        epoch: u64,
        now: Instant,
        who: Holder,
        asker: W,
    ) -> Acquire<W> {
        if self.busy(&who) {
            return Acquire::Busy { asker };
        }
        if let Some(lease) = self.current.get(key).and_then(|t| self.leases.get_mut(t)) {
            lease.waiters.push((who.clone(), asker));
            self.count(&who, true);
            return Acquire::Joined;
        }
        let token = self.grant(key, tags.to_vec(), who, epoch, now);
        Acquire::Granted { token, asker }
    }

    /// `who` may wait on a lease but not hold one (the membership does not
    /// admit it: it left, was removed, or is not admitted yet, so its fill
    /// might never come): it joins the lease in progress for `key`, or is
    /// handed back, to be told to ask again later, when there is none or it
    /// is past its bound.
    pub(crate) fn join(&mut self, key: &str, who: Holder, asker: W) -> Result<(), W> {
        if self.busy(&who) {
            return Err(asker);
        }
        match self.current.get(key).and_then(|t| self.leases.get_mut(t)) {
            Some(lease) => {
                lease.waiters.push((who.clone(), asker));
                self.count(&who, true);
                Ok(())
            }
            None => Err(asker),
        }
    }

    /// The lease `token` for `key`, if `from` holds it.
    fn held(&self, key: &str, token: u64, from: &Holder) -> Result<(), Refusal> {
        match self.leases.get(&token) {
            Some(l) if l.key == key && l.holder == *from => Ok(()),
            Some(l) if l.key == key => Err(Refusal::NotHolder),
            _ => Err(Refusal::Unknown),
        }
    }

    /// `from` sends the value it loaded for `key` under `token`; the
    /// membership is at `epoch`.
    pub(crate) fn fill(&mut self, key: &str, token: u64, from: &Holder, epoch: u64) -> Filled<W> {
        if let Err(reason) = self.held(key, token, from) {
            return Filled::Refused {
                reason,
                waiters: Vec::new(),
            };
        }
        let (voided, granted_at, waiters) = self.take(token).expect("present");
        if voided {
            Filled::Refused {
                reason: Refusal::Voided,
                waiters,
            }
        } else if granted_at != epoch {
            Filled::Refused {
                reason: Refusal::OldEpoch,
                waiters,
            }
        } else {
            Filled::Store { waiters }
        }
    }

    /// `from`'s loader failed or panicked: the waiters get the error and the
    /// next asker a new lease. A token that names no lease of `from` for
    /// `key` changes nothing.
    pub(crate) fn abandon(&mut self, key: &str, token: u64, from: &Holder) -> Vec<W> {
        match self.held(key, token, from) {
            Ok(()) => self.take(token).expect("present").2,
            Err(_) => Vec::new(),
        }
    }

    /// Removes a lease: (voided, epoch, waiters).
    fn take(&mut self, token: u64) -> Option<(bool, u64, Vec<W>)> {
        let lease = self.leases.remove(&token)?;
        if self.current.get(&lease.key) == Some(&token) {
            self.current.remove(&lease.key);
        }
        self.count(&lease.holder, false);
        let mut waiters = Vec::with_capacity(lease.waiters.len());
        for (who, w) in lease.waiters {
            self.count(&who, false);
            waiters.push(w);
        }
        Some((lease.voided, lease.epoch, waiters))
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

    /// `key` was invalidated or written; returns how many leases were voided.
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
    /// new owner); the others now belong to `epoch`, so their holders' fills
    /// are stored.
    pub(crate) fn change_epoch(&mut self, epoch: u64, owns: impl Fn(&str) -> bool) -> Vec<W> {
        let mut gone = Vec::new();
        for (token, lease) in self.leases.iter_mut() {
            if owns(&lease.key) {
                lease.epoch = epoch;
            } else {
                gone.push(*token);
            }
        }
        gone.into_iter()
            .flat_map(|t| self.take(t).expect("present").2)
            .collect()
    }

    /// Leases whose holder was silent until `now` expire. A lease with
    /// waiters passes at `epoch` to its first waiter that `may_hold` (the
    /// first waiter if none may), or, if the key already has a newer lease,
    /// its waiters join that one.
    pub(crate) fn expire(
        &mut self,
        now: Instant,
        epoch: u64,
        may_hold: impl Fn(&Holder) -> bool,
    ) -> Vec<Regranted<W>> {
        let due: Vec<u64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires <= now)
            .map(|(t, _)| *t)
            .collect();
        let mut regranted = Vec::new();
        for token in due {
            let Some(lease) = self.leases.get_mut(&token) else {
                continue;
            };
            let (key, tags) = (lease.key.clone(), lease.tags.clone());
            let waiters = std::mem::take(&mut lease.waiters);
            for (who, _) in &waiters {
                self.count(who, false);
            }
            self.take(token);
            let mut waiters = waiters;
            let newer = self.current.get(&key).copied();
            let (token, asker) = match newer {
                Some(t) => (t, None),
                None => {
                    if waiters.is_empty() {
                        continue;
                    }
                    let first = waiters.iter().position(|(w, _)| may_hold(w)).unwrap_or(0);
                    let (who, asker) = waiters.remove(first);
                    (self.grant(&key, tags, who, epoch, now), Some(asker))
                }
            };
            for (who, w) in waiters {
                self.count(&who, true);
                let lease = self.leases.get_mut(&token).expect("current leases exist");
                lease.waiters.push((who, w));
            }
            if let Some(asker) = asker {
                regranted.push(Regranted { key, token, asker });
            }
        }
        regranted
    }

    /// The leases held by a holder `gone` says left (removed from the
    /// membership) end now, as an expiry would end them: its fill will never
    /// come, and its waiters should not wait out the timeout for it. Returns
    /// what [`LeaseTable::expire`] returns.
    pub(crate) fn release_holders(
        &mut self,
        now: Instant,
        epoch: u64,
        gone: impl Fn(&Holder) -> bool,
    ) -> Vec<Regranted<W>> {
        for lease in self.leases.values_mut() {
            if gone(&lease.holder) {
                lease.expires = lease.expires.min(now);
            }
        }
        self.expire(now, epoch, |h| !gone(h))
    }

    /// When the next lease expires, for the driver's timer.
    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.expires).min()
    }

    /// Leases outstanding (current and voided).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.leases.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);
    const EPOCH: u64 = 4;

    /// A deterministic stand-in for the CSPRNG: distinct, scattered values.
    fn counter() -> TokenSource {
        let mut n = 0u64;
        Box::new(move || {
            n += 1;
            n.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        })
    }

    fn table() -> (LeaseTable<&'static str>, Instant) {
        (LeaseTable::new(counter(), T, 64), Instant::now())
    }

    fn who(name: &str) -> Holder {
        Holder::new(name, 1)
    }

    fn granted(a: Acquire<&'static str>) -> u64 {
        match a {
            Acquire::Granted { token, .. } => token,
            other => panic!("expected a grant, got {other:?}"),
        }
    }

    fn ask(
        t: &mut LeaseTable<&'static str>,
        key: &str,
        now: Instant,
        asker: &'static str,
    ) -> Acquire<&'static str> {
        t.acquire(key, &[], EPOCH, now, who(asker), asker)
    }

    #[test]
    fn the_first_asker_is_granted_and_later_ones_wait_for_its_fill() {
        let (mut t, now) = table();
        let token = granted(ask(&mut t, "k", now, "a"));
        assert_eq!(ask(&mut t, "k", now, "b"), Acquire::Joined);
        assert_eq!(ask(&mut t, "k", now, "c"), Acquire::Joined);
        assert_eq!(
            t.fill("k", token, &who("a"), EPOCH),
            Filled::Store {
                waiters: vec!["b", "c"]
            }
        );
        assert_eq!(t.len(), 0);
        // The next miss (after an eviction, say) gets a new lease.
        let again = granted(ask(&mut t, "k", now, "d"));
        assert_ne!(again, token);
    }

    #[test]
    fn keys_have_independent_leases() {
        let (mut t, now) = table();
        let a = granted(ask(&mut t, "a", now, "x"));
        let b = granted(ask(&mut t, "b", now, "x"));
        assert_ne!(a, b);
        assert!(matches!(
            t.fill("a", b, &who("x"), EPOCH),
            Filled::Refused {
                reason: Refusal::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn a_forged_or_repeated_token_is_refused() {
        let (mut t, now) = table();
        let token = granted(ask(&mut t, "k", now, "a"));
        assert_eq!(
            t.fill("k", token ^ 1, &who("a"), EPOCH),
            Filled::Refused {
                reason: Refusal::Unknown,
                waiters: vec![]
            }
        );
        assert!(matches!(
            t.fill("k", token, &who("a"), EPOCH),
            Filled::Store { .. }
        ));
        assert!(matches!(
            t.fill("k", token, &who("a"), EPOCH),
            Filled::Refused {
                reason: Refusal::Unknown,
                ..
            }
        ));
    }

    #[test]
    fn consecutive_tokens_do_not_predict_each_other() {
        // Tokens come from the source, not a counter over a salt: knowing
        // one token says nothing about the next.
        let mut seq = [7u64, 0, 7, 0x5eed_f00d_dead_beef].into_iter();
        let mut t = LeaseTable::new(Box::new(move || seq.next().unwrap()), T, 64);
        let now = Instant::now();
        let first = granted(t.acquire("a", &[], EPOCH, now, who("x"), "x"));
        // 0 is never a token, and a token in use is never handed out twice.
        let second = granted(t.acquire("b", &[], EPOCH, now, who("x"), "x"));
        assert_eq!((first, second), (7, 0x5eed_f00d_dead_beef));
        assert_ne!(second, first.wrapping_add(1));
    }

    #[test]
    fn a_fill_from_another_node_is_refused_and_the_lease_stays_with_its_holder() {
        let (mut t, now) = table();
        let token = granted(ask(&mut t, "k", now, "a"));
        assert_eq!(ask(&mut t, "k", now, "b"), Acquire::Joined);
        // A joiner that learned the token (or guessed it) cannot fill.
        assert_eq!(
            t.fill("k", token, &who("b"), EPOCH),
            Filled::Refused {
                reason: Refusal::NotHolder,
                waiters: vec![]
            }
        );
        // Nor can a restarted holder (another generation).
        assert!(matches!(
            t.fill("k", token, &Holder::new("a", 2), EPOCH),
            Filled::Refused {
                reason: Refusal::NotHolder,
                ..
            }
        ));
        assert_eq!(t.abandon("k", token, &who("b")), Vec::<&str>::new());
        assert_eq!(
            t.fill("k", token, &who("a"), EPOCH),
            Filled::Store { waiters: vec!["b"] }
        );
    }

    #[test]
    fn a_key_invalidation_voids_the_lease_but_its_waiters_still_get_the_fill() {
        let (mut t, now) = table();
        let old = granted(ask(&mut t, "k", now, "a"));
        assert_eq!(ask(&mut t, "k", now, "b"), Acquire::Joined);
        assert_eq!(t.invalidate_key("k"), 1);
        // After the invalidation a new asker starts a new load.
        let new = granted(ask(&mut t, "k", now, "c"));
        assert_eq!(ask(&mut t, "k", now, "d"), Acquire::Joined);
        assert_eq!(
            t.fill("k", old, &who("a"), EPOCH),
            Filled::Refused {
                reason: Refusal::Voided,
                waiters: vec!["b"]
            }
        );
        assert_eq!(
            t.fill("k", new, &who("c"), EPOCH),
            Filled::Store { waiters: vec!["d"] }
        );
    }

    #[test]
    fn tag_invalidations_void_only_leases_with_the_tag_and_flush_voids_all() {
        let (mut t, now) = table();
        let users = vec!["users".to_string()];
        let a = granted(t.acquire("a", &users, EPOCH, now, who("x"), "x"));
        let b = granted(ask(&mut t, "b", now, "y"));
        assert_eq!(t.invalidate_tags(&["orders".to_string()]), 0);
        assert_eq!(t.invalidate_tags(&users), 1);
        assert!(matches!(
            t.fill("a", a, &who("x"), EPOCH),
            Filled::Refused {
                reason: Refusal::Voided,
                ..
            }
        ));
        let c = granted(ask(&mut t, "c", now, "z"));
        assert_eq!(t.flush(), 2);
        assert!(matches!(
            t.fill("b", b, &who("y"), EPOCH),
            Filled::Refused {
                reason: Refusal::Voided,
                ..
            }
        ));
        assert!(matches!(
            t.fill("c", c, &who("z"), EPOCH),
            Filled::Refused {
                reason: Refusal::Voided,
                ..
            }
        ));
    }

    #[test]
    fn an_abandoned_lease_hands_its_waiters_the_error_and_leaves_nothing() {
        let (mut t, now) = table();
        let token = granted(ask(&mut t, "k", now, "a"));
        ask(&mut t, "k", now, "b");
        assert_eq!(t.abandon("k", token ^ 1, &who("a")), Vec::<&str>::new());
        assert_eq!(t.abandon("other", token, &who("a")), Vec::<&str>::new());
        assert_eq!(t.abandon("k", token, &who("a")), vec!["b"]);
        assert_eq!(t.len(), 0);
        granted(ask(&mut t, "k", now, "c"));
    }

    #[test]
    fn a_silent_holder_loses_the_lease_to_the_first_waiter() {
        let (mut t, now) = table();
        let old = granted(ask(&mut t, "k", now, "a"));
        ask(&mut t, "k", now, "b");
        ask(&mut t, "k", now, "c");
        assert_eq!(t.next_expiry(), Some(now + T));
        assert!(t
            .expire(now + T - Duration::from_millis(1), EPOCH, |_| true)
            .is_empty());
        let later = now + T;
        let r = t.expire(later, EPOCH, |_| true);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].key.as_str(), r[0].asker), ("k", "b"));
        // The old holder's fill is refused; the new holder's is stored and
        // answers the remaining waiter.
        assert!(matches!(
            t.fill("k", old, &who("a"), EPOCH),
            Filled::Refused {
                reason: Refusal::Unknown,
                ..
            }
        ));
        assert_eq!(t.next_expiry(), Some(later + T));
        // The lease now belongs to the waiter it passed to, not the old holder.
        assert!(matches!(
            t.fill("k", r[0].token, &who("a"), EPOCH),
            Filled::Refused {
                reason: Refusal::NotHolder,
                ..
            }
        ));
        assert_eq!(
            t.fill("k", r[0].token, &who("b"), EPOCH),
            Filled::Store { waiters: vec!["c"] }
        );
    }

    #[test]
    fn a_lease_that_expires_after_an_epoch_change_is_regranted_at_the_current_epoch() {
        let (mut t, now) = table();
        granted(ask(&mut t, "k", now, "a"));
        ask(&mut t, "k", now, "b");
        // The membership moved on and this node still owns "k".
        t.change_epoch(EPOCH + 1, |_| true);
        let r = t.expire(now + T, EPOCH + 1, |_| true);
        assert_eq!(
            t.fill("k", r[0].token, &who("b"), EPOCH + 1),
            Filled::Store { waiters: vec![] }
        );
    }

    #[test]
    fn a_holder_that_left_loses_its_leases_at_once() {
        let (mut t, now) = table();
        granted(ask(&mut t, "k", now, "a"));
        ask(&mut t, "k", now, "b");
        let other = granted(ask(&mut t, "j", now, "c"));
        let soon = now + Duration::from_millis(1);
        let r = t.release_holders(soon, EPOCH, |h| h.node == "a");
        assert_eq!(r.len(), 1, "only the leaver's lease ends");
        assert_eq!((r[0].key.as_str(), r[0].asker), ("k", "b"));
        assert_eq!(
            t.fill("k", r[0].token, &who("b"), EPOCH),
            Filled::Store { waiters: vec![] }
        );
        assert_eq!(
            t.fill("j", other, &who("c"), EPOCH),
            Filled::Store { waiters: vec![] }
        );
    }

    #[test]
    fn a_process_that_may_not_hold_joins_the_lease_in_progress_or_is_sent_back() {
        let (mut t, now) = table();
        assert_eq!(t.join("k", who("gone"), "gone"), Err("gone"));
        assert_eq!(t.len(), 0, "no lease is granted to it");
        let token = granted(ask(&mut t, "k", now, "a"));
        assert_eq!(t.join("k", who("gone"), "gone"), Ok(()));
        assert_eq!(
            t.fill("k", token, &who("a"), EPOCH),
            Filled::Store {
                waiters: vec!["gone"]
            }
        );
    }

    #[test]
    fn an_expired_lease_passes_to_the_first_waiter_that_may_hold_it() {
        let (mut t, now) = table();
        granted(ask(&mut t, "k", now, "a"));
        ask(&mut t, "k", now, "left");
        ask(&mut t, "k", now, "b");
        let r = t.expire(now + T, EPOCH, |h| h.node != "left");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].asker, "b", "not the waiter that may not hold it");
        assert_eq!(
            t.fill("k", r[0].token, &who("b"), EPOCH),
            Filled::Store {
                waiters: vec!["left"]
            }
        );
        // With nobody else waiting, the first waiter holds it all the same.
        let (mut t, now) = table();
        granted(ask(&mut t, "j", now, "a"));
        ask(&mut t, "j", now, "left");
        let r = t.expire(now + T, EPOCH, |h| h.node != "left");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].asker, "left");
    }

    #[test]
    fn an_expired_lease_without_waiters_is_dropped() {
        let (mut t, now) = table();
        granted(ask(&mut t, "k", now, "a"));
        assert!(t.expire(now + T, EPOCH, |_| true).is_empty());
        assert_eq!(t.len(), 0);
        assert_eq!(t.next_expiry(), None);
    }

    #[test]
    fn waiters_of_an_expired_voided_lease_join_the_newer_one() {
        let (mut t, now) = table();
        granted(ask(&mut t, "k", now, "a"));
        ask(&mut t, "k", now, "b");
        t.invalidate_key("k");
        let later = now + Duration::from_secs(1);
        let new = granted(ask(&mut t, "k", later, "c"));
        assert!(t.expire(now + T, EPOCH, |_| true).is_empty());
        assert_eq!(
            t.fill("k", new, &who("c"), EPOCH),
            Filled::Store { waiters: vec!["b"] }
        );
    }

    #[test]
    fn a_fill_from_another_epoch_is_refused() {
        let (mut t, now) = table();
        let token = granted(ask(&mut t, "k", now, "a"));
        ask(&mut t, "k", now, "b");
        assert_eq!(
            t.fill("k", token, &who("a"), EPOCH + 1),
            Filled::Refused {
                reason: Refusal::OldEpoch,
                waiters: vec!["b"]
            }
        );
    }

    #[test]
    fn an_epoch_change_drops_leases_of_keys_no_longer_owned() {
        let (mut t, now) = table();
        granted(ask(&mut t, "mine", now, "a"));
        let gone = granted(ask(&mut t, "moved", now, "b"));
        ask(&mut t, "moved", now, "c");
        assert_eq!(t.change_epoch(EPOCH + 1, |k| k == "mine"), vec!["c"]);
        assert!(matches!(
            t.fill("moved", gone, &who("b"), EPOCH + 1),
            Filled::Refused {
                reason: Refusal::Unknown,
                ..
            }
        ));
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn an_epoch_change_that_keeps_the_key_here_keeps_the_lease_fillable() {
        let (mut t, now) = table();
        let token = granted(ask(&mut t, "mine", now, "a"));
        ask(&mut t, "mine", now, "b");
        assert!(t.change_epoch(EPOCH + 1, |_| true).is_empty());
        assert_eq!(
            t.fill("mine", token, &who("a"), EPOCH + 1),
            Filled::Store { waiters: vec!["b"] }
        );
    }

    #[test]
    fn a_peer_past_its_bound_is_told_to_wait_and_others_are_not() {
        let mut t = LeaseTable::new(counter(), T, 2);
        let now = Instant::now();
        let one = granted(t.acquire("a", &[], EPOCH, now, who("greedy"), "g"));
        assert_eq!(ask(&mut t, "a", now, "other"), Acquire::Joined);
        assert_eq!(
            t.acquire("a", &[], EPOCH, now, who("greedy"), "g"),
            Acquire::Joined
        );
        // Two outstanding (a lease and a wait): the third ask is refused.
        assert_eq!(
            t.acquire("b", &[], EPOCH, now, who("greedy"), "g"),
            Acquire::Busy { asker: "g" }
        );
        granted(ask(&mut t, "b", now, "other"));
        // Once its lease is filled the peer may ask again.
        t.fill("a", one, &who("greedy"), EPOCH);
        assert_eq!(
            t.acquire("b", &[], EPOCH, now, who("greedy"), "g"),
            Acquire::Joined
        );
    }

    #[test]
    fn tokens_are_fenced_by_the_owner_process() {
        let now = Instant::now();
        let mut before = LeaseTable::new(counter(), T, 64);
        let mut after = LeaseTable::new(Box::new(|| 0xabcd_ef01_2345_6789), T, 64);
        let old = granted(before.acquire("k", &[], EPOCH, now, who("a"), "a"));
        let new = granted(after.acquire("k", &[], EPOCH, now, who("a"), "a"));
        assert_ne!(old, new);
        assert!(matches!(
            after.fill("k", old, &who("a"), EPOCH),
            Filled::Refused {
                reason: Refusal::Unknown,
                ..
            }
        ));
    }
}
