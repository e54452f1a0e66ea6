//! Every message nodes exchange, and its payload layout.
//!
//! A [`Message`] is the payload of one [`Frame`](crate::Frame); its [`Kind`]
//! is the frame header's kind byte. The byte layout of each payload is in
//! `docs/protocol.md`; all integers are little-endian.

mod cluster;
mod control;
mod entry;
mod handshake;
mod invalidate;
mod load;
mod node;
mod put;

pub use cluster::{Member, MetadataSnapshot};
pub use control::ErrorCode;
pub use entry::{Entry, Fetch, FetchReply};
pub use handshake::{negotiate, Agreement, Features, Hello, Role, VersionRange};
pub use invalidate::{HighWater, Invalidate, Target};
pub use load::{Abandon, Fill, Load, LoadReply, OwnerLoad, OwnerLoadReply};
pub use node::NodeIdentity;
pub use put::{Put, PutReply};

use std::fmt;

use bytes::Bytes;

use crate::error::{Field, ProtocolError};
use crate::frame::HEADER_LEN;
use crate::text::Text;
use crate::wire::{Reader, Writer};
use crate::Limits;

/// The kind byte of a frame header: which [`Message`] the payload holds.
///
/// Values are grouped by purpose: `0x0_` connection control, `0x1_`
/// invalidation, `0x2_` reads and loads, `0x3_` cluster plumbing.
///
/// ```
/// use hydracache_protocol::Kind;
///
/// assert_eq!(Kind::from_u8(0x21), Some(Kind::FetchReply));
/// assert_eq!(Kind::from_u8(0x7f), None);
/// assert_eq!(Kind::Invalidate as u8, 0x10);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Kind {
    /// [`Message::Hello`].
    Hello = 0x01,
    /// [`Message::HelloAck`].
    HelloAck = 0x02,
    /// [`Message::Ping`].
    Ping = 0x03,
    /// [`Message::Pong`].
    Pong = 0x04,
    /// [`Message::Error`].
    Error = 0x05,
    /// [`Message::GoAway`].
    GoAway = 0x06,
    /// [`Message::Invalidate`].
    Invalidate = 0x10,
    /// [`Message::InvalidateAck`].
    InvalidateAck = 0x11,
    /// [`Message::HighWater`].
    HighWater = 0x12,
    /// [`Message::Fetch`].
    Fetch = 0x20,
    /// [`Message::FetchReply`].
    FetchReply = 0x21,
    /// [`Message::Load`].
    Load = 0x22,
    /// [`Message::LoadReply`].
    LoadReply = 0x23,
    /// [`Message::Fill`].
    Fill = 0x24,
    /// [`Message::OwnerLoad`].
    OwnerLoad = 0x25,
    /// [`Message::OwnerLoadReply`].
    OwnerLoadReply = 0x26,
    /// [`Message::Put`].
    Put = 0x27,
    /// [`Message::PutReply`].
    PutReply = 0x28,
    /// [`Message::Abandon`].
    Abandon = 0x29,
    /// [`Message::Raft`].
    Raft = 0x30,
    /// [`Message::Gossip`].
    Gossip = 0x31,
    /// [`Message::MetadataSnapshot`].
    MetadataSnapshot = 0x32,
}

impl Kind {
    /// Every kind this build knows, in kind-byte order.
    pub const ALL: [Kind; 22] = [
        Kind::Hello,
        Kind::HelloAck,
        Kind::Ping,
        Kind::Pong,
        Kind::Error,
        Kind::GoAway,
        Kind::Invalidate,
        Kind::InvalidateAck,
        Kind::HighWater,
        Kind::Fetch,
        Kind::FetchReply,
        Kind::Load,
        Kind::LoadReply,
        Kind::Fill,
        Kind::OwnerLoad,
        Kind::OwnerLoadReply,
        Kind::Put,
        Kind::PutReply,
        Kind::Abandon,
        Kind::Raft,
        Kind::Gossip,
        Kind::MetadataSnapshot,
    ];

    /// The kind for a kind byte, or `None` for a kind this build does not know.
    pub const fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            0x01 => Kind::Hello,
            0x02 => Kind::HelloAck,
            0x03 => Kind::Ping,
            0x04 => Kind::Pong,
            0x05 => Kind::Error,
            0x06 => Kind::GoAway,
            0x10 => Kind::Invalidate,
            0x11 => Kind::InvalidateAck,
            0x12 => Kind::HighWater,
            0x20 => Kind::Fetch,
            0x21 => Kind::FetchReply,
            0x22 => Kind::Load,
            0x23 => Kind::LoadReply,
            0x24 => Kind::Fill,
            0x25 => Kind::OwnerLoad,
            0x26 => Kind::OwnerLoadReply,
            0x27 => Kind::Put,
            0x28 => Kind::PutReply,
            0x29 => Kind::Abandon,
            0x30 => Kind::Raft,
            0x31 => Kind::Gossip,
            0x32 => Kind::MetadataSnapshot,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One message: the decoded payload of a frame.
///
/// Byte strings (keys, tags, values, opaque bodies) and texts are slices of
/// the received frame: decoding copies none of them.
///
/// ```
/// use bytes::Bytes;
/// use hydracache_protocol::{Kind, Message, Target};
///
/// let m = Message::Ping { nonce: 7 };
/// assert_eq!(m.kind(), Kind::Ping);
/// let t = Target::Key(Bytes::from_static(b"user:42"));
/// assert!(matches!(t, Target::Key(_)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Message {
    /// Opens a connection: who the sender is and what it speaks.
    Hello(Hello),
    /// Accepts a [`Message::Hello`], with the same fields about the responder.
    HelloAck(Hello),
    /// Liveness probe; answered by a [`Message::Pong`] with the same nonce.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
    /// Answer to a [`Message::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// A request failed, or a frame was refused.
    Error {
        /// What went wrong, for programs.
        code: ErrorCode,
        /// What went wrong, for people.
        message: Text,
    },
    /// The sender is closing the connection; send nothing more on it.
    GoAway {
        /// Why ([`ErrorCode::NONE`] for an orderly shutdown).
        code: ErrorCode,
        /// Why, for people.
        message: Text,
    },
    /// Drop keys, tags or everything, on every node.
    Invalidate(Invalidate),
    /// An [`Invalidate`] has been applied by the sender of the ack.
    InvalidateAck {
        /// Generation of the node that originated the invalidation.
        origin_generation: u64,
        /// The invalidation's per-origin sequence number.
        sequence: u64,
    },
    /// An origin's invalidation high-water mark, in its own word.
    HighWater(HighWater),
    /// Read a key from its owner.
    Fetch(Fetch),
    /// Answer to a [`Message::Fetch`].
    FetchReply(FetchReply),
    /// Read a key from its owner, or get a lease to load it.
    Load(Load),
    /// Answer to a [`Message::Load`].
    LoadReply(LoadReply),
    /// Hand the owner the value loaded under a lease.
    Fill(Fill),
    /// Tell the owner the load under a lease failed.
    Abandon(Abandon),
    /// Ask the owner to run a named loader for a key.
    OwnerLoad(OwnerLoad),
    /// Answer to a [`Message::OwnerLoad`].
    OwnerLoadReply(OwnerLoadReply),
    /// Store a value at its owner.
    Put(Put),
    /// Answer to a [`Message::Put`].
    PutReply(PutReply),
    /// An opaque raft-rs message (protobuf bytes), for membership consensus.
    Raft(#[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes))] Bytes),
    /// Opaque chitchat gossip bytes, for discovery and failure detection.
    Gossip(#[cfg_attr(feature = "arbitrary", arbitrary(with = crate::arb::bytes))] Bytes),
    /// The membership Raft has admitted, at an epoch.
    MetadataSnapshot(MetadataSnapshot),
}

impl Message {
    /// The kind byte this message is sent with.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Hello(_) => Kind::Hello,
            Message::HelloAck(_) => Kind::HelloAck,
            Message::Ping { .. } => Kind::Ping,
            Message::Pong { .. } => Kind::Pong,
            Message::Error { .. } => Kind::Error,
            Message::GoAway { .. } => Kind::GoAway,
            Message::Invalidate(_) => Kind::Invalidate,
            Message::InvalidateAck { .. } => Kind::InvalidateAck,
            Message::HighWater(_) => Kind::HighWater,
            Message::Fetch(_) => Kind::Fetch,
            Message::FetchReply(_) => Kind::FetchReply,
            Message::Load(_) => Kind::Load,
            Message::LoadReply(_) => Kind::LoadReply,
            Message::Fill(_) => Kind::Fill,
            Message::Abandon(_) => Kind::Abandon,
            Message::OwnerLoad(_) => Kind::OwnerLoad,
            Message::OwnerLoadReply(_) => Kind::OwnerLoadReply,
            Message::Put(_) => Kind::Put,
            Message::PutReply(_) => Kind::PutReply,
            Message::Raft(_) => Kind::Raft,
            Message::Gossip(_) => Kind::Gossip,
            Message::MetadataSnapshot(_) => Kind::MetadataSnapshot,
        }
    }

    /// Decodes the payload of a frame of kind `kind`.
    ///
    /// `payload` must be exactly the frame's payload, which starts
    /// [`HEADER_LEN`] bytes into the frame: value padding is computed from
    /// that offset. The result shares `payload`'s buffer.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use hydracache_protocol::{Kind, Limits, Message};
    ///
    /// let payload = Bytes::from_static(&[7, 0, 0, 0, 0, 0, 0, 0]);
    /// let m = Message::decode_payload(Kind::Ping, payload, &Limits::default()).unwrap();
    /// assert_eq!(m, Message::Ping { nonce: 7 });
    /// ```
    pub fn decode_payload(
        kind: Kind,
        payload: Bytes,
        limits: &Limits,
    ) -> Result<Message, ProtocolError> {
        let mut r = Reader::new(payload, HEADER_LEN, limits);
        let message = match kind {
            Kind::Hello => Message::Hello(Hello::read(&mut r)?),
            Kind::HelloAck => Message::HelloAck(Hello::read(&mut r)?),
            Kind::Ping => Message::Ping {
                nonce: r.u64(Field::Nonce)?,
            },
            Kind::Pong => Message::Pong {
                nonce: r.u64(Field::Nonce)?,
            },
            Kind::Error => Message::Error {
                code: ErrorCode(r.u16(Field::Code)?),
                message: r.text16(Field::Message, usize::from(u16::MAX))?,
            },
            Kind::GoAway => Message::GoAway {
                code: ErrorCode(r.u16(Field::Code)?),
                message: r.text16(Field::Message, usize::from(u16::MAX))?,
            },
            Kind::Invalidate => Message::Invalidate(Invalidate::read(&mut r)?),
            Kind::InvalidateAck => Message::InvalidateAck {
                origin_generation: r.u64(Field::Generation)?,
                sequence: r.u64(Field::Sequence)?,
            },
            Kind::HighWater => Message::HighWater(HighWater::read(&mut r)?),
            Kind::Fetch => Message::Fetch(Fetch::read(&mut r)?),
            Kind::FetchReply => Message::FetchReply(FetchReply::read(&mut r)?),
            Kind::Load => Message::Load(Load::read(&mut r)?),
            Kind::LoadReply => Message::LoadReply(LoadReply::read(&mut r)?),
            Kind::Fill => Message::Fill(Fill::read(&mut r)?),
            Kind::Abandon => Message::Abandon(Abandon::read(&mut r)?),
            Kind::OwnerLoad => Message::OwnerLoad(OwnerLoad::read(&mut r)?),
            Kind::OwnerLoadReply => Message::OwnerLoadReply(OwnerLoadReply::read(&mut r)?),
            Kind::Put => Message::Put(Put::read(&mut r)?),
            Kind::PutReply => Message::PutReply(PutReply::read(&mut r)?),
            Kind::Raft => Message::Raft(r.rest()),
            Kind::Gossip => Message::Gossip(r.rest()),
            Kind::MetadataSnapshot => Message::MetadataSnapshot(MetadataSnapshot::read(&mut r)?),
        };
        r.finish(kind)?;
        Ok(message)
    }

    /// Appends the payload; the frame header has been written already.
    pub(crate) fn write(&self, w: &mut Writer<'_, '_>) -> Result<(), ProtocolError> {
        match self {
            Message::Hello(h) | Message::HelloAck(h) => h.write(w)?,
            Message::Ping { nonce } | Message::Pong { nonce } => w.u64(*nonce),
            Message::Error { code, message } | Message::GoAway { code, message } => {
                w.u16(code.0);
                w.bytes16(Field::Message, message.as_bytes(), usize::from(u16::MAX))?;
            }
            Message::Invalidate(m) => m.write(w)?,
            Message::InvalidateAck {
                origin_generation,
                sequence,
            } => {
                w.u64(*origin_generation);
                w.u64(*sequence);
            }
            Message::HighWater(m) => m.write(w)?,
            Message::Fetch(m) => m.write(w)?,
            Message::FetchReply(m) => m.write(w)?,
            Message::Load(m) => m.write(w)?,
            Message::LoadReply(m) => m.write(w)?,
            Message::Fill(m) => m.write(w)?,
            Message::Abandon(m) => m.write(w)?,
            Message::OwnerLoad(m) => m.write(w)?,
            Message::OwnerLoadReply(m) => m.write(w)?,
            Message::Put(m) => m.write(w)?,
            Message::PutReply(m) => m.write(w)?,
            Message::Raft(body) | Message::Gossip(body) => w.raw(body),
            Message::MetadataSnapshot(m) => m.write(w)?,
        }
        Ok(())
    }
}

/// The TTL field shared by entries and owner loads: a presence byte (0 or 1)
/// and, when present, the milliseconds as a `u64`.
pub(crate) fn read_ttl(r: &mut Reader<'_>) -> Result<Option<u64>, ProtocolError> {
    match r.u8(Field::Ttl)? {
        0 => Ok(None),
        1 => Ok(Some(r.u64(Field::Ttl)?)),
        _ => Err(ProtocolError::Malformed {
            field: Field::Ttl,
            reason: "presence byte must be 0 or 1",
        }),
    }
}

pub(crate) fn write_ttl(w: &mut Writer<'_, '_>, ttl_ms: Option<u64>) {
    match ttl_ms {
        None => w.u8(0),
        Some(ms) => {
            w.u8(1);
            w.u64(ms);
        }
    }
}

pub(crate) fn read_tags(r: &mut Reader<'_>) -> Result<Vec<Bytes>, ProtocolError> {
    let (max_tags, max_tag_len) = (r.limits.max_tags, r.limits.max_tag_len);
    r.bytes_list(Field::Tags, max_tags, Field::Tag, max_tag_len)
}

pub(crate) fn write_tags(w: &mut Writer<'_, '_>, tags: &[Bytes]) -> Result<(), ProtocolError> {
    let (max_tags, max_tag_len) = (w.limits.max_tags, w.limits.max_tag_len);
    w.bytes_list(Field::Tags, max_tags, Field::Tag, max_tag_len, tags)
}

pub(crate) fn read_key(r: &mut Reader<'_>) -> Result<Bytes, ProtocolError> {
    let limit = r.limits.max_key_len;
    r.bytes16(Field::Key, limit)
}

pub(crate) fn write_key(w: &mut Writer<'_, '_>, key: &[u8]) -> Result<(), ProtocolError> {
    let limit = w.limits.max_key_len;
    w.bytes16(Field::Key, key, limit)
}

/// Reads a status byte and maps an unknown one to a malformed-status error.
pub(crate) fn unknown_status<T>() -> Result<T, ProtocolError> {
    Err(ProtocolError::Malformed {
        field: Field::Status,
        reason: "unknown reply status",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_bytes_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::from_u8(kind as u8), Some(kind));
        }
        let known = (0..=255u8).filter(|b| Kind::from_u8(*b).is_some()).count();
        assert_eq!(known, Kind::ALL.len());
    }
}
