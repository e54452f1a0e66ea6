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
/// as `T`, validated with bytecheck otherwise. Inlined so that the tag check
/// is one comparison with a constant (out of line, it hashed `T`'s `TypeId`
/// on every read).
#[inline]
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
#[inline]
pub(crate) fn decode<T: StoreValue>(bytes: &[u8], tag: u64) -> Result<T, StoreError> {
    let archived = access::<T>(bytes, tag)?;
    if is_bytewise::<T>() {
        // SAFETY: `is_bytewise` holds, so the archived form is `T`'s own
        // bytes (rkyv's copy optimization: archiving `T` writes its bytes as
        // they are), of the same size, and `archived` is a valid archive of
        // `T` (written by this process as `T`, or checked by `access`). The
        // read is unaligned-tolerant, so `T`'s alignment does not matter.
        return Ok(unsafe {
            std::ptr::read_unaligned((archived as *const T::Archived).cast::<T>())
        });
    }
    rkyv::deserialize::<T, rancor::Error>(archived).map_err(|e| StoreError::Decode(e.to_string()))
}

/// `T` copied straight out of bytes this process archived as `T`, when its
/// archived form is its own bytes ([`is_bytewise`]); `None` otherwise (the
/// caller then reads through [`decode`]). No `Result` is built around the
/// value, so a caller can move it into its own return value in one copy.
#[inline]
pub(crate) fn copy_out<T: StoreValue>(bytes: &[u8], tag: u64) -> Option<T> {
    if !is_bytewise::<T>() || tag != type_tag::<T>() {
        return None;
    }
    // SAFETY: the bytes were produced by `encode::<T>` in this process (or
    // validated as `T` on insertion) and are 16-byte aligned, so they hold
    // a valid archive of `T`; `is_bytewise` holds, so that archive is `T`'s
    // own bytes, of `T`'s size, and the unaligned read copies them out.
    unsafe {
        let archived = rkyv::access_unchecked::<T::Archived>(bytes);
        Some(std::ptr::read_unaligned(
            (archived as *const T::Archived).cast::<T>(),
        ))
    }
}

/// True if `T`'s archived form is a plain copy of its bytes (rkyv's
/// `COPY_OPTIMIZATION`: integers in the archive's endianness, byte arrays,
/// plain structs of those without padding), so that reading one back is a
/// copy and not rkyv's element-by-element deserialization, which for a
/// `[u8; 64]` costs about 80 instructions through a fallible call per byte.
#[inline(always)]
const fn is_bytewise<T: Archive>() -> bool {
    T::COPY_OPTIMIZATION.is_enabled()
        && std::mem::size_of::<T>() == std::mem::size_of::<T::Archived>()
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
/// and no reference count (it pins memory reclamation instead), so hold it
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
    pub(crate) _guard: seize::LocalGuard<'a>,
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

    /// The value as an owned `T` by one plain copy of its bytes, when this
    /// process archived it as `T` and `T`'s archived form is its own bytes
    /// (integers, byte arrays and padding-free structs of those); `None`
    /// otherwise, and [`EntryRef::deserialize`] reads it.
    ///
    /// ```
    /// use hydracache_storage::{Expiry, Store, NO_TAGS};
    ///
    /// let store = Store::default();
    /// store.insert(b"k", &[7u8; 64], Expiry::Never, NO_TAGS).unwrap();
    /// store.insert(b"s", &String::from("text"), Expiry::Never, NO_TAGS).unwrap();
    /// assert_eq!(store.get_ref(b"k").unwrap().copied::<[u8; 64]>(), Some([7; 64]));
    /// assert_eq!(store.get_ref(b"s").unwrap().copied::<String>(), None);
    /// ```
    #[inline]
    pub fn copied<T: StoreValue>(&self) -> Option<T> {
        copy_out::<T>(self.bytes(), self.entry().header().type_tag)
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
        remaining(self.entry().header().expires_at(), self.clock.now_ms())
    }

    /// The value bytes as shareable [`Bytes`] (e.g. to send to a peer) with no
    /// copy: the `Bytes` keeps the entry's block alive. (With 16,384 such
    /// `Bytes` of one entry alive at once, further ones are copies.)
    pub fn to_bytes(&self) -> Bytes {
        match self.entry().try_clone() {
            Some(entry) => Bytes::from_owner(ValueOwner(entry)),
            None => Bytes::copy_from_slice(self.bytes()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
    #[rkyv(derive(Debug))]
    struct Plain {
        a: u32,
        b: [u8; 4],
    }

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone, Copy)]
    struct Padded {
        a: u8,
        b: u32,
    }

    fn round_trip<T: StoreValue + PartialEq + std::fmt::Debug>(value: T) {
        let bytes = encode(&value).unwrap();
        assert_eq!(decode::<T>(&bytes, type_tag::<T>()).unwrap(), value);
        // The plain copy agrees, for the types it serves.
        if is_bytewise::<T>() {
            assert_eq!(
                copy_out::<T>(&bytes, type_tag::<T>()).as_ref(),
                Some(&value)
            );
        }
        // Bytes of unknown origin are never copied unchecked.
        assert_eq!(copy_out::<T>(&bytes, 0), None);
        // Bytes of unknown origin are validated first, then copied the same way.
        assert_eq!(decode::<T>(&bytes, 0).unwrap(), value);
    }

    #[test]
    fn plain_data_reads_back_as_one_copy() {
        assert!(is_bytewise::<[u8; 64]>());
        assert!(is_bytewise::<u8>());
        assert!(is_bytewise::<Plain>());
        let mut array = [0u8; 64];
        for (i, b) in array.iter_mut().enumerate() {
            *b = i as u8 * 3;
        }
        round_trip(array);
        round_trip(7u8);
        round_trip(Plain {
            a: 0xdead_beef,
            b: *b"abcd",
        });
    }

    #[test]
    fn types_with_padding_or_pointers_deserialize_through_rkyv() {
        assert!(!is_bytewise::<Padded>());
        assert!(!is_bytewise::<String>());
        assert!(!is_bytewise::<Vec<u8>>());
        let bytes = encode(&Padded { a: 1, b: 2 }).unwrap();
        assert_eq!(copy_out::<Padded>(&bytes, type_tag::<Padded>()), None);
        round_trip(Padded { a: 1, b: 2 });
        round_trip(String::from("hello"));
        round_trip(vec![1u8, 2, 3]);
    }

    #[test]
    fn invalid_bytes_of_a_bytewise_type_are_a_decode_error() {
        // A 3-byte buffer is not a `[u8; 4]`: validation refuses it before
        // any copy.
        let mut bytes = AlignedVec::<16>::new();
        bytes.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            decode::<[u8; 4]>(&bytes, 0),
            Err(StoreError::Decode(_))
        ));
    }
}
