//! Sample frames (one per message and reply variant, the golden vectors) and
//! helpers shared by the integration tests.

#![allow(dead_code)]

use bytes::Bytes;
use hydracache_protocol::{
    Entry, ErrorCode, Features, FetchReply, Fill, Flags, Frame, Hello, HighWater, Invalidate,
    LoadReply, Member, Message, MetadataSnapshot, NodeIdentity, OwnerLoad, OwnerLoadReply, Put,
    PutReply, Role, Target, VersionRange, HEADER_LEN,
};

/// A named sample frame with a one-line description.
pub struct Sample {
    pub name: &'static str,
    pub about: &'static str,
    pub frame: Frame,
}

fn b(s: &'static [u8]) -> Bytes {
    Bytes::from_static(s)
}

fn node() -> NodeIdentity {
    NodeIdentity::new("api-1", 5)
}

fn entry() -> Entry {
    Entry::new(b(b"\x01\x02\x03\x04\x05\x06\x07\x08"))
        .with_ttl_ms(60_000)
        .with_tags([b(b"users"), b(b"user:42")])
}

fn sample(name: &'static str, about: &'static str, request_id: u64, message: Message) -> Sample {
    Sample {
        name,
        about,
        frame: Frame::new(request_id, message),
    }
}

/// Every message kind, and every reply and target variant.
pub fn samples() -> Vec<Sample> {
    let hello = Hello {
        cluster: "orders".into(),
        node: node(),
        role: Role::Member,
        versions: VersionRange::new(1, 1).unwrap(),
        features: Features::LEASES | Features::OWNER_LOAD,
    };
    let hello_ack = Hello {
        cluster: "orders".into(),
        node: NodeIdentity::new("api-2", 9),
        role: Role::Client,
        versions: VersionRange::new(1, 1).unwrap(),
        features: Features::LEASES,
    };
    let invalidate = |target| {
        Message::Invalidate(Invalidate {
            origin: node(),
            sequence: 1001,
            epoch: 12,
            target,
        })
    };
    let mut invalidate_key = sample(
        "invalidate_key",
        "Invalidate one key, ack requested (flags = 1)",
        0,
        invalidate(Target::Key(b(b"user:42"))),
    );
    invalidate_key.frame.flags = Flags::ACK_REQUESTED;
    vec![
        sample(
            "hello",
            "Hello from member api-1 (generation 5) of cluster orders, versions 1..=1, features LEASES|OWNER_LOAD",
            0,
            Message::Hello(hello),
        ),
        sample(
            "hello_ack",
            "HelloAck from client api-2 (generation 9), versions 1..=1, features LEASES",
            0,
            Message::HelloAck(hello_ack),
        ),
        sample("ping", "Ping, nonce 0x0102030405060708", 1, Message::Ping { nonce: 0x0102030405060708 }),
        sample("pong", "Pong, nonce 0x0102030405060708", 1, Message::Pong { nonce: 0x0102030405060708 }),
        sample(
            "error",
            "Error unknown_kind, request 3",
            3,
            Message::Error {
                code: ErrorCode::UNKNOWN_KIND,
                message: "unknown kind 0x7f".into(),
            },
        ),
        sample(
            "go_away",
            "GoAway, orderly shutdown",
            0,
            Message::GoAway {
                code: ErrorCode::SHUTTING_DOWN,
                message: "bye".into(),
            },
        ),
        invalidate_key,
        sample(
            "invalidate_keys",
            "Invalidate two keys",
            0,
            invalidate(Target::Keys(vec![b(b"user:1"), b(b"user:2")])),
        ),
        sample(
            "invalidate_tag",
            "Invalidate the tag users",
            0,
            invalidate(Target::Tag(b(b"users"))),
        ),
        sample(
            "invalidate_tags",
            "Invalidate the tags users and orders",
            0,
            invalidate(Target::Tags(vec![b(b"users"), b(b"orders")])),
        ),
        sample("invalidate_flush", "Invalidate everything", 0, invalidate(Target::Flush)),
        sample(
            "invalidate_ack",
            "InvalidateAck for origin generation 5, sequence 1001",
            0,
            Message::InvalidateAck {
                origin_generation: 5,
                sequence: 1001,
            },
        ),
        sample(
            "high_water",
            "HighWater of origin api-1 generation 5 at sequence 1001",
            0,
            Message::HighWater(HighWater {
                origin: NodeIdentity::new("api-1", 5),
                sequence: 1001,
            }),
        ),
        sample(
            "fetch",
            "Fetch user:42 at epoch 12, request 42: on a multiplexed request stream (a request id other than 0)",
            42,
            Message::Fetch(hydracache_protocol::Fetch {
                epoch: 12,
                key: b(b"user:42"),
            }),
        ),
        sample(
            "fetch_one_shot",
            "Fetch user:42 at epoch 12, request id 0: the only request on a one-shot stream",
            0,
            Message::Fetch(hydracache_protocol::Fetch {
                epoch: 12,
                key: b(b"user:42"),
            }),
        ),
        sample(
            "fetch_reply_hit",
            "FetchReply hit: 8-byte value at frame offset 64, ttl 60 s, tags users and user:42",
            42,
            Message::FetchReply(FetchReply::Hit(entry())),
        ),
        sample("fetch_reply_miss", "FetchReply miss", 42, Message::FetchReply(FetchReply::Miss)),
        sample(
            "fetch_reply_wrong_owner",
            "FetchReply wrong owner, current epoch 13",
            42,
            Message::FetchReply(FetchReply::WrongOwner { epoch: 13 }),
        ),
        sample(
            "fetch_reply_stale_generation",
            "FetchReply stale generation, current generation 6",
            42,
            Message::FetchReply(FetchReply::StaleGeneration {
                current_generation: 6,
            }),
        ),
        sample(
            "load",
            "Load report:7 at epoch 12, tag users",
            43,
            Message::Load(hydracache_protocol::Load {
                epoch: 12,
                key: b(b"report:7"),
                tags: vec![b(b"users")],
            }),
        ),
        sample(
            "load_reply_hit",
            "LoadReply hit (same entry as fetch_reply_hit)",
            43,
            Message::LoadReply(LoadReply::Hit(entry())),
        ),
        sample(
            "load_reply_granted",
            "LoadReply lease granted, token 77",
            43,
            Message::LoadReply(LoadReply::Granted { token: 77 }),
        ),
        sample(
            "load_reply_wait",
            "LoadReply wait, retry after 50 ms",
            43,
            Message::LoadReply(LoadReply::Wait { retry_after_ms: 50 }),
        ),
        sample(
            "load_reply_wrong_owner",
            "LoadReply wrong owner, current epoch 13",
            43,
            Message::LoadReply(LoadReply::WrongOwner { epoch: 13 }),
        ),
        sample(
            "load_reply_failed",
            "LoadReply failed on m2: \"db timeout\"",
            43,
            Message::LoadReply(LoadReply::Failed {
                node: "m2".into(),
                message: "db timeout".into(),
            }),
        ),
        sample(
            "load_reply_loaded",
            "LoadReply loaded, not to be kept (same entry as fetch_reply_hit)",
            43,
            Message::LoadReply(LoadReply::Loaded(entry())),
        ),
        sample(
            "fill",
            "Fill report:7 under lease 77: 4-byte value, no ttl, no tags",
            44,
            Message::Fill(Fill {
                token: 77,
                key: b(b"report:7"),
                entry: Entry::new(b(b"data")),
            }),
        ),
        sample(
            "abandon",
            "Abandon report:7 under lease 77: \"db timeout\"",
            44,
            Message::Abandon(hydracache_protocol::Abandon {
                token: 77,
                key: b(b"report:7"),
                message: "db timeout".into(),
            }),
        ),
        sample(
            "owner_load",
            "OwnerLoad user_by_id(42u64) for user:42, ttl 60 s, tag users",
            45,
            Message::OwnerLoad(OwnerLoad {
                epoch: 12,
                loader: "user_by_id".into(),
                key: b(b"user:42"),
                ttl_ms: Some(60_000),
                tags: vec![b(b"users")],
                args: b(&[42, 0, 0, 0, 0, 0, 0, 0]),
            }),
        ),
        sample(
            "owner_load_reply_loaded",
            "OwnerLoadReply loaded (same entry as fetch_reply_hit)",
            45,
            Message::OwnerLoadReply(OwnerLoadReply::Loaded(entry())),
        ),
        sample(
            "owner_load_reply_wrong_owner",
            "OwnerLoadReply wrong owner, current epoch 13",
            45,
            Message::OwnerLoadReply(OwnerLoadReply::WrongOwner { epoch: 13 }),
        ),
        sample(
            "owner_load_reply_unknown_loader",
            "OwnerLoadReply unknown loader",
            45,
            Message::OwnerLoadReply(OwnerLoadReply::UnknownLoader),
        ),
        sample(
            "owner_load_reply_failed",
            "OwnerLoadReply failed: \"db timeout\"",
            45,
            Message::OwnerLoadReply(OwnerLoadReply::Failed {
                message: "db timeout".into(),
            }),
        ),
        sample(
            "owner_load_reply_rejected",
            "OwnerLoadReply rejected: \"not a user id\"",
            45,
            Message::OwnerLoadReply(OwnerLoadReply::Rejected {
                message: "not a user id".into(),
            }),
        ),
        sample(
            "owner_load_reply_arguments_too_large",
            "OwnerLoadReply arguments too large, limit 65,536 bytes",
            45,
            Message::OwnerLoadReply(OwnerLoadReply::ArgumentsTooLarge { limit: 65_536 }),
        ),
        sample(
            "put",
            "Put user:42 at epoch 12: 4-byte value, ttl 60 s, tag users",
            46,
            Message::Put(Put {
                epoch: 12,
                key: b(b"user:42"),
                entry: Entry::new(b(b"data"))
                    .with_ttl_ms(60_000)
                    .with_tags([b(b"users")]),
            }),
        ),
        sample(
            "put_reply_stored",
            "PutReply stored, owner invalidation sequence 9",
            46,
            Message::PutReply(PutReply::Stored { sequence: 9 }),
        ),
        sample(
            "put_reply_wrong_owner",
            "PutReply wrong owner, current epoch 13",
            46,
            Message::PutReply(PutReply::WrongOwner { epoch: 13 }),
        ),
        sample(
            "put_reply_unacknowledged",
            "PutReply stored at sequence 9, node m3 did not acknowledge",
            46,
            Message::PutReply(PutReply::Unacknowledged {
                sequence: 9,
                nodes: vec![b(b"m3")],
            }),
        ),
        sample(
            "raft",
            "Raft, 4 opaque bytes",
            0,
            Message::Raft(b(b"\x08\x01\x10\x02")),
        ),
        sample(
            "gossip",
            "Gossip, 4 opaque bytes",
            0,
            Message::Gossip(b(b"\xca\xfe\xba\xbe")),
        ),
        sample(
            "metadata_snapshot",
            "MetadataSnapshot epoch 12: member api-1 at 10.0.0.2:7400, client api-2 at [::1]:7401",
            0,
            Message::MetadataSnapshot(MetadataSnapshot {
                epoch: 12,
                members: vec![
                    Member {
                        node: node(),
                        role: Role::Member,
                        address: "10.0.0.2:7400".parse().unwrap(),
                    },
                    Member {
                        node: NodeIdentity::new("api-2", 9),
                        role: Role::Client,
                        address: "[::1]:7401".parse().unwrap(),
                    },
                ],
            }),
        ),
    ]
}

/// A frame with the given header fields and payload and a correct CRC, for
/// feeding payload decoders bytes the encoder would never produce.
pub fn raw_frame(kind: u8, flags: u16, request_id: u64, payload: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + 4);
    out.extend_from_slice(b"HYDC");
    out.push(1);
    out.push(kind);
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Bytes::from(out)
}

/// Lower-case hex, 16 bytes a line, bytes separated by spaces.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|line| {
            line.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Parses hex, ignoring whitespace and `#` comments.
pub fn from_hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    assert!(digits.len() % 2 == 0, "odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}
