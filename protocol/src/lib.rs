//! HydraCache's wire protocol, sans-IO.
//!
//! This crate defines every message HydraCache nodes exchange and how it is
//! framed, as pure functions over [`bytes`]: no sockets, no runtime. The
//! cluster layer carries the frames over QUIC streams and datagrams; this
//! crate does not know that.
//!
//! - [`Frame`]: a fixed 20-byte header (magic, version, kind, flags, request
//!   id, payload length), the payload, and a CRC-32 of both.
//! - [`Message`]: the payload, one variant per [`Kind`].
//! - [`Limits`]: bounds on every length, checked before anything is
//!   allocated, on both encode and decode.
//! - [`FrameCodec`]: a tokio-util `Decoder`/`Encoder` for streams.
//! - [`Hello`] and [`negotiate`]: the handshake and its versioning rules.
//! - [`align_value`]: values are rkyv archives read in place; this gets them
//!   to the alignment rkyv needs with at most one copy.
//! - [`ProtocolError`]: one error enum; decoding never panics.
//!
//! The byte layouts, with test vectors, are in `docs/protocol.md`.
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use hydracache_protocol::{Entry, FetchReply, Frame, Limits, Message};
//!
//! let limits = Limits::default();
//! let value = Bytes::from(vec![0xab; 1024]);
//! let reply = Frame::new(7, Message::FetchReply(FetchReply::Hit(
//!     Entry::new(value.clone()).with_ttl_ms(60_000),
//! )));
//!
//! let mut buf = BytesMut::new();
//! reply.encode(&limits, &mut buf).unwrap();
//! let wire = buf.freeze();
//!
//! let decoded = Frame::decode(&mut wire.clone(), &limits).unwrap();
//! let Message::FetchReply(FetchReply::Hit(entry)) = decoded.message else {
//!     unreachable!()
//! };
//! assert_eq!(entry.value, value);
//! // The decoded value is a slice of the received buffer, not a copy.
//! let wire_range = wire.as_ptr_range();
//! assert!(wire_range.contains(&entry.value.as_ptr()));
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod align;
#[cfg(feature = "arbitrary")]
mod arb;
mod codec;
mod error;
mod frame;
mod limits;
mod message;
mod text;
mod wire;

pub use align::{align_value, is_aligned, VALUE_ALIGN};
pub use codec::FrameCodec;
pub use error::{Field, ProtocolError, Recovery};
pub use frame::{
    Flags, Frame, FrameHeader, RawFrame, HEADER_LEN, MAGIC, MAX_VERSION, MIN_FRAME_LEN,
    MIN_VERSION, TRAILER_LEN,
};
pub use limits::Limits;
pub use message::{
    negotiate, Abandon, Agreement, Entry, ErrorCode, Features, Fetch, FetchReply, Fill, Hello,
    HighWater, Invalidate, Kind, Load, LoadReply, Member, Message, MetadataSnapshot, NodeIdentity,
    OwnerLoad, OwnerLoadReply, Put, PutReply, Role, Target, VersionRange,
};
pub use text::Text;
