//! Getting value bytes to the alignment rkyv needs.
//!
//! Values travel as rkyv archives that the receiver validates and reads in
//! place, and rkyv reads fields with aligned loads. A frame read off a stream
//! lands at whatever offset the read buffer had, so the protocol does two
//! things:
//!
//! 1. **On the wire**, every value blob starts at a frame offset that is a
//!    multiple of [`VALUE_ALIGN`] (the encoder inserts 0–15 zero bytes after
//!    the blob's length). A receiver that places each frame at a 16-aligned
//!    address — a datagram read into an aligned buffer, a frame copied once
//!    into aligned memory — gets aligned values with no further copy.
//! 2. **On receipt**, [`align_value`] hands back the value unchanged (no
//!    copy) when its address is already 16-aligned, and otherwise copies it
//!    once into a freshly allocated aligned buffer. After that the value is
//!    never copied again: it is shared by reference count wherever it goes.
//!
//! ```
//! use bytes::{BufMut, Bytes, BytesMut};
//! use hydracache_protocol::{align_value, is_aligned};
//!
//! // A value that sits one byte past an aligned address.
//! let mut buf = BytesMut::with_capacity(64);
//! buf.put_bytes(0, 64);
//! let frame = buf.freeze();
//! let start = (0..16).find(|&i| is_aligned(&frame[i..])).unwrap();
//! let value = frame.slice(start + 1..start + 33);
//! assert!(!is_aligned(&value));
//!
//! let aligned = align_value(value.clone());
//! assert!(is_aligned(&aligned));
//! assert_eq!(aligned, value);
//! ```

use bytes::Bytes;

/// The alignment, in bytes, of every value blob in a frame: the largest
/// alignment an rkyv archive of ordinary Rust types needs (`u128`, SIMD-free).
pub const VALUE_ALIGN: usize = 16;

/// Whether `bytes` starts at a [`VALUE_ALIGN`]-aligned address. An empty slice
/// counts as aligned: there is nothing to read.
///
/// ```
/// assert!(hydracache_protocol::is_aligned(&[]));
/// ```
pub fn is_aligned(bytes: &[u8]) -> bool {
    bytes.is_empty() || (bytes.as_ptr() as usize) % VALUE_ALIGN == 0
}

/// Returns `value` at a [`VALUE_ALIGN`]-aligned address: the same buffer (no
/// copy) when it already is, otherwise one copy into a new aligned buffer.
///
/// ```
/// use bytes::Bytes;
/// use hydracache_protocol::{align_value, is_aligned};
///
/// let once = align_value(Bytes::from(vec![7u8; 100]));
/// assert!(is_aligned(&once));
/// // Already aligned: the very same buffer comes back.
/// let twice = align_value(once.clone());
/// assert_eq!(twice.as_ptr(), once.as_ptr());
/// ```
pub fn align_value(value: Bytes) -> Bytes {
    if is_aligned(&value) {
        return value;
    }
    copy_aligned(&value)
}

/// Copies `bytes` into a new buffer whose first byte is 16-aligned.
///
/// Over-allocates by `VALUE_ALIGN - 1` bytes, skips to the first aligned
/// address inside the allocation and copies there. The vector never grows
/// after the address is taken, and turning it into `Bytes` keeps the
/// allocation in place, so the address stays aligned. (Should a future
/// `bytes` ever move it, rkyv's validation refuses the misaligned archive: a
/// clean error, never undefined behaviour.)
fn copy_aligned(bytes: &[u8]) -> Bytes {
    let mut buf: Vec<u8> = Vec::with_capacity(bytes.len() + VALUE_ALIGN - 1);
    let skip = crate::wire::padding_for(buf.as_ptr() as usize);
    buf.resize(skip, 0);
    buf.extend_from_slice(bytes);
    Bytes::from(buf).slice(skip..)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn misaligned_copy(data: &[u8], misalign: usize) -> Bytes {
        let mut raw = vec![0u8; data.len() + 32];
        let base = crate::wire::padding_for(raw.as_ptr() as usize) + misalign;
        raw[base..base + data.len()].copy_from_slice(data);
        Bytes::from(raw).slice(base..base + data.len())
    }

    #[test]
    fn copies_a_misaligned_value_once_into_an_aligned_buffer() {
        let data: Vec<u8> = (0..=255).collect();
        for misalign in 1..VALUE_ALIGN {
            let value = misaligned_copy(&data, misalign);
            assert!(!is_aligned(&value));
            let aligned = align_value(value.clone());
            assert!(is_aligned(&aligned), "misalign {misalign}");
            assert_eq!(aligned, value);
            assert_ne!(aligned.as_ptr(), value.as_ptr());
        }
    }

    #[test]
    fn returns_an_aligned_value_without_copying() {
        let value = misaligned_copy(b"sixteen-aligned!", 0);
        assert!(is_aligned(&value));
        let same = align_value(value.clone());
        assert_eq!(same.as_ptr(), value.as_ptr());
    }

    #[test]
    fn handles_empty_and_tiny_values() {
        assert!(align_value(Bytes::new()).is_empty());
        let one = misaligned_copy(b"x", 3);
        assert_eq!(&align_value(one)[..], b"x");
    }
}
