//! What an invalidation targets, and the one place it is applied to this
//! process's cache — for calls made here and, in a grid, for invalidations
//! that arrive from other nodes.

use crate::events::{CacheEvent, EventOrigin};
use crate::grid::GridInner;
use crate::single_flight::{detach_key, detach_tags};
use crate::stats::GridCounters;

/// The target of an invalidation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// One key.
    Key(String),
    /// Every entry carrying any of these tags.
    Tags(Vec<String>),
    /// Everything.
    Flush,
}

impl GridInner {
    /// Applies an invalidation locally: detaches the loads in flight it
    /// concerns (so nobody joins them any more) and removes or hides the
    /// entries, atomically with respect to new loads starting. Returns true
    /// if an entry was removed (for `Key`).
    pub(crate) fn apply(&self, inv: &Invalidation, origin: EventOrigin) -> bool {
        GridCounters::bump(&self.counters.invalidations);
        let removed = self.apply_to_store(inv);
        if self.events.active() {
            match inv {
                Invalidation::Key(key) => self.events.publish(CacheEvent::Removed {
                    key: key.clone(),
                    origin,
                }),
                Invalidation::Tags(tags) => {
                    for tag in tags {
                        self.events.publish(CacheEvent::TagInvalidated {
                            tag: tag.clone(),
                            origin: origin.clone(),
                        });
                    }
                }
                Invalidation::Flush => self.events.publish(CacheEvent::Flushed { origin }),
            }
        }
        removed
    }

    /// The part of [`GridInner::apply`] that changes state (stamps, flights,
    /// store), without counting or events. In a grid the calling node runs it
    /// a second time once the other nodes acknowledged: a read on this node
    /// that fetched the old value from its owner after the first pass (the
    /// owner had not applied it yet) would otherwise be kept as a near copy
    /// after the call returned `Ok`.
    pub(crate) fn apply_to_store(&self, inv: &Invalidation) -> bool {
        // Before the store changes: see near.rs for why. The owner's leases
        // the invalidation concerns are voided first too, so a fill either
        // finds its lease voided or lands before the store change below.
        if let Some(remote) = self.remote.get() {
            remote.voids(inv);
        }
        match inv {
            Invalidation::Key(key) => self.stamps.bump_key(key),
            Invalidation::Tags(_) | Invalidation::Flush => self.stamps.bump_all(),
        }
        let removed = {
            let mut flights = self.flights.lock();
            match inv {
                Invalidation::Key(key) => {
                    detach_key(&mut flights, key);
                    self.store.remove(key.as_bytes())
                }
                Invalidation::Tags(tags) => {
                    detach_tags(&mut flights, tags);
                    self.store.invalidate_tags(tags);
                    false
                }
                Invalidation::Flush => {
                    flights.clear();
                    self.store.flush();
                    false
                }
            }
        };
        removed
    }

    /// Before this process writes `key` for the grid (a put, or a peer's
    /// put at this owner): near copies of it in flight are not kept, and
    /// loads of it in flight are detached and not stored.
    pub(crate) fn before_write(&self, key: &str) {
        if let Some(remote) = self.remote.get() {
            remote.voids(&Invalidation::Key(key.to_string()));
        }
        self.stamps.bump_key(key);
        let mut flights = self.flights.lock();
        detach_key(&mut flights, key);
        self.store.remove(key.as_bytes());
    }
}
