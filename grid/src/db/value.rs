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
//!
//! It holds the value behind an `Arc`, so that the callers of one load share
//! it without `T: Clone` (row types need not be `Clone`); each caller takes
//! its own `T` with [`Stored::into_value`].

use std::sync::Arc;

use hydracache_storage::{EntryRef, Expiry, FillOutcome, FillTicket, Store};

use crate::codec::{CacheValue, Codec, Encoded};
use crate::error::CacheError;

pub(crate) struct Stored<T> {
    value: Arc<T>,
    /// `Some` overrides the load's TTL (negative results).
    expiry: Option<Expiry>,
}

impl<T> Clone for Stored<T> {
    fn clone(&self) -> Self {
        Stored {
            value: Arc::clone(&self.value),
            expiry: self.expiry,
        }
    }
}

impl<T> Stored<T> {
    pub(crate) fn new(value: T, expiry: Option<Expiry>) -> Self {
        Stored {
            value: Arc::new(value),
            expiry,
        }
    }

    /// This caller's own `T`: the value itself if no other caller shares
    /// it, else a copy made through the codec (encode and decode: no
    /// `T: Clone` needed).
    pub(crate) fn into_value<C: Codec>(self) -> Result<T, CacheError>
    where
        T: CacheValue<C>,
    {
        match Arc::try_unwrap(self.value) {
            Ok(value) => Ok(value),
            Err(shared) => shared.duplicate(),
        }
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
        Ok(Stored::new(T::read(entry)?, None))
    }

    fn duplicate(&self) -> Result<Self, CacheError> {
        Ok(self.clone())
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

    fn decode_checked(bytes: &[u8]) -> Result<Self, CacheError> {
        Ok(Stored::new(T::decode_checked(bytes)?, None))
    }
}
