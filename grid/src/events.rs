//! Cache events: a bounded broadcast ring. Publishing never waits for
//! listeners; a listener that falls behind gets [`EventError::Lagged`] with
//! the number of events it missed. With no subscriber, no event is built.
//!
//! Evictions and expiries come from the store, which reports each entry it
//! removes to the bus (its [`EvictionListener`]) after releasing its locks.
//! The store asks the bus before copying a key, and the bus says yes only
//! while a subscriber asked for them ([`crate::Grid::subscribe_evictions`]),
//! so without one they cost a load of an atomic per removal. The store's
//! eviction counters are kept either way.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use hydracache_storage::{EvictionCause as StoreCause, EvictionListener};
use tokio::sync::broadcast;

/// Where a change came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EventOrigin {
    /// This process.
    Local,
    /// Another node of the grid, named by its node id.
    Remote {
        /// The node that originated the change.
        node: String,
    },
}

/// Why the cache evicted an entry ([`CacheEvent::Evicted`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EvictionCause {
    /// Evicted to stay within capacity (counted in
    /// [`GridStats::evicted_capacity`](crate::GridStats::evicted_capacity)).
    Capacity,
    /// Removed by an invalidation: of its key or a flush at once, of one of
    /// its tags when the sweep or the evictor reclaims it (counted in
    /// [`GridStats::evicted_invalidated`](crate::GridStats::evicted_invalidated)).
    Invalidated,
}

/// Something that happened in the cache. Match on it, or compare its
/// [`kind`](CacheEvent::kind):
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hydracache::{CacheEventKind, CacheOptions, Grid};
///
/// let grid = Grid::local().build();
/// let mut events = grid.subscribe();
/// grid.put("k", 1u32, CacheOptions::new()).await.unwrap();
/// let event = events.next_event().await.unwrap();
/// assert_eq!(event.kind(), CacheEventKind::Stored);
/// assert_eq!(event.key(), Some("k"));
/// # });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheEvent {
    /// A value was stored (by `put` or by a load).
    Stored {
        /// The key.
        key: String,
        /// The entry's tags.
        tags: Vec<String>,
        /// Who stored it.
        origin: EventOrigin,
    },
    /// A key was removed or invalidated.
    Removed {
        /// The key.
        key: String,
        /// Who removed it.
        origin: EventOrigin,
    },
    /// Every entry with this tag was invalidated.
    TagInvalidated {
        /// The tag.
        tag: String,
        /// Who invalidated it.
        origin: EventOrigin,
    },
    /// Every entry was removed.
    Flushed {
        /// Who flushed.
        origin: EventOrigin,
    },
    /// A loader failed; nothing was cached.
    LoadFailed {
        /// The key.
        key: String,
        /// The loader's error, rendered.
        error: String,
    },
    /// A load finished after its key or one of its tags was invalidated; its
    /// value went to the callers that waited but was not cached.
    StaleLoadDiscarded {
        /// The key.
        key: String,
    },
    /// A read found a value (only with `enable_access_events`).
    Hit {
        /// The key.
        key: String,
    },
    /// A read found nothing (only with `enable_access_events`).
    Miss {
        /// The key.
        key: String,
    },
    /// An entry left the cache for capacity or after an invalidation (only
    /// to [`crate::Grid::subscribe_evictions`]).
    Evicted {
        /// The key.
        key: String,
        /// Why it went.
        cause: EvictionCause,
    },
    /// An entry's TTL ran out and the cache reclaimed it (only to
    /// [`crate::Grid::subscribe_evictions`]; counted in
    /// [`GridStats::evicted_expired`](crate::GridStats::evicted_expired)).
    Expired {
        /// The key.
        key: String,
    },
}

/// What kind of thing a [`CacheEvent`] reports, without its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheEventKind {
    /// [`CacheEvent::Stored`].
    Stored,
    /// [`CacheEvent::Removed`].
    Removed,
    /// [`CacheEvent::TagInvalidated`].
    TagInvalidated,
    /// [`CacheEvent::Flushed`].
    Flushed,
    /// [`CacheEvent::LoadFailed`].
    LoadFailed,
    /// [`CacheEvent::StaleLoadDiscarded`].
    StaleLoadDiscarded,
    /// [`CacheEvent::Hit`].
    Hit,
    /// [`CacheEvent::Miss`].
    Miss,
    /// [`CacheEvent::Evicted`].
    Evicted,
    /// [`CacheEvent::Expired`].
    Expired,
}

impl CacheEvent {
    /// The event's kind.
    pub fn kind(&self) -> CacheEventKind {
        match self {
            CacheEvent::Stored { .. } => CacheEventKind::Stored,
            CacheEvent::Removed { .. } => CacheEventKind::Removed,
            CacheEvent::TagInvalidated { .. } => CacheEventKind::TagInvalidated,
            CacheEvent::Flushed { .. } => CacheEventKind::Flushed,
            CacheEvent::LoadFailed { .. } => CacheEventKind::LoadFailed,
            CacheEvent::StaleLoadDiscarded { .. } => CacheEventKind::StaleLoadDiscarded,
            CacheEvent::Hit { .. } => CacheEventKind::Hit,
            CacheEvent::Miss { .. } => CacheEventKind::Miss,
            CacheEvent::Evicted { .. } => CacheEventKind::Evicted,
            CacheEvent::Expired { .. } => CacheEventKind::Expired,
        }
    }

    /// True for events that change the cache's contents.
    pub fn is_mutation(&self) -> bool {
        matches!(
            self,
            CacheEvent::Stored { .. }
                | CacheEvent::Removed { .. }
                | CacheEvent::TagInvalidated { .. }
                | CacheEvent::Flushed { .. }
        )
    }

    /// True for hit and miss events.
    pub fn is_access(&self) -> bool {
        matches!(self, CacheEvent::Hit { .. } | CacheEvent::Miss { .. })
    }

    /// True for eviction and expiry events.
    pub fn is_eviction(&self) -> bool {
        matches!(
            self,
            CacheEvent::Evicted { .. } | CacheEvent::Expired { .. }
        )
    }

    /// The key the event is about, if it is about one key.
    pub fn key(&self) -> Option<&str> {
        match self {
            CacheEvent::Stored { key, .. }
            | CacheEvent::Removed { key, .. }
            | CacheEvent::LoadFailed { key, .. }
            | CacheEvent::StaleLoadDiscarded { key }
            | CacheEvent::Hit { key }
            | CacheEvent::Miss { key }
            | CacheEvent::Evicted { key, .. }
            | CacheEvent::Expired { key } => Some(key),
            CacheEvent::TagInvalidated { .. } | CacheEvent::Flushed { .. } => None,
        }
    }

    fn concerns_tag(&self, tag: &str) -> bool {
        match self {
            CacheEvent::Stored { tags, .. } => tags.iter().any(|t| t == tag),
            CacheEvent::TagInvalidated { tag: t, .. } => t == tag,
            CacheEvent::Flushed { .. } => true,
            _ => false,
        }
    }
}

/// Why a subscription could not deliver the next event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// This subscriber fell behind and `n` events were dropped for it. The
    /// next `next_event` continues with the oldest event still buffered.
    #[error("subscriber lagged behind: {0} events were dropped")]
    Lagged(u64),
    /// The grid was dropped.
    #[error("the grid is gone")]
    Closed,
}

/// Which events a subscription delivers.
#[derive(Clone, Debug)]
pub(crate) enum Filter {
    All,
    Mutations,
    Access,
    Evictions,
    Key(String),
    Tag(String),
    /// `inner`, restricted to events about keys under `prefix` (a typed
    /// view's namespace) and events about no one key (tag invalidations,
    /// flushes: they may reach keys under the prefix).
    Prefix {
        prefix: String,
        inner: Box<Filter>,
    },
}

impl Filter {
    fn wants_access(&self) -> bool {
        match self {
            Filter::Access => true,
            Filter::Prefix { inner, .. } => inner.wants_access(),
            _ => false,
        }
    }

    fn wants_evictions(&self) -> bool {
        match self {
            Filter::Evictions => true,
            Filter::Prefix { inner, .. } => inner.wants_evictions(),
            _ => false,
        }
    }

    fn accepts(&self, e: &CacheEvent) -> bool {
        match self {
            Filter::All => !e.is_access() && !e.is_eviction(),
            Filter::Mutations => e.is_mutation(),
            Filter::Access => e.is_access(),
            Filter::Evictions => e.is_eviction(),
            Filter::Key(k) => {
                (e.key() == Some(k.as_str()) && !e.is_eviction())
                    || matches!(e, CacheEvent::Flushed { .. })
            }
            Filter::Tag(t) => e.concerns_tag(t),
            Filter::Prefix { prefix, inner } => {
                inner.accepts(e) && e.key().is_none_or(|k| k.starts_with(prefix.as_str()))
            }
        }
    }
}

pub(crate) struct EventBus {
    sender: broadcast::Sender<CacheEvent>,
    subscribers: AtomicUsize,
    access_subscribers: AtomicUsize,
    eviction_subscribers: AtomicUsize,
    pub(crate) access_enabled: bool,
    pub(crate) published: AtomicU64,
    pub(crate) lagged: AtomicU64,
}

impl EventBus {
    pub(crate) fn new(capacity: usize, access_enabled: bool) -> Self {
        EventBus {
            sender: broadcast::channel(capacity.max(1)).0,
            subscribers: AtomicUsize::new(0),
            access_subscribers: AtomicUsize::new(0),
            eviction_subscribers: AtomicUsize::new(0),
            access_enabled,
            published: AtomicU64::new(0),
            lagged: AtomicU64::new(0),
        }
    }

    /// True if someone listens: callers build events only then.
    #[inline]
    pub(crate) fn active(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    /// True if someone listens to access events and they are enabled.
    #[inline]
    pub(crate) fn access_active(&self) -> bool {
        self.access_enabled && self.access_subscribers.load(Ordering::Relaxed) > 0
    }

    /// True if someone listens to evictions and expiries.
    #[inline]
    pub(crate) fn evictions_active(&self) -> bool {
        self.eviction_subscribers.load(Ordering::Relaxed) > 0
    }

    /// Publishes without waiting; with nobody listening the event is dropped.
    pub(crate) fn publish(&self, event: CacheEvent) {
        if self.sender.send(event).is_ok() {
            self.published.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }
}

/// The store reports its removals here. Publishing never waits, so this is
/// safe on any thread the store removes entries on.
impl EvictionListener for EventBus {
    fn is_listening(&self) -> bool {
        self.evictions_active()
    }

    fn on_eviction(&self, key: &[u8], cause: StoreCause) {
        // Grid keys are strings; the store holds their bytes.
        let key = String::from_utf8_lossy(key).into_owned();
        self.publish(match cause {
            StoreCause::Expired => CacheEvent::Expired { key },
            StoreCause::Capacity => CacheEvent::Evicted {
                key,
                cause: EvictionCause::Capacity,
            },
            // `Invalidated`, and any cause a later store adds: the entry was
            // taken out on purpose rather than for room or age.
            _ => CacheEvent::Evicted {
                key,
                cause: EvictionCause::Invalidated,
            },
        });
    }
}

/// A stream of cache events. Dropping it unsubscribes.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hydracache::{CacheEvent, CacheOptions, Grid};
///
/// let grid = Grid::local().build();
/// let mut events = grid.subscribe_key("k");
/// grid.put("k", 1u32, CacheOptions::new()).await.unwrap();
/// assert!(matches!(events.next_event().await.unwrap(), CacheEvent::Stored { .. }));
/// # });
/// ```
pub struct Subscription {
    rx: broadcast::Receiver<CacheEvent>,
    filter: Filter,
    bus: Arc<EventBus>,
}

impl Subscription {
    pub(crate) fn new(bus: &Arc<EventBus>, filter: Filter) -> Self {
        bus.subscribers.fetch_add(1, Ordering::Relaxed);
        if filter.wants_access() {
            bus.access_subscribers.fetch_add(1, Ordering::Relaxed);
        }
        if filter.wants_evictions() {
            bus.eviction_subscribers.fetch_add(1, Ordering::Relaxed);
        }
        Subscription {
            rx: bus.sender.subscribe(),
            filter,
            bus: Arc::clone(bus),
        }
    }

    /// The next event this subscription wants. Cancel-safe.
    pub async fn next_event(&mut self) -> Result<CacheEvent, EventError> {
        loop {
            match self.rx.recv().await {
                Ok(e) if self.filter.accepts(&e) => return Ok(e),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.bus.lagged.fetch_add(n, Ordering::Relaxed);
                    return Err(EventError::Lagged(n));
                }
                Err(broadcast::error::RecvError::Closed) => return Err(EventError::Closed),
            }
        }
    }

    /// The next buffered event this subscription wants, without waiting.
    pub fn try_next_event(&mut self) -> Option<Result<CacheEvent, EventError>> {
        loop {
            match self.rx.try_recv() {
                Ok(e) if self.filter.accepts(&e) => return Some(Ok(e)),
                Ok(_) => continue,
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.bus.lagged.fetch_add(n, Ordering::Relaxed);
                    return Some(Err(EventError::Lagged(n)));
                }
                Err(broadcast::error::TryRecvError::Empty) => return None,
                Err(broadcast::error::TryRecvError::Closed) => {
                    return Some(Err(EventError::Closed))
                }
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.subscribers.fetch_sub(1, Ordering::Relaxed);
        if self.filter.wants_access() {
            self.bus.access_subscribers.fetch_sub(1, Ordering::Relaxed);
        }
        if self.filter.wants_evictions() {
            self.bus
                .eviction_subscribers
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A callback registered with [`crate::Grid::on_mutation`]; dropping the
/// handle unsubscribes it.
#[must_use = "the callback is unsubscribed when the handle is dropped"]
pub struct ListenerHandle {
    task: tokio::task::JoinHandle<()>,
}

impl ListenerHandle {
    pub(crate) fn spawn(
        mut sub: Subscription,
        mut callback: impl FnMut(CacheEvent) + Send + 'static,
    ) -> Self {
        let task = tokio::spawn(async move {
            loop {
                match sub.next_event().await {
                    Ok(e) => callback(e),
                    Err(EventError::Lagged(_)) => continue,
                    Err(EventError::Closed) => break,
                }
            }
        });
        ListenerHandle { task }
    }
}

impl ListenerHandle {
    /// Stops the callback (dropping the handle does the same).
    pub fn unsubscribe(self) {
        drop(self);
    }
}

impl Drop for ListenerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How a node takes part in the grid, as a [`MembershipChange`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MemberRole {
    /// Owns keys and votes in Raft.
    Member,
    /// A near cache that owns nothing.
    Client,
}

/// A node admitted to or removed from the membership.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberInfo {
    /// The node's id.
    pub node_id: String,
    /// The process's generation (a restart is a new generation).
    pub generation: u64,
    /// Member or client.
    pub role: MemberRole,
    /// The address it serves on.
    pub address: std::net::SocketAddr,
}

/// The membership moved to a new epoch: who Raft admitted and who it
/// removed since the epoch this node knew before (a node that learns of
/// several epochs at once reports them as one change).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MembershipChange {
    /// The new membership epoch.
    pub epoch: u64,
    /// Nodes in the new membership that were not in the previous one.
    pub admitted: Vec<MemberInfo>,
    /// Nodes of the previous membership that are not in the new one.
    pub removed: Vec<MemberInfo>,
}

/// Membership changes are rare (a node joins or leaves); this many are kept
/// for a subscriber that has not read them yet before it lags.
pub(crate) const MEMBERSHIP_BUFFER: usize = 64;

/// A stream of [`MembershipChange`]s ([`crate::Grid::subscribe_membership`]).
/// Bounded: a subscriber that falls behind gets [`EventError::Lagged`] and
/// continues with the oldest change still buffered; the node never waits
/// for it. Dropping it unsubscribes.
pub struct MembershipSubscription {
    rx: broadcast::Receiver<MembershipChange>,
}

impl MembershipSubscription {
    /// The next change. [`EventError::Closed`] at once on a local grid
    /// (there is no membership), and once the grid is dropped. Cancel-safe.
    pub async fn next_change(&mut self) -> Result<MembershipChange, EventError> {
        match self.rx.recv().await {
            Ok(change) => Ok(change),
            Err(broadcast::error::RecvError::Lagged(n)) => Err(EventError::Lagged(n)),
            Err(broadcast::error::RecvError::Closed) => Err(EventError::Closed),
        }
    }

    /// The next buffered change, without waiting.
    pub fn try_next_change(&mut self) -> Option<Result<MembershipChange, EventError>> {
        match self.rx.try_recv() {
            Ok(change) => Some(Ok(change)),
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(EventError::Lagged(n))),
            Err(broadcast::error::TryRecvError::Empty) => None,
            Err(broadcast::error::TryRecvError::Closed) => Some(Err(EventError::Closed)),
        }
    }
}

impl<C: crate::Codec> crate::Grid<C> {
    /// Membership changes as this node learns them: nodes Raft admitted and
    /// removed, with the new epoch. On a local grid there is no membership
    /// and the stream is closed from the start.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::EventError;
    /// let grid = hydracache::Grid::local().build();
    /// let mut changes = grid.subscribe_membership();
    /// assert_eq!(changes.next_change().await, Err(EventError::Closed));
    /// # });
    /// ```
    pub fn subscribe_membership(&self) -> MembershipSubscription {
        let rx = if self.inner.remote.get().is_some() {
            self.inner.membership.subscribe()
        } else {
            // A channel whose sender is gone: closed for the subscriber.
            broadcast::channel(1).1
        };
        MembershipSubscription { rx }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(epoch: u64) -> MembershipChange {
        MembershipChange {
            epoch,
            admitted: Vec::new(),
            removed: Vec::new(),
        }
    }

    #[test]
    fn a_membership_subscriber_that_falls_behind_lags_and_the_sender_never_waits() {
        let (tx, rx) = broadcast::channel(2);
        let mut sub = MembershipSubscription { rx };
        for epoch in 1..=5 {
            tx.send(change(epoch)).unwrap(); // never blocks
        }
        assert_eq!(sub.try_next_change(), Some(Err(EventError::Lagged(3))));
        assert_eq!(sub.try_next_change(), Some(Ok(change(4))));
        assert_eq!(sub.try_next_change(), Some(Ok(change(5))));
        assert_eq!(sub.try_next_change(), None);
        drop(tx);
        assert_eq!(sub.try_next_change(), Some(Err(EventError::Closed)));
    }
}
