//! The `Grid` handle and its cache API.

use std::error::Error as StdError;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use hydracache_storage::{EntryRef, FillOutcome, Store};

use crate::builder::LocalBuilder;
use crate::codec::{CacheValue, Codec, Rkyv};
use crate::error::{CacheError, LoadError};
use crate::events::{CacheEvent, EventBus, EventOrigin, Filter, ListenerHandle, Subscription};
use crate::get::Get;
use crate::invalidation::Invalidation;
use crate::options::CacheOptions;
use crate::remote::{Leased, PutAt, Remote};
use crate::single_flight::{Flights, Joined, Outcome};
use crate::stats::{GridCounters, GridDiagnostics, GridStats};
use crate::telemetry;
use crate::typed::TypedCache;

/// Shared state behind every clone of a [`Grid`].
pub(crate) struct GridInner {
    pub(crate) store: Store,
    pub(crate) flights: Flights,
    pub(crate) events: Arc<EventBus>,
    pub(crate) counters: GridCounters,
    /// Membership changes, published by a cluster runtime.
    pub(crate) membership: tokio::sync::broadcast::Sender<crate::events::MembershipChange>,
    /// How long loads take (recorded when a load lands).
    pub(crate) load_latency: crate::latency::Histogram,
    /// Set once when a cluster runtime attaches to this grid.
    pub(crate) remote: std::sync::OnceLock<Arc<dyn Remote>>,
    pub(crate) codec_name: &'static str,
    /// Bumped by invalidations, read around remote fetches (near.rs).
    pub(crate) stamps: crate::near::Stamps,
    /// The TTL of entries written without one (sent with puts to the owner).
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) sweeper: Option<tokio::task::AbortHandle>,
}

impl Drop for GridInner {
    fn drop(&mut self) {
        if let Some(s) = &self.sweeper {
            s.abort();
        }
        // The last handle is gone: the node stops gossiping and serving.
        if let Some(remote) = self.remote.get() {
            remote.detach();
        }
    }
}

/// A handle to a cache: cheap to clone, shared by every clone.
///
/// `C` is the codec values are stored with: [`Rkyv`] (the default, zero-copy
/// reads) or [`crate::Postcard`] (serde types).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hydracache::{CacheOptions, Grid};
/// use std::time::Duration;
///
/// let grid = Grid::local().max_capacity_bytes(64 << 20).build();
/// let name: String = grid
///     .get_or_load("user:42", CacheOptions::new().ttl(Duration::from_secs(60)).tag("users"), || async {
///         Ok::<_, std::io::Error>("Ada".to_string())
///     })
///     .await?;
/// assert_eq!(name, "Ada");
/// grid.invalidate_tag("users").await?;
/// assert_eq!(grid.get::<String>("user:42").await?, None);
/// # Ok::<(), hydracache::CacheError>(())
/// # }).unwrap();
/// ```
pub struct Grid<C: Codec = Rkyv> {
    pub(crate) inner: Arc<GridInner>,
    _codec: PhantomData<C>,
}

impl<C: Codec> Clone for Grid<C> {
    fn clone(&self) -> Self {
        Grid {
            inner: Arc::clone(&self.inner),
            _codec: PhantomData,
        }
    }
}

impl<C: Codec> std::fmt::Debug for Grid<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grid")
            .field("diagnostics", &self.diagnostics())
            .finish()
    }
}

impl Grid {
    /// A builder for a single-process grid.
    ///
    /// ```
    /// let grid = hydracache::Grid::local().build();
    /// assert_eq!(grid.diagnostics().capacity_bytes, 64 << 20);
    /// ```
    pub fn local() -> LocalBuilder {
        LocalBuilder::new()
    }
}

impl<C: Codec> Grid<C> {
    pub(crate) fn from_inner(inner: Arc<GridInner>) -> Self {
        Grid {
            inner,
            _codec: PhantomData,
        }
    }

    /// The same cache seen through another codec (shares storage, stats,
    /// single-flight and invalidation).
    pub(crate) fn with_codec<C2: Codec>(&self) -> Grid<C2> {
        Grid::from_inner(Arc::clone(&self.inner))
    }

    // ---- reads -----------------------------------------------------------

    /// The value for `key`, or `None`, as a [`Get`] future (`.await` it;
    /// nothing happens before it is first polled). A hit completes on that
    /// first poll: no lock, no await point, no allocation beyond the
    /// returned value.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// grid.put("k", 7u64, Default::default()).await.unwrap();
    /// assert_eq!(grid.get::<u64>("k").await.unwrap(), Some(7));
    /// assert_eq!(grid.get::<u64>("other").await.unwrap(), None);
    /// # });
    /// ```
    ///
    /// In a grid (member or client), a miss asks the key's owner and keeps
    /// what it has as a near copy (the owner's bytes, TTL and tags), which
    /// invalidations keep coherent; a hit never leaves this process.
    #[inline]
    pub fn get<'a, T: CacheValue<C>>(&'a self, key: &'a str) -> Get<'a, T, C> {
        Get::new(self, key)
    }

    /// A read of this process's store: the value, `None` on a miss, or the
    /// read's error (a value of another type). Counts the hit or miss and
    /// publishes the access event when someone listens.
    #[inline]
    pub(crate) fn get_now<T: CacheValue<C>>(&self, key: &str) -> Result<Option<T>, CacheError> {
        let inner = &*self.inner;
        match inner.store.get_ref(key.as_bytes()) {
            // The hit nobody listens to: the value is decoded straight into
            // the caller's result, the one copy a hit makes of it.
            Some(entry) if !inner.events.access_active() => T::read_found(&entry),
            found => self.get_now_observed(key, found),
        }
    }

    /// [`Grid::get_now`] past the lookup when it missed or access events
    /// are listened to: publishes the miss, or the hit once the value read.
    #[cold]
    #[inline(never)]
    fn get_now_observed<T: CacheValue<C>>(
        &self,
        key: &str,
        found: Option<EntryRef<'_>>,
    ) -> Result<Option<T>, CacheError> {
        let events = &self.inner.events;
        let Some(entry) = found else {
            if events.access_active() {
                events.publish(CacheEvent::Miss {
                    key: key.to_string(),
                });
            }
            return Ok(None);
        };
        // On an error the entry stays: a read of the wrong type is this
        // caller's mistake, and a reader of the right type still finds it.
        let value = T::read(&entry)?;
        drop(entry);
        if events.access_active() {
            events.publish(CacheEvent::Hit {
                key: key.to_string(),
            });
        }
        Ok(Some(value))
    }

    /// A zero-copy guard over the archived value for `key` (rkyv values):
    /// read it in place with [`EntryRef::archived`]. Hold it briefly and not
    /// across `.await` points: it pins memory reclamation.
    ///
    /// It reads this process's store only, synchronously: in a grid it
    /// sees near copies and owned entries but never asks the owner (use
    /// [`Grid::get`] for that).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// grid.put("k", String::from("hello"), Default::default()).await.unwrap();
    /// let entry = grid.get_ref("k").unwrap();
    /// assert_eq!(entry.archived::<String>().unwrap().as_str(), "hello");
    /// # });
    /// ```
    #[inline]
    pub fn get_ref(&self, key: &str) -> Option<EntryRef<'_>> {
        self.inner.store.get_ref(key.as_bytes())
    }

    /// True if `key` holds a live value (agrees with [`Grid::get`]).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// assert!(!grid.contains_key("k").await);
    /// grid.put("k", 1u8, Default::default()).await.unwrap();
    /// assert!(grid.contains_key("k").await);
    /// # });
    /// ```
    #[inline]
    pub async fn contains_key(&self, key: &str) -> bool {
        self.inner.store.contains_key(key.as_bytes())
    }

    // ---- writes ----------------------------------------------------------

    /// Stores `value` under `key` with the options' TTL and tags, replacing
    /// any previous value. A load of the key in flight will not be cached.
    /// The value is taken by value (it is encoded, not kept): pass a clone
    /// to keep using it, and a `String` for text.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::CacheOptions;
    /// let grid = hydracache::Grid::local().build();
    /// grid.put("user:1", String::from("Ada"), CacheOptions::new().tag("users")).await.unwrap();
    /// assert!(grid.contains_key("user:1").await);
    /// # });
    /// ```
    pub async fn put<T: CacheValue<C>>(
        &self,
        key: &str,
        value: T,
        options: CacheOptions,
    ) -> Result<(), CacheError> {
        let inner = &*self.inner;
        match inner.remote.get() {
            None => value.put(
                &inner.store,
                key.as_bytes(),
                options.expiry(),
                options.tags.as_slice(),
            )?,
            Some(remote) => Box::pin(self.put_in_grid(&**remote, key, &value, &options)).await?,
        }
        if inner.events.active() {
            inner.events.publish(CacheEvent::Stored {
                key: key.to_string(),
                tags: options.tags.as_slice().to_vec(),
                origin: EventOrigin::Local,
            });
        }
        Ok(())
    }

    /// A put in a grid, in the order that makes it race-free (see
    /// docs/consistency.md): drop the local copy and take a fill ticket;
    /// store at the owner, which invalidates every other copy (acknowledged)
    /// before it answers; then store here with the ticket, so that an
    /// invalidation or a later put that reached this node meanwhile wins.
    /// When this node is the owner (or no owner is reachable and the grid
    /// serves locally) it stores here first and invalidates the others.
    async fn put_in_grid<T: CacheValue<C>>(
        &self,
        remote: &dyn Remote,
        key: &str,
        value: &T,
        options: &CacheOptions,
    ) -> Result<(), CacheError> {
        let inner = &*self.inner;
        let encoded = value.encode()?;
        let tags = options.tags.as_slice();
        let expiry = options.expiry();
        inner.before_write(key);
        let keeps_copies = inner.stamps.of(key).keeps_copies();
        let ticket = inner.store.begin_fill(key.as_bytes(), tags)?;
        let at = remote
            .put(key, encoded.bytes(), inner.ttl_of(expiry), tags)
            .await?;
        // A read of this node may have a fetch from before the owner stored
        // the value in flight: this write must condemn its reply (near.rs).
        inner.stamps.bump_key(key);
        match at {
            // Not yet a process every other sends its invalidations to:
            // the owner has the value, this node keeps no copy.
            PutAt::Owner if !keeps_copies => drop(ticket),
            PutAt::Owner => {
                let ticket = ticket.near_copy();
                let outcome = T::fill_encoded(&inner.store, ticket, encoded.bytes(), expiry)?;
                if outcome == FillOutcome::Stored {
                    // The owner holds the value: this is a near copy.
                    inner.kept_near(key, tags, encoded.bytes().len());
                }
                if outcome == FillOutcome::Stale {
                    // Something wrote the key here meanwhile: an invalidation
                    // (then it is gone), or a read of this node that fetched
                    // the owner's value from before this put. Dropping the
                    // key is always safe; the next read asks the owner.
                    inner.before_write(key);
                }
            }
            // No owner answered, and this node is not yet one every other
            // sends its invalidations to: a copy here could outlive them.
            PutAt::Fallback if !keeps_copies => {
                drop(ticket);
                return Err(CacheError::OwnerUnreachable {
                    key: key.to_string(),
                });
            }
            PutAt::Here | PutAt::Fallback => {
                T::fill_encoded(&inner.store, ticket, encoded.bytes(), expiry)?;
                remote
                    .invalidate(Invalidation::Key(key.to_string()))
                    .await?;
            }
        }
        Ok(())
    }

    /// The value for `key`, loading it with `loader` on a miss.
    ///
    /// Concurrent misses for one key run the loader once and all get its
    /// value (single-flight). The loader runs as its own task, so dropping
    /// any caller — the first included — does not cancel it for the others.
    /// A loader error or panic reaches every waiter and nothing is cached;
    /// the next call loads again. If the key or one of its tags is
    /// invalidated while the loader runs, the value still reaches the callers
    /// that were waiting but is not cached, and callers after the
    /// invalidation start a fresh load. Must be called within a Tokio runtime.
    ///
    /// In a grid (member or client) a miss is one load in the whole grid:
    /// the key's owner grants one node the lease to load it and answers the
    /// callers on every other node from that load (see docs/consistency.md).
    /// The closure is called by each node's first caller to build the
    /// loader's future, but only the lease holder's future runs; a failure
    /// there reaches the other nodes' callers as
    /// [`CacheError::LoadFailedOn`].
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::CacheOptions;
    /// let grid = hydracache::Grid::local().build();
    /// let v: u64 = grid
    ///     .get_or_load("answer", CacheOptions::new(), || async { Ok::<_, std::io::Error>(42) })
    ///     .await
    ///     .unwrap();
    /// assert_eq!(v, 42);
    /// assert_eq!(grid.stats().loads, 1);
    /// # });
    /// ```
    pub async fn get_or_load<T, F, Fut, E>(
        &self,
        key: &str,
        options: CacheOptions,
        loader: F,
    ) -> Result<T, CacheError>
    where
        T: CacheValue<C> + Clone,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        if let Some(v) = self.get_now::<T>(key)? {
            return Ok(v);
        }
        // The miss path lives in its own boxed future so that the hit path's
        // future stays small (it is built and polled once per call).
        Box::pin(self.load(key, options, loader)).await
    }

    /// The miss path of [`Grid::get_or_load`], for callers that already
    /// looked the key up (typed views, the database cache): a second lookup
    /// would count the miss twice.
    pub(crate) async fn load<T, F, Fut, E>(
        &self,
        key: &str,
        options: CacheOptions,
        loader: F,
    ) -> Result<T, CacheError>
    where
        T: CacheValue<C> + Clone,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        self.join_or_lead(
            key,
            options,
            None,
            loader,
            |landing, ticket, remote, fut, options| {
                tokio::spawn(lead::<T, C, _, _>(
                    landing, ticket, remote, fut, options, true,
                ));
                std::future::ready(())
            },
        )
        .await
    }

    /// [`Grid::load`] with the loader run by the calling task instead of a
    /// task of its own, so it may borrow (a `&mut` connection, a query that
    /// binds a `&str`). Callers that join the load wait for this caller; if
    /// it is cancelled (dropped) before the outcome, they get
    /// [`CacheError::Cancelled`] rather than waiting forever. With `store`
    /// false the loaded value goes to this caller and the joiners but is not
    /// cached.
    #[cfg(feature = "sqlx")]
    pub(crate) async fn load_inline<T, F, Fut, E>(
        &self,
        key: &str,
        options: CacheOptions,
        store: bool,
        loader: F,
    ) -> Result<T, CacheError>
    where
        T: CacheValue<C> + Clone,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        let cancelled = Some(CacheError::Cancelled);
        self.join_or_lead(
            key,
            options,
            cancelled,
            loader,
            |landing, ticket, remote, fut, options| {
                lead::<T, C, _, _>(landing, ticket, remote, fut, options, store)
            },
        )
        .await
    }

    /// Joins the load of `key` in flight, returns the value if it appeared,
    /// or leads: counts the load, builds the loader's future (a panic there
    /// lands as `LoaderPanicked`) and hands it to `run` with the landing that
    /// guarantees the flight an outcome (`on_drop`, if given, is what the
    /// waiters get should that landing be dropped unused). Every caller then
    /// waits for the flight's outcome.
    async fn join_or_lead<T, F, Fut, E, R, RFut>(
        &self,
        key: &str,
        options: CacheOptions,
        on_drop: Option<CacheError>,
        loader: F,
        run: R,
    ) -> Result<T, CacheError>
    where
        T: CacheValue<C> + Clone,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Into<Box<dyn StdError + Send + Sync>>,
        R: FnOnce(
            Landing,
            hydracache_storage::FillTicket,
            Option<Arc<dyn Remote>>,
            Fut,
            CacheOptions,
        ) -> RFut,
        RFut: Future<Output = ()>,
    {
        let mut loader = Some(loader);
        let mut run = Some(run);
        let mut on_drop = on_drop;
        loop {
            let inner = &self.inner;
            match inner.flights.join_or_start(key, &options, &inner.store)? {
                Joined::Present => {
                    if let Some(v) = self.get_now::<T>(key)? {
                        return Ok(v);
                    }
                    // Expired or invalidated in between: try again.
                }
                Joined::Follower(flight) => {
                    GridCounters::bump(&inner.counters.joins);
                    tracing::debug!(
                        target: telemetry::LOAD,
                        key_hash = telemetry::key_hash(key),
                        "joined a load in flight"
                    );
                    return flight.wait::<T>(key).await;
                }
                Joined::Leader { flight, tx, ticket } => {
                    // From here on the flight always gets an outcome, even if
                    // the loader or the fill panics: the guard publishes one
                    // when it is dropped without having published.
                    let mut landing =
                        Landing::new(Arc::clone(inner), key.to_string(), Arc::clone(&flight), tx);
                    if let Some(error) = on_drop.take() {
                        landing.on_drop = error;
                    }
                    let make = loader.take().expect("leader runs the loader once");
                    let fut = match std::panic::catch_unwind(AssertUnwindSafe(make)) {
                        Ok(fut) => fut,
                        Err(panic) => {
                            // The caller's closure ran (and panicked): a load.
                            landing.ran_loader();
                            drop(ticket);
                            landing.land(Err(CacheError::LoaderPanicked(panic_message(&*panic))));
                            return flight.wait::<T>(key).await;
                        }
                    };
                    let remote = inner.remote.get().cloned();
                    let run = run.take().expect("leader runs once");
                    run(landing, ticket, remote, fut, options.clone()).await;
                    return flight.wait::<T>(key).await;
                }
            }
        }
    }

    /// [`Grid::get_or_load`] with an infallible producer.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// let v = grid.get_or_insert_with("k", Default::default(), || async { 5u32 }).await.unwrap();
    /// assert_eq!(v, 5);
    /// # });
    /// ```
    pub async fn get_or_insert_with<T, F, Fut>(
        &self,
        key: &str,
        options: CacheOptions,
        init: F,
    ) -> Result<T, CacheError>
    where
        T: CacheValue<C> + Clone,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.get_or_load(key, options, || {
            let fut = init();
            async move { Ok::<T, std::convert::Infallible>(fut.await) }
        })
        .await
    }

    /// Alias of [`Grid::get_or_load`] (a fallible initializer).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// let r = grid
    ///     .try_get_or_insert_with::<u8, _, _, _>("k", Default::default(), || async { Err("no") })
    ///     .await;
    /// assert!(r.is_err());
    /// # });
    /// ```
    pub async fn try_get_or_insert_with<T, F, Fut, E>(
        &self,
        key: &str,
        options: CacheOptions,
        init: F,
    ) -> Result<T, CacheError>
    where
        T: CacheValue<C> + Clone,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        self.get_or_load(key, options, init).await
    }

    // ---- invalidation ----------------------------------------------------

    /// Removes `key`; returns whether a value was there. A load of the key in
    /// flight will not be cached and later callers start a fresh one.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// grid.put("k", 1u8, Default::default()).await.unwrap();
    /// assert!(grid.remove("k").await.unwrap());
    /// assert!(!grid.remove("k").await.unwrap());
    /// # });
    /// ```
    pub async fn remove(&self, key: &str) -> Result<bool, CacheError> {
        self.invalidate(Invalidation::Key(key.to_string())).await
    }

    /// Invalidates `key` (like [`Grid::remove`], without the answer).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// grid.put("k", 1u8, Default::default()).await.unwrap();
    /// grid.invalidate_key("k").await.unwrap();
    /// assert!(!grid.contains_key("k").await);
    /// # });
    /// ```
    pub async fn invalidate_key(&self, key: &str) -> Result<(), CacheError> {
        self.invalidate(Invalidation::Key(key.to_string()))
            .await
            .map(drop)
    }

    /// Makes every entry with `tag` unreadable at once (O(1)); loads in
    /// flight with the tag will not be cached.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::CacheOptions;
    /// let grid = hydracache::Grid::local().build();
    /// grid.put("a", 1u8, CacheOptions::new().tag("t")).await.unwrap();
    /// grid.put("b", 2u8, CacheOptions::new().tag("t")).await.unwrap();
    /// grid.invalidate_tag("t").await.unwrap();
    /// assert!(!grid.contains_key("a").await && !grid.contains_key("b").await);
    /// # });
    /// ```
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), CacheError> {
        self.invalidate(Invalidation::Tags(vec![tag.to_string()]))
            .await
            .map(drop)
    }

    /// [`Grid::invalidate_tag`] for several tags in one call.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::CacheOptions;
    /// let grid = hydracache::Grid::local().build();
    /// grid.put("a", 1u8, CacheOptions::new().tag("x")).await.unwrap();
    /// grid.invalidate_tags(["x", "y"]).await.unwrap();
    /// assert!(!grid.contains_key("a").await);
    /// # });
    /// ```
    pub async fn invalidate_tags<S: AsRef<str>>(
        &self,
        tags: impl IntoIterator<Item = S>,
    ) -> Result<(), CacheError> {
        let tags = tags.into_iter().map(|t| t.as_ref().to_string()).collect();
        self.invalidate(Invalidation::Tags(tags)).await.map(drop)
    }

    /// Removes every entry; loads in flight will not be cached.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// grid.put("k", 1u8, Default::default()).await.unwrap();
    /// grid.flush().await.unwrap();
    /// assert_eq!(grid.diagnostics().entries, 0);
    /// # });
    /// ```
    pub async fn flush(&self) -> Result<(), CacheError> {
        self.invalidate(Invalidation::Flush).await.map(drop)
    }

    async fn invalidate(&self, inv: Invalidation) -> Result<bool, CacheError> {
        // A tag or flush reaches every process at once: until its fan-out
        // ended, an owner may not have applied it, and a copy fetched
        // meanwhile could be the old value (cluster/settling.rs).
        let _unsettled = match (&inv, self.inner.remote.get()) {
            (Invalidation::Tags(_) | Invalidation::Flush, Some(_)) => {
                Some(self.inner.stamps.own_unsettled())
            }
            _ => None,
        };
        let removed = self.inner.apply(&inv, EventOrigin::Local);
        if let Some(remote) = self.inner.remote.get() {
            let sent = remote.invalidate(inv.clone()).await;
            // Again, now that the owner (and the others) applied it: see
            // `GridInner::apply_to_store`.
            self.inner.apply_to_store(&inv);
            sent?;
        }
        Ok(removed)
    }

    // ---- views -----------------------------------------------------------

    /// A typed view whose keys live in namespace `ns` (`ns:key`), sharing
    /// this grid's storage, stats, single-flight and invalidation.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// let users = grid.typed::<String>("user");
    /// users.put("42", "Ada".to_string(), Default::default()).await.unwrap();
    /// assert_eq!(grid.get::<String>("user:42").await.unwrap().as_deref(), Some("Ada"));
    /// # });
    /// ```
    pub fn typed<T: CacheValue<C> + Clone>(&self, ns: &str) -> TypedCache<T, C> {
        TypedCache::new(self.clone(), ns)
    }

    /// A typed view with its own codec, e.g. [`crate::Postcard`] for a serde
    /// type in an rkyv grid.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// #[derive(serde::Serialize, serde::Deserialize, Clone, PartialEq, Debug)]
    /// struct Config { name: String }
    ///
    /// let grid = hydracache::Grid::local().build();
    /// let configs = grid.typed_with::<Config, hydracache::Postcard>("config");
    /// configs.put("a", Config { name: "x".into() }, Default::default()).await.unwrap();
    /// assert_eq!(configs.get("a").await.unwrap(), Some(Config { name: "x".into() }));
    /// # });
    /// ```
    pub fn typed_with<T: CacheValue<C2> + Clone, C2: Codec>(&self, ns: &str) -> TypedCache<T, C2> {
        TypedCache::new(self.with_codec::<C2>(), ns)
    }

    // ---- events ----------------------------------------------------------

    /// Every event except hits and misses.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// let mut events = grid.subscribe();
    /// grid.flush().await.unwrap();
    /// assert!(matches!(events.next_event().await.unwrap(), hydracache::CacheEvent::Flushed { .. }));
    /// # });
    /// ```
    pub fn subscribe(&self) -> Subscription {
        Subscription::new(&self.inner.events, Filter::All)
    }

    /// Events about one key (and flushes).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// let mut events = grid.subscribe_key("a");
    /// grid.put("b", 1u8, Default::default()).await.unwrap();
    /// grid.put("a", 1u8, Default::default()).await.unwrap();
    /// assert_eq!(events.next_event().await.unwrap().key(), Some("a"));
    /// # });
    /// ```
    pub fn subscribe_key(&self, key: &str) -> Subscription {
        Subscription::new(&self.inner.events, Filter::Key(key.to_string()))
    }

    /// Events about one tag: inserts carrying it, its invalidation, flushes.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// let mut events = grid.subscribe_tag("users");
    /// grid.invalidate_tag("users").await.unwrap();
    /// assert!(matches!(events.next_event().await.unwrap(), hydracache::CacheEvent::TagInvalidated { .. }));
    /// # });
    /// ```
    pub fn subscribe_tag(&self, tag: &str) -> Subscription {
        Subscription::new(&self.inner.events, Filter::Tag(tag.to_string()))
    }

    /// Inserts, removals, tag invalidations and flushes.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// let mut events = grid.subscribe_mutations();
    /// grid.put("a", 1u8, Default::default()).await.unwrap();
    /// assert!(events.next_event().await.unwrap().is_mutation());
    /// # });
    /// ```
    pub fn subscribe_mutations(&self) -> Subscription {
        Subscription::new(&self.inner.events, Filter::Mutations)
    }

    /// Hits and misses. Delivered only if the grid was built with
    /// `enable_access_events(true)`; reads build no event otherwise.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().enable_access_events(true).build();
    /// let mut events = grid.subscribe_access();
    /// let _ = grid.get::<u8>("nope").await;
    /// assert!(matches!(events.next_event().await.unwrap(), hydracache::CacheEvent::Miss { .. }));
    /// # });
    /// ```
    pub fn subscribe_access(&self) -> Subscription {
        Subscription::new(&self.inner.events, Filter::Access)
    }

    /// Evictions and expiries, with their cause: [`CacheEvent::Evicted`]
    /// (capacity, or an invalidation of the key, a tag or everything) and
    /// [`CacheEvent::Expired`]. No other subscription receives them, and
    /// the store builds none while no one subscribes here; the eviction
    /// counters in [`Grid::stats`] are kept either way.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::{CacheEvent, CacheOptions, EvictionCause};
    /// let grid = hydracache::Grid::local().build();
    /// let mut evictions = grid.subscribe_evictions();
    /// grid.put("k", 1u8, CacheOptions::new()).await.unwrap();
    /// grid.invalidate_key("k").await.unwrap();
    /// assert_eq!(
    ///     evictions.next_event().await.unwrap(),
    ///     CacheEvent::Evicted { key: "k".into(), cause: EvictionCause::Invalidated }
    /// );
    /// # });
    /// ```
    pub fn subscribe_evictions(&self) -> Subscription {
        Subscription::new(&self.inner.events, Filter::Evictions)
    }

    /// Calls `callback` for every mutation event, on a task of its own, until
    /// the returned handle is dropped. Must be called within a Tokio runtime.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
    /// let grid = hydracache::Grid::local().build();
    /// let seen = Arc::new(AtomicUsize::new(0));
    /// let s = seen.clone();
    /// let handle = grid.on_mutation(move |_| { s.fetch_add(1, Ordering::SeqCst); });
    /// grid.put("a", 1u8, Default::default()).await.unwrap();
    /// while seen.load(Ordering::SeqCst) == 0 { tokio::task::yield_now().await; }
    /// drop(handle); // unsubscribed
    /// # });
    /// ```
    pub fn on_mutation(&self, callback: impl FnMut(CacheEvent) + Send + 'static) -> ListenerHandle {
        ListenerHandle::spawn(self.subscribe_mutations(), callback)
    }

    // ---- introspection ---------------------------------------------------

    /// Counters.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let grid = hydracache::Grid::local().build();
    /// let _ = grid.get::<u8>("missing").await;
    /// assert_eq!(grid.stats().misses, 1);
    /// # });
    /// ```
    pub fn stats(&self) -> GridStats {
        let inner = &*self.inner;
        GridStats::from_parts(
            &inner.store.stats(),
            &inner.counters,
            inner
                .events
                .published
                .load(std::sync::atomic::Ordering::Relaxed),
            inner
                .events
                .lagged
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Counters plus entries, bytes, tags, loads in flight and subscribers.
    ///
    /// ```
    /// let grid = hydracache::Grid::local().max_capacity_bytes(1 << 20).build();
    /// let d = grid.diagnostics();
    /// assert_eq!((d.entries, d.capacity_bytes, d.codec), (0, 1 << 20, "rkyv"));
    /// ```
    pub fn diagnostics(&self) -> GridDiagnostics {
        let inner = &*self.inner;
        let s = inner.store.stats();
        GridDiagnostics {
            stats: self.stats(),
            entries: s.entries,
            bytes: s.bytes,
            capacity_bytes: s.capacity_bytes,
            tags: s.tags,
            loads_in_flight: inner.flights.len(),
            subscribers: inner.events.subscribers(),
            codec: inner.codec_name,
            load_latency: inner.load_latency.snapshot(),
        }
    }

    /// Reclaims expired and invalidated entries now (a background task does
    /// this every second when the grid was built inside a Tokio runtime).
    /// Returns how many were reclaimed.
    ///
    /// ```
    /// let grid = hydracache::Grid::local().build();
    /// assert_eq!(grid.run_maintenance(), 0);
    /// ```
    pub fn run_maintenance(&self) -> usize {
        self.inner.store.sweep(usize::MAX)
    }
}

/// The leader's half of a load: ask the key's owner (in a grid), else run
/// the loader; fill the store with the value (when `store`), and land the
/// outcome for every caller waiting on the flight.
async fn lead<T, C, Fut, E>(
    mut landing: Landing,
    ticket: hydracache_storage::FillTicket,
    remote: Option<Arc<dyn Remote>>,
    fut: Fut,
    options: CacheOptions,
    store: bool,
) where
    T: CacheValue<C>,
    C: Codec,
    Fut: Future<Output = Result<T, E>>,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    let expiry = options.expiry();
    let tags = options.tags.as_slice().to_vec();

    let inner = Arc::clone(&landing.inner);
    let mut lease = None;
    let mut keeps_copies = true;
    let mut keep_local = true;
    if let Some(remote) = &remote {
        if store {
            // In a grid the owner arbitrates: it has the value, grants this
            // node the lease to load it, or answers from another node's load.
            let before = inner.stamps.of(&landing.key);
            keeps_copies = before.keeps_copies();
            let decided = match remote.load(&landing.key, &tags).await {
                Ok(Leased::Granted(l)) => {
                    lease = Some(l);
                    None
                }
                Ok(Leased::Local) => {
                    // No owner answered (or this node left): a newcomer
                    // whose senders have not shown they send it their
                    // invalidations loads for its caller but keeps nothing.
                    keep_local = keeps_copies;
                    None
                }
                Ok(Leased::Present) => inner_read::<T, C>(&inner, &landing.key),
                Ok(Leased::Hit(entry)) => Some(
                    inner
                        .keep_near_copy::<T, C>(&landing.key, before, &entry)
                        .and_then(|_| T::decode(entry.value.as_ref().as_ref())),
                ),
                Ok(Leased::Loaded(entry)) => Some(T::decode(entry.value.as_ref().as_ref())),
                Err(e) => Some(Err(e)),
            };
            if let Some(result) = decided {
                drop(ticket);
                landing.label = "fetched";
                landing.land(result.map(|v| Arc::new(v) as _));
                return;
            }
        } else {
            // Not to be cached: the owner's value if it has one, else this
            // caller's own load, without a lease.
            match inner.fetch_near::<T, C>(&**remote, &landing.key).await {
                Ok(Some(value)) => {
                    drop(ticket);
                    landing.land(Ok(Arc::new(value)));
                    return;
                }
                Ok(None) => {}
                Err(e) => {
                    drop(ticket);
                    landing.land(Err(e));
                    return;
                }
            }
        }
    }
    // Counted here, where the loader runs: not for a load that the key's
    // owner (or another node's lease) answered.
    landing.ran_loader();
    // The loader's own spans and events nest under the load's span.
    let fut = tracing::Instrument::instrument(fut, landing.span.clone());
    let ran = AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .map(|r| r.map_err(LoadError::new));
    // The lease holder hands the owner the outcome: the failure, or (below)
    // the same bytes it stores.
    if let (Some(remote), Some(lease)) = (&remote, lease) {
        let failed = match &ran {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(panic) => Some(format!("loader panicked: {}", panic_message(&**panic))),
        };
        if let Some(message) = failed {
            remote.abandon(&landing.key, lease, message).await;
        }
    }
    let outcome: Outcome = match ran {
        Ok(Ok(value)) if !store => {
            drop(ticket);
            Ok(Arc::new(value))
        }
        Ok(Ok(value)) => {
            let filled = match (&remote, lease) {
                (Some(remote), Some(lease)) => match value.encode() {
                    Ok(encoded) => {
                        let expiry = value.own_expiry().unwrap_or(expiry);
                        // Granted by another node, the key's owner: this
                        // node keeps a near copy.
                        // Not yet a process every other sends its
                        // invalidations to: the owner keeps the value, this
                        // node no copy.
                        let filled = match lease.at {
                            Some(_) if !keeps_copies => {
                                drop(ticket);
                                Ok(None)
                            }
                            Some(_) => {
                                let ticket = ticket.near_copy();
                                T::fill_encoded(&inner.store, ticket, encoded.bytes(), expiry)
                                    .map(Some)
                            }
                            None => T::fill_encoded(&inner.store, ticket, encoded.bytes(), expiry)
                                .map(Some),
                        };
                        if lease.at.is_some() && matches!(filled, Ok(Some(FillOutcome::Stored))) {
                            // Granted by another node, the key's owner:
                            // this node keeps a near copy.
                            inner.kept_near(&landing.key, &tags, encoded.bytes().len());
                        }
                        remote
                            .fill(
                                &landing.key,
                                lease,
                                encoded.bytes(),
                                inner.ttl_of(expiry),
                                &tags,
                            )
                            .await;
                        filled
                    }
                    Err(e) => {
                        drop(ticket);
                        remote.abandon(&landing.key, lease, e.to_string()).await;
                        Err(e)
                    }
                },
                _ if !keep_local => {
                    drop(ticket);
                    Ok(None)
                }
                _ => value.fill(&inner.store, ticket, expiry).map(Some),
            };
            match filled {
                Ok(None) => Ok(Arc::new(value)),
                Ok(Some(FillOutcome::Stored)) => {
                    if inner.events.active() {
                        inner.events.publish(CacheEvent::Stored {
                            key: landing.key.clone(),
                            tags,
                            origin: EventOrigin::Local,
                        });
                    }
                    Ok(Arc::new(value))
                }
                Ok(Some(FillOutcome::Stale)) => {
                    GridCounters::bump(&inner.counters.stale_loads);
                    landing.label = "stale_discarded";
                    if inner.events.active() {
                        inner.events.publish(CacheEvent::StaleLoadDiscarded {
                            key: landing.key.clone(),
                        });
                    }
                    Ok(Arc::new(value))
                }
                Err(e) => Err(e),
            }
        }
        Ok(Err(e)) => {
            drop(ticket);
            Err(CacheError::Load(e))
        }
        Err(panic) => {
            drop(ticket);
            Err(CacheError::LoaderPanicked(panic_message(&*panic)))
        }
    };
    landing.land(outcome);
}

/// The value this node's store holds for `key` now, for a load that found
/// it there; `None` (load without a lease) if it went meanwhile.
fn inner_read<T: CacheValue<C>, C: Codec>(
    inner: &Arc<GridInner>,
    key: &str,
) -> Option<Result<T, CacheError>> {
    let entry = inner.store.get_ref(key.as_bytes())?;
    Some(T::read(&entry))
}

/// Delivers a load's outcome exactly once: counts and reports a failure,
/// retires the flight so later callers start afresh, and wakes the waiters.
/// Dropped without landing (a panic outside the loader's own future, in a
/// fill for example), it lands an error instead of leaving the flight stuck.
struct Landing {
    inner: Arc<GridInner>,
    key: String,
    flight: Arc<crate::single_flight::Flight>,
    tx: Option<tokio::sync::watch::Sender<Option<Outcome>>>,
    /// What the waiters get if the landing is dropped without an outcome.
    on_drop: CacheError,
    /// The load's span (target `hydracache::load`): the key's hash, then
    /// the outcome and the duration when it lands.
    span: tracing::Span,
    started: Instant,
    /// The outcome's name if it is a value: `loaded`, `fetched` (from the
    /// key's owner) or `stale_discarded` (not cached).
    label: &'static str,
    /// This node ran the loader: a failure is one of its `load_errors`
    /// (not a failure another node's load sent here, nor an unreachable
    /// owner).
    ran: bool,
}

impl Landing {
    fn new(
        inner: Arc<GridInner>,
        key: String,
        flight: Arc<crate::single_flight::Flight>,
        tx: tokio::sync::watch::Sender<Option<Outcome>>,
    ) -> Self {
        let span = tracing::debug_span!(
            target: telemetry::LOAD,
            "load",
            key_hash = telemetry::key_hash(&key),
            outcome = tracing::field::Empty,
            elapsed_us = tracing::field::Empty,
        );
        Landing {
            inner,
            key,
            flight,
            tx: Some(tx),
            on_drop: CacheError::LoaderPanicked(
                "the load ended without an outcome (a panic outside the loader)".into(),
            ),
            span,
            started: Instant::now(),
            label: "loaded",
            ran: false,
        }
    }

    /// The loader runs here: one of this node's `loads`.
    fn ran_loader(&mut self) {
        self.ran = true;
        GridCounters::bump(&self.inner.counters.loads);
    }

    fn land(mut self, outcome: Outcome) {
        self.deliver(outcome);
    }

    fn deliver(&mut self, outcome: Outcome) {
        let Some(tx) = self.tx.take() else { return };
        let elapsed = self.started.elapsed();
        self.inner.load_latency.record(elapsed);
        let label = match &outcome {
            Ok(_) => self.label,
            Err(e) => telemetry::error_kind(e),
        };
        let elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.span.record("outcome", label);
        self.span.record("elapsed_us", elapsed_us);
        if outcome.is_ok() {
            tracing::debug!(target: telemetry::LOAD, parent: &self.span, outcome = label, elapsed_us, "load finished");
        } else {
            tracing::warn!(target: telemetry::LOAD, parent: &self.span, outcome = label, elapsed_us, "load failed");
        }
        if let Err(e) = &outcome {
            if self.ran {
                GridCounters::bump(&self.inner.counters.load_errors);
            }
            if self.inner.events.active() {
                self.inner.events.publish(CacheEvent::LoadFailed {
                    key: self.key.clone(),
                    error: e.to_string(),
                });
            }
        }
        self.inner.flights.finish(&self.key, &self.flight);
        let _ = tx.send(Some(outcome));
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        let error = std::mem::replace(&mut self.on_drop, CacheError::Cancelled);
        self.deliver(Err(error));
    }
}

/// Period of the background sweep.
pub(crate) const SWEEP_PERIOD: Duration = Duration::from_secs(1);
/// Entries examined per shard by each background sweep.
pub(crate) const SWEEP_BUDGET: usize = 4096;

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

#[cfg(test)]
mod tests {
    use crate::remote::PutAt;
    use crate::test_remote::grid_answering_puts;
    use crate::{CacheError, CacheOptions};

    /// No owner answered a put and the grid serves locally: a node that
    /// keeps copies stores it here; one that does not yet (its senders have
    /// not shown they send it their invalidations) stores nothing and says
    /// the owner was unreachable.
    #[tokio::test]
    async fn a_put_no_owner_answered_is_kept_here_only_once_the_node_keeps_copies() {
        let grid = grid_answering_puts(PutAt::Fallback);
        let err = grid.put("k", 1u64, CacheOptions::new()).await.unwrap_err();
        assert!(
            matches!(err, CacheError::OwnerUnreachable { ref key } if key == "k"),
            "{err:?}"
        );
        assert!(!grid.inner.store.contains_key(b"k"));

        grid.inner.stamps.keep_copies(true);
        // Stored here; its invalidation then fails to leave the process.
        let err = grid.put("k", 2u64, CacheOptions::new()).await.unwrap_err();
        assert!(matches!(err, CacheError::Cancelled), "{err:?}");
        assert_eq!(grid.get::<u64>("k").await.unwrap(), Some(2));
    }
}
