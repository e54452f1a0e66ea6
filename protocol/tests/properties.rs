//! Properties over arbitrary messages and arbitrary bytes:
//!
//! - decode(encode(frame)) == frame, for every message;
//! - any byte string either decodes or errors (never panics), including
//!   garbage payloads behind a valid header and checksum;
//! - a valid stream split at random boundaries decodes to the same frames;
//! - encoder and decoder enforce the same limits.

mod common;

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use common::raw_frame;
use hydracache_protocol::{
    Entry, ErrorCode, Features, Fetch, FetchReply, Fill, Flags, Frame, FrameCodec, Hello,
    HighWater, Invalidate, Kind, Limits, Load, LoadReply, Member, Message, MetadataSnapshot,
    NodeIdentity, OwnerLoad, OwnerLoadReply, ProtocolError, Put, PutReply, Role, Target, Text,
    VersionRange,
};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    prop::collection::vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// Mostly small values, sometimes large enough to span many read chunks.
fn value() -> impl Strategy<Value = Bytes> {
    prop_oneof![4 => bytes(64), 1 => bytes(4096)]
}

fn text(max_chars: usize) -> impl Strategy<Value = Text> {
    prop::collection::vec(any::<char>(), 0..=max_chars)
        .prop_map(|chars| Text::from(chars.into_iter().collect::<String>()))
}

fn tags() -> impl Strategy<Value = Vec<Bytes>> {
    prop::collection::vec(bytes(24), 0..4)
}

fn node() -> impl Strategy<Value = NodeIdentity> {
    (text(16), any::<u64>()).prop_map(|(id, generation)| NodeIdentity { id, generation })
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Member), Just(Role::Client)]
}

fn hello() -> impl Strategy<Value = Hello> {
    (text(16), node(), role(), 1u8.., any::<u8>(), any::<u64>()).prop_map(
        |(cluster, node, role, a, b, features)| Hello {
            cluster,
            node,
            role,
            versions: VersionRange::new(a.min(b.max(1)), a.max(b)).unwrap(),
            features: Features(features),
        },
    )
}

fn ttl() -> impl Strategy<Value = Option<u64>> {
    prop::option::of(any::<u64>())
}

fn entry() -> impl Strategy<Value = Entry> {
    (ttl(), tags(), value()).prop_map(|(ttl_ms, tags, value)| Entry {
        ttl_ms,
        tags,
        value,
    })
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        bytes(32).prop_map(Target::Key),
        prop::collection::vec(bytes(32), 0..8).prop_map(Target::Keys),
        bytes(32).prop_map(Target::Tag),
        tags().prop_map(Target::Tags),
        Just(Target::Flush),
    ]
}

fn member() -> impl Strategy<Value = Member> {
    (node(), role(), any::<SocketAddr>()).prop_map(|(node, role, address)| Member {
        node,
        role,
        address,
    })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        hello().prop_map(Message::Hello),
        hello().prop_map(Message::HelloAck),
        any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
        (any::<u16>(), text(40)).prop_map(|(c, message)| Message::Error {
            code: ErrorCode(c),
            message
        }),
        (any::<u16>(), text(40)).prop_map(|(c, message)| Message::GoAway {
            code: ErrorCode(c),
            message
        }),
        (node(), any::<u64>(), any::<u64>(), target()).prop_map(
            |(origin, sequence, epoch, target)| Message::Invalidate(Invalidate {
                origin,
                sequence,
                epoch,
                target
            })
        ),
        (any::<u64>(), any::<u64>()).prop_map(|(origin_generation, sequence)| {
            Message::InvalidateAck {
                origin_generation,
                sequence,
            }
        }),
        (node(), any::<u64>())
            .prop_map(|(origin, sequence)| Message::HighWater(HighWater { origin, sequence })),
        (any::<u64>(), bytes(64)).prop_map(|(epoch, key)| Message::Fetch(Fetch { epoch, key })),
        prop_oneof![
            entry().prop_map(FetchReply::Hit),
            Just(FetchReply::Miss),
            any::<u64>().prop_map(|epoch| FetchReply::WrongOwner { epoch }),
            any::<u64>()
                .prop_map(|current_generation| FetchReply::StaleGeneration { current_generation }),
        ]
        .prop_map(Message::FetchReply),
        (any::<u64>(), bytes(64), tags()).prop_map(|(epoch, key, tags)| Message::Load(Load {
            epoch,
            key,
            tags
        })),
        prop_oneof![
            entry().prop_map(LoadReply::Hit),
            any::<u64>().prop_map(|token| LoadReply::Granted { token }),
            any::<u32>().prop_map(|retry_after_ms| LoadReply::Wait { retry_after_ms }),
            any::<u64>().prop_map(|epoch| LoadReply::WrongOwner { epoch }),
            (text(20), text(40)).prop_map(|(node, message)| LoadReply::Failed { node, message }),
            entry().prop_map(LoadReply::Loaded),
        ]
        .prop_map(Message::LoadReply),
        (any::<u64>(), bytes(64), text(40)).prop_map(|(token, key, message)| {
            Message::Abandon(hydracache_protocol::Abandon {
                token,
                key,
                message,
            })
        }),
        (any::<u64>(), bytes(64), entry()).prop_map(|(token, key, entry)| Message::Fill(Fill {
            token,
            key,
            entry
        })),
        (any::<u64>(), text(20), bytes(64), ttl(), tags(), bytes(100)).prop_map(
            |(epoch, loader, key, ttl_ms, tags, args)| Message::OwnerLoad(OwnerLoad {
                epoch,
                loader,
                key,
                ttl_ms,
                tags,
                args
            })
        ),
        prop_oneof![
            entry().prop_map(OwnerLoadReply::Loaded),
            any::<u64>().prop_map(|epoch| OwnerLoadReply::WrongOwner { epoch }),
            Just(OwnerLoadReply::UnknownLoader),
            text(40).prop_map(|message| OwnerLoadReply::Failed { message }),
        ]
        .prop_map(Message::OwnerLoadReply),
        (any::<u64>(), bytes(64), entry()).prop_map(|(epoch, key, entry)| Message::Put(Put {
            epoch,
            key,
            entry
        })),
        prop_oneof![
            any::<u64>().prop_map(|sequence| PutReply::Stored { sequence }),
            any::<u64>().prop_map(|epoch| PutReply::WrongOwner { epoch }),
            (any::<u64>(), prop::collection::vec(bytes(20), 0..4))
                .prop_map(|(sequence, nodes)| PutReply::Unacknowledged { sequence, nodes }),
        ]
        .prop_map(Message::PutReply),
        bytes(200).prop_map(Message::Raft),
        bytes(200).prop_map(Message::Gossip),
        (any::<u64>(), prop::collection::vec(member(), 0..6)).prop_map(|(epoch, members)| {
            Message::MetadataSnapshot(MetadataSnapshot { epoch, members })
        }),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (any::<u64>(), any::<bool>(), message()).prop_map(|(request_id, ack, message)| Frame {
        request_id,
        flags: if ack {
            Flags::ACK_REQUESTED
        } else {
            Flags::empty()
        },
        message,
    })
}

/// Splits `data` into chunks whose lengths cycle through `cuts` (each >= 1).
fn chunks<'a>(data: &'a [u8], cuts: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = data;
    let mut i = 0;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = cuts[i % cuts.len()].min(rest.len());
        i += 1;
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_of_encode_is_identity(frame in frame()) {
        let limits = Limits::default();
        let mut buf = BytesMut::new();
        frame.encode(&limits, &mut buf).unwrap();
        let mut wire = buf.freeze();
        let decoded = Frame::decode(&mut wire, &limits).unwrap();
        prop_assert_eq!(decoded, frame);
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn any_bytes_decode_or_error(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let limits = Limits::default();
        let before = data.len();
        let mut src = Bytes::from(data.clone());
        match Frame::decode(&mut src, &limits) {
            Ok(_) => prop_assert!(src.len() < before),
            Err(e) => { let _ = (e.to_string(), e.recovery(), e.code()); }
        }
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&data[..]);
        let _ = codec.decode_eof(&mut buf);
    }

    #[test]
    fn any_payload_behind_a_valid_header_decodes_or_errors(
        kind in prop::sample::select(Kind::ALL.to_vec()),
        payload in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let limits = Limits::default();
        let wire = raw_frame(kind as u8, 0, 1, &payload);
        if let Ok(frame) = Frame::decode_exact(wire.clone(), &limits) {
            // Whatever decodes re-encodes to the very same bytes.
            prop_assert_eq!(frame.to_bytes(&limits).unwrap(), wire);
        }
    }

    #[test]
    fn corrupting_a_valid_frame_never_panics(
        frame in frame(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..), 1..4),
        fix_crc in any::<bool>(),
    ) {
        let limits = Limits::default();
        let original = frame.to_bytes(&limits).unwrap();
        let mut bytes = original.to_vec();
        for (at, mask) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= mask;
        }
        if fix_crc {
            // Re-seal, so the payload decoders see the corruption.
            let n = bytes.len();
            let crc = crc32fast::hash(&bytes[..n - 4]);
            bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
        }
        let changed = bytes[..] != original[..];
        let decoded = Frame::decode_exact(Bytes::from(bytes), &limits);
        if changed && !fix_crc {
            prop_assert!(decoded.is_err());
        }
    }

    #[test]
    fn a_stream_split_anywhere_decodes_to_the_same_frames(
        frames in prop::collection::vec(frame(), 1..6),
        cuts in prop::collection::vec(1usize..64, 1..8),
    ) {
        let mut codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        for f in &frames {
            codec.encode(f, &mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks(&wire, &cuts) {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        prop_assert!(codec.decode_eof(&mut buf).unwrap().is_none());
        prop_assert_eq!(out, frames);
    }

    #[test]
    fn encoder_and_decoder_enforce_the_same_limits(
        frame in frame(),
        max_key_len in 0usize..40,
        max_tags in 0usize..4,
        max_tag_len in 0usize..24,
        max_batch_len in 0usize..6,
        max_name_len in 0usize..20,
        max_frame_len in 24u32..600,
    ) {
        let small = Limits { max_frame_len, max_key_len, max_tags, max_tag_len, max_batch_len, max_name_len };
        match frame.to_bytes(&small) {
            Ok(wire) => {
                prop_assert_eq!(Frame::decode_exact(wire, &small).unwrap(), frame);
            }
            Err(ProtocolError::LengthOverLimit { .. }) => {
                // What the small limits refuse to send, they refuse to receive.
                let wire = frame.to_bytes(&Limits::default()).unwrap();
                let refused = Frame::decode_exact(wire, &small).unwrap_err();
                prop_assert!(
                    matches!(refused, ProtocolError::LengthOverLimit { .. }),
                    "decoder gave {:?}", refused
                );
            }
            Err(e) => prop_assert!(false, "unexpected encode error {e:?}"),
        }
    }
}
