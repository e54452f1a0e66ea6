//! Field-level primitives shared by every message: little-endian integers,
//! length-prefixed byte strings, counts and 16-byte-aligned blobs.
//!
//! The reader slices the payload (`Bytes::slice`), so byte strings and blobs
//! share the frame buffer. Every length is checked against its limit first and
//! against the bytes left in the payload second, before anything is allocated.

use bytes::{BufMut, Bytes, BytesMut};

use crate::align::VALUE_ALIGN;
use crate::error::{Field, ProtocolError};
use crate::frame::TRAILER_LEN;
use crate::text::Text;
use crate::{Kind, Limits};

type Result<T> = std::result::Result<T, ProtocolError>;

const PAST_END: &str = "length runs past the end of the payload";

/// Zero bytes needed after frame offset `offset` to reach the next multiple of
/// [`VALUE_ALIGN`].
pub(crate) const fn padding_for(offset: usize) -> usize {
    (VALUE_ALIGN - offset % VALUE_ALIGN) % VALUE_ALIGN
}

/// Reads the fields of one payload.
pub(crate) struct Reader<'l> {
    buf: Bytes,
    pos: usize,
    /// Offset of `buf[0]` from the start of the frame.
    base: usize,
    pub(crate) limits: &'l Limits,
}

impl<'l> Reader<'l> {
    pub(crate) fn new(payload: Bytes, base: usize, limits: &'l Limits) -> Self {
        Reader {
            buf: payload,
            pos: 0,
            base,
            limits,
        }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take_slice(&mut self, n: usize, field: Field) -> Result<&[u8]> {
        if n > self.remaining() {
            return Err(ProtocolError::Malformed {
                field,
                reason: PAST_END,
            });
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..self.pos])
    }

    fn take(&mut self, n: usize, field: Field) -> Result<Bytes> {
        if n > self.remaining() {
            return Err(ProtocolError::Malformed {
                field,
                reason: PAST_END,
            });
        }
        let start = self.pos;
        self.pos += n;
        Ok(self.buf.slice(start..self.pos))
    }

    fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take_slice(N, field)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: Field) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: Field) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: Field) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u64(&mut self, field: Field) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn ipv4(&mut self) -> Result<[u8; 4]> {
        self.array(Field::Address)
    }

    pub(crate) fn ipv6(&mut self) -> Result<[u8; 16]> {
        self.array(Field::Address)
    }

    /// A `u16` length and that many bytes, at most `limit`.
    pub(crate) fn bytes16(&mut self, field: Field, limit: usize) -> Result<Bytes> {
        let len = usize::from(self.u16(field)?);
        check_limit(field, len, limit)?;
        self.take(len, field)
    }

    /// A `u16` length and that many bytes of UTF-8, at most `limit`.
    pub(crate) fn text16(&mut self, field: Field, limit: usize) -> Result<Text> {
        Text::from_utf8(self.bytes16(field, limit)?).map_err(|_| ProtocolError::Malformed {
            field,
            reason: "not valid UTF-8",
        })
    }

    /// A `u16` item count, at most `limit`, for items of at least `min_item`
    /// bytes each: a count the remaining payload cannot hold is refused before
    /// the caller allocates room for it.
    pub(crate) fn count(&mut self, field: Field, limit: usize, min_item: usize) -> Result<usize> {
        let n = usize::from(self.u16(field)?);
        check_limit(field, n, limit)?;
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(ProtocolError::Malformed {
                field,
                reason: "more items than the payload can hold",
            });
        }
        Ok(n)
    }

    /// A list of byte strings: `u16` count then `u16`-prefixed items.
    pub(crate) fn bytes_list(
        &mut self,
        count_field: Field,
        count_limit: usize,
        item_field: Field,
        item_limit: usize,
    ) -> Result<Vec<Bytes>> {
        let n = self.count(count_field, count_limit, 2)?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.bytes16(item_field, item_limit)?);
        }
        Ok(items)
    }

    /// A `u32` length, zero padding up to the next 16-byte-aligned frame
    /// offset, then that many bytes. The result shares the frame buffer.
    pub(crate) fn blob(&mut self, field: Field) -> Result<Bytes> {
        let len = self.u32(field)? as usize;
        let pad = padding_for(self.base + self.pos);
        if self
            .take_slice(pad, Field::Padding)?
            .iter()
            .any(|&b| b != 0)
        {
            return Err(ProtocolError::Malformed {
                field: Field::Padding,
                reason: "padding bytes must be zero",
            });
        }
        self.take(len, field)
    }

    /// Everything left in the payload.
    pub(crate) fn rest(&mut self) -> Bytes {
        let rest = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        rest
    }

    /// Refuses bytes left over after the last field.
    pub(crate) fn finish(self, kind: Kind) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(ProtocolError::TrailingBytes { kind, count }),
        }
    }
}

fn check_limit(field: Field, len: usize, limit: usize) -> Result<()> {
    if len > limit {
        Err(ProtocolError::LengthOverLimit {
            field,
            len: len as u64,
            limit: limit as u64,
        })
    } else {
        Ok(())
    }
}

/// Writes the fields of one payload at the end of a frame being built.
pub(crate) struct Writer<'a, 'l> {
    buf: &'a mut BytesMut,
    /// Index in `buf` where the frame starts.
    start: usize,
    pub(crate) limits: &'l Limits,
}

impl<'a, 'l> Writer<'a, 'l> {
    pub(crate) fn new(buf: &'a mut BytesMut, start: usize, limits: &'l Limits) -> Self {
        Writer { buf, start, limits }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.put_u16_le(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.put_u32_le(v);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.put_u64_le(v);
    }

    pub(crate) fn raw(&mut self, bytes: &[u8]) {
        self.buf.put_slice(bytes);
    }

    /// A `u16` length and the bytes; `limit` is capped at `u16::MAX`.
    pub(crate) fn bytes16(&mut self, field: Field, bytes: &[u8], limit: usize) -> Result<()> {
        check_limit(field, bytes.len(), limit.min(usize::from(u16::MAX)))?;
        self.u16(bytes.len() as u16);
        self.raw(bytes);
        Ok(())
    }

    /// A `u16` item count; `limit` is capped at `u16::MAX`.
    pub(crate) fn count(&mut self, field: Field, n: usize, limit: usize) -> Result<()> {
        check_limit(field, n, limit.min(usize::from(u16::MAX)))?;
        self.u16(n as u16);
        Ok(())
    }

    pub(crate) fn bytes_list(
        &mut self,
        count_field: Field,
        count_limit: usize,
        item_field: Field,
        item_limit: usize,
        items: &[Bytes],
    ) -> Result<()> {
        self.count(count_field, items.len(), count_limit)?;
        for item in items {
            self.bytes16(item_field, item, item_limit)?;
        }
        Ok(())
    }

    /// A `u32` length, zero padding to the next 16-byte-aligned frame offset,
    /// then the bytes. Refuses a blob that cannot fit in the largest frame
    /// before copying it.
    pub(crate) fn blob(&mut self, field: Field, bytes: &[u8]) -> Result<()> {
        let offset = self.buf.len() - self.start + 4;
        let pad = padding_for(offset);
        let max = self.limits.max_frame_len as usize;
        let frame_len = (offset + pad + TRAILER_LEN).saturating_add(bytes.len());
        if frame_len > max {
            return Err(ProtocolError::LengthOverLimit {
                field,
                len: bytes.len() as u64,
                limit: max.saturating_sub(offset + pad + TRAILER_LEN) as u64,
            });
        }
        self.buf.reserve(4 + pad + bytes.len() + TRAILER_LEN);
        self.u32(bytes.len() as u32);
        self.buf.put_bytes(0, pad);
        self.raw(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_reaches_the_next_multiple_of_sixteen() {
        assert_eq!(padding_for(0), 0);
        assert_eq!(padding_for(1), 15);
        assert_eq!(padding_for(15), 1);
        assert_eq!(padding_for(16), 0);
        assert_eq!(padding_for(37), 11);
    }

    #[test]
    fn a_count_the_payload_cannot_hold_is_refused() {
        let limits = Limits::default();
        // Claims 1000 items but only 4 bytes follow.
        let mut r = Reader::new(Bytes::from_static(&[0xe8, 0x03, 0, 0, 0, 0]), 0, &limits);
        let err = r.count(Field::Keys, 1024, 2).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::Malformed {
                field: Field::Keys,
                ..
            }
        ));
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_the_bytes_are_read() {
        let limits = Limits::default();
        let mut r = Reader::new(Bytes::from_static(&[0xff, 0xff]), 0, &limits);
        let err = r.bytes16(Field::Key, 10).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::LengthOverLimit {
                field: Field::Key,
                len: 65535,
                limit: 10
            }
        ));
    }

    #[test]
    fn non_zero_padding_is_refused() {
        let limits = Limits::default();
        // base 0: after the u32 length the offset is 4, so 12 padding bytes.
        let mut bytes = vec![1, 0, 0, 0];
        bytes.extend_from_slice(&[0; 11]);
        bytes.push(7);
        bytes.push(0xaa);
        let mut r = Reader::new(Bytes::from(bytes), 0, &limits);
        assert!(matches!(
            r.blob(Field::Value).unwrap_err(),
            ProtocolError::Malformed {
                field: Field::Padding,
                ..
            }
        ));
    }

    #[test]
    fn blobs_written_land_aligned_to_the_frame_start() {
        let limits = Limits::default();
        let mut buf = BytesMut::from(&b"prefix"[..]);
        let start = buf.len();
        buf.put_bytes(0xee, 3); // a 3-byte "frame" so far
        let mut w = Writer::new(&mut buf, start, &limits);
        w.blob(Field::Value, b"value").unwrap();
        let frame = buf.split_off(start).freeze();
        let mut r = Reader::new(frame.slice(3..), 3, &limits);
        let value = r.blob(Field::Value).unwrap();
        assert_eq!(&value[..], b"value");
        let offset = value.as_ptr() as usize - frame.as_ptr() as usize;
        assert_eq!(offset % VALUE_ALIGN, 0);
        r.finish(Kind::Ping).unwrap();
    }
}
