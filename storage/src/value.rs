//! Typed values: how a Rust value becomes archived bytes and how a reader
//! gets it back, either copied out or in place behind a guard.

use std::any::TypeId;
use std::hash::BuildHasher;
use std::ptr::NonNull;
use std::time::Duration;

use bytes::Bytes;
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::entry::{EntryPtr, Header, ValueOwner, NEVER};
use crate::error::StoreError;

/// A type the store can hold natively: rkyv-archivable, checkable and
/// deserializable. Implemented for every type that derives rkyv's
/// `Archive`, `Serialize` and `Deserialize` (with the default `bytecheck`).
pub trait StoreValue:
    Sized
    + Archive<
        Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                      + Deserialize<Self, HighDeserializer<rancor::Error>>,
    > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
    + 'static
{
}

impl<T> StoreValue for T where
    T: Archive<
            Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                          + Deserialize<T, HighDeserializer<rancor::Error>>,
        > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + 'static
{
}

/// Archives a value into 16-byte aligned bytes.
///
/// ```
/// let bytes = hydracache_storage::encode(&42u64).unwrap();
/// assert_eq!(bytes.len(), 8);
/// ```
pub fn encode<T: StoreValue>(value: &T) -> Result<AlignedVec, StoreError> {
    rkyv::to_bytes::<rancor::Error>(value).map_err(|e| StoreError::Encode(e.to_string()))
}

/// A process-local identifier of `T`, recorded with values this process
/// encoded so that reading them back as the same type can skip validation.
/// Never zero (zero marks bytes of unknown type).
pub fn type_tag<T: 'static>() -> u64 {
    foldhash::fast::FixedState::with_seed(0x05ee_d7a9).hash_one(TypeId::of::<T>()) | 1
}

/// Accesses archived bytes as `T`: unchecked when this process archived them
/// as `T`, validated with bytecheck otherwise.
pub(crate) fn access<T: StoreValue>(bytes: &[u8], tag: u64) -> Result<&T::Archived, StoreError> {
    if tag == type_tag::<T>() {
        // SAFETY: the bytes were produced by `encode::<T>` in this process
        // (or validated as `T` on insertion) and are 16-byte aligned.
        Ok(unsafe { rkyv::access_unchecked::<T::Archived>(bytes) })
    } else {
        rkyv::access::<T::Archived, rancor::Error>(bytes)
            .map_err(|e| StoreError::Decode(e.to_string()))
    }
}

/// Deserializes archived bytes into an owned `T`.
pub(crate) fn decode<T: StoreValue>(bytes: &[u8], tag: u64) -> Result<T, StoreError> {
    let archived = access::<T>(bytes, tag)?;
    rkyv::deserialize::<T, rancor::Error>(archived).map_err(|e| StoreError::Decode(e.to_string()))
}

/// Checks that bytes received from outside the process are a valid archive of `T`.
pub(crate) fn validate<T: StoreValue>(bytes: &[u8]) -> Result<(), StoreError> {
    let check = |b: &[u8]| {
        rkyv::access::<T::Archived, rancor::Error>(b)
            .map(|_| ())
            .map_err(|e| StoreError::Decode(e.to_string()))
    };
    if bytes.as_ptr() as usize % crate::entry::VALUE_ALIGN == 0 {
        check(bytes)
    } else {
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        check(&aligned)
    }
}

/// A zero-copy view of a live entry. While it is held the entry's bytes stay
/// valid even if the entry is replaced or evicted meanwhile; it takes no lock
/// and no reference count (it pins the map's epoch instead), so hold it
/// briefly and do not keep it across `.await` points.
///
/// ```
/// use hydracache_storage::{Expiry, Store, NO_TAGS};
///
/// let store = Store::default();
/// store.insert(b"pi", &314u32, Expiry::Never, NO_TAGS).unwrap();
/// let entry = store.get_ref(b"pi").unwrap();
/// let archived = entry.archived::<u32>().unwrap();
/// assert_eq!(archived.to_native(), 314);
/// ```
pub struct EntryRef<'a> {
    pub(crate) _guard: papaya::LocalGuard<'a>,
    pub(crate) raw: NonNull<Header>,
    pub(crate) clock: &'a crate::clock::Clock,
}

impl EntryRef<'_> {
    #[inline]
    fn entry(&self) -> &EntryPtr {
        // SAFETY: `_guard` was active when the entry was read from the map, so
        // the block is not reclaimed before the guard is dropped.
        unsafe { EntryPtr::from_raw(&self.raw) }
    }

    /// The archived value bytes (16-byte aligned).
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        self.entry().value()
    }

    /// The key.
    #[inline]
    pub fn key(&self) -> &[u8] {
        self.entry().key()
    }

    /// The value read in place as `T`'s archived form, validated first unless
    /// this process archived it as `T`.
    #[inline]
    pub fn archived<T: StoreValue>(&self) -> Result<&T::Archived, StoreError> {
        access::<T>(self.bytes(), self.entry().header().type_tag)
    }

    /// Copies the value out as an owned `T`.
    #[inline]
    pub fn deserialize<T: StoreValue>(&self) -> Result<T, StoreError> {
        decode::<T>(self.bytes(), self.entry().header().type_tag)
    }

    /// The entry's tags.
    pub fn tags(&self) -> impl Iterator<Item = &[u8]> {
        self.entry().tags().iter().map(|t| t.state.name())
    }

    /// Time to live left now, `None` if it never expires.
    pub fn ttl_remaining(&self) -> Option<Duration> {
        remaining(self.entry().header().expires_at, self.clock.now_ms())
    }

    /// The value bytes as shareable [`Bytes`] (e.g. to send to a peer) with no
    /// copy: the `Bytes` keeps the entry's block alive.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from_owner(ValueOwner(self.entry().clone()))
    }

    /// The type tag recorded with the value (0 if unknown).
    #[inline]
    pub fn type_tag(&self) -> u64 {
        self.entry().header().type_tag
    }
}

pub(crate) fn remaining(expires_at: u64, now: u64) -> Option<Duration> {
    (expires_at != NEVER).then(|| Duration::from_millis(expires_at.saturating_sub(now)))
}
