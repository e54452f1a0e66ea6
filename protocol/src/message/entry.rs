//! Cached entries on the wire, and Fetch/FetchReply (peer-fetch).

use bytes::Bytes;

use crate::error::{Field, ProtocolError};
use crate::wire::{Reader, Writer};

use super::{read_key, read_tags, read_ttl, unknown_status, write_key, write_tags, write_ttl};

/// A cached value with what the receiver needs to store it: remaining TTL and
/// tags. Carried by fetch hits, load hits, fills and owner loads.
///
/// The value is the store's bytes exactly as they are held (an rkyv archive),
/// never re-encoded. After decoding it is a slice of the received frame: no
/// copy. It starts at a 16-byte-aligned offset of the frame; call
/// [`Entry::aligned_value`] before reading it in place.
///
/// Wire layout: TTL (`u8` presence 0/1, then `u64` milliseconds if 1), tags
/// (`u16` count, then `u16` length + bytes each), value (`u32` length, 0–15
/// zero bytes up to a 16-aligned frame offset, the bytes).
///
/// ```
/// use bytes::Bytes;
/// use hydracache_protocol::Entry;
///
/// let entry = Entry::new(Bytes::from_static(b"archived value"))
///     .with_ttl_ms(60_000)
///     .with_tags([Bytes::from_static(b"users")]);
/// assert_eq!(entry.ttl_ms, Some(60_000));
/// assert_eq!(entry.tags.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Entry {
    /// Milliseconds the entry has left to live; `None` never expires.
    pub ttl_ms: Option<u64>,
    /// Tags, at most [`Limits::max_tags`](crate::Limits::max_tags).
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes_vec))]
    pub tags: Vec<Bytes>,
    /// The value bytes (an rkyv archive, opaque to this crate).
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes))]
    pub value: Bytes,
}

impl Entry {
    /// An entry with no TTL and no tags.
    pub fn new(value: Bytes) -> Entry {
        Entry {
            ttl_ms: None,
            tags: Vec::new(),
            value,
        }
    }

    /// Sets the remaining TTL in milliseconds.
    pub fn with_ttl_ms(mut self, ttl_ms: u64) -> Entry {
        self.ttl_ms = Some(ttl_ms);
        self
    }

    /// Sets the tags.
    pub fn with_tags(mut self, tags: impl IntoIterator<Item = Bytes>) -> Entry {
        self.tags = tags.into_iter().collect();
        self
    }

    /// The value at a 16-byte-aligned address, ready for in-place reading:
    /// the same buffer when already aligned, else one copy. See
    /// [`align_value`](crate::align_value).
    pub fn aligned_value(&self) -> Bytes {
        crate::align_value(self.value.clone())
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Entry, ProtocolError> {
        let ttl_ms = read_ttl(r)?;
        let tags = read_tags(r)?;
        let value = r.blob(Field::Value)?;
        Ok(Entry {
            ttl_ms,
            tags,
            value,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        write_ttl(w, self.ttl_ms);
        write_tags(w, &self.tags)?;
        w.blob(Field::Value, &self.value)
    }
}

/// Read a key from its owner (peer-fetch).
///
/// Wire layout: `u64` epoch, key (`u16` length + bytes).
///
/// ```
/// use bytes::Bytes;
/// use hydracache_protocol::Fetch;
///
/// let f = Fetch { epoch: 12, key: Bytes::from_static(b"user:42") };
/// assert_eq!(f.epoch, 12);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Fetch {
    /// The membership epoch at which the sender computed the owner.
    pub epoch: u64,
    /// The key.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes))]
    pub key: Bytes,
}

impl Fetch {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Fetch {
            epoch: r.u64(Field::Epoch)?,
            key: read_key(r)?,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        w.u64(self.epoch);
        write_key(w, &self.key)
    }
}

/// The owner's answer to a [`Fetch`].
///
/// Wire layout: a `u8` status, then its body:
///
/// | status | reply | body |
/// |---|---|---|
/// | 0 | `Hit` | entry |
/// | 1 | `Miss` | nothing |
/// | 2 | `WrongOwner` | `u64` current epoch |
/// | 3 | `StaleGeneration` | `u64` current generation |
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum FetchReply {
    /// The owner has the key.
    Hit(Entry),
    /// The owner does not have the key.
    Miss,
    /// The responder does not own the key at its epoch; recompute the owner.
    WrongOwner {
        /// The responder's current membership epoch.
        epoch: u64,
    },
    /// The requester's generation is older than the one membership knows for
    /// its node id: it has been replaced and must not be served.
    StaleGeneration {
        /// The generation membership knows for the requester's node id.
        current_generation: u64,
    },
}

impl FetchReply {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(match r.u8(Field::Status)? {
            0 => FetchReply::Hit(Entry::read(r)?),
            1 => FetchReply::Miss,
            2 => FetchReply::WrongOwner {
                epoch: r.u64(Field::Epoch)?,
            },
            3 => FetchReply::StaleGeneration {
                current_generation: r.u64(Field::Generation)?,
            },
            _ => return unknown_status(),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        match self {
            FetchReply::Hit(entry) => {
                w.u8(0);
                entry.write(w)?;
            }
            FetchReply::Miss => w.u8(1),
            FetchReply::WrongOwner { epoch } => {
                w.u8(2);
                w.u64(*epoch);
            }
            FetchReply::StaleGeneration { current_generation } => {
                w.u8(3);
                w.u64(*current_generation);
            }
        }
        Ok(())
    }
}
