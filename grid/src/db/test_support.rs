//! Unit-test fixtures: a grid whose invalidations fail to leave the process,
//! as a grid's fan-out can (a local grid's never do).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::codec::Rkyv;
use crate::error::CacheError;
use crate::grid::{Grid, Remote};
use crate::invalidation::Invalidation;

struct Unreachable;

impl Remote for Unreachable {
    fn invalidate(
        &self,
        _inv: Invalidation,
    ) -> Pin<Box<dyn Future<Output = Result<(), CacheError>> + Send + '_>> {
        Box::pin(async { Err(CacheError::Cancelled) })
    }
}

/// A grid that applies invalidations here and then fails to send them on.
pub(crate) fn grid_with_failing_fan_out() -> Grid<Rkyv> {
    let grid = Grid::local().build();
    if grid.inner.remote.set(Arc::new(Unreachable)).is_err() {
        unreachable!("a new local grid has no remote");
    }
    grid
}
