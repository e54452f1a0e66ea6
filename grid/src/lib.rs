//! # HydraCache
//!
//! An embedded data grid for Rust services. This crate is what users import:
//! [`Grid::local()`] builds a single-process async cache with byte capacity,
//! TTLs, tags, single-flight loading, typed views, events and stats, on top of
//! the `hydracache-storage` engine.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use hydracache::{CacheOptions, Grid};
//! use std::time::Duration;
//!
//! let grid = Grid::local()
//!     .max_capacity_bytes(256 << 20)
//!     .default_ttl(Duration::from_secs(300))
//!     .build();
//!
//! let user: String = grid
//!     .get_or_load(
//!         "user:42",
//!         CacheOptions::new().ttl(Duration::from_secs(60)).tags(["users", "user:42"]),
//!         || async { Ok::<_, std::io::Error>("Ada".to_string()) },
//!     )
//!     .await?;
//! assert_eq!(user, "Ada");
//! grid.invalidate_tag("user:42").await?;
//! # Ok::<(), hydracache::CacheError>(())
//! # }).unwrap();
//! ```
//!
//! Values are rkyv types natively (`#[derive(Archive, Serialize,
//! Deserialize)]`, zero-copy reads with [`Grid::get_ref`]); serde types work
//! through the [`Postcard`] codec, per grid (`Grid::local().codec::<Postcard>()`)
//! or per typed view ([`Grid::typed_with`]).
#![deny(missing_docs)]

#[cfg(feature = "actuator")]
pub mod actuator;
mod builder;
#[cfg(feature = "cluster")]
pub mod cluster;
mod codec;
#[cfg(feature = "sqlx")]
pub mod db;
mod error;
mod events;
mod get;
mod grid;
mod invalidation;
mod key;
mod latency;
mod macros;
mod near;
mod options;
mod owner_load;
mod remote;
mod single_flight;
mod stats;
mod telemetry;
#[cfg(test)]
mod test_remote;
mod typed;

pub use builder::{LocalBuilder, DEFAULT_CAPACITY_BYTES, DEFAULT_EVENT_BUFFER};
pub use codec::{CacheValue, Codec, Postcard, Rkyv};
pub use error::{CacheError, LoadError};
pub use events::{
    CacheEvent, CacheEventKind, EventError, EventOrigin, EvictionCause, ListenerHandle, MemberInfo,
    MemberRole, MembershipChange, MembershipSubscription, Subscription,
};
pub use get::Get;
pub use grid::Grid;
pub use hydracache_storage::{Clock, EntryRef, ManualClock, StoreError};
pub use invalidation::Invalidation;
pub use key::{CacheKeyBuilder, KEY_SEPARATOR};
pub use latency::LatencySnapshot;
pub use options::{CacheOptions, TagSet, Ttl};
pub use owner_load::{OwnerLoad, OwnerLoadRequest, RejectedArguments};
pub use stats::{GridDiagnostics, GridStats};
pub use typed::TypedCache;

/// rkyv, re-exported so value types can derive its traits with the same version.
pub use rkyv;
