//! A tokio-util [`Decoder`]/[`Encoder`] for stream transports.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::error::ProtocolError;
use crate::frame::{Frame, FrameHeader, HEADER_LEN};
use crate::Limits;

/// Frames over a byte stream (a QUIC stream, or anything `AsyncRead` /
/// `AsyncWrite`), for `tokio_util::codec::{FramedRead, FramedWrite}`.
///
/// Decoding works however the input is split: it waits until a whole frame
/// is buffered, reserving at most `max_frame_len` bytes, then splits the frame
/// off the buffer without copying. Garbage is refused as soon as its first
/// byte arrives (magic check), and an oversized length as soon as the header
/// has arrived.
///
/// After an error the stream is out of sync (except after
/// [`ProtocolError::UnknownKind`], whose frame was consumed): `FramedRead`
/// ends the stream, and the caller closes it as
/// [`ProtocolError::recovery`] says.
///
/// ```
/// use bytes::BytesMut;
/// use hydracache_protocol::{Frame, FrameCodec, Message};
/// use tokio_util::codec::{Decoder, Encoder};
///
/// let mut codec = FrameCodec::default();
/// let mut wire = BytesMut::new();
/// codec.encode(Frame::new(1, Message::Ping { nonce: 42 }), &mut wire).unwrap();
///
/// // The bytes arrive one at a time.
/// let mut buf = BytesMut::new();
/// let mut decoded = None;
/// for byte in wire.iter() {
///     buf.extend_from_slice(&[*byte]);
///     if let Some(frame) = codec.decode(&mut buf).unwrap() {
///         decoded = Some(frame);
///     }
/// }
/// assert_eq!(decoded.unwrap().message, Message::Ping { nonce: 42 });
/// ```
#[derive(Debug, Clone, Default)]
pub struct FrameCodec {
    limits: Limits,
}

impl FrameCodec {
    /// A codec enforcing `limits`.
    pub fn new(limits: Limits) -> FrameCodec {
        FrameCodec { limits }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        Frame::decode_from(src, &self.limits)
    }

    /// At end of stream, leftover bytes are a truncated frame.
    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if src.is_empty() {
            return Ok(None);
        }
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                let needed = match FrameHeader::parse(src, &self.limits) {
                    Ok(header) => header.frame_len(),
                    Err(_) => HEADER_LEN,
                };
                Err(ProtocolError::Truncated {
                    needed,
                    available: src.len(),
                })
            }
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        frame.encode(&self.limits, dst)
    }
}

impl Encoder<&Frame> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        frame.encode(&self.limits, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn end_of_stream_inside_a_frame_is_truncation() {
        let mut codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        codec
            .encode(Frame::new(1, Message::Ping { nonce: 1 }), &mut wire)
            .unwrap();
        wire.truncate(wire.len() - 1);
        assert!(codec.decode(&mut wire).unwrap().is_none());
        assert!(matches!(
            codec.decode_eof(&mut wire).unwrap_err(),
            ProtocolError::Truncated {
                needed: 32,
                available: 31
            }
        ));
        let mut short = BytesMut::from(&b"HYD"[..]);
        assert!(matches!(
            codec.decode_eof(&mut short).unwrap_err(),
            ProtocolError::Truncated {
                needed: 20,
                available: 3
            }
        ));
        assert!(codec.decode_eof(&mut BytesMut::new()).unwrap().is_none());
    }

    #[test]
    fn decodes_back_to_back_frames() {
        let mut codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        for nonce in 0..3 {
            codec
                .encode(&Frame::new(nonce, Message::Pong { nonce }), &mut wire)
                .unwrap();
        }
        for nonce in 0..3 {
            let frame = codec.decode(&mut wire).unwrap().unwrap();
            assert_eq!(frame.message, Message::Pong { nonce });
        }
        assert!(wire.is_empty());
        assert!(codec.decode(&mut wire).unwrap().is_none());
    }
}
