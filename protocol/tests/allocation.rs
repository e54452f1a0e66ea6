//! Decoding never allocates from an unchecked length: hostile counts and
//! lengths are refused before any allocation, and what a legitimate frame
//! allocates is bounded by the limits, not by the frame's claims.
//!
//! A counting global allocator records the largest single allocation made by
//! this thread while a closure runs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{Bytes, BytesMut};
use hydracache_protocol::{Frame, FrameCodec, Kind, Limits};
use tokio_util::codec::Decoder;

struct Counting;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    let _ = TRACKING.try_with(|on| {
        if on.get() {
            LARGEST.with(|l| l.set(l.get().max(size)));
            TOTAL.with(|t| t.set(t.get() + size));
        }
    });
}

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// (largest single allocation, total bytes allocated) while `f` runs.
fn measure(f: impl FnOnce()) -> (usize, usize) {
    LARGEST.with(|l| l.set(0));
    TOTAL.with(|t| t.set(0));
    TRACKING.with(|t| t.set(true));
    f();
    TRACKING.with(|t| t.set(false));
    (LARGEST.with(Cell::get), TOTAL.with(Cell::get))
}

fn sealed(kind: Kind, payload: &[u8]) -> Bytes {
    let mut out = b"HYDC\x01".to_vec();
    out.push(kind as u8);
    out.extend_from_slice(&[0; 10]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Bytes::from(out)
}

#[test]
fn hostile_lengths_allocate_nothing_they_claim() {
    let limits = Limits::default();

    // Invalidate claiming 1,024 keys in a few bytes.
    let mut inv = 1u64.to_le_bytes().to_vec();
    inv.extend_from_slice(&[1, 0, b'n']);
    inv.extend_from_slice(&[0; 16]);
    inv.extend_from_slice(&[1, 0x00, 0x04]);
    // MetadataSnapshot claiming 1,024 members.
    let mut meta = 1u64.to_le_bytes().to_vec();
    meta.extend_from_slice(&1024u16.to_le_bytes());
    // FetchReply hit claiming 64 tags and a 4 GiB value.
    let mut hit = vec![0, 0, 64, 0];
    hit.extend_from_slice(&[0; 8]);
    let mut huge = vec![0, 0, 0, 0];
    huge.extend_from_slice(&u32::MAX.to_le_bytes());

    for (kind, payload) in [
        (Kind::Invalidate, inv),
        (Kind::MetadataSnapshot, meta),
        (Kind::FetchReply, hit),
        (Kind::FetchReply, huge),
    ] {
        let wire = sealed(kind, &payload);
        let (largest, total) = measure(|| {
            assert!(Frame::decode_exact(wire.clone(), &limits).is_err());
        });
        assert!(largest <= 64, "{kind}: allocated {largest} bytes at once");
        assert!(total <= 256, "{kind}: allocated {total} bytes in all");
    }

    // A header claiming a 4 GiB payload: refused, nothing reserved for it.
    let mut header = sealed(Kind::Raft, b"").to_vec();
    header[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut codec = FrameCodec::new(limits);
    let mut buf = BytesMut::from(&header[..20]);
    let (largest, _) = measure(|| {
        assert!(codec.decode(&mut buf).is_err());
    });
    assert!(
        largest <= 64,
        "allocated {largest} bytes for a refused header"
    );
}

#[test]
fn a_stream_decoder_reserves_at_most_one_frame() {
    let limits = Limits {
        max_frame_len: 1 << 20,
        ..Limits::default()
    };
    // A header for a frame of exactly max_frame_len, with its payload to come.
    let mut header = sealed(Kind::Raft, b"").to_vec();
    let payload_len = (1u32 << 20) - 24;
    header[16..20].copy_from_slice(&payload_len.to_le_bytes());
    let mut codec = FrameCodec::new(limits);
    let mut buf = BytesMut::from(&header[..20]);
    let (largest, _) = measure(|| {
        assert!(codec.decode(&mut buf).unwrap().is_none());
    });
    assert!(largest <= (1 << 20) * 2, "reserved {largest} bytes");
    assert!(buf.capacity() >= 1 << 20);
}

#[test]
fn a_legitimate_batch_allocates_in_proportion_to_its_items() {
    let limits = Limits::default();
    let keys: Vec<Bytes> = (0..1024).map(|i| Bytes::from(format!("k{i}"))).collect();
    let frame = Frame::new(
        0,
        hydracache_protocol::Message::Invalidate(hydracache_protocol::Invalidate {
            origin: hydracache_protocol::NodeIdentity::new("n", 1),
            sequence: 1,
            epoch: 1,
            target: hydracache_protocol::Target::Keys(keys),
        }),
    );
    let wire = frame.to_bytes(&limits).unwrap();
    let (largest, _) = measure(|| {
        let decoded = Frame::decode_exact(wire.clone(), &limits).unwrap();
        assert_eq!(decoded, frame);
    });
    // One Vec of 1,024 `Bytes` handles; the keys themselves are not copied.
    assert_eq!(largest, 1024 * std::mem::size_of::<Bytes>());
}
