//! Dialling peers: at most one handshake in flight per address, and a
//! growing back-off after a failed one.
//!
//! Per address a peer is **idle** (no slot: never dialled, or connected —
//! the transport's connection map says which), **dialling** (one handshake
//! in flight; every other send to that address joins it instead of starting
//! its own) or **backing off** (the last handshake failed; sends fail fast
//! with the reason until the back-off passes). A back-off is drawn uniformly
//! from `[base/2, base]`, where `base` starts at [`FIRST_BACKOFF`] and
//! doubles with every consecutive failure up to [`MAX_BACKOFF`]; the jitter
//! keeps the nodes that lost the same peer from all dialling it at once.
//!
//! A back-off ends early when the peer shows it is back: a connection it
//! opened to this node is authenticated, or gossip announces a generation
//! for the address newer than the last one announced while the slot lived
//! (a restart). A successful dial forgets the slot, so the next failure
//! starts again from the first back-off.
//!
//! Pure: the driver ([`super::transport`]) passes the time and the jitter,
//! holds the handle waiters share (`T`) and performs the dial.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The back-off after a first failed dial (before jitter).
pub const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest back-off between two dials of one address.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a send to an address without an open connection does.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Begin<T> {
    /// Dial, sharing the result through `T` (just made for this dial).
    Dial(T),
    /// A dial is in flight: wait for its result through `T`.
    Join(T),
    /// The last dial failed: fail fast.
    BackingOff {
        /// Why the last dial failed.
        reason: String,
        /// When the next dial may start.
        retry_in: Duration,
    },
}

enum Slot<T> {
    Dialing {
        waiters: T,
        failures: u32,
        announced: Option<u64>,
    },
    BackingOff {
        until: Instant,
        failures: u32,
        reason: String,
        announced: Option<u64>,
    },
}

/// The dial state of every address not known to be idle.
pub(super) struct Dials<T> {
    slots: HashMap<SocketAddr, Slot<T>>,
}

impl<T> Default for Dials<T> {
    fn default() -> Self {
        Dials {
            slots: HashMap::new(),
        }
    }
}

/// The back-off after `failures` consecutive failed dials, with `jitter` in
/// `[0, 1]`: uniform in `[base/2, base]` as `jitter` is.
pub(super) fn backoff(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let base = FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

impl<T: Clone> Dials<T> {
    /// A send to `addr` found no open connection: dial (with the handle
    /// `waiters()` makes), join the dial in flight, or fail fast.
    pub(super) fn begin(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        waiters: impl FnOnce() -> T,
    ) -> Begin<T> {
        let (failures, announced) = match self.slots.get(&addr) {
            None => (0, None),
            Some(Slot::Dialing { waiters, .. }) => return Begin::Join(waiters.clone()),
            Some(Slot::BackingOff {
                until,
                reason,
                failures,
                announced,
            }) => {
                if *until > now {
                    return Begin::BackingOff {
                        reason: reason.clone(),
                        retry_in: *until - now,
                    };
                }
                (*failures, *announced)
            }
        };
        let waiters = waiters();
        self.slots.insert(
            addr,
            Slot::Dialing {
                waiters: waiters.clone(),
                failures,
                announced,
            },
        );
        Begin::Dial(waiters)
    }

    /// The dial to `addr` succeeded: back to idle.
    pub(super) fn succeeded(&mut self, addr: SocketAddr) {
        self.slots.remove(&addr);
    }

    /// The dial to `addr` failed at `now` for `reason`; `jitter` in
    /// `[0, 1]`. Returns the back-off before the next dial. Also forgets
    /// back-offs that ended long ago (nobody sent to those peers since), so
    /// that the table follows the peers being dialled.
    pub(super) fn failed(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        reason: String,
        jitter: f64,
    ) -> Duration {
        let (failures, announced) = match self.slots.get(&addr) {
            Some(Slot::Dialing {
                failures,
                announced,
                ..
            })
            | Some(Slot::BackingOff {
                failures,
                announced,
                ..
            }) => (failures + 1, *announced),
            None => (1, None),
        };
        let wait = backoff(failures, jitter);
        self.slots.insert(
            addr,
            Slot::BackingOff {
                until: now + wait,
                failures,
                reason,
                announced,
            },
        );
        self.slots.retain(|_, slot| match slot {
            Slot::Dialing { .. } => true,
            Slot::BackingOff { until, .. } => *until + MAX_BACKOFF > now,
        });
        wait
    }

    /// A connection the peer at `addr` opened to this node was
    /// authenticated: it is back, stop backing off (a dial in flight goes
    /// on; its waiters get its result).
    pub(super) fn connected(&mut self, addr: SocketAddr) {
        if matches!(self.slots.get(&addr), Some(Slot::BackingOff { .. })) {
            self.slots.remove(&addr);
        }
    }

    /// Gossip announces a process of `generation` at `addr`: a generation
    /// newer than any announced since the first failure is a restart, so
    /// the next send dials at once (and the back-off starts again from the
    /// first). The same generation again changes nothing.
    pub(super) fn announced(&mut self, addr: SocketAddr, generation: u64, now: Instant) {
        let Some(slot) = self.slots.get_mut(&addr) else {
            return;
        };
        let seen = match slot {
            Slot::Dialing { announced, .. } | Slot::BackingOff { announced, .. } => announced,
        };
        if seen.is_some_and(|g| g >= generation) {
            return;
        }
        *seen = Some(generation);
        if let Slot::BackingOff {
            until, failures, ..
        } = slot
        {
            *until = now;
            *failures = 0;
        }
    }

    /// Addresses being dialled or backed off from.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn concurrent_sends_to_a_fresh_peer_share_one_dial() {
        let mut dials = Dials::default();
        let now = Instant::now();
        assert_eq!(dials.begin(addr(1), now, || 7), Begin::Dial(7));
        for _ in 0..10 {
            assert_eq!(
                dials.begin(addr(1), now, || unreachable!("a second dial")),
                Begin::Join(7)
            );
        }
        // Another address dials on its own.
        assert_eq!(dials.begin(addr(2), now, || 8), Begin::Dial(8));
        dials.succeeded(addr(1));
        assert_eq!(dials.len(), 1, "a connected peer takes no slot");
        // Once connected and later closed, a send dials again.
        assert_eq!(dials.begin(addr(1), now, || 9), Begin::Dial(9));
    }

    #[test]
    fn after_a_failed_dial_sends_fail_fast_until_the_back_off_passes() {
        let mut dials = Dials::default();
        let t0 = Instant::now();
        let _ = dials.begin(addr(1), t0, || ());
        let wait = dials.failed(addr(1), t0, "refused".into(), 1.0);
        assert_eq!(wait, FIRST_BACKOFF);
        match dials.begin(addr(1), t0 + 40 * MS, || unreachable!()) {
            Begin::BackingOff { reason, retry_in } => {
                assert_eq!(reason, "refused");
                assert_eq!(retry_in, 60 * MS);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(dials.begin(addr(1), t0 + wait, || ()), Begin::Dial(()));
    }

    #[test]
    fn the_back_off_doubles_with_each_failure_up_to_its_bound() {
        let waits: Vec<Duration> = (1..=10).map(|f| backoff(f, 1.0)).collect();
        assert_eq!(waits[0], 100 * MS);
        assert_eq!(waits[1], 200 * MS);
        assert_eq!(waits[5], 3200 * MS);
        assert!(waits[6..].iter().all(|w| *w == MAX_BACKOFF));
        assert_eq!(backoff(u32::MAX, 1.0), MAX_BACKOFF, "no overflow");
        // The jitter draws from the upper half of the base.
        assert_eq!(backoff(1, 0.0), 50 * MS);
        assert_eq!(backoff(3, 0.5), 300 * MS);
        assert_eq!(backoff(1, 7.0), 100 * MS, "jitter is clamped");
        // Through the state machine: consecutive failures grow the wait.
        let mut dials = Dials::default();
        let mut now = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..8 {
            assert!(matches!(dials.begin(addr(1), now, || ()), Begin::Dial(())));
            let wait = dials.failed(addr(1), now, "timeout".into(), 1.0);
            seen.push(wait);
            now += wait;
        }
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
        assert_eq!(*seen.last().unwrap(), MAX_BACKOFF);
    }

    #[test]
    fn a_success_resets_the_back_off() {
        let mut dials = Dials::default();
        let mut now = Instant::now();
        for _ in 0..5 {
            let _ = dials.begin(addr(1), now, || ());
            now += dials.failed(addr(1), now, "x".into(), 1.0);
        }
        let _ = dials.begin(addr(1), now, || ());
        dials.succeeded(addr(1));
        let _ = dials.begin(addr(1), now, || ());
        assert_eq!(dials.failed(addr(1), now, "x".into(), 1.0), FIRST_BACKOFF);
    }

    #[test]
    fn a_connection_from_the_peer_ends_the_back_off_but_not_a_dial_in_flight() {
        let mut dials = Dials::default();
        let now = Instant::now();
        let _ = dials.begin(addr(1), now, || 1);
        dials.failed(addr(1), now, "x".into(), 1.0);
        dials.connected(addr(1));
        assert_eq!(dials.begin(addr(1), now, || 2), Begin::Dial(2));
        dials.connected(addr(1));
        assert_eq!(dials.begin(addr(1), now, || 3), Begin::Join(2));
    }

    #[test]
    fn a_newer_generation_in_gossip_ends_the_back_off_once() {
        let mut dials = Dials::default();
        let mut now = Instant::now();
        // The dead process's own generation, announced while backing off:
        // the first announcement counts as news, then it is known.
        let _ = dials.begin(addr(1), now, || ());
        dials.failed(addr(1), now, "timeout".into(), 1.0);
        dials.announced(addr(1), 5, now);
        assert_eq!(dials.begin(addr(1), now, || ()), Begin::Dial(()));
        dials.failed(addr(1), now, "timeout".into(), 1.0);
        for _ in 0..3 {
            dials.announced(addr(1), 5, now);
            assert!(
                matches!(dials.begin(addr(1), now, || ()), Begin::BackingOff { .. }),
                "the same generation again is no news"
            );
        }
        // Several failures later, a restart on the same address.
        for _ in 0..4 {
            now += MAX_BACKOFF;
            let _ = dials.begin(addr(1), now, || ());
            dials.failed(addr(1), now, "timeout".into(), 1.0);
        }
        dials.announced(addr(1), 6, now);
        assert_eq!(dials.begin(addr(1), now, || ()), Begin::Dial(()));
        // Its back-off starts again from the first.
        assert_eq!(dials.failed(addr(1), now, "x".into(), 1.0), FIRST_BACKOFF);
        // An announcement for an address not being dialled keeps no slot.
        dials.announced(addr(9), 1, now);
        assert_eq!(dials.len(), 1);
    }

    #[test]
    fn back_offs_that_ended_long_ago_are_forgotten() {
        let mut dials = Dials::default();
        let t0 = Instant::now();
        for port in 0..100 {
            let _ = dials.begin(addr(port), t0, || ());
            dials.failed(addr(port), t0, "gone".into(), 1.0);
        }
        assert_eq!(dials.len(), 100);
        let later = t0 + FIRST_BACKOFF + MAX_BACKOFF;
        let _ = dials.begin(addr(1000), later, || ());
        dials.failed(addr(1000), later, "gone".into(), 1.0);
        assert_eq!(dials.len(), 1, "only the fresh one is left");
    }
}
