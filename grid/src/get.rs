//! The future of [`Grid::get`]: a hit completes inside its first poll, and
//! only a miss in a grid (member or client) builds the fetch from the owner.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::codec::{CacheValue, Codec, Rkyv};
use crate::error::CacheError;
use crate::grid::Grid;

/// What a miss in a grid awaits: the fetch from the key's owner.
type Fetch<'a, T> = Pin<Box<dyn Future<Output = Result<Option<T>, CacheError>> + Send + 'a>>;

/// The future [`Grid::get`] returns. Nothing happens before it is first
/// polled; that poll reads this process's store and, on a hit, is ready at
/// once. On a miss in a grid it asks the key's owner (a boxed fetch, polled
/// until it answers).
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let grid = hydracache::Grid::local().build();
/// grid.put("k", 7u64, Default::default()).await.unwrap();
/// let get: hydracache::Get<'_, u64> = grid.get("k");
/// assert_eq!(get.await.unwrap(), Some(7));
/// # });
/// ```
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Get<'a, T, C: Codec = Rkyv> {
    grid: &'a Grid<C>,
    key: &'a str,
    /// The fetch from the owner, once a miss in a grid started it.
    fetch: Option<Fetch<'a, T>>,
    _value: PhantomData<fn() -> T>,
}

impl<'a, T, C: Codec> Get<'a, T, C> {
    #[inline]
    pub(crate) fn new(grid: &'a Grid<C>, key: &'a str) -> Self {
        Get {
            grid,
            key,
            fetch: None,
            _value: PhantomData,
        }
    }
}

impl<T: CacheValue<C>, C: Codec> Future for Get<'_, T, C> {
    type Output = Result<Option<T>, CacheError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(fetch) = &mut this.fetch {
            return fetch.as_mut().poll(cx);
        }
        // A hit (or a read error) is returned as `get_now` built it.
        match this.grid.get_now::<T>(this.key) {
            Ok(None) => {}
            found => return Poll::Ready(found),
        }
        this.miss(cx)
    }
}

impl<'a, T: CacheValue<C>, C: Codec> Get<'a, T, C> {
    /// A miss: done in a local grid; in a grid, start the fetch from the
    /// owner and poll it. Out of line, so that the hit's poll stays small.
    #[inline(never)]
    fn miss(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, CacheError>> {
        let grid: &'a Grid<C> = self.grid;
        let Some(remote) = grid.inner.remote.get() else {
            return Poll::Ready(Ok(None));
        };
        let fetch = self
            .fetch
            .insert(Box::pin(grid.inner.fetch_near::<T, C>(&**remote, self.key)));
        fetch.as_mut().poll(cx)
    }
}
