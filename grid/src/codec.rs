//! Codecs: how a value becomes the bytes the store holds.
//!
//! [`Rkyv`] is the native format: values are archived once, read back with
//! no validation when this process wrote them, and can be read in place
//! ([`crate::Grid::get_ref`]). [`Postcard`] serves types that derive serde
//! instead. A grid has one codec (a type parameter, `Rkyv` by default), and a
//! typed view can choose another ([`crate::Grid::typed_with`]).

use hydracache_storage::{EntryRef, Expiry, FillOutcome, FillTicket, Store, StoreValue};

use crate::error::CacheError;

/// A value format. Implemented by [`Rkyv`] and [`Postcard`].
pub trait Codec: Clone + Copy + Default + Send + Sync + 'static {
    /// Name used in errors and diagnostics.
    const NAME: &'static str;
}

/// rkyv archives: zero-copy reads, no re-encoding between nodes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rkyv;

/// postcard (compact serde format) for types that derive `serde`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

impl Codec for Rkyv {
    const NAME: &'static str = "rkyv";
}

impl Codec for Postcard {
    const NAME: &'static str = "postcard";
}

/// A value the grid can hold with codec `C`. Implemented for every rkyv
/// type with [`Rkyv`], and every serde type with [`Postcard`]; you do not
/// implement it yourself.
///
/// A grid stores owned values: a `&str` is stored as a `String`
/// (`"Ada".to_string()`), a `&T` as the `T` it points to (`value.clone()`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in a grid with codec `{C}`",
    label = "not a cache value with codec `{C}`",
    note = "the default codec is rkyv: derive `hydracache::rkyv::{{Archive, Serialize, Deserialize}}` (with `#[rkyv(crate = hydracache::rkyv)]`) on the value type",
    note = "a type that derives serde's `Serialize`/`Deserialize` needs the Postcard codec: `Grid::local().codec::<hydracache::Postcard>()`, or a view `grid.typed_with::<T, hydracache::Postcard>(\"ns\")`",
    note = "values are owned: store a `String` for a `&str` (`\"Ada\".to_string()`), and `value.clone()` for a `&T`"
)]
pub trait CacheValue<C: Codec>: Sized + Send + Sync + 'static {
    #[doc(hidden)]
    fn put(
        &self,
        store: &Store,
        key: &[u8],
        expiry: Expiry,
        tags: &[String],
    ) -> Result<(), CacheError>;
    #[doc(hidden)]
    fn fill(
        &self,
        store: &Store,
        ticket: FillTicket,
        expiry: Expiry,
    ) -> Result<FillOutcome, CacheError>;
    #[doc(hidden)]
    fn read(entry: &EntryRef<'_>) -> Result<Self, CacheError>;
    /// [`CacheValue::read`] as a lookup returns it, built in place: a hit
    /// of a plain-data value copies it once, into the caller's result.
    #[doc(hidden)]
    #[inline]
    fn read_found(entry: &EntryRef<'_>) -> Result<Option<Self>, CacheError> {
        Self::read(entry).map(Some)
    }
    /// The bytes the store would hold for this value (sent to other nodes
    /// as they are).
    #[doc(hidden)]
    fn encode(&self) -> Result<Encoded, CacheError>;
    /// Completes a fill with bytes from [`CacheValue::encode`].
    #[doc(hidden)]
    fn fill_encoded(
        store: &Store,
        ticket: FillTicket,
        bytes: &[u8],
        expiry: Expiry,
    ) -> Result<FillOutcome, CacheError>;
    /// An independent copy made through the codec (encode, then decode),
    /// for values that are not `Clone`.
    #[doc(hidden)]
    fn duplicate(&self) -> Result<Self, CacheError>;
    /// Decodes (and validates) bytes from [`CacheValue::encode`] made by
    /// another node, without storing them.
    #[doc(hidden)]
    fn decode(bytes: &[u8]) -> Result<Self, CacheError>;
    /// The expiry this value must be stored with whatever the load asked
    /// (a negative database result's own TTL), if any.
    #[doc(hidden)]
    fn own_expiry(&self) -> Option<Expiry> {
        None
    }
}

/// A value's encoded bytes.
#[doc(hidden)]
pub struct Encoded(Box<dyn AsRef<[u8]> + Send + Sync>);

impl Encoded {
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

impl<T: StoreValue + Send + Sync> CacheValue<Rkyv> for T {
    #[inline]
    fn put(
        &self,
        store: &Store,
        key: &[u8],
        expiry: Expiry,
        tags: &[String],
    ) -> Result<(), CacheError> {
        Ok(store.insert(key, self, expiry, tags)?)
    }

    fn fill(
        &self,
        store: &Store,
        ticket: FillTicket,
        expiry: Expiry,
    ) -> Result<FillOutcome, CacheError> {
        Ok(store.complete_fill(ticket, self, expiry)?)
    }

    #[inline]
    fn read(entry: &EntryRef<'_>) -> Result<Self, CacheError> {
        Ok(entry.deserialize::<T>()?)
    }

    #[inline]
    fn read_found(entry: &EntryRef<'_>) -> Result<Option<Self>, CacheError> {
        match entry.copied::<T>() {
            Some(value) => Ok(Some(value)),
            None => Self::read(entry).map(Some),
        }
    }

    fn encode(&self) -> Result<Encoded, CacheError> {
        Ok(Encoded(Box::new(hydracache_storage::encode(self)?)))
    }

    fn fill_encoded(
        store: &Store,
        ticket: FillTicket,
        bytes: &[u8],
        expiry: Expiry,
    ) -> Result<FillOutcome, CacheError> {
        Ok(store.complete_fill_archived::<T>(ticket, bytes, expiry)?)
    }

    fn duplicate(&self) -> Result<Self, CacheError> {
        let bytes = hydracache_storage::encode(self)?;
        rkyv::from_bytes::<T, rkyv::rancor::Error>(&bytes)
            .map_err(|e| CacheError::Store(hydracache_storage::StoreError::Decode(e.to_string())))
    }

    fn decode(bytes: &[u8]) -> Result<Self, CacheError> {
        // Bytes from the network carry no alignment promise: copy them to an
        // aligned buffer, then validate and deserialize.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<T, rkyv::rancor::Error>(&aligned)
            .map_err(|e| CacheError::Store(hydracache_storage::StoreError::Decode(e.to_string())))
    }
}

fn postcard_error(e: postcard::Error) -> CacheError {
    CacheError::Codec {
        codec: Postcard::NAME,
        source: std::sync::Arc::new(e),
    }
}

impl<T> CacheValue<Postcard> for T
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    fn put(
        &self,
        store: &Store,
        key: &[u8],
        expiry: Expiry,
        tags: &[String],
    ) -> Result<(), CacheError> {
        let bytes = postcard::to_allocvec(self).map_err(postcard_error)?;
        Ok(store.insert_bytes(key, &bytes, expiry, tags)?)
    }

    fn fill(
        &self,
        store: &Store,
        ticket: FillTicket,
        expiry: Expiry,
    ) -> Result<FillOutcome, CacheError> {
        let bytes = postcard::to_allocvec(self).map_err(postcard_error)?;
        // Type tag 0: an rkyv read of these bytes always validates (and fails).
        Ok(store.complete_fill_bytes(ticket, &bytes, expiry)?)
    }

    fn read(entry: &EntryRef<'_>) -> Result<Self, CacheError> {
        postcard::from_bytes(entry.bytes()).map_err(postcard_error)
    }

    fn encode(&self) -> Result<Encoded, CacheError> {
        let bytes = postcard::to_allocvec(self).map_err(postcard_error)?;
        Ok(Encoded(Box::new(bytes)))
    }

    fn fill_encoded(
        store: &Store,
        ticket: FillTicket,
        bytes: &[u8],
        expiry: Expiry,
    ) -> Result<FillOutcome, CacheError> {
        Ok(store.complete_fill_bytes(ticket, bytes, expiry)?)
    }

    fn duplicate(&self) -> Result<Self, CacheError> {
        let bytes = postcard::to_allocvec(self).map_err(postcard_error)?;
        postcard::from_bytes(&bytes).map_err(postcard_error)
    }

    fn decode(bytes: &[u8]) -> Result<Self, CacheError> {
        postcard::from_bytes(bytes).map_err(postcard_error)
    }
}
