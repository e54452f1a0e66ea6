//! Encode and decode throughput of the frames that dominate traffic, and the
//! cost of the CRC-32.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-protocol cargo bench -p hydracache-protocol --bench codec
//! ```
//!
//! - `invalidate_key`: the invalidation fan-out frame, one key.
//! - `fetch_reply_1k` / `fetch_reply_64k`: a peer-fetch hit with a 1 KiB /
//!   64 KiB value, TTL and two tags.
//! - `decode/*` checks the CRC and decodes; `decode_payload/*` only decodes
//!   the verified payload, which costs the same for 1 KiB and 64 KiB because
//!   the value is sliced, not copied (asserted before measuring).
//! - `crc32/1MiB`: CRC-32 throughput; seconds per GB = 1 / (GB/s).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hydracache_protocol::{
    Entry, FetchReply, Flags, Frame, Invalidate, Kind, Limits, Message, NodeIdentity, RawFrame,
    Target, HEADER_LEN,
};

fn invalidate_key() -> Frame {
    Frame::new(
        0,
        Message::Invalidate(Invalidate {
            origin: NodeIdentity::new("api-1", 1_700_000_000_001),
            sequence: 1_000_001,
            epoch: 12,
            target: Target::Key(Bytes::from_static(b"user:42")),
        }),
    )
    .with_flags(Flags::ACK_REQUESTED)
}

fn fetch_reply(value_len: usize) -> Frame {
    let value = Bytes::from((0..value_len).map(|i| i as u8).collect::<Vec<_>>());
    Frame::new(
        42,
        Message::FetchReply(FetchReply::Hit(
            Entry::new(value)
                .with_ttl_ms(60_000)
                .with_tags([Bytes::from_static(b"users"), Bytes::from_static(b"user:42")]),
        )),
    )
}

/// Panics unless the decoded value lies inside the received buffer.
fn assert_value_not_copied(wire: &Bytes, frame: &Frame) {
    let Message::FetchReply(FetchReply::Hit(entry)) = &frame.message else {
        panic!("expected a fetch hit");
    };
    let range = wire.as_ptr_range();
    assert!(range.contains(&entry.value.as_ptr()));
    assert!(entry.value.as_ptr_range().end <= range.end);
}

fn bench_frames(c: &mut Criterion) {
    let limits = Limits::default();
    let cases = [
        ("invalidate_key", invalidate_key()),
        ("fetch_reply_1k", fetch_reply(1024)),
        ("fetch_reply_64k", fetch_reply(64 * 1024)),
    ];

    let mut group = c.benchmark_group("encode");
    for (name, frame) in &cases {
        let len = frame.to_bytes(&limits).unwrap().len();
        group.throughput(Throughput::Bytes(len as u64));
        let mut buf = BytesMut::with_capacity(len);
        group.bench_function(*name, |b| {
            b.iter(|| {
                buf.clear();
                black_box(frame).encode(&limits, &mut buf).unwrap();
                black_box(buf.len())
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode");
    for (name, frame) in &cases {
        let wire = frame.to_bytes(&limits).unwrap();
        let decoded = Frame::decode(&mut wire.clone(), &limits).unwrap();
        assert_eq!(&decoded, frame);
        if name.starts_with("fetch") {
            assert_value_not_copied(&wire, &decoded);
        }
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| Frame::decode(&mut black_box(&wire).clone(), &limits).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode_payload");
    for (name, frame) in &cases {
        let wire = frame.to_bytes(&limits).unwrap();
        let raw = RawFrame::decode(&mut wire.clone(), &limits).unwrap();
        let kind = Kind::from_u8(raw.header.kind).unwrap();
        assert_eq!(raw.payload.as_ptr(), wire[HEADER_LEN..].as_ptr());
        group.throughput(Throughput::Bytes(raw.payload.len() as u64));
        group.bench_function(*name, |b| {
            b.iter(|| {
                Message::decode_payload(kind, black_box(&raw.payload).clone(), &limits).unwrap()
            })
        });
    }
    group.finish();
}

fn bench_crc(c: &mut Criterion) {
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 31) as u8).collect();
    let mut group = c.benchmark_group("crc32");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.bench_function("1MiB", |b| b.iter(|| crc32fast::hash(black_box(&data))));
    group.finish();
}

criterion_group!(benches, bench_frames, bench_crc);
criterion_main!(benches);
