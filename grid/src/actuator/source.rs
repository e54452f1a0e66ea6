//! What the actuator reads from a grid: one object-safe seam over
//! `Grid<C>` for every codec, so grids with different codecs sit in one map.

use std::future::Future;
use std::pin::Pin;

use crate::codec::Codec;
use crate::grid::Grid;
use crate::stats::GridDiagnostics;

/// One reading of a grid, taken for one request.
pub(crate) struct Snapshot {
    /// Counters and gauges of the local store and grid.
    pub(crate) diagnostics: GridDiagnostics,
    /// The cluster view; `None` for a local grid.
    #[cfg(feature = "cluster")]
    pub(crate) cluster: Option<crate::cluster::ClusterDiagnostics>,
}

/// A grid the actuator can read, whatever its codec.
pub(crate) trait Source: Send + Sync + 'static {
    /// Reads the grid's diagnostics (and its cluster view, for a node).
    fn snapshot(&self) -> Pin<Box<dyn Future<Output = Snapshot> + Send + '_>>;
}

impl<C: Codec> Source for Grid<C> {
    fn snapshot(&self) -> Pin<Box<dyn Future<Output = Snapshot> + Send + '_>> {
        Box::pin(async move {
            Snapshot {
                diagnostics: self.diagnostics(),
                #[cfg(feature = "cluster")]
                cluster: self.cluster_diagnostics().await,
            }
        })
    }
}
