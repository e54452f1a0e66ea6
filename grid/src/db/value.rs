//! `Stored<T>`: a query result on its way into the cache, with the TTL its
//! content calls for.
//!
//! The grid takes a load's TTL before the load runs, but a negative result
//! (no row, an empty list) has a TTL of its own that is known only once the
//! query has answered. `Stored<T>` carries that choice to the moment the
//! value is stored: its `fill` passes the chosen expiry to `T`'s, so the
//! store holds exactly `T`'s bytes and `Grid::get::<T>` reads them as usual.
//! It implements no serialization trait itself, so it cannot overlap with
//! the codecs' blanket implementations.

use hydracache_storage::{EntryRef, Expiry, FillOutcome, FillTicket, Store};

use crate::codec::{CacheValue, Codec, Encoded};
use crate::error::CacheError;

#[derive(Clone)]
pub(crate) struct Stored<T> {
    pub(crate) value: T,
    /// `Some` overrides the load's TTL (negative results).
    pub(crate) expiry: Option<Expiry>,
}

impl<T> Stored<T> {
    pub(crate) fn new(value: T, expiry: Option<Expiry>) -> Self {
        Stored { value, expiry }
    }
}

impl<C: Codec, T: CacheValue<C>> CacheValue<C> for Stored<T> {
    fn put(
        &self,
        store: &Store,
        key: &[u8],
        expiry: Expiry,
        tags: &[String],
    ) -> Result<(), CacheError> {
        self.value
            .put(store, key, self.expiry.unwrap_or(expiry), tags)
    }

    fn fill(
        &self,
        store: &Store,
        ticket: FillTicket,
        expiry: Expiry,
    ) -> Result<FillOutcome, CacheError> {
        self.value
            .fill(store, ticket, self.expiry.unwrap_or(expiry))
    }

    #[inline]
    fn read(entry: &EntryRef<'_>) -> Result<Self, CacheError> {
        Ok(Stored {
            value: T::read(entry)?,
            expiry: None,
        })
    }

    fn encode(&self) -> Result<Encoded, CacheError> {
        self.value.encode()
    }

    fn fill_encoded(
        store: &Store,
        ticket: FillTicket,
        bytes: &[u8],
        expiry: Expiry,
    ) -> Result<FillOutcome, CacheError> {
        T::fill_encoded(store, ticket, bytes, expiry)
    }
}
