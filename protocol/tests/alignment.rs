//! Values start at 16-byte-aligned frame offsets, and `align_value` makes
//! them addressable in place whatever offset the frame landed at: no copy
//! when the frame sits at an aligned address, exactly one otherwise.

use bytes::{Bytes, BytesMut};
use hydracache_protocol::{
    align_value, is_aligned, Entry, FetchReply, Frame, FrameCodec, Limits, Message, OwnerLoad,
    VALUE_ALIGN,
};
use tokio_util::codec::Decoder;

fn reply(value_len: usize, tag: &'static [u8]) -> Frame {
    let value = Bytes::from((0..value_len).map(|i| (i * 7) as u8).collect::<Vec<_>>());
    Frame::new(
        1,
        Message::FetchReply(FetchReply::Hit(
            Entry::new(value).with_tags([Bytes::from_static(tag)]),
        )),
    )
}

/// A buffer holding `wire` at address ≡ `misalign` (mod 16).
fn placed(wire: &[u8], misalign: usize) -> Bytes {
    let mut raw = vec![0u8; wire.len() + 2 * VALUE_ALIGN];
    let base = (VALUE_ALIGN - raw.as_ptr() as usize % VALUE_ALIGN) % VALUE_ALIGN + misalign;
    raw[base..base + wire.len()].copy_from_slice(wire);
    Bytes::from(raw).slice(base..base + wire.len())
}

fn hit_value(frame: Frame) -> Bytes {
    match frame.message {
        Message::FetchReply(FetchReply::Hit(entry)) => entry.value,
        other => panic!("expected a hit, got {other:?}"),
    }
}

#[test]
fn value_offsets_are_aligned_whatever_precedes_them() {
    let limits = Limits::default();
    // Tags of every length mod 16 shift the value's natural offset.
    let tags: [&'static [u8]; 16] = [
        b"",
        b"a",
        b"ab",
        b"abc",
        b"abcd",
        b"abcde",
        b"abcdef",
        b"abcdefg",
        b"abcdefgh",
        b"abcdefghi",
        b"abcdefghij",
        b"abcdefghijk",
        b"abcdefghijkl",
        b"abcdefghijklm",
        b"abcdefghijklmn",
        b"abcdefghijklmno",
    ];
    for tag in tags {
        let wire = reply(100, tag).to_bytes(&limits).unwrap();
        let value = hit_value(Frame::decode_exact(wire.clone(), &limits).unwrap());
        let offset = value.as_ptr() as usize - wire.as_ptr() as usize;
        assert_eq!(offset % VALUE_ALIGN, 0, "tag of {} bytes", tag.len());
    }
}

#[test]
fn an_aligned_frame_gives_aligned_values_without_a_copy() {
    let limits = Limits::default();
    let wire = reply(1024, b"users").to_bytes(&limits).unwrap();
    let frame_at = placed(&wire, 0);
    let value = hit_value(Frame::decode_exact(frame_at.clone(), &limits).unwrap());
    assert!(is_aligned(&value));
    let ready = align_value(value.clone());
    assert_eq!(ready.as_ptr(), value.as_ptr(), "aligned value was copied");
    assert!(frame_at.as_ptr_range().contains(&ready.as_ptr()));
}

#[test]
fn a_misaligned_frame_costs_exactly_one_copy_per_value() {
    let limits = Limits::default();
    let wire = reply(1024, b"users").to_bytes(&limits).unwrap();
    for misalign in 1..VALUE_ALIGN {
        let frame_at = placed(&wire, misalign);
        let value = hit_value(Frame::decode_exact(frame_at.clone(), &limits).unwrap());
        // Decoding itself copied nothing: the value is inside the frame...
        assert!(frame_at.as_ptr_range().contains(&value.as_ptr()));
        // ...at the frame's own misalignment.
        assert!(!is_aligned(&value), "misalign {misalign}");
        let ready = align_value(value.clone());
        assert!(is_aligned(&ready));
        assert_eq!(ready, value);
        assert!(!frame_at.as_ptr_range().contains(&ready.as_ptr()));
        // Once aligned, it stays put.
        assert_eq!(align_value(ready.clone()).as_ptr(), ready.as_ptr());
    }
}

#[test]
fn stream_decoding_at_arbitrary_buffer_offsets() {
    let limits = Limits::default();
    let mut codec = FrameCodec::new(limits.clone());
    let frames: Vec<Frame> = (0..5).map(|i| reply(17 + 31 * i, b"t")).collect();
    let mut wire = Vec::new();
    for f in &frames {
        wire.extend_from_slice(&f.to_bytes(&limits).unwrap());
    }
    for skew in 0..VALUE_ALIGN {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&vec![0u8; skew]);
        let _ = buf.split_to(skew); // the frames now start `skew` bytes in
        buf.extend_from_slice(&wire);
        for expected in &frames {
            let frame = codec.decode(&mut buf).unwrap().unwrap();
            let value = hit_value(frame);
            let ready = align_value(value.clone());
            assert!(is_aligned(&ready));
            assert_eq!(ready, hit_value(expected.clone()));
        }
    }
}

#[test]
fn owner_load_arguments_are_aligned_too() {
    let limits = Limits::default();
    let call = OwnerLoad {
        epoch: 1,
        loader: "l".into(),
        key: Bytes::from_static(b"odd-length-key"),
        ttl_ms: None,
        tags: vec![],
        args: Bytes::from(vec![9; 40]),
    };
    let wire = Frame::new(0, Message::OwnerLoad(call))
        .to_bytes(&limits)
        .unwrap();
    let frame = Frame::decode_exact(placed(&wire, 0), &limits).unwrap();
    let Message::OwnerLoad(decoded) = frame.message else {
        unreachable!()
    };
    assert!(is_aligned(&decoded.args));
}
