//! The checks behind each fuzz target.
//!
//! They live here, not in the target files, so that the stable test
//! `protocol/tests/fuzz_corpus.rs` can replay the committed corpus through
//! exactly the same code (it includes this file as a module).
//!
//! Every check panics on a violated property; decoding errors are fine.

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use hydracache_protocol::{
    Field, Frame, FrameCodec, Kind, Limits, Message, ProtocolError, HEADER_LEN, TRAILER_LEN,
};
use tokio_util::codec::Decoder;

/// Small limits, so inputs of a few hundred bytes reach every limit check.
pub fn limits() -> Limits {
    Limits {
        max_frame_len: 64 << 10,
        max_key_len: 64,
        max_tags: 8,
        max_tag_len: 32,
        max_batch_len: 16,
        max_name_len: 32,
    }
}

/// Exercises the error's accessors, which must not panic either.
fn inspect(err: &ProtocolError) {
    let _ = (err.to_string(), err.recovery(), err.code());
}

/// Decodes frames off the front of `data` until an error that leaves the
/// input unconsumed. Every decoded frame must re-encode to exactly the bytes
/// it was decoded from (the encoding is canonical).
pub fn frame_decode(data: &[u8]) {
    let limits = limits();
    let mut src = Bytes::copy_from_slice(data);
    while !src.is_empty() {
        let offset = data.len() - src.len();
        match Frame::decode(&mut src, &limits) {
            Ok(frame) => {
                let bytes = frame.to_bytes(&limits).expect("a decoded frame re-encodes");
                assert_eq!(&bytes[..], &data[offset..offset + bytes.len()]);
                assert_eq!(data.len() - src.len(), offset + bytes.len());
            }
            Err(err) => {
                inspect(&err);
                if data.len() - src.len() == offset {
                    break;
                }
            }
        }
    }
}

/// The first byte picks a message kind, the rest is its payload. A payload
/// that decodes must re-encode to the same bytes.
pub fn message_decode(data: &[u8]) {
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let limits = limits();
    let kind = Kind::ALL[usize::from(selector) % Kind::ALL.len()];
    match Message::decode_payload(kind, Bytes::copy_from_slice(payload), &limits) {
        Ok(message) => {
            assert_eq!(message.kind(), kind);
            let bytes = Frame::new(0, message)
                .to_bytes(&limits)
                .expect("a decoded message re-encodes");
            assert_eq!(&bytes[HEADER_LEN..bytes.len() - TRAILER_LEN], payload);
        }
        Err(err) => inspect(&err),
    }
}

/// What a stream decoder produced: frames, then possibly an error (by variant
/// name, since e.g. `Truncated::available` depends on where input stopped).
fn decode_stream(
    stream: &[u8],
    chunk_lens: impl Iterator<Item = usize>,
) -> Vec<Result<Frame, String>> {
    fn variant(err: &ProtocolError) -> String {
        let debug = format!("{err:?}");
        debug
            .split(|c: char| !c.is_alphanumeric())
            .next()
            .unwrap_or_default()
            .to_owned()
    }
    let limits = limits();
    let mut codec = FrameCodec::new(limits.clone());
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = stream;
    for len in chunk_lens {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(len.clamp(1, rest.len()));
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(err) => {
                    inspect(&err);
                    out.push(Err(variant(&err)));
                    return out;
                }
            }
        }
    }
    buf.extend_from_slice(rest);
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => out.push(Ok(frame)),
            Ok(None) => break,
            Err(err) => {
                out.push(Err(variant(&err)));
                break;
            }
        }
    }
    out
}

/// Input: a count byte `n` (mod 16), `n` chunk lengths, then a byte stream.
/// Feeding the stream to the codec in those chunks (or byte by byte when
/// `n == 0`) must give the same frames and error as feeding it whole.
pub fn stream_split(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16);
    if rest.len() < n {
        return;
    }
    let (lens, stream) = rest.split_at(n);
    let whole = decode_stream(stream, std::iter::once(stream.len()));
    let split = if n == 0 {
        decode_stream(stream, std::iter::repeat(1))
    } else {
        decode_stream(stream, lens.iter().map(|&l| usize::from(l) + 1).cycle())
    };
    assert_eq!(whole, split);
}

/// An arbitrary frame either encodes and decodes back to itself, or is
/// refused by the encoder for a reason the decoder would refuse it too.
pub fn roundtrip(data: &[u8]) {
    let Ok(frame) = Frame::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let limits = limits();
    match frame.to_bytes(&limits) {
        Ok(bytes) => {
            let decoded =
                Frame::decode_exact(bytes.clone(), &limits).expect("an encoded frame decodes");
            assert_eq!(decoded, frame);
            let mut codec = FrameCodec::new(limits);
            let mut buf = BytesMut::from(&bytes[..bytes.len() / 2]);
            assert_eq!(
                codec.decode(&mut buf).expect("half a frame is no error"),
                None
            );
            buf.extend_from_slice(&bytes[bytes.len() / 2..]);
            assert_eq!(
                codec.decode(&mut buf).expect("whole frame decodes"),
                Some(frame)
            );
        }
        Err(err) => assert!(
            matches!(
                err,
                ProtocolError::LengthOverLimit { .. }
                    | ProtocolError::Malformed {
                        field: Field::Flags,
                        ..
                    }
            ),
            "unexpected encode error {err:?}"
        ),
    }
}
