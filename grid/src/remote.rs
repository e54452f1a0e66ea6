//! The one seam between the grid core and a cluster runtime.
//!
//! The core (`Grid`, its builders, single-flight, invalidation) never names
//! a cluster type: it holds at most one `Arc<dyn Remote>` and calls it where
//! a local cache would stop at this process. A local grid has none, and its
//! calls pay one predictable branch for the seam. The cluster runtime
//! implements the trait; its own extensions of `Grid` (diagnostics, leaving,
//! test hooks) reach their node through [`Remote::as_any`].

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

use crate::error::CacheError;
use crate::invalidation::Invalidation;

/// A boxed future borrowed from the remote.
pub(crate) type RemoteFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the core asks of the rest of the grid.
pub(crate) trait Remote: Send + Sync + 'static {
    /// Sends an invalidation already applied here to the other nodes and
    /// resolves as the invalidation mode says (acknowledged or sent).
    fn invalidate(&self, inv: Invalidation) -> RemoteFuture<'_, Result<(), CacheError>>;

    /// The last handle to the grid is gone: stop serving and gossiping now,
    /// without waiting.
    fn detach(&self);

    /// The concrete runtime, for the runtime's own extensions of `Grid`
    /// (none without a runtime feature).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn as_any(&self) -> &dyn Any;
}
