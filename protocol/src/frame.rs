//! The frame: a fixed 20-byte header, the payload, a CRC-32 trailer.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "HYDC" (48 59 44 43)
//!      4     1  protocol version (1)
//!      5     1  message kind
//!      6     2  flags, u16 little-endian
//!      8     8  request id, u64 little-endian (0 = none)
//!     16     4  payload length, u32 little-endian
//!     20     n  payload
//!   20+n     4  CRC-32 (IEEE) of bytes 0..20+n, u32 little-endian
//! ```

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{Field, ProtocolError};
use crate::message::{Kind, Message, VersionRange};
use crate::wire::Writer;
use crate::Limits;

/// The four bytes every frame starts with: `HYDC`.
pub const MAGIC: [u8; 4] = *b"HYDC";
/// Length of the fixed header.
pub const HEADER_LEN: usize = 20;
/// Length of the CRC-32 trailer.
pub const TRAILER_LEN: usize = 4;
/// Length of a frame with an empty payload.
pub const MIN_FRAME_LEN: usize = HEADER_LEN + TRAILER_LEN;
/// Lowest protocol version this build decodes.
pub const MIN_VERSION: u8 = 1;
/// Highest protocol version this build decodes, and the one it encodes
/// (Hello and HelloAck excepted: they are always version 1 frames).
pub const MAX_VERSION: u8 = 1;
/// The version Hello and HelloAck frames are always sent in.
const MIN_VERSION_EVER: u8 = 1;

/// Bits of the header's flags field.
///
/// Every bit this build does not define must be zero: a frame with an unknown
/// flag is refused. New flags are only sent to peers that advertised the
/// matching [`Features`](crate::Features) bit.
///
/// ```
/// use hydracache_protocol::Flags;
///
/// let f = Flags::ACK_REQUESTED;
/// assert!(f.contains(Flags::ACK_REQUESTED));
/// assert!(!Flags::empty().contains(Flags::ACK_REQUESTED));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Flags(pub u16);

impl Flags {
    /// The sender waits for an acknowledgement: an
    /// [`InvalidateAck`](crate::Message::InvalidateAck) for an
    /// [`Invalidate`](crate::Message::Invalidate). Receivers ignore it on
    /// other kinds. Bit 0.
    pub const ACK_REQUESTED: Flags = Flags(1 << 0);
    /// Every bit this build defines.
    pub const KNOWN: Flags = Flags(1 << 0);

    /// No flags.
    pub const fn empty() -> Flags {
        Flags(0)
    }

    /// Whether all of `other`'s bits are set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    fn check(self) -> Result<(), ProtocolError> {
        if self.0 & !Flags::KNOWN.0 == 0 {
            Ok(())
        } else {
            Err(ProtocolError::Malformed {
                field: Field::Flags,
                reason: "unknown flag bits set",
            })
        }
    }
}

/// The fixed header of a frame, as read off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Protocol version the frame is encoded in.
    pub version: u8,
    /// Kind byte (possibly one this build does not know).
    pub kind: u8,
    /// Flags, not yet checked for unknown bits.
    pub flags: Flags,
    /// Request/correlation id.
    pub request_id: u64,
    /// Length of the payload.
    pub payload_len: u32,
}

impl FrameHeader {
    /// Parses and checks the header at the start of `buf`: magic, version and
    /// that the whole frame fits in `limits.max_frame_len`. Magic is checked
    /// on however many bytes are there, so garbage is refused as soon as its
    /// first byte arrives.
    ///
    /// ```
    /// use hydracache_protocol::{FrameHeader, Limits, ProtocolError};
    ///
    /// let err = FrameHeader::parse(b"HY", &Limits::default()).unwrap_err();
    /// assert!(matches!(err, ProtocolError::Truncated { needed: 20, available: 2 }));
    /// let err = FrameHeader::parse(b"HX", &Limits::default()).unwrap_err();
    /// assert!(matches!(err, ProtocolError::BadMagic { .. }));
    /// ```
    pub fn parse(buf: &[u8], limits: &Limits) -> Result<FrameHeader, ProtocolError> {
        let seen = buf.len().min(MAGIC.len());
        if buf[..seen] != MAGIC[..seen] {
            let mut found = [0u8; 4];
            found[..seen].copy_from_slice(&buf[..seen]);
            return Err(ProtocolError::BadMagic { found });
        }
        if buf.len() < HEADER_LEN {
            return Err(ProtocolError::Truncated {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let version = buf[4];
        if !VersionRange::SUPPORTED.contains(version) {
            return Err(ProtocolError::UnsupportedVersion {
                version,
                supported: VersionRange::SUPPORTED,
            });
        }
        let header = FrameHeader {
            version,
            kind: buf[5],
            flags: Flags(u16::from_le_bytes([buf[6], buf[7]])),
            request_id: u64::from_le_bytes(buf[8..16].try_into().unwrap_or_default()),
            payload_len: u32::from_le_bytes([buf[16], buf[17], buf[18], buf[19]]),
        };
        let frame_len = header.frame_len() as u64;
        if frame_len > u64::from(limits.max_frame_len) {
            return Err(ProtocolError::LengthOverLimit {
                field: Field::Frame,
                len: frame_len,
                limit: u64::from(limits.max_frame_len),
            });
        }
        Ok(header)
    }

    /// Length of the whole frame: header, payload and trailer.
    pub fn frame_len(&self) -> usize {
        MIN_FRAME_LEN + self.payload_len as usize
    }
}

/// A frame whose header and checksum have been verified, with its payload not
/// yet decoded. Useful to route or skip frames without decoding them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The verified header.
    pub header: FrameHeader,
    /// The payload: a slice of the input buffer.
    pub payload: Bytes,
}

impl RawFrame {
    /// Takes one frame off the front of `src` and verifies its checksum.
    ///
    /// On success `src` is advanced past the frame. On error `src` is left as
    /// it was, except after a checksum that verified, where the frame is
    /// consumed even if its payload is later refused (see [`Frame::decode`]).
    pub fn decode(src: &mut Bytes, limits: &Limits) -> Result<RawFrame, ProtocolError> {
        let header = FrameHeader::parse(src, limits)?;
        let frame_len = header.frame_len();
        if src.len() < frame_len {
            return Err(ProtocolError::Truncated {
                needed: frame_len,
                available: src.len(),
            });
        }
        let body_len = frame_len - TRAILER_LEN;
        let expected = u32::from_le_bytes(
            src[body_len..frame_len]
                .try_into()
                .unwrap_or([0; TRAILER_LEN]),
        );
        let actual = crc32fast::hash(&src[..body_len]);
        if expected != actual {
            return Err(ProtocolError::ChecksumMismatch { expected, actual });
        }
        let payload = src.slice(HEADER_LEN..body_len);
        src.advance(frame_len);
        Ok(RawFrame { header, payload })
    }
}

/// One message with the header fields that travel with it.
///
/// ```
/// use bytes::{Bytes, BytesMut};
/// use hydracache_protocol::{Fetch, Frame, Limits, Message};
///
/// let limits = Limits::default();
/// let frame = Frame::new(7, Message::Fetch(Fetch {
///     epoch: 12,
///     key: Bytes::from_static(b"user:42"),
/// }));
/// let mut buf = BytesMut::new();
/// frame.encode(&limits, &mut buf).unwrap();
///
/// let mut wire = buf.freeze();
/// assert_eq!(Frame::decode(&mut wire, &limits).unwrap(), frame);
/// assert!(wire.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct Frame {
    /// Correlates a reply with its request where the transport does not (a
    /// datagram, or several requests on one stream); 0 when it does.
    pub request_id: u64,
    /// Header flags.
    pub flags: Flags,
    /// The message.
    pub message: Message,
}

impl Frame {
    /// A frame with no flags.
    pub fn new(request_id: u64, message: Message) -> Frame {
        Frame {
            request_id,
            flags: Flags::empty(),
            message,
        }
    }

    /// Sets flags.
    pub fn with_flags(mut self, flags: Flags) -> Frame {
        self.flags = flags;
        self
    }

    /// Appends the encoded frame to `dst`.
    ///
    /// Applies the same [`Limits`] as the decoder, so a frame that encodes is
    /// one a peer with the same limits accepts. On error `dst` is left as it
    /// was. Value blobs are aligned relative to the start of this frame, not
    /// of `dst`.
    pub fn encode(&self, limits: &Limits, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let start = dst.len();
        let result = self.encode_inner(limits, dst, start);
        if result.is_err() {
            dst.truncate(start);
        }
        result
    }

    fn encode_inner(
        &self,
        limits: &Limits,
        dst: &mut BytesMut,
        start: usize,
    ) -> Result<(), ProtocolError> {
        self.flags.check()?;
        dst.reserve(MIN_FRAME_LEN + 64);
        dst.put_slice(&MAGIC);
        let kind = self.message.kind();
        // The handshake is readable by every build, so it always goes out in
        // the first version; everything after it in the newest one.
        let version = match kind {
            Kind::Hello | Kind::HelloAck => MIN_VERSION_EVER,
            _ => MAX_VERSION,
        };
        dst.put_u8(version);
        dst.put_u8(kind as u8);
        dst.put_u16_le(self.flags.0);
        dst.put_u64_le(self.request_id);
        dst.put_u32_le(0); // payload length, patched below
        self.message.write(&mut Writer::new(dst, start, limits))?;
        let frame_len = dst.len() - start + TRAILER_LEN;
        if frame_len > limits.max_frame_len as usize {
            return Err(ProtocolError::LengthOverLimit {
                field: Field::Frame,
                len: frame_len as u64,
                limit: u64::from(limits.max_frame_len),
            });
        }
        let payload_len = (frame_len - MIN_FRAME_LEN) as u32;
        dst[start + 16..start + HEADER_LEN].copy_from_slice(&payload_len.to_le_bytes());
        let crc = crc32fast::hash(&dst[start..]);
        dst.put_u32_le(crc);
        Ok(())
    }

    /// Encodes into a new buffer.
    ///
    /// ```
    /// use hydracache_protocol::{Frame, Limits, Message};
    ///
    /// let bytes = Frame::new(0, Message::Ping { nonce: 1 }).to_bytes(&Limits::default()).unwrap();
    /// assert_eq!(&bytes[..4], b"HYDC");
    /// assert_eq!(bytes.len(), 20 + 8 + 4);
    /// ```
    pub fn to_bytes(&self, limits: &Limits) -> Result<Bytes, ProtocolError> {
        let mut buf = BytesMut::new();
        self.encode(limits, &mut buf)?;
        Ok(buf.freeze())
    }

    /// Takes one frame off the front of `src` and decodes it. Keys, tags,
    /// values and texts in the result are slices of `src`'s buffer.
    ///
    /// On success `src` is advanced past the frame. If the checksum verified
    /// but the frame is refused afterwards (unknown kind, unknown flags, bad
    /// payload) the frame is consumed as well, so a caller that chooses to
    /// carry on after [`ProtocolError::UnknownKind`] is still in sync. For any
    /// other error `src` is untouched.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use hydracache_protocol::{Frame, Limits, ProtocolError};
    ///
    /// let mut short = Bytes::from_static(b"HYDC\x01");
    /// let err = Frame::decode(&mut short, &Limits::default()).unwrap_err();
    /// assert!(matches!(err, ProtocolError::Truncated { .. }));
    /// assert_eq!(short.len(), 5);
    /// ```
    pub fn decode(src: &mut Bytes, limits: &Limits) -> Result<Frame, ProtocolError> {
        let raw = RawFrame::decode(src, limits)?;
        Frame::from_raw(raw, limits)
    }

    /// Decodes a buffer that must hold exactly one frame, such as a datagram.
    ///
    /// ```
    /// use hydracache_protocol::{Frame, Limits, Message, ProtocolError};
    ///
    /// let limits = Limits::default();
    /// let frame = Frame::new(0, Message::Ping { nonce: 1 });
    /// let mut two = frame.to_bytes(&limits).unwrap().to_vec();
    /// two.push(0);
    /// let err = Frame::decode_exact(two.into(), &limits).unwrap_err();
    /// assert!(matches!(err, ProtocolError::TrailingBytes { count: 1, .. }));
    /// ```
    pub fn decode_exact(mut src: Bytes, limits: &Limits) -> Result<Frame, ProtocolError> {
        let frame = Frame::decode(&mut src, limits)?;
        if src.is_empty() {
            Ok(frame)
        } else {
            Err(ProtocolError::TrailingBytes {
                kind: frame.message.kind(),
                count: src.len(),
            })
        }
    }

    /// Takes one frame off the front of a stream buffer, or returns
    /// `Ok(None)` when the frame is not complete yet (after reserving room for
    /// the rest of it, at most `limits.max_frame_len`). The frame is split off
    /// `src` without copying.
    ///
    /// Consumption on error is as for [`Frame::decode`].
    pub fn decode_from(
        src: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<Frame>, ProtocolError> {
        let header = match FrameHeader::parse(src, limits) {
            Ok(header) => header,
            Err(ProtocolError::Truncated { needed, .. }) => {
                src.reserve(needed - src.len());
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let frame_len = header.frame_len();
        if src.len() < frame_len {
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        let body_len = frame_len - TRAILER_LEN;
        let expected = u32::from_le_bytes(
            src[body_len..frame_len]
                .try_into()
                .unwrap_or([0; TRAILER_LEN]),
        );
        let actual = crc32fast::hash(&src[..body_len]);
        if expected != actual {
            return Err(ProtocolError::ChecksumMismatch { expected, actual });
        }
        let frame = src.split_to(frame_len).freeze();
        let raw = RawFrame {
            header,
            payload: frame.slice(HEADER_LEN..body_len),
        };
        Frame::from_raw(raw, limits).map(Some)
    }

    /// Decodes the payload of a verified frame.
    pub fn from_raw(raw: RawFrame, limits: &Limits) -> Result<Frame, ProtocolError> {
        let header = raw.header;
        let kind = Kind::from_u8(header.kind).ok_or(ProtocolError::UnknownKind {
            kind: header.kind,
            request_id: header.request_id,
        })?;
        header.flags.check()?;
        Ok(Frame {
            request_id: header.request_id,
            flags: header.flags,
            message: Message::decode_payload(kind, raw.payload, limits)?,
        })
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (request {})", self.message.kind(), self.request_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(nonce: u64) -> Frame {
        Frame::new(9, Message::Ping { nonce })
    }

    #[test]
    fn header_bytes_are_where_the_docs_say() {
        let bytes = ping(0x0102)
            .with_flags(Flags::ACK_REQUESTED)
            .to_bytes(&Limits::default());
        let bytes = bytes.unwrap();
        assert_eq!(&bytes[0..4], b"HYDC");
        assert_eq!(bytes[4], 1);
        assert_eq!(bytes[5], Kind::Ping as u8);
        assert_eq!(&bytes[6..8], &[1, 0]);
        assert_eq!(&bytes[8..16], &9u64.to_le_bytes());
        assert_eq!(&bytes[16..20], &8u32.to_le_bytes());
        assert_eq!(&bytes[20..28], &0x0102u64.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..28]);
        assert_eq!(&bytes[28..32], &crc.to_le_bytes());
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let limits = Limits::default();
        let good = ping(77).to_bytes(&limits).unwrap();
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.to_vec();
                bad[i] ^= 1 << bit;
                let res = Frame::decode(&mut Bytes::from(bad), &limits);
                assert!(res.is_err(), "flip of bit {bit} in byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn unknown_kind_consumes_the_frame_and_keeps_the_stream_in_sync() {
        let limits = Limits::default();
        let mut unknown = ping(1).to_bytes(&limits).unwrap().to_vec();
        unknown[5] = 0x7f;
        let crc = crc32fast::hash(&unknown[..unknown.len() - 4]);
        let n = unknown.len();
        unknown[n - 4..].copy_from_slice(&crc.to_le_bytes());
        let mut stream = unknown;
        stream.extend_from_slice(&ping(2).to_bytes(&limits).unwrap());
        let mut src = Bytes::from(stream);
        let err = Frame::decode(&mut src, &limits).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::UnknownKind {
                kind: 0x7f,
                request_id: 9
            }
        ));
        assert_eq!(Frame::decode(&mut src, &limits).unwrap(), ping(2));
        assert!(src.is_empty());
    }

    #[test]
    fn unknown_flags_are_refused_on_both_sides() {
        let limits = Limits::default();
        let f = ping(1).with_flags(Flags(0x8000));
        assert!(matches!(
            f.to_bytes(&limits).unwrap_err(),
            ProtocolError::Malformed {
                field: Field::Flags,
                ..
            }
        ));
    }

    #[test]
    fn an_oversized_length_is_refused_from_the_header_alone() {
        let limits = Limits {
            max_frame_len: 1000,
            ..Limits::default()
        };
        let mut header = ping(1).to_bytes(&limits).unwrap()[..HEADER_LEN].to_vec();
        header[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut src = BytesMut::from(&header[..]);
        let err = Frame::decode_from(&mut src, &limits).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::LengthOverLimit {
                field: Field::Frame,
                limit: 1000,
                ..
            }
        ));
        // Nothing was reserved for the claimed length.
        assert!(src.capacity() < 1000);
    }

    #[test]
    fn unsupported_versions_are_refused() {
        let limits = Limits::default();
        let mut bytes = ping(1).to_bytes(&limits).unwrap().to_vec();
        bytes[4] = 2;
        let err = Frame::decode(&mut Bytes::from(bytes), &limits).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::UnsupportedVersion { version: 2, .. }
        ));
    }

    #[test]
    fn a_failed_encode_leaves_the_buffer_as_it_was() {
        let limits = Limits {
            max_key_len: 4,
            ..Limits::default()
        };
        let mut buf = BytesMut::from(&b"earlier frames"[..]);
        let too_long = Frame::new(
            1,
            Message::Fetch(crate::Fetch {
                epoch: 1,
                key: Bytes::from_static(b"longer than four"),
            }),
        );
        assert!(too_long.encode(&limits, &mut buf).is_err());
        assert_eq!(&buf[..], b"earlier frames");
    }

    #[test]
    fn the_frame_limit_applies_to_encoding() {
        let limits = Limits {
            max_frame_len: 64,
            ..Limits::default()
        };
        let big = Frame::new(0, Message::Raft(Bytes::from(vec![0u8; 64])));
        assert!(matches!(
            big.to_bytes(&limits).unwrap_err(),
            ProtocolError::LengthOverLimit {
                field: Field::Frame,
                ..
            }
        ));
    }
}
