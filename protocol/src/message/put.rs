//! Writing a key at its owner: Put and PutReply.

use bytes::Bytes;

use crate::error::{Field, ProtocolError};
use crate::wire::{Reader, Writer};

use super::{read_key, unknown_status, write_key, Entry};

/// Store a value at the key's owner, which then invalidates every other
/// node's copy before it answers.
///
/// Wire layout: `u64` epoch, key (`u16` length + bytes), entry.
///
/// ```
/// use bytes::Bytes;
/// use hydracache_protocol::{Entry, Put};
///
/// let put = Put {
///     epoch: 12,
///     key: Bytes::from_static(b"user:42"),
///     entry: Entry::new(Bytes::from_static(b"archived")).with_ttl_ms(60_000),
/// };
/// assert_eq!(put.epoch, 12);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Put {
    /// The membership epoch at which the sender computed the owner.
    pub epoch: u64,
    /// The key.
    #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes))]
    pub key: Bytes,
    /// The value (the sender's stored bytes), its TTL and tags.
    pub entry: Entry,
}

impl Put {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(Put {
            epoch: r.u64(Field::Epoch)?,
            key: read_key(r)?,
            entry: Entry::read(r)?,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        w.u64(self.epoch);
        write_key(w, &self.key)?;
        self.entry.write(w)
    }
}

/// The owner's answer to a [`Put`].
///
/// Wire layout: a `u8` status, then its body:
///
/// | status | reply | body |
/// |---|---|---|
/// | 0 | `Stored` | `u64` sequence |
/// | 1 | `WrongOwner` | `u64` current epoch |
/// | 2 | `Unacknowledged` | `u64` sequence, node ids (`u16` count, `u16` length + bytes each) |
///
/// ```
/// use hydracache_protocol::PutReply;
///
/// let reply = PutReply::Stored { sequence: 9 };
/// assert!(matches!(reply, PutReply::Stored { sequence: 9 }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum PutReply {
    /// Stored, and every other live node acknowledged the owner's
    /// invalidation of the key, numbered `sequence` in the owner's
    /// invalidation sequence (the requester was not sent it and counts it as
    /// received).
    Stored {
        /// The owner's invalidation sequence number for this put.
        sequence: u64,
    },
    /// The responder does not own the key at its epoch; nothing was stored.
    WrongOwner {
        /// The responder's current membership epoch.
        epoch: u64,
    },
    /// Stored, but these nodes did not acknowledge the invalidation.
    Unacknowledged {
        /// The owner's invalidation sequence number for this put.
        sequence: u64,
        /// Node ids that did not acknowledge.
        #[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes_vec))]
        nodes: Vec<Bytes>,
    },
}

impl PutReply {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        Ok(match r.u8(Field::Status)? {
            0 => PutReply::Stored {
                sequence: r.u64(Field::Sequence)?,
            },
            1 => PutReply::WrongOwner {
                epoch: r.u64(Field::Epoch)?,
            },
            2 => {
                let sequence = r.u64(Field::Sequence)?;
                let (count, len) = (r.limits.max_batch_len, r.limits.max_name_len);
                PutReply::Unacknowledged {
                    sequence,
                    nodes: r.bytes_list(Field::Members, count, Field::NodeId, len)?,
                }
            }
            _ => return unknown_status(),
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        match self {
            PutReply::Stored { sequence } => {
                w.u8(0);
                w.u64(*sequence);
            }
            PutReply::WrongOwner { epoch } => {
                w.u8(1);
                w.u64(*epoch);
            }
            PutReply::Unacknowledged { sequence, nodes } => {
                w.u8(2);
                w.u64(*sequence);
                let (count, len) = (w.limits.max_batch_len, w.limits.max_name_len);
                w.bytes_list(Field::Members, count, Field::NodeId, len, nodes)?;
            }
        }
        Ok(())
    }
}
