//! Reporting the entries the store removes: a listener installed with
//! [`crate::StoreConfig::eviction_listener`] hears of every entry the
//! eviction counters count, with the same cause.
//!
//! Removals happen under a shard's mutex. The listener is not called there:
//! each operation collects the removed keys while it holds locks and reports
//! them after it released the last one, so a listener may block, take its own
//! locks or call back into the store without stalling writers of the shard or
//! deadlocking on it. The price is ordering: a removal is reported after the
//! lock is released, so another thread may already have written the key
//! again when the listener hears of it.
//!
//! Nothing is collected unless a listener is installed and says it is
//! listening ([`EvictionListener::is_listening`], asked once per removal),
//! so a store with a listener nobody is behind copies no keys. Reads never
//! remove entries and never look at the listener.

use std::sync::Arc;

/// Why the store removed an entry; each cause has its counter in
/// [`crate::StoreStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvictionCause {
    /// Evicted to stay within capacity
    /// ([`StoreStats::evicted_capacity`](crate::StoreStats::evicted_capacity)).
    Capacity,
    /// Its TTL ran out and a sweep or the evictor met it
    /// ([`StoreStats::evicted_expired`](crate::StoreStats::evicted_expired)).
    Expired,
    /// Removed by [`Store::remove`](crate::Store::remove) or
    /// [`Store::flush`](crate::Store::flush), reclaimed after one of its tags
    /// was invalidated, or dropped because its bytes did not decode
    /// ([`StoreStats::evicted_invalidated`](crate::StoreStats::evicted_invalidated)).
    Invalidated,
}

/// Hears of every entry the store removes (not of values replaced by a
/// write). Called on the thread that removed the entry, after the store
/// released its locks.
///
/// ```
/// use hydracache_storage::{EvictionCause, EvictionListener, Expiry, StoreConfig, NO_TAGS};
/// use std::sync::{Arc, Mutex};
///
/// #[derive(Default)]
/// struct Log(Mutex<Vec<(Vec<u8>, EvictionCause)>>);
///
/// impl EvictionListener for Log {
///     fn on_eviction(&self, key: &[u8], cause: EvictionCause) {
///         self.0.lock().unwrap().push((key.to_vec(), cause));
///     }
/// }
///
/// let log = Arc::new(Log::default());
/// let store = StoreConfig::new().eviction_listener(log.clone()).build();
/// store.insert(b"k", &1u32, Expiry::Never, NO_TAGS).unwrap();
/// store.remove(b"k");
/// assert_eq!(*log.0.lock().unwrap(), [(b"k".to_vec(), EvictionCause::Invalidated)]);
/// ```
pub trait EvictionListener: Send + Sync + 'static {
    /// Whether removals should be reported now. Asked once per removal
    /// before its key is copied; return false while nobody is interested and
    /// the store collects nothing. Keep it cheap (an atomic load): it runs
    /// under the shard's lock.
    fn is_listening(&self) -> bool {
        true
    }

    /// One entry was removed. A panic here propagates to the store call that
    /// removed it, after the store's state is consistent.
    fn on_eviction(&self, key: &[u8], cause: EvictionCause);
}

/// The configured listener (a named type so that `StoreConfig` stays `Debug`).
#[derive(Clone)]
pub(crate) struct Listener(pub(crate) Arc<dyn EvictionListener>);

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EvictionListener")
    }
}

/// The removals one store operation made, to be reported once it holds no
/// lock. Without a listener it is an empty `Option` and a `Vec` that never
/// allocates.
pub(crate) struct Evictions<'a> {
    listener: Option<&'a dyn EvictionListener>,
    removed: Vec<(Box<[u8]>, EvictionCause)>,
}

impl<'a> Evictions<'a> {
    pub(crate) fn new(listener: Option<&'a Listener>) -> Self {
        Evictions {
            listener: listener.map(|l| &*l.0),
            removed: Vec::new(),
        }
    }

    /// Notes a removal if someone listens.
    #[inline]
    pub(crate) fn record(&mut self, key: &[u8], cause: EvictionCause) {
        if self.listener.is_some_and(|l| l.is_listening()) {
            self.removed.push((key.into(), cause));
        }
    }

    /// Reports what was recorded. Call with no shard lock held.
    pub(crate) fn report(&mut self) {
        if let Some(listener) = self.listener {
            for (key, cause) in self.removed.drain(..) {
                listener.on_eviction(&key, cause);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    struct Counting {
        on: AtomicBool,
        heard: AtomicUsize,
    }

    impl EvictionListener for Counting {
        fn is_listening(&self) -> bool {
            self.on.load(Ordering::Relaxed)
        }
        fn on_eviction(&self, _: &[u8], _: EvictionCause) {
            self.heard.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn nothing_is_collected_while_the_listener_is_not_listening() {
        let counting = Arc::new(Counting {
            on: AtomicBool::new(false),
            heard: AtomicUsize::new(0),
        });
        let listener = Listener(counting.clone());
        let mut evictions = Evictions::new(Some(&listener));
        evictions.record(b"a", EvictionCause::Capacity);
        assert!(evictions.removed.is_empty());
        counting.on.store(true, Ordering::Relaxed);
        evictions.record(b"b", EvictionCause::Expired);
        evictions.report();
        assert_eq!(counting.heard.load(Ordering::Relaxed), 1);
        assert!(evictions.removed.is_empty());
    }

    #[test]
    fn without_a_listener_nothing_is_collected() {
        let mut evictions = Evictions::new(None);
        evictions.record(b"a", EvictionCause::Invalidated);
        assert_eq!(evictions.removed.capacity(), 0);
        evictions.report();
    }
}
