//! The grid's error type.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use hydracache_storage::StoreError;

/// A loader's error, shared by every caller that waited on the same load.
/// The original error is kept: get it back with [`LoadError::downcast_ref`].
#[derive(Clone)]
pub struct LoadError(Arc<dyn StdError + Send + Sync>);

impl LoadError {
    pub(crate) fn new(e: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        LoadError(Arc::from(e.into()))
    }

    /// The loader's error as its original type, if it is an `E`.
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// use hydracache::{CacheError, CacheOptions, Grid};
    /// #[derive(Debug)]
    /// struct DbDown;
    /// impl std::fmt::Display for DbDown {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("db down") }
    /// }
    /// impl std::error::Error for DbDown {}
    ///
    /// let grid = Grid::local().build();
    /// let err = grid
    ///     .get_or_load::<u64, _, _, _>("k", CacheOptions::new(), || async { Err(DbDown) })
    ///     .await
    ///     .unwrap_err();
    /// let CacheError::Load(load) = err else { panic!() };
    /// assert!(load.downcast_ref::<DbDown>().is_some());
    /// # });
    /// ```
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

impl fmt::Debug for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&*self.0, f)
    }
}

impl StdError for LoadError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// Why a cache operation failed. Nothing was stored by a failed operation.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The loader returned an error. It reached every caller waiting on that
    /// load, and nothing was cached; the next call loads again.
    #[error("loader failed: {0}")]
    Load(LoadError),
    /// The loader panicked. Every waiter gets this error; the next call loads again.
    #[error("loader panicked: {0}")]
    LoaderPanicked(String),
    /// The store refused the key, tags or value (empty or over-long key, too
    /// many tags, entry over the size limit), or the stored bytes are not a
    /// value of the requested type. A read of the wrong type leaves the
    /// entry in place for readers of the right one.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A serde codec failed to encode or decode the value (a read of the
    /// wrong type leaves the entry in place).
    #[error("codec {codec} failed: {source}")]
    Codec {
        /// Which codec.
        codec: &'static str,
        /// The codec's own error (e.g. a `postcard::Error`; see
        /// [`std::error::Error::source`]).
        source: Arc<dyn StdError + Send + Sync>,
    },
    /// A load for the same key produced a value of another Rust type (two
    /// call sites disagree about what the key holds).
    #[error("the value loaded for key {key:?} is not a {expected}")]
    TypeMismatch {
        /// The key.
        key: String,
        /// The type this caller asked for.
        expected: &'static str,
    },
    /// An invalidation was applied here and sent, but these nodes did not
    /// acknowledge it in time. They drop what they cannot prove fresh when
    /// they next hear from this node (a sequence gap, or the high-water mark
    /// it gossips); until then they may serve the old value.
    #[error("invalidation not acknowledged by {nodes:?} within the timeout")]
    Unacknowledged {
        /// Node ids that did not answer. When the invalidating process is
        /// not admitted to the membership (joining, restarted or removed),
        /// it cannot know every holder: the list then names the peers it
        /// reached, and is empty if it reached none.
        nodes: Vec<String>,
    },
    /// No owner of `key` answered within the request deadline, and the grid
    /// was built to report that (`owner_unreachable(OwnerUnreachable::Fail)`)
    /// rather than serve locally.
    #[error("no owner of {key:?} could be reached in time")]
    OwnerUnreachable {
        /// The key.
        key: String,
    },
    /// In a grid, the load of `key` ran on another node (the lease holder)
    /// and its loader failed or panicked there. Every caller that joined
    /// that load, on any node, gets this; nothing was stored and the next
    /// call loads again. (Callers on the failing node itself get
    /// [`CacheError::Load`] or [`CacheError::LoaderPanicked`].)
    #[error("the load of {key:?} failed on node {node}: {message}")]
    LoadFailedOn {
        /// The node whose loader failed.
        node: String,
        /// The key.
        key: String,
        /// The loader's error (or panic message), as text.
        message: String,
    },
    /// No loader is registered under this name on the key's owner (or, on
    /// a local grid, anywhere: only members register named loaders).
    #[error("no loader named {loader:?} is registered on the owner")]
    UnknownLoader {
        /// The loader name asked for.
        loader: String,
    },
    /// The named loader refused its arguments (they do not decode, or are
    /// out of its range). Nothing ran and nothing was stored.
    #[error("loader {loader:?} rejected its arguments: {message}")]
    ArgumentsRejected {
        /// The loader name.
        loader: String,
        /// Why, as the loader said it.
        message: String,
    },
    /// The arguments of a named load are longer than the node that checked
    /// them accepts (`max_owner_load_args`): this node before sending, or
    /// the owner. Nothing ran and nothing was stored.
    #[error("the arguments of loader {loader:?} are {len} bytes, over the limit of {limit}")]
    ArgumentsTooLarge {
        /// The loader name.
        loader: String,
        /// The arguments' length in bytes.
        len: usize,
        /// The limit in bytes of the node that refused them.
        limit: usize,
    },
    /// The named loader ran on the key's owner and failed or panicked. Every
    /// caller that joined that load anywhere in the grid gets this; nothing
    /// was stored, and the next call loads again.
    #[error("loader {loader:?} failed on {node}: {message}")]
    OwnerLoadFailed {
        /// The loader name.
        loader: String,
        /// The node id the loader ran on.
        node: String,
        /// The loader's error (or panic message), as text.
        message: String,
    },
    /// The loader task was cancelled because the runtime shut down.
    #[error("the load was cancelled: the runtime is shutting down")]
    Cancelled,
}

impl CacheError {
    /// The loader's error as its original type, if this is a [`CacheError::Load`] of an `E`.
    pub fn load_error<E: StdError + 'static>(&self) -> Option<&E> {
        match self {
            CacheError::Load(e) => e.downcast_ref::<E>(),
            _ => None,
        }
    }
}
