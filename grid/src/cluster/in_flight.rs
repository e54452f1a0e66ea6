//! One request in flight per key and node: concurrent callers for a key
//! share the first caller's outcome instead of each asking another node (or
//! each running a named loader).
//!
//! A request is joined only by callers that took the same invalidation
//! stamp ([`crate::near::Stamp`]) as its leader: a caller that saw an
//! invalidation the leader did not starts its own request, since the
//! leader's answer may predate it. The leader drives the request itself (no
//! task of its own); if it is dropped before the outcome, the callers that
//! joined it start again and one of them leads.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::near::Stamp;

struct Slot<V> {
    stamp: Stamp,
    rx: watch::Receiver<Option<V>>,
}

/// Requests in flight, by key.
pub(crate) struct InFlight<V> {
    map: Mutex<HashMap<String, Arc<Slot<V>>>>,
}

impl<V> Default for InFlight<V> {
    fn default() -> Self {
        InFlight {
            map: Mutex::new(HashMap::new()),
        }
    }
}

/// Retires the leader's slot when the leader finishes or is dropped.
struct Retire<'a, V> {
    flights: &'a InFlight<V>,
    key: &'a str,
    slot: Arc<Slot<V>>,
}

impl<V> Drop for Retire<'_, V> {
    fn drop(&mut self) {
        let mut map = self.flights.lock();
        if map
            .get(self.key)
            .is_some_and(|s| Arc::ptr_eq(s, &self.slot))
        {
            map.remove(self.key);
        }
    }
}

impl<V> InFlight<V> {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Slot<V>>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<V: Clone> InFlight<V> {
    /// The outcome of the request for `key` in flight under `stamp`, or of
    /// `request()`, which this caller then runs for everyone; and whether
    /// this caller ran it.
    pub(crate) async fn run<F, Fut>(&self, key: &str, stamp: Stamp, request: F) -> (V, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let mut request = Some(request);
        loop {
            let joined = {
                let mut map = self.lock();
                match map.get(key) {
                    Some(slot) if slot.stamp.same_flight(&stamp) => Err(slot.rx.clone()),
                    _ => {
                        let (tx, rx) = watch::channel(None);
                        let slot = Arc::new(Slot { stamp, rx });
                        map.insert(key.to_string(), Arc::clone(&slot));
                        Ok((tx, slot))
                    }
                }
            };
            match joined {
                Ok((tx, slot)) => {
                    let retire = Retire {
                        flights: self,
                        key,
                        slot,
                    };
                    let make = request.take().expect("a caller leads at most once");
                    let outcome = make().await;
                    // Retired before the outcome is published: a caller that
                    // comes after it asks afresh (and finds what was stored).
                    drop(retire);
                    let _ = tx.send(Some(outcome.clone()));
                    return (outcome, true);
                }
                Err(mut rx) => {
                    if let Ok(v) = rx.wait_for(Option::is_some).await {
                        return (v.clone().expect("waited for Some"), false);
                    }
                    // The leader was dropped without an outcome: start again.
                }
            }
        }
    }

    /// Requests in flight.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::near::Stamps;

    #[tokio::test]
    async fn concurrent_callers_share_one_request() {
        let flights = InFlight::<u32>::default();
        let stamps = Stamps::default();
        let runs = AtomicUsize::new(0);
        let (tx, rx) = tokio::sync::watch::channel(false);
        let call = || async {
            flights
                .run("k", stamps.of("k"), || async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let mut rx = rx.clone();
                    let _ = rx.wait_for(|go| *go).await;
                    7
                })
                .await
        };
        let all = futures_util::future::join_all((0..10).map(|_| call()));
        let release = async {
            tokio::task::yield_now().await;
            tx.send(true).unwrap();
        };
        let (outcomes, ()) = tokio::join!(all, release);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(outcomes.iter().all(|(v, _)| *v == 7));
        assert_eq!(outcomes.iter().filter(|(_, led)| *led).count(), 1);
        assert_eq!(flights.len(), 0, "retired");
    }

    #[tokio::test]
    async fn a_caller_that_saw_a_newer_invalidation_does_not_join() {
        let flights = InFlight::<u32>::default();
        let stamps = Stamps::default();
        let before = stamps.of("k");
        let (tx, rx) = tokio::sync::watch::channel(false);
        let first = flights.run("k", before, || async {
            let mut rx = rx.clone();
            let _ = rx.wait_for(|go| *go).await;
            1
        });
        let second = async {
            tokio::task::yield_now().await;
            stamps.bump_key("k");
            let out = flights.run("k", stamps.of("k"), || async { 2 }).await;
            tx.send(true).unwrap();
            out
        };
        let ((a, led_a), (b, led_b)) = tokio::join!(first, second);
        assert_eq!((a, led_a, b, led_b), (1, true, 2, true));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn followers_of_a_dropped_leader_start_again() {
        let flights = InFlight::<u32>::default();
        let stamps = Stamps::default();
        let stamp = stamps.of("k");
        let mut leader = Box::pin(flights.run("k", stamp, std::future::pending::<u32>));
        let mut follower = Box::pin(flights.run("k", stamp, || async { 9 }));
        // Both registered: the leader first, the follower waiting on it.
        assert!(futures_util::poll!(leader.as_mut()).is_pending());
        assert!(futures_util::poll!(follower.as_mut()).is_pending());
        drop(leader);
        assert_eq!(follower.await, (9, true));
    }
}
