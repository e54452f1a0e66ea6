//! # hydracache-storage
//!
//! The in-memory store under HydraCache: synchronous, thread-safe, no I/O.
//!
//! - One heap block per entry holding a 32-byte header, tag references, the
//!   key and the rkyv-archived value at a 16-byte aligned offset, found
//!   through a per-shard open-addressing index whose 8-byte slots point at
//!   the blocks (lock-free reads, memory reclaimed with
//!   [seize](https://docs.rs/seize)).
//! - Reads either copy out ([`Store::get`]) or borrow in place
//!   ([`Store::get_ref`]); the same bytes are shareable as [`bytes::Bytes`]
//!   without re-encoding ([`EntryRef::to_bytes`]).
//! - Capacity is a byte bound; eviction is S3-FIFO per shard, with a small
//!   frequency sketch deciding which keys back from the ghost list may
//!   displace main-queue entries. A hit takes no lock and writes only the
//!   entry's frequency byte (and a per-thread counter).
//! - TTLs per entry and by default; tags invalidated in O(1) by generation;
//!   expired and invalidated entries are reclaimed by a sweep without reads.
//! - [`FillTicket`]s protect loads that race invalidations.
//! - An [`EvictionListener`] hears of every entry the store removes, with
//!   its [`EvictionCause`], after the store released its locks.
//!
//! ```
//! use hydracache_storage::{Expiry, StoreConfig};
//! use std::time::Duration;
//!
//! let store = StoreConfig::new().capacity_bytes(1 << 20).build();
//! store.insert(b"k", &vec![1u32, 2, 3], Expiry::After(Duration::from_secs(5)), &["t"]).unwrap();
//! assert_eq!(store.get::<Vec<u32>>(b"k").unwrap(), Some(vec![1, 2, 3]));
//! ```
#![deny(missing_docs)]

mod clock;
mod config;
mod entry;
mod error;
mod fill;
mod ghost;
mod listener;
mod shard;
mod sketch;
mod stats;
mod store;
mod table;
mod tags;
mod value;

pub use clock::{Clock, ManualClock};
pub use config::{
    StoreConfig, DEFAULT_CAPACITY_BYTES, DEFAULT_MAX_KEY_LEN, DEFAULT_MAX_TAGS, DEFAULT_MAX_TAG_LEN,
};
pub use entry::VALUE_ALIGN;
pub use error::StoreError;
pub use fill::{FillOutcome, FillTicket};
pub use listener::{EvictionCause, EvictionListener};
pub use stats::StoreStats;
pub use store::{Expiry, Store, ENTRY_OVERHEAD, NO_TAGS, TAG_OVERHEAD};
pub use value::{encode, type_tag, EntryRef, StoreValue};
