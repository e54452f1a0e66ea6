//! Invalidate: drop keys, tags or everything on every node.

use bytes::Bytes;

use crate::error::{Field, ProtocolError};
use crate::wire::{Reader, Writer};

use super::{read_key, write_key, NodeIdentity};

/// What an invalidation drops.
///
/// Wire layout: a `u8` target kind, then its body:
///
/// | kind | target | body |
/// |---|---|---|
/// | 0 | `Key` | key (`u16` length + bytes) |
/// | 1 | `Keys` | `u16` count, then that many keys |
/// | 2 | `Tag` | tag (`u16` length + bytes) |
/// | 3 | `Tags` | `u16` count, then that many tags |
/// | 4 | `Flush` | nothing |
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Target {
    /// One key.
    Key(#[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes))] Bytes),
    /// Several keys, at most [`Limits::max_batch_len`](crate::Limits::max_batch_len).
    Keys(#[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes_vec))] Vec<Bytes>),
    /// Every entry carrying this tag.
    Tag(#[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes))] Bytes),
    /// Every entry carrying any of these tags, at most
    /// [`Limits::max_tags`](crate::Limits::max_tags).
    Tags(#[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes_vec))] Vec<Bytes>),
    /// Everything.
    Flush,
}

/// An invalidation, fanned out by the node where it happened (the origin).
///
/// Receivers track the last `sequence` applied per origin identity; a gap, a
/// new origin generation or an `epoch` they have not reached tells them they
/// may have missed an invalidation and must drop what they cannot prove
/// fresh. Sent with [`Flags::ACK_REQUESTED`](crate::Flags::ACK_REQUESTED) when
/// the origin waits for an [`InvalidateAck`](crate::Message::InvalidateAck).
///
/// Wire layout: origin node identity, `u64` sequence, `u64` epoch, target.
///
/// ```
/// use bytes::Bytes;
/// use hydracache_protocol::{Invalidate, NodeIdentity, Target};
///
/// let inv = Invalidate {
///     origin: NodeIdentity::new("api-1", 5),
///     sequence: 1001,
///     epoch: 12,
///     target: Target::Tag(Bytes::from_static(b"user:42")),
/// };
/// assert_eq!(inv.sequence, 1001);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Invalidate {
    /// The node where the invalidation happened.
    pub origin: NodeIdentity,
    /// Per-origin sequence number, one more for each invalidation.
    pub sequence: u64,
    /// The membership epoch the origin was at.
    pub epoch: u64,
    /// What to drop.
    pub target: Target,
}

impl Invalidate {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let origin = NodeIdentity::read(r)?;
        let sequence = r.u64(Field::Sequence)?;
        let epoch = r.u64(Field::Epoch)?;
        let limits = r.limits;
        let target = match r.u8(Field::Target)? {
            0 => Target::Key(read_key(r)?),
            1 => Target::Keys(r.bytes_list(
                Field::Keys,
                limits.max_batch_len,
                Field::Key,
                limits.max_key_len,
            )?),
            2 => Target::Tag(r.bytes16(Field::Tag, limits.max_tag_len)?),
            3 => Target::Tags(super::read_tags(r)?),
            4 => Target::Flush,
            _ => {
                return Err(ProtocolError::Malformed {
                    field: Field::Target,
                    reason: "unknown invalidation target",
                })
            }
        };
        Ok(Invalidate {
            origin,
            sequence,
            epoch,
            target,
        })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        self.origin.write(w)?;
        w.u64(self.sequence);
        w.u64(self.epoch);
        let limits = w.limits;
        match &self.target {
            Target::Key(key) => {
                w.u8(0);
                write_key(w, key)
            }
            Target::Keys(keys) => {
                w.u8(1);
                w.bytes_list(
                    Field::Keys,
                    limits.max_batch_len,
                    Field::Key,
                    limits.max_key_len,
                    keys,
                )
            }
            Target::Tag(tag) => {
                w.u8(2);
                w.bytes16(Field::Tag, tag, limits.max_tag_len)
            }
            Target::Tags(tags) => {
                w.u8(3);
                super::write_tags(w, tags)
            }
            Target::Flush => {
                w.u8(4);
                Ok(())
            }
        }
    }
}

/// An origin's invalidation high-water mark: the last sequence number it
/// has used, in its own word.
///
/// The origin sends it over its own connection to every node it sends
/// invalidations to, each gossip interval until the node acknowledged the
/// current mark (as a request, answered with an
/// [`InvalidateAck`](crate::Message::InvalidateAck) for the same generation
/// and sequence). A receiver that has not seen every number up to the mark
/// may have missed the tail: the numbers it has not seen become holes, and a
/// hole that stays open past its bound makes it drop what it cannot prove
/// fresh. Since the mark drives that rule, a receiver takes it only from the
/// origin itself, or from an admitted member relaying a client's mark to a
/// client, never from gossip.
///
/// Wire layout: origin node identity, `u64` sequence.
///
/// ```
/// use hydracache_protocol::{HighWater, NodeIdentity};
///
/// let mark = HighWater {
///     origin: NodeIdentity::new("api-1", 5),
///     sequence: 1001,
/// };
/// assert_eq!(mark.sequence, 1001);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct HighWater {
    /// The node whose invalidations the mark counts.
    pub origin: NodeIdentity,
    /// The last sequence number the origin has used in its generation (0:
    /// none yet).
    pub sequence: u64,
}

impl HighWater {
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, ProtocolError> {
        let origin = NodeIdentity::read(r)?;
        let sequence = r.u64(Field::Sequence)?;
        Ok(HighWater { origin, sequence })
    }

    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        self.origin.write(w)?;
        w.u64(self.sequence);
        Ok(())
    }
}
