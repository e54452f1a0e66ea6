//! Typed, namespaced views of a grid.

use std::cell::RefCell;
use std::error::Error as StdError;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::codec::{CacheValue, Codec};
use crate::error::CacheError;
use crate::events::{Filter, Subscription};
use crate::grid::Grid;
use crate::options::CacheOptions;

/// A view of a grid for values of one type `T` under keys `ns:key`. It shares
/// the grid's storage, stats, single-flight and invalidation (tags are
/// grid-wide). Cheap to clone.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use hydracache::{CacheOptions, Grid};
///
/// let grid = Grid::local().build();
/// let users = grid.typed::<String>("user");
/// let name = users
///     .get_or_load("42", CacheOptions::new().tag("users"), || async { Ok::<_, std::io::Error>("Ada".to_string()) })
///     .await
///     .unwrap();
/// assert_eq!(name, "Ada");
/// assert_eq!(users.key("42"), "user:42");
/// grid.invalidate_tag("users").await.unwrap();
/// assert_eq!(users.get("42").await.unwrap(), None);
/// # });
/// ```
pub struct TypedCache<T, C: Codec> {
    grid: Grid<C>,
    ns: Arc<str>,
    _t: PhantomData<fn() -> T>,
}

impl<T, C: Codec> Clone for TypedCache<T, C> {
    fn clone(&self) -> Self {
        TypedCache {
            grid: self.grid.clone(),
            ns: Arc::clone(&self.ns),
            _t: PhantomData,
        }
    }
}

thread_local! {
    static KEY: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<T: CacheValue<C> + Clone, C: Codec> TypedCache<T, C> {
    pub(crate) fn new(grid: Grid<C>, ns: &str) -> Self {
        TypedCache {
            grid,
            ns: Arc::from(ns),
            _t: PhantomData,
        }
    }

    /// The full key for `key` in this namespace.
    pub fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.ns)
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// [`Grid::get`] in this namespace (the key is built in a reused
    /// thread-local buffer, so a hit allocates only the returned value).
    ///
    /// In a grid, a miss asks the key's owner and keeps a near copy, as
    /// [`Grid::get`] does.
    pub async fn get(&self, key: &str) -> Result<Option<T>, CacheError> {
        match self.get_now(key)? {
            Some(value) => Ok(Some(value)),
            None => match self.grid.inner.remote.get() {
                None => Ok(None),
                // Boxed so that the hit path's future stays small.
                Some(remote) => {
                    let key = self.key(key);
                    Box::pin(self.grid.inner.fetch_near::<T, C>(&**remote, &key)).await
                }
            },
        }
    }

    fn get_now(&self, key: &str) -> Result<Option<T>, CacheError> {
        KEY.with(|buf| match buf.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                buf.push_str(&self.ns);
                buf.push(':');
                buf.push_str(key);
                self.grid.get_now::<T>(&buf)
            }
            Err(_) => self.grid.get_now::<T>(&self.key(key)),
        })
    }

    /// [`Grid::put`] in this namespace.
    pub async fn put(&self, key: &str, value: T, options: CacheOptions) -> Result<(), CacheError> {
        self.grid.put(&self.key(key), value, options).await
    }

    /// [`Grid::get_or_load`] in this namespace.
    pub async fn get_or_load<F, Fut, E>(
        &self,
        key: &str,
        options: CacheOptions,
        loader: F,
    ) -> Result<T, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Box<dyn StdError + Send + Sync>> + Send + 'static,
    {
        if let Some(v) = self.get_now(key)? {
            return Ok(v);
        }
        // Straight to the miss path: the lookup above already counted the miss.
        Box::pin(self.grid.load(&self.key(key), options, loader)).await
    }

    /// [`Grid::get_or_insert_with`] in this namespace.
    pub async fn get_or_insert_with<F, Fut>(
        &self,
        key: &str,
        options: CacheOptions,
        init: F,
    ) -> Result<T, CacheError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.get_or_load(key, options, || {
            let fut = init();
            async move { Ok::<T, std::convert::Infallible>(fut.await) }
        })
        .await
    }

    /// [`Grid::contains_key`] in this namespace.
    pub async fn contains_key(&self, key: &str) -> bool {
        self.grid.contains_key(&self.key(key)).await
    }

    /// [`Grid::remove`] in this namespace.
    pub async fn remove(&self, key: &str) -> Result<bool, CacheError> {
        self.grid.remove(&self.key(key)).await
    }

    /// [`Grid::invalidate_key`] in this namespace.
    pub async fn invalidate_key(&self, key: &str) -> Result<(), CacheError> {
        self.grid.invalidate_key(&self.key(key)).await
    }

    // ---- events ----------------------------------------------------------

    fn subscription(&self, filter: Filter) -> Subscription {
        Subscription::new(
            &self.grid.inner.events,
            Filter::Prefix {
                prefix: format!("{}:", self.ns),
                inner: Box::new(filter),
            },
        )
    }

    /// [`Grid::subscribe`] for the keys of this namespace, plus tag
    /// invalidations and flushes (they may reach this namespace).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::{CacheEventKind, Grid};
    /// let grid = Grid::local().build();
    /// let users = grid.typed::<String>("user");
    /// let mut events = users.subscribe();
    /// grid.put("order:1", "x".to_string(), Default::default()).await.unwrap();
    /// users.put("42", "Ada".to_string(), Default::default()).await.unwrap();
    /// let event = events.next_event().await.unwrap();
    /// assert_eq!((event.kind(), event.key()), (CacheEventKind::Stored, Some("user:42")));
    /// # });
    /// ```
    pub fn subscribe(&self) -> Subscription {
        self.subscription(Filter::All)
    }

    /// [`Grid::subscribe_key`] for `key` in this namespace.
    pub fn subscribe_key(&self, key: &str) -> Subscription {
        self.subscription(Filter::Key(self.key(key)))
    }

    /// [`Grid::subscribe_tag`] for the keys of this namespace: stores with
    /// the tag, its invalidation (tags are grid-wide) and flushes.
    pub fn subscribe_tag(&self, tag: &str) -> Subscription {
        self.subscription(Filter::Tag(tag.to_string()))
    }

    /// [`Grid::subscribe_mutations`] for the keys of this namespace.
    pub fn subscribe_mutations(&self) -> Subscription {
        self.subscription(Filter::Mutations)
    }

    /// [`Grid::subscribe_access`] for the keys of this namespace.
    pub fn subscribe_access(&self) -> Subscription {
        self.subscription(Filter::Access)
    }

    /// [`Grid::subscribe_evictions`] for the keys of this namespace.
    pub fn subscribe_evictions(&self) -> Subscription {
        self.subscription(Filter::Evictions)
    }

    /// The grid behind this view.
    pub fn grid(&self) -> &Grid<C> {
        &self.grid
    }
}
