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
use std::time::Duration;

use crate::error::CacheError;
use crate::invalidation::Invalidation;
use crate::owner_load::OwnerLoad;

/// A boxed future borrowed from the remote.
pub(crate) type RemoteFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A value as another node holds it.
// Constructed by a runtime only (none without the cluster feature).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) struct RemoteEntry {
    /// The owner's stored bytes, as received (never re-encoded).
    pub(crate) value: Box<dyn AsRef<[u8]> + Send + Sync>,
    /// Time left to live; `None` never expires.
    pub(crate) ttl: Option<Duration>,
    /// The entry's tags.
    pub(crate) tags: Vec<String>,
}

/// The answer to a fetch.
// Constructed by a runtime only (none without the cluster feature).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) enum Fetched {
    /// The owner has it.
    Hit(RemoteEntry),
    /// The owner has nothing for the key.
    Miss,
    /// This node owns the key: its own store is the answer.
    Owned,
    /// No owner could be reached in time and this grid serves locally
    /// (counted by the runtime).
    Unavailable,
}

/// Where a put landed.
// Constructed by a runtime only (none without the cluster feature).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PutAt {
    /// Stored at the owner, and every other node's copy is invalidated; the
    /// caller stores it locally.
    Owner,
    /// This node owns the key (or left the cluster): the caller stores it
    /// and invalidates every other node's copy itself.
    Here,
    /// No owner could be reached and this grid serves locally: as `Here`,
    /// once this node keeps copies; before, nothing is stored and the put
    /// fails with `OwnerUnreachable` (cluster/copy_gate.rs).
    Fallback,
}

/// A lease on a key's load that this node holds: it runs the loader and
/// hands the value (or the failure) to the lease's owner.
// Constructed by a runtime only (none without the cluster feature).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Names the lease at its owner.
    pub(crate) token: u64,
    /// The owner that granted it; `None` for this node's own table.
    pub(crate) at: Option<std::net::SocketAddr>,
}

/// The owner's decision on a `get_or_load` miss.
// Constructed by a runtime only (none without the cluster feature).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) enum Leased {
    /// The owner has the value (or another node's load just stored it):
    /// keep it as a near copy.
    Hit(RemoteEntry),
    /// This node owns the key and its store has the value now.
    Present,
    /// This node runs the loader, then fills or abandons the lease.
    Granted(Lease),
    /// Another node's load ended while an invalidation voided its lease:
    /// the value is this call's answer but is not kept.
    Loaded(RemoteEntry),
    /// No owner could be reached in time and this grid serves locally (or
    /// the node left the cluster): load here without a lease.
    Local,
}

/// The answer to a named owner load: the stored bytes, shared by every
/// caller on this node that joined the request.
// Constructed by a runtime only (none without the cluster feature).
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
#[derive(Clone)]
pub(crate) struct OwnerLoaded {
    /// The bytes the owner stored (or, if an invalidation raced the load,
    /// would have stored), with their TTL and tags.
    pub(crate) entry: std::sync::Arc<RemoteEntry>,
    /// This node is the owner and ran the loader (or found the value) in
    /// its own store: there is no near copy to keep.
    pub(crate) stored_here: bool,
}

/// What the core asks of the rest of the grid.
pub(crate) trait Remote: Send + Sync + 'static {
    /// Reads `key` from its owner (a local miss).
    fn fetch<'a>(&'a self, key: &'a str) -> RemoteFuture<'a, Result<Fetched, CacheError>>;

    /// Stores `value` (the bytes this node encoded) at the owner of `key`,
    /// which invalidates every other node's copy before answering.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
        tags: &'a [String],
    ) -> RemoteFuture<'a, Result<PutAt, CacheError>>;

    /// Runs the named loader of `key`'s owner on a miss (once for every
    /// concurrent caller in the grid) and returns what it stored.
    fn owner_load<'a>(
        &'a self,
        key: &'a str,
        load: &'a OwnerLoad,
        ttl: Option<Duration>,
        tags: &'a [String],
    ) -> RemoteFuture<'a, Result<OwnerLoaded, CacheError>>;

    /// Sends an invalidation already applied here to the other nodes and
    /// resolves as the invalidation mode says (acknowledged or sent).
    fn invalidate(&self, inv: Invalidation) -> RemoteFuture<'_, Result<(), CacheError>>;

    /// A `get_or_load` miss (after the local single flight): the owner
    /// answers with the value, or grants this node the lease to load it, or
    /// holds the request until another node's lease ends. A failure of that
    /// load comes back as [`CacheError::LoadFailedOn`].
    fn load<'a>(
        &'a self,
        key: &'a str,
        tags: &'a [String],
    ) -> RemoteFuture<'a, Result<Leased, CacheError>>;

    /// The loader run under `lease` produced `value` (the bytes this node
    /// stored): hand them to the owner.
    fn fill<'a>(
        &'a self,
        key: &'a str,
        lease: Lease,
        value: &'a [u8],
        ttl: Option<Duration>,
        tags: &'a [String],
    ) -> RemoteFuture<'a, ()>;

    /// The loader run under `lease` failed with `message`.
    fn abandon<'a>(&'a self, key: &'a str, lease: Lease, message: String) -> RemoteFuture<'a, ()>;

    /// An invalidation or a write is about to change this node's store:
    /// the leases it concerns are voided first.
    fn voids(&self, inv: &Invalidation);

    /// A near copy of `key` (a key this node does not own), charged `bytes`
    /// by the store, was stored here: a member keeps its copies within
    /// their budget (cluster/near_copies.rs).
    fn kept_near(&self, key: &str, bytes: usize);

    /// The last handle to the grid is gone: stop serving and gossiping now,
    /// without waiting.
    fn detach(&self);

    /// The concrete runtime, for the runtime's own extensions of `Grid`
    /// (none without a runtime feature).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn as_any(&self) -> &dyn Any;
}
