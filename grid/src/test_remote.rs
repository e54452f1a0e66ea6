//! Unit-test fixtures: a grid whose runtime answers as the test says, for
//! the core's side of the seam (a local grid has no runtime).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::Rkyv;
use crate::error::CacheError;
use crate::grid::Grid;
use crate::invalidation::Invalidation;
use crate::owner_load::OwnerLoad;
use crate::remote::{Fetched, Lease, Leased, OwnerLoaded, PutAt, Remote, RemoteFuture};

/// Owns every key (reads stay here), answers every put with `put`, and
/// cannot reach anyone with an invalidation.
struct Unreachable {
    put: PutAt,
}

impl Remote for Unreachable {
    fn fetch<'a>(&'a self, _key: &'a str) -> RemoteFuture<'a, Result<Fetched, CacheError>> {
        Box::pin(async { Ok(Fetched::Owned) })
    }

    fn put<'a>(
        &'a self,
        _key: &'a str,
        _value: &'a [u8],
        _ttl: Option<Duration>,
        _tags: &'a [String],
    ) -> RemoteFuture<'a, Result<PutAt, CacheError>> {
        let at = self.put;
        Box::pin(async move { Ok(at) })
    }

    fn owner_load<'a>(
        &'a self,
        _key: &'a str,
        load: &'a OwnerLoad,
        _ttl: Option<Duration>,
        _tags: &'a [String],
    ) -> RemoteFuture<'a, Result<OwnerLoaded, CacheError>> {
        let loader = load.loader().to_string();
        Box::pin(async { Err(CacheError::UnknownLoader { loader }) })
    }

    fn invalidate(&self, _inv: Invalidation) -> RemoteFuture<'_, Result<(), CacheError>> {
        Box::pin(async { Err(CacheError::Cancelled) })
    }

    fn load<'a>(
        &'a self,
        _key: &'a str,
        _tags: &'a [String],
    ) -> RemoteFuture<'a, Result<Leased, CacheError>> {
        // This node owns every key and arbitrates alone: load here.
        Box::pin(async { Ok(Leased::Local) })
    }

    fn fill<'a>(
        &'a self,
        _key: &'a str,
        _lease: Lease,
        _value: &'a [u8],
        _ttl: Option<Duration>,
        _tags: &'a [String],
    ) -> RemoteFuture<'a, ()> {
        Box::pin(async {})
    }

    fn abandon<'a>(
        &'a self,
        _key: &'a str,
        _lease: Lease,
        _message: String,
    ) -> RemoteFuture<'a, ()> {
        Box::pin(async {})
    }

    fn kept_near(&self, _: &str, _: usize) {}

    fn voids(&self, _inv: &Invalidation) {}

    fn detach(&self) {}

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A grid that applies invalidations here and then fails to send them on;
/// its puts are stored at an owner that invalidated the (no) other copies.
#[cfg_attr(
    not(any(feature = "sqlx-sqlite", feature = "sqlx-postgres")),
    allow(dead_code)
)]
pub(crate) fn grid_with_failing_fan_out() -> Grid<Rkyv> {
    grid_answering_puts(PutAt::Owner)
}

/// A grid whose runtime answers every put with `put`.
pub(crate) fn grid_answering_puts(put: PutAt) -> Grid<Rkyv> {
    let grid = Grid::local().build();
    if grid
        .inner
        .remote
        .set(Arc::new(Unreachable { put }))
        .is_err()
    {
        unreachable!("a new local grid has no remote");
    }
    grid
}
